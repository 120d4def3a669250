//! Personal access tokens (`/v1/me/tokens`): made, listed and deleted by a signed-in
//! session; shown once and kept hashed; each scope opens its routes and no others;
//! deleted, expired or ended by a password change, refused at once; a wrong one counted
//! against its client address.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use quotask::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Client, Database, PASSWORD, TestApp, current_db, header, problem, ts};
use crate::redis_harness::EventStream;

/// A token of `who` with `scopes` (and `expires_at`, if given): its id and the token.
async fn make_token(app: &TestApp, who: &Client, scopes: &[&str]) -> (String, String) {
    let res = app.post("/v1/me/tokens", &json!({"name": "script", "scopes": scopes}), Some(&who.access)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    let body: Value = res.json().await.unwrap();
    (body["id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
}

async fn tokens_of(app: &TestApp, who: &Client) -> Vec<Value> {
    let res = app.get("/v1/me/tokens", &who.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

/// `method path` (with `body`) as `token`.
async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>, token: &str) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

on_both_stores!(a_token_is_shown_once_listed_without_its_secret_kept_hashed_and_deleted);
async fn a_token_is_shown_once_listed_without_its_secret_kept_hashed_and_deleted() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let body = json!({"name": "cron on the NAS", "scopes": ["tasks:write", "tasks:read"], "expires_at": "2026-12-31T23:59:59Z"});
    let res = app.post("/v1/me/tokens", &body, Some(&ann.access)).await;

    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(header(&res, "cache-control"), "no-store");
    let created: Value = res.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("qtk_") && token.len() == 47, "{token}");
    assert_eq!(created["name"], "cron on the NAS");
    assert_eq!(created["scopes"], json!(["tasks:read", "tasks:write"]));
    assert_eq!(created["created_at"], "2026-06-15T12:00:00Z");
    assert_eq!(created["expires_at"], "2026-12-31T23:59:59Z");
    assert_eq!(created["last_used_at"], Value::Null);

    let listed = tokens_of(&app, &ann).await;
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("token");
    assert_eq!(listed, [expected], "listed as made, without the token");

    let stored: Vec<Vec<u8>> = app.db.stored("select hash from personal_tokens").await;
    assert_eq!(stored, [Sha256::digest(token.as_bytes()).to_vec()], "only its SHA-256 is kept");
    if let Some(path) = app.db.sqlite_path() {
        let secret = &token.as_bytes()[4..];
        for file in [path.clone(), path.with_extension("db-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "the token is in {}", file.display());
        }
    }

    assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::OK, "the token works");
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/v1/me/tokens/{id}"), &ann.access).await.status(), StatusCode::NO_CONTENT);
    assert!(tokens_of(&app, &ann).await.is_empty());
    assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::UNAUTHORIZED, "refused at once");
    assert_eq!(app.delete(&format!("/v1/me/tokens/{id}"), &ann.access).await.status(), StatusCode::NOT_FOUND);
}

on_both_stores!(another_users_token_cannot_be_listed_or_deleted);
async fn another_users_token_cannot_be_listed_or_deleted() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let (id, token) = make_token(&app, &ann, &["tasks:read"]).await;

    assert!(tokens_of(&app, &bob).await.is_empty());
    let res = app.delete(&format!("/v1/me/tokens/{id}"), &bob.access).await;

    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::OK, "ann's token still works");
    assert_eq!(app.delete("/v1/me/tokens/not-an-id", &bob.access).await.status(), StatusCode::NOT_FOUND);
}

on_both_stores!(a_token_request_with_a_bad_name_scope_or_expiry_is_refused_naming_the_field);
async fn a_token_request_with_a_bad_name_scope_or_expiry_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let cases = [
        (json!({"name": " ", "scopes": ["tasks:read"]}), "name"),
        (json!({"name": "a\nb", "scopes": ["tasks:read"]}), "name"),
        (json!({"name": "x".repeat(101), "scopes": ["tasks:read"]}), "name"),
        (json!({"name": "n", "scopes": []}), "scopes"),
        (json!({"name": "n", "scopes": ["tasks:read", "admin"]}), "scopes"),
        (json!({"name": "n", "scopes": ["tasks:read"], "expires_at": "2026-06-15T11:59:59Z"}), "expires_at"),
        (json!({"name": "n", "scopes": ["tasks:read"], "expires_at": "next week"}), "expires_at"),
        (json!({"name": "n", "scopes": ["tasks:read"], "expires_at": null}), "expires_at"),
        (json!({"name": "n", "scopes": ["tasks:read"], "token": "qtk_mine"}), "token"),
        (json!({"scopes": ["tasks:read"]}), "name"),
    ];

    for (body, field) in cases {
        let res = app.post("/v1/me/tokens", &body, Some(&ann.access)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let doc = problem(res).await;
        let fields: Vec<&str> =
            doc["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        // An unknown field is named only if it is one the API knows; `token` is not.
        let expected = if field == "token" { "body" } else { field };
        assert_eq!(fields, [expected], "{body}: {doc}");
    }
    assert!(tokens_of(&app, &ann).await.is_empty(), "nothing was made");
}

on_both_stores!(a_user_holds_at_most_50_tokens);
async fn a_user_holds_at_most_50_tokens() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(make_token(&app, &ann, &["quota:read"]).await.0);
    }

    let res =
        app.post("/v1/me/tokens", &json!({"name": "one more", "scopes": ["quota:read"]}), Some(&ann.access)).await;

    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(tokens_of(&app, &ann).await.len(), 50);
    app.delete(&format!("/v1/me/tokens/{}", ids[0]), &ann.access).await;
    make_token(&app, &ann, &["quota:read"]).await;
}

/// Every route a token could try, with what it needs: `Some(scope)`, or `None` for a
/// signed-in session only. Ids that match nothing: a route the token reaches answers
/// 404 there, which tells it from 403.
fn routes(task_id: &str) -> Vec<(Method, String, Option<Value>, Option<&'static str>)> {
    let missing = "0190a000-0000-7000-8000-000000000000";
    vec![
        (Method::GET, "/v1/tasks".into(), None, Some("tasks:read")),
        (Method::GET, format!("/v1/tasks/{task_id}"), None, Some("tasks:read")),
        (Method::POST, "/v1/tasks".into(), Some(json!({"content": "by token"})), Some("tasks:write")),
        (
            Method::POST,
            "/v1/tasks/batch".into(),
            Some(json!({"tasks": [{"content": "by token"}]})),
            Some("tasks:write"),
        ),
        (Method::PATCH, format!("/v1/tasks/{task_id}"), Some(json!({"done": true})), Some("tasks:write")),
        (Method::DELETE, format!("/v1/tasks/{missing}"), None, Some("tasks:write")),
        (Method::POST, "/task".into(), Some(json!({"content": "by seed"})), Some("tasks:write")),
        (Method::GET, "/v1/me/quota".into(), None, Some("quota:read")),
        (Method::GET, "/v1/events".into(), None, Some("events:read")),
        (Method::GET, "/v1/me".into(), None, None),
        (Method::PATCH, "/v1/me".into(), Some(json!({"timezone": "Europe/Paris"})), None),
        (Method::PATCH, "/v1/me".into(), Some(json!({"password": "a new password 123"})), None),
        (Method::POST, "/v1/auth/signout".into(), None, None),
        (Method::GET, "/v1/me/tokens".into(), None, None),
        (Method::POST, "/v1/me/tokens".into(), Some(json!({"name": "child", "scopes": ["tasks:read"]})), None),
        (Method::DELETE, format!("/v1/me/tokens/{missing}"), None, None),
        (Method::GET, "/v1/admin/users".into(), None, None),
        (Method::PATCH, format!("/v1/admin/users/{missing}"), Some(json!({"daily_limit": 9})), None),
        (Method::GET, format!("/v1/admin/users/{missing}/audit"), None, None),
    ]
}

on_both_stores!(each_scope_opens_exactly_its_routes_and_no_token_reaches_the_account_tokens_or_admin);
async fn each_scope_opens_exactly_its_routes_and_no_token_reaches_the_account_tokens_or_admin() {
    let app = TestApp::spawn().await;
    // An admin, so that only the kind of credential can keep a token from admin routes.
    let root = app.admin("root").await;
    // Room for every create the grants make, so that a refusal can only be the scope's.
    let me: Value = app.get("/v1/me", &root.access).await.json().await.unwrap();
    assert_eq!(app.set_limit(&root, me["id"].as_str().unwrap(), 100).await.status(), StatusCode::OK);
    let task: Value = app.create_task(&root, "mine").await.json().await.unwrap();
    let routes = routes(task["id"].as_str().unwrap());
    let all = ["tasks:read", "tasks:write", "quota:read", "events:read"];
    let mut grants: Vec<Vec<&str>> = all.iter().map(|s| vec![*s]).collect();
    grants.push(all.to_vec());

    for scopes in grants {
        let (_, token) = make_token(&app, &root, &scopes).await;
        for (method, path, body, needs) in &routes {
            let res = call(&app, method.clone(), path, body.clone(), &token).await;
            let status = res.status();
            let allowed = needs.is_some_and(|scope| scopes.contains(&scope));
            if allowed {
                assert!(status.is_success() || status == StatusCode::NOT_FOUND, "{scopes:?} {method} {path}: {status}");
                continue;
            }
            assert_eq!(status, StatusCode::FORBIDDEN, "{scopes:?} {method} {path}");
            let challenge = header(&res, "www-authenticate");
            assert!(challenge.starts_with("Bearer error=\"insufficient_scope\""), "{challenge}");
            if let Some(scope) = needs {
                assert!(challenge.ends_with(&format!("scope=\"{scope}\"")), "{challenge}");
            }
            let doc: Value = res.json().await.unwrap();
            // The seed's route wraps the problem in its own shape.
            let doc = if path == "/task" { &doc["payload"] } else { &doc };
            assert_eq!(doc["type"], "https://quotask.dev/problems/insufficient-scope", "{method} {path}");
            assert_eq!(doc["status"], 403);
        }
    }

    // None of it touched the account: the session, the password and the zone stand.
    assert_eq!(app.me(&root).await["timezone"], "UTC");
    let again = app.post("/v1/auth/signin", &json!({"username": "root", "password": PASSWORD}), None).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(tokens_of(&app, &root).await.len(), 5, "no token made another");
}

on_both_stores!(a_token_with_tasks_write_creates_against_its_owners_quota);
async fn a_token_with_tasks_write_creates_against_its_owners_quota() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let (_, token) = make_token(&app, &ann, &["tasks:write", "quota:read"]).await;

    let mut statuses = Vec::new();
    for i in 0..6 {
        let res = app.post("/v1/tasks", &json!({"content": format!("task {i}")}), Some(&token)).await;
        statuses.push(res.status());
    }

    assert_eq!(statuses[..5], [StatusCode::CREATED; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "the owner's limit of 5");
    let quota: Value = app.get("/v1/me/quota", &token).await.json().await.unwrap();
    assert_eq!((quota["used"].clone(), quota["remaining"].clone()), (json!(5), json!(0)));
    assert_eq!(app.all_tasks(&ann).await.len(), 5, "the owner's tasks");
}

on_both_stores!(a_deleted_token_is_refused_at_once_even_right_after_a_use);
async fn a_deleted_token_is_refused_at_once_even_right_after_a_use() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let (id, token) = make_token(&app, &ann, &["tasks:read", "quota:read"]).await;
    // Used just before, so that a store keeping lookups for a moment has this one.
    assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me/quota", &token).await.status(), StatusCode::OK);

    assert_eq!(app.delete(&format!("/v1/me/tokens/{id}"), &ann.access).await.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/me/quota", &token).await.status(), StatusCode::UNAUTHORIZED);
}

on_postgres_only!(a_token_deleted_on_one_instance_is_refused_at_once_by_the_others);
async fn a_token_deleted_on_one_instance_is_refused_at_once_by_the_others() {
    let [one, two, three] = TestApp::spawn_instances().await;
    let ann = one.user("ann").await;
    let (id, token) = make_token(&two, &ann, &["tasks:read"]).await;
    for app in [&one, &two, &three] {
        assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::OK, "{}", app.base);
    }

    let res = three.delete(&format!("/v1/me/tokens/{id}"), &ann.access).await;

    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for app in [&one, &two, &three] {
        assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::UNAUTHORIZED, "{}", app.base);
    }
}

on_both_stores!(an_expired_token_is_refused_and_still_listed_until_deleted);
async fn an_expired_token_is_refused_and_still_listed_until_deleted() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let body = json!({"name": "for an hour", "scopes": ["tasks:read"], "expires_at": "2026-06-15T13:00:00Z"});
    let created: Value = app.post("/v1/me/tokens", &body, Some(&ann.access)).await.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    app.clock.advance(SignedDuration::from_secs(3599));
    assert_eq!(app.get("/v1/tasks", token).await.status(), StatusCode::OK, "a second before its expiry");

    app.clock.advance(SignedDuration::from_secs(1));
    let res = app.get("/v1/tasks", token).await;

    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&res, "www-authenticate"), "Bearer");
    let ann = app.sign_in("ann").await; // the access token of 15 minutes ago has expired too
    let listed = tokens_of(&app, &ann).await;
    assert_eq!(listed[0]["expires_at"], "2026-06-15T13:00:00Z");
}

on_both_stores!(a_password_change_ends_every_personal_token_of_the_user);
async fn a_password_change_ends_every_personal_token_of_the_user() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let (_, first) = make_token(&app, &ann, &["tasks:read"]).await;
    let (_, second) = make_token(&app, &ann, &["quota:read"]).await;
    let (_, bobs) = make_token(&app, &bob, &["tasks:read"]).await;
    assert_eq!(app.get("/v1/tasks", &first).await.status(), StatusCode::OK);

    let change = json!({"password": "an entirely new password", "current_password": PASSWORD});
    let res = app.patch("/v1/me", &change, &ann.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/tasks", &first).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/me/quota", &second).await.status(), StatusCode::UNAUTHORIZED);
    assert!(tokens_of(&app, &ann).await.is_empty());
    assert_eq!(app.get("/v1/tasks", &bobs).await.status(), StatusCode::OK, "another user's token lives on");
}

on_both_stores!(a_zone_change_leaves_the_tokens_working);
async fn a_zone_change_leaves_the_tokens_working() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let (_, token) = make_token(&app, &ann, &["tasks:read"]).await;

    let res = app.patch("/v1/me", &json!({"timezone": "Asia/Tokyo"}), &ann.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/tasks", &token).await.status(), StatusCode::OK);
}

on_both_stores!(a_tokens_last_use_is_recorded_at_most_once_a_minute);
async fn a_tokens_last_use_is_recorded_at_most_once_a_minute() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let (_, token) = make_token(&app, &ann, &["tasks:read"]).await;
    let last_used = || async { tokens_of(&app, &ann).await[0]["last_used_at"].clone() };
    assert_eq!(last_used().await, Value::Null);

    app.get("/v1/tasks", &token).await;
    assert_eq!(last_used().await, "2026-06-15T12:00:00Z");

    app.clock.advance(SignedDuration::from_secs(59));
    app.get("/v1/tasks", &token).await;
    assert_eq!(last_used().await, "2026-06-15T12:00:00Z", "59 s later: not written again");

    app.clock.advance(SignedDuration::from_secs(1));
    app.get("/v1/tasks", &token).await;
    assert_eq!(last_used().await, "2026-06-15T12:01:00Z", "a minute later: written");
    let writes: Vec<i64> = app.db.stored("select count(*) from personal_tokens where last_used_at is not null").await;
    assert_eq!(writes, [1]);
}

/// A server whose sign-in throttle allows `failures` an hour, on a fresh database.
async fn spawn_with_failures(failures: u32) -> TestApp {
    let db = Arc::new(Database::new(current_db()).await);
    let mut settings = db.settings();
    settings.signin_failures_per_hour = failures;
    TestApp::start_with(db, Arc::new(ManualClock::new(ts("2026-06-15T12:00:00Z"))), &settings).await
}

on_both_stores!(wrong_personal_tokens_count_as_failed_sign_ins_of_their_address);
async fn wrong_personal_tokens_count_as_failed_sign_ins_of_their_address() {
    let app = spawn_with_failures(3).await;
    let ann = app.user("ann").await;
    let (id, deleted) = make_token(&app, &ann, &["tasks:read"]).await;
    app.delete(&format!("/v1/me/tokens/{id}"), &ann.access).await;
    let never_issued = format!("qtk_{}", "A".repeat(43));

    let mut statuses = Vec::new();
    for token in [never_issued.as_str(), "qtk_short", deleted.as_str(), never_issued.as_str()] {
        statuses.push(app.get("/v1/tasks", token).await.status());
    }

    let unauthorized = StatusCode::UNAUTHORIZED;
    assert_eq!(statuses, [unauthorized, unauthorized, unauthorized, StatusCode::TOO_MANY_REQUESTS]);
    let sign_in = app.post("/v1/auth/signin", &json!({"username": "ann", "password": PASSWORD}), None).await;
    assert_eq!(sign_in.status(), StatusCode::TOO_MANY_REQUESTS, "the address is throttled for sign-ins too");
    assert!(header(&sign_in, "retry-after").parse::<u64>().unwrap() > 3000);
    let doc = problem(app.get("/v1/tasks", &never_issued).await).await;
    assert_eq!(doc["type"], "https://quotask.dev/problems/sign-in-throttled");
}

on_both_stores!(an_expired_token_or_a_bad_access_token_does_not_count_against_the_address);
async fn an_expired_token_or_a_bad_access_token_does_not_count_against_the_address() {
    let app = spawn_with_failures(1).await;
    let ann = app.user("ann").await;
    let body = json!({"name": "brief", "scopes": ["tasks:read"], "expires_at": "2026-06-15T12:01:00Z"});
    let created: Value = app.post("/v1/me/tokens", &body, Some(&ann.access)).await.json().await.unwrap();
    app.clock.advance(SignedDuration::from_secs(60));

    for _ in 0..3 {
        assert_eq!(app.get("/v1/tasks", created["token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/v1/tasks", "not-a-token").await.status(), StatusCode::UNAUTHORIZED);
    }

    let sign_in = app.post("/v1/auth/signin", &json!({"username": "ann", "password": PASSWORD}), None).await;
    assert_eq!(sign_in.status(), StatusCode::OK);
}

on_both_stores!(a_tokens_event_stream_carries_its_owners_events_and_ends_when_it_is_deleted);
async fn a_tokens_event_stream_carries_its_owners_events_and_ends_when_it_is_deleted() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let (id, token) = make_token(&app, &ann, &["events:read"]).await;
    let mut stream = EventStream::open(&app, &token).await;

    app.create_task(&ann, "seen by the token").await;
    let created = stream.next(Duration::from_secs(3)).await.unwrap();
    assert_eq!((created.event.as_str(), &created.data["content"]), ("task.created", &json!("seen by the token")));

    assert_eq!(app.delete(&format!("/v1/me/tokens/{id}"), &ann.access).await.status(), StatusCode::NO_CONTENT);

    // Streams check their credential every 5 s.
    assert!(stream.ends_within(Duration::from_secs(8)).await, "the deleted token's stream ended");
}
