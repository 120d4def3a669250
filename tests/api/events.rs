//! `GET /v1/events` on one instance (no Redis): the user's own events, nothing else, and
//! streams that neither hold up others nor a stopping server.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, header, problem};
use crate::redis_harness::EventStream;

const WAIT: Duration = Duration::from_secs(3);

on_both_stores!(the_event_stream_needs_a_valid_token);
async fn the_event_stream_needs_a_valid_token() {
    let app = TestApp::spawn().await;

    let res = app.client.get(app.url("/v1/events")).send().await.unwrap();

    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/events", "not-a-token").await.status(), StatusCode::UNAUTHORIZED);
}

on_both_stores!(the_event_stream_carries_the_users_own_changes_and_nobody_elses);
async fn the_event_stream_carries_the_users_own_changes_and_nobody_elses() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root").await;
    let ann_user = app.sign_up("ann").await;
    let ann = app.sign_in("ann").await;
    let bob = app.user("bob").await;
    let mut stream = EventStream::open(&app, &ann.access).await;

    app.create_task(&bob, "bob's").await;
    let task: serde_json::Value = app.create_task(&ann, "first").await.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    app.patch(&format!("/v1/tasks/{id}"), &json!({"content": "renamed"}), &ann.access).await;
    app.delete(&format!("/v1/tasks/{id}"), &ann.access).await;
    app.set_limit(&admin, ann_user["id"].as_str().unwrap(), 9).await;
    let seed = app.client.post(app.url("/task")).header("authorization", format!("Bearer: {}", ann.access));
    assert_eq!(seed.send().await.unwrap().status(), StatusCode::OK);

    let created = stream.next(WAIT).await.unwrap();
    assert_eq!((created.event.as_str(), &created.data), ("task.created", &task));
    let updated = stream.next(WAIT).await.unwrap();
    assert_eq!((updated.event.as_str(), &updated.data["content"]), ("task.updated", &json!("renamed")));
    let deleted = stream.next(WAIT).await.unwrap();
    assert_eq!((deleted.event.as_str(), &deleted.data), ("task.deleted", &json!({"id": id})));
    let quota = stream.next(WAIT).await.unwrap();
    assert_eq!((quota.event.as_str(), &quota.data), ("quota.changed", &json!({"daily_limit": 9})));
    let from_seed = stream.next(WAIT).await.unwrap();
    assert_eq!((from_seed.event.as_str(), &from_seed.data["content"]), ("task.created", &json!("untitled task")));
    assert!(created.id.unwrap() < from_seed.id.unwrap(), "ids grow (UUIDv7)");
    assert!(stream.next(Duration::from_millis(300)).await.is_none(), "bob's task is not ann's event");
}

on_both_stores!(a_replayed_create_sends_no_second_event);
async fn a_replayed_create_sends_no_second_event() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let mut stream = EventStream::open(&app, &ann.access).await;

    for _ in 0..2 {
        let req = app.client.post(app.url("/v1/tasks")).bearer_auth(&ann.access).header("idempotency-key", "k1");
        assert_eq!(req.json(&json!({"content": "once"})).send().await.unwrap().status(), StatusCode::CREATED);
    }

    assert_eq!(stream.next(WAIT).await.unwrap().event, "task.created");
    assert!(stream.next(Duration::from_millis(300)).await.is_none());
}

on_both_stores!(a_client_reconnecting_with_last_event_id_is_told_to_re_read);
async fn a_client_reconnecting_with_last_event_id_is_told_to_re_read() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let mut stream =
        EventStream::open_with(&app, &ann.access, &[("last-event-id", "0190a000-0000-7000-8000-000000000000")]).await;

    let first = stream.next(WAIT).await.unwrap();
    assert_eq!((first.event.as_str(), &first.data), ("lagged", &json!({"missed": null})));
}

on_both_stores!(a_client_that_never_reads_holds_up_neither_changes_nor_other_streams);
async fn a_client_that_never_reads_holds_up_neither_changes_nor_other_streams() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let _stalled = EventStream::open(&app, &ann.access).await;
    let mut reader = EventStream::open(&app, &ann.access).await;
    let task: serde_json::Value = app.create_task(&ann, "x").await.json().await.unwrap();
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let big = "x".repeat(8000);
    let reading = tokio::spawn(async move {
        let mut last = None;
        while let Some(event) = reader.next(WAIT).await {
            if event.data["content"] == "last" {
                return true;
            }
            last = Some(event);
        }
        panic!("the reader stopped at {last:?}");
    });

    let started = Instant::now();
    for i in 0..300 {
        let content = if i == 299 { "last".to_owned() } else { format!("{i} {big}") };
        assert_eq!(app.patch(&path, &json!({"content": content}), &ann.access).await.status(), StatusCode::OK);
    }

    assert!(started.elapsed() < Duration::from_secs(20), "changes took {:?}", started.elapsed());
    assert!(tokio::time::timeout(WAIT, reading).await.unwrap().unwrap(), "the reading client got the last event");
}

on_both_stores!(open_streams_end_when_the_server_stops_so_the_stop_is_quick);
async fn open_streams_end_when_the_server_stops_so_the_stop_is_quick() {
    let mut app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let mut stream = EventStream::open(&app, &ann.access).await;

    let started = Instant::now();
    app.restart().await;

    assert!(started.elapsed() < Duration::from_secs(3), "the stop waited {:?}", started.elapsed());
    assert!(stream.ends_within(Duration::from_secs(1)).await);
}

on_both_stores!(a_stream_ends_when_its_token_stops_being_accepted);
async fn a_stream_ends_when_its_token_stops_being_accepted() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    // The token was issued at the clock's noon and is accepted until 15 min 5 s later
    // (its expiry plus the leeway); the stream opens 3 s before that.
    app.clock.advance(jiff::SignedDuration::from_secs(15 * 60 + 2));
    let mut stream = EventStream::open(&app, &ann.access).await;
    let opened = Instant::now();

    assert!(!stream.ends_within(Duration::from_millis(1500)).await, "not before the token's time");
    assert!(stream.ends_within(Duration::from_secs(4)).await, "ended with its token, not 15 minutes later");
    assert!(opened.elapsed() < Duration::from_secs(5), "{:?}", opened.elapsed());
}

on_both_stores!(a_sign_out_ends_that_sessions_streams_and_no_others);
async fn a_sign_out_ends_that_sessions_streams_and_no_others() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let other_session = app.sign_in("ann").await;
    let mut signed_out = EventStream::open(&app, &ann.access).await;
    let mut kept = EventStream::open(&app, &other_session.access).await;

    let res = app.post("/v1/auth/signout", &json!(null), Some(&ann.access)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // Streams check their session every 5 s; the other stream's check comes right
    // after this one's, since it was opened right after it.
    assert!(signed_out.ends_within(Duration::from_secs(8)).await, "the signed-out session's stream ended");
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.create_task(&other_session, "after the check").await;
    let created = kept.next(WAIT).await.expect("the other session's stream lives on");
    assert_eq!((created.event.as_str(), &created.data["content"]), ("task.created", &json!("after the check")));
}

on_both_stores!(a_user_may_hold_five_streams_and_a_sixth_is_refused_until_one_ends);
async fn a_user_may_hold_five_streams_and_a_sixth_is_refused_until_one_ends() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(EventStream::open(&app, &ann.access).await);
    }

    let sixth = app.get("/v1/events", &ann.access).await;
    assert_eq!(sixth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&sixth, "retry-after").parse::<u64>().unwrap() > 0);
    assert_eq!(problem(sixth).await["type"], "https://quotask.dev/problems/too-many-streams");
    let _bobs = EventStream::open(&app, &bob.access).await;

    drop(streams.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let res = app.get("/v1/events", &ann.access).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the closed stream's place was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
