//! Task CRUD, listing and ownership.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, header, problem};

on_both_stores!(a_created_task_can_be_read_updated_and_deleted);
async fn a_created_task_can_be_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;

    let res = app.create_task(&ann, "buy milk").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = header(&res, "location");
    let task: Value = res.json().await.unwrap();
    assert_eq!(location, format!("/v1/tasks/{}", task["id"].as_str().unwrap()));
    assert_eq!(task["content"], "buy milk");
    assert_eq!(task["done"], false);
    assert_eq!(task["day"], "2026-06-15");
    assert_eq!(task["created_at"], "2026-06-15T12:00:00Z");

    let read: Value = app.get(&location, &ann.access).await.json().await.unwrap();
    assert_eq!(read, task);

    let res = app.patch(&location, &json!({"done": true, "content": "buy oat milk"}), &ann.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["done"], true);
    assert_eq!(updated["content"], "buy oat milk");

    assert_eq!(app.delete(&location, &ann.access).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&location, &ann.access).await.status(), StatusCode::NOT_FOUND);
}

on_both_stores!(another_users_task_answers_404_for_get_update_and_delete);
async fn another_users_task_answers_404_for_get_update_and_delete() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let location = header(&app.create_task(&owner, "private").await, "location");

    assert_eq!(app.get(&location, &other.access).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.patch(&location, &json!({"done": true}), &other.access).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&location, &other.access).await.status(), StatusCode::NOT_FOUND);
    assert!(app.all_tasks(&other).await.is_empty(), "the owner's task never appears in another's list");

    let task: Value = app.get(&location, &owner.access).await.json().await.unwrap();
    assert_eq!((task["content"].as_str(), task["done"].as_bool()), (Some("private"), Some(false)), "untouched");
    let missing = "/v1/tasks/01900000-0000-7000-8000-000000000000";
    let res = app.get(missing, &other.access).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(res).await["type"], "https://quotask.dev/problems/not-found");
}

on_both_stores!(the_list_is_newest_first_paged_and_filtered);
async fn the_list_is_newest_first_paged_and_filtered() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root").await;
    let user = app.sign_up("lister").await;
    app.set_limit(&admin, user["id"].as_str().unwrap(), 100).await;
    let lister = app.sign_in("lister").await;
    for i in 0..7 {
        app.create_task(&lister, &format!("task {i}")).await;
        app.clock.advance(jiff::SignedDuration::from_secs(1));
    }
    let first = app.all_tasks(&lister).await[0]["id"].as_str().unwrap().to_owned();
    app.patch(&format!("/v1/tasks/{first}"), &json!({"done": true}), &lister.access).await;

    let page: Value = app.get("/v1/tasks?limit=3", &lister.access).await.json().await.unwrap();
    let contents: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|t| t["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["task 6", "task 5", "task 4"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value =
        app.get(&format!("/v1/tasks?limit=3&cursor={cursor}"), &lister.access).await.json().await.unwrap();
    assert_eq!(next["items"][0]["content"], "task 3");

    let done: Value = app.get("/v1/tasks?done=true", &lister.access).await.json().await.unwrap();
    assert_eq!(done["items"].as_array().unwrap().len(), 1);
    assert_eq!(done["next_cursor"], Value::Null);
    let today: Value = app.get("/v1/tasks?day=2026-06-15", &lister.access).await.json().await.unwrap();
    assert_eq!(today["items"].as_array().unwrap().len(), 7);
    let other_day: Value = app.get("/v1/tasks?day=2026-06-14", &lister.access).await.json().await.unwrap();
    assert!(other_day["items"].as_array().unwrap().is_empty());
}
