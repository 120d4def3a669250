//! Extractors that turn a request into validated input, or into a problem document:
//! the JSON body, the bearer token and what the route needs of it, the admin role.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::domain::{Credential, DayQuota, FieldError, Need, Role, Scope, User};
use crate::service::Caller;

/// A JSON request body, refused with 415 (not JSON), 413 (too large), 400 (not
/// well-formed) or 422 (wrong shape, naming the field).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// How long a client may take to send its body once its headers are in; a client that
/// trickles a body (or lies in `Content-Length` and waits) gets 408 and loses the
/// connection instead of holding it.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body's bytes, within the body limit and the body-read timeout.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let mut read = std::pin::pin!(Bytes::from_request(req, state));
    // A small body usually came in with the headers: then it is taken at once, without
    // arming a timer (registering one in the runtime's timer wheel, then cancelling it).
    if let Some(read) = futures_util::FutureExt::now_or_never(&mut read) {
        return read.map_err(ApiError::from);
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(read) => read.map_err(ApiError::from),
        Err(_) => Err(ApiError::RequestTimeout),
    }
}

/// A request body as bytes, read as `body_bytes` reads it.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        body_bytes(req, state).await.map(RawBody)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::BadRequest(format!("could not read the body: {}", r.body_text())),
        }
    }
}

pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses `bytes` as `T`, telling malformed JSON (400) from a body of the wrong shape
/// (422, with the field's path).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The usual case, an object of the right shape, read straight into `T`. Anything
    // else takes the path below, which names what is wrong; a body read here is read
    // the same there (the same parser; duplicate keys, which `T` refuses, are the one
    // case that goes below and is taken there, the last one winning, as before).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && let Ok(value) = serde_json::from_slice(bytes)
    {
        return Ok(value);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the body is empty; a JSON object is expected".into()));
    }
    // Well-formedness first (syntax, UTF-8, nesting depth: 400), then shape (422).
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        // serde would take `[a, b]` for a struct; every body here is an object.
        return Err(FieldError::new("body", "must be a JSON object").into());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let field = named_in(&message).unwrap_or(if path == "." { "body".into() } else { path });
        ApiError::Validation(vec![FieldError { field: leak_field(field), message }])
    })
}

/// The field a serde message names in backticks ("unknown field `role`").
fn named_in(message: &str) -> Option<String> {
    if !(message.starts_with("unknown field") || message.starts_with("missing field")) {
        return None;
    }
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

/// Field names in problem documents are `&'static str`; a client-chosen name is mapped
/// to one of a fixed set so that clients cannot grow memory.
fn leak_field(field: String) -> &'static str {
    const KNOWN: &[&str] = &[
        "username",
        "password",
        "timezone",
        "content",
        "tasks",
        "done",
        "daily_limit",
        "role",
        "refresh_token",
        "name",
        "scopes",
        "expires_at",
        "id",
        "user_id",
        "created_at",
        "updated_at",
        "day",
        "body",
        "plan",
        "adapt",
        "extra",
        "from",
        "to",
        "reason",
    ];
    KNOWN.iter().find(|k| **k == field).copied().unwrap_or("body")
}

/// For optional body fields: absent is `None`, but an explicit `null` is refused, so
/// that the document can say "optional, not nullable" and mean it.
pub fn present<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// For optional integer body fields: as `present`, and a number with no fractional part
/// written with one (`20.0`) is that integer, as JSON Schema's `integer` says (the
/// OpenAPI document promises that type). `20.5` is refused.
pub fn present_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Integer;
    impl serde::de::Visitor<'_> for Integer {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("is too large"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // -2^63 and 2^63 are exact as floats: within them, a whole float is an i64.
            if v.fract() != 0.0 {
                Err(E::custom("must be a whole number"))
            } else if (i64::MIN as f64..i64::MAX as f64).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::custom("is too large"))
            }
        }
    }
    d.deserialize_any(Integer).map(Some)
}

/// For optional, nullable body fields: absent is `None` (leave as it is), `null` is
/// `Some(None)` (remove), a value is `Some(Some(value))`.
pub fn nullable<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `nullable` for an integer, read as `present_integer` reads one.
pub fn nullable_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    use serde::de::Error as _;
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        serde_json::Value::Null => Ok(Some(None)),
        value => present_integer(value).map(Some).map_err(D::Error::custom),
    }
}

/// The request's `Idempotency-Key` header as sent, if any (only that header is taken
/// from the request, not a copy of all of them); the task service reads it.
pub struct KeyHeader(pub Option<HeaderValue>);

impl KeyHeader {
    pub fn bytes(&self) -> Option<&[u8]> {
        self.0.as_ref().map(HeaderValue::as_bytes)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KeyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(KeyHeader(parts.headers.get("idempotency-key").cloned()))
    }
}

/// Who a request speaks for, with the instant it was decided at. Handlers get one
/// only through an extractor that says what the route needs of the credential:
/// `Scoped<S>` (a session, or a personal token with scope `S`), `SessionOnly` or
/// `Admin`; there is no extractor that takes any credential, so a route cannot forget.
pub struct Authed {
    pub user: User,
    pub credential: Credential,
    pub now: Timestamp,
    /// When the request's token stops being accepted (what outlives the request, an
    /// event stream, ends then).
    pub token_until: Timestamp,
}

/// The token of `Authorization: Bearer <token>`, or of the seed's `Bearer: <token>`.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let scheme = scheme.strip_suffix(':').unwrap_or(scheme);
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl Authed {
    fn new(caller: Caller, now: Timestamp) -> Self {
        Authed { user: caller.user, credential: caller.credential, now, token_until: caller.accepted_until }
    }

    /// 403 `insufficient-scope` unless the credential reaches a route that needs `need`.
    fn check(self, need: Need) -> Result<Self, ApiError> {
        if self.credential.allows(need) { Ok(self) } else { Err(ApiError::InsufficientScope(need)) }
    }

    /// Resolves the request's bearer token (401 if there is none or it is refused),
    /// then checks it reaches a route that needs `need` (403).
    async fn of(parts: &Parts, state: &AppState, need: Need) -> Result<Self, ApiError> {
        let now = state.clock.now();
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let caller = state.services.tokens.authenticate(token, client_ip(parts, state), now).await?;
        Authed::new(caller, now).check(need)
    }
}

/// The scope a personal token needs on a route; see `Scoped`.
pub trait RouteScope {
    const SCOPE: Scope;
}

/// The scopes, as types, for `Scoped<S>`.
pub mod scope {
    use super::{RouteScope, Scope};

    /// `tasks:read`: reading tasks.
    pub struct TasksRead;
    /// `tasks:write`: creating, changing and deleting tasks.
    pub struct TasksWrite;
    /// `quota:read`: `GET /v1/me/quota`.
    pub struct QuotaRead;
    /// `events:read`: `GET /v1/events`.
    pub struct EventsRead;

    impl RouteScope for TasksRead {
        const SCOPE: Scope = Scope::TasksRead;
    }
    impl RouteScope for TasksWrite {
        const SCOPE: Scope = Scope::TasksWrite;
    }
    impl RouteScope for QuotaRead {
        const SCOPE: Scope = Scope::QuotaRead;
    }
    impl RouteScope for EventsRead {
        const SCOPE: Scope = Scope::EventsRead;
    }
}

/// A caller on a route of scope `S`: a signed-in session, or a personal token holding
/// `S` (any other token gets 403 `insufficient-scope`).
pub struct Scoped<S>(pub Authed, PhantomData<fn() -> S>);

impl<S> Deref for Scoped<S> {
    type Target = Authed;
    fn deref(&self) -> &Authed {
        &self.0
    }
}

impl<S: RouteScope> FromRequestParts<AppState> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Scoped(Authed::of(parts, state, Need::Scope(S::SCOPE)).await?, PhantomData))
    }
}

/// `Scoped<S>`, with the user's quota on the day of the request (the limit in force and
/// the units used), read in the same step (for `GET /v1/me/quota`).
pub struct ScopedUsage<S> {
    pub auth: Authed,
    pub quota: DayQuota,
    scope: PhantomData<fn() -> S>,
}

impl<S: RouteScope> FromRequestParts<AppState> for ScopedUsage<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let now = state.clock.now();
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let (caller, quota) =
            state.services.tokens.authenticate_with_usage(token, client_ip(parts, state), now).await?;
        let auth = Authed::new(caller, now).check(Need::Scope(S::SCOPE))?;
        Ok(ScopedUsage { auth, quota, scope: PhantomData })
    }
}

/// A signed-in session's caller: the account itself, its tokens and sign-out, which no
/// personal token reaches (403 `insufficient-scope`).
pub struct SessionOnly {
    pub auth: Authed,
    /// The session the request was made in.
    pub session_id: Uuid,
}

impl Deref for SessionOnly {
    type Target = Authed;
    fn deref(&self) -> &Authed {
        &self.auth
    }
}

impl FromRequestParts<AppState> for SessionOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = Authed::of(parts, state, Need::Session).await?;
        match auth.credential {
            Credential::Session { session_id } => Ok(SessionOnly { auth, session_id }),
            Credential::Personal { .. } => Err(ApiError::InsufficientScope(Need::Session)),
        }
    }
}

/// A signed-in session of a user with the admin role (read from the database, so a
/// change of role applies at once).
pub struct Admin(pub Authed);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let SessionOnly { auth, .. } = SessionOnly::from_request_parts(parts, state).await?;
        if auth.user.role != Role::Admin {
            return Err(ApiError::Forbidden);
        }
        Ok(Admin(auth))
    }
}

/// The key a client's attempts are counted under: the socket's peer, or what trusted
/// proxies say, an IPv6 address reduced to its /64 (`client_ip`).
fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    peer.map(|peer| super::client_ip::client_key(&state.trusted_proxies, peer, &parts.headers))
}

/// The client's address as its attempts are counted (`client_ip`).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code)]
    struct Body {
        content: String,
    }

    fn status_and_field(bytes: &[u8]) -> (u16, String) {
        let (status, _, problem) = parse_json::<Body>(bytes).unwrap_err().parts();
        let field = problem.errors.map(|e| format!("{:?}", e[0].field)).unwrap_or_default();
        (status.as_u16(), field)
    }

    #[test]
    fn malformed_json_is_a_400_and_a_wrong_shape_a_422_naming_the_field() {
        assert_eq!(status_and_field(b"{\"content\": ").0, 400);
        assert_eq!(status_and_field(b"").0, 400);
        assert_eq!(status_and_field(b"{\"content\": \"\xff\"}").0, 400);
        assert_eq!(status_and_field(&vec![b'['; 100_000]).0, 400);
        assert_eq!(status_and_field(b"{\"content\": 1}"), (422, "\"content\"".into()));
        assert_eq!(status_and_field(b"{\"content\": \"x\", \"role\": \"admin\"}"), (422, "\"role\"".into()));
        assert_eq!(status_and_field(b"{}"), (422, "\"content\"".into()));
    }

    #[test]
    fn both_bearer_spellings_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer: abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
