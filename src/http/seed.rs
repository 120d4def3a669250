//! The seed's routes (`/auth/signup`, `/auth/signin`, `/task`), kept for its clients:
//! thin adapters over the same code as `/v1`, answering in the seed's
//! `{"message", "data"}` shape and its errors as `{"message", "payload"}`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::accounts::{SignIn, SignUp};
use super::error::{ApiError, Problem};
use super::extract::{ClientIp, JsonBody, KeyHeader, RawBody, Scoped, parse_json, present, scope};
use super::tasks::TaskView;
use crate::domain::Role;

/// What a seed client gets for a task created without content.
const UNTITLED: &str = "untitled task";

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/signup", post(sign_up)).route("/auth/signin", post(sign_in)).route("/task", post(task))
}

/// An error in the seed's shape, with the status and headers of `/v1`.
struct SeedError(ApiError);

impl From<ApiError> for SeedError {
    fn from(e: ApiError) -> Self {
        SeedError(e)
    }
}

impl From<crate::service::accounts::AuthError> for SeedError {
    fn from(e: crate::service::accounts::AuthError) -> Self {
        SeedError(e.into())
    }
}

impl From<crate::service::Error> for SeedError {
    fn from(e: crate::service::Error) -> Self {
        SeedError(e.into())
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        let (status, headers, problem) = self.0.parts();
        (status, headers, Json(SeedFailure { message: problem.detail.clone(), payload: problem })).into_response()
    }
}

/// The seed's success shape.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always empty on success, as in the seed.
    message: String,
    data: T,
}

/// The seed's error shape: the `/v1` problem document as the payload.
#[derive(Serialize, ToSchema)]
pub struct SeedFailure {
    message: String,
    payload: Problem,
}

#[derive(Serialize, ToSchema)]
pub struct SeedUser {
    user_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct SeedBearer {
    /// `Bearer: <jwt>`, to be sent back verbatim as the `Authorization` header.
    bearer_token: String,
}

fn ok<T>(data: T) -> Json<Envelope<T>> {
    Json(Envelope { message: String::new(), data })
}

#[utoipa::path(post, path = "/auth/signup", tag = "seed", request_body = SignUp,
    responses((status = 200, description = "Created (the seed answered 200)", body = Envelope<SeedUser>),
              (status = 409, description = "Username taken", body = SeedFailure),
              (status = 429, description = "Too many sign-ups from this client address", body = SeedFailure, headers(("Retry-After" = u64))),
              (status = 503, description = "Too many passwords wait to be hashed, or the database is unavailable", body = SeedFailure, headers(("Retry-After" = u64)))))]
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<JsonBody<SignUp>, ApiError>,
) -> Result<Json<Envelope<SeedUser>>, SeedError> {
    let JsonBody(body) = body?;
    let now = state.clock.now();
    let user = state
        .services
        .accounts
        .sign_up(&body.username, body.password, body.timezone.as_deref(), Role::User, ip, now)
        .await?;
    Ok(ok(SeedUser { user_id: user.id.to_string() }))
}

#[utoipa::path(post, path = "/auth/signin", tag = "seed", request_body = SignIn,
    responses((status = 200, description = "A bearer token in the seed's spelling", body = Envelope<SeedBearer>),
              (status = 401, description = "Unknown user or wrong password", body = SeedFailure),
              (status = 429, description = "Too many failed sign-ins", body = SeedFailure, headers(("Retry-After" = u64)))))]
async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<JsonBody<SignIn>, ApiError>,
) -> Result<Json<Envelope<SeedBearer>>, SeedError> {
    let JsonBody(body) = body?;
    let session = state.services.accounts.sign_in(&body.username, &body.password, ip, state.clock.now()).await?;
    Ok(ok(SeedBearer { bearer_token: format!("Bearer: {}", session.access_token) }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedTask {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1, max_length = 10000, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    content: Option<String>,
}

#[utoipa::path(post, path = "/task", tag = "seed", security(("bearer" = ["tasks:write"])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "As on POST /v1/tasks")),
    request_body(content = Option<SeedTask>, description = "Optional; without it the task is \"untitled task\""),
    responses((status = 200, description = "The task (the seed answered 200)", body = Envelope<TaskView>),
              (status = 401, description = "Missing or bad token", body = SeedFailure),
              (status = 429, description = "The daily limit is reached", body = SeedFailure, headers(("Retry-After" = u64))),
              (status = 409, description = "A request with this Idempotency-Key is still being processed", body = SeedFailure)))]
async fn task(
    State(state): State<AppState>,
    auth: Result<Scoped<scope::TasksWrite>, ApiError>,
    key_header: KeyHeader,
    body: Result<RawBody, ApiError>,
) -> Result<Json<Envelope<TaskView>>, SeedError> {
    let auth = auth?;
    let RawBody(body) = body?;
    // No body, or JSON `null`, means no content, as in the seed.
    let content =
        if matches!(body.trim_ascii(), b"" | b"null") { None } else { parse_json::<SeedTask>(&body)?.content };
    let content = content.unwrap_or_else(|| UNTITLED.into());
    let created = state.services.tasks.create(&auth.user, content, key_header.bytes(), "seed", auth.now).await?;
    Ok(ok(TaskView::from(created.task)))
}
