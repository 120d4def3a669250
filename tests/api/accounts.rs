//! Sign-up, sign-in, refresh rotation, sign-out and the signed-in user.

use std::io::Write as _;
use std::time::Duration;

use quotask::clock::Clock as _;
use quotask::config::Settings;
use quotask::config::TrustedProxies;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, header, problem};
use crate::redis_harness::instances;

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

/// The server believes 127.0.0.1's `X-Forwarded-For`, so a test can speak from any address.
fn behind_a_proxy(settings: &mut Settings) {
    settings.trusted_proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
}

async fn sign_up_from(app: &TestApp, route: &str, username: &str, address: &str) -> reqwest::Response {
    let body = json!({"username": username, "password": PASSWORD});
    app.client.post(app.url(route)).header("x-forwarded-for", address).json(&body).send().await.unwrap()
}

on_both_stores!(a_sign_up_of_a_taken_name_computes_no_hash);
async fn a_sign_up_of_a_taken_name_computes_no_hash() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;
    app.sign_up("copeaa").await;
    let before = app.state.services.accounts.hashes_computed();

    // The same name in other cases, and an all-Cyrillic look-alike of another (the same
    // confusable skeleton).
    for spelling in ["ann", "ANN", "Ann", "сореаа"] {
        let res = app.post("/v1/auth/signup", &json!({"username": spelling, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::CONFLICT, "{spelling}");
    }

    assert_eq!(app.state.services.accounts.hashes_computed(), before);
}

on_both_stores!(sign_ups_from_one_address_past_the_limit_answer_429_on_both_routes);
async fn sign_ups_from_one_address_past_the_limit_answer_429_on_both_routes() {
    let [app] = instances(|s| {
        behind_a_proxy(s);
        s.signups_per_hour = 3;
    })
    .await;
    let flooder = "198.51.100.7";
    assert_eq!(sign_up_from(&app, "/v1/auth/signup", "one", flooder).await.status(), StatusCode::CREATED);
    assert_eq!(sign_up_from(&app, "/auth/signup", "two", flooder).await.status(), StatusCode::OK);
    // A taken name counts too (it is how names are probed).
    assert_eq!(sign_up_from(&app, "/v1/auth/signup", "one", flooder).await.status(), StatusCode::CONFLICT);

    let refused = sign_up_from(&app, "/v1/auth/signup", "three", flooder).await;
    let seed_refused = sign_up_from(&app, "/auth/signup", "four", flooder).await;

    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), "3600");
    assert_eq!(problem(refused).await["type"], "https://quotask.dev/problems/sign-up-throttled");
    assert_eq!(seed_refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&seed_refused, "retry-after"), "3600");
    let seed_body: Value = seed_refused.json().await.unwrap();
    assert_eq!(seed_body["payload"]["type"], "https://quotask.dev/problems/sign-up-throttled", "{seed_body}");
    let elsewhere = sign_up_from(&app, "/v1/auth/signup", "three", "198.51.100.8").await;
    assert_eq!(elsewhere.status(), StatusCode::CREATED, "another address is not held up");
    app.sign_in("two").await;
}

on_both_stores!(a_full_hashing_queue_answers_503_with_retry_after);
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let [app] = instances(|s| s.signin_failures_per_hour = 10_000).await;
    app.sign_up("ann").await;

    // Far more password checks at once than the queue holds (64 per hashing thread).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wrong = json!({"username": "ann", "password": "not the password"});
    let flood: Vec<_> = (0..150 * threads + 100)
        .map(|_| tokio::spawn(app.client.post(app.url("/v1/auth/signin")).json(&wrong).send()))
        .collect();
    let mut refused = None;
    let mut evaluated = 0;
    for request in flood {
        let res = request.await.unwrap().unwrap();
        match res.status() {
            StatusCode::UNAUTHORIZED => evaluated += 1,
            StatusCode::SERVICE_UNAVAILABLE => refused = Some(res),
            other => panic!("unexpected {other}"),
        }
    }

    let refused = refused.expect("some checks were refused");
    assert!(evaluated > 0, "the queue kept working");
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(problem(refused).await["type"], "https://quotask.dev/problems/overloaded");
    app.sign_in("ann").await;
}

on_both_stores!(a_sign_up_whose_client_hangs_up_never_starts_its_hash);
async fn a_sign_up_whose_client_hangs_up_never_starts_its_hash() {
    let [app] = instances(|s| s.signin_failures_per_hour = 10_000).await;
    app.sign_up("ann").await;
    let before = app.state.services.accounts.hashes_computed();
    // Work queued ahead of the sign-up: wrong passwords to check, 30 per hashing thread
    // (the hashes run in order, about a second of work).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let ahead = 30 * threads;
    let now = app.clock.now();
    let checks: Vec<_> = (0..ahead)
        .map(|_| {
            let state = app.state.clone();
            tokio::spawn(async move { state.services.accounts.sign_in("ann", "not the password", None, now).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let body = json!({"username": "ghost", "password": PASSWORD}).to_string();
    let mut conn = std::net::TcpStream::connect(app.base.trim_start_matches("http://")).unwrap();
    write!(
        conn,
        "POST /v1/auth/signup HTTP/1.1\r\nHost: quotask\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = app.state.services.accounts.hashes_computed() - before;
    assert!(
        done + threads < ahead,
        "the work ahead was still waiting when the client hung up ({done} of {ahead} done)"
    );
    drop(conn);
    for check in checks {
        assert!(check.await.unwrap().is_err(), "a wrong password");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(app.state.services.accounts.hashes_computed(), before + ahead, "no hash for the sign-up that hung up");
    let users: Vec<String> = app.db.stored("select username from users").await;
    assert_eq!(users, ["ann"]);
}

async fn change_password(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.patch("/v1/me", &body, token).await
}

async fn signs_in(app: &TestApp, password: &str) -> StatusCode {
    app.post("/v1/auth/signin", &json!({"username": "ann", "password": password}), None).await.status()
}

on_both_stores!(a_new_password_without_the_current_one_answers_422_naming_it);
async fn a_new_password_without_the_current_one_answers_422_naming_it() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let res = change_password(&app, &ann.access, json!({"password": "a brand new passphrase"})).await;

    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "current_password");
    assert_eq!(signs_in(&app, PASSWORD).await, StatusCode::OK, "the password is unchanged");
}

on_both_stores!(a_wrong_current_password_answers_401_and_counts_as_a_failed_sign_in);
async fn a_wrong_current_password_answers_401_and_counts_as_a_failed_sign_in() {
    let [app] = instances(|s| s.signin_failures_per_hour = 2).await;
    let ann = app.user("ann").await;
    let body = json!({"password": "a brand new passphrase", "current_password": "a wrong guess"});

    let first = change_password(&app, &ann.access, body.clone()).await;
    let second = change_password(&app, &ann.access, body.clone()).await;
    let third = change_password(&app, &ann.access, body).await;

    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(signs_in(&app, PASSWORD).await, StatusCode::TOO_MANY_REQUESTS, "the account is throttled");
    assert_eq!(app.get("/v1/me", &ann.access).await.status(), StatusCode::OK, "the session itself lives on");
}

on_both_stores!(a_password_change_ends_every_other_session_and_keeps_this_one);
async fn a_password_change_ends_every_other_session_and_keeps_this_one() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let stolen = app.sign_in("ann").await;
    // Used just before the change, so that any cache of it is warm.
    assert_eq!(app.get("/v1/me", &stolen.access).await.status(), StatusCode::OK);
    let new = "a brand new passphrase";

    let res = change_password(&app, &ann.access, json!({"password": new, "current_password": PASSWORD})).await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me", &stolen.access).await.status(), StatusCode::UNAUTHORIZED);
    let stolen_refresh = app.post("/v1/auth/refresh", &json!({"refresh_token": stolen.refresh}), None).await;
    assert_eq!(stolen_refresh.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/me", &ann.access).await.status(), StatusCode::OK, "this session lives on");
    let refreshed = app.post("/v1/auth/refresh", &json!({"refresh_token": ann.refresh}), None).await;
    assert_eq!(refreshed.status(), StatusCode::OK, "and so does its refresh token");
    assert_eq!(signs_in(&app, PASSWORD).await, StatusCode::UNAUTHORIZED);
    assert_eq!(signs_in(&app, new).await, StatusCode::OK);
}
