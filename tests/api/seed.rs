//! The seed README's walk-through, as its clients run it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

on_both_stores!(the_seed_walk_through_works_as_written_with_a_longer_password);
async fn the_seed_walk_through_works_as_written_with_a_longer_password() {
    let app = TestApp::spawn().await;
    let creds = json!({"username": "user", "password": "testtest"});

    let res = app.client.post(app.url("/auth/signup")).json(&creds).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"], "");
    assert!(body["data"]["user_id"].is_string());

    let res = app.client.post(app.url("/auth/signin")).json(&creds).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let bearer = body["data"]["bearer_token"].as_str().unwrap().to_owned();
    assert!(bearer.starts_with("Bearer: ey"), "{bearer}");

    // As in the seed: a JSON content type, an `accept` header, and no body at all.
    let task = || {
        app.client
            .post(app.url("/task"))
            .header("Content-Type", "application/json")
            .header("accept", "*/*")
            .header("Authorization", &bearer)
            .send()
    };
    for _ in 0..5 {
        let res = task().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["message"], "");
        assert!(body["data"]["id"].is_string());
    }
    let res = task().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("daily limit"));
    assert_eq!(body["payload"]["type"], "https://quotask.dev/problems/quota-exceeded");
}

on_both_stores!(the_seeds_short_example_password_is_refused_in_the_seed_shape);
async fn the_seeds_short_example_password_is_refused_in_the_seed_shape() {
    let app = TestApp::spawn().await;

    let res = app
        .client
        .post(app.url("/auth/signup"))
        .json(&json!({"username": "user", "password": "test"}))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("at least 8"));
    assert_eq!(body["payload"]["errors"][0]["field"], "password");
}

on_both_stores!(the_seed_routes_answer_401_and_409_with_the_right_codes);
async fn the_seed_routes_answer_401_and_409_with_the_right_codes() {
    let app = TestApp::spawn().await;
    let creds = json!({"username": "user", "password": "testtest"});
    app.client.post(app.url("/auth/signup")).json(&creds).send().await.unwrap();

    let again = app.client.post(app.url("/auth/signup")).json(&creds).send().await.unwrap();
    let wrong = app
        .client
        .post(app.url("/auth/signin"))
        .json(&json!({"username": "user", "password": "wrongwrong"}))
        .send()
        .await
        .unwrap();
    let anonymous = app.client.post(app.url("/task")).send().await.unwrap();

    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
