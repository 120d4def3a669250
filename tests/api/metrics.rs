//! `GET /metrics`: series that no request can multiply.
//! These touch no store, so they run on SQLite only.

use reqwest::{Method, StatusCode};

use crate::helpers::TestApp;

async fn metrics_text(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_series_to_the_metrics() {
    let app = TestApp::spawn().await;
    let before = metrics_text(&app).await;

    for i in 0..300 {
        let method = Method::from_bytes(format!("MADEUP{i:04}{}", "X".repeat(1000)).as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/v1/tasks".to_owned() } else { format!("/made-up-{i:04}/{}", "p".repeat(500)) };
        let res = app.client.request(method, app.url(&path)).send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }

    let after = metrics_text(&app).await;
    assert!(!after.contains("MADEUP"), "a made-up method became a label value");
    assert!(!after.contains("/made-up-"), "a made-up path became a label value");
    assert!(after.contains(r#"method="other""#), "made-up methods are counted as `other`");
    assert!(after.contains(r#"route="unmatched""#) && after.contains(r#"route="/v1/tasks""#));
    // Other tests of this binary add their own (bounded) series meanwhile; 300 made-up
    // methods of 1,000 characters, each a series of its own, would add megabytes.
    assert!(after.len() < before.len() + 64 * 1024, "/metrics grew from {} to {} bytes", before.len(), after.len());
}
