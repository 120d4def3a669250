//! The HTTP API: one module per resource, merged here, with the layers every request
//! passes through (request id and log line, body limit, problem documents for 404/405).

pub mod accounts;
pub mod admin;
pub mod client_ip;
pub mod docs;
pub mod error;
pub mod events;
pub mod extract;
pub mod ops;
pub mod seed;
pub mod state;
pub mod tasks;
pub mod tokens;
pub mod web;
pub mod webhooks;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics::Label;
use tracing::Instrument;

use self::error::ApiError;
pub use self::state::AppState;

/// Large enough for a 10,000-character task in any script and escaping, small enough
/// to refuse junk cheaply.
pub const BODY_LIMIT: usize = 128 * 1024;

/// A batch's body: 100 tasks of 10,000 characters, each escaped at its longest (six
/// bytes a character), fit; a larger body is refused before it is read.
pub const BATCH_BODY_LIMIT: usize = 8 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    crate::metrics::handle();
    Router::new()
        .merge(accounts::router())
        .merge(tasks::router())
        .merge(tokens::router())
        .merge(webhooks::router())
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

/// A UUIDv7 (sorts by time) in 32 hex digits. Its random bits come from the thread's
/// own generator: `Uuid::now_v7` asks the kernel for them, a system call per request.
fn new_request_id() -> HeaderValue {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let id = uuid::Builder::from_unix_timestamp_millis(u64::try_from(millis).unwrap_or(0), &rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    HeaderValue::from_bytes(id.simple().encode_lower(&mut text).as_bytes()).unwrap_or(HeaderValue::from_static("-"))
}

/// A method's metrics label: the method's name if it is one of RFC 9110's (and PATCH),
/// else `other`. Anyone can send any token as a method, and each distinct label value is
/// a series kept for the life of the process.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

/// Gives each request an id (the client's `x-request-id` if sane), runs it inside a
/// span carrying that id, logs one line when it is answered, and echoes the id.
async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| (1..=64).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned()
        .unwrap_or_else(new_request_id);
    let span = tracing::info_span!("request", id = id.to_str().unwrap_or("-"));
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    // The route's template, never the path: a label value must come from a fixed set, or
    // every made-up path would be a series of its own, kept for the life of the process.
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await.into_response();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(%method, %path, status, micros = elapsed.as_micros() as u64, "answered");
    });
    let labels = [Label::new("route", route), Label::from_static_parts("method", method_label(&method))];
    metrics::histogram!(crate::metrics::HTTP_DURATION, labels.iter()).record(elapsed.as_secs_f64());
    let [route, method] = labels;
    metrics::counter!(crate::metrics::HTTP_REQUESTS, vec![route, method, Label::new("status", status.to_string())])
        .increment(1);
    response.headers_mut().insert("x-request-id", id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_label_is_a_standard_method_or_other() {
        for known in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"] {
            assert_eq!(method_label(&Method::from_bytes(known.as_bytes()).unwrap()), known);
        }
        for made_up in ["get", "PROPFIND", "BREW", &"X".repeat(2000)] {
            assert_eq!(method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()), "other", "{made_up:.20}");
        }
    }

    #[test]
    fn a_new_request_id_is_a_fresh_uuid_v7_of_now_in_32_hex_digits() {
        let before = jiff::Timestamp::now().as_millisecond();
        let (a, b) = (new_request_id(), new_request_id());
        let after = jiff::Timestamp::now().as_millisecond();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 32);
        let id = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let millis = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
        assert!((before..=after).contains(&millis), "{before} <= {millis} <= {after}");
    }
}
