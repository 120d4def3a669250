//! The periodic pruning job: what it deletes, what it keeps, and that each period runs
//! once among instances (here without Redis: the claim is kept in the database).

use futures::future::join;
use jiff::SignedDuration;
use quotask::clock::Clock as _;
use quotask::domain::prune::Pruned;
use quotask::jobs::Outcome;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Client, TestApp};
use crate::redis_harness::instances;

async fn create_with_key(app: &TestApp, who: &Client, key: &str) {
    let req = app.client.post(app.url("/v1/tasks")).bearer_auth(&who.access).header("idempotency-key", key);
    let res = req.json(&json!({"content": key})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// Makes rows the job must delete and rows it must keep, moving the clock back and
/// returning it to where it was; says how many of each table should go.
pub async fn make_stale_rows(app: &TestApp) -> Pruned {
    let t0 = app.clock.now();
    let days = |n: i64| t0.checked_sub(SignedDuration::from_hours(24 * n)).unwrap();

    app.clock.set(days(100));
    let old = app.user("ann").await; // refresh token 1: expired by t0
    create_with_key(app, &old, "old-key").await; // a usage row of a day past retention

    app.clock.set(days(2));
    let recent = app.sign_in("ann").await; // refresh token 2, spent below: kept, its reuse must still be caught
    let rotated = app.post("/v1/auth/refresh", &json!({"refresh_token": recent.refresh}), None).await;
    assert_eq!(rotated.status(), StatusCode::OK); // refresh token 3: live
    create_with_key(app, &recent, "recent-key").await; // usage row kept, key past its 24 hours

    app.clock.set(t0);
    let current = app.sign_in("ann").await; // refresh token 4: live
    let gone = app.sign_in("ann").await; // refresh token 5: its session is revoked
    assert_eq!(app.post("/v1/auth/signout", &json!(null), Some(&gone.access)).await.status(), StatusCode::NO_CONTENT);
    create_with_key(app, &current, "fresh-key").await;

    // Sessions: the old one (its only token expired) and the signed-out one go.
    Pruned { usage: 1, refresh_tokens: 2, sessions: 2, idempotency_keys: 2, webhook_attempts: 0, webhook_events: 0 }
}

/// After a prune of `make_stale_rows`' rows: only what is still needed is left.
pub async fn assert_only_fresh_rows_left(app: &TestApp) {
    let count = |table: &str| format!("select count(*) from {table}");
    assert_eq!(app.db.stored::<i64>(&count("usage")).await, [2]);
    assert_eq!(app.db.stored::<i64>(&count("refresh_tokens")).await, [3]);
    assert_eq!(app.db.stored::<i64>(&count("sessions")).await, [2]);
    assert_eq!(app.db.stored::<i64>(&count("idempotency_keys")).await, [1]);
    assert_eq!(app.db.stored::<i64>(&count("tasks")).await, [3], "tasks are never pruned");
}

on_both_stores!(pruning_deletes_old_usage_dead_refresh_tokens_and_expired_idempotency_keys);
async fn pruning_deletes_old_usage_dead_refresh_tokens_and_expired_idempotency_keys() {
    let app = TestApp::spawn().await;
    let expected = make_stale_rows(&app).await;

    let outcome = app.state.jobs.run_once(app.clock.now()).await.unwrap();

    assert_eq!(outcome, Outcome::Ran(expected));
    assert_only_fresh_rows_left(&app).await;
    let ann = app.sign_in("ann").await;
    assert_eq!(app.quota(&ann).await["used"], 1, "today's counter is kept");
}

on_both_stores!(a_spent_refresh_token_is_kept_until_it_expires_so_its_reuse_still_revokes_the_family);
async fn a_spent_refresh_token_is_kept_until_it_expires_so_its_reuse_still_revokes_the_family() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let rotated = app.post("/v1/auth/refresh", &json!({"refresh_token": ann.refresh}), None).await;
    let rotated: serde_json::Value = rotated.json().await.unwrap();

    app.state.jobs.run_once(app.clock.now()).await.unwrap();

    let reuse = app.post("/v1/auth/refresh", &json!({"refresh_token": ann.refresh}), None).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    let successor = app.post("/v1/auth/refresh", &json!({"refresh_token": rotated["refresh_token"]}), None).await;
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED, "the reuse revoked the family");
}

on_both_stores!(each_period_runs_once_among_instances_and_the_next_period_runs_again);
async fn each_period_runs_once_among_instances_and_the_next_period_runs_again() {
    let [a, b] = instances(|_| {}).await;
    let expected = make_stale_rows(&a).await;
    let now = a.clock.now();

    let (one, two) = join(a.state.jobs.run_once(now), b.state.jobs.run_once(now)).await;

    let mut outcomes = [one.unwrap(), two.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Outcome::Claimed));
    assert_eq!(outcomes, [Outcome::Ran(expected), Outcome::Claimed]);
    assert_eq!(a.state.jobs.run_once(now).await.unwrap(), Outcome::Claimed);
    assert_only_fresh_rows_left(&a).await;
    a.clock.advance(SignedDuration::from_hours(1));
    let next = b.state.jobs.run_once(a.clock.now()).await.unwrap();
    assert_eq!(next, Outcome::Ran(Pruned::default()), "a new period, nothing left to prune");
}
