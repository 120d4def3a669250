//! Rows into domain values and back, checked at run time; a row that does not decode is
//! an internal error, never a client's.

use jiff::Timestamp;
use rusqlite::Row;
use uuid::Uuid;

use crate::domain::limits::{Adapted, LimitSettings};
use crate::domain::{Role, Task, TimeZoneName, User, UserZone};
use crate::store::StoreError;

/// A user's limit settings, for a query that names `users` as `u`: the user's row and
/// their plan's limit and whether it adapts (`limits::base_limit`), read by `limits_at`.
macro_rules! limit_columns {
    () => {
        "u.daily_limit, u.limit_is_own, u.plan, \
         (select p.daily_limit from plans p where p.name = u.plan), \
         (select p.adapt_step is not null from plans p where p.name = u.plan), \
         u.adapted_limit, u.adapted_from, u.adapted_before"
    };
}
pub(super) use limit_columns;
/// The user columns, for a query that names `users` as `u`.
pub(super) const USER_COLUMNS: &str = concat!(
    "u.id, u.username, u.role, u.timezone, u.pending_timezone, u.timezone_effective_at, u.created_at, ",
    limit_columns!()
);
/// How many columns `USER_COLUMNS` names: a query's own columns come after them.
pub(super) const USER_COLUMN_COUNT: usize = 15;
pub(super) const TASK_COLUMNS: &str = "id, content, done, day, created_at, updated_at";

pub(super) fn internal(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Internal(e.into())
}

pub(super) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

pub(super) fn from_micros(us: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(us).map_err(|e| conversion(e.into()))
}

pub(super) fn conversion(e: anyhow::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
}

pub(super) fn uuid_at(row: &Row, i: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(i)?;
    Uuid::parse_str(&text).map_err(|e| conversion(e.into()))
}

pub(super) fn zone_at(row: &Row, i: usize) -> rusqlite::Result<TimeZoneName> {
    let name: String = row.get(i)?;
    TimeZoneName::parse(&name).map_err(|e| conversion(anyhow::anyhow!(e.message)))
}

pub(super) fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    let role: String = row.get(2)?;
    let pending = match row.get::<_, Option<String>>(4)? {
        Some(_) => Some((zone_at(row, 4)?, from_micros(row.get(5)?)?)),
        None => None,
    };
    Ok(User {
        id: uuid_at(row, 0)?,
        username: row.get(1)?,
        role: Role::parse(&role).ok_or_else(|| conversion(anyhow::anyhow!("unknown role {role}")))?,
        limits: limits_at(row, 7)?,
        zone: UserZone { current: zone_at(row, 3)?, pending },
        created_at: from_micros(row.get(6)?)?,
    })
}

/// The limit settings of `limit_columns!()`, starting at column `at`.
pub(super) fn limits_at(row: &Row, at: usize) -> rusqlite::Result<LimitSettings> {
    let plan = match row.get::<_, Option<String>>(at + 2)? {
        Some(name) => Some((name.into(), row.get(at + 3)?, row.get::<_, Option<bool>>(at + 4)?.unwrap_or(false))),
        None => None,
    };
    let adapted = match (row.get::<_, Option<u32>>(at + 5)?, row.get::<_, Option<String>>(at + 6)?) {
        (Some(limit), Some(from)) => Some(Adapted {
            limit,
            from: from.parse().map_err(|e: jiff::Error| conversion(e.into()))?,
            before: row.get(at + 7)?,
        }),
        _ => None,
    };
    Ok(LimitSettings { stored: row.get(at)?, limit_is_own: row.get(at + 1)?, plan, adapted })
}

pub(super) fn task_from_row(row: &Row) -> rusqlite::Result<Task> {
    let day: String = row.get(3)?;
    Ok(Task {
        id: uuid_at(row, 0)?,
        content: row.get(1)?,
        done: row.get(2)?,
        day: day.parse().map_err(|e: jiff::Error| conversion(e.into()))?,
        created_at: from_micros(row.get(4)?)?,
        updated_at: from_micros(row.get(5)?)?,
    })
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}
