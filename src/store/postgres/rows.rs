//! Rows into domain values, checked at run time; a row that does not decode is an
//! internal error, never a client's.

use jiff::Timestamp;
use sqlx::Row as _;
use sqlx::error::BoxDynError;
use sqlx::postgres::PgRow;

use super::classify;
use crate::domain::limits::{Adapted, LimitSettings};
use crate::domain::{AuditEntry, Role, Task, TimeZoneName, User, UserZone};
use crate::store::{Result, StoreError};

/// The user columns, for a query that names `users` as `u`.
/// With the user's plan's limit and whether it adapts, for `limits::base_limit`.
pub(super) const USER_COLUMNS: &str = "u.id, u.username, u.role, u.daily_limit, u.timezone, u.pending_timezone, \
     u.timezone_effective_at, u.created_at, u.limit_is_own, u.plan, \
     (select p.daily_limit from plans p where p.name = u.plan) as plan_limit, \
     (select p.adapt_step is not null from plans p where p.name = u.plan) as plan_adapts, \
     u.adapted_limit, to_char(u.adapted_from, 'YYYY-MM-DD') as adapted_from, u.adapted_before";
/// The task columns; the day as `YYYY-MM-DD` whatever the session's `DateStyle`.
pub(super) const TASK_COLUMNS: &str = "id, content, done, to_char(day, 'YYYY-MM-DD') as day, created_at, updated_at";
pub(super) const AUDIT_COLUMNS: &str = "id, actor_id, target_id, field, old_value, new_value, at";

type Decoded<T> = Result<T, sqlx::Error>;

fn bad(e: impl Into<BoxDynError>) -> sqlx::Error {
    sqlx::Error::Decode(e.into())
}

pub(super) fn timestamp(row: &PgRow, column: &str) -> Decoded<Timestamp> {
    Timestamp::from_microsecond(row.try_get(column)?).map_err(bad)
}

fn zone(name: &str) -> Decoded<TimeZoneName> {
    TimeZoneName::parse(name).map_err(|e| bad(e.message))
}

pub(super) fn count(row: &PgRow, column: &str) -> Decoded<u32> {
    u32::try_from(row.try_get::<i32, _>(column)?).map_err(bad)
}

pub(super) fn user(row: &PgRow) -> Decoded<User> {
    let role: String = row.try_get("role")?;
    let pending = match row.try_get::<Option<String>, _>("pending_timezone")? {
        Some(name) => Some((zone(&name)?, timestamp(row, "timezone_effective_at")?)),
        None => None,
    };
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: Role::parse(&role).ok_or_else(|| bad(format!("unknown role {role}")))?,
        limits: limits(row)?,
        zone: UserZone { current: zone(row.try_get("timezone")?)?, pending },
        created_at: timestamp(row, "created_at")?,
    })
}

/// The limit settings of `USER_COLUMNS`.
fn limits(row: &PgRow) -> Decoded<LimitSettings> {
    let plan = match row.try_get::<Option<String>, _>("plan")? {
        Some(name) => Some((
            name.into(),
            count(row, "plan_limit")?,
            row.try_get::<Option<bool>, _>("plan_adapts")?.unwrap_or(false),
        )),
        None => None,
    };
    let adapted = match (optional_count(row, "adapted_limit")?, row.try_get::<Option<String>, _>("adapted_from")?) {
        (Some(limit), Some(from)) => {
            Some(Adapted { limit, from: from.parse().map_err(bad)?, before: optional_count(row, "adapted_before")? })
        }
        _ => None,
    };
    Ok(LimitSettings { stored: count(row, "daily_limit")?, limit_is_own: row.try_get("limit_is_own")?, plan, adapted })
}

pub(super) fn task(row: &PgRow) -> Decoded<Task> {
    Ok(Task {
        id: row.try_get("id")?,
        content: row.try_get("content")?,
        done: row.try_get("done")?,
        day: row.try_get::<&str, _>("day")?.parse().map_err(bad)?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

pub(super) fn audit(row: &PgRow) -> Decoded<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        actor_id: row.try_get("actor_id")?,
        target_id: row.try_get("target_id")?,
        field: row.try_get("field")?,
        old_value: row.try_get("old_value")?,
        new_value: row.try_get("new_value")?,
        at: timestamp(row, "at")?,
    })
}

/// A quota counter (`used`, `daily_limit`) that may be SQL null.
pub(super) fn optional_count(row: &PgRow, column: &str) -> Decoded<Option<u32>> {
    row.try_get::<Option<i32>, _>(column)?.map(|n| u32::try_from(n).map_err(bad)).transpose()
}

pub(super) fn internal(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Internal(e.into())
}

pub(super) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

/// Decodes a row, an error in which is the store's fault.
pub(super) fn decode<T>(row: &PgRow, f: fn(&PgRow) -> Result<T, sqlx::Error>) -> Result<T> {
    f(row).map_err(classify)
}
