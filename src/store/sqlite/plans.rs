//! Plans, boosts and the adaptive rule on SQLite. Every change here is a write of the
//! writer that moves its epoch (`writer::Mode`), so the quota memo forgets every limit
//! it holds and the next create reads the new one in its own transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::admin::audit_user;
use super::rows::{USER_COLUMN_COUNT, USER_COLUMNS, conversion, from_micros, internal, micros, user_from_row, uuid_at};
use super::{SqliteStore, load_user};
use crate::domain::limits::{
    Adapt, Boost, DayRecord, NewBoost, Plan, PlanChanges, adapt_change, describe_adapt, history_start, records,
};
use crate::domain::{AuditEntry, User};
use crate::store::{PlanStore, Result, new_id};

const PLAN_COLUMNS: &str = "name, daily_limit, adapt_step, adapt_after_days_at_limit, adapt_max, \
     adapt_after_idle_days, adapt_min, created_at";
const BOOST_COLUMNS: &str = "id, user_id, extra, from_day, to_day, reason, actor_id, created_at";

fn day_at(row: &Row, i: usize) -> rusqlite::Result<Date> {
    let text: String = row.get(i)?;
    text.parse().map_err(|e: jiff::Error| conversion(e.into()))
}

fn plan_from_row(row: &Row) -> rusqlite::Result<Plan> {
    let adapt = match row.get::<_, Option<u32>>(2)? {
        Some(step) => Some(Adapt {
            step,
            after_days_at_limit: row.get(3)?,
            max: row.get(4)?,
            after_idle_days: row.get(5)?,
            min: row.get(6)?,
        }),
        None => None,
    };
    Ok(Plan { name: row.get(0)?, daily_limit: row.get(1)?, adapt, created_at: from_micros(row.get(7)?)? })
}

fn boost_from_row(row: &Row) -> rusqlite::Result<Boost> {
    let actor: Option<String> = row.get(6)?;
    Ok(Boost {
        id: uuid_at(row, 0)?,
        user_id: uuid_at(row, 1)?,
        extra: row.get(2)?,
        from: day_at(row, 3)?,
        to: day_at(row, 4)?,
        reason: row.get(5)?,
        actor_id: actor.and_then(|a| Uuid::parse_str(&a).ok()),
        created_at: from_micros(row.get(7)?)?,
    })
}

fn load_plan(c: &Connection, name: &str) -> Result<Option<Plan>> {
    c.prepare_cached(&format!("select {PLAN_COLUMNS} from plans where name = ?1"))
        .and_then(|mut s| s.query_row([name], plan_from_row).optional())
        .map_err(internal)
}

fn audit_plan(
    c: &Connection,
    actor: Option<Uuid>,
    plan: &str,
    field: &str,
    old: &str,
    new: &str,
    now: Timestamp,
) -> Result<()> {
    c.execute(
        "insert into plan_audit (id, actor_id, plan, field, old_value, new_value, at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![new_id(now).to_string(), actor.map(|a| a.to_string()), plan, field, old, new, micros(now)],
    )
    .map(drop)
    .map_err(internal)
}

fn adapt_values(adapt: Option<&Adapt>) -> [Option<u32>; 5] {
    match adapt {
        Some(a) => [Some(a.step), Some(a.after_days_at_limit), Some(a.max), Some(a.after_idle_days), Some(a.min)],
        None => [None; 5],
    }
}

#[async_trait]
impl PlanStore for SqliteStore {
    async fn create_plan(&self, actor: Option<Uuid>, plan: Plan) -> Result<Option<Plan>> {
        self.executor
            .write(move |c| {
                let [step, days, max, idle, min] = adapt_values(plan.adapt.as_ref());
                let inserted = c
                    .execute(
                        &format!(
                            "insert into plans ({PLAN_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                             on conflict (name) do nothing"
                        ),
                        params![plan.name, plan.daily_limit, step, days, max, idle, min, micros(plan.created_at)],
                    )
                    .map_err(internal)?;
                if inserted == 0 {
                    return Ok(None);
                }
                let at = plan.created_at;
                audit_plan(c, actor, &plan.name, "daily_limit", "none", &plan.daily_limit.to_string(), at)?;
                if plan.adapt.is_some() {
                    audit_plan(c, actor, &plan.name, "adapt", "none", &describe_adapt(plan.adapt.as_ref()), at)?;
                }
                Ok(Some(plan))
            })
            .await
    }

    async fn plans(&self) -> Result<Vec<Plan>> {
        self.executor
            .read(|c| {
                c.prepare_cached(&format!("select {PLAN_COLUMNS} from plans order by name"))
                    .and_then(|mut s| s.query_map([], plan_from_row)?.collect())
                    .map_err(internal)
            })
            .await
    }

    async fn plan(&self, name: &str) -> Result<Option<Plan>> {
        let name = name.to_owned();
        self.executor.read(move |c| load_plan(c, &name)).await
    }

    async fn update_plan(
        &self,
        actor: Option<Uuid>,
        name: &str,
        changes: PlanChanges,
        now: Timestamp,
    ) -> Result<Option<Plan>> {
        let name = name.to_owned();
        // Users' cached rows name the plan's limit: forget them.
        self.write_accounts(move |c| {
            let Some(before) = load_plan(c, &name)? else { return Ok(None) };
            if let Some(limit) = changes.daily_limit {
                c.execute("update plans set daily_limit = ?2 where name = ?1", params![name, limit])
                    .map_err(internal)?;
            }
            if let Some(adapt) = &changes.adapt {
                let [step, days, max, idle, min] = adapt_values(adapt.as_ref());
                c.execute(
                    "update plans set adapt_step = ?2, adapt_after_days_at_limit = ?3, adapt_max = ?4,
                         adapt_after_idle_days = ?5, adapt_min = ?6 where name = ?1",
                    params![name, step, days, max, idle, min],
                )
                .map_err(internal)?;
            }
            for change in changes.audit(&before) {
                audit_plan(c, actor, &name, change.field, &change.old_value, &change.new_value, now)?;
            }
            load_plan(c, &name)
        })
        .await
    }

    async fn plan_audit(&self, name: &str) -> Result<Vec<AuditEntry>> {
        let name = name.to_owned();
        self.executor
            .read(move |c| {
                c.prepare_cached(
                    "select id, actor_id, field, old_value, new_value, at from plan_audit where plan = ?1 order by id",
                )
                .and_then(|mut s| {
                    s.query_map([&name], |r| {
                        let actor: Option<String> = r.get(1)?;
                        Ok(AuditEntry {
                            id: uuid_at(r, 0)?,
                            actor_id: actor.and_then(|a| Uuid::parse_str(&a).ok()),
                            target_id: Uuid::nil(),
                            field: r.get(2)?,
                            old_value: r.get(3)?,
                            new_value: r.get(4)?,
                            at: from_micros(r.get(5)?)?,
                        })
                    })?
                    .collect()
                })
                .map_err(internal)
            })
            .await
    }

    async fn add_boost(
        &self,
        actor: Option<Uuid>,
        user_id: Uuid,
        boost: NewBoost,
        now: Timestamp,
    ) -> Result<Option<Boost>> {
        self.executor
            .write(move |c| {
                if load_user(c, user_id)?.is_none() {
                    return Ok(None);
                }
                let boost = Boost {
                    id: new_id(now),
                    user_id,
                    extra: boost.extra,
                    from: boost.from,
                    to: boost.to,
                    reason: boost.reason,
                    actor_id: actor,
                    created_at: now,
                };
                c.execute(
                    &format!("insert into boosts ({BOOST_COLUMNS}) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                    params![
                        boost.id.to_string(),
                        user_id.to_string(),
                        boost.extra,
                        boost.from.to_string(),
                        boost.to.to_string(),
                        boost.reason,
                        actor.map(|a| a.to_string()),
                        micros(now)
                    ],
                )
                .map_err(internal)?;
                audit_user(c, actor, user_id, "boost", "none", &boost.describe(), now)?;
                Ok(Some(boost))
            })
            .await
    }

    async fn boosts(&self, user_id: Uuid) -> Result<Vec<Boost>> {
        self.executor
            .read(move |c| {
                c.prepare_cached(&format!(
                    "select {BOOST_COLUMNS} from boosts where user_id = ?1 order by from_day, id"
                ))
                .and_then(|mut s| s.query_map([user_id.to_string()], boost_from_row)?.collect())
                .map_err(internal)
            })
            .await
    }

    async fn delete_boost(&self, actor: Option<Uuid>, user_id: Uuid, id: Uuid, now: Timestamp) -> Result<bool> {
        self.executor
            .write(move |c| {
                let found = c
                    .prepare_cached(&format!("select {BOOST_COLUMNS} from boosts where id = ?1 and user_id = ?2"))
                    .and_then(|mut s| s.query_row([id.to_string(), user_id.to_string()], boost_from_row).optional())
                    .map_err(internal)?;
                let Some(boost) = found else { return Ok(false) };
                c.execute("delete from boosts where id = ?1", [id.to_string()]).map_err(internal)?;
                audit_user(c, actor, user_id, "boost", &boost.describe(), "none", now)?;
                Ok(true)
            })
            .await
    }

    async fn adapt_step(&self, after: Option<Uuid>, batch: u32, now: Timestamp) -> Result<(Option<Uuid>, u32)> {
        self.write_accounts(move |c| {
            let candidates: Vec<(User, Option<String>, Adapt)> = c
                .prepare_cached(&format!(
                    "select {USER_COLUMNS}, u.adapt_checked, p.adapt_step, p.adapt_after_days_at_limit, p.adapt_max,
                         p.adapt_after_idle_days, p.adapt_min
                     from users u join plans p on p.name = u.plan
                     where p.adapt_step is not null and u.limit_is_own = 0 and (?1 is null or u.id > ?1)
                     order by u.id limit ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![after.map(|a| a.to_string()), batch], |r| {
                        let at = USER_COLUMN_COUNT;
                        let rule = Adapt {
                            step: r.get(at + 1)?,
                            after_days_at_limit: r.get(at + 2)?,
                            max: r.get(at + 3)?,
                            after_idle_days: r.get(at + 4)?,
                            min: r.get(at + 5)?,
                        };
                        Ok((user_from_row(r)?, r.get(at)?, rule))
                    })?
                    .collect()
                })
                .map_err(internal)?;
            let last = (candidates.len() == batch as usize).then(|| candidates.last().map(|(u, _, _)| u.id)).flatten();
            let mut changed = 0;
            for (user, checked, rule) in candidates {
                let today = user.zone.window(now).day;
                if checked.as_deref() == Some(today.to_string().as_str()) {
                    continue;
                }
                if adapt_user(c, &user, &rule, today, now)? {
                    changed += 1;
                }
            }
            Ok((last, changed))
        })
        .await
    }
}

/// Decides for one user on their local day `today`: records that it looked, and, if
/// the rule says so, the new limit from `today`'s next day on (audited with no actor:
/// the system). Whether it changed the limit.
fn adapt_user(c: &Connection, user: &User, rule: &Adapt, today: Date, now: Timestamp) -> Result<bool> {
    let id = user.id.to_string();
    let days = history(c, user, rule, today)?;
    match adapt_change(&user.limits, rule, today, &days) {
        Some(change) => {
            c.execute(
                "update users set adapted_limit = ?2, adapted_from = ?3, adapted_before = ?4, adapt_checked = ?5
                 where id = ?1",
                params![id, change.new, change.from.to_string(), change.before, today.to_string()],
            )
            .map_err(internal)?;
            let new = format!("{} from {}", change.new, change.from);
            audit_user(c, None, user.id, "adapted_limit", &change.old.to_string(), &new, now)?;
            Ok(true)
        }
        None => {
            c.execute("update users set adapt_checked = ?2 where id = ?1", params![id, today.to_string()])
                .map_err(internal)?;
            Ok(false)
        }
    }
}

/// The user's days the rule looks at (`limits::history_start`), with their use and
/// their limit in force, in two range reads.
fn history(c: &Connection, user: &User, rule: &Adapt, today: Date) -> Result<Vec<DayRecord>> {
    let signed_up = user.zone.window(user.created_at).day;
    let Some(first) = history_start(&user.limits, rule, today, signed_up) else { return Ok(Vec::new()) };
    let id = user.id.to_string();
    let used: HashMap<String, u32> = c
        .prepare_cached("select day, used from usage where user_id = ?1 and day >= ?2 and day < ?3")
        .and_then(|mut s| {
            s.query_map(params![id, first.to_string(), today.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
        .map_err(internal)?;
    let boosts: Vec<(u32, Date, Date)> = c
        .prepare_cached(
            "select extra, from_day, to_day from boosts where user_id = ?1 and to_day >= ?2 and from_day < ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![id, first.to_string(), today.to_string()], |r| {
                Ok((r.get(0)?, day_at(r, 1)?, day_at(r, 2)?))
            })?
            .collect()
        })
        .map_err(internal)?;
    Ok(records(&user.limits, first, today, |d| used.get(&d.to_string()).copied().unwrap_or(0), &boosts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AdminChanges, LimitSource};
    use crate::store::sqlite::MIGRATIONS;
    use crate::store::{AccountStore, AdminStore};

    #[tokio::test]
    async fn an_upgrade_changes_no_limit_and_only_limits_an_admin_set_override_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // The schema before plans, with two users: one with the sign-up default, one
        // whose limit an administrator set (and the audit trail says so).
        let before = MIGRATIONS.iter().position(|m| m.contains("create table plans")).unwrap();
        drop(super::super::connection::open_writer(&path, &MIGRATIONS[..before]).unwrap());
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let old = Connection::open(&path).unwrap();
        for (id, name, limit) in [(ann, "ann", 5), (bob, "bob", 9)] {
            old.execute(
                "insert into users (id, username, password_hash, role, daily_limit, timezone, created_at)
                 values (?1, ?2, 'x', 'user', ?3, 'UTC', 0)",
                params![id.to_string(), name, limit],
            )
            .unwrap();
        }
        old.execute(
            "insert into audit (id, actor_id, target_id, field, old_value, new_value, at)
             values (?1, null, ?2, 'daily_limit', '5', '9', 0)",
            params![Uuid::now_v7().to_string(), bob.to_string()],
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&path).unwrap();
        let now = Timestamp::UNIX_EPOCH;
        let base = async |id| store.user(id).await.unwrap().unwrap().base_limit(now);
        assert_eq!(base(ann).await, (5, LimitSource::Default));
        assert_eq!(base(bob).await, (9, LimitSource::User));
        let plan = Plan { name: "team".into(), daily_limit: 3, adapt: None, created_at: now };
        store.create_plan(None, plan).await.unwrap().unwrap();
        for id in [ann, bob] {
            let changes = AdminChanges { plan: Some(Some("team".into())), ..AdminChanges::default() };
            store.admin_update_user(None, id, changes, now).await.unwrap().unwrap();
        }
        assert_eq!(base(ann).await, (3, LimitSource::Plan), "the default gives way to the plan");
        assert_eq!(base(bob).await, (9, LimitSource::User), "a limit an admin set does not");
    }
}
