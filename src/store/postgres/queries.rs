//! The `Store` trait on PostgreSQL. Each call is as few round trips as its rules allow;
//! every call is bounded in time (`bounded`) and its errors classified (`classify`).
//! The create's statements are in `tasks`, the periodic jobs' in `jobs`.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::rows::{self, AUDIT_COLUMNS, TASK_COLUMNS, USER_COLUMNS, decode, micros};
use super::tasks::{consume_and_insert, create_keyed, created, load_task, used_on};
use super::{PostgresStore, batch, bounded, classify, tokens};
use crate::domain::prune::{Prune, PruneStep};
use crate::domain::{
    AdminChanges, AuditEntry, IdempotencyKey, PersonalToken, RefreshVerdict, StoredRefreshToken, Task, TaskContent,
    TaskFilter, TaskPatch, User, Username,
};
use crate::store::{Created, CreatedBatch, NewPersonalToken, NewUser, Refreshed, Result, Store, UserChanges, new_id};

async fn load_user(c: &mut PgConnection, id: Uuid) -> Result<Option<User>> {
    let row = sqlx::query(&format!("select {USER_COLUMNS} from users u where u.id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(|r| decode(r, rows::user)).transpose()
}

/// Marks a refresh family revoked; `revoked_at` keeps the first revocation.
async fn revoke(c: &mut PgConnection, session_id: Uuid, now: Timestamp) -> Result<()> {
    sqlx::query("update sessions set revoked_at = $2 where id = $1 and revoked_at is null")
        .bind(session_id)
        .bind(micros(now))
        .execute(&mut *c)
        .await
        .map(drop)
        .map_err(classify)
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        bounded(self.db.run(async |c| sqlx::query("select 1").execute(&mut *c).await.map(drop).map_err(classify))).await
    }

    async fn durability(&self) -> Result<String> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(
                "select current_setting('synchronous_commit') as synchronous_commit,
                        current_setting('fsync') as fsync,
                        current_setting('full_page_writes') as full_page_writes",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(classify)?;
            let get = |name: &str| row.try_get::<String, _>(name).map_err(classify);
            let (commit, fsync, pages) = (get("synchronous_commit")?, get("fsync")?, get("full_page_writes")?);
            if commit == "off" || fsync == "off" {
                tracing::warn!(synchronous_commit = %commit, fsync = %fsync, "PostgreSQL may lose acknowledged tasks on a crash");
            }
            Ok(format!("postgres synchronous_commit={commit} fsync={fsync} full_page_writes={pages}"))
        }))
        .await
    }

    async fn signing_secret(&self, candidate: Vec<u8>) -> Result<Vec<u8>> {
        bounded(self.db.run(async |c| {
            // Two statements: a select in the insert's own statement would not see a
            // secret that another instance committed while this one waited for it.
            sqlx::query("insert into settings (key, value) values ('jwt_secret', $1) on conflict (key) do nothing")
                .bind(candidate)
                .execute(&mut *c)
                .await
                .map_err(classify)?;
            sqlx::query_scalar("select value from settings where key = 'jwt_secret'")
                .fetch_one(&mut *c)
                .await
                .map_err(classify)
        }))
        .await
    }

    async fn create_user(&self, user: NewUser, now: Timestamp) -> Result<User> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(&format!(
                "insert into users as u (id, username, skeleton, password_hash, role, daily_limit, timezone, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8) returning {USER_COLUMNS}"
            ))
            .bind(new_id(now))
            .bind(user.username.as_str())
            .bind(user.username.skeleton())
            .bind(&user.password_hash)
            .bind(user.role.as_str())
            .bind(i64::from(user.daily_limit))
            .bind(user.zone.current.as_str())
            .bind(micros(now))
            .fetch_one(&mut *c)
            .await
            .map_err(classify)?;
            decode(&row, rows::user)
        }))
        .await
    }

    async fn name_taken(&self, username: &Username) -> Result<bool> {
        bounded(self.db.run(async |c| {
            sqlx::query_scalar("select exists (select 1 from users where username = $1 or skeleton = $2)")
                .bind(username.as_str())
                .bind(username.skeleton())
                .fetch_one(&mut *c)
                .await
                .map_err(classify)
        }))
        .await
    }

    async fn user_credentials(&self, username: &Username) -> Result<Option<(User, String)>> {
        bounded(self.db.run(async |c| {
            let row =
                sqlx::query(&format!("select {USER_COLUMNS}, u.password_hash from users u where u.username = $1"))
                    .bind(username.as_str())
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(classify)?;
            row.as_ref().map(|r| decode(r, |r| Ok((rows::user(r)?, r.try_get("password_hash")?)))).transpose()
        }))
        .await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>> {
        bounded(self.db.run(async |c| load_user(c, id).await)).await
    }

    async fn session_user(&self, session_id: Uuid, user_id: Uuid) -> Result<Option<User>> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(&format!(
                "select {USER_COLUMNS} from sessions s join users u on u.id = s.user_id
                 where s.id = $1 and s.user_id = $2 and s.revoked_at is null"
            ))
            .bind(session_id)
            .bind(user_id)
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            row.as_ref().map(|r| decode(r, rows::user)).transpose()
        }))
        .await
    }

    async fn update_user(&self, id: Uuid, changes: UserChanges) -> Result<Option<User>> {
        bounded(self.db.run(async |c| {
            let zone = changes.zone.as_ref();
            let pending = zone.and_then(|z| z.pending.as_ref());
            let password = changes.password.as_ref();
            // One statement, so one transaction: the new hash, the end of every other
            // session and of every personal token of the user (a data-modifying CTE runs
            // whether or not it is read).
            let row = sqlx::query(&format!(
                "with revoked as (
                     update sessions set revoked_at = $8
                     where $6::text is not null and user_id = $1 and id <> $7 and revoked_at is null
                 ), tokens_ended as (
                     delete from personal_tokens where $6::text is not null and user_id = $1
                 )
                 update users as u set
                     timezone = case when $2 then $3 else u.timezone end,
                     pending_timezone = case when $2 then $4 else u.pending_timezone end,
                     timezone_effective_at = case when $2 then $5 else u.timezone_effective_at end,
                     password_hash = coalesce($6, u.password_hash)
                 where u.id = $1 returning {USER_COLUMNS}"
            ))
            .bind(id)
            .bind(zone.is_some())
            .bind(zone.map(|z| z.current.as_str()))
            .bind(pending.map(|(tz, _)| tz.as_str()))
            .bind(pending.map(|(_, at)| micros(*at)))
            .bind(password.map(|p| p.hash.as_str()))
            .bind(password.map(|p| p.keep_session))
            .bind(password.map(|p| micros(p.now)))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            row.as_ref().map(|r| decode(r, rows::user)).transpose()
        }))
        .await
    }

    async fn list_users(&self, after: Option<Uuid>, limit: u32, now: Timestamp) -> Result<Vec<(User, u32)>> {
        bounded(self.db.run(async |c| {
            let users = sqlx::query(&format!(
                "select {USER_COLUMNS} from users u where $1::uuid is null or u.id > $1 order by u.id limit $2"
            ))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?
            .iter()
            .map(|r| decode(r, rows::user))
            .collect::<Result<Vec<_>>>()?;
            // Each user's day depends on their zone: one query for the whole page.
            let (ids, days): (Vec<Uuid>, Vec<String>) =
                users.iter().map(|u| (u.id, u.zone.window(now).day.to_string())).unzip();
            let used: HashMap<Uuid, u32> = sqlx::query(
                "select g.user_id, g.used from usage g
                 join unnest($1::uuid[], $2::text[]) as k (user_id, day) on g.user_id = k.user_id and g.day = k.day::date",
            )
            .bind(ids)
            .bind(days)
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?
            .iter()
            .map(|r| decode(r, |r| Ok((r.try_get("user_id")?, rows::count(r, "used")?))))
            .collect::<Result<_>>()?;
            Ok(users
                .into_iter()
                .map(|u| {
                    let n = used.get(&u.id).copied().unwrap_or_default();
                    (u, n)
                })
                .collect())
        }))
        .await
    }

    async fn admin_update_user(
        &self,
        actor: Option<Uuid>,
        target: Uuid,
        changes: AdminChanges,
        now: Timestamp,
    ) -> Result<Option<User>> {
        bounded(self.db.run(async |c| {
            let mut tx = c.begin().await.map_err(classify)?;
            // `for no key update`: the audit's old values are the ones replaced, and the
            // lock does not block task inserts (their foreign key takes `key share`).
            let before = sqlx::query(&format!("select {USER_COLUMNS} from users u where u.id = $1 for no key update"))
                .bind(target)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            let Some(before) = before.as_ref().map(|r| decode(r, rows::user)).transpose()? else { return Ok(None) };
            let entries = changes.audit(&before);
            let after = sqlx::query(&format!(
                "update users as u set daily_limit = coalesce($2, u.daily_limit), role = coalesce($3, u.role)
                 where u.id = $1 returning {USER_COLUMNS}"
            ))
            .bind(target)
            .bind(changes.daily_limit.map(i64::from))
            .bind(changes.role.map(|r| r.as_str()))
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
            for change in entries {
                sqlx::query(
                    "insert into audit (id, actor_id, target_id, field, old_value, new_value, at)
                     values ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(new_id(now))
                .bind(actor)
                .bind(target)
                .bind(change.field)
                .bind(change.old_value)
                .bind(change.new_value)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            tx.commit().await.map_err(classify)?;
            decode(&after, rows::user).map(Some)
        }))
        .await
    }

    async fn audit_trail(&self, target: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<AuditEntry>> {
        bounded(self.db.run(async |c| {
            sqlx::query(&format!(
                "select {AUDIT_COLUMNS} from audit
                 where target_id = $1 and ($2::uuid is null or id > $2) order by id limit $3"
            ))
            .bind(target)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?
            .iter()
            .map(|r| decode(r, rows::audit))
            .collect()
        }))
        .await
    }

    async fn create_session(
        &self,
        user_id: Uuid,
        refresh_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Uuid> {
        bounded(self.db.run(async |c| {
            let id = new_id(now);
            sqlx::query(
                "with s as (insert into sessions (id, user_id, created_at) values ($1, $2, $3) returning id)
                 insert into refresh_tokens (hash, session_id, user_id, expires_at) select $4, s.id, $2, $5 from s",
            )
            .bind(id)
            .bind(user_id)
            .bind(micros(now))
            .bind(&refresh_hash[..])
            .bind(micros(expires_at))
            .execute(&mut *c)
            .await
            .map_err(classify)?;
            Ok(id)
        }))
        .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Refreshed> {
        bounded(self.db.run(async |c| {
            // Spending the token and recording its successor is one statement. Of two
            // concurrent uses of one token, the second waits for the first's row lock,
            // then finds it spent and takes the reuse path below.
            let rotated = sqlx::query(
                "with spent as (
                     update refresh_tokens as r set spent_at = $2 from sessions s
                     where r.hash = $1 and s.id = r.session_id and r.spent_at is null
                       and s.revoked_at is null and r.expires_at > $2
                     returning r.session_id, r.user_id
                 )
                 insert into refresh_tokens (hash, session_id, user_id, expires_at)
                 select $3, session_id, user_id, $4 from spent returning session_id, user_id",
            )
            .bind(&old_hash[..])
            .bind(micros(now))
            .bind(&new_hash[..])
            .bind(micros(expires_at))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            if let Some(row) = rotated {
                let (session_id, user_id) = decode(&row, |r| Ok((r.try_get("session_id")?, r.try_get("user_id")?)))?;
                return Ok(Refreshed::Rotated { user_id, session_id });
            }
            // Not rotated: unknown, revoked, expired, or spent before (a reuse). The
            // statement above is `RefreshVerdict::Rotate` done in one step; the rest of
            // the rule is the domain's.
            let found = sqlx::query(
                "select r.session_id, r.spent_at is not null as spent, s.revoked_at is not null as revoked,
                        r.expires_at
                 from refresh_tokens r join sessions s on s.id = r.session_id where r.hash = $1",
            )
            .bind(&old_hash[..])
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            let Some(row) = found else { return Ok(Refreshed::Invalid) };
            let (session_id, spent, session_revoked): (Uuid, bool, bool) =
                decode(&row, |r| Ok((r.try_get("session_id")?, r.try_get("spent")?, r.try_get("revoked")?)))?;
            let expires_at = decode(&row, |r| rows::timestamp(r, "expires_at"))?;
            let stored = StoredRefreshToken { spent, session_revoked, expires_at };
            match RefreshVerdict::of(Some(stored), now) {
                RefreshVerdict::RevokeFamily => {
                    revoke(c, session_id, now).await?;
                    Ok(Refreshed::Reused)
                }
                // `Rotate` here would mean the token became spendable after the statement
                // above found it not to be, which nothing does; refuse rather than guess.
                RefreshVerdict::Rotate | RefreshVerdict::Refuse => Ok(Refreshed::Invalid),
            }
        }))
        .await
    }

    async fn revoke_session(&self, session_id: Uuid, now: Timestamp) -> Result<()> {
        bounded(self.db.run(async |c| revoke(c, session_id, now).await)).await
    }

    async fn create_personal_token(
        &self,
        user_id: Uuid,
        token: NewPersonalToken,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<PersonalToken>> {
        bounded(self.db.run(async |c| tokens::create(c, user_id, token, max, now).await)).await
    }

    async fn personal_tokens(&self, user_id: Uuid) -> Result<Vec<PersonalToken>> {
        bounded(self.db.run(async |c| tokens::list(c, user_id).await)).await
    }

    async fn personal_token(&self, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>> {
        bounded(self.db.run(async |c| tokens::one(c, user_id, id).await)).await
    }

    async fn delete_personal_token(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        bounded(self.db.run(async |c| tokens::delete(c, user_id, id).await)).await
    }

    async fn personal_token_user(&self, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>> {
        bounded(self.db.run(async |c| tokens::by_hash(c, hash).await)).await
    }

    async fn touch_personal_token(&self, id: Uuid, now: Timestamp) -> Result<()> {
        bounded(self.db.run(async |c| tokens::touch(c, id, now).await)).await
    }

    async fn create_task(
        &self,
        user: &User,
        content: TaskContent,
        idempotency: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<Created> {
        let user_id = user.id;
        bounded(self.db.run(async |c| {
            // The day comes from the user's zone, which only Rust knows how to apply
            // (the time-zone database ships in the binary); the request has the user
            // already. A concurrent zone change cannot move the day of `now`: it only
            // takes effect at the next local midnight (docs/quota.md item 4).
            let window = user.zone.window(now);
            let timezone = user.zone.effective(now).clone();
            let task = Task::new(new_id(now), content.into_string(), window.day, now);
            let Some(key) = idempotency else {
                // One statement, so one implicit transaction and one round trip.
                let (limit, used) = consume_and_insert(&mut *c, user_id, &task).await?;
                return created(c, user_id, task, limit, used, window, timezone).await;
            };
            create_keyed(c, user_id, task, key, window, timezone, now).await
        }))
        .await
    }

    async fn create_tasks(
        &self,
        user: &User,
        contents: Vec<TaskContent>,
        idempotency: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<CreatedBatch> {
        let user_id = user.id;
        bounded(self.db.run(async |c| {
            let window = user.zone.window(now);
            let timezone = user.zone.effective(now).clone();
            let tasks =
                contents.into_iter().map(|content| Task::new(new_id(now), content.into_string(), window.day, now));
            batch::create(c, user_id, tasks.collect(), idempotency, window, timezone, now).await
        }))
        .await
    }

    async fn used(&self, user_id: Uuid, day: jiff::civil::Date) -> Result<u32> {
        bounded(self.db.run(async |c| used_on(c, user_id, day).await)).await
    }

    async fn list_tasks(&self, user_id: Uuid, filter: TaskFilter) -> Result<Vec<Task>> {
        bounded(self.db.run(async |c| {
            sqlx::query(&format!(
                "select {TASK_COLUMNS} from tasks where user_id = $1 and ($2::text is null or day = $2::date)
                 and ($3::boolean is null or done = $3) and ($4::uuid is null or id < $4) order by id desc limit $5"
            ))
            .bind(user_id)
            .bind(filter.day.map(|d| d.to_string()))
            .bind(filter.done)
            .bind(filter.before)
            .bind(i64::from(filter.limit))
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?
            .iter()
            .map(|r| decode(r, rows::task))
            .collect()
        }))
        .await
    }

    async fn task(&self, user_id: Uuid, id: Uuid) -> Result<Option<Task>> {
        bounded(self.db.run(async |c| load_task(c, user_id, id).await)).await
    }

    async fn update_task(&self, user_id: Uuid, id: Uuid, patch: TaskPatch, now: Timestamp) -> Result<Option<Task>> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(&format!(
                "update tasks set content = coalesce($3, content), done = coalesce($4, done), updated_at = $5
                 where id = $1 and user_id = $2 returning {TASK_COLUMNS}"
            ))
            .bind(id)
            .bind(user_id)
            .bind(patch.content.as_ref().map(TaskContent::as_str))
            .bind(patch.done)
            .bind(micros(now))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            row.as_ref().map(|r| decode(r, rows::task)).transpose()
        }))
        .await
    }

    async fn delete_task(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        bounded(self.db.run(async |c| {
            sqlx::query("delete from tasks where id = $1 and user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected() > 0)
                .map_err(classify)
        }))
        .await
    }

    async fn claim_job_period(&self, job: &str, period: i64) -> Result<bool> {
        bounded(self.claim(format!("job:{job}"), period)).await
    }

    async fn prune_step(&self, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64> {
        self.prune_step_of(step, rules, batch).await
    }
}
