//! `/v1/tasks`: task CRUD, with the quota checked and consumed on create.

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Problem, path_id, quota_headers};
use super::extract::{JsonBody, KeyHeader, Scoped, present, scope};
use crate::domain::{FieldError, TaskContent, TaskFilter, TaskPatch};
use crate::service::tasks::Outcome;
pub use crate::service::tasks::TaskView;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(create).get(list))
        .route("/v1/tasks/batch", post(create_batch).layer(DefaultBodyLimit::max(super::BATCH_BODY_LIMIT)))
        .route("/v1/tasks/{id}", get(read).patch(update).delete(remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// 1 to 10,000 characters, not blank, no NUL.
    #[schema(min_length = 1, max_length = 10000, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub content: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewBatch {
    /// 1 to 100 tasks, created in this order, all or none.
    #[schema(min_items = 1, max_items = 100)]
    tasks: Vec<NewTask>,
}

#[derive(Serialize, ToSchema)]
struct Batch {
    /// The tasks, in the order asked.
    items: Vec<TaskView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TaskChanges {
    #[schema(min_length = 1, max_length = 10000, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    content: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    done: Option<bool>,
}

#[derive(Serialize, ToSchema)]
struct TaskPage {
    items: Vec<TaskView>,
    next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["tasks:write"])), request_body = NewTask,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters; a repeat within 24 h gets the first answer")),
    responses((status = 201, description = "The task; one unit of today's quota used (none for a replay)", body = TaskView,
               headers(("Location" = String, description = "/v1/tasks/{id}"),
                       ("Idempotent-Replayed" = String, description = "true when this is the first answer again"),
                       ("RateLimit-Policy" = String, description = "\"daily\";q=<limit>;w=86400"),
                       ("RateLimit" = String, description = "\"daily\";r=<remaining>;t=<seconds to reset>"))),
              (status = 429, description = "The daily limit is reached", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to the user's next local midnight"),
                       ("RateLimit-Policy" = String), ("RateLimit" = String))),
              (status = 409, description = "A request with this Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    auth: Scoped<scope::TasksWrite>,
    key_header: KeyHeader,
    JsonBody(body): JsonBody<NewTask>,
) -> Response {
    let created = state.services.tasks.create(&auth.user, body.content, key_header.bytes(), "v1", auth.now).await;
    match created {
        Ok(Outcome { task, status, replayed }) => {
            let location = format!("/v1/tasks/{}", task.id);
            let replayed = if replayed { "true" } else { "false" };
            (
                StatusCode::CREATED,
                [(header::LOCATION, location), (HeaderName::from_static("idempotent-replayed"), replayed.to_owned())],
                quota_headers(&status, auth.now),
                Json(TaskView::from(task)),
            )
                .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", security(("bearer" = ["tasks:write"])), request_body = NewBatch,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters; a repeat of the same batch within 24 h gets the first answer")),
    responses((status = 201, description = "Every task, in the order asked; as many units of today's quota used (none for a replay)", body = Batch,
               headers(("Idempotent-Replayed" = String, description = "true when this is the first answer again"),
                       ("RateLimit-Policy" = String, description = "\"daily\";q=<limit>;w=86400"),
                       ("RateLimit" = String, description = "\"daily\";r=<remaining>;t=<seconds to reset>"))),
              (status = 429, description = "Fewer units remain today than the batch asks for; nothing was created (`requested`, `remaining`)", body = Problem, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to the user's next local midnight"),
                       ("RateLimit-Policy" = String), ("RateLimit" = String))),
              (status = 409, description = "A request with this Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json")))]
async fn create_batch(
    State(state): State<AppState>,
    auth: Scoped<scope::TasksWrite>,
    key_header: KeyHeader,
    JsonBody(body): JsonBody<NewBatch>,
) -> Result<Response, ApiError> {
    let contents = body.tasks.into_iter().map(|t| t.content).collect();
    let created = state.services.tasks.create_batch(&auth.user, contents, key_header.bytes(), auth.now).await?;
    let replayed = if created.replayed { "true" } else { "false" };
    Ok((
        StatusCode::CREATED,
        [(HeaderName::from_static("idempotent-replayed"), replayed)],
        quota_headers(&created.status, auth.now),
        Json(Batch { items: created.tasks.into_iter().map(TaskView::from).collect() }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["tasks:read"])),
    params(("day" = Option<String>, Query, format = Date, description = "Local day, YYYY-MM-DD"),
           ("done" = Option<bool>, Query),
           ("limit" = Option<u32>, Query, description = "1 to 100, default 50", minimum = 1, maximum = 100),
           ("cursor" = Option<String>, Query, format = Uuid, description = "next_cursor of the previous page")),
    responses((status = 200, description = "Tasks, newest first", body = TaskPage)))]
async fn list(
    State(state): State<AppState>,
    auth: Scoped<scope::TasksRead>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TaskPage>, ApiError> {
    let page = state.services.tasks.list(auth.user.id, parse_filter(&params)?).await?;
    let next_cursor = page.next_cursor.map(|id| id.to_string());
    Ok(Json(TaskPage { items: page.items.into_iter().map(TaskView::from).collect(), next_cursor }))
}

fn parse_filter(params: &HashMap<String, String>) -> Result<TaskFilter, ApiError> {
    let mut errors = Vec::new();
    let mut filter = TaskFilter { limit: 50, ..TaskFilter::default() };
    for (key, value) in params {
        match key.as_str() {
            "day" => match value.parse() {
                Ok(day) => filter.day = Some(day),
                Err(_) => errors.push(FieldError::new("day", "must be a date, YYYY-MM-DD")),
            },
            "done" => match value.as_str() {
                "true" => filter.done = Some(true),
                "false" => filter.done = Some(false),
                _ => errors.push(FieldError::new("done", "must be true or false")),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n @ 1..=100) => filter.limit = n,
                _ => errors.push(FieldError::new("limit", "must be a whole number from 1 to 100")),
            },
            "cursor" => match Uuid::parse_str(value) {
                Ok(id) => filter.before = Some(id),
                Err(_) => errors.push(FieldError::new("cursor", "is not a cursor this service gave out")),
            },
            _ => errors.push(FieldError::new("query", format!("unknown parameter {key:?}"))),
        }
    }
    if errors.is_empty() { Ok(filter) } else { Err(ApiError::Validation(errors)) }
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["tasks:read"])), params(("id" = String, Path)),
    responses((status = 200, description = "The task", body = TaskView),
              (status = 404, description = "No such task of this user", body = Problem, content_type = "application/problem+json")))]
async fn read(
    State(state): State<AppState>,
    auth: Scoped<scope::TasksRead>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(state.services.tasks.get(auth.user.id, path_id(&id)?).await?.into()))
}

#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["tasks:write"])), params(("id" = String, Path)),
    request_body = TaskChanges,
    responses((status = 200, description = "The updated task", body = TaskView),
              (status = 404, description = "No such task of this user", body = Problem, content_type = "application/problem+json")))]
async fn update(
    State(state): State<AppState>,
    auth: Scoped<scope::TasksWrite>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TaskChanges>,
) -> Result<Json<TaskView>, ApiError> {
    let id = path_id(&id)?;
    let patch = TaskPatch { content: body.content.map(TaskContent::parse).transpose()?, done: body.done };
    Ok(Json(state.services.tasks.update(auth.user.id, id, patch, auth.now).await?.into()))
}

#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["tasks:write"])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; the quota it used is not given back"),
              (status = 404, description = "No such task of this user", body = Problem, content_type = "application/problem+json")))]
async fn remove(
    State(state): State<AppState>,
    auth: Scoped<scope::TasksWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.services.tasks.delete(auth.user.id, path_id(&id)?, auth.now).await?;
    Ok(StatusCode::NO_CONTENT)
}
