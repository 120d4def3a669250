//! The seed's routes (`/auth/signup`, `/auth/signin`, `/task`), kept for its clients:
//! thin adapters over the same code as `/v1`, answering in the seed's
//! `{"message", "data"}` shape and its errors as `{"message", "payload"}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{SignIn, SignUp};
use super::error::ApiError;
use super::extract::{Authed, ClientIp, JsonBody, parse_json};
use super::tasks::{TaskView, create_task};
use crate::app::AppState;
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

impl From<crate::auth::AuthError> for SeedError {
    fn from(e: crate::auth::AuthError) -> Self {
        SeedError(e.into())
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        let (status, headers, problem) = self.0.parts();
        let mut payload = problem.extensions;
        payload.insert("type".into(), problem.kind.into());
        payload.insert("title".into(), problem.title.into());
        (status, headers, Json(json!({"message": problem.detail, "payload": payload}))).into_response()
    }
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"message": "", "data": data}))
}

async fn sign_up(
    State(state): State<AppState>,
    body: Result<JsonBody<SignUp>, ApiError>,
) -> Result<Json<Value>, SeedError> {
    let JsonBody(body) = body?;
    let now = state.clock.now();
    let user = state.accounts.sign_up(&body.username, body.password, body.timezone.as_deref(), Role::User, now).await?;
    Ok(ok(json!({"user_id": user.id.to_string()})))
}

async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<JsonBody<SignIn>, ApiError>,
) -> Result<Json<Value>, SeedError> {
    let JsonBody(body) = body?;
    let session = state.accounts.sign_in(&body.username, &body.password, ip, state.clock.now()).await?;
    Ok(ok(json!({"bearer_token": format!("Bearer: {}", session.access_token)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedTask {
    content: Option<String>,
}

async fn task(
    State(state): State<AppState>,
    auth: Result<Authed, ApiError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, SeedError> {
    let auth = auth?;
    let body = body.map_err(ApiError::from)?;
    let content = if body.iter().all(u8::is_ascii_whitespace) { None } else { parse_json::<SeedTask>(&body)?.content };
    let (task, _) = create_task(&state, &auth, content.unwrap_or_else(|| UNTITLED.into())).await?;
    Ok(ok(serde_json::to_value(TaskView::from(task)).unwrap_or_default()))
}
