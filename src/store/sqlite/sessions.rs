//! The signed-in users of live sessions, and the personal tokens found by their hash,
//! kept in memory for a moment.
//!
//! Every authenticated request resolves its session (or its personal token) to a user.
//! Under a steady write load that read is dear: each commit empties every reader's page
//! cache, so the lookup reads its pages again (measured with `perf` during creates: 23%
//! of the async workers' CPU). This process makes every change of a session, a personal
//! token or a user itself, through the store, except `quotask user set-limit` and `user
//! create` run from the command line. So:
//!
//! - a change made through this store is seen at once: it advances `generation` once
//!   committed, and an entry read under an older generation is never used again (one
//!   generation for both maps: a user's change also changes what their tokens find);
//! - an entry is used for at most `FRESH_FOR`, which bounds how late a change made by
//!   another process (a limit set from the command line) shows in `GET /v1/me`. The
//!   quota itself never depends on an entry: a create reads the limit in the writer's
//!   transaction, and `GET /v1/me/quota` reads it with the day's use.
//!
//! Only what a session or token resolved to is kept: an unknown, revoked or deleted one
//! is read again every time. A token's expiry is checked by its caller on every use, so
//! an entry outliving it changes nothing; its `last_used_at` may be older than the row's.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::{PersonalToken, User};

/// How long an entry may be used.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most, per map; a map starts over when it is full.
const CAPACITY: usize = 65_536;

#[derive(Default)]
pub(super) struct SessionCache {
    generation: AtomicU64,
    sessions: Entries<Uuid, User>,
    /// By the token's hash.
    tokens: Entries<[u8; 32], (User, PersonalToken)>,
}

struct Entries<K, V>(Mutex<HashMap<K, Entry<V>>>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries(Mutex::default())
    }
}

struct Entry<V> {
    value: V,
    generation: u64,
    read_at: Instant,
}

impl<K: Eq + Hash, V: Clone> Entries<K, V> {
    fn get(&self, key: &K, generation: u64) -> Option<V> {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(key)?;
        (entry.generation == generation && entry.read_at.elapsed() < FRESH_FOR).then(|| entry.value.clone())
    }

    fn keep(&self, generation: u64, key: K, value: V) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, Entry { value, generation, read_at: Instant::now() });
    }
}

impl SessionCache {
    /// The user of `session_id` if it is `user_id`'s, known since the last change.
    pub(super) fn get(&self, session_id: Uuid, user_id: Uuid) -> Option<User> {
        self.sessions.get(&session_id, self.generation()).filter(|user| user.id == user_id)
    }

    /// The token whose hash is `hash`, and its user, known since the last change.
    pub(super) fn token(&self, hash: &[u8; 32]) -> Option<(User, PersonalToken)> {
        self.tokens.get(hash, self.generation())
    }

    /// To be called before reading a session or token: what `keep` is to be given after.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what `session_id` resolved to in a read that began at `generation`. If a
    /// change was committed meanwhile the entry is stale from the start, and `get`
    /// will not use it.
    pub(super) fn keep(&self, generation: u64, session_id: Uuid, user: &User) {
        self.sessions.keep(generation, session_id, user.clone());
    }

    /// `keep`, for what the token of hash `hash` resolved to.
    pub(super) fn keep_token(&self, generation: u64, hash: [u8; 32], found: &(User, PersonalToken)) {
        self.tokens.keep(generation, hash, found.clone());
    }

    /// After a committed change to a session, a personal token or a user: no entry read
    /// before is used.
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
            limits: crate::domain::LimitSettings { stored: 5, ..Default::default() },
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
    fn a_token_entry_serves_its_own_hash_and_goes_with_any_change() {
        let cache = SessionCache::default();
        let token = PersonalToken {
            id: Uuid::now_v7(),
            name: "cron".into(),
            scopes: crate::domain::Scopes::default(),
            created_at: jiff::Timestamp::now(),
            expires_at: None,
            last_used_at: None,
        };
        let found = (user(), token);
        cache.keep_token(cache.generation(), [1; 32], &found);
        assert_eq!(cache.token(&[1; 32]).map(|(_, t)| t.id), Some(found.1.id));
        assert!(cache.token(&[2; 32]).is_none());
        cache.forget_all();
        assert!(cache.token(&[1; 32]).is_none());
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
