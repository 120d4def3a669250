//! `GET /metrics`: series that no request can multiply, and the optional bearer token.
//! These touch no store, so they run on SQLite only.

use quotask::config::MetricsToken;
use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, header, problem};

const TOKEN: &str = "metrics-0123456789abcdef";

async fn metrics_text(app: &TestApp, token: Option<&str>) -> String {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

#[tokio::test]
async fn made_up_methods_paths_and_headers_add_no_series_to_the_metrics() {
    let app = TestApp::spawn().await;
    let before = metrics_text(&app, None).await;

    for i in 0..300 {
        let method = Method::from_bytes(format!("MADEUP{i:04}{}", "X".repeat(1000)).as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/v1/tasks".to_owned() } else { format!("/made-up-{i:04}/{}", "p".repeat(500)) };
        let req = app.client.request(method, app.url(&path)).header(format!("x-made-up-{i:04}"), "h".repeat(100));
        let res = req.send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }

    let after = metrics_text(&app, None).await;
    assert!(!after.contains("MADEUP"), "a made-up method became a label value");
    assert!(!after.contains("/made-up-"), "a made-up path became a label value");
    assert!(!after.contains("x-made-up-"), "a made-up header became a label value");
    assert!(after.contains(r#"method="other""#), "made-up methods are counted as `other`");
    assert!(after.contains(r#"route="unmatched""#) && after.contains(r#"route="/v1/tasks""#));
    // Other tests of this binary add their own (bounded) series meanwhile; 300 made-up
    // methods of 1,000 characters, each a series of its own, would add megabytes.
    assert!(after.len() < before.len() + 64 * 1024, "/metrics grew from {} to {} bytes", before.len(), after.len());
}

#[tokio::test]
async fn without_a_metrics_token_the_metrics_are_open() {
    let app = TestApp::spawn().await;
    app.client.get(app.url("/healthz")).send().await.unwrap();

    let text = metrics_text(&app, None).await;

    assert!(text.contains("quotask_http_requests_total"), "{text:.200}");
}

#[tokio::test]
async fn with_a_metrics_token_the_metrics_answer_only_requests_that_carry_it() {
    let app = TestApp::spawn_with(|s| s.metrics_token = Some(MetricsToken::parse(TOKEN).unwrap())).await;
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let wrong = [None, Some("Bearer metrics-0123456789abcdeF"), Some("Bearer "), Some("Basic bWV0cmljczp4")];

    for authorization in wrong {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(header(&res, "www-authenticate"), "Bearer");
        let body = problem(res).await;
        assert_eq!(body["type"], "https://quotask.dev/problems/unauthorized");
        assert!(!body.to_string().contains("quotask_"), "no metric leaks into the refusal");
    }

    let text = metrics_text(&app, Some(TOKEN)).await;
    assert!(text.contains("quotask_http_requests_total"), "{text:.200}");
}
