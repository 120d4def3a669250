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
use crate::redis_harness::{EventStream, instances, until_relaying};
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

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output();
    String::from_utf8_lossy(&out.expect("redis-cli runs").stdout).into_owned()
}

impl TestCluster {
    async fn start() -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = TestCluster { nodes: Vec::new(), dir };
        for _ in 0..3 {
            let port = free_port_pair();
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
        self.nodes.iter().map(|(port, _)| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
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
        .args(["--cluster-enabled", "yes", "--cluster-config-file"])
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
    drop(cluster);
}
