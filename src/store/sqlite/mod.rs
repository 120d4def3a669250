//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, written through one
//! group-committing writer (see `executor`).

mod accounts;
mod admin;
mod batching;
mod checkpointer;
mod connection;
mod executor;
mod plans;
mod prune;
mod rows;
mod sessions;
mod skeletons;
mod tasks;
mod tokens;
mod wal_buffer;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use self::executor::Executor;
use self::rows::{USER_COLUMNS, internal, micros, user_from_row};
use self::sessions::SessionCache;
use self::tasks::{QuotaMemo, limit_and_use};
use super::{Result, Store};
use crate::domain::prune::{Prune, PruneStep};
use crate::domain::{DayQuota, PersonalToken, User, UserZone};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_idempotency.sql"),
    include_str!("migrations/0003_tasks_by_owner.sql"),
    include_str!("migrations/0004_no_day_index.sql"),
    include_str!("migrations/0005_usage_trigger.sql"),
    include_str!("migrations/0006_prune_indexes.sql"),
    include_str!("migrations/0007_username_skeletons.sql"),
    include_str!("migrations/0008_idempotent_batches.sql"),
    include_str!("migrations/0009_personal_tokens.sql"),
    include_str!("migrations/0011_plans.sql"),
];

pub struct SqliteStore {
    executor: Executor,
    sessions: SessionCache,
    /// Read and changed by creates only, on the writer thread (so never contended).
    quota_memo: Arc<Mutex<QuotaMemo>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let executor = Executor::open(path, MIGRATIONS)?;
        skeletons::fill_in(path)?;
        Ok(Self { executor, sessions: SessionCache::default(), quota_memo: Arc::default() })
    }

    /// A write that may change what a session or a personal token resolves to (a user's
    /// settings, a session's revocation, a token's deletion): once it is committed, no
    /// cached session or token is used again.
    async fn write_accounts<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let result = self.executor.write(f).await;
        self.sessions.forget_all();
        result
    }
}

fn load_user(conn: &Connection, id: Uuid) -> Result<Option<User>> {
    conn.prepare_cached(&format!("select {USER_COLUMNS} from users u where u.id = ?1"))
        .and_then(|mut s| s.query_row([id.to_string()], user_from_row).optional())
        .map_err(internal)
}

/// The user of session `session_id`, if it is `user_id`'s and not revoked.
fn live_session_user(conn: &Connection, session_id: Uuid, user_id: Uuid) -> Result<Option<User>> {
    conn.prepare_cached(&format!(
        "select {USER_COLUMNS} from sessions s join users u on u.id = s.user_id
         where s.id = ?1 and s.user_id = ?2 and s.revoked_at is null"
    ))
    .and_then(|mut s| s.query_row([session_id.to_string(), user_id.to_string()], user_from_row).optional())
    .map_err(internal)
}

fn save_zone(conn: &Connection, id: Uuid, zone: &UserZone) -> Result<()> {
    let (pending, at) = match &zone.pending {
        Some((tz, at)) => (Some(tz.as_str()), Some(micros(*at))),
        None => (None, None),
    };
    conn.prepare_cached(
        "update users set timezone = ?2, pending_timezone = ?3, timezone_effective_at = ?4 where id = ?1",
    )
    .and_then(|mut s| s.execute(params![id.to_string(), zone.current.as_str(), pending, at]))
    .map(drop)
    .map_err(internal)
}
#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.executor.ping().await
    }

    async fn close(&self) {
        self.executor.close().await;
    }

    async fn durability(&self) -> Result<String> {
        self.executor
            .write(|c| {
                let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(internal)?;
                let sync: i64 = c.pragma_query_value(None, "synchronous", |r| r.get(0)).map_err(internal)?;
                let sync = ["OFF", "NORMAL", "FULL", "EXTRA"].get(sync as usize).copied().unwrap_or("?");
                Ok(format!("sqlite journal_mode={mode} synchronous={sync}"))
            })
            .await
    }

    async fn signing_secret(&self, candidate: Vec<u8>) -> Result<Vec<u8>> {
        self.executor
            .write(move |c| {
                c.execute(
                    "insert into settings (key, value) values ('jwt_secret', ?1) on conflict (key) do nothing",
                    [candidate],
                )
                .map_err(internal)?;
                c.query_row("select value from settings where key = 'jwt_secret'", [], |r| r.get(0)).map_err(internal)
            })
            .await
    }

    async fn session_usage(&self, session_id: Uuid, user_id: Uuid, now: Timestamp) -> Result<Option<(User, DayQuota)>> {
        if let Some(user) = self.sessions.get(session_id, user_id) {
            // The limit as it is now, with the day's use: a limit set from the command
            // line shows at once here.
            let day = user.zone.window(now).day;
            let quota = self.executor.read(move |c| limit_and_use(c, user_id, day)).await?;
            return Ok(Some((user, quota)));
        }
        // Both reads see one snapshot (every read does: see `Executor::read`).
        let generation = self.sessions.generation();
        let found = self
            .executor
            .read(move |c| {
                let Some(user) = live_session_user(c, session_id, user_id)? else { return Ok(None) };
                let quota = limit_and_use(c, user.id, user.zone.window(now).day)?;
                Ok(Some((user, quota)))
            })
            .await?;
        if let Some((user, _)) = &found {
            self.sessions.keep(generation, session_id, user);
        }
        Ok(found)
    }

    async fn personal_token_usage(
        &self,
        hash: [u8; 32],
        now: Timestamp,
    ) -> Result<Option<(User, PersonalToken, DayQuota)>> {
        if let Some((user, token)) = self.sessions.token(&hash) {
            // As `session_usage`: the limit as it is now, with the day's use.
            let (user_id, day) = (user.id, user.zone.window(now).day);
            let quota = self.executor.read(move |c| limit_and_use(c, user_id, day)).await?;
            return Ok(Some((user, token, quota)));
        }
        let generation = self.sessions.generation();
        let found = self
            .executor
            .read(move |c| {
                let Some((user, token)) = tokens::by_hash(c, hash)? else { return Ok(None) };
                let quota = limit_and_use(c, user.id, user.zone.window(now).day)?;
                Ok(Some((user, token, quota)))
            })
            .await?;
        if let Some((user, token, _)) = &found {
            self.sessions.keep_token(generation, hash, &(user.clone(), token.clone()));
        }
        Ok(found)
    }

    async fn claim_job_period(&self, job: &str, period: i64) -> Result<bool> {
        let key = format!("job:{job}");
        self.executor.write(move |c| prune::claim(c, &key, period)).await
    }

    async fn prune_step(&self, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64> {
        prune::step(&self.executor, step, rules, batch).await
    }
}
