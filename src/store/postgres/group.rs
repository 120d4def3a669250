//! Group commit on PostgreSQL: the creates that arrive together on one instance, from
//! any number of users, go to the server as one statement, so as one round trip and one
//! commit (docs/adr/0020-postgres-group-commit.md).
//!
//! A create waiting here joins the next group: `WORKERS` tasks each take whatever is
//! queued (up to `MAX_GROUP`) as soon as they are free, so a group is never held back
//! to wait for more; under load, groups grow by themselves while the previous ones are
//! on the wire. Each create keeps its own check-and-consume: a user over the limit gets
//! their refusal while the others in the group get their tasks.

use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::PgConnection;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::pool::Pool;
use super::rows::{self, decode, internal, micros};
use super::tasks::{in_force, limit_in_force};
use super::{bounded, classify};
use crate::domain::Task;
use crate::domain::limits::LimitInForce;
use crate::domain::webhooks::task_data;
use crate::store::{Result, StoreError};

/// Groups on the wire at once. Each holds one connection while its statement runs.
const WORKERS: usize = 4;
/// The most creates in one statement.
const MAX_GROUP: usize = 256;

/// One create waiting for its group: its task (id, day, content, instant already set).
struct Waiting {
    user_id: Uuid,
    task: Task,
    answer: oneshot::Sender<Result<(LimitInForce, Option<u32>)>>,
}

pub(super) struct Group {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Group {
    pub(super) fn start(db: Arc<Pool>) -> Self {
        let (queue, arrivals) = mpsc::unbounded_channel();
        let arrivals = Arc::new(Mutex::new(arrivals));
        for _ in 0..WORKERS {
            tokio::spawn(work(db.clone(), arrivals.clone()));
        }
        Self { queue }
    }

    /// `consume_and_insert` for one create, in the next group: `(limit in force,
    /// Some(used))` if created, `(limit in force, None)` if the limit is reached.
    pub(super) async fn create(&self, user_id: Uuid, task: Task) -> Result<(LimitInForce, Option<u32>)> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { user_id, task, answer })
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        bounded(async {
            answered.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the create's group was abandoned".into())))
        })
        .await
    }
}

async fn work(db: Arc<Pool>, arrivals: Arc<Mutex<mpsc::UnboundedReceiver<Waiting>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut arrivals = arrivals.lock().await;
            let Some(first) = arrivals.recv().await else { return };
            group.push(first);
            while group.len() < MAX_GROUP {
                match arrivals.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!(crate::metrics::DB_GROUP_COMMIT_SIZE).record(group.len() as f64);
        let creates: Vec<(Uuid, &Task)> = group.iter().map(|w| (w.user_id, &w.task)).collect();
        match bounded(db.run(async |c| run(c, &creates).await)).await {
            Ok(answers) => {
                for (waiting, answer) in group.into_iter().zip(answers) {
                    let _ = waiting.answer.send(answer);
                }
            }
            Err(e) => {
                let unavailable = matches!(e, StoreError::Unavailable(_));
                let text = e.to_string();
                for waiting in group {
                    let e = if unavailable {
                        StoreError::Unavailable(text.clone())
                    } else {
                        internal(anyhow::anyhow!("{text}"))
                    };
                    let _ = waiting.answer.send(Err(e));
                }
            }
        }
    }
}

/// The group's statement. Per (user, day) it consumes what the group asks for, up to
/// what remains, with one conditional upsert of the `usage` row (`taken` records how
/// many units this upsert took, which `returning` cannot otherwise tell), then inserts
/// the tasks ranked within that take, writes their webhook events (the outbox, in the
/// same statement as the change), and answers every create in the group's order.
///
/// As for a single create (`tasks::consume_and_insert`): READ COMMITTED, the upsert
/// locks each `(user, day)` row and compares against its latest committed version, so
/// creates on every instance queue on it and no limit is passed; the limit is read in
/// the statement. Rows are locked in `(user, day)` order, so two groups never wait for
/// each other in a circle.
async fn run(c: &mut PgConnection, creates: &[(Uuid, &Task)]) -> Result<Vec<Result<(LimitInForce, Option<u32>)>>> {
    let rows = sqlx::query(concat!(
        "with input as (
             select * from unnest($1::uuid[], $2::uuid[], $3::date[], $4::text[], $5::bigint[], $6::text[])
                 with ordinality as i(task_id, user_id, day, content, at, data, ord)
         ), ranked as (
             select i.*, row_number() over (partition by i.user_id, i.day order by i.ord)::int as rank from input i
         ), limits as (
             select w.user_id, w.day, w.n, q.base, q.source, q.plan, q.boost, q.daily_limit as lim
             from (select user_id, day, count(*)::int as n from input group by user_id, day) w
             cross join lateral (",
        limit_in_force!("w.user_id", "w.day"),
        ") q
         ), counted as (
             insert into usage as g (user_id, day, used, taken)
             select user_id, day, least(n, lim), least(n, lim) from limits where lim > 0 order by user_id, day
             on conflict (user_id, day) do update
                 set used = least(g.used + excluded.used,
                                  (select l.lim from limits l where l.user_id = g.user_id and l.day = g.day)),
                     taken = least(g.used + excluded.used,
                                   (select l.lim from limits l where l.user_id = g.user_id and l.day = g.day)) - g.used
                 where g.used < (select l.lim from limits l where l.user_id = g.user_id and l.day = g.day)
             returning g.user_id, g.day, g.used, g.taken
         ), created as (
             insert into tasks (id, user_id, content, done, day, created_at, updated_at)
             select r.task_id, r.user_id, r.content, false, r.day, r.at, r.at
             from ranked r join counted k on k.user_id = r.user_id and k.day = r.day
             where r.rank <= k.taken
         ), outbox as (
             -- Webhooks' events (see the `webhooks` module) of the tasks created, and
             -- `quota.exhausted` for each user whose last unit of the day this took.
             insert into webhook_events (id, webhook_id, type, occurred_at, data, next_attempt_at)
             select gen_random_uuid(), w.id, e.type, e.at, e.data, e.at
             from (
                 select r.user_id, 'task.created' as type, r.at, r.data
                 from ranked r join counted k on k.user_id = r.user_id and k.day = r.day
                 where r.rank <= k.taken
                 union all
                 select k.user_id, 'quota.exhausted', max(r.at),
                        json_build_object('day', k.day::text, 'limit', k.used, 'used', k.used)::text
                 from counted k join limits l on l.user_id = k.user_id and l.day = k.day
                 join ranked r on r.user_id = k.user_id and r.day = k.day
                 where k.taken > 0 and k.used >= l.lim
                 group by k.user_id, k.day, k.used
             ) e
             join webhooks w on w.user_id = e.user_id and not w.disabled
             where w.events like '% ' || e.type || ' %'
         )
         select r.ord, l.base, l.source, l.plan, l.boost,
                case when r.rank <= k.taken then k.used - k.taken + r.rank end as used
         from ranked r
         join limits l on l.user_id = r.user_id and l.day = r.day
         left join counted k on k.user_id = r.user_id and k.day = r.day
         order by r.ord"
    ))
    .bind(creates.iter().map(|(_, t)| t.id).collect::<Vec<_>>())
    .bind(creates.iter().map(|(u, _)| *u).collect::<Vec<_>>())
    .bind(creates.iter().map(|(_, t)| t.day.to_string()).collect::<Vec<_>>())
    .bind(creates.iter().map(|(_, t)| t.content.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|(_, t)| micros(t.created_at)).collect::<Vec<_>>())
    .bind(creates.iter().map(|(_, t)| task_data(t)).collect::<Vec<_>>())
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    let mut answers: Vec<Result<(LimitInForce, Option<u32>)>> =
        creates.iter().map(|(user_id, _)| Err(internal(anyhow::anyhow!("no user {user_id}")))).collect();
    for row in rows {
        let ord: i64 = decode(&row, |r| r.try_get("ord"))?;
        let answer = decode(&row, |r| Ok((in_force(r)?, rows::optional_count(r, "used")?)))?;
        let slot = usize::try_from(ord - 1).ok().and_then(|i| answers.get_mut(i));
        *slot.ok_or_else(|| internal(anyhow::anyhow!("a group answer out of range")))? = Ok(answer);
    }
    Ok(answers)
}
