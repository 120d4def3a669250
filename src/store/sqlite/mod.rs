//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, written through one
//! group-committing writer (see `executor`).

mod batching;
mod checkpointer;
mod connection;
mod executor;
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
use jiff::{Timestamp, civil::Date};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use self::executor::{Executor, Mode};
use self::rows::{
    TASK_COLUMNS, USER_COLUMNS, from_micros, internal, is_unique_violation, micros, task_from_row, user_from_row,
    uuid_at,
};
use self::sessions::SessionCache;
use self::tasks::{NewBatch, NewTask, QuotaMemo, day_bounds, limit_and_use, load_task, used_on};
use super::{
    Created, CreatedBatch, NewPersonalToken, NewUser, Refreshed, Result, Store, StoreError, UserChanges, new_id,
};
use crate::domain::prune::{Prune, PruneStep};
use crate::domain::{
    AdminChanges, AuditEntry, IdempotencyKey, PersonalToken, RefreshVerdict, StoredRefreshToken, Task, TaskContent,
    TaskFilter, TaskPatch, User, UserZone, Username,
};

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

    async fn create_user(&self, user: NewUser, now: Timestamp) -> Result<User> {
        self.executor
            .write(move |c| {
                let id = new_id(now);
                // A taken skeleton (a look-alike of another user's name) breaks the
                // unique index as a taken name does, and is answered the same.
                let inserted = c.execute(
                    "insert into users (id, username, skeleton, password_hash, role, daily_limit, timezone, created_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        id.to_string(),
                        user.username.as_str(),
                        user.username.skeleton(),
                        user.password_hash,
                        user.role.as_str(),
                        user.daily_limit,
                        user.zone.current.as_str(),
                        micros(now)
                    ],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
                    other => other.map_err(internal)?,
                };
                load_user(c, id)?.ok_or_else(|| internal(anyhow::anyhow!("user vanished after insert")))
            })
            .await
    }

    async fn name_taken(&self, username: &Username) -> Result<bool> {
        let (name, skeleton) = (username.as_str().to_owned(), username.skeleton());
        self.executor
            .read(move |c| {
                c.prepare_cached("select exists (select 1 from users where username = ?1 or skeleton = ?2)")
                    .and_then(|mut s| s.query_row(params![name, skeleton], |r| r.get(0)))
                    .map_err(internal)
            })
            .await
    }

    async fn user_credentials(&self, username: &Username) -> Result<Option<(User, String)>> {
        let username = username.as_str().to_owned();
        self.executor
            .read(move |c| {
                c.prepare_cached(&format!("select {USER_COLUMNS}, u.password_hash from users u where u.username = ?1"))
                    .and_then(|mut s| s.query_row([username], |r| Ok((user_from_row(r)?, r.get(8)?))).optional())
                    .map_err(internal)
            })
            .await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>> {
        self.executor.read(move |c| load_user(c, id)).await
    }

    async fn session_user(&self, session_id: Uuid, user_id: Uuid) -> Result<Option<User>> {
        if let Some(user) = self.sessions.get(session_id, user_id) {
            return Ok(Some(user));
        }
        let generation = self.sessions.generation();
        let user = self.executor.read(move |c| live_session_user(c, session_id, user_id)).await?;
        if let Some(user) = &user {
            self.sessions.keep(generation, session_id, user);
        }
        Ok(user)
    }

    async fn session_usage(&self, session_id: Uuid, user_id: Uuid, now: Timestamp) -> Result<Option<(User, u32)>> {
        if let Some(mut user) = self.sessions.get(session_id, user_id) {
            // The limit as it is now, with the day's use: a limit set from the command
            // line shows at once here.
            let day = user.zone.window(now).day;
            let (limit, used) = self.executor.read(move |c| limit_and_use(c, user_id, day)).await?;
            user.daily_limit = limit;
            return Ok(Some((user, used)));
        }
        // Both reads see one snapshot (every read does: see `Executor::read`).
        let generation = self.sessions.generation();
        let found = self
            .executor
            .read(move |c| {
                let Some(user) = live_session_user(c, session_id, user_id)? else { return Ok(None) };
                let used = used_on(c, user.id, user.zone.window(now).day)?;
                Ok(Some((user, used)))
            })
            .await?;
        if let Some((user, _)) = &found {
            self.sessions.keep(generation, session_id, user);
        }
        Ok(found)
    }

    async fn update_user(&self, id: Uuid, changes: UserChanges) -> Result<Option<User>> {
        self.write_accounts(move |c| {
            if let Some(zone) = &changes.zone {
                save_zone(c, id, zone)?;
            }
            if let Some(change) = &changes.password {
                c.execute("update users set password_hash = ?2 where id = ?1", params![id.to_string(), change.hash])
                    .and_then(|_| {
                        c.execute(
                            "update sessions set revoked_at = ?3
                             where user_id = ?1 and id <> ?2 and revoked_at is null",
                            params![id.to_string(), change.keep_session.to_string(), micros(change.now)],
                        )
                    })
                    .map_err(internal)?;
                tokens::delete_all(c, id)?;
            }
            load_user(c, id)
        })
        .await
    }

    async fn list_users(&self, after: Option<Uuid>, limit: u32, now: Timestamp) -> Result<Vec<(User, u32)>> {
        self.executor
            .read(move |c| {
                let users = c
                    .prepare_cached(&format!(
                        "select {USER_COLUMNS} from users u where ?1 is null or u.id > ?1 order by u.id limit ?2"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![after.map(|a| a.to_string()), limit], user_from_row)?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(internal)?;
                users
                    .into_iter()
                    .map(|u| {
                        let used = used_on(c, u.id, u.zone.window(now).day)?;
                        Ok((u, used))
                    })
                    .collect()
            })
            .await
    }

    async fn admin_update_user(
        &self,
        actor: Option<Uuid>,
        target: Uuid,
        changes: AdminChanges,
        now: Timestamp,
    ) -> Result<Option<User>> {
        self.write_accounts(move |c| {
            let Some(before) = load_user(c, target)? else { return Ok(None) };
            if let Some(limit) = changes.daily_limit {
                c.execute("update users set daily_limit = ?2 where id = ?1", params![target.to_string(), limit])
                    .map_err(internal)?;
            }
            if let Some(role) = changes.role {
                c.execute("update users set role = ?2 where id = ?1", params![target.to_string(), role.as_str()])
                    .map_err(internal)?;
            }
            for change in changes.audit(&before) {
                c.execute(
                    "insert into audit (id, actor_id, target_id, field, old_value, new_value, at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        new_id(now).to_string(),
                        actor.map(|a| a.to_string()),
                        target.to_string(),
                        change.field,
                        change.old_value,
                        change.new_value,
                        micros(now)
                    ],
                )
                .map_err(internal)?;
            }
            load_user(c, target)
        })
        .await
    }

    async fn audit_trail(&self, target: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.executor
            .read(move |c| {
                c.prepare_cached(
                    "select id, actor_id, target_id, field, old_value, new_value, at from audit
                     where target_id = ?1 and (?2 is null or id > ?2) order by id limit ?3",
                )
                .and_then(|mut s| {
                    s.query_map(params![target.to_string(), after.map(|a| a.to_string()), limit], |r| {
                        let actor: Option<String> = r.get(1)?;
                        Ok(AuditEntry {
                            id: uuid_at(r, 0)?,
                            actor_id: actor.and_then(|a| Uuid::parse_str(&a).ok()),
                            target_id: uuid_at(r, 2)?,
                            field: r.get(3)?,
                            old_value: r.get(4)?,
                            new_value: r.get(5)?,
                            at: from_micros(r.get(6)?)?,
                        })
                    })?
                    .collect()
                })
                .map_err(internal)
            })
            .await
    }

    async fn create_session(
        &self,
        user_id: Uuid,
        refresh_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Uuid> {
        self.executor
            .write(move |c| {
                let id = new_id(now);
                c.execute(
                    "insert into sessions (id, user_id, created_at) values (?1, ?2, ?3)",
                    params![id.to_string(), user_id.to_string(), micros(now)],
                )
                .and_then(|_| {
                    c.execute(
                        "insert into refresh_tokens (hash, session_id, user_id, expires_at) values (?1, ?2, ?3, ?4)",
                        params![refresh_hash, id.to_string(), user_id.to_string(), micros(expires_at)],
                    )
                })
                .map_err(internal)?;
                Ok(id)
            })
            .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Refreshed> {
        self.write_accounts(move |c| {
            let found = c
                .query_row(
                    "select r.session_id, r.user_id, r.expires_at, r.spent_at, s.revoked_at
                     from refresh_tokens r join sessions s on s.id = r.session_id where r.hash = ?1",
                    [old_hash],
                    |r| {
                        Ok((
                            uuid_at(r, 0)?,
                            uuid_at(r, 1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(internal)?;
            let Some((session_id, user_id, expires, spent, revoked)) = found else { return Ok(Refreshed::Invalid) };
            let stored = StoredRefreshToken {
                spent: spent.is_some(),
                session_revoked: revoked.is_some(),
                expires_at: from_micros(expires).map_err(internal)?,
            };
            match RefreshVerdict::of(Some(stored), now) {
                RefreshVerdict::Rotate => {}
                RefreshVerdict::Refuse => return Ok(Refreshed::Invalid),
                RefreshVerdict::RevokeFamily => {
                    c.execute(
                        "update sessions set revoked_at = ?2 where id = ?1",
                        params![session_id.to_string(), micros(now)],
                    )
                    .map_err(internal)?;
                    return Ok(Refreshed::Reused);
                }
            }
            c.execute("update refresh_tokens set spent_at = ?2 where hash = ?1", params![old_hash, micros(now)])
                .and_then(|_| {
                    c.execute(
                        "insert into refresh_tokens (hash, session_id, user_id, expires_at) values (?1, ?2, ?3, ?4)",
                        params![new_hash, session_id.to_string(), user_id.to_string(), micros(expires_at)],
                    )
                })
                .map_err(internal)?;
            Ok(Refreshed::Rotated { user_id, session_id })
        })
        .await
    }

    async fn revoke_session(&self, session_id: Uuid, now: Timestamp) -> Result<()> {
        self.write_accounts(move |c| {
            c.execute(
                "update sessions set revoked_at = ?2 where id = ?1 and revoked_at is null",
                params![session_id.to_string(), micros(now)],
            )
            .map(drop)
            .map_err(internal)
        })
        .await
    }

    async fn create_personal_token(
        &self,
        user_id: Uuid,
        token: NewPersonalToken,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<PersonalToken>> {
        // A token never looked up cannot be cached: no entry to forget.
        self.executor.write(move |c| tokens::create(c, user_id, token, max, now)).await
    }

    async fn personal_tokens(&self, user_id: Uuid) -> Result<Vec<PersonalToken>> {
        self.executor.read(move |c| tokens::list(c, user_id)).await
    }

    async fn personal_token(&self, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>> {
        self.executor.read(move |c| tokens::one(c, user_id, id)).await
    }

    async fn delete_personal_token(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        self.write_accounts(move |c| tokens::delete(c, user_id, id)).await
    }

    async fn personal_token_user(&self, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>> {
        if let Some(found) = self.sessions.token(&hash) {
            return Ok(Some(found));
        }
        let generation = self.sessions.generation();
        let found = self.executor.read(move |c| tokens::by_hash(c, hash)).await?;
        if let Some(found) = &found {
            self.sessions.keep_token(generation, hash, found);
        }
        Ok(found)
    }

    async fn personal_token_usage(&self, hash: [u8; 32], now: Timestamp) -> Result<Option<(User, PersonalToken, u32)>> {
        if let Some((mut user, token)) = self.sessions.token(&hash) {
            // As `session_usage`: the limit as it is now, with the day's use.
            let (user_id, day) = (user.id, user.zone.window(now).day);
            let (limit, used) = self.executor.read(move |c| limit_and_use(c, user_id, day)).await?;
            user.daily_limit = limit;
            return Ok(Some((user, token, used)));
        }
        let generation = self.sessions.generation();
        let found = self
            .executor
            .read(move |c| {
                let Some((user, token)) = tokens::by_hash(c, hash)? else { return Ok(None) };
                let used = used_on(c, user.id, user.zone.window(now).day)?;
                Ok(Some((user, token, used)))
            })
            .await?;
        if let Some((user, token, _)) = &found {
            self.sessions.keep_token(generation, hash, &(user.clone(), token.clone()));
        }
        Ok(found)
    }

    async fn touch_personal_token(&self, id: Uuid, now: Timestamp) -> Result<()> {
        // One statement, so no savepoint; and it changes no limit or day's use, so the
        // writer's quota memo stays valid across it.
        let mode = Mode::ONE_STATEMENT.keeping_epoch();
        self.executor.write_with(mode, move |c| tokens::touch(c, id, now)).await
    }

    async fn create_task(
        &self,
        user: &User,
        content: TaskContent,
        idempotency: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<Created> {
        let new = NewTask {
            user_id: user.id,
            window: user.zone.window(now),
            timezone: user.zone.effective(now).clone(),
            content,
            idempotency,
            now,
        };
        // Without a key the create changes the database in one statement; it records
        // what it changes in the quota memo, so it keeps the epoch.
        let mode = if new.idempotency.is_some() { Mode::SAVEPOINT } else { Mode::ONE_STATEMENT }.keeping_epoch();
        let (memo, epoch) = (self.quota_memo.clone(), self.executor.epoch());
        self.executor.write_with(mode, move |c| tasks::create(c, &mut QuotaMemo::lock(&memo), epoch.get(), new)).await
    }

    async fn create_tasks(
        &self,
        user: &User,
        contents: Vec<TaskContent>,
        idempotency: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<CreatedBatch> {
        let new = NewBatch {
            user_id: user.id,
            window: user.zone.window(now),
            timezone: user.zone.effective(now).clone(),
            contents,
            idempotency,
            now,
        };
        // Several statements: the savepoint makes the batch all or nothing. It records
        // what it changes in the quota memo, so it keeps the epoch.
        let mode = Mode::SAVEPOINT.keeping_epoch();
        let (memo, epoch) = (self.quota_memo.clone(), self.executor.epoch());
        self.executor
            .write_with(mode, move |c| tasks::create_batch(c, &mut QuotaMemo::lock(&memo), epoch.get(), new))
            .await
    }

    async fn used(&self, user_id: Uuid, day: Date) -> Result<u32> {
        self.executor.read(move |c| used_on(c, user_id, day)).await
    }

    async fn list_tasks(&self, user_id: Uuid, filter: TaskFilter) -> Result<Vec<Task>> {
        // Always a range of the (user_id, id) key, so the scan starts where the page does.
        let (mut low, mut high) = (String::new(), "~".to_owned());
        if let Some(day) = filter.day {
            let (from, to) = day_bounds(day);
            (low, high) = (from.to_string(), to.to_string());
        }
        if let Some(before) = filter.before {
            high = high.min(before.to_string());
        }
        self.executor
            .read(move |c| {
                c.prepare_cached(&format!(
                    "select {TASK_COLUMNS} from tasks where user_id = ?1 and id >= ?2 and id < ?3
                     and (?4 is null or day = ?4) and (?5 is null or done = ?5) order by id desc limit ?6"
                ))
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            user_id.to_string(),
                            low,
                            high,
                            filter.day.map(|d| d.to_string()),
                            filter.done,
                            filter.limit
                        ],
                        task_from_row,
                    )?
                    .collect()
                })
                .map_err(internal)
            })
            .await
    }

    async fn task(&self, user_id: Uuid, id: Uuid) -> Result<Option<Task>> {
        self.executor.read(move |c| load_task(c, user_id, id)).await
    }

    async fn update_task(&self, user_id: Uuid, id: Uuid, patch: TaskPatch, now: Timestamp) -> Result<Option<Task>> {
        self.executor
            .write(move |c| {
                let changed = c
                    .execute(
                        "update tasks set content = coalesce(?3, content), done = coalesce(?4, done), updated_at = ?5
                         where id = ?1 and user_id = ?2",
                        params![
                            id.to_string(),
                            user_id.to_string(),
                            patch.content.as_ref().map(TaskContent::as_str),
                            patch.done,
                            micros(now)
                        ],
                    )
                    .map_err(internal)?;
                if changed == 0 {
                    return Ok(None);
                }
                load_task(c, user_id, id)
            })
            .await
    }

    async fn delete_task(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        self.executor
            .write(move |c| {
                c.execute("delete from tasks where id = ?1 and user_id = ?2", [id.to_string(), user_id.to_string()])
                    .map(|n| n > 0)
                    .map_err(internal)
            })
            .await
    }

    async fn claim_job_period(&self, job: &str, period: i64) -> Result<bool> {
        let key = format!("job:{job}");
        self.executor.write(move |c| prune::claim(c, &key, period)).await
    }

    async fn prune_step(&self, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64> {
        prune::step(&self.executor, step, rules, batch).await
    }
}
