//! The daily quota end to end: limits, headers, concurrency, midnight and DST.

use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, header, problem, ts};

on_both_stores!(create_task_returns_429_after_the_daily_limit_with_honest_headers);
async fn create_task_returns_429_after_the_daily_limit_with_honest_headers() {
    let app = TestApp::spawn_at(ts("2026-06-15T20:00:00Z")).await;
    let alice = app.user("alice").await;

    for i in 1..=5 {
        let res = app.create_task(&alice, &format!("task {i}")).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(header(&res, "ratelimit-policy"), "\"daily\";q=5;w=86400");
        assert_eq!(header(&res, "ratelimit"), format!("\"daily\";r={};t=14400", 5 - i));
    }
    let res = app.create_task(&alice, "one too many").await;

    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "14400");
    assert_eq!(header(&res, "ratelimit"), "\"daily\";r=0;t=14400");
    let body = problem(res).await;
    assert_eq!(body["type"], "https://quotask.dev/problems/quota-exceeded");
    assert_eq!(body["limit"], 5);
    assert_eq!(body["day"], "2026-06-15");
    assert_eq!(body["resets_at"], "2026-06-16T00:00:00Z");
    assert_eq!(app.all_tasks(&alice).await.len(), 5);
}

on_both_stores!(the_quota_endpoint_agrees_with_the_next_create_and_uses_nothing);
async fn the_quota_endpoint_agrees_with_the_next_create_and_uses_nothing() {
    let app = TestApp::spawn().await;
    let bob = app.user("bob").await;
    app.create_task(&bob, "one").await;

    let quota = app.quota(&bob).await;
    let again = app.quota(&bob).await;

    assert_eq!(quota, again, "reading the quota uses none");
    assert_eq!(quota["limit"], 5);
    assert_eq!(quota["used"], 1);
    assert_eq!(quota["remaining"], 4);
    assert_eq!(quota["day"], "2026-06-15");
    assert_eq!(quota["timezone"], "UTC");
    assert_eq!(quota["resets_at"], "2026-06-16T00:00:00Z");
}

on_both_stores!(two_hundred_concurrent_creates_for_a_limit_of_ten_give_exactly_ten);
async fn two_hundred_concurrent_creates_for_a_limit_of_ten_give_exactly_ten() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root").await;
    let user = app.sign_up("carol").await;
    app.set_limit(&admin, user["id"].as_str().unwrap(), 10).await;
    let carol = app.sign_in("carol").await;

    let contents: Vec<String> = (0..200).map(|i| format!("task {i}")).collect();
    let requests = contents.iter().map(|c| app.create_task(&carol, c));
    let statuses: Vec<StatusCode> = futures::future::join_all(requests).await.iter().map(|r| r.status()).collect();

    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((created, refused), (10, 190), "{statuses:?}");
    assert_eq!(app.all_tasks(&carol).await.len(), 10);
    assert_eq!(app.quota(&carol).await["used"], 10);
}

on_both_stores!(many_users_creating_at_once_each_get_exactly_their_own_limit);
/// Creates of many users at once share group commits (on PostgreSQL, one statement for
/// the creates of a moment): each user still gets exactly their own limit, each 201
/// reports its own place in the day, and a user over the limit fails no one else.
async fn many_users_creating_at_once_each_get_exactly_their_own_limit() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root").await;
    let mut users = Vec::new();
    for limit in 0..10u32 {
        let name = format!("user{limit}");
        let user = app.sign_up(&name).await;
        app.set_limit(&admin, user["id"].as_str().unwrap(), i64::from(limit)).await;
        users.push((limit, app.sign_in(&name).await));
    }
    let requests = users.iter().flat_map(|(_, token)| (0..6).map(move |i| (token, format!("task {i}"))));
    let requests: Vec<_> = requests.collect();
    let answers =
        futures::future::join_all(requests.iter().map(|(token, content)| app.create_task(token, content))).await;

    for (n, (limit, token)) in users.iter().enumerate() {
        let mine = &answers[n * 6..n * 6 + 6];
        let mut remaining: Vec<String> = mine
            .iter()
            .filter(|r| r.status() == StatusCode::CREATED)
            .map(|r| header(r, "ratelimit").split(';').nth(1).unwrap().to_owned())
            .collect();
        remaining.sort();
        let expected_created = (*limit).min(6);
        let mut expected: Vec<String> = (0..expected_created).map(|k| format!("r={}", limit - 1 - k)).collect();
        expected.sort();
        assert_eq!(remaining, expected, "user with limit {limit}: each 201 has its own place in the day");
        let refused = mine.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!(refused, 6 - expected_created as usize, "user with limit {limit}");
        assert_eq!(app.all_tasks(token).await.len(), expected_created as usize);
        assert_eq!(app.quota(token).await["used"], expected_created);
    }
}

on_both_stores!(a_limit_changed_mid_day_applies_at_once_up_and_down);
async fn a_limit_changed_mid_day_applies_at_once_up_and_down() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root").await;
    let user = app.sign_up("dave").await;
    let id = user["id"].as_str().unwrap();
    let dave = app.sign_in("dave").await;
    for _ in 0..3 {
        assert_eq!(app.create_task(&dave, "x").await.status(), StatusCode::CREATED);
    }

    assert_eq!(app.set_limit(&admin, id, 2).await.status(), StatusCode::OK);
    assert_eq!(app.quota(&dave).await["remaining"], 0);
    assert_eq!(app.create_task(&dave, "x").await.status(), StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(app.set_limit(&admin, id, 4).await.status(), StatusCode::OK);
    assert_eq!(app.create_task(&dave, "x").await.status(), StatusCode::CREATED);
    assert_eq!(app.create_task(&dave, "x").await.status(), StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(app.set_limit(&admin, id, 0).await.status(), StatusCode::OK);
    app.clock.advance(SignedDuration::from_hours(24));
    let dave = app.sign_in("dave").await;
    assert_eq!(app.create_task(&dave, "x").await.status(), StatusCode::TOO_MANY_REQUESTS, "a limit of 0 allows none");
}

on_both_stores!(deleting_a_task_gives_no_quota_back);
async fn deleting_a_task_gives_no_quota_back() {
    let app = TestApp::spawn().await;
    let erin = app.user("erin").await;
    let res = app.create_task(&erin, "x").await;
    let location = header(&res, "location");

    assert_eq!(app.delete(&location, &erin.access).await.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.quota(&erin).await["used"], 1);
}

/// Creates up to the limit just before `boundary` and just after it, in `zone`.
async fn n_before_and_n_after(zone: &str, boundary: &str) {
    let boundary = ts(boundary);
    let app = TestApp::spawn_at(boundary - SignedDuration::from_secs(60)).await;
    app.post(
        "/v1/auth/signup",
        &json!({"username": "tzuser", "password": crate::helpers::PASSWORD, "timezone": zone}),
        None,
    )
    .await;
    let user = app.sign_in("tzuser").await;
    for _ in 0..5 {
        assert_eq!(app.create_task(&user, "before").await.status(), StatusCode::CREATED, "{zone}");
    }
    let res = app.create_task(&user, "before").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{zone}: never N+1");
    assert_eq!(header(&res, "retry-after"), "60", "{zone}: Retry-After points at the first instant of the day");

    app.clock.set(boundary);
    for _ in 0..5 {
        assert_eq!(app.create_task(&user, "after").await.status(), StatusCode::CREATED, "{zone}");
    }
    assert_eq!(app.create_task(&user, "after").await.status(), StatusCode::TOO_MANY_REQUESTS, "{zone}");
}

on_both_stores!(kiritimati_and_niue_reset_at_their_own_midnights);
async fn kiritimati_and_niue_reset_at_their_own_midnights() {
    n_before_and_n_after("Pacific/Kiritimati", "2026-06-15T10:00:00Z").await;
    n_before_and_n_after("Pacific/Niue", "2026-06-15T11:00:00Z").await;
}

on_both_stores!(st_johns_resets_on_the_half_hour);
async fn st_johns_resets_on_the_half_hour() {
    n_before_and_n_after("America/St_Johns", "2026-01-15T03:30:00Z").await;
}

on_both_stores!(lord_howe_resets_at_midnight_on_its_short_and_long_days);
async fn lord_howe_resets_at_midnight_on_its_short_and_long_days() {
    // 4 October 2026 is 23.5 hours long; 5 April 2026 is 24.5 hours long.
    n_before_and_n_after("Australia/Lord_Howe", "2026-10-04T13:00:00Z").await;
    n_before_and_n_after("Australia/Lord_Howe", "2026-04-05T13:30:00Z").await;
}

on_both_stores!(a_day_without_a_midnight_starts_at_one_in_havana_and_santiago);
async fn a_day_without_a_midnight_starts_at_one_in_havana_and_santiago() {
    n_before_and_n_after("America/Havana", "2026-03-08T05:00:00Z").await;
    n_before_and_n_after("America/Santiago", "2026-09-06T04:00:00Z").await;
}

on_both_stores!(santiagos_twenty_five_hour_day_is_one_day);
async fn santiagos_twenty_five_hour_day_is_one_day() {
    // 4 April 2026 in Santiago: 00:00 -03 (03:00Z) to 00:00 -04 on the 5th (04:00Z).
    n_before_and_n_after("America/Santiago", "2026-04-05T04:00:00Z").await;
}

on_both_stores!(a_time_zone_change_waits_for_the_old_zones_midnight_and_mints_nothing);
async fn a_time_zone_change_waits_for_the_old_zones_midnight_and_mints_nothing() {
    // Noon UTC: already the 16th in Kiritimati, still the 15th in UTC.
    let app = TestApp::spawn_at(ts("2026-06-15T12:00:00Z")).await;
    let frank = app.user("frank").await;
    for _ in 0..5 {
        app.create_task(&frank, "x").await;
    }

    let res = app.patch("/v1/me", &json!({"timezone": "Pacific/Kiritimati"}), &frank.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    let me: serde_json::Value = res.json().await.unwrap();
    assert_eq!(me["timezone"], "UTC");
    assert_eq!(me["pending_timezone"], "Pacific/Kiritimati");
    assert_eq!(me["timezone_effective_at"], "2026-06-16T00:00:00Z");
    assert_eq!(app.create_task(&frank, "x").await.status(), StatusCode::TOO_MANY_REQUESTS, "no fresh day yet");

    app.clock.set(ts("2026-06-16T00:00:00Z"));
    let frank = app.sign_in("frank").await;
    let quota = app.quota(&frank).await;
    assert_eq!(quota["timezone"], "Pacific/Kiritimati");
    assert_eq!(quota["day"], "2026-06-16");
    assert_eq!(quota["resets_at"], "2026-06-16T10:00:00Z");
    assert_eq!(app.create_task(&frank, "x").await.status(), StatusCode::CREATED);
}

on_both_stores!(a_time_zone_change_shows_at_once_and_applies_at_midnight_to_the_same_session);
async fn a_time_zone_change_shows_at_once_and_applies_at_midnight_to_the_same_session() {
    // The session's user is read (and, on SQLite, kept in memory) before the change;
    // the same access token must see the change at once, and the new zone at midnight.
    let app = TestApp::spawn_at(ts("2026-06-15T23:55:00Z")).await;
    let hana = app.user("hana").await;
    assert_eq!(app.me(&hana).await["pending_timezone"], serde_json::Value::Null);
    assert_eq!(app.quota(&hana).await["timezone"], "UTC");

    let res = app.patch("/v1/me", &json!({"timezone": "Asia/Tokyo"}), &hana.access).await;
    assert_eq!(res.status(), StatusCode::OK);

    let me = app.me(&hana).await;
    assert_eq!(me["timezone"], "UTC");
    assert_eq!(me["pending_timezone"], "Asia/Tokyo");
    assert_eq!(me["timezone_effective_at"], "2026-06-16T00:00:00Z");
    assert_eq!(app.quota(&hana).await["timezone"], "UTC");

    // Six minutes later: the same token, still valid, now lives in Tokyo (09:01 on the 16th).
    app.clock.set(ts("2026-06-16T00:01:00Z"));
    let quota = app.quota(&hana).await;
    assert_eq!(quota["timezone"], "Asia/Tokyo");
    assert_eq!(quota["day"], "2026-06-16");
    assert_eq!(quota["resets_at"], "2026-06-16T15:00:00Z");
    let res = app.create_task(&hana, "first in Tokyo").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let task: serde_json::Value = res.json().await.unwrap();
    assert_eq!(task["day"], "2026-06-16");
    assert_eq!(app.me(&hana).await["timezone"], "Asia/Tokyo");
}

on_both_stores!(moving_west_across_the_date_line_reenters_a_used_day_without_new_quota);
async fn moving_west_across_the_date_line_reenters_a_used_day_without_new_quota() {
    let app = TestApp::spawn_at(ts("2026-06-01T05:00:00Z")).await;
    app.post(
        "/v1/auth/signup",
        &json!({"username": "gina", "password": crate::helpers::PASSWORD, "timezone": "Pacific/Kiritimati"}),
        None,
    )
    .await;
    let gina = app.sign_in("gina").await;
    // 05:00Z is 19:00 on 1 June in Kiritimati; use the whole quota of 1 June.
    for _ in 0..5 {
        app.create_task(&gina, "x").await;
    }
    app.patch("/v1/me", &json!({"timezone": "Pacific/Niue"}), &gina.access).await;

    // At Kiritimati's midnight it is 23:00 on 31 May in Niue: Niue's day, newly begun.
    app.clock.set(ts("2026-06-01T10:00:00Z"));
    let gina = app.sign_in("gina").await;
    let quota = app.quota(&gina).await;
    assert_eq!(quota["timezone"], "Pacific/Niue");
    assert_eq!(quota["day"], "2026-05-31");

    // Niue's 1 June is the day already used up in Kiritimati: still nothing left.
    app.clock.set(ts("2026-06-01T11:00:00Z"));
    let gina = app.sign_in("gina").await;
    let quota = app.quota(&gina).await;
    assert_eq!(quota["day"], "2026-06-01");
    assert_eq!(quota["remaining"], 0);
    assert_eq!(app.create_task(&gina, "x").await.status(), StatusCode::TOO_MANY_REQUESTS);
}
