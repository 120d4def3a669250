//! Tokens that must not work, secrets, password storage, brute force, usernames.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, header, problem};

async fn secret(app: &TestApp) -> Vec<u8> {
    app.state.store.signing_secret(vec![0; 32]).await.unwrap()
}

fn claims(app: &TestApp, me: &Value) -> Value {
    let now = app.clock.now_for_tests();
    json!({
        "sub": me["id"], "sid": "00000000-0000-7000-8000-000000000000",
        "iat": now, "nbf": now, "exp": now + 900, "iss": "quotask", "aud": "quotask"
    })
}

trait NowForTests {
    fn now_for_tests(&self) -> i64;
}

impl NowForTests for quotask::clock::ManualClock {
    fn now_for_tests(&self) -> i64 {
        quotask::clock::Clock::now(self).as_second()
    }
}

fn sign(header: Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// The claims of a token, unchecked.
fn payload(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn at_jwt(alg: Algorithm) -> Header {
    Header { typ: Some("at+jwt".into()), ..Header::new(alg) }
}

on_both_stores!(forged_and_altered_tokens_answer_401_never_5xx);
async fn forged_and_altered_tokens_answer_401_never_5xx() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let me = app.me(&ann).await;
    let key = secret(&app).await;
    // The real session id, so that only the forgery is wrong.
    let real = payload(&ann.access);
    let mut good = claims(&app, &me);
    good["sid"] = real["sid"].clone();
    assert_eq!(app.get("/v1/me", &sign(at_jwt(Algorithm::HS256), &good, &key)).await.status(), StatusCode::OK);

    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#));
    let hs512 = sign(at_jwt(Algorithm::HS512), &good, &key);
    let rs256 = {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"at+jwt"}"#);
        let real_sig = ann.access.rsplit('.').next().unwrap();
        format!("{header}.{body}.{real_sig}")
    };
    let wrong_secret = sign(at_jwt(Algorithm::HS256), &good, &[9; 32]);
    let mut flipped = ann.access.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();

    for (name, token) in
        [("none", none), ("HS512", hs512), ("RS256", rs256), ("wrong secret", wrong_secret), ("flipped", flipped)]
    {
        let res = app.get("/v1/me", &token).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(header(&res, "www-authenticate"), "Bearer", "{name}");
    }
}

on_both_stores!(tokens_with_bad_claims_answer_401);
async fn tokens_with_bad_claims_answer_401() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann").await;
    let me = app.me(&ann).await;
    let key = secret(&app).await;
    let real = payload(&ann.access);
    let now = app.clock.now_for_tests();
    let variant = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&app, &me);
        c["sid"] = real["sid"].clone();
        f(&mut c);
        c
    };
    let cases = [
        ("expired beyond the leeway", variant(&|c| c["exp"] = json!(now - 6)), at_jwt(Algorithm::HS256)),
        ("not yet valid", variant(&|c| c["nbf"] = json!(now + 60)), at_jwt(Algorithm::HS256)),
        ("no exp", variant(&|c| drop(c.as_object_mut().unwrap().remove("exp"))), at_jwt(Algorithm::HS256)),
        ("wrong iss", variant(&|c| c["iss"] = json!("evil")), at_jwt(Algorithm::HS256)),
        ("wrong aud", variant(&|c| c["aud"] = json!("other")), at_jwt(Algorithm::HS256)),
        ("wrong typ", variant(&|_| {}), Header { typ: Some("JWT".into()), ..Header::new(Algorithm::HS256) }),
    ];

    for (name, claims, header) in cases {
        let res = app.get("/v1/me", &sign(header, &claims, &key)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    let within_leeway = variant(&|c| c["exp"] = json!(now - 4));
    let res = app.get("/v1/me", &sign(at_jwt(Algorithm::HS256), &within_leeway, &key)).await;
    assert_eq!(res.status(), StatusCode::OK, "a token 4 s past expiry is within the leeway");
}

on_both_stores!(the_secret_is_kept_in_the_database_and_another_installs_tokens_fail);
async fn the_secret_is_kept_in_the_database_and_another_installs_tokens_fail() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn().await;
    let ann = app.user("ann").await;
    other.sign_up("ann").await;

    let key = secret(&app).await;
    let stored: Vec<Vec<u8>> = app.db.stored("select value from settings where key = 'jwt_secret'").await;
    let stored = stored.concat();

    assert_eq!(stored, key);
    assert!(stored.len() >= 32 && stored.iter().any(|b| *b != 0), "32 random bytes");
    assert_ne!(key, secret(&other).await);
    assert_eq!(other.get("/v1/me", &ann.access).await.status(), StatusCode::UNAUTHORIZED);
    #[cfg(unix)]
    if let Some(path) = app.db.sqlite_path() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database holds the secret: owner only");
    }
}

on_both_stores!(passwords_are_stored_as_argon2id_with_unique_salts_and_never_truncated);
async fn passwords_are_stored_as_argon2id_with_unique_salts_and_never_truncated() {
    let app = TestApp::spawn().await;
    let long = "пароль-".repeat(12); // 84 characters, 156 bytes: past bcrypt's 72.
    app.post("/v1/auth/signup", &json!({"username": "ann", "password": long}), None).await;
    app.post("/v1/auth/signup", &json!({"username": "bob", "password": long}), None).await;

    let hashes: Vec<String> = app.db.stored("select password_hash from users order by username").await;

    assert_eq!(hashes.len(), 2);
    for hash in &hashes {
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    }
    assert_ne!(hashes[0], hashes[1], "unique salts");
    let ok = app.post("/v1/auth/signin", &json!({"username": "ann", "password": long}), None).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let mut changed_at_the_end = long.clone();
    changed_at_the_end.push('!');
    let res = app.post("/v1/auth/signin", &json!({"username": "ann", "password": changed_at_the_end}), None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "every character counts");
}

on_both_stores!(after_a_hundred_failures_an_account_is_throttled_whatever_x_forwarded_for_says);
async fn after_a_hundred_failures_an_account_is_throttled_whatever_x_forwarded_for_says() {
    let app = TestApp::spawn().await;
    app.sign_up("victim").await;

    let mut statuses = Vec::new();
    for i in 0..150 {
        let res = app
            .client
            .post(app.url("/v1/auth/signin"))
            .header("x-forwarded-for", format!("10.0.{}.{}", i / 256, i % 256))
            .json(&json!({"username": "victim", "password": format!("wrong password {i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(header(&res, "retry-after").parse::<u64>().unwrap() > 0);
            assert_eq!(problem(res).await["type"], "https://quotask.dev/problems/sign-in-throttled");
        }
    }

    let evaluated = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((evaluated, throttled), (100, 50));
}

on_both_stores!(usernames_have_one_canonical_form_and_look_alikes_are_refused);
async fn usernames_have_one_canonical_form_and_look_alikes_are_refused() {
    let app = TestApp::spawn().await;
    assert_eq!(app.sign_up("Admin").await["username"], "admin");
    assert_eq!(app.sign_up("E\u{301}lodie").await["username"], "élodie");

    let taken = app.post("/v1/auth/signup", &json!({"username": "ADMIN", "password": PASSWORD}), None).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    for bad in ["ａｄｍｉｎ", "adm\u{0}in", "ad\u{7}min", "p\u{430}ypal", "admin\u{200b}"] {
        let res = app.post("/v1/auth/signup", &json!({"username": bad, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert_eq!(problem(res).await["errors"][0]["field"], "username");
    }
}

on_both_stores!(look_alikes_of_taken_names_are_refused_with_422_or_409);
async fn look_alikes_of_taken_names_are_refused_with_422_or_409() {
    let app = TestApp::spawn().await;
    for name in ["admin", "root", "copeaa"] {
        app.sign_up(name).await;
    }

    // Characters Unicode does not recommend for names (U+0251, a small capital,
    // Cherokee), and Latin mixed with Armenian: refused whatever is taken.
    for fake in ["ɑdmin", "ᴀdmin", "Ꭺdmin", "rօօt"] {
        let res = app.post("/v1/auth/signup", &json!({"username": fake, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{fake:?}");
        assert_eq!(problem(res).await["errors"][0]["field"], "username", "{fake:?}");
    }
    // One script each, but alike: taken (a dotless ı; all-Cyrillic).
    for fake in ["admın", "сореаа"] {
        let res = app.post("/v1/auth/signup", &json!({"username": fake, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::CONFLICT, "{fake:?}");
        assert!(problem(res).await["detail"].as_str().unwrap().contains("looks like"), "{fake:?}");
    }

    let names: Vec<String> = app.db.stored("select username from users order by username").await;
    assert_eq!(names, ["admin", "copeaa", "root"]);
    assert_eq!(app.sign_up("сорока").await["username"], "сорока", "like no taken name");
}

on_both_stores!(skeletons_are_filled_in_at_start_for_accounts_made_before_them);
async fn skeletons_are_filled_in_at_start_for_accounts_made_before_them() {
    let mut app = TestApp::spawn().await;
    for name in ["admin", "carol", "сорока"] {
        app.sign_up(name).await;
    }
    let made: Vec<Option<String>> = app.db.stored("select skeleton from users order by id").await;
    app.db.execute("update users set skeleton = null").await;

    app.restart().await;

    let filled: Vec<Option<String>> = app.db.stored("select skeleton from users order by id").await;
    assert_eq!(filled, made);
    assert_eq!(filled, [Some("adrnin".to_owned()), Some("carol".to_owned()), Some("copo\u{138}a".to_owned())]);
    let res = app.post("/v1/auth/signup", &json!({"username": "admın", "password": PASSWORD}), None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}

on_both_stores!(accounts_that_looked_alike_before_skeletons_keep_working_and_their_name_stays_taken);
async fn accounts_that_looked_alike_before_skeletons_keep_working_and_their_name_stays_taken() {
    let mut app = TestApp::spawn().await;
    for name in ["admin", "bob", "carol"] {
        app.sign_up(name).await;
    }
    // As an older version left them: no skeletons, and a look-alike of `admin` taken.
    app.db
        .execute("update users set skeleton = null; update users set username = 'admın' where username = 'bob'")
        .await;

    app.restart().await;

    let skeletons: Vec<Option<String>> = app.db.stored("select skeleton from users order by id").await;
    assert_eq!(skeletons, [Some("adrnin".to_owned()), None, Some("carol".to_owned())], "the older keeps it");
    app.sign_in("admin").await;
    app.sign_in("admın").await;
    let res = app.post("/v1/auth/signup", &json!({"username": "adrnin", "password": PASSWORD}), None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "a third look-alike");
    app.restart().await;
    app.sign_in("admın").await;
}
