//! Sign-up, sign-in, refresh rotation, sign-out and the signed-in user.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, header, problem};

on_both_stores!(sign_up_returns_the_user_without_any_password);
async fn sign_up_returns_the_user_without_any_password() {
    let app = TestApp::spawn().await;

    let res = app
        .post(
            "/v1/auth/signup",
            &json!({"username": "Zoë", "password": PASSWORD, "timezone": "Asia/Ho_Chi_Minh"}),
            None,
        )
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let text = res.text().await.unwrap();
    assert!(!text.contains("argon2") && !text.contains("password"), "{text}");
    let user: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(user["username"], "zoë");
    assert_eq!(user["timezone"], "Asia/Ho_Chi_Minh");
    assert_eq!(user["daily_limit"], 5);
    assert_eq!(user["role"], "user");
    assert_eq!(user["created_at"], "2026-06-15T12:00:00Z");
}

on_both_stores!(a_taken_username_in_any_case_or_normal_form_answers_409);
async fn a_taken_username_in_any_case_or_normal_form_answers_409() {
    let app = TestApp::spawn().await;
    app.sign_up("josé").await;

    for spelling in ["JOSÉ", "jose\u{301}"] {
        let res = app.post("/v1/auth/signup", &json!({"username": spelling, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::CONFLICT, "{spelling}");
    }
}

on_both_stores!(sign_in_gives_a_bearer_pair_that_opens_me);
async fn sign_in_gives_a_bearer_pair_that_opens_me() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;

    let res = app.post("/v1/auth/signin", &json!({"username": "ANN", "password": PASSWORD}), None).await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let me: Value = app.get("/v1/me", body["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["username"], "ann");
}

on_both_stores!(refresh_rotates_and_reusing_a_spent_token_revokes_the_family);
async fn refresh_rotates_and_reusing_a_spent_token_revokes_the_family() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let res = app.post("/v1/auth/refresh", &json!({"refresh_token": ann.refresh}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    assert_ne!(second["refresh_token"], ann.refresh.as_str());
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(app.get("/v1/me", access).await.status(), StatusCode::OK, "the new pair works");

    let reuse = app.post("/v1/auth/refresh", &json!({"refresh_token": ann.refresh}), None).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);

    let successor = app.post("/v1/auth/refresh", &json!({"refresh_token": second["refresh_token"]}), None).await;
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED, "the whole family is revoked");
    assert_eq!(app.get("/v1/me", access).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/me", &ann.access).await.status(), StatusCode::UNAUTHORIZED);
}

on_both_stores!(sign_out_ends_the_access_token_and_the_refresh_token);
async fn sign_out_ends_the_access_token_and_the_refresh_token() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let other_session = app.sign_in("ann").await;

    let res = app.post("/v1/auth/signout", &json!(null), Some(&ann.access)).await;

    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get("/v1/me", &ann.access).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&res, "www-authenticate"), "Bearer");
    let refresh = app.post("/v1/auth/refresh", &json!({"refresh_token": ann.refresh}), None).await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/me", &other_session.access).await.status(), StatusCode::OK, "other sessions live on");
}

on_both_stores!(a_password_change_lets_the_new_password_sign_in);
async fn a_password_change_lets_the_new_password_sign_in() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let res = app.patch("/v1/me", &json!({"password": "a brand new passphrase"}), &ann.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    let old = app.post("/v1/auth/signin", &json!({"username": "ann", "password": PASSWORD}), None).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new =
        app.post("/v1/auth/signin", &json!({"username": "ann", "password": "a brand new passphrase"}), None).await;
    assert_eq!(new.status(), StatusCode::OK);
}

on_both_stores!(unknown_user_and_wrong_password_get_the_same_answer);
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;

    let wrong = app.post("/v1/auth/signin", &json!({"username": "ann", "password": "not the password"}), None).await;
    let unknown =
        app.post("/v1/auth/signin", &json!({"username": "nobody", "password": "not the password"}), None).await;

    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(wrong).await, problem(unknown).await);
}
