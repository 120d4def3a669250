//! Redis faults never take the service down: an absent Redis, one that accepts
//! connections but never answers, and the real one frozen with SIGSTOP under load.
//! The quota stays exact (it lives in the database), sign-in answers promptly with
//! per-instance counts, events stay local, jobs wait, and all recover by themselves.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quotask::clock::Clock as _;
use quotask::config::RedisSettings;
use quotask::jobs::Outcome;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};
use crate::redis_harness::{
    EventStream, Frozen, RedisProxy, absent_redis, instances, redis_alone, redis_pid, until_redis_is_up, until_relaying,
};

/// A sign-in from `ip` (the apps here trust 127.0.0.1 to forward), with its duration.
pub async fn sign_in_from(app: &TestApp, username: &str, password: &str, ip: &str) -> (StatusCode, Duration) {
    let started = Instant::now();
    let body = json!({"username": username, "password": password});
    let res = app.client.post(app.url("/v1/auth/signin")).header("x-forwarded-for", ip).json(&body).send().await;
    (res.unwrap().status(), started.elapsed())
}

pub fn trusting_localhost(settings: &mut quotask::config::Settings, redis: &RedisSettings, failures: u32) {
    settings.redis = Some(redis.clone());
    settings.signin_failures_per_hour = failures;
    settings.trusted_proxies = quotask::config::TrustedProxies::parse(&["127.0.0.1"]).unwrap();
}

/// What must hold whatever is wrong with Redis: sign-in answers promptly and throttles
/// per instance, creates keep the exact quota, events reach local streams, jobs wait.
async fn works_alone(redis: RedisSettings) {
    let [app] = instances(|s| trusting_localhost(s, &redis, 3)).await;
    let ann = app.user("ann").await;
    app.sign_up("eve").await;
    let mut stream = EventStream::open(&app, &ann.access).await;

    for i in 0..3 {
        let (status, took) = sign_in_from(&app, "eve", "wrong password", &format!("10.0.0.{i}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(took < Duration::from_secs(1), "sign-in took {took:?}");
    }
    assert_eq!(sign_in_from(&app, "eve", PASSWORD, "10.0.0.9").await.0, StatusCode::TOO_MANY_REQUESTS);
    let (app_ref, ann_ref) = (&app, &ann);
    let creates = (0..8).map(|i| async move { app_ref.create_task(ann_ref, &format!("t{i}")).await });
    let creates = futures::future::join_all(creates).await;
    let created = creates.iter().filter(|r| r.status() == StatusCode::CREATED).count();
    assert_eq!(created, 5, "the default limit, exactly");
    assert_eq!(stream.next(Duration::from_secs(2)).await.unwrap().event, "task.created");
    assert_eq!(app.state.jobs.run_once(app.clock.now()).await.unwrap(), Outcome::Waiting);
    assert!(!app.state.redis.as_ref().unwrap().is_up());
}

on_both_stores!(without_the_configured_redis_everything_works_per_instance);
async fn without_the_configured_redis_everything_works_per_instance() {
    works_alone(absent_redis()).await;
}

on_both_stores!(a_redis_that_never_answers_costs_no_call_more_than_its_timeout);
async fn a_redis_that_never_answers_costs_no_call_more_than_its_timeout() {
    // Accepts connections and never answers, like a frozen server (without freezing the
    // shared one, so this test runs beside any other).
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            connections.push(conn);
        }
    });
    works_alone(RedisSettings { url, prefix: "silent:".into() }).await;
    held.abort();
}

with_redis_on_both_stores!(a_frozen_redis_under_load_delays_nothing_and_sharing_resumes_after_it_thaws);
async fn a_frozen_redis_under_load_delays_nothing_and_sharing_resumes_after_it_thaws() {
    let redis = redis_alone().await;
    let [a, b] = instances(|s| trusting_localhost(s, &redis.settings, 4)).await;
    let apps = [&a, &b];
    until_relaying(&apps).await;
    let admin = a.admin("root").await;
    let carol_id = a.sign_up("carol").await["id"].as_str().unwrap().to_owned();
    assert_eq!(a.set_limit(&admin, &carol_id, 10).await.status(), StatusCode::OK);
    let carol = a.sign_in("carol").await;
    let task: serde_json::Value = a.create_task(&carol, "watched").await.json().await.unwrap();
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    for name in ["dave", "erin", "frank"] {
        a.sign_up(name).await;
    }
    let sign_ins =
        |tag: &'static str| {
            futures::future::join_all((0..6).map(move |i| async move {
                sign_in_from(apps[i % 2], "dave", PASSWORD, &format!("10.{tag}.0.{i}")).await
            }))
        };
    // The same load with Redis answering: what sign-in usually takes under it.
    let base = a.user("base").await;
    let base_ref = &base;
    let creates = (0..40).map(|i| async move { apps[i % 2].create_task(base_ref, &format!("b{i}")).await });
    let (_, before) = futures::future::join(futures::future::join_all(creates), sign_ins("1")).await;
    let usual = before.iter().map(|(_, took)| *took).max().unwrap();
    let pid = redis_pid().await;

    let frozen = Frozen::freeze(pid, Duration::from_secs(15));
    // Load: creates over the limit through both instances, and sign-ins, at once.
    let carol_ref = &carol;
    let creates = (0..40).map(|i| async move { apps[i % 2].create_task(carol_ref, &format!("t{i}")).await });
    let creates = futures::future::join_all(creates);
    let (creates, during) = futures::future::join(creates, sign_ins("2")).await;
    let created = creates.iter().filter(|r| r.status() == StatusCode::CREATED).count();
    let refused = creates.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((created, refused), (9, 31), "the exact quota: 10 with the one made before");
    let slowest = during.iter().map(|(_, took)| *took).max().unwrap();
    assert!(during.iter().all(|(s, _)| *s == StatusCode::OK), "{during:?}");
    // At most one Redis timeout (100 ms) more than usual, with room for a busy machine.
    assert!(slowest < usual + Duration::from_millis(500), "sign-in took {slowest:?}, usually {usual:?}");
    // Throttling falls back per instance: each counts erin's failures alone.
    for app in apps {
        for i in 0..4 {
            let (status, took) = sign_in_from(app, "erin", "wrong password", &format!("10.3.0.{i}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", app.base);
            assert!(took < Duration::from_secs(1));
        }
        assert_eq!(sign_in_from(app, "erin", "wrong password", "10.3.1.1").await.0, StatusCode::TOO_MANY_REQUESTS);
    }
    // Events stay local; jobs wait.
    let mut stream = EventStream::open(&a, &carol.access).await;
    a.patch(&path, &json!({"content": "changed on a"}), &carol.access).await;
    assert_eq!(stream.next(Duration::from_secs(1)).await.unwrap().data["content"], "changed on a");
    b.patch(&path, &json!({"content": "changed on b while frozen"}), &carol.access).await;
    assert!(stream.next(Duration::from_millis(300)).await.is_none(), "b's event could not cross");
    assert_eq!(a.state.jobs.run_once(a.clock.now()).await.unwrap(), Outcome::Waiting);
    drop(frozen);

    until_redis_is_up(&apps, Duration::from_secs(5)).await;
    for i in 0..4 {
        assert_eq!(
            sign_in_from(apps[i % 2], "frank", "wrong", &format!("10.4.0.{i}")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    for app in apps {
        let shared = sign_in_from(app, "frank", "wrong", "10.4.1.1").await.0;
        assert_eq!(shared, StatusCode::TOO_MANY_REQUESTS, "limited as one again ({})", app.base);
    }
    b.patch(&path, &json!({"content": "after the thaw"}), &carol.access).await;
    let mut crossed = false;
    while let Some(event) = stream.next(Duration::from_secs(3)).await {
        // A publish that timed out during the freeze may be delivered late; skip it.
        if event.data["content"] == "after the thaw" {
            crossed = true;
            break;
        }
    }
    assert!(crossed, "events cross instances again");
    assert!(matches!(a.state.jobs.run_once(a.clock.now()).await.unwrap(), Outcome::Ran(_)));
    assert_eq!(a.all_tasks(&carol).await.len(), 10);
}

with_redis_on_both_stores!(when_redis_goes_away_and_comes_back_every_instance_reconnects_by_itself);
async fn when_redis_goes_away_and_comes_back_every_instance_reconnects_by_itself() {
    let redis = crate::redis_harness::redis().await;
    let proxy = RedisProxy::start().await;
    let through_proxy = RedisSettings { url: proxy.url.clone(), ..redis.settings.clone() };
    let [a, b] = instances(|s| trusting_localhost(s, &through_proxy, 2)).await;
    let apps = [&a, &b];
    until_relaying(&apps).await;
    let ann = a.user("ann").await;
    a.sign_up("eve").await;
    a.sign_up("mallory").await;

    proxy.cut();
    // Each instance throttles alone: eve gets two failures on each.
    for app in apps {
        for i in 0..2 {
            let (status, took) = sign_in_from(app, "eve", "wrong", &format!("10.5.0.{i}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(took < Duration::from_secs(1), "sign-in took {took:?}");
        }
    }
    assert_eq!(a.create_task(&ann, "while Redis is away").await.status(), StatusCode::CREATED);
    proxy.restore();

    until_redis_is_up(&apps, Duration::from_secs(5)).await;
    until_relaying(&apps).await;
    assert_eq!(sign_in_from(&a, "mallory", "wrong", "10.6.0.1").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_from(&b, "mallory", "wrong", "10.6.0.2").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_from(&a, "mallory", "wrong", "10.6.0.3").await.0, StatusCode::TOO_MANY_REQUESTS);
    let mut stream = EventStream::open(&a, &ann.access).await;
    b.create_task(&ann, "after").await;
    assert_eq!(stream.next(Duration::from_secs(3)).await.unwrap().data["content"], "after");
}
