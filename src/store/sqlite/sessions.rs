//! The signed-in users of live sessions, kept in memory for a moment.
//!
//! Every authenticated request resolves its session to a user. Under a steady write
//! load that read is dear: each commit empties every reader's page cache, so the
//! lookup reads its pages again (measured with `perf` during creates: 23% of the async
//! workers' CPU). This process makes every change of a session or a user itself,
//! through the store, except `quotask user set-limit` and `user create` run from the
//! command line. So:
//!
//! - a change made through this store is seen at once: it advances `generation` once
//!   committed, and an entry read under an older generation is never used again;
//! - an entry is used for at most `FRESH_FOR`, which bounds how late a change made by
//!   another process (a limit set from the command line) shows in `GET /v1/me`. The
//!   quota itself never depends on an entry: a create reads the limit in the writer's
//!   transaction, and `GET /v1/me/quota` reads it with the day's use.
//!
//! Only what a session resolved to is kept: an unknown or revoked session is read
//! again every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::User;

/// How long an entry may be used.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most; the map starts over when it is full.
const CAPACITY: usize = 65_536;

#[derive(Default)]
pub(super) struct SessionCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    user: User,
    generation: u64,
    read_at: Instant,
}

impl SessionCache {
    /// The user of `session_id` if it is `user_id`'s, known since the last change.
    pub(super) fn get(&self, session_id: Uuid, user_id: Uuid) -> Option<User> {
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&session_id)?;
        let current = entry.generation == generation && entry.read_at.elapsed() < FRESH_FOR;
        (current && entry.user.id == user_id).then(|| entry.user.clone())
    }

    /// To be called before reading a session: what `keep` is to be given after.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what `session_id` resolved to in a read that began at `generation`. If a
    /// change was committed meanwhile the entry is stale from the start, and `get`
    /// will not use it.
    pub(super) fn keep(&self, generation: u64, session_id: Uuid, user: &User) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(session_id, Entry { user: user.clone(), generation, read_at: Instant::now() });
    }

    /// After a committed change to a session or a user: no entry read before is used.
    pub(super) fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, TimeZoneName, UserZone};

    fn user() -> User {
        User {
            id: Uuid::now_v7(),
            username: "ann".into(),
            role: Role::User,
            daily_limit: 5,
            zone: UserZone { current: TimeZoneName::utc(), pending: None },
            created_at: jiff::Timestamp::now(),
        }
    }

    #[test]
    fn an_entry_serves_its_own_session_and_user_only() {
        let cache = SessionCache::default();
        let (ann, session) = (user(), Uuid::now_v7());
        cache.keep(cache.generation(), session, &ann);
        assert_eq!(cache.get(session, ann.id).map(|u| u.id), Some(ann.id));
        assert!(cache.get(session, Uuid::now_v7()).is_none(), "another user's claim on the session");
        assert!(cache.get(Uuid::now_v7(), ann.id).is_none(), "another session");
    }

    #[test]
    fn a_change_makes_every_entry_read_before_it_unusable() {
        let cache = SessionCache::default();
        let (ann, session) = (user(), Uuid::now_v7());
        cache.keep(cache.generation(), session, &ann);
        cache.forget_all();
        assert!(cache.get(session, ann.id).is_none());

        // A read that began before the change and ends after it.
        let began = cache.generation();
        cache.forget_all();
        cache.keep(began, session, &ann);
        assert!(cache.get(session, ann.id).is_none());
    }
}
