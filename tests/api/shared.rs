//! Two instances sharing one database and one Redis: sign-in failures are limited as
//! one, events cross instances, and each period's job runs on one instance only.

use std::time::Duration;

use futures::future::join;
use quotask::clock::Clock as _;
use quotask::jobs::Outcome;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};
use crate::redis_harness::{EventStream, instances, redis, until_relaying};
use quotask::config::Backend;

async fn wrong_sign_in(app: &TestApp, username: &str, forged_ip: &str) -> StatusCode {
    let body = json!({"username": username, "password": "not the password"});
    let req = app.client.post(app.url("/v1/auth/signin")).header("x-forwarded-for", forged_ip).json(&body);
    req.send().await.unwrap().status()
}

with_redis_on_both_stores!(failed_sign_ins_spread_over_two_instances_are_limited_as_one);
async fn failed_sign_ins_spread_over_two_instances_are_limited_as_one() {
    let redis = redis().await;
    let [a, b] = instances(|s| {
        s.redis = Some(redis.settings.clone());
        s.signin_failures_per_hour = 4;
        // Each attempt from an address of its own: only the account's count can stop them.
        s.trusted_proxies = quotask::config::TrustedProxies::parse(&["127.0.0.1"]).unwrap();
    })
    .await;
    a.sign_up("victim").await;

    let mut statuses = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        statuses.push(wrong_sign_in(app, "victim", &format!("10.9.0.{i}")).await);
    }

    let evaluated = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    assert_eq!(evaluated, 4, "four evaluated across both instances, not four each: {statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let right = json!({"username": "victim", "password": PASSWORD});
    for app in [&a, &b] {
        let res = app.post("/v1/auth/signin", &right, None).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{}", app.base);
        assert!(crate::helpers::header(&res, "retry-after").parse::<u64>().unwrap() > 3000);
    }
}

with_redis_on_both_stores!(a_successful_sign_in_gives_its_count_back_on_every_instance);
async fn a_successful_sign_in_gives_its_count_back_on_every_instance() {
    let redis = redis().await;
    let [a, b] = instances(|s| {
        s.redis = Some(redis.settings.clone());
        s.signin_failures_per_hour = 2;
    })
    .await;
    a.sign_up("ann").await;

    // Right passwords, many times, through both: never counted as failures.
    for _ in 0..3 {
        a.sign_in("ann").await;
        b.sign_in("ann").await;
    }
    assert_eq!(wrong_sign_in(&a, "ann", "1.1.1.1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_sign_in(&b, "ann", "1.1.1.1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_sign_in(&a, "ann", "1.1.1.1").await, StatusCode::TOO_MANY_REQUESTS);
}

with_redis_on_both_stores!(sign_ups_from_one_address_spread_over_two_instances_are_limited_as_one);
async fn sign_ups_from_one_address_spread_over_two_instances_are_limited_as_one() {
    let redis = redis().await;
    let [a, b] = instances(|s| {
        s.redis = Some(redis.settings.clone());
        s.signups_per_hour = 2;
        s.trusted_proxies = quotask::config::TrustedProxies::parse(&["127.0.0.1"]).unwrap();
    })
    .await;
    let sign_up = |app: &TestApp, name: &str| {
        let body = json!({"username": name, "password": PASSWORD});
        app.client.post(app.url("/v1/auth/signup")).header("x-forwarded-for", "203.0.113.9").json(&body).send()
    };

    let statuses = [
        sign_up(&a, "one").await.unwrap().status(),
        sign_up(&b, "two").await.unwrap().status(),
        sign_up(&a, "three").await.unwrap().status(),
        sign_up(&b, "four").await.unwrap().status(),
    ];

    use StatusCode as S;
    assert_eq!(statuses, [S::CREATED, S::CREATED, S::TOO_MANY_REQUESTS, S::TOO_MANY_REQUESTS]);
}

with_redis_on_both_stores!(an_event_stream_on_one_instance_receives_changes_made_through_another);
async fn an_event_stream_on_one_instance_receives_changes_made_through_another() {
    let redis = redis().await;
    let [a, b] = instances(|s| s.redis = Some(redis.settings.clone())).await;
    until_relaying(&[&a, &b]).await;
    let admin = b.admin("root").await;
    let ann_user = a.sign_up("ann").await;
    let ann = a.sign_in("ann").await;
    let bob = b.user("bob").await;
    let mut stream = EventStream::open(&a, &ann.access).await;

    b.create_task(&bob, "not ann's").await;
    let created: serde_json::Value = b.create_task(&ann, "made on b").await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    b.patch(&format!("/v1/tasks/{id}"), &json!({"done": true}), &ann.access).await;
    b.delete(&format!("/v1/tasks/{id}"), &ann.access).await;
    b.set_limit(&admin, ann_user["id"].as_str().unwrap(), 7).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(stream.next(Duration::from_secs(3)).await.expect("an event from instance b"));
    }
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["task.created", "task.updated", "task.deleted", "quota.changed"]);
    assert_eq!(seen[0].data, created, "the event carries the task as the API shows it");
    assert_eq!(seen[1].data["done"], true);
    assert_eq!(seen[2].data, json!({"id": id}));
    assert_eq!(seen[3].data, json!({"daily_limit": 7}));
    let ids: std::collections::HashSet<_> = seen.iter().map(|e| e.id.clone().expect("an id")).collect();
    assert_eq!(ids.len(), 4, "every event has its own id");
    assert!(stream.next(Duration::from_millis(300)).await.is_none(), "bob's task is not ann's event");
}

with_redis_on_both_stores!(a_job_run_on_two_instances_at_once_prunes_once);
async fn a_job_run_on_two_instances_at_once_prunes_once() {
    let redis = redis().await;
    let [a, b] = instances(|s| s.redis = Some(redis.settings.clone())).await;
    let stale = crate::jobs::make_stale_rows(&a).await;
    let now = a.clock.now();

    let (one, two) = join(a.state.jobs.run_once(now), b.state.jobs.run_once(now)).await;

    let outcomes = [one.unwrap(), two.unwrap()];
    let ran: Vec<_> = outcomes.iter().filter_map(|o| if let Outcome::Ran(p) = o { Some(*p) } else { None }).collect();
    assert_eq!(ran, [stale], "{outcomes:?}");
    assert!(outcomes.contains(&Outcome::Claimed), "{outcomes:?}");
    assert_eq!(b.state.jobs.run_once(now).await.unwrap(), Outcome::Claimed, "once per period");
    crate::jobs::assert_only_fresh_rows_left(&a).await;
}

with_redis_on_both_stores!(a_limit_set_with_the_command_line_reaches_open_event_streams);
async fn a_limit_set_with_the_command_line_reaches_open_event_streams() {
    let redis = redis().await;
    let [app] = instances(|s| s.redis = Some(redis.settings.clone())).await;
    until_relaying(&[&app]).await;
    let ann = app.user("ann").await;
    let mut stream = EventStream::open(&app, &ann.access).await;

    // The real command, a process of its own on the same database and Redis.
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_quotask"));
    match app.db.settings().backend {
        Backend::Sqlite(path) => cli.env("QUOTASK_DATA_DIR", path.parent().unwrap()),
        Backend::Postgres(url) => cli.env("QUOTASK_DATABASE_URL", url),
    };
    let out = cli
        .env("QUOTASK_REDIS_URL", &redis.settings.url)
        .env("QUOTASK_REDIS_PREFIX", &redis.settings.prefix)
        .env("RUST_LOG", "warn")
        .args(["user", "set-limit", "ann", "7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    let event = stream.next(Duration::from_secs(3)).await.expect("the limit change, through Redis");
    assert_eq!((event.event.as_str(), &event.data), ("quota.changed", &json!({"daily_limit": 7})));
    assert_eq!(app.get("/v1/me/quota", &ann.access).await.json::<serde_json::Value>().await.unwrap()["limit"], 7);
}
