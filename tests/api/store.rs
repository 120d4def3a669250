//! The store under the HTTP layer, on both databases: the command line's path (state
//! built from settings, no HTTP), error variants, and races the HTTP tests cannot aim at.

use std::sync::Arc;

use quotask::app::App;
use quotask::clock::Clock as _;
use quotask::domain::{AdminChanges, LimitChange};
use quotask::domain::{Role, TimeZoneName, UserZone, Username};
use quotask::store::{NewUser, StoreError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp};

on_both_stores!(the_command_line_path_makes_an_admin_and_sets_a_limit_that_the_servers_obey);
async fn the_command_line_path_makes_an_admin_and_sets_a_limit_that_the_servers_obey() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;
    let ann = app.sign_in("ann").await;
    // Signed in and seen by the server (which may now keep her session in memory), and
    // a create made, which the embedded store's writer remembers (`QuotaMemo`).
    assert_eq!(app.quota(&ann).await["limit"], 5);
    assert_eq!(app.create_task(&ann, "x").await.status(), StatusCode::CREATED);

    // What `quotask user create root --admin` and `quotask user set-limit ann 2` do.
    let cli = App::build(&app.db.settings(), app.clock.clone()).await.unwrap();
    let now = app.clock.now();
    cli.services.accounts.sign_up("root", PASSWORD.to_owned(), None, Role::Admin, None, now).await.unwrap();
    let name = Username::parse("ann").unwrap();
    let (user, _) = cli.store.user_credentials(&name).await.unwrap().unwrap();
    let changes = AdminChanges { daily_limit: Some(LimitChange::Own(2)), ..AdminChanges::default() };
    let changed = cli.store.admin_update_user(None, user.id, changes, now).await.unwrap().unwrap();
    assert_eq!(changed.base_limit(now).0, 2);

    assert_eq!(app.quota(&ann).await["limit"], 2, "the running server sees the new limit at once");
    assert_eq!(app.create_task(&ann, "x").await.status(), StatusCode::CREATED);
    assert_eq!(app.create_task(&ann, "x").await.status(), StatusCode::TOO_MANY_REQUESTS, "creates obey it too");
    let root = app.sign_in("root").await;
    let audit: Value = app.get(&format!("/v1/admin/users/{}/audit", user.id), &root.access).await.json().await.unwrap();
    assert_eq!(audit["items"][0]["old_value"], "5");
    assert_eq!(audit["items"][0]["new_value"], "2");
    assert_eq!(audit["items"][0]["actor_id"], Value::Null, "the command line has no actor");
}

on_both_stores!(a_taken_username_is_a_conflict_on_username);
async fn a_taken_username_is_a_conflict_on_username() {
    let app = TestApp::spawn().await;
    let store = &app.state.store;
    let new_user = || NewUser {
        username: Username::parse("ann").unwrap(),
        password_hash: "not a real hash".into(),
        role: Role::User,
        daily_limit: 5,
        zone: UserZone { current: TimeZoneName::utc(), pending: None },
    };
    store.create_user(new_user(), app.clock.now()).await.unwrap();

    let again = store.create_user(new_user(), app.clock.now()).await;

    assert!(matches!(again, Err(StoreError::UsernameTaken)), "{again:?}");
}

on_both_stores!(one_refresh_token_used_five_times_at_once_rotates_once_and_revokes_its_family);
async fn one_refresh_token_used_five_times_at_once_rotates_once_and_revokes_its_family() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let body = json!({"refresh_token": ann.refresh});
    let uses = (0..5).map(|_| app.post("/v1/auth/refresh", &body, None));
    let answers = futures::future::join_all(uses).await;

    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 4, "{statuses:?}");
    let winner = answers.into_iter().find(|r| r.status() == StatusCode::OK).unwrap();
    let pair: Value = winner.json().await.unwrap();
    let successor = app.post("/v1/auth/refresh", &json!({"refresh_token": pair["refresh_token"]}), None).await;
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED, "the reuse revoked the family");
}

#[tokio::test]
async fn a_postgres_url_with_no_server_behind_it_fails_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::settings_for(dir.path());
    settings.backend = quotask::config::Backend::Postgres("postgres://postgres@127.0.0.1:1/none".into());

    let started = std::time::Instant::now();
    let built = App::build(&settings, Arc::new(quotask::clock::SystemClock)).await;

    let error = format!("{:#}", built.err().expect("no server, no start"));
    assert!(error.contains("PostgreSQL"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
