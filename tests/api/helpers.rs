//! The black-box harness: a real server on port 0 with a fresh database per test, a
//! clock the test can move, and one method per endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use jiff::Timestamp;
use quotask::app::{AppState, Server};
use quotask::clock::ManualClock;
use quotask::config::Settings;
use quotask::domain::{Role, TimeZoneName};
use quotask::store::Backend;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";

/// A running quotask on its own database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    server: Option<Server>,
}

/// A signed-in user.
pub struct Client {
    pub access: String,
    pub refresh: String,
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("a valid timestamp")
}

pub fn settings_for(dir: &std::path::Path) -> Settings {
    Settings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        backend: Backend::Sqlite(dir.join("quotask.db")),
        jwt_secret: None,
        default_daily_limit: 5,
        default_timezone: TimeZoneName::utc(),
        signin_failures_per_hour: 100,
    }
}

impl TestApp {
    /// A server whose clock stands at noon UTC on 15 June 2026 until moved.
    pub async fn spawn() -> TestApp {
        Self::spawn_at(ts("2026-06-15T12:00:00Z")).await
    }

    pub async fn spawn_at(now: Timestamp) -> TestApp {
        let dir = tempfile::tempdir().expect("a temp dir");
        let clock = Arc::new(ManualClock::new(now));
        let (state, server) = start(&settings_for(dir.path()), clock.clone()).await;
        let base = format!("http://{}", server.addr);
        TestApp { base, client: reqwest::Client::new(), clock, state, dir, server: Some(server) }
    }

    /// Stops the server gracefully and starts a new one on the same database.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let (state, server) = start(&settings_for(self.dir.path()), self.clock.clone()).await;
        self.base = format!("http://{}", server.addr);
        self.state = state;
        self.server = Some(server);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request sent")
    }

    pub async fn patch(&self, path: &str, body: &Value, token: &str) -> Response {
        self.client.patch(self.url(path)).bearer_auth(token).json(body).send().await.expect("request sent")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client.delete(self.url(path)).bearer_auth(token).send().await.expect("request sent")
    }

    pub async fn sign_up(&self, username: &str) -> Value {
        let res = self.post("/v1/auth/signup", &json!({"username": username, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::CREATED, "sign-up of {username}");
        res.json().await.expect("a user")
    }

    pub async fn sign_in(&self, username: &str) -> Client {
        let res = self.post("/v1/auth/signin", &json!({"username": username, "password": PASSWORD}), None).await;
        assert_eq!(res.status(), StatusCode::OK, "sign-in of {username}");
        let body: Value = res.json().await.expect("tokens");
        Client {
            access: body["access_token"].as_str().expect("an access token").to_owned(),
            refresh: body["refresh_token"].as_str().expect("a refresh token").to_owned(),
        }
    }

    /// Signs up and signs in a new user.
    pub async fn user(&self, username: &str) -> Client {
        self.sign_up(username).await;
        self.sign_in(username).await
    }

    /// A signed-in admin, made the way the CLI makes one.
    pub async fn admin(&self, username: &str) -> Client {
        self.state
            .accounts
            .sign_up(username, PASSWORD.to_owned(), None, Role::Admin, self.clock.now())
            .await
            .expect("an admin");
        self.sign_in(username).await
    }

    pub async fn set_limit(&self, admin: &Client, user_id: &str, limit: i64) -> Response {
        self.patch(&format!("/v1/admin/users/{user_id}"), &json!({"daily_limit": limit}), &admin.access).await
    }

    pub async fn create_task(&self, who: &Client, content: &str) -> Response {
        self.post("/v1/tasks", &json!({"content": content}), Some(&who.access)).await
    }

    pub async fn quota(&self, who: &Client) -> Value {
        let res = self.get("/v1/me/quota", &who.access).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("a quota")
    }

    pub async fn me(&self, who: &Client) -> Value {
        let res = self.get("/v1/me", &who.access).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("a user")
    }

    /// Every task of `who`, all pages.
    pub async fn all_tasks(&self, who: &Client) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/tasks?limit=100&cursor={c}"),
                None => "/v1/tasks?limit=100".to_owned(),
            };
            let page: Value = self.get(&path, &who.access).await.json().await.expect("a page");
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }
}

use quotask::clock::Clock as _;

async fn start(settings: &Settings, clock: Arc<ManualClock>) -> (AppState, Server) {
    let state = AppState::build(settings, clock).await.expect("the app builds");
    let server = Server::start(state.clone(), settings.bind).await.expect("the server binds");
    (state, server)
}

/// The problem document of a response, checking its content type.
pub async fn problem(res: Response) -> Value {
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json", "a problem document");
    res.json().await.expect("a JSON problem")
}

pub fn header(res: &Response, name: &str) -> String {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}
