//! Tasks and the quota's counter: the one statement that checks, consumes and inserts,
//! the idempotent create around it, and the reads a create's answer needs.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::rows::{TASK_COLUMNS, decode, internal, micros};
use super::{PostgresStore, batch, bounded, classify, rows};
use crate::domain::limits::{LimitInForce, LimitSource};
use crate::domain::{
    DayQuota, DayWindow, IdempotencyKey, QuotaStatus, Task, TaskContent, TaskFilter, TaskPatch, TimeZoneName, User,
    idempotency,
};
use crate::store::{Created, CreatedBatch, Result, StoreError, TaskStore, new_id};

/// The CTE `quota`: user $1's limit in force on day $2, as `limits::limit_in_force`
/// decides it (the user's own limit, else what their adaptive plan adapted to for
/// them, else their plan's, else their sign-up default; plus the boosts covering the
/// day), stated in SQL so that a create reads it in its own statement. Its columns:
/// `base`, `source`, `plan`, `boost`, and their sum `daily_limit`; decoded by `in_force`.
macro_rules! quota_cte {
    () => {
        "quota as (
             select l.base, l.source, l.plan, l.boost,
                    least(l.base::bigint + l.boost, 2147483647)::integer as daily_limit
             from (
                 select case when u.limit_is_own or p.name is null then u.daily_limit
                             when a.adapted and $2::date >= u.adapted_from then u.adapted_limit
                             when a.adapted and u.adapted_before is not null then u.adapted_before
                             else p.daily_limit end as base,
                        case when u.limit_is_own then 'user'
                             when p.name is null then 'default'
                             when a.adapted and ($2::date >= u.adapted_from or u.adapted_before is not null)
                                 then 'adapted'
                             else 'plan' end as source,
                        p.name as plan,
                        least(coalesce((select sum(b.extra) from boosts b where b.user_id = u.id
                                        and b.from_day <= $2::date and b.to_day >= $2::date), 0),
                              1000000000)::integer as boost
                 from users u left join plans p on p.name = u.plan,
                      lateral (select p.adapt_step is not null and u.adapted_from is not null as adapted) a
                 where u.id = $1
             ) l
         )"
    };
}
pub(super) use quota_cte;

/// The limit in force of a row with `quota_cte!()`'s columns.
pub(super) fn in_force(row: &sqlx::postgres::PgRow) -> Result<LimitInForce, sqlx::Error> {
    let source: String = row.try_get("source")?;
    Ok(LimitInForce {
        base: rows::count(row, "base")?,
        source: LimitSource::parse(&source)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown limit source {source}").into()))?,
        plan: row.try_get::<Option<String>, _>("plan")?.map(Into::into),
        boost: rows::count(row, "boost")?,
    })
}

/// Checks and consumes a unit of the task's day and inserts the task, in one statement:
/// `(limit in force, Some(used))` if created, `(limit in force, None)` if the limit is
/// reached.
///
/// READ COMMITTED is enough: `on conflict do update` locks the (user, day) row and
/// evaluates `used < limit` (`domain::admits` for one unit) against its latest committed version, so concurrent creates,
/// on any instance, queue on that row and the limit can never be passed. The limit is
/// read in the same statement, so an administrator's change applies at once. The task is
/// inserted only if the counter moved; if the insert fails, the whole statement (and the
/// unit it took) is rolled back.
pub(super) async fn consume_and_insert<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    user_id: Uuid,
    task: &Task,
) -> Result<(LimitInForce, Option<u32>)> {
    let row = sqlx::query(concat!(
        "with ",
        quota_cte!(),
        ", counted as (
             insert into usage as g (user_id, day, used)
             select $1, $2::date, 1 from quota where daily_limit > 0
             on conflict (user_id, day) do update set used = g.used + 1
             where g.used < (select daily_limit from quota)
             returning g.used
         ), created as (
             insert into tasks (id, user_id, content, done, day, created_at, updated_at)
             select $3, $1, $4, false, $2::date, $5, $5 from counted
         )
         select quota.*, counted.used from quota left join counted on true"
    ))
    .bind(user_id)
    .bind(task.day.to_string())
    .bind(task.id)
    .bind(&task.content)
    .bind(micros(task.created_at))
    .fetch_optional(executor)
    .await
    .map_err(classify)?
    .ok_or_else(|| internal(anyhow::anyhow!("no user {user_id}")))?;
    decode(&row, |r| Ok((in_force(r)?, rows::optional_count(r, "used")?)))
}

/// A create with an idempotency key: look for an earlier use, then create and record
/// the key, in one transaction.
///
/// Requests with the same key that race on several instances all pass the first look
/// before the first of them commits, and then queue on the day's usage row. Whichever
/// gets there later finds the first committed (the row's lock was held until then), and
/// a new statement sees its key (READ COMMITTED): if the unit it wanted was the day's
/// last and the first took it, it answers from the first's record instead of 429; if it
/// took a unit too, recording the key finds the first's record, so it rolls back (task
/// and unit included) and answers from that record instead. (A repeat while the first
/// is still running on the same instance is answered 409 before it gets here.)
pub(super) async fn create_keyed(
    c: &mut PgConnection,
    user_id: Uuid,
    task: Task,
    key: IdempotencyKey,
    window: DayWindow,
    timezone: TimeZoneName,
    now: Timestamp,
) -> Result<Created> {
    let mut tx = c.begin().await.map_err(classify)?;
    let since = micros(idempotency::remembered_since(now));
    sqlx::query("delete from idempotency_keys where user_id = $1 and key = $2 and created_at <= $3")
        .bind(user_id)
        .bind(&key.key)
        .bind(since)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    if let Some(first) = first_use(&mut tx, user_id, &key).await? {
        tx.commit().await.map_err(classify)?;
        return Ok(first);
    }
    let (limit, used) = consume_and_insert(&mut *tx, user_id, &task).await?;
    if used.is_none() {
        let first = first_use(&mut tx, user_id, &key).await?;
        tx.commit().await.map_err(classify)?;
        return match first {
            Some(first) => Ok(first),
            None => created(&mut *c, user_id, task, limit, None, window, timezone).await,
        };
    }
    let recorded = sqlx::query(
        "insert into idempotency_keys (user_id, key, fingerprint, task_id, content, day, created_at)
         values ($1, $2, $3, $4, $5, $6::date, $7) on conflict (user_id, key) do nothing",
    )
    .bind(user_id)
    .bind(&key.key)
    .bind(key.fingerprint.as_slice())
    .bind(task.id)
    .bind(&task.content)
    .bind(task.day.to_string())
    .bind(micros(now))
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    if recorded.rows_affected() == 0 {
        tx.rollback().await.map_err(classify)?;
        return first_use(&mut *c, user_id, &key).await?.ok_or(StoreError::KeyInFlight);
    }
    tx.commit().await.map_err(classify)?;
    created(&mut *c, user_id, task, limit, used, window, timezone).await
}

/// The answer to a request with `key` from its key's record, if there is one: the task
/// as first created (same request), or `KeyReused` (another request).
async fn first_use(c: &mut PgConnection, user_id: Uuid, key: &IdempotencyKey) -> Result<Option<Created>> {
    let row = sqlx::query(
        "select fingerprint, task_id as id, content, false as done, to_char(day, 'YYYY-MM-DD') as day,
                created_at, created_at as updated_at
         from idempotency_keys where user_id = $1 and key = $2",
    )
    .bind(user_id)
    .bind(&key.key)
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let fingerprint: Vec<u8> = decode(&row, |r| r.try_get("fingerprint"))?;
    let first = decode(&row, rows::task)?;
    Ok(Some(if fingerprint == key.fingerprint { Created::Replay(first) } else { Created::KeyReused }))
}

/// The answer to a create once its statement has run.
pub(super) async fn created(
    c: &mut PgConnection,
    user_id: Uuid,
    task: Task,
    in_force: LimitInForce,
    used: Option<u32>,
    window: DayWindow,
    timezone: TimeZoneName,
) -> Result<Created> {
    match used {
        Some(used) => Ok(Created::Task(task, QuotaStatus::new(DayQuota { in_force, used }, window, timezone))),
        None => {
            // Refused: read the counter as committed now (the statement's own
            // snapshot may predate the creates that used the day up).
            let used = used_on(&mut *c, user_id, window.day).await?;
            Ok(Created::OverLimit(QuotaStatus::new(DayQuota { in_force, used }, window, timezone)))
        }
    }
}

/// The user's limit in force on `day` and the units used on it, in one statement.
pub(super) async fn day_quota(c: &mut PgConnection, user_id: Uuid, day: jiff::civil::Date) -> Result<DayQuota> {
    let row = sqlx::query(concat!(
        "with ",
        quota_cte!(),
        " select quota.*, coalesce((select g.used from usage g where g.user_id = $1 and g.day = $2::date), 0) as used
          from quota"
    ))
    .bind(user_id)
    .bind(day.to_string())
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)?
    .ok_or_else(|| internal(anyhow::anyhow!("no user {user_id}")))?;
    decode(&row, |r| Ok(DayQuota { in_force: in_force(r)?, used: rows::count(r, "used")? }))
}

pub(super) async fn used_on(c: &mut PgConnection, user_id: Uuid, day: jiff::civil::Date) -> Result<u32> {
    let row = sqlx::query("select used from usage where user_id = $1 and day = $2::date")
        .bind(user_id)
        .bind(day.to_string())
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    Ok(row.map(|r| decode(&r, |r| rows::count(r, "used"))).transpose()?.unwrap_or_default())
}

pub(super) async fn load_task(c: &mut PgConnection, user_id: Uuid, id: Uuid) -> Result<Option<Task>> {
    let row = sqlx::query(&format!("select {TASK_COLUMNS} from tasks where id = $1 and user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(|r| decode(r, rows::task)).transpose()
}

#[async_trait]
impl TaskStore for PostgresStore {
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

    async fn day_quota(&self, user_id: Uuid, day: jiff::civil::Date) -> Result<DayQuota> {
        bounded(self.db.run(async |c| day_quota(c, user_id, day).await)).await
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
}
