//! Webhooks on PostgreSQL: the webhooks themselves, the claim of due events and the
//! record of attempts.
//!
//! The outbox rows are written by the changes they report, in the same statement: a
//! create's statement (`tasks::consume_and_insert`, `batch::consume_and_insert`) has an
//! `outbox` CTE that inserts, only if the task was inserted, one row per enabled webhook
//! of the user that asked for the event (`task.created`, and `quota.exhausted` when the
//! day's counter reached the limit); a user without webhooks costs one probe of
//! `webhooks_by_user`. A delete does the same; an update, whose task is known only
//! after it ran, writes its event in the update's transaction (`enqueue`).
//!
//! Instances claim due events with `for update skip locked` and a lease, so two never
//! hold the same event at once, and an instance that dies holding one only delays it.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::rows::{decode, micros};
use super::{PostgresStore, bounded, classify, rows};
use crate::domain::webhooks::{Attempt, Delivery, DueEvent, EventType, EventTypes, Next, Webhook};
use crate::store::{AttemptRecord, NewWebhook, Result, WebhookStore, new_id};

const WEBHOOK_COLUMNS: &str = "id, url, events, secret, created_at, disabled";

fn webhook(row: &PgRow) -> Result<Webhook, sqlx::Error> {
    let events: String = row.try_get("events")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: EventTypes::from_stored(&events)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown event in {events:?}").into()))?,
        secret: row.try_get("secret")?,
        created_at: rows::timestamp(row, "created_at")?,
        disabled: row.try_get("disabled")?,
    })
}

fn optional_time(row: &PgRow, column: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    match row.try_get::<Option<i64>, _>(column)? {
        Some(_) => rows::timestamp(row, column).map(Some),
        None => Ok(None),
    }
}

fn status(row: &PgRow, column: &str) -> Result<Option<u16>, sqlx::Error> {
    row.try_get::<Option<i32>, _>(column)?
        .map(|s| u16::try_from(s).map_err(|e| sqlx::Error::Decode(e.into())))
        .transpose()
}

/// Writes `event_type` with `data` for each of the user's enabled webhooks that asked
/// for it, on `c` (the transaction of the change it reports).
pub(super) async fn enqueue(
    c: &mut PgConnection,
    user_id: Uuid,
    event_type: EventType,
    data: &str,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "insert into webhook_events (id, webhook_id, type, occurred_at, data, next_attempt_at)
         select gen_random_uuid(), id, $2, $3, $4, $3 from webhooks
         where user_id = $1 and not disabled and events like '% ' || $2 || ' %'",
    )
    .bind(user_id)
    .bind(event_type.as_str())
    .bind(micros(now))
    .bind(data)
    .execute(&mut *c)
    .await
    .map(drop)
    .map_err(classify)
}

/// The count and the insert in one transaction, after locking the user's row, so that
/// concurrent creates (on any instance) cannot pass `max` together.
async fn create(
    c: &mut PgConnection,
    user_id: Uuid,
    new: NewWebhook,
    max: u32,
    now: Timestamp,
) -> Result<Option<Webhook>> {
    let mut tx = c.begin().await.map_err(classify)?;
    sqlx::query("select 1 from users where id = $1 for no key update")
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    let row = sqlx::query(&format!(
        "insert into webhooks (id, user_id, url, events, secret, created_at)
         select $1, $2, $3, $4, $5, $6 where (select count(*) from webhooks where user_id = $2) < $7
         returning {WEBHOOK_COLUMNS}"
    ))
    .bind(new_id(now))
    .bind(user_id)
    .bind(&new.url)
    .bind(new.events.to_stored())
    .bind(&new.secret)
    .bind(micros(now))
    .bind(i64::from(max))
    .fetch_optional(&mut *tx)
    .await
    .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    row.as_ref().map(|r| decode(r, webhook)).transpose()
}

async fn deliveries(c: &mut PgConnection, user_id: Uuid, id: Uuid, limit: u32) -> Result<Option<Vec<Delivery>>> {
    let owned = sqlx::query("select 1 from webhooks where id = $1 and user_id = $2")
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    if owned.is_none() {
        return Ok(None);
    }
    let found = sqlx::query(
        "select id, type, occurred_at, attempts, last_status, last_error, next_attempt_at, delivered_at
         from webhook_events where webhook_id = $1 order by occurred_at desc, id desc limit $2",
    )
    .bind(id)
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    let mut events = Vec::with_capacity(found.len());
    for row in &found {
        events.push(decode(row, |r| {
            Ok(Delivery {
                event_id: r.try_get("id")?,
                event_type: r.try_get("type")?,
                occurred_at: rows::timestamp(r, "occurred_at")?,
                attempts: rows::count(r, "attempts")?,
                last_status: status(r, "last_status")?,
                last_error: r.try_get("last_error")?,
                next_attempt_at: optional_time(r, "next_attempt_at")?,
                delivered_at: optional_time(r, "delivered_at")?,
                log: Vec::new(),
            })
        })?);
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let attempts = sqlx::query(
        "select event_id, at, status, error from webhook_attempts where event_id = any($1) order by event_id, attempt",
    )
    .bind(&ids)
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    for row in &attempts {
        let (event_id, attempt) = decode(row, |r| {
            let event_id: Uuid = r.try_get("event_id")?;
            let at = rows::timestamp(r, "at")?;
            Ok((event_id, Attempt { at, status: status(r, "status")?, error: r.try_get("error")? }))
        })?;
        if let Some(event) = events.iter_mut().find(|e| e.event_id == event_id) {
            event.log.push(attempt);
        }
    }
    Ok(Some(events))
}

/// One statement: lock due rows no one else holds (`skip locked`: a concurrent claimer
/// takes others, never waits), lease them, and return them with their webhook.
async fn claim(c: &mut PgConnection, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<DueEvent>> {
    let claimed = sqlx::query(
        "with due as (
             select e.id from webhook_events e join webhooks w on w.id = e.webhook_id
             where e.next_attempt_at <= $1 and (e.locked_until is null or e.locked_until <= $1) and not w.disabled
             order by e.next_attempt_at limit $3
             for update of e skip locked
         )
         update webhook_events e set locked_until = $2 from due, webhooks w
         where e.id = due.id and w.id = e.webhook_id
         returning e.id, e.webhook_id, w.url, w.secret, e.type, e.occurred_at, e.data, e.attempts",
    )
    .bind(micros(now))
    .bind(micros(lease_until))
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    claimed
        .iter()
        .map(|row| {
            decode(row, |r| {
                Ok(DueEvent {
                    event_id: r.try_get("id")?,
                    webhook_id: r.try_get("webhook_id")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    event_type: r.try_get("type")?,
                    occurred_at: rows::timestamp(r, "occurred_at")?,
                    data: r.try_get("data")?,
                    attempts: rows::count(r, "attempts")?,
                })
            })
        })
        .collect()
}

async fn record(c: &mut PgConnection, a: &AttemptRecord) -> Result<()> {
    let (next, delivered) = match a.next {
        Next::Delivered => (None, Some(micros(a.at))),
        Next::RetryAt(at) => (Some(micros(at)), None),
        Next::GiveUp => (None, None),
    };
    let attempt = i32::try_from(a.attempt).unwrap_or(i32::MAX);
    let status = a.status.map(i32::from);
    sqlx::query(
        "with logged as (
             insert into webhook_attempts (event_id, attempt, at, status, error) values ($1, $2, $3, $4, $5)
             on conflict do nothing
         ), event as (
             update webhook_events set attempts = $2, last_status = $4, last_error = $5, next_attempt_at = $6,
                 delivered_at = $7, locked_until = null
             where id = $1
         )
         update webhooks set disabled = true where id = $8 and $9",
    )
    .bind(a.event_id)
    .bind(attempt)
    .bind(micros(a.at))
    .bind(status)
    .bind(&a.error)
    .bind(next)
    .bind(delivered)
    .bind(a.webhook_id)
    .bind(a.next == Next::GiveUp)
    .execute(&mut *c)
    .await
    .map(drop)
    .map_err(classify)
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn create_webhook(
        &self,
        user_id: Uuid,
        new: NewWebhook,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<Webhook>> {
        bounded(self.db.run(async |c| create(c, user_id, new, max, now).await)).await
    }

    async fn webhooks(&self, user_id: Uuid) -> Result<Vec<Webhook>> {
        bounded(self.db.run(async |c| {
            sqlx::query(&format!("select {WEBHOOK_COLUMNS} from webhooks where user_id = $1 order by id"))
                .bind(user_id)
                .fetch_all(&mut *c)
                .await
                .map_err(classify)?
                .iter()
                .map(|r| decode(r, webhook))
                .collect()
        }))
        .await
    }

    async fn delete_webhook(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        bounded(self.db.run(async |c| {
            // An event a concurrent create writes after this statement's snapshot is
            // left behind: never sent (the claim joins `webhooks`), pruned with its age.
            let row = sqlx::query(
                "with hook as (
                     delete from webhooks where id = $1 and user_id = $2 returning id
                 ), events as (
                     delete from webhook_events where webhook_id in (select id from hook) returning id
                 ), attempts as (
                     delete from webhook_attempts where event_id in (select id from events)
                 )
                 select count(*) as found from hook",
            )
            .bind(id)
            .bind(user_id)
            .fetch_one(&mut *c)
            .await
            .map_err(classify)?;
            Ok(decode(&row, |r| r.try_get::<i64, _>("found"))? > 0)
        }))
        .await
    }

    async fn deliveries(&self, user_id: Uuid, id: Uuid, limit: u32) -> Result<Option<Vec<Delivery>>> {
        bounded(self.db.run(async |c| deliveries(c, user_id, id, limit).await)).await
    }

    async fn claim_due_events(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<DueEvent>> {
        bounded(self.db.run(async |c| claim(c, now, lease_until, limit).await)).await
    }

    async fn record_attempt(&self, attempt: AttemptRecord) -> Result<()> {
        bounded(self.db.run(async |c| record(c, &attempt).await)).await
    }
}
