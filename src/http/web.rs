//! The web page at `/`: plain HTML, CSS and JavaScript compiled into the binary, so the
//! service needs no static-file directory, no build step and no network to show it.
//! `app.js` is the page; `admin.js`, a module it imports, is the admin page at `/#admin`.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const ADMIN_JS: &str = include_str!("../../web/admin.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// Everything the page loads or talks to comes from this origin: no inline script or
/// style (so injected markup cannot run), no plugins, no framing by other sites.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    routes()
}

/// The routes need no state; generic so that the tests can serve them alone.
fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/admin.js", get(|| async { asset("text/javascript; charset=utf-8", ADMIN_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// One embedded file. `no-cache` makes the browser revalidate, so a new binary's page
/// is seen at once.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get_path(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = routes::<()>().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = String::from_utf8(to_bytes(body, usize::MAX).await.unwrap().to_vec()).unwrap();
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn each_file_is_served_with_its_type_a_same_origin_policy_and_no_cache() {
        for (path, mime, marker) in [
            ("/", "text/html", "<!doctype html>"),
            ("/app.js", "text/javascript", "'use strict'"),
            ("/admin.js", "text/javascript", "export function adminPage"),
            ("/style.css", "text/css", ":root"),
        ] {
            let (status, headers, body) = get_path(path).await;

            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(mime), "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self';") && !csp.contains("unsafe"), "{path}: {csp}");
            assert!(body.contains(marker), "{path}");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_never_writes_markup_from_data() {
        assert!(INDEX_HTML.contains(r#"src="/app.js""#) && INDEX_HTML.contains(r#"href="/style.css""#));
        assert!(APP_JS.contains("from './admin.js'"));
        for text in [INDEX_HTML, APP_JS, ADMIN_JS, STYLE_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"), "no other origin");
        }
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
            assert!(!ADMIN_JS.contains(sink), "admin.js uses {sink}");
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "nothing inline");
    }
}
