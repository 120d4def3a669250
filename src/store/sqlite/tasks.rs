//! Tasks and the quota's counter: the create step that checks, consumes and inserts in
//! the writer's transaction, idempotency keys, and the id ranges of a day.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::SqliteStore;
use super::executor::Mode;
use super::rows::{
    TASK_COLUMNS, conversion, from_micros, internal, limit_columns, limits_at, micros, task_from_row, uuid_at,
};
use crate::domain::limits::{LimitInForce, limit_in_force};
use crate::domain::{
    DayQuota, DayWindow, IdempotencyKey, QuotaStatus, Task, TaskContent, TaskFilter, TaskPatch, TimeZoneName, User,
    admits, idempotency,
};
use crate::store::{Created, CreatedBatch, Result, TaskStore, decode_batch, encode_batch, new_id};

/// The writer's record of users' limits and their use on one day each, as its own
/// transactions left them, so that a create need not read them back: that read was a
/// tenth of the writer's work per create (bench/README.md).
///
/// Only creates change what it records, and each records its own change once all its
/// statements succeeded. Anything else that could change it (any other write, a batch
/// rolled back, a job that panicked, another process committing) moves the writer's
/// epoch (`writer::Epoch`), and the memo starts empty again: every write mode but a
/// create's moves it (the epoch rule, at `writer::Mode`). `memo_properties` checks,
/// over random runs, that it always holds what the database holds.
#[derive(Default)]
pub(super) struct QuotaMemo {
    epoch: u64,
    /// user -> (day, limit in force on that day, used on that day)
    users: HashMap<Uuid, (Date, LimitInForce, u32)>,
}

/// Users the memo records at most; past that it starts over (about 40 bytes each).
const MEMO_USERS: usize = 100_000;

impl QuotaMemo {
    /// `limit_and_use`, from the record when it holds and else from the database.
    fn limit_and_use(&mut self, c: &Connection, epoch: u64, user_id: Uuid, day: Date) -> Result<DayQuota> {
        if self.epoch != epoch || self.users.len() >= MEMO_USERS {
            self.users.clear();
            self.epoch = epoch;
        }
        if let Some((on, in_force, used)) = self.users.get(&user_id)
            && *on == day
        {
            return Ok(DayQuota { in_force: in_force.clone(), used: *used });
        }
        let quota = limit_and_use(c, user_id, day)?;
        self.users.insert(user_id, (day, quota.in_force.clone(), quota.used));
        Ok(quota)
    }

    /// The memo, for the writer's job that holds it. A create that panicked may have left
    /// it half changed: then it starts over, empty.
    pub(super) fn lock(memo: &Mutex<QuotaMemo>) -> MutexGuard<'_, QuotaMemo> {
        memo.lock().unwrap_or_else(|poisoned| {
            let mut memo = poisoned.into_inner();
            *memo = QuotaMemo::default();
            memo
        })
    }

    fn record(&mut self, user_id: Uuid, day: Date, quota: &DayQuota) {
        self.users.insert(user_id, (day, quota.in_force.clone(), quota.used));
    }
}

/// A create as the writer gets it: who, at which instant, in which local day and zone.
pub(super) struct NewTask {
    pub user_id: Uuid,
    pub window: DayWindow,
    pub timezone: TimeZoneName,
    pub content: TaskContent,
    pub idempotency: Option<IdempotencyKey>,
    pub now: Timestamp,
}

/// Checks and consumes a unit of `window`'s day and inserts the task, inside the
/// writer's transaction; with a key, answers a repeat from its first creation instead.
/// `memo` must be read and changed only by the writer, in writer epoch `epoch`.
pub(super) fn create(c: &Connection, memo: &mut QuotaMemo, epoch: u64, new: NewTask) -> Result<Created> {
    let NewTask { user_id, window, timezone, content, idempotency, now } = new;
    let idempotency = idempotency.as_ref();
    if let Some(key) = idempotency
        && let Some(earlier) = remembered(c, user_id, key, now)?
    {
        return Ok(earlier);
    }
    // The limit and the day's use are read here, inside the write transaction of the
    // one writer, so nothing can change them before the insert below, and a limit
    // changed an instant ago applies (docs/quota.md item 5).
    let mut quota = memo.limit_and_use(c, epoch, user_id, window.day)?;
    if !admits(quota.in_force.total(), quota.used, 1) {
        return Ok(Created::OverLimit(QuotaStatus::new(quota, window, timezone)));
    }
    // One statement: the insert, and the trigger `tasks_use_quota` counting it.
    let task = Task::new(new_id(now), content.into_string(), window.day, now);
    c.prepare_cached(
        "insert into tasks (id, user_id, content, done, day, created_at, updated_at)
             values (?1, ?2, ?3, 0, ?4, ?5, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![task.id.to_string(), user_id.to_string(), task.content, task.day.to_string(), micros(now)])
    })
    .map_err(internal)?;
    quota.used += 1;
    if let Some(key) = idempotency {
        remember(c, user_id, key, &task)?;
    }
    memo.record(user_id, window.day, &quota);
    Ok(Created::Task(task, QuotaStatus::new(quota, window, timezone)))
}

/// A batch as the writer gets it: as `NewTask`, with several contents.
pub(super) struct NewBatch {
    pub user_id: Uuid,
    pub window: DayWindow,
    pub timezone: TimeZoneName,
    pub contents: Vec<TaskContent>,
    pub idempotency: Option<IdempotencyKey>,
    pub now: Timestamp,
}

/// `create` for a batch, all or nothing: the job runs in a savepoint of its own, so a
/// failure part way leaves none of its tasks and none of its units.
pub(super) fn create_batch(c: &Connection, memo: &mut QuotaMemo, epoch: u64, new: NewBatch) -> Result<CreatedBatch> {
    let NewBatch { user_id, window, timezone, contents, idempotency, now } = new;
    if let Some(key) = &idempotency
        && let Some(earlier) = remembered_batch(c, user_id, key, now)?
    {
        return Ok(earlier);
    }
    let mut quota = memo.limit_and_use(c, epoch, user_id, window.day)?;
    let requested = u32::try_from(contents.len()).unwrap_or(u32::MAX);
    if !admits(quota.in_force.total(), quota.used, requested) {
        return Ok(CreatedBatch::OverLimit(QuotaStatus::new(quota, window, timezone)));
    }
    let mut insert = c
        .prepare_cached(
            "insert into tasks (id, user_id, content, done, day, created_at, updated_at)
             values (?1, ?2, ?3, 0, ?4, ?5, ?5)",
        )
        .map_err(internal)?;
    let (user, day) = (user_id.to_string(), window.day.to_string());
    let mut tasks = Vec::with_capacity(contents.len());
    for content in contents {
        let task = Task::new(new_id(now), content.into_string(), window.day, now);
        insert.execute(params![task.id.to_string(), user, task.content, day, micros(now)]).map_err(internal)?;
        tasks.push(task);
    }
    if let Some(key) = &idempotency {
        remember_batch(c, user_id, key, &tasks)?;
    }
    quota.used += requested;
    memo.record(user_id, window.day, &quota);
    Ok(CreatedBatch::Tasks(tasks, QuotaStatus::new(quota, window, timezone)))
}

/// `remembered` for a batch: its tasks as first created, from the key's `batch` column.
fn remembered_batch(
    c: &Connection,
    user_id: Uuid,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<Option<CreatedBatch>> {
    let since = micros(idempotency::remembered_since(now));
    let found = c
        .prepare_cached(
            "select fingerprint, batch, day, created_at from idempotency_keys
             where user_id = ?1 and key = ?2 and created_at > ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![user_id.to_string(), key.key, since], |r| {
                let fingerprint: Vec<u8> = r.get(0)?;
                let batch: Option<String> = r.get(1)?;
                let day: String = r.get(2)?;
                Ok((fingerprint, batch, day, r.get::<_, i64>(3)?))
            })
            .optional()
        })
        .map_err(internal)?;
    let Some((fingerprint, batch, day, created_at)) = found else { return Ok(None) };
    // A key first used by a single create has another fingerprint (its route differs).
    let (true, Some(batch)) = (fingerprint == key.fingerprint, batch) else { return Ok(Some(CreatedBatch::KeyReused)) };
    let day = day.parse().map_err(internal)?;
    let created_at = from_micros(created_at).map_err(internal)?;
    let tasks = decode_batch(&batch)?.into_iter().map(|(id, content)| Task::new(id, content, day, created_at));
    Ok(Some(CreatedBatch::Replay(tasks.collect())))
}

fn remember_batch(c: &Connection, user_id: Uuid, key: &IdempotencyKey, tasks: &[Task]) -> Result<()> {
    let Some(first) = tasks.first() else { return Ok(()) };
    c.prepare_cached(
        "insert or replace into idempotency_keys
             (user_id, key, fingerprint, task_id, content, day, created_at, batch)
         values (?1, ?2, ?3, ?4, '', ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            user_id.to_string(),
            key.key,
            key.fingerprint,
            first.id.to_string(),
            first.day.to_string(),
            micros(first.created_at),
            encode_batch(tasks)
        ])
    })
    .map(drop)
    .map_err(internal)
}

/// A user's limit in force on local `day` (`limits::limit_in_force`: their settings and
/// the boosts covering the day) and the units used on it. Inside the writer's
/// transaction, this is the read the quota decides on.
pub(super) fn limit_and_use(conn: &Connection, user_id: Uuid, day: Date) -> Result<DayQuota> {
    conn.prepare_cached(concat!(
        "select ",
        limit_columns!(),
        ", coalesce((select sum(b.extra) from boosts b
                     where b.user_id = u.id and b.from_day <= ?2 and b.to_day >= ?2), 0),
           coalesce((select g.used from usage g where g.user_id = u.id and g.day = ?2), 0)
         from users u where u.id = ?1"
    ))
    .and_then(|mut s| {
        s.query_row(params![user_id.to_string(), day.to_string()], |r| {
            let settings = limits_at(r, 0)?;
            let boost: i64 = r.get(8)?;
            let in_force = limit_in_force(&settings, day, u64::try_from(boost).unwrap_or(0));
            Ok(DayQuota { in_force, used: r.get(9)? })
        })
    })
    .map_err(internal)
}

pub(super) fn used_on(conn: &Connection, user_id: Uuid, day: Date) -> Result<u32> {
    conn.prepare_cached("select used from usage where user_id = ?1 and day = ?2")
        .and_then(|mut s| s.query_row(params![user_id.to_string(), day.to_string()], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(internal)
}

pub(super) fn load_task(conn: &Connection, user_id: Uuid, id: Uuid) -> Result<Option<Task>> {
    conn.prepare_cached(&format!("select {TASK_COLUMNS} from tasks where id = ?1 and user_id = ?2"))
        .and_then(|mut s| s.query_row([id.to_string(), user_id.to_string()], task_from_row).optional())
        .map_err(internal)
}

/// The answer to a repeat of an idempotent create, if `key` was used in the window.
pub(super) fn remembered(
    c: &Connection,
    user_id: Uuid,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<Option<Created>> {
    let since = micros(idempotency::remembered_since(now));
    let found = c
        .prepare_cached(
            "select fingerprint, task_id, content, day, created_at from idempotency_keys
             where user_id = ?1 and key = ?2 and created_at > ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![user_id.to_string(), key.key, since], |r| {
                let fingerprint: Vec<u8> = r.get(0)?;
                let day: String = r.get(3)?;
                let created_at = from_micros(r.get(4)?)?;
                let day = day.parse().map_err(|e: jiff::Error| conversion(e.into()))?;
                let task = Task::new(uuid_at(r, 1)?, r.get(2)?, day, created_at);
                Ok((fingerprint, task))
            })
            .optional()
        })
        .map_err(internal)?;
    Ok(found.map(
        |(fingerprint, task)| {
            if fingerprint == key.fingerprint { Created::Replay(task) } else { Created::KeyReused }
        },
    ))
}

/// Records `key` with the task it created, replacing an expired use of the same key.
pub(super) fn remember(c: &Connection, user_id: Uuid, key: &IdempotencyKey, task: &Task) -> Result<()> {
    c.prepare_cached(
        "insert or replace into idempotency_keys (user_id, key, fingerprint, task_id, content, day, created_at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            user_id.to_string(),
            key.key,
            key.fingerprint,
            task.id.to_string(),
            task.content,
            task.day.to_string(),
            micros(task.created_at)
        ])
    })
    .map(drop)
    .map_err(internal)
}

/// Ids between which every task of local `day` lies, whatever its zone. Ids are UUIDv7,
/// which begin with their creation's unix milliseconds, and a local day lies within a
/// day of its UTC date on either side (zones run from UTC-12 to UTC+14), so two days'
/// margin on each side is safe; `day = ?` then picks the day's own.
pub(super) fn day_bounds(day: Date) -> (Uuid, Uuid) {
    let at = |d: Option<Date>| {
        let ms = d.and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok()).map_or(0, |z| z.timestamp().as_millisecond());
        Uuid::from_u128(u128::from(u64::try_from(ms).unwrap_or(0)) << 80)
    };
    let shift = |days: i64| day.checked_add(jiff::Span::new().days(days)).ok();
    (at(shift(-2)), at(shift(3)))
}

#[async_trait]
impl TaskStore for SqliteStore {
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
        self.executor.write_with(mode, move |c| create(c, &mut QuotaMemo::lock(&memo), epoch.get(), new)).await
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
        self.executor.write_with(mode, move |c| create_batch(c, &mut QuotaMemo::lock(&memo), epoch.get(), new)).await
    }

    async fn used(&self, user_id: Uuid, day: Date) -> Result<u32> {
        self.executor.read(move |c| used_on(c, user_id, day)).await
    }

    async fn day_quota(&self, user_id: Uuid, day: Date) -> Result<DayQuota> {
        self.executor.read(move |c| limit_and_use(c, user_id, day)).await
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
}

#[cfg(test)]
mod memo_properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_bounds_enclose_every_id_made_on_it_anywhere() {
        let (low, high) = day_bounds(jiff::civil::date(2026, 6, 15));
        for instant in ["2026-06-14T10:00:00Z", "2026-06-15T12:00:00Z", "2026-06-16T11:59:59Z"] {
            let id = new_id(instant.parse().unwrap()).to_string();
            assert!(low.to_string() <= id && id < high.to_string(), "{low} {id} {high}");
        }
    }
}
