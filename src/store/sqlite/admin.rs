//! Administration on SQLite: users with their use of today, changes and their audit trail.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{USER_COLUMNS, from_micros, internal, micros, user_from_row, uuid_at};
use super::tasks::used_on;
use super::{SqliteStore, load_user};
use crate::domain::{AdminChanges, AuditEntry, LimitChange, NameFragment, User};
use crate::store::{AdminStore, Result, new_id};

/// Adds an entry to a user's audit trail.
pub(super) fn audit_user(
    c: &Connection,
    actor: Option<Uuid>,
    target: Uuid,
    field: &str,
    old: &str,
    new: &str,
    now: Timestamp,
) -> Result<()> {
    c.execute(
        "insert into audit (id, actor_id, target_id, field, old_value, new_value, at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            new_id(now).to_string(),
            actor.map(|a| a.to_string()),
            target.to_string(),
            field,
            old,
            new,
            micros(now)
        ],
    )
    .map(drop)
    .map_err(internal)
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: u32,
        name: Option<NameFragment>,
        now: Timestamp,
    ) -> Result<Vec<(User, u32)>> {
        self.executor
            .read(move |c| {
                // `instr`, not `like`: the fragment is matched as typed, `%` and `_` included.
                // Usernames are stored canonical, as the fragment is folded.
                let users = c
                    .prepare_cached(&format!(
                        "select {USER_COLUMNS} from users u
                         where (?1 is null or u.id > ?1) and (?3 is null or instr(u.username, ?3) > 0)
                         order by u.id limit ?2"
                    ))
                    .and_then(|mut s| {
                        let name = name.map(NameFragment::into_string);
                        s.query_map(params![after.map(|a| a.to_string()), limit, name], user_from_row)?
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
            let (limit, own) = match changes.daily_limit {
                Some(LimitChange::Own(n)) => (Some(n), true),
                Some(LimitChange::Drop { default }) => (Some(default), false),
                None => (None, false),
            };
            if let Some(limit) = limit {
                c.execute(
                    "update users set daily_limit = ?2, limit_is_own = ?3 where id = ?1",
                    params![target.to_string(), limit, own],
                )
                .map_err(internal)?;
            }
            if let Some(plan) = &changes.plan {
                // A new plan starts the user afresh: nothing the last one adapted to.
                c.execute(
                    "update users set plan = ?2, adapted_limit = null, adapted_from = null, adapted_before = null,
                         adapt_checked = null where id = ?1",
                    params![target.to_string(), plan],
                )
                .map_err(internal)?;
            }
            if let Some(role) = changes.role {
                c.execute("update users set role = ?2 where id = ?1", params![target.to_string(), role.as_str()])
                    .map_err(internal)?;
            }
            for change in changes.audit(&before, now) {
                audit_user(c, actor, target, change.field, &change.old_value, &change.new_value, now)?;
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
}
