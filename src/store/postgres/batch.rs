//! Batches of tasks on PostgreSQL: one statement that checks and consumes as many units
//! as tasks and inserts them all, and the idempotent batch around it.

use jiff::Timestamp;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::classify;
use super::rows::{self, decode, internal, micros};
use super::tasks::{in_force, quota_cte, used_on};
use crate::domain::limits::LimitInForce;
use crate::domain::{DayQuota, DayWindow, IdempotencyKey, QuotaStatus, Task, TimeZoneName, idempotency};
use crate::store::{CreatedBatch, Result, decode_batch, encode_batch};

/// `tasks::consume_and_insert` for a batch: the counter moves by `tasks.len()` only if
/// that still fits the limit (`domain::admits`, stated here in SQL so that it is
/// evaluated under the counter's row lock), and the tasks are inserted only if it moved.
/// `(limit in force, Some(used))` if created, `(limit in force, None)` if refused.
async fn consume_and_insert<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    user_id: Uuid,
    tasks: &[Task],
    window: &DayWindow,
) -> Result<(LimitInForce, Option<u32>)> {
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let contents: Vec<&str> = tasks.iter().map(|t| t.content.as_str()).collect();
    let created_at = tasks.first().map_or(0, |t| micros(t.created_at));
    let requested = i32::try_from(tasks.len()).map_err(internal)?;
    let row = sqlx::query(concat!(
        "with ",
        quota_cte!(),
        ", counted as (
             insert into usage as g (user_id, day, used)
             select $1, $2::date, $6 from quota where daily_limit >= $6
             on conflict (user_id, day) do update set used = g.used + $6
             where g.used + $6 <= (select daily_limit from quota)
             returning g.used
         ), created as (
             insert into tasks (id, user_id, content, done, day, created_at, updated_at)
             select t.id, $1, t.content, false, $2::date, $5, $5
             from counted, unnest($3::uuid[], $4::text[]) as t(id, content)
         )
         select quota.*, counted.used from quota left join counted on true"
    ))
    .bind(user_id)
    .bind(window.day.to_string())
    .bind(&ids)
    .bind(&contents)
    .bind(created_at)
    .bind(requested)
    .fetch_optional(executor)
    .await
    .map_err(classify)?
    .ok_or_else(|| internal(anyhow::anyhow!("no user {user_id}")))?;
    decode(&row, |r| Ok((in_force(r)?, rows::optional_count(r, "used")?)))
}

/// Creates `tasks` (made with ids, day and instant already) for `user_id`, all or
/// nothing; with `key`, a repeat gets the first answer.
pub(super) async fn create(
    c: &mut PgConnection,
    user_id: Uuid,
    tasks: Vec<Task>,
    key: Option<IdempotencyKey>,
    window: DayWindow,
    timezone: TimeZoneName,
    now: Timestamp,
) -> Result<CreatedBatch> {
    let (limit, used) = match key {
        // One statement, so one implicit transaction and one round trip.
        None => consume_and_insert(&mut *c, user_id, &tasks, &window).await?,
        Some(key) => {
            // The key is claimed first, in the transaction that creates the tasks. A
            // concurrent request with the same key (on any instance) waits on the
            // claim's row until this transaction ends, then finds the key taken and
            // answers from it; if this one is refused, its claim goes with it.
            let mut tx = c.begin().await.map_err(classify)?;
            sqlx::query("delete from idempotency_keys where user_id = $1 and key = $2 and created_at <= $3")
                .bind(user_id)
                .bind(&key.key)
                .bind(micros(idempotency::remembered_since(now)))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            let first = tasks.first().ok_or_else(|| internal(anyhow::anyhow!("an empty batch")))?;
            let claimed = sqlx::query(
                "insert into idempotency_keys (user_id, key, fingerprint, task_id, content, day, created_at, batch)
                 values ($1, $2, $3, $4, '', $5::date, $6, $7) on conflict (user_id, key) do nothing",
            )
            .bind(user_id)
            .bind(&key.key)
            .bind(key.fingerprint.as_slice())
            .bind(first.id)
            .bind(window.day.to_string())
            .bind(micros(now))
            .bind(encode_batch(&tasks))
            .execute(&mut *tx)
            .await
            .map_err(classify)?
            .rows_affected()
                == 1;
            if !claimed {
                let earlier = remembered(&mut tx, user_id, &key).await?;
                tx.commit().await.map_err(classify)?;
                return Ok(earlier);
            }
            let (limit, used) = consume_and_insert(&mut *tx, user_id, &tasks, &window).await?;
            if used.is_some() {
                tx.commit().await.map_err(classify)?;
            } else {
                tx.rollback().await.map_err(classify)?;
            }
            (limit, used)
        }
    };
    match used {
        Some(used) => {
            Ok(CreatedBatch::Tasks(tasks, QuotaStatus::new(DayQuota { in_force: limit, used }, window, timezone)))
        }
        None => {
            // Refused: read the counter as committed now (the statement's own snapshot
            // may predate the creates that used the day up).
            let used = used_on(&mut *c, user_id, window.day).await?;
            Ok(CreatedBatch::OverLimit(QuotaStatus::new(DayQuota { in_force: limit, used }, window, timezone)))
        }
    }
}

/// The answer kept with `key`, which another request claimed first.
async fn remembered(c: &mut PgConnection, user_id: Uuid, key: &IdempotencyKey) -> Result<CreatedBatch> {
    let row = sqlx::query(
        "select fingerprint, batch, to_char(day, 'YYYY-MM-DD') as day, created_at
         from idempotency_keys where user_id = $1 and key = $2",
    )
    .bind(user_id)
    .bind(&key.key)
    .fetch_one(&mut *c)
    .await
    .map_err(classify)?;
    let (fingerprint, batch, day): (Vec<u8>, Option<String>, String) =
        decode(&row, |r| Ok((r.try_get("fingerprint")?, r.try_get("batch")?, r.try_get("day")?)))?;
    // A key first used by a single create has another fingerprint (its route differs).
    let (true, Some(batch)) = (fingerprint == key.fingerprint, batch) else { return Ok(CreatedBatch::KeyReused) };
    let created_at = decode(&row, |r| rows::timestamp(r, "created_at"))?;
    let day = day.parse().map_err(internal)?;
    let tasks = decode_batch(&batch)?.into_iter().map(|(id, content)| Task::new(id, content, day, created_at));
    Ok(CreatedBatch::Replay(tasks.collect()))
}
