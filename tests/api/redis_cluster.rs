//! A Redis Cluster of three masters (no replicas), started by the test on free loopback
//! ports: two instances share sign-in throttling, events and job claims through it as
//! through one server, and when the master that holds the deployment's slot is killed
//! they go on alone, answering correctly and promptly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quotask::clock::Clock as _;
use quotask::config::RedisSettings;
use quotask::jobs::Outcome;
use reqwest::StatusCode;

use crate::helpers::PASSWORD;
use crate::redis_harness::{EventStream, instances, until_redis_is_up, until_relaying};
use crate::redis_outage::{sign_in_from, trusting_localhost};

/// Runs the test `$name` on both stores, both ignored unless asked for, like the other
/// Redis tests: they need `redis-server` and `redis-cli` on the PATH.
macro_rules! with_cluster_on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            #[ignore = "needs redis-server and redis-cli (7 or later) on the PATH"]
            async fn on_sqlite() {
                $crate::helpers::run_on($crate::helpers::Db::Sqlite, super::$name()).await;
            }

            #[tokio::test]
            #[ignore = "needs redis-server and redis-cli (7 or later) on the PATH, and PostgreSQL"]
            async fn on_postgres() {
                $crate::helpers::run_on($crate::helpers::Db::Postgres, super::$name()).await;
            }
        }
    };
}

/// Three cluster masters owned by the test: killed (SIGKILL) and reaped when dropped,
/// even if the test panics, with their files in a temporary directory.
struct TestCluster {
    dir: tempfile::TempDir,
    nodes: Vec<(u16, Option<Child>)>,
}

/// A port that is free, and whose cluster bus port (10000 above) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Three distinct ports for a cluster's nodes.
fn free_ports() -> [u16; 3] {
    loop {
        let ports = [free_port_pair(), free_port_pair(), free_port_pair()];
        if ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2] {
            return ports;
        }
    }
}

fn cluster_url(ports: &[u16]) -> String {
    ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output();
    String::from_utf8_lossy(&out.expect("redis-cli runs").stdout).into_owned()
}

impl TestCluster {
    async fn start() -> TestCluster {
        Self::start_on(free_ports()).await
    }

    async fn start_on(ports: [u16; 3]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = TestCluster { nodes: Vec::new(), dir };
        for port in ports {
            let child = spawn_node(cluster.dir.path(), port);
            cluster.nodes.push((port, Some(child)));
        }
        for &(port, _) in &cluster.nodes {
            cluster.until(port, &["ping"], "PONG").await;
        }
        let addrs: Vec<String> = cluster.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        let create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create runs");
        assert!(create.success(), "the cluster is created");
        for &(port, _) in &cluster.nodes {
            cluster.until(port, &["cluster", "info"], "cluster_state:ok").await;
        }
        cluster
    }

    async fn until(&self, port: u16, args: &[&str], says: &str) {
        for _ in 0..200 {
            if cli(port, args).contains(says) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {port} did not say {says:?} to {args:?}");
    }

    fn url(&self) -> String {
        cluster_url(&self.nodes.iter().map(|(port, _)| *port).collect::<Vec<_>>())
    }

    /// The slot of every key with `prefix` as its hash tag, and the port of its master.
    fn owner(&self, prefix: &str) -> (u16, u16) {
        let port = self.nodes[0].0;
        let slot: u16 = cli(port, &["cluster", "keyslot", &format!("{{{prefix}}}events")]).trim().parse().unwrap();
        for line in cli(port, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let node_port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &fields[8..] {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                if (from.parse::<u16>().unwrap()..=to.parse::<u16>().unwrap()).contains(&slot) {
                    return (slot, node_port);
                }
            }
        }
        panic!("no master owns slot {slot}");
    }

    /// Keys held by the master on `port`, in all and in `slot`.
    fn keys(&self, port: u16, slot: u16) -> (u64, u64) {
        let all = cli(port, &["dbsize"]).trim().parse().unwrap();
        let in_slot = cli(port, &["cluster", "countkeysinslot", &slot.to_string()]).trim().parse().unwrap();
        (all, in_slot)
    }

    /// Starts the node on `port` again, with the node file it left (its identity and
    /// slots), and waits until the cluster is whole.
    async fn restart(&mut self, port: u16) {
        let child = spawn_node(self.dir.path(), port);
        self.nodes.iter_mut().find(|(p, _)| *p == port).unwrap().1 = Some(child);
        for &(port, _) in &self.nodes {
            self.until(port, &["cluster", "info"], "cluster_state:ok").await;
        }
    }

    fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|(p, _)| *p == port).unwrap();
        if let Some(mut child) = node.1.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

fn spawn_node(dir: &Path, port: u16) -> Child {
    let config: PathBuf = dir.join(format!("nodes-{port}.conf"));
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--cluster-config-file"])
        .arg(&config)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (is it on the PATH?)")
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

with_cluster_on_both_stores!(
    instances_share_throttling_events_and_job_claims_through_a_cluster_and_go_on_alone_without_it
);
async fn instances_share_throttling_events_and_job_claims_through_a_cluster_and_go_on_alone_without_it() {
    let mut cluster = TestCluster::start().await;
    let prefix = format!("t:{:016x}:", rand::random::<u64>());
    let redis = RedisSettings { url: cluster.url(), prefix: prefix.clone() };
    let [a, b] = instances(|s| trusting_localhost(s, &redis, 3)).await;
    let apps = [&a, &b];
    until_relaying(&apps).await;
    assert!(a.state.redis.as_ref().unwrap().is_cluster());

    // Failed sign-ins through one instance count on the other.
    a.sign_up("eve").await;
    for i in 0..3 {
        assert_eq!(sign_in_from(&a, "eve", "wrong", &format!("10.1.0.{i}")).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sign_in_from(&b, "eve", PASSWORD, "10.1.1.1").await.0, StatusCode::TOO_MANY_REQUESTS);

    // An event published on one instance reaches a stream on the other.
    let ann = a.user("ann").await;
    let mut stream = EventStream::open(&b, &ann.access).await;
    assert_eq!(a.create_task(&ann, "from a").await.status(), StatusCode::CREATED);
    let event = stream.next(Duration::from_secs(3)).await.expect("a's event, through the cluster");
    assert_eq!((event.event.as_str(), &event.data["content"]), ("task.created", &"from a".into()));

    // One period's job claim goes to exactly one instance.
    let now = a.clock.now();
    let (one, two) = futures::future::join(a.state.jobs.run_once(now), b.state.jobs.run_once(now)).await;
    let outcomes = [one.unwrap(), two.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::Ran(_))).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Claimed).count(), 1, "{outcomes:?}");

    // Every key of the deployment is in the slot of its hash tag, on one master.
    let (slot, owner) = cluster.owner(&prefix);
    let (all, in_slot) = cluster.keys(owner, slot);
    assert!(in_slot >= 2, "the throttle's and the job's keys: {in_slot}");
    assert_eq!(all, in_slot, "nothing of this deployment elsewhere on its master");
    for &(port, _) in cluster.nodes.iter().filter(|(port, _)| *port != owner) {
        assert_eq!(cluster.keys(port, slot).1, 0, "node {port} holds none of them");
    }

    // The master holding that slot dies: each instance counts alone, promptly, no 5xx.
    cluster.kill(owner);
    a.sign_up("erin").await;
    for app in apps {
        for i in 0..3 {
            let (status, took) = sign_in_from(app, "erin", "wrong", &format!("10.2.0.{i}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", app.base);
            assert!(took < Duration::from_secs(2), "sign-in took {took:?}");
        }
        let (status, took) = sign_in_from(app, "erin", PASSWORD, "10.2.1.1").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "counted alone on {}", app.base);
        assert!(took < Duration::from_secs(2), "sign-in took {took:?}");
    }
    for app in apps {
        let started = Instant::now();
        assert_eq!(app.create_task(&ann, "without the cluster").await.status(), StatusCode::CREATED);
        assert!(started.elapsed() < Duration::from_secs(2), "create took {:?}", started.elapsed());
        assert!(!app.state.redis.as_ref().unwrap().is_up());
    }
    assert_eq!(a.state.jobs.run_once(a.clock.now()).await.unwrap(), Outcome::Waiting);
    let mut local = EventStream::open(&a, &ann.access).await;
    let started = Instant::now();
    assert_eq!(a.create_task(&ann, "local").await.status(), StatusCode::CREATED);
    assert_eq!(local.next(Duration::from_secs(2)).await.unwrap().data["content"], "local", "events stay local");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The master comes back (same port, same node file, so the same slots): the probe
    // sees the slot served again, and the instances share once more.
    cluster.restart(owner).await;
    until_redis_is_up(&apps, Duration::from_secs(10)).await;
    until_relaying(&apps).await;
    a.sign_up("frank").await;
    for i in 0..3 {
        let app = apps[i % 2];
        assert_eq!(sign_in_from(app, "frank", "wrong", &format!("10.3.0.{i}")).await.0, StatusCode::UNAUTHORIZED);
    }
    for app in apps {
        let shared = sign_in_from(app, "frank", PASSWORD, "10.3.1.1").await.0;
        assert_eq!(shared, StatusCode::TOO_MANY_REQUESTS, "limited as one again ({})", app.base);
    }
    let bob = a.user("bob").await;
    let mut stream = EventStream::open(&b, &bob.access).await;
    assert_eq!(a.create_task(&bob, "after the restart").await.status(), StatusCode::CREATED);
    let event = stream.next(Duration::from_secs(3)).await.expect("events cross again");
    assert_eq!(event.data["content"], "after the restart");
}

with_cluster_on_both_stores!(losing_a_master_without_the_deployments_slot_keeps_every_answer_right_and_prompt);
async fn losing_a_master_without_the_deployments_slot_keeps_every_answer_right_and_prompt() {
    let mut cluster = TestCluster::start().await;
    let prefix = format!("t:{:016x}:", rand::random::<u64>());
    let redis = RedisSettings { url: cluster.url(), prefix: prefix.clone() };
    let [a, b] = instances(|s| trusting_localhost(s, &redis, 3)).await;
    let apps = [&a, &b];
    until_relaying(&apps).await;
    let (_, owner) = cluster.owner(&prefix);
    let other = cluster.nodes.iter().map(|(port, _)| *port).find(|port| *port != owner).unwrap();
    let admin = a.admin("root").await;
    let ann_id = a.sign_up("ann").await["id"].as_str().unwrap().to_owned();
    assert_eq!(a.set_limit(&admin, &ann_id, 100).await.status(), StatusCode::OK);
    let ann = a.sign_in("ann").await;

    // The deployment's slot stays served until the cluster declares the lost master
    // failed (the nodes' timeout, 1 s here); from then on the cluster refuses every
    // command and the instances go on alone. Throughout, answers are right and prompt.
    cluster.kill(other);
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(3) || apps.iter().any(|app| app.state.redis.as_ref().unwrap().is_up())
    {
        assert!(started.elapsed() < Duration::from_secs(10), "the cluster's failure was never noticed");
        let user = format!("user{round}");
        a.sign_up(&user).await;
        for (i, app) in apps.iter().enumerate() {
            let (status, took) = sign_in_from(app, &user, "wrong", &format!("10.4.{round}.{i}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", app.base);
            assert!(took < Duration::from_secs(2), "sign-in took {took:?}");
        }
        let (status, took) = sign_in_from(apps[round % 2], &user, PASSWORD, &format!("10.4.{round}.9")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(took < Duration::from_secs(2), "sign-in took {took:?}");
        let begun = Instant::now();
        assert_eq!(apps[round % 2].create_task(&ann, &format!("t{round}")).await.status(), StatusCode::CREATED);
        assert!(begun.elapsed() < Duration::from_secs(2), "create took {:?}", begun.elapsed());
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cli(owner, &["cluster", "info"]).contains("cluster_state:fail"));
    assert_eq!(a.state.jobs.run_once(a.clock.now()).await.unwrap(), Outcome::Waiting);
}

with_cluster_on_both_stores!(instances_started_before_their_cluster_serve_alone_then_share_once_it_is_up);
async fn instances_started_before_their_cluster_serve_alone_then_share_once_it_is_up() {
    let ports = free_ports();
    let redis = RedisSettings { url: cluster_url(&ports), prefix: format!("t:{:016x}:", rand::random::<u64>()) };
    let [a, b] = instances(|s| trusting_localhost(s, &redis, 2)).await;
    let apps = [&a, &b];
    a.sign_up("eve").await;
    for app in apps {
        for i in 0..2 {
            let (status, took) = sign_in_from(app, "eve", "wrong", &format!("10.5.0.{i}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "counted alone on {}", app.base);
            assert!(took < Duration::from_secs(2), "sign-in took {took:?}");
        }
    }

    let _cluster = TestCluster::start_on(ports).await;
    until_redis_is_up(&apps, Duration::from_secs(10)).await;
    until_relaying(&apps).await;
    a.sign_up("mallory").await;
    assert_eq!(sign_in_from(&a, "mallory", "wrong", "10.6.0.1").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_from(&b, "mallory", "wrong", "10.6.0.2").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_from(&a, "mallory", PASSWORD, "10.6.0.3").await.0, StatusCode::TOO_MANY_REQUESTS);
    let ann = a.user("ann").await;
    let mut stream = EventStream::open(&b, &ann.access).await;
    assert_eq!(a.create_task(&ann, "once the cluster is up").await.status(), StatusCode::CREATED);
    assert_eq!(stream.next(Duration::from_secs(3)).await.unwrap().data["content"], "once the cluster is up");
}

/// One Redis server (not a cluster) owned by the test, on a free port.
struct TestServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it on the PATH?)");
        let server = TestServer { port, child, _dir: dir };
        for _ in 0..200 {
            if cli(port, &["ping"]).contains("PONG") {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {port} did not answer");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median, 99th percentile and slowest of `samples`, in microseconds.
fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_micros();
    format!("p50 {} µs, p99 {} µs, max {} µs ({} samples)", at(0.5), at(0.99), at(1.0), samples.len())
}

/// Sign-in throttle calls (the Lua script over an account's and an address's keys) and
/// event delivery between two hubs (publish on one, received by a stream on the other),
/// each timed one at a time, on `url`.
async fn measure(url: &str) -> (String, String) {
    use quotask::auth::throttle::Throttle;
    use quotask::events::{Events, Item, Kind, STREAM_LIFETIME};
    use quotask::redis_link::RedisLink;

    let settings = RedisSettings { url: url.to_owned(), prefix: format!("m:{:016x}:", rand::random::<u64>()) };
    let link = RedisLink::new(&settings).unwrap();
    let throttle = Throttle::new("signin", u32::MAX, Some(link.clone()));
    let now = jiff::Timestamp::now();
    let mut calls = Vec::new();
    for i in 0..2_100 {
        let keys = vec![format!("user:u{}", i % 100), format!("ip:10.0.0.{}", i % 7)];
        let started = Instant::now();
        let counted = throttle.acquire(keys, now).await;
        let took = started.elapsed();
        assert!(counted.is_ok());
        if i >= 100 {
            calls.push(took); // after a warm-up (connections, the script loaded)
        }
    }
    assert!(link.is_up(), "every call was answered by Redis");

    let (one, two) = (Events::new(Some(link), 10), Events::new(Some(RedisLink::new(&settings).unwrap()), 10));
    two.start_relay();
    for _ in 0..500 {
        if two.relaying() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let user = uuid::Uuid::now_v7();
    let mut stream = two.subscribe(user, STREAM_LIFETIME).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..550 {
        let started = Instant::now();
        one.publish(user, Kind::TaskCreated, || i);
        let item = tokio::time::timeout(Duration::from_secs(2), stream.next()).await.expect("delivered");
        let took = started.elapsed();
        assert!(matches!(item, Some(Item::Event(event)) if event.data == i.to_string()));
        if i >= 50 {
            deliveries.push(took);
        }
    }
    (summary(calls), summary(deliveries))
}

/// Not a check: prints what a throttle call and an event's delivery take on one server
/// and on a 3-master cluster, both started here, for docs/adr/0017-redis-cluster.md.
#[tokio::test]
#[ignore = "a measurement: cargo test --test api redis_cluster::measure -- --ignored --nocapture"]
async fn measure_one_server_against_a_cluster() {
    let server = TestServer::start().await;
    let (calls, deliveries) = measure(&format!("redis://127.0.0.1:{}", server.port)).await;
    println!("one server: throttle call {calls}; event delivery {deliveries}");
    drop(server);
    let mut cluster = TestCluster::start().await;
    let (calls, deliveries) = measure(&cluster.url()).await;
    println!("3-master cluster: throttle call {calls}; event delivery {deliveries}");

    // What the death of the deployment's master costs a throttle call: the first one
    // waits for the failure, the next fall back at once.
    use quotask::auth::throttle::Throttle;
    let prefix = format!("m:{:016x}:", rand::random::<u64>());
    let link =
        quotask::redis_link::RedisLink::new(&RedisSettings { url: cluster.url(), prefix: prefix.clone() }).unwrap();
    let throttle = Throttle::new("signin", u32::MAX, Some(link.clone()));
    let now = jiff::Timestamp::now();
    for _ in 0..10 {
        let _ = throttle.acquire(vec!["user:u".into()], now).await.unwrap();
    }
    assert!(link.is_up());
    cluster.kill(cluster.owner(&prefix).1);
    let mut after = Vec::new();
    for _ in 0..101 {
        let started = Instant::now();
        let _ = throttle.acquire(vec!["user:u".into()], now).await.unwrap();
        after.push(started.elapsed());
    }
    assert!(!link.is_up());
    let first = after.remove(0);
    println!("its master killed: first throttle call {} µs, then {}", first.as_micros(), summary(after));
}
