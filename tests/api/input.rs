//! Bad input: every case answers a 4xx problem document naming the field, never a
//! 5xx, and changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, problem};

async fn raw_post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    token: &str,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(token).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

on_both_stores!(malformed_bodies_answer_400_415_or_413);
async fn malformed_bodies_answer_400_415_or_413() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let json_ct = Some("application/json");
    let cases: Vec<(Option<&str>, Vec<u8>, u16)> = vec![
        (json_ct, b"{\"content\": ".to_vec(), 400),
        (json_ct, Vec::new(), 400),
        (json_ct, b"{\"content\": \"\xff\xfe\"}".to_vec(), 400),
        (json_ct, vec![b'['; 100_000], 400),
        (Some("text/plain"), b"{\"content\": \"x\"}".to_vec(), 415),
        (None, b"{\"content\": \"x\"}".to_vec(), 415),
        (json_ct, format!("{{\"content\": \"{}\"}}", "x".repeat(140_000)).into_bytes(), 413),
    ];

    for (content_type, body, status) in cases {
        let res = raw_post(&app, "/v1/tasks", content_type, body, &ann.access).await;
        assert_eq!(res.status().as_u16(), status, "{content_type:?}");
        let body = problem(res).await;
        assert_eq!(body["status"], status);
    }
    assert_eq!(app.quota(&ann).await["used"], 0, "nothing created, no quota used");
}

on_both_stores!(wrong_shapes_answer_422_naming_the_field);
async fn wrong_shapes_answer_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let cases = [
        (json!({"content": ""}), "content"),
        (json!({"content": "x".repeat(10_001)}), "content"),
        (json!({"content": "a\u{0}b"}), "content"),
        (json!({"content": 42}), "content"),
        (json!({}), "content"),
        (json!({"content": "x", "user_id": "someone"}), "user_id"),
        (json!({"content": "x", "id": "01900000-0000-7000-8000-000000000000"}), "id"),
        (json!({"content": "x", "created_at": "2020-01-01T00:00:00Z"}), "created_at"),
    ];

    for (body, field) in cases {
        let res = app.post("/v1/tasks", &body, Some(&ann.access)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem = problem(res).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    assert!(app.all_tasks(&ann).await.is_empty());
    assert_eq!(app.quota(&ann).await["used"], 0);
}

on_both_stores!(sign_up_refuses_fields_a_client_may_not_set);
async fn sign_up_refuses_fields_a_client_may_not_set() {
    let app = TestApp::spawn().await;

    for field in ["role", "daily_limit", "user_id", "id"] {
        let mut body = json!({"username": "mallory", "password": PASSWORD});
        body[field] = json!(if field == "daily_limit" { json!(1_000_000) } else { json!("admin") });
        let res = app.post("/v1/auth/signup", &body, None).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(problem(res).await["errors"][0]["field"], field);
    }
    let res = app.post("/v1/auth/signin", &json!({"username": "mallory", "password": PASSWORD}), None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no account was made");
}

on_both_stores!(sign_up_validation_names_every_bad_field);
async fn sign_up_validation_names_every_bad_field() {
    let app = TestApp::spawn().await;

    let res = app
        .post("/v1/auth/signup", &json!({"username": "a\u{0}", "password": "short", "timezone": "Mars/Base"}), None)
        .await;

    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(res).await;
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["username", "password", "timezone"]);
}

on_both_stores!(bad_query_parameters_answer_422_naming_them);
async fn bad_query_parameters_answer_422_naming_them() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1000000000", "limit"),
        ("limit=ten", "limit"),
        ("day=2026-13-01", "day"),
        ("done=yes", "done"),
        ("cursor=nope", "cursor"),
    ] {
        let res = app.get(&format!("/v1/tasks?{query}"), &ann.access).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(problem(res).await["errors"][0]["field"], field, "{query}");
    }
}

on_both_stores!(an_unknown_time_zone_is_refused_and_changes_nothing);
async fn an_unknown_time_zone_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let res = app.patch("/v1/me", &json!({"timezone": "Europe/Atlantis"}), &ann.access).await;

    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "timezone");
    let me: Value = app.me(&ann).await;
    assert_eq!(me["timezone"], "UTC");
    assert!(me.get("pending_timezone").is_none());
}

on_both_stores!(unknown_routes_and_methods_answer_problem_documents);
async fn unknown_routes_and_methods_answer_problem_documents() {
    let app = TestApp::spawn().await;

    let missing = app.client.get(app.url("/v1/nothing")).send().await.unwrap();
    let method = app.client.put(app.url("/v1/tasks")).send().await.unwrap();

    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(missing).await["status"], 404);
    assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(method).await["status"], 405);
}
