//! The web page's refresh token as an `HttpOnly` cookie (asked for with
//! `X-Refresh-Cookie: 1`), and the policy headers of the pages on the origin.

use cookie::{Cookie, SameSite};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, header, problem};

/// The refresh cookie a response sets, if it sets one.
fn set_refresh_cookie(res: &Response) -> Option<Cookie<'static>> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| Cookie::parse(v.to_str().ok()?.to_owned()).ok())
        .find(|c| c.name() == "quotask_refresh")
}

/// A sign-in that asks for the refresh token as a cookie: its answer.
async fn sign_in_for_a_cookie(app: &TestApp, username: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/signin"))
        .header("x-refresh-cookie", "1")
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

/// A refresh as the page sends it: no token in the body, the cookie (if any) alone.
async fn refresh_with_cookie(app: &TestApp, cookie: Option<&Cookie<'_>>) -> Response {
    let mut req = app.client.post(app.url("/v1/auth/refresh")).json(&json!({}));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie.stripped().to_string());
    }
    req.send().await.unwrap()
}

on_both_stores!(asked_for_it_sign_in_sets_the_refresh_token_as_a_strict_http_only_cookie_and_not_in_the_body);
async fn asked_for_it_sign_in_sets_the_refresh_token_as_a_strict_http_only_cookie_and_not_in_the_body() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;

    let res = sign_in_for_a_cookie(&app, "ann").await;

    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_refresh_cookie(&res).expect("a refresh cookie");
    assert!(cookie.value().len() >= 43, "a whole token: {cookie}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.secure(), Some(true), "{cookie}");
    assert_eq!(cookie.same_site(), Some(SameSite::Strict), "{cookie}");
    assert_eq!(cookie.path(), Some("/v1/auth"), "{cookie}");
    assert_eq!(cookie.max_age().map(|d| d.whole_days()), Some(30), "{cookie}");
    let body: Value = res.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "the body keeps no refresh token: {body}");
    assert_eq!(app.get("/v1/me", body["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);
}

on_both_stores!(the_cookie_alone_refreshes_and_is_replaced_and_a_spent_one_revokes_the_family);
async fn the_cookie_alone_refreshes_and_is_replaced_and_a_spent_one_revokes_the_family() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;
    let first = set_refresh_cookie(&sign_in_for_a_cookie(&app, "ann").await).unwrap();

    let res = refresh_with_cookie(&app, Some(&first)).await;

    assert_eq!(res.status(), StatusCode::OK);
    let second = set_refresh_cookie(&res).expect("the next refresh cookie");
    assert_ne!(second.value(), first.value());
    assert_eq!((second.http_only(), second.secure(), second.path()), (Some(true), Some(true), Some("/v1/auth")));
    let body: Value = res.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/me", &access).await.status(), StatusCode::OK);

    let reuse = refresh_with_cookie(&app, Some(&first)).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    let cleared = set_refresh_cookie(&reuse).expect("the spent cookie is cleared");
    assert_eq!((cleared.value(), cleared.max_age().map(|d| d.whole_seconds())), ("", Some(0)));
    let successor = refresh_with_cookie(&app, Some(&second)).await;
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED, "the whole family is revoked");
    assert_eq!(app.get("/v1/me", &access).await.status(), StatusCode::UNAUTHORIZED);
}

on_both_stores!(sign_out_clears_the_refresh_cookie_and_ends_its_token);
async fn sign_out_clears_the_refresh_cookie_and_ends_its_token() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;
    let res = sign_in_for_a_cookie(&app, "ann").await;
    let cookie = set_refresh_cookie(&res).unwrap();
    let access = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();

    let out = app
        .client
        .post(app.url("/v1/auth/signout"))
        .bearer_auth(&access)
        .header("cookie", cookie.stripped().to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let cleared = set_refresh_cookie(&out).expect("a cookie that clears it");
    assert_eq!(cleared.value(), "");
    assert_eq!(cleared.max_age().map(|d| d.whole_seconds()), Some(0));
    assert_eq!((cleared.path(), cleared.secure(), cleared.http_only()), (Some("/v1/auth"), Some(true), Some(true)));
    assert_eq!(refresh_with_cookie(&app, Some(&cookie)).await.status(), StatusCode::UNAUTHORIZED);
}

on_both_stores!(without_the_header_the_pair_stays_in_the_body_and_no_cookie_is_set);
async fn without_the_header_the_pair_stays_in_the_body_and_no_cookie_is_set() {
    let app = TestApp::spawn().await;
    app.sign_up("ann").await;

    let signed_in = app.post("/v1/auth/signin", &json!({"username": "ann", "password": PASSWORD}), None).await;
    assert!(set_refresh_cookie(&signed_in).is_none());
    let pair: Value = signed_in.json().await.unwrap();
    let refreshed = app.post("/v1/auth/refresh", &json!({"refresh_token": pair["refresh_token"]}), None).await;

    assert_eq!(refreshed.status(), StatusCode::OK);
    assert!(set_refresh_cookie(&refreshed).is_none());
    let pair: Value = refreshed.json().await.unwrap();
    assert!(pair["refresh_token"].as_str().is_some_and(|t| t.len() >= 43), "{pair}");
    // Neither in the body nor as a cookie: no credential, the answer a bad token gets.
    let neither = refresh_with_cookie(&app, None).await;
    assert_eq!(neither.status(), StatusCode::UNAUTHORIZED);
    let bad = app.post("/v1/auth/refresh", &json!({"refresh_token": "not-a-token"}), None).await;
    assert_eq!(problem(neither).await, problem(bad).await);
}

on_both_stores!(a_body_token_is_used_before_the_cookie);
async fn a_body_token_is_used_before_the_cookie() {
    let app = TestApp::spawn().await;
    let bob = app.user("bob").await;
    app.sign_up("ann").await;
    let anns = set_refresh_cookie(&sign_in_for_a_cookie(&app, "ann").await).unwrap();

    let res = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .header("cookie", anns.stripped().to_string())
        .json(&json!({"refresh_token": bob.refresh}))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_refresh_cookie(&res).is_none(), "answered as it was asked: in the body");
    let pair: Value = res.json().await.unwrap();
    let me: Value = app.get("/v1/me", pair["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["username"], "bob");
    assert_eq!(refresh_with_cookie(&app, Some(&anns)).await.status(), StatusCode::OK, "ann's cookie is unspent");
}

#[tokio::test]
async fn the_docs_page_has_a_content_security_policy_and_cannot_be_framed() {
    let app = TestApp::spawn().await;

    for path in ["/docs/", "/docs/swagger-initializer.js", "/docs/swagger-ui-bundle.js", "/openapi.json"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();

        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = header(&res, "content-security-policy");
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
    }
    let page = app.client.get(app.url("/docs/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("swagger-ui") && !page.contains("<script>"), "Swagger UI, no inline script");
}
