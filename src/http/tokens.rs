//! `/v1/me/tokens`: the signed-in user's personal access tokens. Only a signed-in
//! session reaches these routes (`SessionOnly`); a personal token never does, so a
//! leaked one cannot make itself a successor.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Problem, path_id};
use super::extract::{JsonBody, SessionOnly, present};
use crate::domain::{PersonalToken, Scope};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/me/tokens", post(create).get(list)).route("/v1/me/tokens/{id}", delete(remove))
}

/// A scope, as clients write it.
#[derive(Serialize, ToSchema, Clone, Copy)]
enum ScopeName {
    /// `GET /v1/tasks`, `GET /v1/tasks/{id}`.
    #[serde(rename = "tasks:read")]
    TasksRead,
    /// `POST /v1/tasks`, `PATCH` and `DELETE /v1/tasks/{id}`, and the seed's `POST /task`.
    #[serde(rename = "tasks:write")]
    TasksWrite,
    /// `GET /v1/me/quota`.
    #[serde(rename = "quota:read")]
    QuotaRead,
    /// `GET /v1/events`.
    #[serde(rename = "events:read")]
    EventsRead,
}

impl From<Scope> for ScopeName {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::TasksRead => ScopeName::TasksRead,
            Scope::TasksWrite => ScopeName::TasksWrite,
            Scope::QuotaRead => ScopeName::QuotaRead,
            Scope::EventsRead => ScopeName::EventsRead,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// For its owner to tell tokens apart: 1 to 100 characters, not only white space,
    /// no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// What the token may do; at least one scope (a repeat counts once). Read as text,
    /// so that an unknown one is named in the answer.
    #[schema(value_type = Vec<ScopeName>, min_items = 1)]
    scopes: Vec<String>,
    /// When the token stops working, an RFC 3339 instant in the future; without it,
    /// the token works until it is deleted.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, format = DateTime)]
    expires_at: Option<String>,
}

/// A personal token as its owner sees it: never the token itself, which only its
/// creation answers.
#[derive(Serialize, ToSchema)]
struct TokenView {
    id: String,
    name: String,
    scopes: Vec<ScopeName>,
    created_at: String,
    /// When it stops working; null: when it is deleted.
    #[schema(required = true)]
    expires_at: Option<String>,
    /// Its last use, to the minute (uses are recorded at most once a minute); null:
    /// never used.
    #[schema(required = true)]
    last_used_at: Option<String>,
}

impl From<&PersonalToken> for TokenView {
    fn from(t: &PersonalToken) -> Self {
        TokenView {
            id: t.id.to_string(),
            name: t.name.clone(),
            scopes: t.scopes.iter().map(ScopeName::from).collect(),
            created_at: t.created_at.to_string(),
            expires_at: t.expires_at.map(|at| at.to_string()),
            last_used_at: t.last_used_at.map(|at| at.to_string()),
        }
    }
}

/// A token just made, with the token itself.
#[derive(Serialize, ToSchema)]
struct IssuedToken {
    #[serde(flatten)]
    view: TokenView,
    /// `qtk_` and 43 characters: sent as `Authorization: Bearer <token>`. Shown this
    /// once; only its hash is kept.
    #[schema(pattern = "^qtk_[A-Za-z0-9_-]{43}$")]
    token: String,
}

#[derive(Serialize, ToSchema)]
struct TokenList {
    /// Oldest first, expired ones included (at most 50).
    items: Vec<TokenView>,
}

#[utoipa::path(post, path = "/v1/me/tokens", tag = "tokens", operation_id = "create_token", security(("bearer" = [])), request_body = NewToken,
    responses((status = 201, description = "The token; `token` is shown this once", body = IssuedToken,
               headers(("Cache-Control" = String, description = "no-store: the answer holds a secret"))),
              (status = 403, description = "Not a signed-in session: a personal token cannot manage tokens (`insufficient-scope`)", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The user already holds 50 tokens", body = Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    auth: SessionOnly,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let issued = state
        .services
        .tokens
        .create(auth.user.id, &body.name, &body.scopes, body.expires_at.as_deref(), auth.now)
        .await?;
    let answer = IssuedToken { view: TokenView::from(&issued.token), token: issued.secret };
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    Ok((StatusCode::CREATED, no_store, Json(answer)).into_response())
}

#[utoipa::path(get, path = "/v1/me/tokens", tag = "tokens", operation_id = "list_tokens", security(("bearer" = [])),
    responses((status = 200, description = "The user's tokens, never the tokens themselves", body = TokenList),
              (status = 403, description = "Not a signed-in session (`insufficient-scope`)", body = Problem, content_type = "application/problem+json")))]
async fn list(State(state): State<AppState>, auth: SessionOnly) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.services.tokens.list(auth.user.id).await?;
    Ok(Json(TokenList { items: tokens.iter().map(TokenView::from).collect() }))
}

#[utoipa::path(delete, path = "/v1/me/tokens/{id}", tag = "tokens", operation_id = "delete_token", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted: the token stops working at once, on every instance"),
              (status = 403, description = "Not a signed-in session (`insufficient-scope`)", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such token of this user", body = Problem, content_type = "application/problem+json")))]
async fn remove(
    State(state): State<AppState>,
    auth: SessionOnly,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(&id)?;
    state.services.tokens.delete(auth.user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
