//! Sign-in throttling: failures counted per key (an account, a client address) in
//! one-hour windows that start at a key's first failure. Past the limit, sign-ins for
//! that key are refused before any password is evaluated (OWASP ASVS 2.2.1).
//!
//! With Redis the counts are shared, so guesses spread over instances are limited as
//! one; one Lua script checks and counts every key of an attempt atomically. Without
//! Redis, or while it is unavailable, each instance counts alone (see `redis_link`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use jiff::Timestamp;
use redis::Script;

use crate::redis_link::RedisLink;

const WINDOW_SECS: i64 = 3600;
/// Past this many tracked keys, expired windows are swept, keeping memory bounded.
const SWEEP_AT: usize = 100_000;

/// Refuses (with the seconds to wait) if any key is at the limit, else counts one
/// evaluation against every key. A window is a hash {s: start, n: count}; Redis expires
/// it with the window, so abandoned keys cost nothing. `now` comes from the caller's
/// clock, like the in-memory counts, so both behave the same.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        for _, key in ipairs(KEYS) do
            local w = redis.call('HMGET', key, 's', 'n')
            local start, count = tonumber(w[1]), tonumber(w[2])
            if start and now < start + window and count and count >= limit then
                return math.max(1, start + window - now)
            end
        end
        for _, key in ipairs(KEYS) do
            local start = tonumber(redis.call('HGET', key, 's'))
            if start and now < start + window then
                redis.call('HINCRBY', key, 'n', 1)
            else
                redis.call('HSET', key, 's', now, 'n', 1)
                redis.call('EXPIRE', key, window)
            end
        end
        return 0",
    )
});

/// Takes back one evaluation from every key that has one.
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        for _, key in ipairs(KEYS) do
            local count = tonumber(redis.call('HGET', key, 'n'))
            if count and count > 0 then
                redis.call('HINCRBY', key, 'n', -1)
            end
        end
        return 0",
    )
});

pub struct Throttle {
    max_failures: u32,
    local: Mutex<HashMap<String, (i64, u32)>>,
    shared: Option<RedisLink>,
}

/// Evaluations counted for one attempt, and where, so that a refund goes to the same
/// counts.
#[must_use = "refund the evaluation if it was not a failure"]
pub struct Counted {
    keys: Vec<String>,
    in_redis: bool,
}

impl Throttle {
    pub fn new(max_failures: u32, shared: Option<RedisLink>) -> Self {
        Self { max_failures, local: Mutex::default(), shared }
    }

    /// Counts one evaluation against every key as a failure in advance, or refuses with
    /// the seconds to wait. Counting before the password is checked keeps the bound exact
    /// under concurrent attempts; `refund` takes the count back on success.
    pub async fn acquire(&self, keys: Vec<String>, now: Timestamp) -> Result<Counted, u64> {
        if let Some(redis) = &self.shared {
            let args = (now.as_second(), WINDOW_SECS, self.max_failures);
            let redis_keys: Vec<String> = keys.iter().map(|k| redis.key(&format!("signin:{k}"))).collect();
            let counted = redis
                .call("throttle", |mut conn| async move {
                    ACQUIRE.key(redis_keys).arg(args.0).arg(args.1).arg(args.2).invoke_async::<i64>(&mut conn).await
                })
                .await;
            match counted {
                Ok(0) => return Ok(Counted { keys, in_redis: true }),
                Ok(wait) => return Err(u64::try_from(wait).unwrap_or(1)),
                Err(_) => metrics::counter!(crate::metrics::THROTTLE_FALLBACKS).increment(1),
            }
        }
        self.acquire_local(&keys, now.as_second())?;
        Ok(Counted { keys, in_redis: false })
    }

    /// Takes back evaluations that turned out not to be failures.
    pub async fn refund(&self, counted: Counted) {
        if counted.in_redis
            && let Some(redis) = &self.shared
        {
            let keys: Vec<String> = counted.keys.iter().map(|k| redis.key(&format!("signin:{k}"))).collect();
            // If Redis went away meanwhile, the count stays: it errs on the safe side.
            let _ = redis
                .call("throttle", |mut conn| async move { REFUND.key(keys).invoke_async::<i64>(&mut conn).await })
                .await;
            return;
        }
        let mut windows = self.local.lock().unwrap_or_else(|e| e.into_inner());
        for key in &counted.keys {
            if let Some(entry) = windows.get_mut(key) {
                entry.1 = entry.1.saturating_sub(1);
            }
        }
    }

    /// The in-memory version of `ACQUIRE`.
    fn acquire_local(&self, keys: &[String], now: i64) -> Result<(), u64> {
        let mut windows = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now < *start + WINDOW_SECS);
        }
        for key in keys {
            if let Some((start, count)) = windows.get(key)
                && now < start + WINDOW_SECS
                && *count >= self.max_failures
            {
                return Err(u64::try_from(start + WINDOW_SECS - now).unwrap_or(1).max(1));
            }
        }
        for key in keys {
            let entry = windows.entry(key.clone()).or_insert((now, 0));
            if now >= entry.0 + WINDOW_SECS {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| (*k).to_owned()).collect()
    }

    #[tokio::test]
    async fn failures_past_the_limit_are_refused_until_the_window_ends() {
        let throttle = Throttle::new(2, None);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(throttle.acquire(keys(&["a"]), t0).await.is_ok());
        assert!(throttle.acquire(keys(&["a"]), t0).await.is_ok());
        assert_eq!(throttle.acquire(keys(&["a"]), t0).await.err(), Some(3600));
        assert!(throttle.acquire(keys(&["b"]), t0).await.is_ok());
        let later: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        assert!(throttle.acquire(keys(&["a"]), later).await.is_ok());
    }

    #[tokio::test]
    async fn a_refunded_evaluation_does_not_count() {
        let throttle = Throttle::new(1, None);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let counted = throttle.acquire(keys(&["a"]), t0).await.unwrap();
        throttle.refund(counted).await;
        assert!(throttle.acquire(keys(&["a"]), t0).await.is_ok());
    }

    #[tokio::test]
    async fn an_attempt_refused_for_one_key_counts_against_none() {
        let throttle = Throttle::new(1, None);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(throttle.acquire(keys(&["ip"]), t0).await.is_ok());
        assert!(throttle.acquire(keys(&["user", "ip"]), t0).await.is_err());
        assert!(throttle.acquire(keys(&["user"]), t0).await.is_ok(), "the refused attempt left user uncounted");
    }
}
