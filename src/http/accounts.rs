//! `/v1/auth/*` and `/v1/me*`: accounts, sessions and the signed-in user's quota.
//!
//! A client that sends `X-Refresh-Cookie: 1` with its sign-in (the web page does) gets
//! its refresh token as a cookie instead of in the body: `HttpOnly`, so no script of the
//! origin can read it; `Secure`; `SameSite=Strict`; sent only to `/v1/auth/*`. It then
//! refreshes with the cookie alone (its new refresh token is set the same way) and
//! sign-out clears it. Without the header, nothing changes: the pair is in the body.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Problem, quota_headers};
use super::extract::{ClientIp, JsonBody, ScopedUsage, SessionOnly, present, scope};
use crate::auth::token::REFRESH_TTL_SECS;
use crate::domain::{QuotaStatus, Role, User};
use crate::service::accounts::{AuthError, OwnChanges, Session};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(sign_up))
        .route("/v1/auth/signin", post(sign_in))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/signout", post(sign_out))
        .route("/v1/me", get(me).patch(update_me))
        .route("/v1/me/quota", get(quota))
}

/// A user as clients see it; never any form of the password.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub timezone: String,
    /// The user's limit on their current local day, before boosts: their own, else
    /// their plan's (or what it adapted to), else the default they got at sign-up.
    pub daily_limit: u32,
    /// Where `daily_limit` comes from.
    #[schema(value_type = String, example = "plan")]
    pub limit_source: &'static str,
    /// The user's plan, if any.
    pub plan: Option<String>,
    pub role: &'static str,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_timezone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone_effective_at: Option<String>,
}

impl UserView {
    /// The user at `now`: a pending zone change whose instant has passed is shown done.
    pub fn new(user: &User, now: Timestamp) -> Self {
        let pending = user.zone.pending.as_ref().filter(|(_, at)| now < *at);
        let (base, source) = user.base_limit(now);
        UserView {
            id: user.id.to_string(),
            username: user.username.clone(),
            timezone: user.zone.effective(now).as_str().to_owned(),
            daily_limit: base,
            limit_source: source.as_str(),
            plan: user.limits.plan.as_ref().map(|(name, _, _)| name.to_string()),
            role: user.role.as_str(),
            created_at: user.created_at.to_string(),
            pending_timezone: pending.map(|(tz, _)| tz.as_str().to_owned()),
            timezone_effective_at: pending.map(|(_, at)| at.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct QuotaView {
    /// The limit in force today: the base limit (`limit_source`) plus `boost`.
    pub limit: u32,
    pub used: u32,
    pub remaining: u32,
    pub day: String,
    pub timezone: String,
    pub resets_at: String,
    /// The user's plan, if any.
    pub plan: Option<String>,
    /// Where the base limit comes from: `user` (an admin set it), `plan`, `adapted` (the
    /// plan's adaptive rule set it for this user) or `default` (the default at sign-up).
    #[schema(value_type = String, example = "plan")]
    pub limit_source: &'static str,
    /// Extra units today from boosts.
    pub boost: u32,
}

impl From<&QuotaStatus> for QuotaView {
    fn from(s: &QuotaStatus) -> Self {
        QuotaView {
            limit: s.limit,
            used: s.used,
            remaining: s.remaining(),
            day: s.window.day.to_string(),
            timezone: s.timezone.as_str().to_owned(),
            resets_at: s.window.resets_at.to_string(),
            plan: s.in_force.plan.as_deref().map(str::to_owned),
            limit_source: s.in_force.source.as_str(),
            boost: s.in_force.boost,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// 3 to 32 letters, digits, `_`, `-`, `.`; stored NFC and case-folded.
    #[schema(min_length = 3, max_length = 32, pattern = r"^[\w.-]{3,32}$")]
    pub username: String,
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    /// An IANA zone name; default: the server's configured default.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub timezone: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Refresh {
    /// The refresh token; if absent, the one in the `quotask_refresh` cookie.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MeChanges {
    /// Takes effect at the next local midnight of the current zone.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    timezone: Option<String>,
    /// A new password; needs `current_password`. Every other session of the user ends
    /// with the change (their access and refresh tokens answer 401); this one lives on.
    #[schema(min_length = 8, max_length = 1024)]
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    password: Option<String>,
    /// The password now in force; required with `password` (ignored without it), and
    /// checked and throttled as a sign-in.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    current_password: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct TokenPair {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    /// Absent when the refresh token was set as the `quotask_refresh` cookie instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// The cookie that holds a refresh token for a client that asked for one.
const REFRESH_COOKIE: &str = "quotask_refresh";
/// The request header by which a client asks for its refresh token as a cookie.
const COOKIE_WANTED: &str = "x-refresh-cookie";

fn wants_cookie(headers: &HeaderMap) -> bool {
    headers.get(COOKIE_WANTED).is_some_and(|v| v == "1")
}

/// `token` as the refresh cookie. `Path=/v1/auth` keeps it off every other request
/// (and out of reach of `/docs`); it lasts as long as the token does.
fn refresh_cookie(token: String) -> Cookie<'static> {
    Cookie::build((REFRESH_COOKIE, token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/v1/auth")
        .max_age(cookie::time::Duration::seconds(REFRESH_TTL_SECS))
        .build()
}

/// Tells the browser to drop the refresh cookie (same name, path and attributes).
fn no_refresh_cookie() -> Cookie<'static> {
    let mut gone = refresh_cookie(String::new());
    gone.make_removal();
    gone
}

/// Sign-in's and refresh's answer: the pair in the body, or, `as_cookie`, the refresh
/// token as the cookie and the rest in the body, where a script never sees the former.
fn token_pair(session: Session, as_cookie: bool) -> (CookieJar, Json<TokenPair>) {
    let Session { access_token, expires_in, refresh_token } = session;
    let (jar, refresh_token) = if as_cookie {
        (CookieJar::new().add(refresh_cookie(refresh_token)), None)
    } else {
        (CookieJar::new(), Some(refresh_token))
    };
    (jar, Json(TokenPair { access_token, token_type: "Bearer", expires_in, refresh_token }))
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "accounts", request_body = SignUp,
    responses((status = 201, description = "The new user", body = UserView),
              (status = 409, description = "The username is taken, or looks like one that is (same UTS #39 skeleton)", body = Problem, content_type = "application/problem+json"),
              (status = 429, description = "Too many sign-ups from this client address", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, description = "Too many passwords wait to be hashed, or the database is unavailable", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))))]
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<SignUp>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let user = state
        .services
        .accounts
        .sign_up(&body.username, body.password, body.timezone.as_deref(), Role::User, ip, now)
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::new(&user, now))).into_response())
}

#[utoipa::path(post, path = "/v1/auth/signin", tag = "accounts", request_body = SignIn,
    params(("X-Refresh-Cookie" = Option<String>, Header, description = "`1`: the refresh token is set as the `quotask_refresh` cookie (HttpOnly; Secure; SameSite=Strict; Path=/v1/auth) and left out of the body")),
    responses((status = 200, description = "A token pair", body = TokenPair,
               headers(("Set-Cookie" = String, description = "With `X-Refresh-Cookie: 1` only: the refresh cookie"))),
              (status = 401, description = "Unknown user or wrong password (one answer for both)", body = Problem, content_type = "application/problem+json"),
              (status = 429, description = "Too many failed sign-ins", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, description = "Too many passwords wait to be checked, or the database is unavailable", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))))]
async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<(CookieJar, Json<TokenPair>), ApiError> {
    let session = state.services.accounts.sign_in(&body.username, &body.password, ip, state.clock.now()).await?;
    Ok(token_pair(session, wants_cookie(&headers)))
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts", request_body = Refresh,
    params(("quotask_refresh" = Option<String>, Cookie, description = "The refresh token, when the body has none"),
           ("X-Refresh-Cookie" = Option<String>, Header, description = "`1`: the new refresh token is set as the cookie, as it is anyway when the old one came from it")),
    responses((status = 200, description = "A new pair; the old refresh token is spent", body = TokenPair,
               headers(("Set-Cookie" = String, description = "The new refresh cookie, when the old token came from it or `X-Refresh-Cookie: 1` was sent"))),
              (status = 401, description = "None given, unknown, spent or revoked; a spent token revokes its family (a refused cookie is cleared)", body = Problem, content_type = "application/problem+json")))]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    JsonBody(body): JsonBody<Refresh>,
) -> Result<Response, ApiError> {
    let (token, from_cookie) = match body.refresh_token {
        Some(token) => (token, false),
        None => match jar.get(REFRESH_COOKIE) {
            Some(cookie) => (cookie.value().to_owned(), true),
            // No credential at all: the one answer every refused refresh gets.
            None => return Err(AuthError::Unauthorized.into()),
        },
    };
    match state.services.accounts.refresh(&token, state.clock.now()).await {
        Ok(session) => Ok(token_pair(session, from_cookie || wants_cookie(&headers)).into_response()),
        // A refused cookie is of no use any more: the browser is told to drop it (but
        // not for an outage, after which it still works).
        Err(AuthError::Unauthorized) if from_cookie => {
            Ok((CookieJar::new().add(no_refresh_cookie()), ApiError::from(AuthError::Unauthorized)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/v1/auth/signout", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "The session's tokens stop working",
               headers(("Set-Cookie" = String, description = "Clears the refresh cookie, if the client has one")))))]
async fn sign_out(State(state): State<AppState>, auth: SessionOnly) -> Result<(CookieJar, StatusCode), ApiError> {
    state.services.accounts.sign_out(auth.session_id, auth.now).await?;
    Ok((CookieJar::new().add(no_refresh_cookie()), StatusCode::NO_CONTENT))
}

#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "The signed-in user", body = UserView)))]
async fn me(auth: SessionOnly) -> Json<UserView> {
    Json(UserView::new(&auth.user, auth.now))
}

#[utoipa::path(patch, path = "/v1/me", tag = "me", security(("bearer" = [])), request_body = MeChanges,
    responses((status = 200, description = "The user; a new zone waits for the old zone's next midnight", body = UserView),
              (status = 401, description = "A bad token, or a wrong `current_password` (counted as a failed sign-in)", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid input, or `password` without `current_password`", body = Problem, content_type = "application/problem+json"),
              (status = 429, description = "Too many failed sign-ins of this account or address", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, description = "Too many passwords wait to be checked, or the database is unavailable", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))))]
async fn update_me(
    State(state): State<AppState>,
    auth: SessionOnly,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<MeChanges>,
) -> Result<Json<UserView>, ApiError> {
    let changes =
        OwnChanges { timezone: body.timezone, password: body.password, current_password: body.current_password };
    let user = state.services.accounts.update_me(&auth.user, auth.session_id, changes, ip, auth.now).await?;
    Ok(Json(UserView::new(&user, auth.now)))
}

#[utoipa::path(get, path = "/v1/me/quota", tag = "me", security(("bearer" = ["quota:read"])),
    responses((status = 200, description = "Today's quota; reading it uses none", body = QuotaView,
               headers(("RateLimit-Policy" = String, description = "\"daily\";q=<limit>;w=86400"),
                       ("RateLimit" = String, description = "\"daily\";r=<remaining>;t=<seconds to reset>")))))]
async fn quota(ScopedUsage { auth, quota, .. }: ScopedUsage<scope::QuotaRead>) -> Result<Response, ApiError> {
    let status = QuotaStatus::of(&auth.user, quota, auth.now);
    Ok((quota_headers(&status, auth.now), Json(QuotaView::from(&status))).into_response())
}
