//! Operations: liveness and readiness.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, Problem};

/// How long readiness waits for the database before calling it unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(health)).route("/readyz", get(ready)).route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready: the database answers; shows the zone-rules version"),
              (status = 503, description = "Not ready (database unreachable, or stopping)", body = Problem, content_type = "application/problem+json")))]
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    match tokio::time::timeout(PING_TIMEOUT, state.services.database_ready()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready", "tzdb": crate::domain::input::tzdb_version()}))),
        Ok(Err(e)) => Err(ApiError::Unavailable(e.to_string())),
        Err(_) => Err(ApiError::Unavailable("database ping timed out".into())),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4")))]
async fn metrics() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render())
}
