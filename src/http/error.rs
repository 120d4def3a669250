//! The one error type of the HTTP layer, answered as an RFC 9457 problem document.
//! A 5xx is logged with its cause (under the request's id) and answered without it.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{FieldError, Need, QuotaStatus};
use crate::service;
use crate::service::accounts::AuthError;

const TYPE_BASE: &str = "https://quotask.dev/problems/";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("the body took too long to arrive")]
    RequestTimeout,
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    /// A personal access token on a route it does not reach (RFC 6750 `insufficient_scope`).
    #[error("insufficient scope")]
    InsufficientScope(Need),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("quota exceeded")]
    QuotaExceeded { status: Box<QuotaStatus>, now: Timestamp, requested: u32 },
    #[error("too many sign-in attempts")]
    Throttled { retry_after: u64 },
    #[error("too many event streams")]
    TooManyStreams { limit: usize, retry_after: u64 },
    #[error("too many sign-ups")]
    SignUpThrottled { retry_after: u64 },
    /// Too much work waits (passwords to hash); nothing was done.
    #[error("overloaded")]
    Overloaded { retry_after: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// An RFC 9457 problem document, with the extensions quotask uses.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://quotask.dev/problems/quota-exceeded`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Validation errors, one per offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
    /// `quota-exceeded`: the limit in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `quota-exceeded`: the units used on `day`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u32>,
    /// `quota-exceeded`: the user's local day, `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// `quota-exceeded`: the zone that decides the day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `quota-exceeded`: when the next day begins (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
    /// `quota-exceeded`: the units the refused request asked for (its number of tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u32>,
    /// `quota-exceeded`: the units left today, fewer than `requested`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// `quota-exceeded`: the user's plan (null: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Option<String>>,
    /// `quota-exceeded`: where the base limit comes from (`user`, `plan`, `adapted`,
    /// `default`), as `GET /v1/me/quota` says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_source: Option<&'static str>,
    /// `quota-exceeded`: extra units today from boosts, part of `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boost: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Validation(vec![e])
    }
}

impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> Self {
        match e {
            service::Error::Invalid(errors) => ApiError::Validation(errors),
            service::Error::NotFound => ApiError::NotFound,
            service::Error::Conflict(why) => ApiError::Conflict(why.into()),
            service::Error::QuotaExceeded { status, now, requested } => {
                ApiError::QuotaExceeded { status, now, requested }
            }
            service::Error::Unavailable(why) => ApiError::Unavailable(why),
            service::Error::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(errors) => ApiError::Validation(errors),
            AuthError::UsernameTaken => ApiError::Conflict("username is taken, or looks like one that is".into()),
            AuthError::Unauthorized => ApiError::Unauthorized,
            AuthError::Throttled { retry_after } => ApiError::Throttled { retry_after },
            AuthError::SignUpThrottled { retry_after } => ApiError::SignUpThrottled { retry_after },
            AuthError::Overloaded { retry_after } => ApiError::Overloaded { retry_after },
            AuthError::Store(e) => service::Error::from(e).into(),
            AuthError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// The `RateLimit-Policy` and `RateLimit` headers of a quota status at `now`.
/// An id from the path; an id that cannot exist answers 404 like a missing one.
pub fn path_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

pub fn quota_headers(status: &QuotaStatus, now: Timestamp) -> [(HeaderName, HeaderValue); 2] {
    let policy = format!("\"daily\";q={};w=86400", status.limit);
    let current = format!("\"daily\";r={};t={}", status.remaining(), status.window.seconds_until_reset(now));
    [
        (HeaderName::from_static("ratelimit-policy"), header_value(policy)),
        (HeaderName::from_static("ratelimit"), header_value(current)),
    ]
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static(""))
}

impl ApiError {
    /// Status, extra headers and the problem document; shared with the seed's routes,
    /// which wrap the same problem in their own shape.
    pub fn parts(&self) -> (StatusCode, HeaderMap, Problem) {
        let mut headers = HeaderMap::new();
        let mut problem = Problem::default();
        let (status, slug, title, detail) = match self {
            ApiError::Validation(errors) => {
                problem.errors = Some(
                    errors.iter().map(|e| FieldProblem { field: e.field.into(), message: e.message.clone() }).collect(),
                );
                let fields: Vec<_> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid request", fields.join("; "))
            }
            ApiError::BadRequest(why) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request", why.clone()),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "the body must be JSON, sent with Content-Type: application/json".into(),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "the body is larger than this route accepts (128 KiB; 8 MiB for a batch)".into(),
            ),
            ApiError::RequestTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                (
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "Request timeout",
                    "the body did not arrive within 10 seconds".into(),
                )
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                (
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Unauthorized",
                    "missing, invalid or expired credentials".into(),
                )
            }
            ApiError::Forbidden => {
                (StatusCode::FORBIDDEN, "forbidden", "Forbidden", "this needs the admin role".into())
            }
            ApiError::InsufficientScope(need) => {
                let (challenge, detail) = match need {
                    Need::Scope(scope) => (
                        format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", scope.as_str()),
                        format!("this personal access token lacks the scope {} that this route needs", scope.as_str()),
                    ),
                    Need::Session => (
                        "Bearer error=\"insufficient_scope\"".to_owned(),
                        "this route needs a signed-in session; personal access tokens never reach it".to_owned(),
                    ),
                };
                headers.insert(header::WWW_AUTHENTICATE, header_value(challenge));
                (StatusCode::FORBIDDEN, "insufficient-scope", "Insufficient scope", detail)
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found", "no such resource".into()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not answer that method".into(),
            ),
            ApiError::Conflict(why) => (StatusCode::CONFLICT, "conflict", "Conflict", why.clone()),
            ApiError::QuotaExceeded { status, now, requested } => {
                let retry = status.window.seconds_until_reset(*now);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
                for (name, value) in quota_headers(status, *now) {
                    headers.insert(name, value);
                }
                problem.limit = Some(status.limit);
                problem.used = Some(status.used);
                problem.day = Some(status.window.day.to_string());
                problem.timezone = Some(status.timezone.as_str().into());
                problem.resets_at = Some(status.window.resets_at.to_string());
                problem.requested = Some(*requested);
                problem.remaining = Some(status.remaining());
                problem.plan = Some(status.in_force.plan.as_deref().map(str::to_owned));
                problem.limit_source = Some(status.in_force.source.as_str());
                problem.boost = Some(status.in_force.boost);
                let (day, zone, resets) = (status.window.day, status.timezone.as_str(), status.window.resets_at);
                let detail = match status.remaining() {
                    0 => format!(
                        "the daily limit of {} tasks for {day} ({zone}) is reached; it resets at {resets}",
                        status.limit
                    ),
                    left => format!(
                        "{requested} tasks asked for, {left} of the daily limit of {} left for {day} ({zone}); nothing \
                         was created; it resets at {resets}",
                        status.limit
                    ),
                };
                (StatusCode::TOO_MANY_REQUESTS, "quota-exceeded", "Daily task quota exceeded", detail)
            }
            ApiError::Throttled { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "sign-in-throttled",
                    "Too many failed sign-ins",
                    format!("try again in {retry_after} seconds"),
                )
            }
            ApiError::TooManyStreams { limit, retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-streams",
                    "Too many event streams",
                    format!("a user may keep {limit} event streams open at once; close one first"),
                )
            }
            ApiError::SignUpThrottled { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "sign-up-throttled",
                    "Too many sign-ups",
                    format!("too many sign-ups from this address; try again in {retry_after} seconds"),
                )
            }
            ApiError::Overloaded { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Overloaded",
                    format!("too many passwords are waiting to be checked; try again in {retry_after} seconds"),
                )
            }
            ApiError::Unavailable(why) => {
                tracing::warn!(cause = %why, "answering 503");
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the database is unavailable; try again shortly".into(),
                )
            }
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "answering 500");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "see the server log for this request id".into(),
                )
            }
        };
        let problem = Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            ..problem
        };
        (status, headers, problem)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, mut headers, problem) = self.parts();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        (status, headers, body).into_response()
    }
}
