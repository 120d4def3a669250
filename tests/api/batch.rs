//! `POST /v1/tasks/batch`: all or nothing against what remains today (docs/quota.md
//! item 9), with safe retries for the batch as a whole.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Client, TestApp, header, problem};

fn batch(contents: &[String]) -> Value {
    json!({ "tasks": contents.iter().map(|c| json!({ "content": c })).collect::<Vec<_>>() })
}

fn named(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

async fn post_batch(app: &TestApp, who: &Client, contents: &[String], key: Option<&str>) -> Response {
    let mut req = app.client.post(app.url("/v1/tasks/batch")).bearer_auth(&who.access).json(&batch(contents));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.unwrap()
}

/// A user with `limit` tasks a day, signed in.
async fn user_with_limit(app: &TestApp, name: &str, limit: i64) -> Client {
    let admin = app.admin(&format!("{name}_admin")).await;
    let user = app.sign_up(name).await;
    assert_eq!(app.set_limit(&admin, user["id"].as_str().unwrap(), limit).await.status(), StatusCode::OK);
    app.sign_in(name).await
}

on_both_stores!(a_batch_creates_every_task_in_order_and_uses_as_many_units);
async fn a_batch_creates_every_task_in_order_and_uses_as_many_units() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 10).await;

    let res = post_batch(&app, &ann, &named("task", 4), None).await;

    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(header(&res, "ratelimit").starts_with("\"daily\";r=6;"), "{}", header(&res, "ratelimit"));
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    let contents: Vec<&str> = items.iter().map(|t| t["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["task 0", "task 1", "task 2", "task 3"]);
    let ids: Vec<&str> = items.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in the order asked: {ids:?}");
    assert_eq!(app.quota(&ann).await["used"], 4);
    assert_eq!(app.all_tasks(&ann).await.len(), 4);
}

on_both_stores!(a_batch_over_what_remains_creates_nothing_and_says_what_was_asked_and_what_is_left);
async fn a_batch_over_what_remains_creates_nothing_and_says_what_was_asked_and_what_is_left() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 5).await;
    assert_eq!(app.create_task(&ann, "first").await.status(), StatusCode::CREATED);

    let res = post_batch(&app, &ann, &named("task", 5), None).await;

    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!header(&res, "retry-after").is_empty());
    let problem = problem(res).await;
    assert!(problem["type"].as_str().unwrap().ends_with("/quota-exceeded"), "{problem}");
    assert_eq!((problem["requested"].as_u64(), problem["remaining"].as_u64()), (Some(5), Some(4)), "{problem}");
    assert_eq!(app.quota(&ann).await["used"], 1, "no unit used");
    assert_eq!(app.all_tasks(&ann).await.len(), 1, "no task created");
    // What remains still fits.
    assert_eq!(post_batch(&app, &ann, &named("task", 4), None).await.status(), StatusCode::CREATED);
    assert_eq!(app.quota(&ann).await["remaining"], 0);
}

on_both_stores!(a_batch_must_hold_one_to_a_hundred_valid_tasks);
async fn a_batch_must_hold_one_to_a_hundred_valid_tasks() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 1000).await;

    for (contents, why) in [
        (vec![], "empty"),
        (named("task", 101), "101 tasks"),
        (vec!["fine".to_owned(), " ".to_owned()], "a blank content"),
        (vec!["x".repeat(10_001)], "an overlong content"),
    ] {
        let res = post_batch(&app, &ann, &contents, None).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
        let problem = problem(res).await;
        assert_eq!(problem["errors"][0]["field"], "tasks", "{why}: {problem}");
    }
    assert_eq!(post_batch(&app, &ann, &named("task", 100), None).await.status(), StatusCode::CREATED);
    assert_eq!(app.quota(&ann).await["used"], 100, "nothing of the refused batches was created");
}

on_both_stores!(a_repeated_batch_gets_the_same_tasks_and_uses_no_more_quota);
async fn a_repeated_batch_gets_the_same_tasks_and_uses_no_more_quota() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 10).await;
    let contents = named("task", 3);

    let first = post_batch(&app, &ann, &contents, Some("batch-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(header(&first, "idempotent-replayed"), "false");
    let first: Value = first.json().await.unwrap();
    let again = post_batch(&app, &ann, &contents, Some("batch-1")).await;

    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["items"], first["items"], "the same ids and contents");
    assert_eq!(app.quota(&ann).await["used"], 3);
    // The same key with another batch, or for a single create, is refused.
    let other = post_batch(&app, &ann, &named("other", 3), Some("batch-1")).await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let single = app
        .client
        .post(app.url("/v1/tasks"))
        .bearer_auth(&ann.access)
        .header("idempotency-key", "batch-1")
        .json(&json!({"content": "task 0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.quota(&ann).await["used"], 3);
}

on_both_stores!(concurrent_batches_and_single_creates_never_pass_the_limit);
async fn concurrent_batches_and_single_creates_never_pass_the_limit() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 50).await;

    // 40 batches of 1 to 7 tasks and 100 single creates, all at once: 260 units asked
    // for a limit of 50.
    let batches: Vec<Vec<String>> = (0..40).map(|i| named(&format!("batch {i}"), 1 + i % 7)).collect();
    let batch_requests = batches.iter().map(|b| post_batch(&app, &ann, b, None));
    let singles: Vec<String> = named("single", 100);
    let single_requests = singles.iter().map(|c| app.create_task(&ann, c));
    let (batch_answers, single_answers) =
        futures::future::join(futures::future::join_all(batch_requests), futures::future::join_all(single_requests))
            .await;

    let mut created = 0;
    for (answer, asked) in batch_answers.iter().zip(&batches) {
        match answer.status() {
            StatusCode::CREATED => created += asked.len(),
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a batch answered {other}"),
        }
    }
    for answer in &single_answers {
        match answer.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a create answered {other}"),
        }
    }
    // A single create is refused only once nothing remains, and 100 singles cannot all
    // fit: so the day is used up exactly.
    assert_eq!(created, 50, "created for a limit of 50");
    assert_eq!(app.all_tasks(&ann).await.len(), created, "every task answered 201 is stored, no other");
    assert_eq!(app.quota(&ann).await["used"].as_u64(), Some(created as u64));
}

on_both_stores!(five_concurrent_repeats_of_a_keyed_batch_create_it_once);
async fn five_concurrent_repeats_of_a_keyed_batch_create_it_once() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 10).await;
    let contents = named("task", 3);

    let answers = futures::future::join_all((0..5).map(|_| post_batch(&app, &ann, &contents, Some("k")))).await;

    let statuses: Vec<StatusCode> = answers.iter().map(Response::status).collect();
    assert!(statuses.iter().all(|s| [StatusCode::CREATED, StatusCode::CONFLICT].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::CREATED), "{statuses:?}");
    assert_eq!(app.quota(&ann).await["used"], 3, "one batch's units");
    assert_eq!(app.all_tasks(&ann).await.len(), 3);
}

on_both_stores!(a_batch_of_a_hundred_tasks_of_the_longest_content_is_accepted);
async fn a_batch_of_a_hundred_tasks_of_the_longest_content_is_accepted() {
    let app = TestApp::spawn().await;
    let ann = user_with_limit(&app, "ann", 100).await;
    // 100 x 10,000 characters: about 2 MB of JSON, far past a single create's 128 KiB.
    let contents: Vec<String> = (0..100).map(|i| format!("{i:05}{}", "é".repeat(9_995))).collect();

    let res = post_batch(&app, &ann, &contents, None).await;

    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(app.quota(&ann).await["used"], 100);
}
