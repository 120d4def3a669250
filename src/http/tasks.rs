//! `/v1/tasks`: task CRUD, with the quota checked and consumed on create.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, Problem, quota_headers};
use super::extract::{Authed, JsonBody, present};
use super::idempotency::{self, KeyHeader};
use crate::app::AppState;
use crate::domain::{FieldError, QuotaStatus, Task, TaskContent};
use crate::events::Kind;
use crate::store::{Created, KEY_IN_FLIGHT, StoreError, TaskFilter, TaskPatch};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(create).get(list))
        .route("/v1/tasks/{id}", get(read).patch(update).delete(remove))
}

#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub content: String,
    pub done: bool,
    pub day: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        let created_at = t.created_at.to_string();
        // A task never changed has both times equal: formatted once.
        let updated_at = if t.updated_at == t.created_at { created_at.clone() } else { t.updated_at.to_string() };
        TaskView {
            id: t.id.to_string(),
            content: t.content,
            done: t.done,
            day: t.day.to_string(),
            created_at,
            updated_at,
        }
    }
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

/// A created task as its creator sees it: the task, today's quota, and whether this is
/// the replayed answer to an earlier request with the same idempotency key.
pub struct Outcome {
    pub task: Task,
    pub status: QuotaStatus,
    pub replayed: bool,
}

/// Creates a task for the signed-in user, or says why not; `/v1` and the seed's
/// `/task` both come here. `route` names the caller, so that an idempotency key used on
/// one route is not taken for a repeat on the other.
pub async fn create_task(
    state: &AppState,
    auth: &Authed,
    key_header: &KeyHeader,
    route: &str,
    content: String,
) -> Result<Outcome, ApiError> {
    let content = TaskContent::parse(content)?;
    let key = idempotency::key(key_header, route, content.as_str())?;
    let _claim = match &key {
        Some(key) => Some(state.in_flight.claim(auth.user.id, &key.key).ok_or_else(key_in_flight)?),
        None => None,
    };
    let created = state.store.create_task(&auth.user, content, key, auth.now).await.map_err(|e| match e {
        StoreError::Conflict(KEY_IN_FLIGHT) => key_in_flight(),
        other => other.into(),
    })?;
    match created {
        Created::Task(task, status) => {
            metrics::counter!(crate::metrics::TASKS_CREATED).increment(1);
            state.events.publish(auth.user.id, Kind::TaskCreated, || TaskView::from(task.clone()));
            Ok(Outcome { task, status, replayed: false })
        }
        Created::Replay(task) => {
            let used = state.store.used(auth.user.id, auth.user.zone.window(auth.now).day).await?;
            let status = QuotaStatus::of(&auth.user, used, auth.now);
            Ok(Outcome { task, status, replayed: true })
        }
        Created::OverLimit(status) => {
            metrics::counter!(crate::metrics::QUOTA_REJECTIONS).increment(1);
            Err(ApiError::QuotaExceeded(Box::new(status), auth.now))
        }
        Created::KeyReused => {
            Err(FieldError::new("Idempotency-Key", "was already used with another request body").into())
        }
    }
}

fn key_in_flight() -> ApiError {
    ApiError::Conflict("a request with this Idempotency-Key is still being processed".into())
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), request_body = NewTask,
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
    auth: Authed,
    key_header: KeyHeader,
    JsonBody(body): JsonBody<NewTask>,
) -> Response {
    match create_task(&state, &auth, &key_header, "v1", body.content).await {
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
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])),
    params(("day" = Option<String>, Query, format = Date, description = "Local day, YYYY-MM-DD"),
           ("done" = Option<bool>, Query),
           ("limit" = Option<u32>, Query, description = "1 to 100, default 50", minimum = 1, maximum = 100),
           ("cursor" = Option<String>, Query, format = Uuid, description = "next_cursor of the previous page")),
    responses((status = 200, description = "Tasks, newest first", body = TaskPage)))]
async fn list(
    State(state): State<AppState>,
    auth: Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TaskPage>, ApiError> {
    let filter = parse_filter(&params)?;
    let limit = filter.limit as usize;
    let mut tasks = state.store.list_tasks(auth.user.id, TaskFilter { limit: filter.limit + 1, ..filter }).await?;
    let next_cursor = (tasks.len() > limit).then(|| tasks[limit - 1].id.to_string());
    tasks.truncate(limit);
    Ok(Json(TaskPage { items: tasks.into_iter().map(TaskView::from).collect(), next_cursor }))
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

/// A task id from the path; an id that cannot exist answers 404 like a missing one.
fn task_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The task", body = TaskView),
              (status = 404, description = "No such task of this user", body = Problem, content_type = "application/problem+json")))]
async fn read(State(state): State<AppState>, auth: Authed, Path(id): Path<String>) -> Result<Json<TaskView>, ApiError> {
    let task = state.store.task(auth.user.id, task_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(task.into()))
}

#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = TaskChanges,
    responses((status = 200, description = "The updated task", body = TaskView),
              (status = 404, description = "No such task of this user", body = Problem, content_type = "application/problem+json")))]
async fn update(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TaskChanges>,
) -> Result<Json<TaskView>, ApiError> {
    let id = task_id(&id)?;
    let patch = TaskPatch { content: body.content.map(TaskContent::parse).transpose()?, done: body.done };
    let task =
        TaskView::from(state.store.update_task(auth.user.id, id, patch, auth.now).await?.ok_or(ApiError::NotFound)?);
    state.events.publish(auth.user.id, Kind::TaskUpdated, || &task);
    Ok(Json(task))
}

#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; the quota it used is not given back"),
              (status = 404, description = "No such task of this user", body = Problem, content_type = "application/problem+json")))]
async fn remove(State(state): State<AppState>, auth: Authed, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = task_id(&id)?;
    if !state.store.delete_task(auth.user.id, id).await? {
        return Err(ApiError::NotFound);
    }
    state.events.publish(auth.user.id, Kind::TaskDeleted, || serde_json::json!({"id": id.to_string()}));
    Ok(StatusCode::NO_CONTENT)
}
