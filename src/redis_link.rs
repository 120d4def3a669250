//! The link to Redis, which holds only what instances share (sign-in failure counts,
//! live events, the periodic jobs' lock) and never anything correctness needs: the quota
//! lives in the database.
//!
//! Every call is bounded by `CALL_TIMEOUT`. The first failure marks Redis down (logged
//! once, counted in metrics); while it is down calls fail at once, so callers fall back to
//! what one instance can do alone without waiting on Redis each time. A probe pings it in
//! the background, and the first answer brings it back for everyone.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};

use crate::config::RedisSettings;

/// The most any Redis call may take (docs/reliability.md, "Redis outage").
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a down Redis is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

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
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    /// False from a failed call until a probe gets an answer.
    up: AtomicBool,
}

impl RedisLink {
    /// Prepares the connection without opening it, so that start-up never waits for
    /// Redis (and never fails because of it).
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
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
        metrics::gauge!(crate::metrics::REDIS_UP).set(1.0);
        Ok(RedisLink(Arc::new(Inner { client, conn, prefix: settings.prefix.clone(), up: AtomicBool::new(true) })))
    }

    /// `name` in this deployment's key space.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.0.prefix)
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// Whether the last call (or probe) got an answer.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Runs `f` on the shared connection within `CALL_TIMEOUT`, or fails at once while
    /// Redis is known to be down. `op` names the call in metrics and logs.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
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

/// Pings until Redis answers, then marks it up. Holds only a weak reference, so it ends
/// with the application.
async fn probe(link: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(inner) = link.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let ping = redis::cmd("PING");
        if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
            inner.up.store(true, Ordering::Release);
            metrics::gauge!(crate::metrics::REDIS_UP).set(1.0);
            tracing::info!("Redis is back: shared throttling, events and job locks resume");
            return;
        }
    }
}
