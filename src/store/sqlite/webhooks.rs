//! Webhooks on SQLite: the webhooks themselves, the outbox rows a task's change writes
//! in its own writer job (so in its transaction), the claim of due events and the
//! record of attempts.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use super::SqliteStore;
use super::executor::Mode;
use super::rows::{conversion, from_micros, internal, micros, uuid_at};
use crate::domain::Task;
use crate::domain::webhooks::{
    Attempt, Delivery, DueEvent, EventType, EventTypes, Next, Webhook, exhausted_data, exhausts, task_data,
};
use crate::store::{AttemptRecord, NewWebhook, Result, WebhookStore, new_id};

/// A user's enabled webhooks, as a create needs them: id and events.
pub(super) type Hooks = Vec<(Uuid, EventTypes)>;

/// An event to write to the outbox, for one webhook.
pub(super) struct Outgoing {
    webhook_id: Uuid,
    event_type: EventType,
    data: String,
}

const WEBHOOK_COLUMNS: &str = "id, url, events, secret, created_at, disabled";

fn webhook_from_row(row: &Row) -> rusqlite::Result<Webhook> {
    let events: String = row.get(2)?;
    Ok(Webhook {
        id: uuid_at(row, 0)?,
        url: row.get(1)?,
        events: EventTypes::from_stored(&events)
            .ok_or_else(|| conversion(anyhow::anyhow!("unknown event in {events:?}")))?,
        secret: row.get(3)?,
        created_at: from_micros(row.get(4)?)?,
        disabled: row.get(5)?,
    })
}

/// The user's enabled webhooks.
pub(super) fn enabled_hooks(c: &Connection, user_id: Uuid) -> Result<Hooks> {
    c.prepare_cached("select id, events from webhooks where user_id = ?1 and disabled = 0")
        .and_then(|mut s| {
            s.query_map([user_id.to_string()], |r| {
                let events: String = r.get(1)?;
                Ok((uuid_at(r, 0)?, EventTypes::from_stored(&events).unwrap_or_default()))
            })?
            .collect()
        })
        .map_err(internal)
}

/// The events a create of `tasks` writes, given the user's `hooks`: `task.created` for
/// each task, and `quota.exhausted` if it used the day's last unit (`used` units were
/// used before it, of `limit`).
pub(super) fn events_of_create(hooks: &Hooks, tasks: &[Task], limit: u32, used: u32) -> Vec<Outgoing> {
    let mut out = Vec::new();
    if hooks.is_empty() {
        return out;
    }
    let requested = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
    let exhausted = exhausts(limit, used, requested);
    for (webhook_id, events) in hooks {
        if events.contains(EventType::TaskCreated) {
            for task in tasks {
                out.push(Outgoing {
                    webhook_id: *webhook_id,
                    event_type: EventType::TaskCreated,
                    data: task_data(task),
                });
            }
        }
        if let Some(first) = tasks.first()
            && exhausted
            && events.contains(EventType::QuotaExhausted)
        {
            out.push(Outgoing {
                webhook_id: *webhook_id,
                event_type: EventType::QuotaExhausted,
                data: exhausted_data(first.day, limit),
            });
        }
    }
    out
}

/// Runs `change`, then writes `events`, as one atomic step: with no events, `change`
/// alone (a create's one statement keeps needing no savepoint); with some, both inside
/// a savepoint, so that a failure of either undoes both.
pub(super) fn with_events<T>(
    c: &Connection,
    events: &[Outgoing],
    now: Timestamp,
    change: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    if events.is_empty() {
        return change(c);
    }
    c.execute_batch("savepoint outbox").map_err(internal)?;
    let done = change(c).and_then(|t| insert_events(c, events, now).map(|()| t));
    let end = if done.is_ok() { "release outbox" } else { "rollback to outbox; release outbox" };
    c.execute_batch(end).map_err(internal)?;
    done
}

fn insert_events(c: &Connection, events: &[Outgoing], now: Timestamp) -> Result<()> {
    let mut insert = c
        .prepare_cached(
            "insert into webhook_events (id, webhook_id, type, occurred_at, data, next_attempt_at)
             values (?1, ?2, ?3, ?4, ?5, ?4)",
        )
        .map_err(internal)?;
    for e in events {
        insert
            .execute(params![
                new_id(now).to_string(),
                e.webhook_id.to_string(),
                e.event_type.as_str(),
                micros(now),
                e.data
            ])
            .map_err(internal)?;
    }
    Ok(())
}

/// Writes `event_type` with `data` for each of the user's webhooks that asked for it;
/// inside the job of the change it reports.
pub(super) fn enqueue(c: &Connection, user_id: Uuid, event_type: EventType, data: &str, now: Timestamp) -> Result<()> {
    let events: Vec<Outgoing> = enabled_hooks(c, user_id)?
        .into_iter()
        .filter(|(_, events)| events.contains(event_type))
        .map(|(webhook_id, _)| Outgoing { webhook_id, event_type, data: data.to_owned() })
        .collect();
    insert_events(c, &events, now)
}

fn create(c: &Connection, user_id: Uuid, new: NewWebhook, max: u32, now: Timestamp) -> Result<Option<Webhook>> {
    let held: u32 = c
        .prepare_cached("select count(*) from webhooks where user_id = ?1")
        .and_then(|mut s| s.query_row([user_id.to_string()], |r| r.get(0)))
        .map_err(internal)?;
    if held >= max {
        return Ok(None);
    }
    let hook = Webhook {
        id: new_id(now),
        url: new.url,
        events: new.events,
        secret: new.secret,
        created_at: now,
        disabled: false,
    };
    c.prepare_cached(
        "insert into webhooks (id, user_id, url, events, secret, created_at) values (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            hook.id.to_string(),
            user_id.to_string(),
            hook.url,
            hook.events.to_stored(),
            hook.secret,
            micros(now)
        ])
    })
    .map_err(internal)?;
    Ok(Some(hook))
}

fn deliveries(c: &Connection, user_id: Uuid, id: Uuid, limit: u32) -> Result<Option<Vec<Delivery>>> {
    let (user, id) = (user_id.to_string(), id.to_string());
    let owned: i64 = c
        .query_row("select count(*) from webhooks where id = ?1 and user_id = ?2", params![id, user], |r| r.get(0))
        .map_err(internal)?;
    if owned == 0 {
        return Ok(None);
    }
    let mut events: Vec<Delivery> = c
        .prepare_cached(
            "select id, type, occurred_at, attempts, last_status, last_error, next_attempt_at, delivered_at
             from webhook_events where webhook_id = ?1 order by id desc limit ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![id, limit], |r| {
                Ok(Delivery {
                    event_id: uuid_at(r, 0)?,
                    event_type: r.get(1)?,
                    occurred_at: from_micros(r.get(2)?)?,
                    attempts: r.get(3)?,
                    last_status: r.get(4)?,
                    last_error: r.get(5)?,
                    next_attempt_at: r.get::<_, Option<i64>>(6)?.map(from_micros).transpose()?,
                    delivered_at: r.get::<_, Option<i64>>(7)?.map(from_micros).transpose()?,
                    log: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    let mut attempts = c
        .prepare_cached("select at, status, error from webhook_attempts where event_id = ?1 order by attempt")
        .map_err(internal)?;
    for event in &mut events {
        event.log = attempts
            .query_map([event.event_id.to_string()], |r| {
                Ok(Attempt { at: from_micros(r.get(0)?)?, status: r.get(1)?, error: r.get(2)? })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Attempt>>>())
            .map_err(internal)?;
    }
    Ok(Some(events))
}

fn claim(c: &Connection, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<DueEvent>> {
    let due: Vec<DueEvent> = c
        .prepare_cached(
            "select e.id, e.webhook_id, w.url, w.secret, e.type, e.occurred_at, e.data, e.attempts
             from webhook_events e join webhooks w on w.id = e.webhook_id
             where e.next_attempt_at <= ?1 and (e.locked_until is null or e.locked_until <= ?1) and w.disabled = 0
             order by e.next_attempt_at limit ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![micros(now), limit], |r| {
                Ok(DueEvent {
                    event_id: uuid_at(r, 0)?,
                    webhook_id: uuid_at(r, 1)?,
                    url: r.get(2)?,
                    secret: r.get(3)?,
                    event_type: r.get(4)?,
                    occurred_at: from_micros(r.get(5)?)?,
                    data: r.get(6)?,
                    attempts: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    let mut lease = c.prepare_cached("update webhook_events set locked_until = ?2 where id = ?1").map_err(internal)?;
    for event in &due {
        lease.execute(params![event.event_id.to_string(), micros(lease_until)]).map_err(internal)?;
    }
    Ok(due)
}

fn record(c: &Connection, a: &AttemptRecord) -> Result<()> {
    let event = a.event_id.to_string();
    c.prepare_cached(
        "insert or ignore into webhook_attempts (event_id, attempt, at, status, error)
         values (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![event, a.attempt, micros(a.at), a.status, a.error]))
    .map_err(internal)?;
    let (next, delivered) = match a.next {
        Next::Delivered => (None, Some(micros(a.at))),
        Next::RetryAt(at) => (Some(micros(at)), None),
        Next::GiveUp => (None, None),
    };
    c.prepare_cached(
        "update webhook_events set attempts = ?2, last_status = ?3, last_error = ?4, next_attempt_at = ?5,
             delivered_at = ?6, locked_until = null where id = ?1",
    )
    .and_then(|mut s| s.execute(params![event, a.attempt, a.status, a.error, next, delivered]))
    .map_err(internal)?;
    if a.next == Next::GiveUp {
        c.execute("update webhooks set disabled = 1 where id = ?1", [a.webhook_id.to_string()]).map_err(internal)?;
    }
    Ok(())
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(
        &self,
        user_id: Uuid,
        new: NewWebhook,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<Webhook>> {
        // Moves the writer's epoch (the default), so the quota memo forgets whose
        // webhooks it knew.
        self.executor.write(move |c| create(c, user_id, new, max, now)).await
    }

    async fn webhooks(&self, user_id: Uuid) -> Result<Vec<Webhook>> {
        self.executor
            .read(move |c| {
                c.prepare_cached(&format!("select {WEBHOOK_COLUMNS} from webhooks where user_id = ?1 order by id"))
                    .and_then(|mut s| s.query_map([user_id.to_string()], webhook_from_row)?.collect())
                    .map_err(internal)
            })
            .await
    }

    async fn delete_webhook(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        self.executor
            .write(move |c| {
                let (user, id) = (user_id.to_string(), id.to_string());
                let owned: i64 = c
                    .query_row("select count(*) from webhooks where id = ?1 and user_id = ?2", params![id, user], |r| {
                        r.get(0)
                    })
                    .map_err(internal)?;
                if owned == 0 {
                    return Ok(false);
                }
                c.execute(
                    "delete from webhook_attempts where event_id in (select id from webhook_events where webhook_id = ?1)",
                    [&id],
                )
                .and_then(|_| c.execute("delete from webhook_events where webhook_id = ?1", [&id]))
                .and_then(|_| c.execute("delete from webhooks where id = ?1", [&id]))
                .map(|n| n > 0)
                .map_err(internal)
            })
            .await
    }

    async fn deliveries(&self, user_id: Uuid, id: Uuid, limit: u32) -> Result<Option<Vec<Delivery>>> {
        self.executor.read(move |c| deliveries(c, user_id, id, limit)).await
    }

    async fn claim_due_events(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<DueEvent>> {
        // The outbox is nothing the quota memo holds: the epoch stays.
        let mode = Mode::SAVEPOINT.keeping_epoch();
        self.executor.write_with(mode, move |c| claim(c, now, lease_until, limit)).await
    }

    async fn record_attempt(&self, attempt: AttemptRecord) -> Result<()> {
        // Disabling a webhook changes what the memo holds of its user; anything else
        // here changes only the outbox.
        let mode = if attempt.next == Next::GiveUp { Mode::SAVEPOINT } else { Mode::SAVEPOINT.keeping_epoch() };
        self.executor.write_with(mode, move |c| record(c, &attempt)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_whose_events_cannot_be_written_is_undone_with_them() {
        let c = Connection::open_in_memory().unwrap();
        for sql in super::super::MIGRATIONS {
            c.execute_batch(sql).unwrap();
        }
        c.execute_batch(
            "create table probe (x integer);
             create trigger refuse before insert on webhook_events begin select raise(abort, 'refused'); end;
             begin",
        )
        .unwrap();
        let change = |c: &Connection| c.execute("insert into probe values (1)", []).map_err(internal);
        let events = [Outgoing { webhook_id: Uuid::now_v7(), event_type: EventType::TaskCreated, data: "{}".into() }];

        assert!(with_events(&c, &events, Timestamp::UNIX_EPOCH, change).is_err());
        let rows: i64 = c.query_row("select count(*) from probe", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0, "the change went with its events");
        assert!(!c.is_autocommit(), "the surrounding transaction goes on");
        with_events(&c, &[], Timestamp::UNIX_EPOCH, change).unwrap();
        let rows: i64 = c.query_row("select count(*) from probe", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1, "without events, the change alone");
    }

    #[test]
    fn a_user_without_webhooks_gets_no_events_and_one_with_them_gets_what_each_asked_for() {
        let task = Task::new(Uuid::now_v7(), "x".into(), jiff::civil::date(2026, 6, 15), Timestamp::UNIX_EPOCH);
        assert!(events_of_create(&Vec::new(), std::slice::from_ref(&task), 5, 4).is_empty());
        let created = EventTypes::parse(&["task.created"]).unwrap();
        let exhausted = EventTypes::parse(&["quota.exhausted"]).unwrap();
        let hooks = vec![(Uuid::now_v7(), created), (Uuid::now_v7(), exhausted)];
        let types = |used| {
            events_of_create(&hooks, std::slice::from_ref(&task), 5, used)
                .iter()
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
        };
        assert_eq!(types(3), [EventType::TaskCreated]);
        assert_eq!(types(4), [EventType::TaskCreated, EventType::QuotaExhausted]);
    }
}
