//! Plans, boosts and limits that adapt (docs/quota.md item 10): the limit in force is
//! the user's own, else their plan's (or what it adapted to), else their sign-up
//! default, plus the boosts of their local day; read in each create's own atomic step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use jiff::SignedDuration;
use quotask::clock::Clock as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Client, PASSWORD, TestApp, header, problem, ts};

async fn id_of(app: &TestApp, who: &Client) -> String {
    app.me(who).await["id"].as_str().unwrap().to_owned()
}

async fn create_plan(app: &TestApp, admin: &Client, body: Value) -> Value {
    let res = app.post("/v1/admin/plans", &body, Some(&admin.access)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{body}");
    res.json().await.unwrap()
}

async fn patch_user(app: &TestApp, admin: &Client, id: &str, body: Value) -> Value {
    let res = app.patch(&format!("/v1/admin/users/{id}"), &body, &admin.access).await;
    assert_eq!(res.status(), StatusCode::OK, "{body}");
    res.json().await.unwrap()
}

async fn patch_plan(app: &TestApp, admin: &Client, name: &str, body: Value) -> Value {
    let res = app.patch(&format!("/v1/admin/plans/{name}"), &body, &admin.access).await;
    assert_eq!(res.status(), StatusCode::OK, "{body}");
    res.json().await.unwrap()
}

/// (limit, used, limit_source, plan, boost) of `GET /v1/me/quota`.
async fn explained(app: &TestApp, who: &Client) -> (u64, u64, String, Value, u64) {
    let q = app.quota(who).await;
    (
        q["limit"].as_u64().unwrap(),
        q["used"].as_u64().unwrap(),
        q["limit_source"].as_str().unwrap().to_owned(),
        q["plan"].clone(),
        q["boost"].as_u64().unwrap(),
    )
}

async fn create_n(app: &TestApp, who: &Client, n: usize) {
    for i in 0..n {
        assert_eq!(app.create_task(who, &format!("task {i}")).await.status(), StatusCode::CREATED, "create {i}");
    }
}

on_both_stores!(a_plans_limit_applies_at_once_to_its_users_today_too);
async fn a_plans_limit_applies_at_once_to_its_users_today_too() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let ann = app.user("ann").await;
    let bo = app.user("bob").await;
    let (ann_id, bo_id) = (id_of(&app, &ann).await, id_of(&app, &bo).await);
    assert_eq!(explained(&app, &ann).await, (5, 0, "default".into(), Value::Null, 0), "a new user: the default");

    let plan = create_plan(&app, &root, json!({"name": "team", "daily_limit": 3})).await;
    assert_eq!(
        (plan["name"].as_str(), plan["daily_limit"].as_u64(), &plan["adapt"]),
        (Some("team"), Some(3), &Value::Null)
    );
    let user = patch_user(&app, &root, &ann_id, json!({"plan": "team"})).await;
    assert_eq!(
        (user["daily_limit"].as_u64(), user["limit_source"].as_str(), user["plan"].as_str()),
        (Some(3), Some("plan"), Some("team"))
    );
    patch_user(&app, &root, &bo_id, json!({"plan": "team"})).await;
    assert_eq!(explained(&app, &ann).await, (3, 0, "plan".into(), json!("team"), 0));

    create_n(&app, &ann, 3).await;
    let refused = app.create_task(&ann, "one too many").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = problem(refused).await;
    assert_eq!((body["limit"].as_u64(), body["used"].as_u64()), (Some(3), Some(3)));
    assert_eq!(
        (body["limit_source"].as_str(), body["plan"].as_str(), body["boost"].as_u64()),
        (Some("plan"), Some("team"), Some(0))
    );

    // Raised: at once, today included, for every user of the plan; no user row changes.
    let plan = patch_plan(&app, &root, "team", json!({"daily_limit": 5})).await;
    assert_eq!(plan["daily_limit"], 5);
    assert_eq!(explained(&app, &ann).await, (5, 3, "plan".into(), json!("team"), 0));
    assert_eq!(explained(&app, &bo).await.0, 5);
    create_n(&app, &ann, 2).await;
    assert_eq!(app.create_task(&ann, "past 5").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Lowered below what is used: nothing left until the reset, never negative.
    patch_plan(&app, &root, "team", json!({"daily_limit": 1})).await;
    let quota = app.quota(&ann).await;
    assert_eq!((quota["limit"].as_u64(), quota["remaining"].as_u64()), (Some(1), Some(0)));
    assert_eq!(app.create_task(&bo, "bo's one").await.status(), StatusCode::CREATED);
    assert_eq!(app.create_task(&bo, "bo's two").await.status(), StatusCode::TOO_MANY_REQUESTS);

    let plans: Value = app.get("/v1/admin/plans", &root.access).await.json().await.unwrap();
    assert_eq!(
        plans["items"],
        json!([{"name": "team", "daily_limit": 1, "adapt": null, "created_at": "2026-06-15T12:00:00Z"}])
    );
    let trail: Value = app.get("/v1/admin/plans/team/audit", &root.access).await.json().await.unwrap();
    let changes: Vec<(&str, &str, &str)> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["old_value"].as_str().unwrap(), e["new_value"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, [("daily_limit", "none", "3"), ("daily_limit", "3", "5"), ("daily_limit", "5", "1")]);
    let root_id = id_of(&app, &root).await;
    assert!(trail["items"].as_array().unwrap().iter().all(|e| e["actor_id"] == root_id.as_str()));
    let audit: Value = app.get(&format!("/v1/admin/users/{ann_id}/audit"), &root.access).await.json().await.unwrap();
    assert_eq!(audit["items"][0]["field"], "plan");
    assert_eq!(
        (audit["items"][0]["old_value"].as_str(), audit["items"][0]["new_value"].as_str()),
        (Some("none"), Some("team"))
    );
}

on_both_stores!(an_own_limit_overrides_the_plan_and_null_drops_it);
async fn an_own_limit_overrides_the_plan_and_null_drops_it() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let ann = app.user("ann").await;
    let id = id_of(&app, &ann).await;
    create_plan(&app, &root, json!({"name": "basic", "daily_limit": 3})).await;

    let user = patch_user(&app, &root, &id, json!({"daily_limit": 7, "plan": "basic"})).await;
    assert_eq!((user["daily_limit"].as_u64(), user["limit_source"].as_str()), (Some(7), Some("user")));
    patch_plan(&app, &root, "basic", json!({"daily_limit": 10})).await;
    assert_eq!(explained(&app, &ann).await, (7, 0, "user".into(), json!("basic"), 0), "the own limit wins");

    let user = patch_user(&app, &root, &id, json!({"daily_limit": null})).await;
    assert_eq!((user["daily_limit"].as_u64(), user["limit_source"].as_str()), (Some(10), Some("plan")));
    assert_eq!(explained(&app, &ann).await, (10, 0, "plan".into(), json!("basic"), 0));
    let user = patch_user(&app, &root, &id, json!({"plan": null})).await;
    assert_eq!(
        (user["daily_limit"].as_u64(), user["limit_source"].as_str(), &user["plan"]),
        (Some(5), Some("default"), &Value::Null)
    );
    assert_eq!(explained(&app, &ann).await, (5, 0, "default".into(), Value::Null, 0));
    create_n(&app, &ann, 5).await;
    assert_eq!(app.create_task(&ann, "sixth").await.status(), StatusCode::TOO_MANY_REQUESTS);

    let audit: Value = app.get(&format!("/v1/admin/users/{id}/audit"), &root.access).await.json().await.unwrap();
    let fields: Vec<(&str, &str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["old_value"].as_str().unwrap(), e["new_value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [("daily_limit", "5", "7"), ("plan", "none", "basic"), ("daily_limit", "7", "none"), ("plan", "basic", "none")]
    );
}

on_both_stores!(boosts_add_on_the_users_local_days_they_cover_only);
async fn boosts_add_on_the_users_local_days_they_cover_only() {
    // 12:00 UTC on 2026-06-15 is 02:00 on 2026-06-16 in Kiritimati (UTC+14).
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let body = json!({"username": "kiri", "password": PASSWORD, "timezone": "Pacific/Kiritimati"});
    assert_eq!(app.post("/v1/auth/signup", &body, None).await.status(), StatusCode::CREATED);
    let kiri = app.sign_in("kiri").await;
    let id = id_of(&app, &kiri).await;
    let boosts = format!("/v1/admin/users/{id}/boosts");

    let utc_day = app
        .post(
            &boosts,
            &json!({"extra": 4, "from": "2026-06-15", "to": "2026-06-15", "reason": "UTC's today"}),
            Some(&root.access),
        )
        .await;
    assert_eq!(utc_day.status(), StatusCode::CREATED);
    assert_eq!(explained(&app, &kiri).await, (5, 0, "default".into(), Value::Null, 0), "not the user's day");
    let res = app
        .post(
            &boosts,
            &json!({"extra": 2, "from": "2026-06-16", "to": "2026-06-17", "reason": "launch"}),
            Some(&root.access),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let boost: Value = res.json().await.unwrap();
    assert_eq!(
        (boost["extra"].as_u64(), boost["from"].as_str(), boost["to"].as_str(), boost["reason"].as_str()),
        (Some(2), Some("2026-06-16"), Some("2026-06-17"), Some("launch"))
    );
    assert_eq!(explained(&app, &kiri).await, (7, 0, "default".into(), Value::Null, 2), "today's boost, at once");

    create_n(&app, &kiri, 7).await;
    let refused = app.create_task(&kiri, "eighth").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), "\"daily\";q=7;w=86400");
    let body = problem(refused).await;
    assert_eq!(
        (body["limit"].as_u64(), body["boost"].as_u64(), body["limit_source"].as_str()),
        (Some(7), Some(2), Some("default"))
    );

    let listed: Value = app.get(&boosts, &root.access).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // The next local day (2026-06-17) is boosted too; the one after is not.
    app.clock.advance(SignedDuration::from_hours(24));
    let (kiri, root) = (app.sign_in("kiri").await, app.sign_in("root").await);
    assert_eq!(explained(&app, &kiri).await, (7, 0, "default".into(), Value::Null, 2));
    // Taken back: at once, today included.
    let gone = app.delete(&format!("{boosts}/{}", boost["id"].as_str().unwrap()), &root.access).await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    assert_eq!(explained(&app, &kiri).await, (5, 0, "default".into(), Value::Null, 0));
    let again = app.delete(&format!("{boosts}/{}", boost["id"].as_str().unwrap()), &root.access).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    let audit: Value = app.get(&format!("/v1/admin/users/{id}/audit"), &root.access).await.json().await.unwrap();
    let fields: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["boost", "boost", "boost"]);
    assert_eq!(audit["items"][2]["new_value"], "none", "the take-back is audited");
}

on_both_stores!(bad_plan_and_boost_input_is_a_4xx_problem_document);
async fn bad_plan_and_boost_input_is_a_4xx_problem_document() {
    let app = TestApp::spawn().await;
    let root = app.admin("root").await;
    let ann = app.user("ann").await;
    let id = id_of(&app, &ann).await;
    create_plan(&app, &root, json!({"name": "basic", "daily_limit": 3})).await;
    let adapt = json!({"step": 1, "after_days_at_limit": 2, "max": 9, "after_idle_days": 3, "min": 1});

    let plans = [
        (json!({"name": "basic", "daily_limit": 3}), StatusCode::CONFLICT),
        (json!({"name": "Basic", "daily_limit": 3}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "a/b", "daily_limit": 3}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "", "daily_limit": 3}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "daily_limit": -1}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "daily_limit": 1_000_001}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "daily_limit": "3"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "daily_limit": 3, "extra": 1}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"name": "x", "daily_limit": 3, "adapt": {"step": 0, "after_days_at_limit": 2, "max": 9, "after_idle_days": 3, "min": 1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "x", "daily_limit": 3, "adapt": {"step": 1, "after_days_at_limit": 2, "max": 1, "after_idle_days": 3, "min": 9}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "x", "daily_limit": 3, "adapt": {"step": 1, "after_days_at_limit": 0, "max": 9, "after_idle_days": 3, "min": 1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"name": "x", "daily_limit": 3, "adapt": {"step": 1}}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "daily_limit": 3, "adapt": null}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in plans {
        let res = app.post("/v1/admin/plans", &body, Some(&root.access)).await;
        assert_eq!(res.status(), status, "{body}");
        problem(res).await;
    }
    for (body, status) in [
        (json!({"daily_limit": -5}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"daily_limit": null}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"adapt": {"step": 1, "after_days_at_limit": 2, "max": 9, "after_idle_days": 400, "min": 1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"name": "renamed"}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let res = app.patch("/v1/admin/plans/basic", &body, &root.access).await;
        assert_eq!(res.status(), status, "{body}");
        problem(res).await;
    }
    let missing = app.patch("/v1/admin/plans/nope", &json!({"daily_limit": 1}), &root.access).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/admin/plans/nope/audit", &root.access).await.status(), StatusCode::NOT_FOUND);
    let with_rule = patch_plan(&app, &root, "basic", json!({"adapt": adapt})).await;
    assert_eq!(with_rule["adapt"], adapt);
    assert_eq!(patch_plan(&app, &root, "basic", json!({"adapt": null})).await["adapt"], Value::Null);

    for body in
        [json!({"plan": "nope"}), json!({"plan": "Bad Name"}), json!({"plan": 3}), json!({"daily_limit": "none"})]
    {
        let res = app.patch(&format!("/v1/admin/users/{id}"), &body, &root.access).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        problem(res).await;
    }

    let boosts = format!("/v1/admin/users/{id}/boosts");
    for body in [
        json!({"extra": 0, "from": "2026-06-15", "to": "2026-06-15"}),
        json!({"extra": -3, "from": "2026-06-15", "to": "2026-06-15"}),
        json!({"extra": 1_000_001, "from": "2026-06-15", "to": "2026-06-15"}),
        json!({"extra": 1, "from": "2026-06-16", "to": "2026-06-15"}),
        json!({"extra": 1, "from": "2026-01-01", "to": "2027-01-02"}),
        json!({"extra": 1, "from": "2026-6-15", "to": "2026-06-15"}),
        json!({"extra": 1, "from": "2026-02-30", "to": "2026-03-01"}),
        json!({"extra": 1, "from": "2026-06-15"}),
        json!({"extra": 1, "from": "2026-06-15", "to": "2026-06-15", "reason": "x".repeat(501)}),
        json!({"extra": 1, "from": "2026-06-15", "to": "2026-06-15", "user_id": id}),
    ] {
        let res = app.post(&boosts, &body, Some(&root.access)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        problem(res).await;
    }
    let nobody = "/v1/admin/users/0190a0b0-0000-7000-8000-000000000000/boosts";
    let res =
        app.post(nobody, &json!({"extra": 1, "from": "2026-06-15", "to": "2026-06-15"}), Some(&root.access)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(nobody, &root.access).await.status(), StatusCode::NOT_FOUND);
    let not_a_boost = app.delete(&format!("{boosts}/0190a0b0-0000-7000-8000-000000000000"), &root.access).await;
    assert_eq!(not_a_boost.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("{boosts}/nonsense"), &root.access).await.status(), StatusCode::NOT_FOUND);

    // Only admins.
    for res in [
        app.get("/v1/admin/plans", &ann.access).await,
        app.post("/v1/admin/plans", &json!({"name": "mine", "daily_limit": 1000}), Some(&ann.access)).await,
        app.patch("/v1/admin/plans/basic", &json!({"daily_limit": 1000}), &ann.access).await,
        app.get(&boosts, &ann.access).await,
        app.post(&boosts, &json!({"extra": 1000, "from": "2026-06-15", "to": "2026-06-15"}), Some(&ann.access)).await,
    ] {
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(explained(&app, &ann).await, (5, 0, "default".into(), Value::Null, 0), "nothing changed");
}

/// One create of the storm: when it was sent, and what it was told.
struct Answer {
    sent: Instant,
    status: StatusCode,
    /// (limit, remaining) of a 201's `RateLimit-Policy` and `RateLimit` headers.
    quota: Option<(u64, u64)>,
}

fn quota_of(res: &reqwest::Response) -> Option<(u64, u64)> {
    let policy = header(res, "ratelimit-policy");
    let current = header(res, "ratelimit");
    let limit = policy.split(";q=").nth(1)?.split(';').next()?.parse().ok()?;
    let remaining = current.split(";r=").nth(1)?.split(';').next()?.parse().ok()?;
    Some((limit, remaining))
}

/// 1,200 creates by `carol` from 30 workers over `instances`; once `trigger` of the
/// answers (all of them, or the 201s only) have come, the plan `team`'s limit becomes
/// `limit`. Every answer, and when the change was acknowledged.
async fn storm(
    instances: [&TestApp; 3],
    root: &Client,
    carol: &Arc<Client>,
    trigger: (usize, bool),
    limit: u64,
) -> (Vec<Answer>, Instant) {
    let seen = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let workers = (0..30).map(|w| {
        let (app, carol, seen, notify) = (instances[w % 3], carol.clone(), seen.clone(), notify.clone());
        async move {
            let mut answers = Vec::new();
            for i in 0..40 {
                let sent = Instant::now();
                let res = app.create_task(&carol, &format!("w{w} t{i}")).await;
                let counted = !trigger.1 || res.status() == StatusCode::CREATED;
                if counted && seen.fetch_add(1, Ordering::SeqCst) + 1 == trigger.0 {
                    notify.notify_one();
                }
                answers.push(Answer { sent, status: res.status(), quota: quota_of(&res) });
            }
            answers
        }
    });
    let change = async {
        notify.notified().await;
        patch_plan(instances[1], root, "team", json!({"daily_limit": limit})).await;
        Instant::now()
    };
    let (answers, changed_at) = futures::future::join(futures::future::join_all(workers), change).await;
    (answers.into_iter().flatten().collect(), changed_at)
}

/// Checks the storm's 201s against the limits `old` (before the change) and `new`, and
/// that they took units `first..=last` of the day, each once; the 201s by limit.
fn check_storm(answers: &[Answer], changed_at: Instant, old: u64, new: u64, first: u64) -> (u64, usize, usize) {
    assert!(answers.iter().all(|a| a.status == StatusCode::CREATED || a.status == StatusCode::TOO_MANY_REQUESTS));
    assert!(answers.iter().any(|a| a.sent > changed_at), "the change landed before the storm ended");
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::CREATED).collect();
    let mut counts = Vec::new();
    for a in &ok {
        let (limit, remaining) = a.quota.expect("a 201 carries its quota");
        assert!(limit == old || limit == new, "admitted under {limit}");
        // So no unit above a limit was ever taken under it.
        assert!(remaining < limit, "admitted with {remaining} of {limit} left after it");
        assert!(limit == new || a.sent < changed_at, "a create sent after the change read the old limit");
        counts.push(limit - remaining);
    }
    counts.sort_unstable();
    let last = first + ok.len() as u64 - 1;
    assert_eq!(counts, (first..=last).collect::<Vec<_>>(), "each 201 took the next unit, none twice");
    let under = |limit| ok.iter().filter(|a| a.quota.is_some_and(|(l, _)| l == limit)).count();
    (last, under(old), under(new))
}

// "In force" while the plan's limit changes mid-storm: each create reads the limit in
// its own atomic step (the statement that moves the day's counter, READ COMMITTED), so
// a change applies to every create whose statement starts after it commits, and a
// create already running finishes under the limit it read. So every 201 says the limit
// it was admitted under and used no more than it; every create sent after the change
// was acknowledged read the new limit; the counter is exact (the 201s' counts are the
// next units, each once); lowered, the day ends above the new limit only by creates
// that read the old one; raised, it fills up to the new limit exactly.
on_postgres_only!(a_plans_limit_changed_during_a_storm_over_three_instances_is_never_passed);
async fn a_plans_limit_changed_during_a_storm_over_three_instances_is_never_passed() {
    let [one, two, three] = TestApp::spawn_instances().await;
    let instances = [&one, &two, &three];
    let root = one.admin("root").await;
    create_plan(&one, &root, json!({"name": "team", "daily_limit": 100})).await;
    let user = two.sign_up("carol").await;
    patch_user(&three, &root, user["id"].as_str().unwrap(), json!({"plan": "team"})).await;
    let carol = Arc::new(one.sign_in("carol").await);

    // Lowered from 100 to 60 once 10 are created.
    let (answers, changed_at) = storm(instances, &root, &carol, (10, true), 60).await;
    let (total, _, _) = check_storm(&answers, changed_at, 100, 60, 1);
    assert!((60..=100).contains(&total), "{total} tasks for limits of 100, then 60");
    let rows: Vec<i64> = one.db.stored("select count(*) from tasks").await;
    assert_eq!(rows, [total as i64]);
    for app in instances {
        let quota = app.quota(&carol).await;
        assert_eq!((quota["used"].as_u64(), quota["limit"].as_u64()), (Some(total), Some(60)));
    }

    // Raised to 150 while a storm is being refused: it fills up to 150 exactly, every
    // unit taken under the new limit.
    let (answers, changed_at) = storm(instances, &root, &carol, (20, false), 150).await;
    let (last, old, new) = check_storm(&answers, changed_at, 60, 150, total + 1);
    assert_eq!((last, old, new as u64), (150, 0, 150 - total), "the raise applied at once");
    let rows: Vec<i64> = one.db.stored("select count(*) from tasks").await;
    assert_eq!(rows, [150]);
    for app in instances {
        let quota = app.quota(&carol).await;
        assert_eq!((quota["used"].as_u64(), quota["limit"].as_u64()), (Some(150), Some(150)));
        assert_eq!(app.create_task(&carol, "after the storms").await.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

/// The adaptive rule of these tests: +2 after 2 days at the limit (up to 9), -2 after 2
/// idle days (down to 3).
fn rule() -> Value {
    json!({"step": 2, "after_days_at_limit": 2, "max": 9, "after_idle_days": 2, "min": 3})
}

/// A user of zone `zone` on plan `plan`, signed up at the app's clock.
async fn adaptive_user(app: &TestApp, root: &Client, name: &str, zone: &str, plan: &str) -> String {
    let body = json!({"username": name, "password": PASSWORD, "timezone": zone});
    let user: Value = app.post("/v1/auth/signup", &body, None).await.json().await.unwrap();
    let id = user["id"].as_str().unwrap().to_owned();
    patch_user(app, root, &id, json!({"plan": plan})).await;
    id
}

/// Uses up `name`'s whole limit today.
async fn use_up(app: &TestApp, name: &str) {
    let who = app.sign_in(name).await;
    let left = app.quota(&who).await["remaining"].as_u64().unwrap();
    create_n(app, &who, left as usize).await;
}

on_both_stores!(an_adaptive_plan_raises_a_limit_after_days_at_it_and_lowers_it_after_idle_days);
async fn an_adaptive_plan_raises_a_limit_after_days_at_it_and_lowers_it_after_idle_days() {
    let app = TestApp::spawn_at(ts("2026-06-01T12:00:00Z")).await;
    let root = app.admin("root").await;
    create_plan(&app, &root, json!({"name": "grow", "daily_limit": 5, "adapt": rule()})).await;
    let ann = adaptive_user(&app, &root, "ann", "UTC", "grow").await;
    let day = SignedDuration::from_hours(24);

    // Days 1 and 2 used up; the job on day 3 raises the limit from day 4.
    use_up(&app, "ann").await;
    app.clock.advance(day);
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 0, "one day at the limit is not enough");
    use_up(&app, "ann").await;
    app.clock.advance(day);
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 1);
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 0, "once per local day");
    let who = app.sign_in("ann").await;
    assert_eq!(explained(&app, &who).await, (5, 0, "plan".into(), json!("grow"), 0), "never the day under way");
    app.clock.advance(day);
    let who = app.sign_in("ann").await;
    assert_eq!(explained(&app, &who).await, (7, 0, "adapted".into(), json!("grow"), 0));
    assert_eq!(app.me(&who).await["daily_limit"], 7);

    // Used up on days 4 and 5: 9 from day 7 (the cap); then no higher.
    use_up(&app, "ann").await;
    app.clock.advance(day);
    app.state.jobs.adapt(app.clock.now()).await.unwrap();
    use_up(&app, "ann").await;
    app.clock.advance(day);
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 1);
    app.clock.advance(day);
    let who = app.sign_in("ann").await;
    assert_eq!(explained(&app, &who).await.0, 9);

    // Idle on days 7 and 8: 7 from day 10; idle on 9 and 10 too: 5 from day 12.
    app.clock.advance(day);
    app.state.jobs.adapt(app.clock.now()).await.unwrap();
    app.clock.advance(day);
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 1);
    app.clock.advance(day);
    let who = app.sign_in("ann").await;
    assert_eq!(explained(&app, &who).await.0, 7);
    for _ in 0..2 {
        app.state.jobs.adapt(app.clock.now()).await.unwrap();
        app.clock.advance(day);
    }
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 1);
    app.clock.advance(day);
    assert_eq!(explained(&app, &app.sign_in("ann").await).await.0, 5);

    // An own limit stops the rule.
    let root = app.sign_in("root").await;
    patch_user(&app, &root, &ann, json!({"daily_limit": 4})).await;
    app.clock.advance(day * 3);
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 0);
    let root = app.sign_in("root").await;
    let audit: Value = app.get(&format!("/v1/admin/users/{ann}/audit"), &root.access).await.json().await.unwrap();
    let adapted: Vec<(&str, &str, &Value)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["field"] == "adapted_limit")
        .map(|e| (e["old_value"].as_str().unwrap(), e["new_value"].as_str().unwrap(), &e["actor_id"]))
        .collect();
    assert_eq!(
        adapted,
        [
            ("5", "7 from 2026-06-04", &Value::Null),
            ("7", "9 from 2026-06-07", &Value::Null),
            ("9", "7 from 2026-06-10", &Value::Null),
            ("7", "5 from 2026-06-13", &Value::Null),
        ],
        "each change audited, made by the system"
    );
}

on_both_stores!(adaptive_changes_wait_for_each_users_next_local_day_across_zones_dst_and_the_date_line);
async fn adaptive_changes_wait_for_each_users_next_local_day_across_zones_dst_and_the_date_line() {
    // 2026-04-03T12:00Z: Kiritimati is on 04-04 02:00, Santiago (UTC-3 until its 25-hour
    // day 04-04 ends) on 04-03 09:00, Lord Howe (UTC+11, its 24.5-hour day is 04-05) on
    // 04-03 23:00, Niue (UTC-11) on 04-03 01:00.
    let app = TestApp::spawn_at(ts("2026-04-03T12:00:00Z")).await;
    let root = app.admin("root").await;
    create_plan(&app, &root, json!({"name": "grow", "daily_limit": 3, "adapt": rule()})).await;
    let zones = [
        ("kiri", "Pacific/Kiritimati"),
        ("santi", "America/Santiago"),
        ("howe", "Australia/Lord_Howe"),
        ("niue", "Pacific/Niue"),
    ];
    for (name, zone) in zones {
        adaptive_user(&app, &root, name, zone, "grow").await;
    }
    // Each uses up two local days (the sign-up day counts), the clock stepping 24 hours.
    let day = SignedDuration::from_hours(24);
    for _ in 0..2 {
        for (name, _) in zones {
            use_up(&app, name).await;
        }
        app.clock.advance(day);
    }
    // 2026-04-05T12:00Z: every user is on their third local day; the job decides now.
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 4);
    for (name, _) in zones {
        let who = app.sign_in(name).await;
        assert_eq!(explained(&app, &who).await.0, 3, "{name}: the day under way keeps its limit");
    }
    // Just before and just after each user's next local midnight, in order.
    let midnights = [
        ("howe", "2026-04-05T13:30:00Z"),  // 04-06 00:00 at UTC+10:30, after its 24.5-hour day
        ("santi", "2026-04-06T04:00:00Z"), // 04-06 00:00 at UTC-4, after its 25-hour day
        ("kiri", "2026-04-06T10:00:00Z"),
        ("niue", "2026-04-06T11:00:00Z"),
    ];
    for (name, at) in midnights {
        app.clock.set(ts(at) - SignedDuration::from_secs(1));
        let who = app.sign_in(name).await;
        assert_eq!(explained(&app, &who).await.0, 3, "{name} just before midnight");
        app.clock.set(ts(at));
        let who = app.sign_in(name).await;
        assert_eq!(explained(&app, &who).await, (5, 0, "adapted".into(), json!("grow"), 0), "{name} at midnight");
    }

    // Kiri moves west across the date line to Niue: the move waits for Kiritimati's
    // midnight (04-08 there), then re-enters 04-06, a date whose limit was decided
    // before the change (3); Niue's next midnight brings 04-07 and the new limit.
    app.clock.set(ts("2026-04-06T12:00:00Z"));
    let kiri = app.sign_in("kiri").await;
    assert_eq!(app.patch("/v1/me", &json!({"timezone": "Pacific/Niue"}), &kiri.access).await.status(), StatusCode::OK);
    app.clock.set(ts("2026-04-07T10:00:00Z"));
    let kiri = app.sign_in("kiri").await;
    let quota = app.quota(&kiri).await;
    assert_eq!(
        (quota["timezone"].as_str(), quota["day"].as_str(), quota["limit"].as_u64()),
        (Some("Pacific/Niue"), Some("2026-04-06"), Some(3))
    );
    // The rule looked at kiri on 04-06 already; the others have too little history.
    assert_eq!(app.state.jobs.adapt(app.clock.now()).await.unwrap(), 0);
    app.clock.set(ts("2026-04-07T11:00:00Z"));
    let kiri = app.sign_in("kiri").await;
    let quota = app.quota(&kiri).await;
    assert_eq!((quota["day"].as_str(), quota["limit"].as_u64()), (Some("2026-04-07"), Some(5)));
}
