//! Periodic jobs: once an hour, prune what no rule can need again (old quota counters,
//! dead refresh tokens, idempotency keys past their 24 hours), then apply the adaptive
//! plans' rules to the users not looked at on their current local day yet (each change
//! starts on the user's next local day). Nothing here is needed for the quota's
//! correctness; the quota never waits for a job (its day is part of its key).
//!
//! Each period's run happens on exactly one instance: the first to claim the period
//! runs, the others skip it. With Redis the claim is a key set with `NX` and an expiry of
//! one period; without Redis it is kept in the database (under a PostgreSQL advisory
//! lock). While a configured Redis is unavailable, runs wait for it (and retry), rather
//! than risk running everywhere at once.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng as _;

use crate::clock::Clock;
use crate::config::JobSettings;
use crate::domain::limits::ADAPT_BATCH;
use crate::domain::prune::{self, Prune, PruneStep, Pruned};
use crate::redis_link::RedisLink;
use crate::store::{Store, StoreError};

/// How often the jobs run.
pub const PERIOD_SECS: i64 = 3600;
/// When a run could not happen (Redis or the database unavailable), the next try.
const RETRY: Duration = Duration::from_secs(60);
/// Instances wake at a random moment this long after a period begins, which spreads the
/// claims (only one of them runs anyway).
const JITTER_SECS: u64 = 60;

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This instance claimed the period and pruned.
    Ran(Pruned),
    /// Another instance has this period.
    Claimed,
    /// Redis is configured but unavailable: no claim is possible, so nothing ran.
    Waiting,
}

#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn Store>,
    redis: Option<RedisLink>,
    usage_retention_days: u32,
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>, redis: Option<RedisLink>, settings: &JobSettings) -> Self {
        Jobs { store, redis, usage_retention_days: settings.usage_retention_days }
    }

    /// Runs the jobs of the period containing `now`, unless another instance has claimed
    /// it. The scheduler calls this; tests call it directly.
    pub async fn run_once(&self, now: Timestamp) -> Result<Outcome, StoreError> {
        let period = now.as_second().div_euclid(PERIOD_SECS);
        let outcome = self.claim_and_prune(now, period).await;
        let label = match &outcome {
            Ok(Outcome::Ran(pruned)) => {
                tracing::info!(
                    period,
                    usage = pruned.usage,
                    refresh_tokens = pruned.refresh_tokens,
                    sessions = pruned.sessions,
                    idempotency_keys = pruned.idempotency_keys,
                    "periodic pruning ran"
                );
                for (what, n) in [
                    ("usage", pruned.usage),
                    ("refresh_tokens", pruned.refresh_tokens),
                    ("sessions", pruned.sessions),
                    ("idempotency_keys", pruned.idempotency_keys),
                ] {
                    metrics::counter!(crate::metrics::JOB_PRUNED, "what" => what).increment(n);
                }
                "ran"
            }
            Ok(Outcome::Claimed) => {
                tracing::debug!(period, "periodic pruning: another instance has this period");
                "claimed_elsewhere"
            }
            Ok(Outcome::Waiting) => {
                tracing::info!(period, "periodic pruning waits: Redis unavailable");
                "waiting"
            }
            Err(e) => {
                tracing::warn!(period, error = %e, "periodic pruning failed");
                "failed"
            }
        };
        metrics::counter!(crate::metrics::JOB_RUNS, "outcome" => label).increment(1);
        outcome
    }

    async fn claim_and_prune(&self, now: Timestamp, period: i64) -> Result<Outcome, StoreError> {
        let claimed = match &self.redis {
            Some(redis) => {
                let key = redis.key(&format!("jobs:prune:{period}"));
                let set = redis
                    .call("job_lock", |mut conn| async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(std::process::id())
                            .arg("NX")
                            .arg("PX")
                            .arg(PERIOD_SECS * 1000)
                            .query_async::<Option<String>>(&mut conn)
                            .await
                    })
                    .await;
                match set {
                    Ok(reply) => reply.is_some(),
                    Err(_) => return Ok(Outcome::Waiting),
                }
            }
            None => self.store.claim_job_period("prune", period).await?,
        };
        if !claimed {
            return Ok(Outcome::Claimed);
        }
        let pruned = self.prune(Prune::at(now, self.usage_retention_days)).await?;
        let adapted = self.adapt(now).await?;
        if adapted > 0 {
            tracing::info!(adapted, "adaptive plans changed limits from the users' next local day");
        }
        Ok(Outcome::Ran(pruned))
    }

    /// Applies the adaptive plans' rules at `now` to every user on one, in batches of
    /// `ADAPT_BATCH` (each a short write of its own); how many limits changed. A user is
    /// looked at once per local day, so running it again in the same hour changes
    /// nothing. The claimed period's instance runs it; tests call it directly.
    pub async fn adapt(&self, now: Timestamp) -> Result<u32, StoreError> {
        let (mut after, mut changed) = (None, 0);
        loop {
            let (last, n) = self.store.adapt_step(after, ADAPT_BATCH, now).await?;
            changed += n;
            match last {
                Some(id) => after = Some(id),
                None => break,
            }
        }
        metrics::counter!(crate::metrics::LIMITS_ADAPTED).increment(u64::from(changed));
        Ok(changed)
    }

    /// Runs each step of `rules` in order, each in batches until a short one comes back.
    async fn prune(&self, rules: Prune) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        for step in PruneStep::ORDER {
            loop {
                let deleted = self.store.prune_step(step, &rules, prune::BATCH).await?;
                pruned.add(step, deleted);
                if deleted < prune::BATCH {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// Runs the jobs now and then once per period, until the runtime ends.
    pub fn spawn(self, clock: Arc<dyn Clock>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut wait = jitter();
            loop {
                tokio::time::sleep(wait).await;
                let now = clock.now();
                wait = match self.run_once(now).await {
                    Ok(Outcome::Ran(_) | Outcome::Claimed) => until_next_period(now) + jitter(),
                    Ok(Outcome::Waiting) | Err(_) => RETRY,
                };
            }
        })
    }
}

/// Time from `now` to the start of the next period.
fn until_next_period(now: Timestamp) -> Duration {
    Duration::from_secs((PERIOD_SECS - now.as_second().rem_euclid(PERIOD_SECS)).unsigned_abs())
}

fn jitter() -> Duration {
    Duration::from_millis(rand::rng().random_range(0..JITTER_SECS * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_at_the_start_of_the_next_period() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(until_next_period(at("2026-06-15T12:00:00Z")), Duration::from_secs(3600));
        assert_eq!(until_next_period(at("2026-06-15T12:59:30Z")), Duration::from_secs(30));
    }
}
