//! What tests of the Redis features need: a Redis (127.0.0.1:6379, or
//! `QUOTASK_TEST_REDIS_URL`) with a key prefix of their own, several instances on one
//! database, and a reader of server-sent events.
//!
//! A test that needs Redis is written as a plain `async fn name()` with
//! `with_redis_on_both_stores!(name);` above it: both variants are ignored unless asked
//! for (`cargo test -- --include-ignored`). Each takes `redis().await`, which holds a
//! shared lock on a file beside the system's temp dir for the whole test; the one test
//! that freezes Redis (SIGSTOP) takes it exclusively, so it never runs beside another
//! Redis test, in this process or in any other test run on the same host.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use quotask::clock::ManualClock;
use quotask::config::{RedisSettings, Settings};
use serde_json::Value;

use crate::helpers::{Database, TestApp, current_db, ts};

/// Runs the test `$name` (a plain `async fn $name()`) on both stores, both ignored unless
/// asked for, as `$name::on_sqlite` and `$name::on_postgres`.
macro_rules! with_redis_on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            #[ignore = "needs Redis at 127.0.0.1:6379"]
            async fn on_sqlite() {
                $crate::helpers::run_on($crate::helpers::Db::Sqlite, super::$name()).await;
            }

            #[tokio::test]
            #[ignore = "needs Redis at 127.0.0.1:6379 and PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
            async fn on_postgres() {
                $crate::helpers::run_on($crate::helpers::Db::Postgres, super::$name()).await;
            }
        }
    };
}

/// A Redis for one test: settings with a prefix no other test uses, and the lock that
/// keeps the freezing test away while it is held.
pub struct TestRedis {
    pub settings: RedisSettings,
    _lock: File,
}

fn redis_url() -> String {
    std::env::var("QUOTASK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn lock(exclusive: bool) -> File {
    let path = std::env::temp_dir().join("quotask-test-redis.lock");
    tokio::task::spawn_blocking(move || {
        let file = File::options().create(true).truncate(false).write(true).open(&path).expect("the lock file");
        if exclusive { file.lock() } else { file.lock_shared() }.expect("the lock");
        file
    })
    .await
    .expect("the lock task")
}

fn settings(url: String) -> RedisSettings {
    let prefix = format!("t:{}:{:016x}:", jiff::Timestamp::now().as_second(), rand::random::<u64>());
    RedisSettings { url, prefix }
}

/// Redis for a test that may run beside others.
pub async fn redis() -> TestRedis {
    TestRedis { _lock: lock(false).await, settings: settings(redis_url()) }
}

/// Redis for the test that freezes it: no other Redis test runs meanwhile.
pub async fn redis_alone() -> TestRedis {
    TestRedis { _lock: lock(true).await, settings: settings(redis_url()) }
}

/// Settings naming a Redis that is not there (nothing listens on port 1).
pub fn absent_redis() -> RedisSettings {
    settings("redis://127.0.0.1:1".to_owned())
}

/// `N` servers on one fresh database of the current store, sharing a clock, each with
/// the test's default settings changed by `configure`. They start one after another (two
/// SQLite stores must not migrate one file at once).
pub async fn instances<const N: usize>(configure: impl Fn(&mut Settings)) -> [TestApp; N] {
    let db = Arc::new(Database::new(current_db()).await);
    let clock = Arc::new(ManualClock::new(ts("2026-06-15T12:00:00Z")));
    let mut apps = Vec::with_capacity(N);
    for _ in 0..N {
        let mut settings = db.settings();
        configure(&mut settings);
        apps.push(TestApp::start_with(db.clone(), clock.clone(), &settings).await);
    }
    apps.try_into().unwrap_or_else(|_| unreachable!("N apps were pushed"))
}

/// Waits until every app receives other instances' events through Redis.
pub async fn until_relaying(apps: &[&TestApp]) {
    // The subscriber retries at most every 2 s while Redis is away.
    for _ in 0..500 {
        if apps.iter().all(|app| app.state.events.relaying()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the event subscribers did not connect to Redis");
}

/// Waits until every app sees Redis answer (after an outage).
pub async fn until_redis_is_up(apps: &[&TestApp], within: Duration) {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if apps.iter().all(|app| app.state.redis.as_ref().is_some_and(|r| r.is_up())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("Redis was not seen back within {within:?}");
}

/// One server-sent event.
#[derive(Debug)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A client reading `GET /v1/events`.
pub struct EventStream {
    res: reqwest::Response,
    buffer: String,
}

impl EventStream {
    pub async fn open(app: &TestApp, token: &str) -> EventStream {
        Self::open_with(app, token, &[]).await
    }

    pub async fn open_with(app: &TestApp, token: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut req = app.client.get(app.url("/v1/events")).bearer_auth(token);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.expect("the stream opens");
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        assert_eq!(crate::helpers::header(&res, "content-type"), "text/event-stream");
        EventStream { res, buffer: String::new() }
    }

    /// The next event with a name (comments and the retry hint are skipped), or `None`
    /// if none comes within `within` or the stream ends.
    pub async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&frame) {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Whether the server ended the stream within `within`.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(_) => return true,
            }
        }
    }
}

fn parse(frame: &str) -> Option<Sse> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in frame.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    let data = if data.is_empty() { Value::Null } else { serde_json::from_str(&data).expect("JSON data") };
    event.map(|event| Sse { id, event, data })
}

/// Redis's process id, from `INFO server`.
pub async fn redis_pid() -> u32 {
    let client = redis::Client::open(redis_url()).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis answers");
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("process_id in INFO server")
}

/// Redis frozen with SIGSTOP until this is dropped (SIGCONT), even if the test panics.
/// A watchdog process also sends SIGCONT after `at_most`, in case this process dies
/// first; a normal drop ends the watchdog, so it cannot thaw a later freeze.
pub struct Frozen {
    pid: u32,
    watchdog: std::process::Child,
}

impl Frozen {
    pub fn freeze(pid: u32, at_most: Duration) -> Frozen {
        let watchdog = format!("sleep {}; kill -CONT {pid}", at_most.as_secs().max(1));
        let watchdog = std::process::Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the watchdog starts");
        let guard = Frozen { pid, watchdog };
        let stopped = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill");
        assert!(stopped.success(), "SIGSTOP to Redis ({pid})");
        guard
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.pid.to_string()]).status();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// A TCP proxy to Redis that the test can cut (every connection closed, new ones refused)
/// and restore: Redis stopping and starting, without stopping the one other tests use.
pub struct RedisProxy {
    pub url: String,
    state: Arc<std::sync::Mutex<ProxyState>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    links: Vec<tokio::task::JoinHandle<()>>,
}

impl RedisProxy {
    pub async fn start() -> RedisProxy {
        let target = redis_url().trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("redis://{}", listener.local_addr().expect("an address"));
        let state = Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if state.cut {
                    continue; // dropped: closed at once
                }
                let target = target.clone();
                state.links.push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        RedisProxy { url, state, accept }
    }

    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
