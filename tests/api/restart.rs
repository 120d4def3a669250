//! What survives a restart: tasks, quota use, tokens.

use reqwest::StatusCode;

use crate::helpers::TestApp;

on_both_stores!(a_restart_keeps_tasks_quota_and_tokens);
async fn a_restart_keeps_tasks_quota_and_tokens() {
    let mut app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    for i in 0..3 {
        assert_eq!(app.create_task(&ann, &format!("task {i}")).await.status(), StatusCode::CREATED);
    }

    app.restart().await;

    assert_eq!(app.get("/v1/me", &ann.access).await.status(), StatusCode::OK, "the access token still works");
    let refreshed = app.post("/v1/auth/refresh", &serde_json::json!({"refresh_token": ann.refresh}), None).await;
    assert_eq!(refreshed.status(), StatusCode::OK, "the refresh token still works");
    assert_eq!(app.all_tasks(&ann).await.len(), 3);
    assert_eq!(app.quota(&ann).await["used"], 3);
}
