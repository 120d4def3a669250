//! Behind a trusted proxy: whose address a sign-in attempt is counted under, read from
//! `X-Forwarded-For` one item at a time (the rule is in `src/http/client_ip.rs`).

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};

/// A server behind a proxy on 127.0.0.1 that allows 3 failed sign-ins per hour.
async fn behind_a_proxy() -> TestApp {
    TestApp::spawn_with(|s| {
        s.trusted_proxies = quotask::config::TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        s.signin_failures_per_hour = 3;
    })
    .await
}

/// A sign-in through the proxy, which passed on `forwarded` as `X-Forwarded-For`.
async fn sign_in(app: &TestApp, username: &str, password: &str, forwarded: &[u8]) -> StatusCode {
    let body = json!({"username": username, "password": password});
    let req = app.client.post(app.url("/v1/auth/signin")).json(&body);
    let req = req.header("x-forwarded-for", HeaderValue::from_bytes(forwarded).unwrap());
    req.send().await.unwrap().status()
}

on_both_stores!(a_bad_byte_in_x_forwarded_for_does_not_throttle_other_clients_behind_the_same_proxy);
async fn a_bad_byte_in_x_forwarded_for_does_not_throttle_other_clients_behind_the_same_proxy() {
    let app = behind_a_proxy().await;
    app.sign_up("ann").await;

    // The attacker sends a non-ASCII byte of their own; the proxy appends their address.
    // Each try is for another name, so that only the address's count can stop them.
    let mut attacker = Vec::new();
    for i in 0..5 {
        attacker.push(sign_in(&app, &format!("victim{i}"), "guess", b"\xff, 203.0.113.66").await);
    }

    assert_eq!(attacker[..3], [StatusCode::UNAUTHORIZED; 3], "{attacker:?}");
    assert_eq!(attacker[3..], [StatusCode::TOO_MANY_REQUESTS; 2], "{attacker:?}");
    let from_attacker = sign_in(&app, "someone", "guess", b"203.0.113.66").await;
    assert_eq!(from_attacker, StatusCode::TOO_MANY_REQUESTS, "counted under the attacker's own address");
    // Another client behind the proxy, whose header also carries a byte that is not ASCII.
    assert_eq!(sign_in(&app, "ann", PASSWORD, b"caf\xe9, 198.51.100.7").await, StatusCode::OK);
    assert_eq!(sign_in(&app, "ann", PASSWORD, b"198.51.100.8").await, StatusCode::OK);
}

on_both_stores!(an_ipv6_client_that_changes_address_within_its_64_is_counted_as_one);
async fn an_ipv6_client_that_changes_address_within_its_64_is_counted_as_one() {
    let app = behind_a_proxy().await;
    app.sign_up("ann").await;

    let mut statuses = Vec::new();
    for i in 1..=5 {
        let forwarded = format!("2001:db8:7:9::{i:x}");
        statuses.push(sign_in(&app, &format!("victim{i}"), "guess", forwarded.as_bytes()).await);
    }

    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3], "{statuses:?}");
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 2], "{statuses:?}");
    assert_eq!(
        sign_in(&app, "ann", PASSWORD, b"2001:db8:7:a::1").await,
        StatusCode::OK,
        "the next /64 is another client"
    );
}
