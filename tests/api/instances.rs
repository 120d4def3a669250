//! Several instances on one PostgreSQL database, and a database that stops answering:
//! what only a server can show.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection as _, Executor as _};

use crate::helpers::{TestApp, header, problem};

on_postgres_only!(three_instances_share_one_exact_quota_their_tokens_and_sign_outs);
async fn three_instances_share_one_exact_quota_their_tokens_and_sign_outs() {
    let [one, two, three] = TestApp::spawn_instances().await;
    let instances = [&one, &two, &three];
    let admin = two.admin("root").await;
    let user = one.sign_up("carol").await;
    assert_eq!(three.set_limit(&admin, user["id"].as_str().unwrap(), 10).await.status(), StatusCode::OK);
    let carol = two.sign_in("carol").await;

    let contents: Vec<String> = (0..300).map(|i| format!("task {i}")).collect();
    let requests = contents.iter().enumerate().map(|(i, c)| instances[i % 3].create_task(&carol, c));
    let statuses: Vec<StatusCode> = futures::future::join_all(requests).await.iter().map(|r| r.status()).collect();

    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((created, refused), (10, 290), "{statuses:?}");
    let rows: Vec<i64> = one.db.stored("select count(*) from tasks").await;
    assert_eq!(rows, [10]);
    for app in instances {
        assert_eq!(app.quota(&carol).await["used"], 10);
        assert_eq!(app.all_tasks(&carol).await.len(), 10);
    }

    // A token from one instance works on all; a refresh on one spends it for all.
    for app in instances {
        assert_eq!(app.get("/v1/me", &carol.access).await.status(), StatusCode::OK, "{}", app.base);
    }
    let rotated = one.post("/v1/auth/refresh", &json!({"refresh_token": carol.refresh}), None).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: serde_json::Value = rotated.json().await.unwrap();
    let reuse = two.post("/v1/auth/refresh", &json!({"refresh_token": carol.refresh}), None).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED, "a spent token is spent on every instance");

    // Signing out on one instance ends the session on all of them.
    let carol = one.sign_in("carol").await;
    assert_eq!(
        three.post("/v1/auth/signout", &json!(null), Some(&carol.access)).await.status(),
        StatusCode::NO_CONTENT
    );
    for app in instances {
        assert_eq!(app.get("/v1/me", &carol.access).await.status(), StatusCode::UNAUTHORIZED, "{}", app.base);
        let refresh = app.post("/v1/auth/refresh", &json!({"refresh_token": carol.refresh}), None).await;
        assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED, "{}", app.base);
    }
    let family = two.post("/v1/auth/refresh", &json!({"refresh_token": rotated["refresh_token"]}), None).await;
    assert_eq!(family.status(), StatusCode::UNAUTHORIZED, "the reuse on instance two revoked the whole family");
}

on_postgres_only!(a_create_stuck_behind_a_lock_answers_503_with_retry_after_instead_of_hanging);
async fn a_create_stuck_behind_a_lock_answers_503_with_retry_after_instead_of_hanging() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let mut blocker = app.db.postgres().await;
    blocker.execute("begin").await.unwrap();
    blocker.execute("lock table usage in access exclusive mode").await.unwrap();

    let started = Instant::now();
    let res = app.create_task(&ann, "stuck").await;
    let waited = started.elapsed();

    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    assert!(header(&res, "retry-after").parse::<u64>().unwrap() > 0);
    let body = problem(res).await;
    assert!(!body.to_string().contains("lock"), "no internal detail: {body}");
    blocker.execute("rollback").await.unwrap();
    blocker.close().await.unwrap();
    assert_eq!(app.quota(&ann).await["used"], 0, "the refused create used nothing");
    assert_eq!(app.create_task(&ann, "free again").await.status(), StatusCode::CREATED);
}
