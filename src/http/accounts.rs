//! `/v1/auth/*` and `/v1/me*`: accounts, sessions and the signed-in user's quota.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Problem, quota_headers};
use super::extract::{ClientIp, JsonBody, ScopedUsage, SessionOnly, present, scope};
use crate::auth::Session;
use crate::domain::{QuotaStatus, Role, User};

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
    pub daily_limit: u32,
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
        UserView {
            id: user.id.to_string(),
            username: user.username.clone(),
            timezone: user.zone.effective(now).as_str().to_owned(),
            daily_limit: user.daily_limit,
            role: user.role.as_str(),
            created_at: user.created_at.to_string(),
            pending_timezone: pending.map(|(tz, _)| tz.as_str().to_owned()),
            timezone_effective_at: pending.map(|(_, at)| at.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct QuotaView {
    pub limit: u32,
    pub used: u32,
    pub remaining: u32,
    pub day: String,
    pub timezone: String,
    pub resets_at: String,
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
    refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MeChanges {
    /// Takes effect at the next local midnight of the current zone.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    timezone: Option<String>,
    #[schema(min_length = 8, max_length = 1024)]
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    password: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct TokenPair {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: String,
}

impl From<Session> for TokenPair {
    fn from(s: Session) -> Self {
        TokenPair {
            access_token: s.access_token,
            token_type: "Bearer",
            expires_in: s.expires_in,
            refresh_token: s.refresh_token,
        }
    }
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "accounts", request_body = SignUp,
    responses((status = 201, description = "The new user", body = UserView),
              (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json")))]
async fn sign_up(State(state): State<AppState>, JsonBody(body): JsonBody<SignUp>) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let user = state
        .services
        .accounts
        .sign_up(&body.username, body.password, body.timezone.as_deref(), Role::User, now)
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::new(&user, now))).into_response())
}

#[utoipa::path(post, path = "/v1/auth/signin", tag = "accounts", request_body = SignIn,
    responses((status = 200, description = "A token pair", body = TokenPair),
              (status = 401, description = "Unknown user or wrong password (one answer for both)", body = Problem, content_type = "application/problem+json"),
              (status = 429, description = "Too many failed sign-ins", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))))]
async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<Json<TokenPair>, ApiError> {
    let session = state.services.accounts.sign_in(&body.username, &body.password, ip, state.clock.now()).await?;
    Ok(Json(session.into()))
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts", request_body = Refresh,
    responses((status = 200, description = "A new pair; the old refresh token is spent", body = TokenPair),
              (status = 401, description = "Unknown, spent or revoked; a spent token revokes its family", body = Problem, content_type = "application/problem+json")))]
async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Refresh>,
) -> Result<Json<TokenPair>, ApiError> {
    let session = state.services.accounts.refresh(&body.refresh_token, state.clock.now()).await?;
    Ok(Json(session.into()))
}

#[utoipa::path(post, path = "/v1/auth/signout", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "The session's tokens stop working")))]
async fn sign_out(State(state): State<AppState>, auth: SessionOnly) -> Result<StatusCode, ApiError> {
    state.services.accounts.sign_out(auth.session_id, auth.now).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "The signed-in user", body = UserView)))]
async fn me(auth: SessionOnly) -> Json<UserView> {
    Json(UserView::new(&auth.user, auth.now))
}

#[utoipa::path(patch, path = "/v1/me", tag = "me", security(("bearer" = [])), request_body = MeChanges,
    responses((status = 200, description = "The user; a new zone waits for the old zone's next midnight", body = UserView)))]
async fn update_me(
    State(state): State<AppState>,
    auth: SessionOnly,
    JsonBody(body): JsonBody<MeChanges>,
) -> Result<Json<UserView>, ApiError> {
    let user = state.services.accounts.update_me(&auth.user, body.timezone.as_deref(), body.password, auth.now).await?;
    Ok(Json(UserView::new(&user, auth.now)))
}

#[utoipa::path(get, path = "/v1/me/quota", tag = "me", security(("bearer" = ["quota:read"])),
    responses((status = 200, description = "Today's quota; reading it uses none", body = QuotaView,
               headers(("RateLimit-Policy" = String, description = "\"daily\";q=<limit>;w=86400"),
                       ("RateLimit" = String, description = "\"daily\";r=<remaining>;t=<seconds to reset>")))))]
async fn quota(ScopedUsage { auth, used, .. }: ScopedUsage<scope::QuotaRead>) -> Result<Response, ApiError> {
    let status = QuotaStatus::of(&auth.user, used, auth.now);
    Ok((quota_headers(&status, auth.now), Json(QuotaView::from(&status))).into_response())
}
