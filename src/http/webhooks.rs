//! `/v1/me/webhooks`: the signed-in user's webhooks and their delivery log. Only a
//! signed-in session reaches these routes (`SessionOnly`): a webhook sends the user's
//! data to any URL, so a personal token (made for scripts, and easier to leak) cannot
//! set one up; it gets 403 `insufficient-scope`, as on `/v1/me/tokens`.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, Problem, path_id};
use super::extract::{JsonBody, SessionOnly};
use crate::domain::webhooks::{Attempt, Delivery, EventType, Webhook};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me/webhooks", post(create).get(list))
        .route("/v1/me/webhooks/{id}", delete(remove))
        .route("/v1/me/webhooks/{id}/deliveries", get(deliveries))
}

/// An event, as clients write it.
#[derive(Serialize, ToSchema, Clone, Copy)]
enum EventName {
    /// A task was created (`data`: the task).
    #[serde(rename = "task.created")]
    TaskCreated,
    /// A task was changed (`data`: the task as changed).
    #[serde(rename = "task.updated")]
    TaskUpdated,
    /// A task was deleted (`data`: `{"id"}`).
    #[serde(rename = "task.deleted")]
    TaskDeleted,
    /// A create used the last unit of the user's day (`data`: `{"day", "limit", "used"}`).
    #[serde(rename = "quota.exhausted")]
    QuotaExhausted,
}

impl From<EventType> for EventName {
    fn from(e: EventType) -> Self {
        match e {
            EventType::TaskCreated => EventName::TaskCreated,
            EventType::TaskUpdated => EventName::TaskUpdated,
            EventType::TaskDeleted => EventName::TaskDeleted,
            EventType::QuotaExhausted => EventName::QuotaExhausted,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    /// Where events are POSTed: an `http` or `https` URL (at most 2000 characters)
    /// whose host is not, and does not resolve to, a loopback, private, link-local or
    /// otherwise internal address.
    #[schema(max_length = 2000)]
    url: String,
    /// The events to send; at least one (a repeat counts once). Read as text, so that
    /// an unknown one is named in the answer.
    #[schema(value_type = Vec<EventName>, min_items = 1)]
    events: Vec<String>,
}

/// A webhook as its owner sees it: never its secret, which only its creation answers.
#[derive(Serialize, ToSchema)]
struct WebhookView {
    id: String,
    url: String,
    events: Vec<EventName>,
    created_at: String,
    /// True once an event could not be delivered for the whole retry schedule (over 24
    /// hours); nothing more is sent to it.
    disabled: bool,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        WebhookView {
            id: w.id.to_string(),
            url: w.url.clone(),
            events: w.events.iter().map(EventName::from).collect(),
            created_at: w.created_at.to_string(),
            disabled: w.disabled,
        }
    }
}

/// A webhook just made, with its secret.
#[derive(Serialize, ToSchema)]
struct CreatedWebhook {
    #[serde(flatten)]
    view: WebhookView,
    /// `whsec_` and base64 of 24 random bytes: the base64-decoded part keys each
    /// delivery's HMAC-SHA256 signature. Shown this once.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32}$")]
    secret: String,
}

#[derive(Serialize, ToSchema)]
struct WebhookList {
    /// Oldest first (at most 10).
    items: Vec<WebhookView>,
}

/// One attempt to deliver an event.
#[derive(Serialize, ToSchema)]
struct AttemptView {
    at: String,
    /// The receiver's status code; null if it did not answer.
    #[schema(required = true)]
    status: Option<u16>,
    /// Why the attempt failed; null if it succeeded.
    #[schema(required = true)]
    error: Option<String>,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        AttemptView { at: a.at.to_string(), status: a.status, error: a.error.clone() }
    }
}

/// One event of the webhook and what became of it.
#[derive(Serialize, ToSchema)]
struct DeliveryView {
    /// Also the `webhook-id` header of every attempt.
    event_id: String,
    #[serde(rename = "type")]
    #[schema(value_type = EventName)]
    event_type: String,
    timestamp: String,
    attempts: u32,
    /// The receiver's status code at the last attempt; null if none answered yet.
    #[schema(required = true)]
    last_status: Option<u16>,
    /// Why the last attempt failed; null if it succeeded or none was made.
    #[schema(required = true)]
    last_error: Option<String>,
    /// When the next attempt is due; null once delivered or given up.
    #[schema(required = true)]
    next_attempt_at: Option<String>,
    /// When it was delivered; null if not yet (or given up).
    #[schema(required = true)]
    delivered_at: Option<String>,
    /// Every attempt, oldest first.
    log: Vec<AttemptView>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            event_id: d.event_id.to_string(),
            event_type: d.event_type.clone(),
            timestamp: d.occurred_at.to_string(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at.map(|t| t.to_string()),
            delivered_at: d.delivered_at.map(|t| t.to_string()),
            log: d.log.iter().map(AttemptView::from).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct DeliveryList {
    /// The latest 50 events, newest first.
    items: Vec<DeliveryView>,
}

#[utoipa::path(post, path = "/v1/me/webhooks", tag = "webhooks", operation_id = "create_webhook", security(("bearer" = [])), request_body = NewWebhook,
    responses((status = 201, description = "The webhook; `secret` is shown this once", body = CreatedWebhook,
               headers(("Cache-Control" = String, description = "no-store: the answer holds a secret"))),
              (status = 403, description = "Not a signed-in session: a personal token cannot manage webhooks (`insufficient-scope`)", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The user already holds 10 webhooks", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A URL that is not http(s), or whose host is or resolves to a loopback, private, link-local or internal address; an unknown event", body = Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    auth: SessionOnly,
    JsonBody(body): JsonBody<NewWebhook>,
) -> Result<Response, ApiError> {
    let hook = state.services.webhooks.create(auth.user.id, &body.url, &body.events, auth.now).await?;
    let answer = CreatedWebhook { view: WebhookView::from(&hook), secret: hook.secret };
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    Ok((StatusCode::CREATED, no_store, Json(answer)).into_response())
}

#[utoipa::path(get, path = "/v1/me/webhooks", tag = "webhooks", operation_id = "list_webhooks", security(("bearer" = [])),
    responses((status = 200, description = "The user's webhooks, never their secrets", body = WebhookList),
              (status = 403, description = "Not a signed-in session (`insufficient-scope`)", body = Problem, content_type = "application/problem+json")))]
async fn list(State(state): State<AppState>, auth: SessionOnly) -> Result<Json<WebhookList>, ApiError> {
    let hooks = state.services.webhooks.list(auth.user.id).await?;
    Ok(Json(WebhookList { items: hooks.iter().map(WebhookView::from).collect() }))
}

#[utoipa::path(delete, path = "/v1/me/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted, with its events: nothing more is sent to it"),
              (status = 403, description = "Not a signed-in session (`insufficient-scope`)", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such webhook of this user", body = Problem, content_type = "application/problem+json")))]
async fn remove(
    State(state): State<AppState>,
    auth: SessionOnly,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(&id)?;
    state.services.webhooks.delete(auth.user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/me/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "list_webhook_deliveries", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The webhook's latest events, each with its attempts", body = DeliveryList),
              (status = 403, description = "Not a signed-in session (`insufficient-scope`)", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such webhook of this user", body = Problem, content_type = "application/problem+json")))]
async fn deliveries(
    State(state): State<AppState>,
    auth: SessionOnly,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    let id = path_id(&id)?;
    let log = state.services.webhooks.deliveries(auth.user.id, id).await?;
    Ok(Json(DeliveryList { items: log.iter().map(DeliveryView::from).collect() }))
}
