//! The binary as an operator runs it: signals, crashes, hostile connections, memory
//! under a sign-in flood. Each test starts `quotask` as a child process on a free port
//! with its own data directory.

#![expect(clippy::unwrap_used, reason = "a test fails loudly at the first surprise")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct Quotask {
    child: Child,
    addr: SocketAddr,
    base: String,
    dir: std::path::PathBuf,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotask"));
    cmd.env_clear()
        .env("QUOTASK_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

impl Quotask {
    async fn start(dir: &std::path::Path) -> Quotask {
        let addr = free_addr();
        let child = command(dir)
            .env("QUOTASK_BIND", addr.to_string())
            .env("QUOTASK_DEFAULT_DAILY_LIMIT", "1000000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let q = Quotask { child, addr, base: format!("http://{addr}"), dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(format!("{}/readyz", q.base)).await.map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(Instant::now() < deadline, "quotask did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        q
    }

    async fn token(&self, client: &reqwest::Client, username: &str) -> String {
        let body = json!({"username": username, "password": PASSWORD});
        client.post(format!("{}/v1/auth/signup", self.base)).json(&body).send().await.unwrap();
        let res = client.post(format!("{}/v1/auth/signin", self.base)).json(&body).send().await.unwrap();
        res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "quotask did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The peak resident memory of the process so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.memory_kib("VmHWM:")
    }

    /// The resident memory of the process now, in KiB.
    fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS:")
    }

    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends `count` `GET /healthz` over `connections` keep-alive connections, pipelined
    /// in rounds of 256 (cheap for the client, so the server does most of the work), and
    /// checks each is answered 200.
    fn healthz_flood(&self, connections: usize, count: usize) {
        let per_connection = count / connections;
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let addr = self.addr;
                std::thread::spawn(move || {
                    const ROUND: usize = 256;
                    const OK: &[u8] = b"HTTP/1.1 200 OK";
                    let mut stream = TcpStream::connect(addr).unwrap();
                    let round = b"GET /healthz HTTP/1.1\r\nhost: quotask\r\n\r\n".repeat(ROUND);
                    let mut buf = vec![0; 64 * 1024];
                    let mut sent = 0;
                    while sent < per_connection {
                        stream.write_all(&round).unwrap();
                        sent += ROUND;
                        // Counts the answers' status lines, keeping the last bytes of each
                        // read so a status line split between reads is still seen.
                        let (mut answered, mut kept) = (0, 0);
                        while answered < ROUND {
                            let n = stream.read(&mut buf[kept..]).unwrap();
                            assert!(n > 0, "the server closed the connection");
                            let seen = kept + n;
                            answered += buf[..seen].windows(OK.len()).filter(|w| *w == OK).count();
                            kept = (OK.len() - 1).min(seen);
                            buf.copy_within(seen - kept..seen, 0);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }
}

impl Drop for Quotask {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_answers_every_request_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quotask::start(dir.path()).await;
    let client = reqwest::Client::new();
    q.token(&client, "ann").await;

    // Sign-ins are slow (argon2, at most one per core at a time), so 50 of them are
    // still queued or running when the signal arrives.
    let url = format!("{}/v1/auth/signin", q.base);
    let inflight: Vec<_> = (0..50)
        .map(|_| {
            let request = client.post(&url).json(&json!({"username": "ann", "password": PASSWORD}));
            tokio::spawn(request.send())
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.signal("-TERM");
    let signalled = Instant::now();

    // The default lame-duck second: on a new connection, `/readyz` says 503 at once,
    // and the server still answers everything else.
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // (The signal reaches the server's handler a moment after `kill` returns.)
    let mut ready = fresh().get(format!("{}/readyz", q.base)).send().await.unwrap().status();
    while ready != 503 && signalled.elapsed() < Duration::from_millis(200) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        ready = fresh().get(format!("{}/readyz", q.base)).send().await.unwrap().status();
    }
    assert_eq!(ready, 503, "/readyz turns 503 at once");
    let health = fresh().get(format!("{}/healthz", q.base)).send().await.unwrap();
    assert_eq!(health.status(), 200, "other routes are still served");
    assert!(signalled.elapsed() < Duration::from_secs(1), "both answered within the delay");

    let mut answered = 0;
    for request in inflight {
        let res = request.await.unwrap().expect("an answer, not a dropped connection");
        assert_eq!(res.status(), 200);
        answered += 1;
    }
    assert_eq!(answered, 50);
    let status = q.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(q.addr).is_err(), "the listener is closed");
}

#[tokio::test]
async fn ctrl_c_stops_without_the_lame_duck_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quotask::start(dir.path()).await;
    q.signal("-INT");
    // The SIGTERM delay is 1 s by default; Ctrl-C is someone at a terminal.
    let status = q.wait_exit(Duration::from_millis(900));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_clean_stop_leaves_no_wal_for_the_next_start_to_read_back() {
    // Without the final checkpoint, whether the WAL was left depended on a race between
    // the connections closing and the process exiting, so the stop is tried three
    // times (without it, this test failed in 3 runs of 3 of a release build).
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let wal = dir.path().join("quotask.db-wal");
    let mut token = None;
    for round in 0..3 {
        let mut q = Quotask::start(dir.path()).await;
        let token = match &token {
            Some(token) => token,
            None => token.insert(q.token(&client, "ann").await),
        };
        // Enough creates, from 32 clients at once, that the WAL is large at the stop.
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let (client, url, token) = (client.clone(), format!("{}/v1/tasks", q.base), token.clone());
                tokio::spawn(async move {
                    for i in 0..100 {
                        let body = json!({"content": format!("task {round}-{w}-{i}")});
                        let res = client.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                        assert_eq!(res.status(), 201);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(before > 0, "the creates went through the WAL");

        q.signal("-TERM");
        assert_eq!(q.wait_exit(Duration::from_secs(10)).code(), Some(0));

        let after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(after, 0, "round {round}: a WAL of {after} bytes is left (it was {before} before the stop)");
    }
    let q = Quotask::start(dir.path()).await;
    let res = client.get(format!("{}/v1/tasks?limit=100", q.base)).bearer_auth(token.unwrap()).send().await.unwrap();
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 100, "the tasks are in the database itself");
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quotask::start(dir.path()).await;
    let client = reqwest::Client::new();
    let token = q.token(&client, "ann").await;

    let url = format!("{}/v1/tasks", q.base);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let body = json!({"content": format!("writer {w} task {i}")});
                    let Ok(res) = client.post(&url).bearer_auth(&token).json(&body).send().await else { break };
                    if res.status() != 201 {
                        break;
                    }
                    match res.json::<Value>().await {
                        Ok(task) => acknowledged.push(task["id"].as_str().unwrap().to_owned()),
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    let moment = 300 + u64::from(std::process::id() % 500);
    tokio::time::sleep(Duration::from_millis(moment)).await;
    q.signal("-KILL");
    q.wait_exit(Duration::from_secs(5));
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(acknowledged.len() > 50, "the load was real: {} tasks", acknowledged.len());

    let db = rusqlite::Connection::open(dir.path().join("quotask.db")).unwrap();
    let check: String = db.query_row("pragma integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(db);
    let q = Quotask::start(&q.dir.clone()).await;
    let mut stored = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!("{}/v1/tasks?limit=100{cursor}", q.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stored.extend(page["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged tasks lost", lost.len(), acknowledged.len());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quotask::start(dir.path()).await;
    let mut stream = TcpStream::connect(q.addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: quotask\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();

    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);

    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(20), "disconnected by the header timeout, not ours: {waited:?}");
    assert!(waited >= Duration::from_secs(5), "not before the client had a fair chance: {waited:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quotask::start(dir.path()).await;
    // Before, such a connection was kept for ever (a server that also spoke HTTP/2
    // waited for the first bytes to choose, with no timer), so idle sockets could use
    // up the file descriptors. One with the first bytes of HTTP/2's preface, likewise.
    let silent = TcpStream::connect(q.addr).unwrap();
    let mut preface = TcpStream::connect(q.addr).unwrap();
    preface.write_all(b"PRI * HT").unwrap();
    let started = Instant::now();
    for mut stream in [silent, preface] {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(20), "disconnected by the header timeout, not ours: {waited:?}");
    }
    assert!(started.elapsed() >= Duration::from_secs(5), "not before a fair chance: {:?}", started.elapsed());
}

/// A `POST /v1/tasks` whose `Content-Length` promises 100 bytes and whose body has 15.
fn short_body(q: &Quotask, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(q.addr).unwrap();
    let request = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: quotask\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"content\":\"x\"}}"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quotask::start(dir.path()).await;
    let client = reqwest::Client::new();
    let token = q.token(&client, "ann").await;

    let mut stream = short_body(&q, &token);
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);

    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let tasks: Value =
        client.get(format!("{}/v1/tasks", q.base)).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert!(tasks["items"].as_array().unwrap().is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_and_the_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quotask::start(dir.path()).await;
    let client = reqwest::Client::new();
    let token = q.token(&client, "ann").await;

    // Content-Length promises 100 bytes; 15 come, and the client waits without closing.
    let mut stream = short_body(&q, &token);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20), "answered by the body timeout: {:?}", started.elapsed());
    // A fresh client: the server closes connections idle past the header timeout.
    let tasks: Value = reqwest::Client::new()
        .get(format!("{}/v1/tasks", q.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tasks["items"].as_array().unwrap().is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_sign_in_flood_keeps_memory_bounded_and_other_routes_answering() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quotask::start(dir.path()).await;
    let client = reqwest::Client::new();
    q.token(&client, "ann").await;
    let before = q.peak_rss_kib();

    let url = format!("{}/v1/auth/signin", q.base);
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let body = json!({"username": format!("user{}", i % 20), "password": "a wrong password"});
            tokio::spawn(client.post(&url).json(&body).send())
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..20 {
        let res = client.get(format!("{}/healthz", q.base)).send().await.unwrap();
        assert_eq!(res.status(), 200, "other routes answer during the flood");
    }
    let mut evaluated = 0;
    for request in flood {
        match request.await.unwrap().unwrap().status().as_u16() {
            401 => evaluated += 1,
            429 => {} // the client address used up its failures
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(evaluated, 100, "at most 100 failures per client address are evaluated");

    let peak = q.peak_rss_kib();
    // Argon2 takes 19 MiB per hash; with one hash per core at a time the flood can add
    // only a few of those, however many sign-ins wait.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = before + cores * 19 * 1024 + 48 * 1024;
    assert!(peak <= bound, "peak RSS {peak} KiB over the bound {bound} KiB (started at {before} KiB)");
}

#[tokio::test]
async fn memory_stays_flat_under_steady_requests_when_nobody_reads_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quotask::start(dir.path()).await;
    // Every request records its latency in a histogram. The recorder keeps each sample
    // until it folds them into the buckets, which must happen without a scrape of
    // /metrics: before, 200,000 requests added 3,320 KiB (measured) that were never
    // given back.
    q.healthz_flood(4, 40_000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = q.rss_kib();
    q.healthz_flood(4, 200_000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = q.rss_kib();
    assert!(after <= before + 1024, "RSS grew from {before} KiB to {after} KiB over 200,000 requests");
}

#[test]
fn bad_configuration_exits_non_zero_with_one_line_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("QUOTASK_DATABASE_URL", "mysql://localhost/db", "unknown scheme"),
        ("QUOTASK_JWT_SECRET", "too short", "at least 32 bytes"),
        ("QUOTASK_DEFAULT_TIMEZONE", "Mars/Olympus", "QUOTASK_DEFAULT_TIMEZONE"),
        ("QUOTASK_DEFAULT_DAILY_LIMIT", "-1", "QUOTASK_DEFAULT_DAILY_LIMIT"),
        ("QUOTASK_SHUTDOWN_DELAY_MS", "60001", "QUOTASK_SHUTDOWN_DELAY_MS"),
        ("QUOTASK_METRICS_TOKEN", "short", "QUOTASK_METRICS_TOKEN"),
        ("QUOTASK_MAX_STREAMS_PER_USER", "0", "QUOTASK_MAX_STREAMS_PER_USER"),
        ("QUOTASK_SIGNUPS_PER_HOUR", "0", "QUOTASK_SIGNUPS_PER_HOUR"),
    ];
    for (name, value, says) in cases {
        let addr = free_addr();
        let out = command(dir.path()).env("QUOTASK_BIND", addr.to_string()).env(name, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        assert!(lines[0].contains(says), "{name}: {stderr}");
    }
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = command(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("QUOTASK_DATA_DIR"));
}

/// Runs `quotask ARGS` on `dir` (stdin: `input`) and answers its exit status and output.
fn cli(dir: &std::path::Path, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child =
        command(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn the_plan_and_boost_commands_change_what_the_server_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let (success, stdout, stderr) = cli(dir.path(), args, &format!("{PASSWORD}\n"));
        assert!(success, "{args:?}: {stderr}");
        stdout
    };
    ok(&["user", "create", "ann"]);
    assert!(ok(&["plan", "create", "team", "3"]).contains("team: daily limit 3"));
    assert!(
        ok(&["plan", "create", "grow", "2", "--adapt", "1,2,9,3,1"]).contains("step 1 after 2 days at limit up to 9")
    );
    assert!(ok(&["plan", "set", "team", "4"]).contains("team: daily limit 4"));
    let listed = ok(&["plan", "list"]);
    assert!(listed.contains("grow: daily limit 2") && listed.contains("team: daily limit 4"), "{listed}");
    assert!(ok(&["user", "set-plan", "ann", "team"]).contains("ann: plan team, daily limit 4 (plan)"));
    // Yesterday to tomorrow (UTC) covers ann's today, whatever the hour.
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let (from, to) = (today.yesterday().unwrap().to_string(), today.tomorrow().unwrap().to_string());
    let boosted = ok(&["user", "boost", "ann", "2", "--from", &from, "--to", &to, "--reason", "launch"]);
    assert!(boosted.contains("ann: boost +2") && boosted.contains("(launch)"), "{boosted}");

    for (args, says) in [
        (&["plan", "create", "Team", "3"][..], "name"),
        (&["plan", "create", "team", "3"][..], "already"),
        (&["plan", "create", "x", "-1"][..], "daily_limit"),
        (&["plan", "create", "x", "1", "--adapt", "1,2"][..], "adapt"),
        (&["plan", "set", "nope", "3"][..], "no plan"),
        (&["user", "set-plan", "ann", "nope"][..], "plan"),
        (&["user", "set-plan", "bob", "team"][..], "no user"),
        (&["user", "boost", "ann", "0", "--from", &from, "--to", &to][..], "extra"),
        (&["user", "boost", "ann", "1", "--from", &to, "--to", &from][..], "to"),
    ] {
        let (success, _, stderr) = cli(dir.path(), args, "");
        assert!(!success, "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // The server enforces what the commands set: the plan's 4 and the boost's 2.
    let q = Quotask::start(dir.path()).await;
    let client = reqwest::Client::new();
    let body = json!({"username": "ann", "password": PASSWORD});
    let res = client.post(format!("{}/v1/auth/signin", q.base)).json(&body).send().await.unwrap();
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let quota: Value =
        client.get(format!("{}/v1/me/quota", q.base)).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&quota["limit"], &quota["limit_source"], &quota["plan"], &quota["boost"]),
        (&json!(6), &json!("plan"), &json!("team"), &json!(2))
    );
    // Taken off the plan from the command line while the server runs: enforced at once.
    assert!(ok(&["user", "set-plan", "ann", "none"]).contains("ann: plan none"));
    let quota: Value =
        client.get(format!("{}/v1/me/quota", q.base)).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!((&quota["limit_source"], &quota["plan"]), (&json!("default"), &Value::Null));
}
