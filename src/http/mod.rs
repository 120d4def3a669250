//! The HTTP API: one module per resource, merged here, with the layers every request
//! passes through (request id and log line, body limit, problem documents for 404/405).

pub mod accounts;
pub mod admin;
pub mod client_ip;
pub mod docs;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod ops;
pub mod seed;
pub mod tasks;
pub mod web;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use self::error::ApiError;
use crate::app::AppState;

/// Large enough for a 10,000-character task in any script and escaping, small enough
/// to refuse junk cheaply.
pub const BODY_LIMIT: usize = 128 * 1024;

pub fn router(state: AppState) -> Router {
    crate::metrics::handle();
    Router::new()
        .merge(accounts::router())
        .merge(tasks::router())
        .merge(events::router())
        .merge(admin::router())
        .merge(seed::router())
        .merge(ops::router())
        .merge(docs::router())
        .merge(web::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// Gives each request an id (the client's `x-request-id` if sane), runs it inside a
/// span carrying that id, logs one line when it is answered, and echoes the id.
async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| (1..=64).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::now_v7().simple().to_string()).unwrap_or(HeaderValue::from_static("-"))
        });
    let span = tracing::info_span!("request", id = id.to_str().unwrap_or("-"));
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await.into_response();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(%method, %path, status, micros = elapsed.as_micros() as u64, "answered");
    });
    let labels = [("route", route), ("method", method.to_string())];
    metrics::histogram!(crate::metrics::HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
    let [route, method] = labels;
    metrics::counter!(crate::metrics::HTTP_REQUESTS, &[route, method, ("status", status.to_string())]).increment(1);
    response.headers_mut().insert("x-request-id", id);
    response
}
