//! Sign-in throttling: failures counted per key (an account, a client address) in
//! fixed one-hour windows. Past the limit, sign-ins for that key are refused before any
//! password is evaluated (OWASP ASVS 2.2.1).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

const WINDOW_SECS: i64 = 3600;
/// Past this many tracked keys, expired windows are swept, keeping memory bounded.
const SWEEP_AT: usize = 100_000;

pub struct Throttle {
    max_failures: u32,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl Throttle {
    pub fn new(max_failures: u32) -> Self {
        Self { max_failures, windows: Mutex::default() }
    }

    /// Counts one evaluation against `key` as a failure in advance, or refuses with the
    /// seconds to wait. Counting before the password is checked keeps the bound exact
    /// under concurrent attempts; `refund` takes the count back on success.
    pub fn try_acquire(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        let now = now.as_second();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now < *start + WINDOW_SECS);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + WINDOW_SECS {
            *entry = (now, 0);
        }
        if entry.1 >= self.max_failures {
            return Err(u64::try_from(entry.0 + WINDOW_SECS - now).unwrap_or(1).max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Takes back an evaluation that turned out not to be a failure.
    pub fn refund(&self, key: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = windows.get_mut(key) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_ends() {
        let throttle = Throttle::new(2);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(throttle.try_acquire("a", t0).is_ok());
        assert!(throttle.try_acquire("a", t0).is_ok());
        assert_eq!(throttle.try_acquire("a", t0), Err(3600));
        assert!(throttle.try_acquire("b", t0).is_ok());
        let later: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        assert!(throttle.try_acquire("a", later).is_ok());
    }

    #[test]
    fn a_refunded_evaluation_does_not_count() {
        let throttle = Throttle::new(1);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(throttle.try_acquire("a", t0).is_ok());
        throttle.refund("a");
        assert!(throttle.try_acquire("a", t0).is_ok());
    }
}
