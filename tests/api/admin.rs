//! The admin API: roles, limits, the audit trail.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

on_both_stores!(non_admins_get_403_on_every_admin_route);
async fn non_admins_get_403_on_every_admin_route() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let id = app.me(&ann).await["id"].as_str().unwrap().to_owned();

    let list = app.get("/v1/admin/users", &ann.access).await;
    let patch = app.patch(&format!("/v1/admin/users/{id}"), &json!({"daily_limit": 1000}), &ann.access).await;
    let audit = app.get(&format!("/v1/admin/users/{id}/audit"), &ann.access).await;

    assert_eq!(list.status(), StatusCode::FORBIDDEN);
    assert_eq!(patch.status(), StatusCode::FORBIDDEN);
    assert_eq!(audit.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.me(&ann).await["daily_limit"], 5);
}

on_both_stores!(every_admin_change_is_in_the_audit_trail);
async fn every_admin_change_is_in_the_audit_trail() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let root_id = app.me(&root).await["id"].as_str().unwrap().to_owned();
    let user = app.sign_up("ann").await;
    let id = user["id"].as_str().unwrap();

    let res =
        app.patch(&format!("/v1/admin/users/{id}"), &json!({"daily_limit": 20, "role": "admin"}), &root.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!((updated["daily_limit"].as_u64(), updated["role"].as_str()), (Some(20), Some("admin")));
    let audit: Value = app.get(&format!("/v1/admin/users/{id}/audit"), &root.access).await.json().await.unwrap();
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["field"], "daily_limit");
    assert_eq!(entries[0]["old_value"], "5");
    assert_eq!(entries[0]["new_value"], "20");
    assert_eq!(entries[0]["actor_id"], root_id.as_str());
    assert_eq!(entries[0]["at"], "2026-06-15T12:00:00Z");
    assert_eq!(entries[1]["field"], "role");
    assert_eq!(entries[1]["new_value"], "admin");
}

on_both_stores!(a_role_or_limit_changed_by_an_admin_applies_at_the_users_next_request);
async fn a_role_or_limit_changed_by_an_admin_applies_at_the_users_next_request() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let ann = app.user("ann").await;
    let id = app.me(&ann).await["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/users/{id}");

    let promote = json!({"role": "admin", "daily_limit": 7});
    assert_eq!(app.patch(&path, &promote, &root.access).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/admin/users", &ann.access).await.status(), StatusCode::OK);
    assert_eq!(app.me(&ann).await["daily_limit"], 7);

    let demote = json!({"role": "user", "daily_limit": 3});
    assert_eq!(app.patch(&path, &demote, &root.access).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/admin/users", &ann.access).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.me(&ann).await["daily_limit"], 3);
}

on_both_stores!(an_admin_cannot_remove_their_own_admin_role);
async fn an_admin_cannot_remove_their_own_admin_role() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let other = app.admin("other").await;
    let root_id = app.me(&root).await["id"].as_str().unwrap().to_owned();
    let other_id = app.me(&other).await["id"].as_str().unwrap().to_owned();

    let own = app
        .patch(&format!("/v1/admin/users/{root_id}"), &json!({"role": "user", "daily_limit": 9}), &root.access)
        .await;

    assert_eq!(own.status(), StatusCode::CONFLICT);
    let problem: Value = own.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("their own admin role"), "{problem}");
    let me = app.me(&root).await;
    assert_eq!((me["role"].as_str(), me["daily_limit"].as_u64()), (Some("admin"), Some(5)), "nothing changed");
    assert_eq!(app.get("/v1/admin/users", &root.access).await.status(), StatusCode::OK);
    let audit: Value = app.get(&format!("/v1/admin/users/{root_id}/audit"), &root.access).await.json().await.unwrap();
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(0), "{audit}");
    // Their own limit, and the role of another admin, they can change.
    let limit = app.patch(&format!("/v1/admin/users/{root_id}"), &json!({"daily_limit": 9}), &root.access).await;
    assert_eq!(limit.status(), StatusCode::OK);
    let demote = app.patch(&format!("/v1/admin/users/{other_id}"), &json!({"role": "user"}), &root.access).await;
    assert_eq!(demote.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/admin/users", &other.access).await.status(), StatusCode::FORBIDDEN);
}

on_both_stores!(the_user_list_shows_todays_use_and_pages);
async fn the_user_list_shows_todays_use_and_pages() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let ann = app.user("ann").await;
    app.create_task(&ann, "x").await;
    app.create_task(&ann, "y").await;

    let page: Value = app.get("/v1/admin/users?limit=1", &root.access).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = app.get(&format!("/v1/admin/users?cursor={cursor}"), &root.access).await.json().await.unwrap();

    let all: Vec<&Value> = page["items"].as_array().unwrap().iter().chain(next["items"].as_array().unwrap()).collect();
    let ann_row = all.iter().find(|u| u["username"] == "ann").unwrap();
    assert_eq!(ann_row["used"], 2);
    assert!(ann_row.get("password_hash").is_none());
    assert_eq!(next["next_cursor"], Value::Null);
}

on_both_stores!(an_admin_limit_outside_zero_to_a_million_is_refused);
async fn an_admin_limit_outside_zero_to_a_million_is_refused() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let id = app.sign_up("ann").await["id"].as_str().unwrap().to_owned();

    for bad in [json!(-1), json!(1_000_000_000_000_i64), json!(1.5), json!("10"), json!(1e19), json!(20000000.0)] {
        let res = app.patch(&format!("/v1/admin/users/{id}"), &json!({"daily_limit": bad}), &root.access).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "daily_limit", "{bad}");
    }
    let audit: Value = app.get(&format!("/v1/admin/users/{id}/audit"), &root.access).await.json().await.unwrap();
    assert!(audit["items"].as_array().unwrap().is_empty(), "nothing changed, nothing audited");

    // JSON Schema's `integer`, which the document promises, includes 20.0.
    let res = app.patch(&format!("/v1/admin/users/{id}"), &json!({"daily_limit": 20.0}), &root.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["daily_limit"], 20);
}

on_both_stores!(the_user_list_finds_users_whose_name_contains_the_search_case_aside);
async fn the_user_list_finds_users_whose_name_contains_the_search_case_aside() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let anna = app.user("anna").await;
    for name in ["bob", "joanna", "an_na", "hannah"] {
        app.sign_up(name).await;
    }
    app.create_task(&anna, "x").await;
    let names = |page: &Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect()
    };

    let first: Value = app.get("/v1/admin/users?q=ANN&limit=2", &root.access).await.json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest: Value =
        app.get(&format!("/v1/admin/users?q=ANN&limit=2&cursor={cursor}"), &root.access).await.json().await.unwrap();

    assert_eq!(names(&first), ["anna", "joanna"]);
    assert_eq!(first["items"][0]["used"], 1);
    assert_eq!(names(&rest), ["hannah"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    // Matched as typed: `_` and `%` are no wildcards.
    let underscore: Value = app.get("/v1/admin/users?q=_", &root.access).await.json().await.unwrap();
    assert_eq!(names(&underscore), ["an_na"]);
    let percent: Value = app.get("/v1/admin/users?q=%25", &root.access).await.json().await.unwrap();
    assert_eq!(names(&percent), Vec::<String>::new());
    // A blank search is everyone; one no name can hold finds no one.
    let blank: Value = app.get("/v1/admin/users?q=%20", &root.access).await.json().await.unwrap();
    assert_eq!(names(&blank).len(), 6);
    let nul = app.get("/v1/admin/users?q=a%00", &root.access).await;
    assert_eq!(nul.status(), StatusCode::OK);
    assert_eq!(names(&nul.json().await.unwrap()), Vec::<String>::new());
}

on_both_stores!(a_user_search_over_32_characters_is_refused_naming_q);
async fn a_user_search_over_32_characters_is_refused_naming_q() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;

    let res = app.get(&format!("/v1/admin/users?q={}", "a".repeat(33)), &root.access).await;

    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "q");
}
