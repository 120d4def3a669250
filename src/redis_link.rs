//! The link to Redis, which holds only what instances share (sign-in failure counts,
//! live events, the periodic jobs' lock) and never anything correctness needs: the quota
//! lives in the database.
//!
//! Every call is bounded by `CALL_TIMEOUT`. The first failure marks Redis down (logged
//! once, counted in metrics); while it is down calls fail at once, so callers fall back to
//! what one instance can do alone without waiting on Redis each time. A probe pings it in
//! the background, and the first answer brings it back for everyone.
//!
//! `QUOTASK_REDIS_URL` may list several nodes of a Redis Cluster instead of one server;
//! callers do not tell the two apart. On a cluster every key and channel of a deployment
//! shares one hash slot (the prefix is a hash tag, see `key`), events use sharded
//! pub/sub, and the cluster client's own retries are bounded by the same deadline, so a
//! lost node costs one call at most `CALL_TIMEOUT` and then per-instance behaviour, as
//! with one server (docs/adr/0017-redis-cluster.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisSettings;

/// The most any Redis call may take (docs/reliability.md, "Redis outage").
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a down Redis is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// The most a subscription may take to open on a cluster, where it first learns the
/// slots and connects to the node that owns the channel. Only the background subscriber
/// waits for it, never a request.
const CLUSTER_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a Redis call gave nothing; either way the caller falls back.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("Redis is down (a probe will notice when it is back)")]
    Down,
    #[error("Redis call failed: {0}")]
    Failed(String),
}

/// A cheap handle; clones share one connection and one up/down state.
#[derive(Clone)]
pub struct RedisLink(Arc<Inner>);

struct Inner {
    target: Target,
    conn: Conn,
    prefix: String,
    /// False from a failed call until a probe gets an answer.
    up: AtomicBool,
}

/// One Redis server, or a Redis Cluster reached through any of the listed nodes.
enum Target {
    Single(Client),
    /// The nodes as configured: a subscriber opens a connection of its own with them.
    Cluster(Vec<String>),
}

/// The shared connection, to one server or to a cluster (which routes each command to
/// the node that owns its keys' slot). Callers use it alike.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A Lua script, run by its SHA1 (`EVALSHA`) and sent whole (`EVAL`) to a node that does
/// not have it yet. The crate's own `Script::invoke_async` loads a missing script with
/// `SCRIPT LOAD`, which a cluster client sends to every master: one lost master would
/// fail the call even when the master of the script's keys answers.
pub struct Lua {
    source: &'static str,
    hash: String,
}

impl Lua {
    pub fn new(source: &'static str) -> Self {
        Lua { source, hash: redis::Script::new(source).get_hash().to_owned() }
    }

    /// Runs the script over `keys` (on a cluster, all in one slot) with `args`.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        keys: &[String],
        args: &[i64],
    ) -> RedisResult<T> {
        let mut by_hash = redis::cmd("EVALSHA");
        by_hash.arg(&self.hash).arg(keys.len()).arg(keys).arg(args);
        match by_hash.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                redis::cmd("EVAL").arg(self.source).arg(keys.len()).arg(keys).arg(args).query_async(conn).await
            }
            answer => answer,
        }
    }
}

/// The payloads of a subscription's messages; it ends when the subscription is lost.
pub type Messages = Pin<Box<dyn Stream<Item = Vec<u8>> + Send>>;

/// The cluster nodes of a `QUOTASK_REDIS_URL` that lists several (comma-separated), or
/// `None` for one server.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    url.contains(',').then(|| url.split(',').map(|node| node.trim().to_owned()).collect())
}

/// A cluster client with every wait bounded by `CALL_TIMEOUT`: connecting, each answer,
/// and a request as a whole, retries and redirections included. Two quick retries cover
/// a redirection after the slots moved; a node that is gone fails the call, which marks
/// Redis down (see `RedisLink::call`).
pub fn cluster_builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CALL_TIMEOUT)
        .response_timeout(CALL_TIMEOUT)
        .overall_response_timeout(Some(CALL_TIMEOUT))
        .retries(2)
        .min_retry_wait(5)
        .max_retry_wait(20)
}

impl RedisLink {
    /// Prepares the connection without opening it, so that start-up never waits for
    /// Redis (and never fails because of it).
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let (target, conn) = match cluster_nodes(&settings.url) {
            None => {
                let client = Client::open(settings.url.as_str())
                    .map_err(|_| anyhow::anyhow!("QUOTASK_REDIS_URL is not a valid Redis URL"))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CALL_TIMEOUT))
                    .set_response_timeout(Some(CALL_TIMEOUT))
                    // Reconnecting is the probe's business; one quick attempt per call is enough.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(CALL_TIMEOUT);
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                (Target::Single(client), Conn::Single(conn))
            }
            Some(nodes) => {
                let client = cluster_builder(&nodes)
                    .build()
                    .map_err(|_| anyhow::anyhow!("QUOTASK_REDIS_URL is not a valid list of Redis Cluster nodes"))?;
                // Connects in the background: the first calls fail (and fall back) until
                // the cluster answers. The config's timeouts replace the builder's, so
                // they are given again.
                let config =
                    ClusterConfig::new().set_connection_timeout(CALL_TIMEOUT).set_response_timeout(CALL_TIMEOUT);
                let conn = client.get_pending_async_connection_with_config(config);
                (Target::Cluster(nodes), Conn::Cluster(conn))
            }
        };
        metrics::gauge!(crate::metrics::REDIS_UP).set(1.0);
        Ok(RedisLink(Arc::new(Inner { target, conn, prefix: settings.prefix.clone(), up: AtomicBool::new(true) })))
    }

    /// `name` in this deployment's key space. On a cluster the prefix is a hash tag
    /// (`{quotask:}name`), so that every key and channel of the deployment lives in one
    /// slot: a script's keys are always on one node, as a cluster requires. On one
    /// server the names stay as they were (`quotask:name`).
    pub fn key(&self, name: &str) -> String {
        match self.0.target {
            Target::Single(_) => format!("{}{name}", self.0.prefix),
            Target::Cluster(_) => format!("{{{}}}{name}", self.0.prefix),
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0.target, Target::Cluster(_))
    }

    /// Whether the last call (or probe) got an answer.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Runs `f` on the shared connection within `CALL_TIMEOUT`, or fails at once while
    /// Redis is known to be down. `op` names the call in metrics and logs.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Unavailable::Down);
        }
        let why = match tokio::time::timeout(CALL_TIMEOUT, f(self.0.conn.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", CALL_TIMEOUT.as_millis()),
        };
        metrics::counter!(crate::metrics::REDIS_ERRORS, "op" => op).increment(1);
        self.mark_down(op, &why);
        Err(Unavailable::Failed(why))
    }

    /// Publishes `payload` on `channel` (a name from `key`): PUBLISH on one server,
    /// SPUBLISH (sharded pub/sub, delivered by the channel's own node) on a cluster.
    pub async fn publish(&self, channel: String, payload: Vec<u8>) -> Result<(), Unavailable> {
        let command = if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" };
        self.call("publish", |mut conn| async move {
            redis::cmd(command).arg(channel).arg(payload).query_async::<i64>(&mut conn).await
        })
        .await
        .map(drop)
    }

    /// Subscribes to `channel` (a name from `key`) on a connection of its own: SUBSCRIBE
    /// on one server, SSUBSCRIBE on a cluster. The stream ends when the subscription is
    /// lost (a connection closed); the caller subscribes again.
    pub async fn subscribe(&self, channel: &str) -> RedisResult<Messages> {
        match &self.0.target {
            Target::Single(client) => {
                let pubsub = tokio::time::timeout(CALL_TIMEOUT, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await
                .unwrap_or_else(|_| Err(timed_out()))?;
                Ok(pubsub.into_on_message().map(|message| message.get_payload_bytes().to_vec()).boxed())
            }
            Target::Cluster(nodes) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client: ClusterClient =
                    cluster_builder(nodes).use_protocol(redis::ProtocolVersion::RESP3).push_sender(tx).build()?;
                let conn = tokio::time::timeout(CLUSTER_SUBSCRIBE_TIMEOUT, async {
                    let mut conn = client.get_async_connection().await?;
                    conn.ssubscribe(channel).await?;
                    Ok::<_, redis::RedisError>(conn)
                })
                .await
                .unwrap_or_else(|_| Err(timed_out()))?;
                // The connection lives as long as the stream; any closed node connection
                // ends it (the client would resubscribe by itself, but only a fresh
                // subscription says for sure that messages flow again).
                let messages = futures_util::stream::unfold((rx, conn), |(mut rx, conn)| async move {
                    loop {
                        let push = rx.recv().await?;
                        if push.kind == redis::PushKind::Disconnection {
                            return None;
                        }
                        if let Some(message) = redis::Msg::from_push_info(push) {
                            return Some((message.get_payload_bytes().to_vec(), (rx, conn)));
                        }
                    }
                });
                Ok(messages.boxed())
            }
        }
    }

    /// Records a failure seen outside `call` (the event subscriber's connection).
    pub fn mark_down(&self, op: &'static str, why: &str) {
        if self.0.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(op, error = why, "Redis unavailable: throttling per instance, events local, jobs waiting");
            metrics::counter!(crate::metrics::REDIS_OUTAGES).increment(1);
            metrics::gauge!(crate::metrics::REDIS_UP).set(0.0);
            tokio::spawn(probe(Arc::downgrade(&self.0)));
        }
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))
}

/// Pings until Redis answers, then marks it up. Holds only a weak reference, so it ends
/// with the application.
async fn probe(link: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(inner) = link.upgrade() else { return };
        let mut conn = inner.conn.clone();
        // A cluster answers PING from every master, so one lost master would keep the
        // probe failing even if the deployment's slot is served: ask that slot instead.
        let answered = match inner.target {
            Target::Single(_) => {
                let ping = redis::cmd("PING");
                tokio::time::timeout(CALL_TIMEOUT, ping.query_async::<redis::Value>(&mut conn)).await
            }
            Target::Cluster(_) => {
                let exists = redis::cmd("EXISTS").arg(format!("{{{}}}probe", inner.prefix)).clone();
                tokio::time::timeout(CALL_TIMEOUT, exists.query_async::<redis::Value>(&mut conn)).await
            }
        };
        if let Ok(Ok(_)) = answered {
            inner.up.store(true, Ordering::Release);
            metrics::gauge!(crate::metrics::REDIS_UP).set(1.0);
            tracing::info!("Redis is back: shared throttling, events and job locks resume");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(url: &str) -> RedisLink {
        RedisLink::new(&RedisSettings { url: url.to_owned(), prefix: "quotask:".to_owned() }).unwrap()
    }

    #[tokio::test]
    async fn one_server_keeps_its_key_names_and_a_cluster_tags_the_prefix() {
        // Nothing listens on port 1: making a link never connects.
        let single = link("redis://127.0.0.1:1");
        assert!(!single.is_cluster());
        assert_eq!(single.key("signin:user:ann"), "quotask:signin:user:ann");

        let cluster = link("redis://127.0.0.1:1, redis://127.0.0.1:2");
        assert!(cluster.is_cluster());
        assert_eq!(cluster.key("signin:user:ann"), "{quotask:}signin:user:ann");
        assert_eq!(cluster.key("events"), "{quotask:}events");
    }

    #[test]
    fn several_comma_separated_urls_are_a_cluster() {
        assert_eq!(cluster_nodes("redis://h:6379/2"), None);
        assert_eq!(cluster_nodes("redis://a:7000,redis://b:7001").unwrap(), ["redis://a:7000", "redis://b:7001"]);
    }
}
