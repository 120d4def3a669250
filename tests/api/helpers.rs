//! The black-box harness: a real server on port 0 with a fresh database per test, a
//! clock the test can move, and one method per endpoint.
//!
//! Every test runs on both stores: write it as a plain `async fn name()` (no
//! `#[tokio::test]`) and put `on_both_stores!(name);` on the line above it. That makes
//! `name::on_sqlite` and `name::on_postgres`; the second is ignored unless asked for
//! (`cargo test -- --include-ignored`), so a machine without PostgreSQL still passes
//! and says what it skipped. Each PostgreSQL test gets a schema of its own
//! (`t_<unix seconds>_<random>`), dropped when the test ends, so tests run in parallel.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use jiff::Timestamp;
use quotask::app::{App, Server};
use quotask::clock::ManualClock;
use quotask::config::Backend;
use quotask::config::Settings;
use quotask::domain::{Role, TimeZoneName};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor as _, PgConnection};

pub const PASSWORD: &str = "correct horse battery";

/// Where the PostgreSQL tests run, unless `QUOTASK_TEST_POSTGRES_URL` says otherwise.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs the test `$name` (a plain `async fn $name()`) once per store, as
/// `$name::on_sqlite` and `$name::on_postgres`.
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                $crate::helpers::run_on($crate::helpers::Db::Sqlite, super::$name()).await;
            }

            on_postgres_only!(super::$name);
        }
    };
}

/// Runs the test `$name` on PostgreSQL only, as `on_postgres` (inside `on_both_stores!`)
/// or as `$name::on_postgres` (for a test that only means something with a server:
/// several instances, locks).
macro_rules! on_postgres_only {
    (super::$name:ident) => {
        #[tokio::test]
        #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
        async fn on_postgres() {
            $crate::helpers::run_on($crate::helpers::Db::Postgres, super::$name()).await;
        }
    };
    ($name:ident) => {
        mod $name {
            on_postgres_only!(super::$name);
        }
    };
}

/// Which store `TestApp::spawn` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// Set by `on_both_stores!` around each test; SQLite when unset.
    static DB: Db;
}

/// Runs `test` with `TestApp::spawn` opening `db`.
pub async fn run_on(db: Db, test: impl Future<Output = ()>) {
    DB.scope(db, test).await;
}

/// The store this test runs on.
pub fn current_db() -> Db {
    DB.try_with(|db| *db).unwrap_or(Db::Sqlite)
}

/// A test's database: a SQLite file in `dir`, or a PostgreSQL schema of its own.
pub struct Database {
    pub dir: tempfile::TempDir,
    schema: Option<PgSchema>,
}

impl Database {
    pub async fn new(db: Db) -> Database {
        let dir = tempfile::tempdir().expect("a temp dir");
        let schema = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgSchema::create().await),
        };
        Database { dir, schema }
    }

    /// Settings for a quotask on this database (port 0, default limit 5, UTC).
    pub fn settings(&self) -> Settings {
        let mut settings = settings_for(self.dir.path());
        if let Some(schema) = &self.schema {
            settings.backend = Backend::Postgres(schema.url());
        }
        settings
    }

    /// The SQLite file, if the test runs on SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.schema.is_none().then(|| self.dir.path().join("quotask.db"))
    }

    /// The first column of every row of `sql`, read straight from the database: for
    /// tests that check what is stored.
    pub async fn stored<T>(&self, sql: &str) -> Vec<T>
    where
        T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        T: Send + Unpin,
    {
        match &self.schema {
            None => {
                let db = rusqlite::Connection::open(self.dir.path().join("quotask.db")).expect("the SQLite file");
                let mut query = db.prepare(sql).expect("a valid query");
                query.query_map([], |r| r.get(0)).expect("rows").collect::<Result<_, _>>().expect("values")
            }
            Some(schema) => {
                let mut conn = PgConnection::connect(&schema.url()).await.expect("the test schema");
                let rows: Vec<(T,)> = sqlx::query_as(sql).fetch_all(&mut conn).await.expect("rows");
                rows.into_iter().map(|(v,)| v).collect()
            }
        }
    }

    /// Runs `sql` straight on the database (statements separated by `;`): for tests that
    /// set up what an older version of quotask would have left.
    pub async fn execute(&self, sql: &str) {
        match &self.schema {
            None => {
                let db = rusqlite::Connection::open(self.dir.path().join("quotask.db")).expect("the SQLite file");
                db.pragma_update(None, "busy_timeout", 5000).expect("a busy timeout");
                db.execute_batch(sql).expect("valid statements");
            }
            Some(schema) => {
                let mut conn = PgConnection::connect(&schema.url()).await.expect("the test schema");
                conn.execute(sql).await.expect("valid statements");
            }
        }
    }

    /// A connection to this test's PostgreSQL schema, for tests that lock or inspect it.
    pub async fn postgres(&self) -> PgConnection {
        let schema = self.schema.as_ref().expect("a PostgreSQL test");
        PgConnection::connect(&schema.url()).await.expect("the test schema")
    }
}

/// A schema on the test server, dropped with this value.
struct PgSchema {
    server: String,
    name: String,
}

/// Schemas older than this are leftovers of a run that was killed; any run sweeps them.
const STALE_SCHEMA_SECONDS: i64 = 6 * 3600;

impl PgSchema {
    async fn create() -> PgSchema {
        let server = std::env::var("QUOTASK_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let mut conn = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("no PostgreSQL at {server} (set QUOTASK_TEST_POSTGRES_URL): {e}"));
        let now = Timestamp::now().as_second();
        static SWEEP: Once = Once::new();
        let mut sweep = false;
        SWEEP.call_once(|| sweep = true);
        if sweep {
            let stale: Vec<(String,)> =
                sqlx::query_as("select nspname::text from pg_namespace where nspname ~ '^t_[0-9]+_[0-9a-f]+$'")
                    .fetch_all(&mut conn)
                    .await
                    .expect("the schema list");
            for (name,) in stale {
                let born: i64 = name.split('_').nth(1).and_then(|s| s.parse().ok()).unwrap_or(now);
                if now - born > STALE_SCHEMA_SECONDS {
                    let _ = conn.execute(format!("drop schema if exists {name} cascade").as_str()).await;
                }
            }
        }
        let name = format!("t_{now}_{:016x}", rand::random::<u64>());
        conn.execute(format!("create schema {name}").as_str()).await.expect("a test schema");
        let _ = conn.close().await;
        PgSchema { server, name }
    }

    /// The server's URL with this schema first on the search path.
    fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{separator}options[search_path]={}", self.server, self.name)
    }
}

impl Drop for PgSchema {
    /// Drops the schema from a thread of its own: `Drop` cannot await, and this one
    /// runs inside the test's runtime.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&server).await.ok()?;
                // A server still holding a lock must not make the test hang.
                conn.execute("set lock_timeout = '5s'").await.ok()?;
                conn.execute(format!("drop schema if exists {name} cascade").as_str()).await.ok()?;
                conn.close().await.ok()
            })
        });
        let _ = dropped.join();
    }
}

/// A running quotask on its own database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: App,
    /// Shared by `spawn_instances`; the database goes when the last instance does.
    pub db: Arc<Database>,
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

/// Settings for a quotask on a SQLite file in `dir`.
pub fn settings_for(dir: &std::path::Path) -> Settings {
    Settings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        backend: Backend::Sqlite(dir.join("quotask.db")),
        db_max_connections: 8,
        jwt_secret: None,
        default_daily_limit: 5,
        default_timezone: TimeZoneName::utc(),
        signin_failures_per_hour: 100,
        // Tests sign many users up from one address; the throttle's own tests lower it.
        signups_per_hour: 10_000,
        redis: None,
        trusted_proxies: Default::default(),
        metrics_token: None,
        max_streams_per_user: 5,
        jobs: Default::default(),
        shutdown_delay: std::time::Duration::ZERO,
        webhook_allow_private: false,
    }
}

impl TestApp {
    /// A server whose clock stands at noon UTC on 15 June 2026 until moved.
    pub async fn spawn() -> TestApp {
        Self::spawn_at(ts("2026-06-15T12:00:00Z")).await
    }

    pub async fn spawn_at(now: Timestamp) -> TestApp {
        let db = Arc::new(Database::new(current_db()).await);
        Self::start_on(db, Arc::new(ManualClock::new(now))).await
    }

    /// `N` servers started at once on one fresh database, sharing one clock: instances
    /// behind a load balancer (starting together is part of what they must survive).
    pub async fn spawn_instances<const N: usize>() -> [TestApp; N] {
        Self::spawn_instances_with(|_| {}).await
    }

    /// `spawn_instances`, with `change` made to every instance's settings first.
    pub async fn spawn_instances_with<const N: usize>(change: impl Fn(&mut Settings)) -> [TestApp; N] {
        let db = Arc::new(Database::new(current_db()).await);
        let clock = Arc::new(ManualClock::new(ts("2026-06-15T12:00:00Z")));
        let mut settings = db.settings();
        change(&mut settings);
        let start = |_| Self::start_with(db.clone(), clock.clone(), &settings);
        let apps = futures::future::join_all((0..N).map(start)).await;
        apps.try_into().unwrap_or_else(|_| unreachable!("join_all keeps the count"))
    }

    /// A server like `spawn`'s, with `change` made to its settings first.
    pub async fn spawn_with(change: impl FnOnce(&mut Settings)) -> TestApp {
        let db = Arc::new(Database::new(current_db()).await);
        let mut settings = db.settings();
        change(&mut settings);
        Self::start_with(db, Arc::new(ManualClock::new(ts("2026-06-15T12:00:00Z"))), &settings).await
    }

    async fn start_on(db: Arc<Database>, clock: Arc<ManualClock>) -> TestApp {
        let settings = db.settings();
        Self::start_with(db, clock, &settings).await
    }

    /// A server on `db` with `settings` (`db.settings()` changed by the test).
    pub async fn start_with(db: Arc<Database>, clock: Arc<ManualClock>, settings: &Settings) -> TestApp {
        let (state, server) = start(settings, clock.clone()).await;
        let base = format!("http://{}", server.addr);
        TestApp { base, client: reqwest::Client::new(), clock, state, db, server: Some(server) }
    }

    /// Stops the server gracefully and starts a new one on the same database.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let (state, server) = start(&self.db.settings(), self.clock.clone()).await;
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
            .services
            .accounts
            .sign_up(username, PASSWORD.to_owned(), None, Role::Admin, None, self.clock.now())
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

async fn start(settings: &Settings, clock: Arc<ManualClock>) -> (App, Server) {
    let app = App::build(settings, clock).await.expect("the app builds");
    let server = Server::start(&app, settings.bind).await.expect("the server binds");
    (app, server)
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
