//! Webhooks: events reach a receiver started here, signed (Standard Webhooks), at
//! least once, after the receiver comes back, retried on errors until the webhook is
//! disabled; destinations inside the network are refused. Deliveries are driven by
//! `Deliveries::run_once` with the test's clock, never by waiting a day.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use jiff::SignedDuration;
use quotask::clock::Clock as _;
use quotask::service::Deliveries;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::helpers::{Client, TestApp, problem};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// Whether the signature is the HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with
    /// the secret's decoded bytes, checked here independently of quotask's code.
    fn signed_with(&self, secret: &str) -> bool {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        self.signature == format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// An HTTP receiver on 127.0.0.1 that records every request and answers `status`.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    /// Each answer waits for a permit, after the request is recorded: a receiver
    /// started `held` answers nothing until the test adds permits.
    gate: Arc<Semaphore>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    async fn start_on(addr: SocketAddr) -> Receiver {
        Self::start_with(addr, Semaphore::MAX_PERMITS).await
    }

    /// A receiver that records requests at once but answers none until released.
    async fn held() -> Receiver {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), 0).await
    }

    async fn start_with(addr: SocketAddr, permits: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let gate = Arc::new(Semaphore::new(permits));
        let (log, answer, wait) = (received.clone(), status.clone(), gate.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (log, answer, wait) = (log.clone(), answer.clone(), wait.clone());
                async move {
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    // A little slow, so that concurrent deliveries overlap.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    log.lock().unwrap().push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body,
                    });
                    let _permit = wait.acquire().await.unwrap();
                    AxumStatus::from_u16(answer.load(Ordering::Relaxed)).unwrap()
                }
            }),
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, received, status, gate, server }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An address nothing listens on (yet).
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn spawn_allowing_private() -> TestApp {
    TestApp::spawn_with(|s| s.webhook_allow_private = true).await
}

async fn add_webhook(app: &TestApp, who: &Client, url: &str, events: &[&str]) -> Value {
    let res = app.post("/v1/me/webhooks", &json!({"url": url, "events": events}), Some(&who.access)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    res.json().await.unwrap()
}

async fn deliveries(app: &TestApp, who: &Client, hook: &Value) -> Vec<Value> {
    let res = app.get(&format!("/v1/me/webhooks/{}/deliveries", hook["id"].as_str().unwrap()), &who.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

/// Runs deliveries at the test clock's now until nothing is due.
async fn deliver_all(app: &TestApp) -> usize {
    let mut attempted = 0;
    loop {
        let n = app.state.deliveries.run_once(app.clock.now()).await.unwrap();
        if n == 0 {
            return attempted;
        }
        attempted += n;
    }
}

on_both_stores!(every_change_reaches_the_receiver_signed_with_its_type_and_data);
async fn every_change_reaches_the_receiver_signed_with_its_type_and_data() {
    let app = spawn_allowing_private().await;
    let receiver = Receiver::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let all = ["task.created", "task.updated", "task.deleted", "quota.exhausted"];
    let hook = add_webhook(&app, &ann, &receiver.url(), &all).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(hook["disabled"], false);

    // One of each change; the batch uses the last of the day's 5 units.
    let task: Value = app.create_task(&ann, "first").await.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    let path = format!("/v1/tasks/{id}");
    assert_eq!(app.patch(&path, &json!({"done": true}), &ann.access).await.status(), StatusCode::OK);
    assert_eq!(app.delete(&path, &ann.access).await.status(), StatusCode::NO_CONTENT);
    let batch = json!({"tasks": [{"content": "a"}, {"content": "b"}, {"content": "c"}, {"content": "d"}]});
    assert_eq!(app.post("/v1/tasks/batch", &batch, Some(&ann.access)).await.status(), StatusCode::CREATED);
    assert_eq!(app.create_task(&bob, "not ann's").await.status(), StatusCode::CREATED);

    assert_eq!(deliver_all(&app).await, 8);
    let received = receiver.received();
    assert_eq!(received.len(), 8, "{received:#?}");
    for r in &received {
        assert!(r.signed_with(&secret), "a valid signature: {r:?}");
        assert_eq!(r.timestamp, app.clock.now().as_second().to_string());
    }
    let by_type = |t: &str| received.iter().map(Received::json).filter(|b| b["type"] == t).collect::<Vec<_>>();
    let created = by_type("task.created");
    assert_eq!(created.len(), 5);
    assert_eq!(created.iter().filter(|b| b["data"]["content"] == "first").count(), 1);
    assert!(created.iter().all(|b| b["data"]["content"] != "not ann's"), "only the owner's events");
    let updated = by_type("task.updated");
    assert_eq!((updated.len(), &updated[0]["data"]["done"], &updated[0]["data"]["id"]), (1, &json!(true), &json!(id)));
    assert_eq!(by_type("task.deleted")[0]["data"], json!({"id": id}));
    assert_eq!(by_type("quota.exhausted")[0]["data"], json!({"day": "2026-06-15", "limit": 5, "used": 5}));
    assert_eq!(created[0]["timestamp"], "2026-06-15T12:00:00Z");
    let mut ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "each event has its own id");

    let log = deliveries(&app, &ann, &hook).await;
    assert_eq!(log.len(), 8);
    for event in &log {
        assert_eq!((event["attempts"].as_u64(), event["last_status"].as_u64()), (Some(1), Some(200)), "{event}");
        assert!(event["delivered_at"].is_string() && event["next_attempt_at"].is_null(), "{event}");
    }
    assert_eq!(deliver_all(&app).await, 0, "a delivered event is not sent again");
    let listed: Value = app.get("/v1/me/webhooks", &ann.access).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], hook["id"]);
    assert!(listed["items"][0].get("secret").is_none(), "the secret is shown once");
}

on_both_stores!(a_user_without_webhooks_writes_no_events);
async fn a_user_without_webhooks_writes_no_events() {
    let app = spawn_allowing_private().await;
    let receiver = Receiver::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    add_webhook(&app, &bob, &receiver.url(), &["task.created"]).await;
    assert_eq!(app.create_task(&ann, "quiet").await.status(), StatusCode::CREATED);
    let events: Vec<i64> = app.db.stored("select count(*) from webhook_events").await;
    assert_eq!(events, [0]);
    assert_eq!(app.create_task(&bob, "loud").await.status(), StatusCode::CREATED);
    let events: Vec<i64> = app.db.stored("select count(*) from webhook_events").await;
    assert_eq!(events, [1]);
}

on_both_stores!(a_receiver_that_is_down_gets_the_event_once_it_is_back);
async fn a_receiver_that_is_down_gets_the_event_once_it_is_back() {
    let app = spawn_allowing_private().await;
    let ann = app.user("ann").await;
    let addr = closed_port();
    let hook = add_webhook(&app, &ann, &format!("http://{addr}/hook"), &["task.created"]).await;
    assert_eq!(app.create_task(&ann, "while down").await.status(), StatusCode::CREATED);

    assert_eq!(deliver_all(&app).await, 1, "one attempt, refused");
    let log = deliveries(&app, &ann, &hook).await;
    assert_eq!((log[0]["attempts"].as_u64(), log[0]["last_status"].is_null()), (Some(1), true), "{log:?}");
    assert_eq!(log[0]["next_attempt_at"], "2026-06-15T12:00:05Z");
    assert_eq!(deliver_all(&app).await, 0, "not due before its retry");

    let receiver = Receiver::start_on(addr).await;
    app.clock.advance(SignedDuration::from_secs(5));
    assert_eq!(deliver_all(&app).await, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].signed_with(hook["secret"].as_str().unwrap()));
    assert_eq!(received[0].json()["data"]["content"], "while down");
    let log = deliveries(&app, &ann, &hook).await;
    assert_eq!((log[0]["attempts"].as_u64(), log[0]["last_status"].as_u64()), (Some(2), Some(200)));
    assert_eq!(log[0]["log"].as_array().unwrap().len(), 2, "every attempt is in the log");
}

on_both_stores!(a_receiver_that_does_not_answer_holds_up_no_other_webhook);
async fn a_receiver_that_does_not_answer_holds_up_no_other_webhook() {
    let app = spawn_allowing_private().await;
    let (stuck, quick) = (Receiver::held().await, Receiver::start().await);
    let ann = app.user("ann").await;
    // The stuck receiver's first event is the older, so it is claimed first.
    add_webhook(&app, &ann, &stuck.url(), &["task.created"]).await;
    assert_eq!(app.create_task(&ann, "for the stuck one").await.status(), StatusCode::CREATED);
    app.clock.advance(SignedDuration::from_secs(1));
    let quick_hook = add_webhook(&app, &ann, &quick.url(), &["task.created"]).await;
    assert_eq!(app.create_task(&ann, "for both").await.status(), StatusCode::CREATED);

    let (round_of, now) = (app.state.deliveries.clone(), app.clock.now());
    let round = tokio::spawn(async move { round_of.run_once(now).await.unwrap() });
    // The quick receiver's event is delivered and recorded while the other receiver
    // still holds its request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !deliveries(&app, &ann, &quick_hook).await[0]["delivered_at"].is_string() {
        assert!(Instant::now() < deadline, "the quick receiver waited for the stuck one");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(quick.received().len(), 1);
    assert!(!round.is_finished(), "the stuck receiver has not answered yet");
    stuck.gate.add_permits(2);
    assert_eq!(round.await.unwrap(), 3);
    assert_eq!(stuck.received().len(), 2);
    assert_eq!(deliver_all(&app).await, 0, "both delivered");
}

on_both_stores!(a_receiver_answering_500_is_retried_for_a_day_then_its_webhook_is_disabled);
async fn a_receiver_answering_500_is_retried_for_a_day_then_its_webhook_is_disabled() {
    let app = spawn_allowing_private().await;
    let receiver = Receiver::start().await;
    receiver.status.store(500, Ordering::Relaxed);
    let ann = app.user("ann").await;
    let hook = add_webhook(&app, &ann, &receiver.url(), &["task.created"]).await;
    assert_eq!(app.create_task(&ann, "unlucky").await.status(), StatusCode::CREATED);
    let start = app.clock.now();

    let mut attempts = 0;
    while deliver_all(&app).await > 0 {
        attempts += 1;
        // Hours pass: a fresh session reads the log.
        let ann = app.sign_in("ann").await;
        let log = deliveries(&app, &ann, &hook).await;
        assert_eq!(log[0]["last_status"].as_u64(), Some(500));
        // Jump to the next attempt's due time.
        if let Some(next) = log[0]["next_attempt_at"].as_str() {
            app.clock.set(next.parse().unwrap());
        }
    }
    assert_eq!(attempts, 8);
    assert_eq!(receiver.received().len(), 8, "each attempt reached the receiver");
    assert!(app.clock.now().duration_since(start) >= SignedDuration::from_hours(24), "retried for over a day");
    let ann = app.sign_in("ann").await;
    let log = deliveries(&app, &ann, &hook).await;
    assert_eq!((log[0]["attempts"].as_u64(), log[0]["next_attempt_at"].is_null()), (Some(8), true), "{log:?}");
    assert_eq!(log[0]["log"].as_array().unwrap().len(), 8);
    let listed: Value = app.get("/v1/me/webhooks", &ann.access).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["disabled"], true);

    // Nothing more goes to a disabled webhook.
    assert_eq!(app.create_task(&ann, "after").await.status(), StatusCode::CREATED);
    app.clock.advance(SignedDuration::from_hours(1));
    assert_eq!(deliver_all(&app).await, 0);
    assert_eq!(receiver.received().len(), 8);
}

on_both_stores!(destinations_inside_the_network_are_refused_without_the_flag);
async fn destinations_inside_the_network_are_refused_without_the_flag() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/",
        "ftp://93.184.216.34/",
        "not a url",
    ] {
        let res =
            app.post("/v1/me/webhooks", &json!({"url": url, "events": ["task.created"]}), Some(&ann.access)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let body = problem(res).await;
        assert!(body.to_string().contains("url"), "{url}: {body}");
    }
    let unknown = json!({"url": "http://93.184.216.34/", "events": ["task.exploded"]});
    assert_eq!(
        app.post("/v1/me/webhooks", &unknown, Some(&ann.access)).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let list: Value = app.get("/v1/me/webhooks", &ann.access).await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

on_both_stores!(a_destination_is_checked_again_at_delivery);
async fn a_destination_is_checked_again_at_delivery() {
    let app = spawn_allowing_private().await;
    let receiver = Receiver::start().await;
    let ann = app.user("ann").await;
    let hook = add_webhook(&app, &ann, &receiver.url(), &["task.created"]).await;
    assert_eq!(app.create_task(&ann, "x").await.status(), StatusCode::CREATED);

    // A worker that allows no private destinations, as a deployment would run.
    let strict = Deliveries::new(app.state.store.clone(), false);
    assert_eq!(strict.run_once(app.clock.now()).await.unwrap(), 1);
    assert!(receiver.received().is_empty(), "nothing was sent to 127.0.0.1");
    let log = deliveries(&app, &ann, &hook).await;
    let error = log[0]["last_error"].as_str().unwrap();
    assert!(error.contains("127.0.0.1"), "{error}");
}

on_both_stores!(webhooks_are_for_signed_in_sessions_and_capped_per_user);
async fn webhooks_are_for_signed_in_sessions_and_capped_per_user() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let token = app.post("/v1/me/tokens", &json!({"name": "ci", "scopes": ["tasks:write"]}), Some(&ann.access)).await;
    let token: Value = token.json().await.unwrap();
    let pat = token["token"].as_str().unwrap();
    let body = json!({"url": "http://93.184.216.34/hook", "events": ["task.created"]});
    let res = app.post("/v1/me/webhooks", &body, Some(pat)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(problem(res).await["type"].as_str().unwrap().ends_with("insufficient-scope"));
    assert_eq!(app.get("/v1/me/webhooks", pat).await.status(), StatusCode::FORBIDDEN);

    let mut ids = Vec::new();
    for _ in 0..10 {
        let hook = add_webhook(&app, &ann, "http://93.184.216.34/hook", &["task.created"]).await;
        ids.push(hook["id"].as_str().unwrap().to_owned());
    }
    let res = app.post("/v1/me/webhooks", &body, Some(&ann.access)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(app.delete(&format!("/v1/me/webhooks/{}", ids[0]), &ann.access).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/v1/me/webhooks/{}", ids[0]), &ann.access).await.status(), StatusCode::NOT_FOUND);
    let bob = app.user("bob").await;
    let other = format!("/v1/me/webhooks/{}/deliveries", ids[1]);
    assert_eq!(app.get(&other, &bob.access).await.status(), StatusCode::NOT_FOUND, "not bob's");
    assert_eq!(app.post("/v1/me/webhooks", &body, Some(&ann.access)).await.status(), StatusCode::CREATED);
}

on_postgres_only!(two_instances_deliver_a_burst_every_event_once);
async fn two_instances_deliver_a_burst_every_event_once() {
    let [one, two] = TestApp::spawn_instances_with(|s| s.webhook_allow_private = true).await;
    let receiver = Receiver::start().await;
    let admin = one.admin("root").await;
    let user = one.sign_up("carol").await;
    assert_eq!(one.set_limit(&admin, user["id"].as_str().unwrap(), 1000).await.status(), StatusCode::OK);
    let carol = one.sign_in("carol").await;
    add_webhook(&one, &carol, &receiver.url(), &["task.created"]).await;
    for (n, instance) in [&one, &two].into_iter().enumerate() {
        for chunk in 0..2 {
            let tasks: Vec<Value> = (0..100).map(|i| json!({"content": format!("task {n}.{chunk}.{i}")})).collect();
            let res = instance.post("/v1/tasks/batch", &json!({"tasks": tasks}), Some(&carol.access)).await;
            assert_eq!(res.status(), StatusCode::CREATED);
        }
    }

    // Both instances claim and deliver at the same time, round after round.
    let mut attempted = 0;
    loop {
        let now = one.clock.now();
        let (a, b) = tokio::join!(one.state.deliveries.run_once(now), two.state.deliveries.run_once(now));
        let (a, b) = (a.unwrap(), b.unwrap());
        if a + b == 0 {
            break;
        }
        attempted += a + b;
    }
    let received = receiver.received();
    let (mut by_id, mut by_task): (HashMap<String, usize>, HashMap<String, usize>) = Default::default();
    for r in &received {
        *by_id.entry(r.id.clone()).or_default() += 1;
        *by_task.entry(r.json()["data"]["content"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!((attempted, received.len(), by_task.len()), (400, 400, 400), "every event delivered");
    assert!(by_id.values().chain(by_task.values()).all(|n| *n == 1), "none delivered twice");
}
