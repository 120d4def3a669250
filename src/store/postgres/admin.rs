//! Administration on PostgreSQL: users with their use of today, changes and their audit trail.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::rows::{AUDIT_COLUMNS, USER_COLUMNS, decode, micros};
use super::{PostgresStore, bounded, classify, rows};
use crate::domain::{AdminChanges, AuditEntry, LimitChange, NameFragment, User};
use crate::store::{AdminStore, Result, new_id};

/// Adds an entry to a user's audit trail.
pub(super) async fn audit_user(
    c: &mut PgConnection,
    actor: Option<Uuid>,
    target: Uuid,
    field: &str,
    old: &str,
    new: &str,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "insert into audit (id, actor_id, target_id, field, old_value, new_value, at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id(now))
    .bind(actor)
    .bind(target)
    .bind(field)
    .bind(old)
    .bind(new)
    .bind(micros(now))
    .execute(&mut *c)
    .await
    .map(drop)
    .map_err(classify)
}

#[async_trait]
impl AdminStore for PostgresStore {
    async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: u32,
        name: Option<NameFragment>,
        now: Timestamp,
    ) -> Result<Vec<(User, u32)>> {
        let name = name.map(NameFragment::into_string);
        bounded(self.db.run(async |c| {
            // `strpos`, not `like`: the fragment is matched as typed, `%` and `_` included.
            // Usernames are stored canonical, as the fragment is folded.
            let users = sqlx::query(&format!(
                "select {USER_COLUMNS} from users u
                 where ($1::uuid is null or u.id > $1) and ($3::text is null or strpos(u.username, $3) > 0)
                 order by u.id limit $2"
            ))
            .bind(after)
            .bind(i64::from(limit))
            .bind(name.as_deref())
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
            let entries = changes.audit(&before, now);
            let (limit, own) = match changes.daily_limit {
                Some(LimitChange::Own(n)) => (Some(i64::from(n)), true),
                Some(LimitChange::Drop { default }) => (Some(i64::from(default)), false),
                None => (None, false),
            };
            // A new plan starts the user afresh: nothing the last one adapted to.
            let after = sqlx::query(&format!(
                "update users as u set daily_limit = coalesce($2, u.daily_limit),
                     limit_is_own = case when $2::bigint is null then u.limit_is_own else $4 end,
                     role = coalesce($3, u.role),
                     plan = case when $5 then $6 else u.plan end,
                     adapted_limit = case when $5 then null else u.adapted_limit end,
                     adapted_from = case when $5 then null else u.adapted_from end,
                     adapted_before = case when $5 then null else u.adapted_before end,
                     adapt_checked = case when $5 then null else u.adapt_checked end
                 where u.id = $1 returning {USER_COLUMNS}"
            ))
            .bind(target)
            .bind(limit)
            .bind(changes.role.map(|r| r.as_str()))
            .bind(own)
            .bind(changes.plan.is_some())
            .bind(changes.plan.clone().flatten())
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
            for change in entries {
                audit_user(&mut tx, actor, target, change.field, &change.old_value, &change.new_value, now).await?;
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
}
