//! Plans, boosts and the adaptive rule on PostgreSQL. Nothing here touches a user's
//! limit as creates read it but through the rows `quota_cte!()` reads in each create's
//! own statement, so every change applies at once on every instance.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::admin::audit_user;
use super::rows::{USER_COLUMNS, decode, micros};
use super::{PostgresStore, bounded, classify, rows};
use crate::domain::limits::{
    Adapt, Boost, DayRecord, NewBoost, Plan, PlanChanges, adapt_change, describe_adapt, history_start, records,
};
use crate::domain::{AuditEntry, User};
use crate::store::{PlanStore, Result, new_id};

const PLAN_COLUMNS: &str = "name, daily_limit, adapt_step, adapt_after_days_at_limit, adapt_max, \
     adapt_after_idle_days, adapt_min, created_at";
const BOOST_COLUMNS: &str = "id, user_id, extra, to_char(from_day, 'YYYY-MM-DD') as from_day, \
     to_char(to_day, 'YYYY-MM-DD') as to_day, reason, actor_id, created_at";

fn plan(row: &PgRow) -> Result<Plan, sqlx::Error> {
    let count = |c: &str| rows::count(row, c);
    let adapt = match rows::optional_count(row, "adapt_step")? {
        Some(step) => Some(Adapt {
            step,
            after_days_at_limit: count("adapt_after_days_at_limit")?,
            max: count("adapt_max")?,
            after_idle_days: count("adapt_after_idle_days")?,
            min: count("adapt_min")?,
        }),
        None => None,
    };
    Ok(Plan {
        name: row.try_get("name")?,
        daily_limit: count("daily_limit")?,
        adapt,
        created_at: rows::timestamp(row, "created_at")?,
    })
}

fn day(row: &PgRow, column: &str) -> Result<Date, sqlx::Error> {
    row.try_get::<&str, _>(column)?.parse().map_err(|e: jiff::Error| sqlx::Error::Decode(e.into()))
}

fn boost(row: &PgRow) -> Result<Boost, sqlx::Error> {
    Ok(Boost {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        extra: rows::count(row, "extra")?,
        from: day(row, "from_day")?,
        to: day(row, "to_day")?,
        reason: row.try_get("reason")?,
        actor_id: row.try_get("actor_id")?,
        created_at: rows::timestamp(row, "created_at")?,
    })
}

fn adapt_values(adapt: Option<&Adapt>) -> [Option<i32>; 5] {
    let n = |v: u32| i32::try_from(v).ok();
    match adapt {
        Some(a) => [n(a.step), n(a.after_days_at_limit), n(a.max), n(a.after_idle_days), n(a.min)],
        None => [None; 5],
    }
}

async fn load_plan(c: &mut PgConnection, name: &str) -> Result<Option<Plan>> {
    let row = sqlx::query(&format!("select {PLAN_COLUMNS} from plans where name = $1"))
        .bind(name)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(|r| decode(r, plan)).transpose()
}

async fn audit_plan(
    c: &mut PgConnection,
    actor: Option<Uuid>,
    plan: &str,
    field: &str,
    old: &str,
    new: &str,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "insert into plan_audit (id, actor_id, plan, field, old_value, new_value, at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id(now))
    .bind(actor)
    .bind(plan)
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
impl PlanStore for PostgresStore {
    async fn create_plan(&self, actor: Option<Uuid>, new: Plan) -> Result<Option<Plan>> {
        bounded(self.db.run(async |c| {
            let mut tx = c.begin().await.map_err(classify)?;
            let [step, days, max, idle, min] = adapt_values(new.adapt.as_ref());
            let inserted = sqlx::query(&format!(
                "insert into plans ({PLAN_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8)
                 on conflict (name) do nothing"
            ))
            .bind(&new.name)
            .bind(i64::from(new.daily_limit))
            .bind(step)
            .bind(days)
            .bind(max)
            .bind(idle)
            .bind(min)
            .bind(micros(new.created_at))
            .execute(&mut *tx)
            .await
            .map_err(classify)?
            .rows_affected();
            if inserted == 0 {
                return Ok(None);
            }
            let at = new.created_at;
            audit_plan(&mut tx, actor, &new.name, "daily_limit", "none", &new.daily_limit.to_string(), at).await?;
            if new.adapt.is_some() {
                audit_plan(&mut tx, actor, &new.name, "adapt", "none", &describe_adapt(new.adapt.as_ref()), at).await?;
            }
            tx.commit().await.map_err(classify)?;
            Ok(Some(new.clone()))
        }))
        .await
    }

    async fn plans(&self) -> Result<Vec<Plan>> {
        bounded(self.db.run(async |c| {
            sqlx::query(&format!("select {PLAN_COLUMNS} from plans order by name"))
                .fetch_all(&mut *c)
                .await
                .map_err(classify)?
                .iter()
                .map(|r| decode(r, plan))
                .collect()
        }))
        .await
    }

    async fn plan(&self, name: &str) -> Result<Option<Plan>> {
        bounded(self.db.run(async |c| load_plan(c, name).await)).await
    }

    async fn update_plan(
        &self,
        actor: Option<Uuid>,
        name: &str,
        changes: PlanChanges,
        now: Timestamp,
    ) -> Result<Option<Plan>> {
        bounded(self.db.run(async |c| {
            let mut tx = c.begin().await.map_err(classify)?;
            // Locked, so that the audit's old values are the ones replaced.
            let row = sqlx::query(&format!("select {PLAN_COLUMNS} from plans where name = $1 for no key update"))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            let Some(before) = row.as_ref().map(|r| decode(r, plan)).transpose()? else { return Ok(None) };
            if let Some(limit) = changes.daily_limit {
                sqlx::query("update plans set daily_limit = $2 where name = $1")
                    .bind(name)
                    .bind(i64::from(limit))
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            if let Some(adapt) = &changes.adapt {
                let [step, days, max, idle, min] = adapt_values(adapt.as_ref());
                sqlx::query(
                    "update plans set adapt_step = $2, adapt_after_days_at_limit = $3, adapt_max = $4,
                         adapt_after_idle_days = $5, adapt_min = $6 where name = $1",
                )
                .bind(name)
                .bind(step)
                .bind(days)
                .bind(max)
                .bind(idle)
                .bind(min)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            for change in changes.audit(&before) {
                audit_plan(&mut tx, actor, name, change.field, &change.old_value, &change.new_value, now).await?;
            }
            let after = load_plan(&mut tx, name).await?;
            tx.commit().await.map_err(classify)?;
            Ok(after)
        }))
        .await
    }

    async fn plan_audit(&self, name: &str) -> Result<Vec<AuditEntry>> {
        bounded(self.db.run(async |c| {
            sqlx::query(
                "select id, actor_id, '00000000-0000-0000-0000-000000000000'::uuid as target_id, field, old_value,
                        new_value, at
                 from plan_audit where plan = $1 order by id",
            )
            .bind(name)
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?
            .iter()
            .map(|r| decode(r, rows::audit))
            .collect()
        }))
        .await
    }

    async fn add_boost(
        &self,
        actor: Option<Uuid>,
        user_id: Uuid,
        new: NewBoost,
        now: Timestamp,
    ) -> Result<Option<Boost>> {
        bounded(self.db.run(async |c| {
            let mut tx = c.begin().await.map_err(classify)?;
            let id = new_id(now);
            let row = sqlx::query(&format!(
                "insert into boosts (id, user_id, extra, from_day, to_day, reason, actor_id, created_at)
                 select $1, u.id, $3, $4::date, $5::date, $6, $7, $8 from users u where u.id = $2
                 returning {BOOST_COLUMNS}"
            ))
            .bind(id)
            .bind(user_id)
            .bind(i64::from(new.extra))
            .bind(new.from.to_string())
            .bind(new.to.to_string())
            .bind(&new.reason)
            .bind(actor)
            .bind(micros(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
            let Some(found) = row.as_ref().map(|r| decode(r, boost)).transpose()? else { return Ok(None) };
            audit_user(&mut tx, actor, user_id, "boost", "none", &found.describe(), now).await?;
            tx.commit().await.map_err(classify)?;
            Ok(Some(found))
        }))
        .await
    }

    async fn boosts(&self, user_id: Uuid) -> Result<Vec<Boost>> {
        bounded(self.db.run(async |c| {
            sqlx::query(&format!("select {BOOST_COLUMNS} from boosts where user_id = $1 order by from_day, id"))
                .bind(user_id)
                .fetch_all(&mut *c)
                .await
                .map_err(classify)?
                .iter()
                .map(|r| decode(r, boost))
                .collect()
        }))
        .await
    }

    async fn delete_boost(&self, actor: Option<Uuid>, user_id: Uuid, id: Uuid, now: Timestamp) -> Result<bool> {
        bounded(self.db.run(async |c| {
            let mut tx = c.begin().await.map_err(classify)?;
            let row =
                sqlx::query(&format!("delete from boosts where id = $1 and user_id = $2 returning {BOOST_COLUMNS}"))
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
            let Some(gone) = row.as_ref().map(|r| decode(r, boost)).transpose()? else { return Ok(false) };
            audit_user(&mut tx, actor, user_id, "boost", &gone.describe(), "none", now).await?;
            tx.commit().await.map_err(classify)?;
            Ok(true)
        }))
        .await
    }

    async fn adapt_step(&self, after: Option<Uuid>, batch: u32, now: Timestamp) -> Result<(Option<Uuid>, u32)> {
        bounded(self.db.run(async |c| {
            let mut tx = c.begin().await.map_err(classify)?;
            let found = sqlx::query(&format!(
                "select {USER_COLUMNS}, to_char(u.adapt_checked, 'YYYY-MM-DD') as adapt_checked,
                        p.adapt_step, p.adapt_after_days_at_limit, p.adapt_max, p.adapt_after_idle_days, p.adapt_min
                 from users u join plans p on p.name = u.plan
                 where p.adapt_step is not null and not u.limit_is_own and ($1::uuid is null or u.id > $1)
                 order by u.id limit $2 for no key update of u"
            ))
            .bind(after)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            let candidates = found
                .iter()
                .map(|r| {
                    decode(r, |r| {
                        let checked: Option<String> = r.try_get("adapt_checked")?;
                        Ok((rows::user(r)?, checked, adapt_of(r)?))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let last = (candidates.len() == batch as usize).then(|| candidates.last().map(|(u, _, _)| u.id)).flatten();
            let mut changed = 0;
            for (user, checked, rule) in candidates {
                let today = user.zone.window(now).day;
                if checked.as_deref() == Some(today.to_string().as_str()) {
                    continue;
                }
                if adapt_user(&mut tx, &user, &rule, today, now).await? {
                    changed += 1;
                }
            }
            tx.commit().await.map_err(classify)?;
            Ok((last, changed))
        }))
        .await
    }
}

fn adapt_of(row: &PgRow) -> Result<Adapt, sqlx::Error> {
    let count = |c: &str| rows::count(row, c);
    Ok(Adapt {
        step: count("adapt_step")?,
        after_days_at_limit: count("adapt_after_days_at_limit")?,
        max: count("adapt_max")?,
        after_idle_days: count("adapt_after_idle_days")?,
        min: count("adapt_min")?,
    })
}

/// As the SQLite store's: decides for one user on their local day `today`, records
/// that it looked, and the change if any (audited with no actor: the system).
async fn adapt_user(c: &mut PgConnection, user: &User, rule: &Adapt, today: Date, now: Timestamp) -> Result<bool> {
    let days = history(c, user, rule, today).await?;
    let change = adapt_change(&user.limits, rule, today, &days);
    sqlx::query(
        "update users set adapt_checked = $2::date,
             adapted_limit = case when $3 then $4 else adapted_limit end,
             adapted_from = case when $3 then $5::date else adapted_from end,
             adapted_before = case when $3 then $6 else adapted_before end
         where id = $1",
    )
    .bind(user.id)
    .bind(today.to_string())
    .bind(change.is_some())
    .bind(change.map(|ch| i64::from(ch.new)))
    .bind(change.map(|ch| ch.from.to_string()))
    .bind(change.and_then(|ch| ch.before).map(i64::from))
    .execute(&mut *c)
    .await
    .map_err(classify)?;
    let Some(change) = change else { return Ok(false) };
    let new = format!("{} from {}", change.new, change.from);
    audit_user(c, None, user.id, "adapted_limit", &change.old.to_string(), &new, now).await?;
    Ok(true)
}

/// The user's days the rule looks at (`limits::history_start`), with their use and
/// their limit in force, in two range reads.
async fn history(c: &mut PgConnection, user: &User, rule: &Adapt, today: Date) -> Result<Vec<DayRecord>> {
    let signed_up = user.zone.window(user.created_at).day;
    let Some(first) = history_start(&user.limits, rule, today, signed_up) else { return Ok(Vec::new()) };
    let used: HashMap<String, u32> = sqlx::query(
        "select to_char(day, 'YYYY-MM-DD') as day, used from usage
         where user_id = $1 and day >= $2::date and day < $3::date",
    )
    .bind(user.id)
    .bind(first.to_string())
    .bind(today.to_string())
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?
    .iter()
    .map(|r| decode(r, |r| Ok((r.try_get("day")?, rows::count(r, "used")?))))
    .collect::<Result<_>>()?;
    let boosts: Vec<(u32, Date, Date)> = sqlx::query(
        "select extra, to_char(from_day, 'YYYY-MM-DD') as from_day, to_char(to_day, 'YYYY-MM-DD') as to_day
         from boosts where user_id = $1 and to_day >= $2::date and from_day < $3::date",
    )
    .bind(user.id)
    .bind(first.to_string())
    .bind(today.to_string())
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?
    .iter()
    .map(|r| decode(r, |r| Ok((rows::count(r, "extra")?, day(r, "from_day")?, day(r, "to_day")?))))
    .collect::<Result<_>>()?;
    Ok(records(&user.limits, first, today, |d| used.get(&d.to_string()).copied().unwrap_or(0), &boosts))
}
