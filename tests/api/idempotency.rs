//! Safe retries with `Idempotency-Key` (docs/quota.md item 6).

use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Client, TestApp, header, problem};

async fn create_with_key(app: &TestApp, who: &Client, key: &str, content: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/tasks"))
        .bearer_auth(&who.access)
        .header("idempotency-key", key)
        .json(&json!({"content": content}))
        .send()
        .await
        .unwrap()
}

on_both_stores!(a_repeat_gets_the_first_answer_and_uses_no_quota);
async fn a_repeat_gets_the_first_answer_and_uses_no_quota() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let first = create_with_key(&app, &ann, "key-1", "pay rent").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(header(&first, "idempotent-replayed"), "false");
    let location = header(&first, "location");
    let first: Value = first.json().await.unwrap();
    // The task changes after the first answer; a replay still says what was answered.
    app.patch(&location, &json!({"done": true}), &ann.access).await;

    let again = create_with_key(&app, &ann, "key-1", "pay rent").await;

    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(header(&again, "location"), location);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.quota(&ann).await["used"], 1);
    assert_eq!(app.all_tasks(&ann).await.len(), 1);
}

on_both_stores!(the_same_key_with_another_body_is_refused_with_422);
async fn the_same_key_with_another_body_is_refused_with_422() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    create_with_key(&app, &ann, "key-1", "pay rent").await;

    let other = create_with_key(&app, &ann, "key-1", "pay the gas bill").await;

    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(other).await["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(app.quota(&ann).await["used"], 1);
}

on_both_stores!(five_concurrent_repeats_create_one_task_and_use_one_unit);
async fn five_concurrent_repeats_create_one_task_and_use_one_unit() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let answers = futures::future::join_all((0..5).map(|_| create_with_key(&app, &ann, "same", "once"))).await;

    let mut ids = Vec::new();
    for answer in answers {
        match answer.status() {
            StatusCode::CREATED => ids.push(answer.json::<Value>().await.unwrap()["id"].clone()),
            StatusCode::CONFLICT => assert_eq!(problem(answer).await["status"], 409),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!ids.is_empty(), "the first request is created");
    assert!(ids.iter().all(|id| *id == ids[0]), "every 201 names the same task");
    assert_eq!(app.all_tasks(&ann).await.len(), 1);
    assert_eq!(app.quota(&ann).await["used"], 1);
}

on_both_stores!(a_key_is_forgotten_after_twenty_four_hours);
async fn a_key_is_forgotten_after_twenty_four_hours() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let first: Value = create_with_key(&app, &ann, "daily", "water plants").await.json().await.unwrap();

    app.clock.advance(SignedDuration::from_hours(24) + SignedDuration::from_secs(1));
    let ann = app.sign_in("ann").await;
    let next = create_with_key(&app, &ann, "daily", "water plants").await;

    assert_eq!(next.status(), StatusCode::CREATED);
    assert_eq!(header(&next, "idempotent-replayed"), "false");
    assert_ne!(next.json::<Value>().await.unwrap()["id"], first["id"]);
}

on_both_stores!(keys_belong_to_their_user);
async fn keys_belong_to_their_user() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let anns: Value = create_with_key(&app, &ann, "shared", "mine").await.json().await.unwrap();

    let bobs = create_with_key(&app, &bob, "shared", "mine").await;

    assert_eq!(bobs.status(), StatusCode::CREATED);
    assert_ne!(bobs.json::<Value>().await.unwrap()["id"], anns["id"]);
}

on_both_stores!(a_refused_create_is_not_remembered);
async fn a_refused_create_is_not_remembered() {
    let app = TestApp::spawn_at(crate::helpers::ts("2026-06-15T23:59:00Z")).await;
    let ann = app.user("ann").await;
    for _ in 0..5 {
        app.create_task(&ann, "x").await;
    }
    assert_eq!(create_with_key(&app, &ann, "late", "one more").await.status(), StatusCode::TOO_MANY_REQUESTS);

    app.clock.set(crate::helpers::ts("2026-06-16T00:00:00Z"));
    let ann = app.sign_in("ann").await;
    let retry = create_with_key(&app, &ann, "late", "one more").await;

    assert_eq!(retry.status(), StatusCode::CREATED, "a refused request is evaluated afresh");
}

on_both_stores!(a_malformed_key_is_refused_and_creates_nothing);
async fn a_malformed_key_is_refused_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    for key in [" spaced key", &"k".repeat(256)] {
        let res = create_with_key(&app, &ann, key, "x").await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{key}");
    }
    assert_eq!(app.quota(&ann).await["used"], 0);
}
