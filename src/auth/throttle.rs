//! Throttling: attempts counted per key (an account, a client address) in one-hour
//! windows that start at a key's first attempt. Past the limit, attempts for that key
//! are refused before any work is done. Sign-in counts failed evaluations (OWASP ASVS
//! 2.2.1), sign-up counts sign-ups per client address; each is a `Throttle` of its own.
//!
//! With Redis the counts are shared, so attempts spread over instances are limited as
//! one; one Lua script checks and counts every key of an attempt atomically. Without
//! Redis, or while it is unavailable, each instance counts alone (see `redis_link`).
//!
//! The in-memory counts are bounded (`MAX_KEYS`). When full, expired windows go first,
//! then the keys with the fewest attempts (the oldest window among equals). Evicting
//! the least recently used instead would let anyone erase a key at its limit, their
//! own included, by sending attempts under enough new keys; here that needs `MAX_KEYS`
//! keys each with at least as many attempts, every one of them counted and refused in
//! its turn by the same limits. What eviction forgets is a few attempts of keys far
//! from any limit.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use jiff::Timestamp;

use crate::redis_link::{Lua, RedisLink};

const WINDOW_SECS: i64 = 3600;
/// Keys counted in memory at most, per throttle: 10 to 20 MiB at worst (a key is a
/// prefix and a username of at most 32 characters, or an address).
const MAX_KEYS: usize = 100_000;

/// Refuses (with the seconds to wait) if any key is at the limit, else counts one
/// evaluation against every key. A window is a hash {s: start, n: count}; Redis expires
/// it with the window, so abandoned keys cost nothing. `now` comes from the caller's
/// clock, like the in-memory counts, so both behave the same.
static ACQUIRE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
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
static REFUND: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
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
    /// What is counted (`signin`, `signup`): the Redis keys' prefix and the metrics' label.
    scope: &'static str,
    limit: u32,
    max_keys: usize,
    /// Per key: the window's start (unix seconds) and the attempts counted in it.
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
    /// At most `limit` attempts per key and hour, counted under `scope`.
    pub fn new(scope: &'static str, limit: u32, shared: Option<RedisLink>) -> Self {
        Self { scope, limit, max_keys: MAX_KEYS, local: Mutex::default(), shared }
    }

    /// Counts one attempt against every key in advance, or refuses with the seconds to
    /// wait. Counting before the work is done keeps the bound exact under concurrent
    /// attempts; `refund` takes the count back from an attempt that does not count (a
    /// sign-in with the right password).
    pub async fn acquire(&self, keys: Vec<String>, now: Timestamp) -> Result<Counted, u64> {
        if let Some(redis) = &self.shared {
            let args = (now.as_second(), WINDOW_SECS, self.limit);
            let redis_keys: Vec<String> = keys.iter().map(|k| redis.key(&format!("{}:{k}", self.scope))).collect();
            let counted = redis
                .call("throttle", |mut conn| async move {
                    ACQUIRE.run::<i64>(&mut conn, &redis_keys, &[args.0, args.1, i64::from(args.2)]).await
                })
                .await;
            match counted {
                Ok(0) => return Ok(Counted { keys, in_redis: true }),
                Ok(wait) => return Err(u64::try_from(wait).unwrap_or(1)),
                Err(_) => metrics::counter!(crate::metrics::THROTTLE_FALLBACKS, "throttle" => self.scope).increment(1),
            }
        }
        self.acquire_local(&keys, now.as_second())?;
        Ok(Counted { keys, in_redis: false })
    }

    /// Takes back attempts that turned out not to count.
    pub async fn refund(&self, counted: Counted) {
        if counted.in_redis
            && let Some(redis) = &self.shared
        {
            let keys: Vec<String> = counted.keys.iter().map(|k| redis.key(&format!("{}:{k}", self.scope))).collect();
            // If Redis went away meanwhile, the count stays: it errs on the safe side.
            let _ =
                redis.call("throttle", |mut conn| async move { REFUND.run::<i64>(&mut conn, &keys, &[]).await }).await;
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
        for key in keys {
            if let Some((start, count)) = windows.get(key)
                && now < start + WINDOW_SECS
                && *count >= self.limit
            {
                return Err(u64::try_from(start + WINDOW_SECS - now).unwrap_or(1).max(1));
            }
        }
        if windows.len() + keys.len() > self.max_keys {
            make_room(&mut windows, self.max_keys, now);
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

/// Brings `windows` down to nine tenths of `max_keys` (so that this work is done once
/// per tenth of new keys): expired windows first, then the fewest attempts, older
/// windows before newer among equals (see the module's notes).
fn make_room(windows: &mut HashMap<String, (i64, u32)>, max_keys: usize, now: i64) {
    windows.retain(|_, (start, _)| now < *start + WINDOW_SECS);
    let keep = max_keys - max_keys / 10;
    if windows.len() <= keep {
        return;
    }
    let mut ranked: Vec<(u32, i64, &String)> =
        windows.iter().map(|(key, (start, count))| (*count, *start, key)).collect();
    let evict = ranked.len() - keep;
    ranked.select_nth_unstable(evict - 1);
    let evicted: Vec<String> = ranked[..evict].iter().map(|(_, _, key)| (*key).clone()).collect();
    for key in evicted {
        windows.remove(&key);
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
        let throttle = Throttle::new("test", 2, None);
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
        let throttle = Throttle::new("test", 1, None);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let counted = throttle.acquire(keys(&["a"]), t0).await.unwrap();
        throttle.refund(counted).await;
        assert!(throttle.acquire(keys(&["a"]), t0).await.is_ok());
    }

    #[tokio::test]
    async fn an_attempt_refused_for_one_key_counts_against_none() {
        let throttle = Throttle::new("test", 1, None);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(throttle.acquire(keys(&["ip"]), t0).await.is_ok());
        assert!(throttle.acquire(keys(&["user", "ip"]), t0).await.is_err());
        assert!(throttle.acquire(keys(&["user"]), t0).await.is_ok(), "the refused attempt left user uncounted");
    }

    #[tokio::test]
    async fn a_full_map_forgets_the_fewest_attempts_so_a_flood_of_new_keys_frees_no_one() {
        let throttle = Throttle { max_keys: 100, ..Throttle::new("test", 3, None) };
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for _ in 0..3 {
            let _ = throttle.acquire(keys(&["attacker"]), t0).await.unwrap();
        }
        let _ = throttle.acquire(keys(&["two"]), t0).await.unwrap();
        let _ = throttle.acquire(keys(&["two"]), t0).await.unwrap();

        // Many more keys than fit, each with one attempt.
        for i in 0..1000 {
            let _ = throttle.acquire(vec![format!("flood{i}")], t0).await.unwrap();
        }

        assert!(throttle.local.lock().unwrap().len() <= 100, "the map stays within its bound");
        assert_eq!(throttle.acquire(keys(&["attacker"]), t0).await.err(), Some(3600), "still at its limit");
        assert!(throttle.acquire(keys(&["two"]), t0).await.is_ok());
        assert!(throttle.acquire(keys(&["two"]), t0).await.is_err(), "two attempts were still counted");
    }

    #[tokio::test]
    async fn a_full_map_forgets_expired_windows_before_live_ones() {
        let throttle = Throttle { max_keys: 10, ..Throttle::new("test", 2, None) };
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for i in 0..9 {
            let _ = throttle.acquire(vec![format!("old{i}")], t0).await.unwrap();
        }
        let later: Timestamp = "2026-01-01T00:59:00Z".parse().unwrap();
        let _ = throttle.acquire(keys(&["live"]), later).await.unwrap();
        let after_the_first_window: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();

        let _ = throttle.acquire(keys(&["new"]), after_the_first_window).await.unwrap();

        assert_eq!(throttle.local.lock().unwrap().len(), 2, "the nine expired windows were dropped");
        assert!(throttle.acquire(keys(&["live"]), after_the_first_window).await.is_ok());
        assert!(throttle.acquire(keys(&["live"]), after_the_first_window).await.is_err(), "live kept its count");
    }

    /// The limit is written twice, as the Lua script that Redis runs atomically and as
    /// its in-memory fallback; this runs both through one sequence of attempts, refunds
    /// and hours, and they must answer alike.
    #[tokio::test]
    #[ignore = "needs Redis at 127.0.0.1:6379"]
    async fn the_redis_script_and_the_in_memory_fallback_answer_alike() {
        let url = std::env::var("QUOTASK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!("t{:016x}:", rand::random::<u64>());
        let redis = RedisLink::new(&crate::config::RedisSettings { url, prefix }).unwrap();
        let (shared, local) = (Throttle::new("test", 3, Some(redis)), Throttle::new("test", 3, None));
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |secs: i64| t0.checked_add(jiff::SignedDuration::from_secs(secs)).unwrap();
        // (seconds after t0, keys, refund the attempt if it was counted)
        let steps: &[(i64, &[&str], bool)] = &[
            (0, &["a"], false),
            (1, &["a", "b"], false),
            (2, &["a"], true),
            (3, &["a", "b"], false),
            (4, &["a"], false),
            (5, &["b"], false),
            (6, &["a", "c"], false),
            (3599, &["a"], false),
            (3600, &["a"], false),
            (3601, &["a", "b"], true),
            (3602, &["b"], false),
            (7300, &["b", "c"], false),
        ];
        for &(secs, names, refund) in steps {
            let (one, two) = (shared.acquire(keys(names), at(secs)).await, local.acquire(keys(names), at(secs)).await);
            let answers = (one.as_ref().err().copied(), two.as_ref().err().copied());
            assert_eq!(answers.0, answers.1, "at +{secs}s for {names:?}");
            if let (Ok(one), Ok(two)) = (one, two) {
                assert!(one.in_redis, "Redis answered");
                if refund {
                    shared.refund(one).await;
                    local.refund(two).await;
                }
            }
        }
    }
}
