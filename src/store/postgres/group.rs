//! Group commit on PostgreSQL: the creates that arrive together on one instance, from
//! any number of users, go to the server as one statement, so as one round trip and one
//! commit (docs/adr/0020-postgres-group-commit.md). The session lookups that come
//! before them (one per request with an access token) are grouped the same way.
//!
//! A call waiting here joins the next group: `WORKERS` tasks each take whatever is
//! queued (up to `MAX_GROUP`) as soon as they are free, so a group is never held back
//! to wait for more; under load, groups grow by themselves while the previous ones are
//! on the wire. Each create keeps its own check-and-consume: a user over the limit gets
//! their refusal while the others in the group get their tasks.

use std::future::Future;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::PgConnection;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use super::pool::Pool;
use super::rows::{self, USER_COLUMNS, decode, internal, micros};
use super::tasks::{in_force, limit_in_force};
use super::{bounded, classify};
use crate::domain::limits::LimitInForce;
use crate::domain::webhooks::task_data;
use crate::domain::{Task, User};
use crate::store::{Result, StoreError};

/// Groups of one kind on the wire at once. Each holds one connection while its
/// statement runs.
const WORKERS: usize = 2;
/// The most calls in one statement.
const MAX_GROUP: usize = 256;

/// A statement that answers a group of calls at once, each in the order given.
pub(super) trait Statement: Send + Sync + 'static {
    type In: Send + Sync + 'static;
    type Out: Send + 'static;
    /// Whether the group's size is recorded as a group commit (`DB_GROUP_COMMIT_SIZE`).
    const COMMITS: bool;
    fn run<'a>(
        c: &'a mut PgConnection,
        group: &'a [Self::In],
    ) -> impl Future<Output = Result<Vec<Result<Self::Out>>>> + Send + 'a;
}

/// A call waiting for its group: its input, where its answer goes, and since when it waits.
type Waiting<S> = (<S as Statement>::In, oneshot::Sender<Result<<S as Statement>::Out>>, Instant);

pub(super) struct Group<S: Statement> {
    queue: mpsc::UnboundedSender<Waiting<S>>,
}

impl<S: Statement> Group<S> {
    pub(super) fn start(db: Arc<Pool>) -> Self {
        let (queue, arrivals) = mpsc::unbounded_channel();
        let arrivals = Arc::new(Mutex::new(arrivals));
        for _ in 0..WORKERS {
            tokio::spawn(work::<S>(db.clone(), arrivals.clone()));
        }
        Self { queue }
    }

    /// `input`'s answer, from the next group's statement.
    pub(super) async fn call(&self, input: S::In) -> Result<S::Out> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((input, answer, Instant::now()))
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        bounded(async {
            answered.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the call's group was abandoned".into())))
        })
        .await
    }
}

async fn work<S: Statement>(db: Arc<Pool>, arrivals: Arc<Mutex<mpsc::UnboundedReceiver<Waiting<S>>>>) {
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
        if S::COMMITS {
            metrics::histogram!(crate::metrics::DB_GROUP_COMMIT_SIZE).record(group.len() as f64);
        }
        // The oldest call's wait counts against the pool's bound on getting a connection,
        // so a call queued behind a group that waited for a dead server is not made to
        // wait as long again (an outage answers 503 within that bound).
        let since = group.iter().map(|(_, _, since)| *since).min().unwrap_or_else(Instant::now);
        let (inputs, answers): (Vec<S::In>, Vec<_>) =
            group.into_iter().map(|(input, answer, _)| (input, answer)).unzip();
        match bounded(db.run_waiting_since(since, async |c| S::run(c, &inputs).await)).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                let unavailable = matches!(e, StoreError::Unavailable(_));
                let text = e.to_string();
                for answer in answers {
                    let e = if unavailable {
                        StoreError::Unavailable(text.clone())
                    } else {
                        internal(anyhow::anyhow!("{text}"))
                    };
                    let _ = answer.send(Err(e));
                }
            }
        }
    }
}

/// Plain creates: `(user, task)` (the task's id, day, content and instant already set)
/// to `(limit in force, Some(used))` if created, `(limit in force, None)` if the limit
/// is reached, as `tasks::consume_and_insert` answers one.
pub(super) struct Creates;

impl Statement for Creates {
    type In = (Uuid, Task);
    type Out = (LimitInForce, Option<u32>);
    const COMMITS: bool = true;
    fn run<'a>(
        c: &'a mut PgConnection,
        group: &'a [Self::In],
    ) -> impl Future<Output = Result<Vec<Result<Self::Out>>>> + Send + 'a {
        create(c, group)
    }
}

/// Session lookups: `(session, user)` to the user, if the session is live, as
/// `AccountStore::session_user` answers one. Nothing is cached: a revocation holds on
/// every instance from its commit on.
pub(super) struct Sessions;

impl Statement for Sessions {
    type In = (Uuid, Uuid);
    type Out = Option<User>;
    const COMMITS: bool = false;
    fn run<'a>(
        c: &'a mut PgConnection,
        group: &'a [Self::In],
    ) -> impl Future<Output = Result<Vec<Result<Self::Out>>>> + Send + 'a {
        sessions(c, group)
    }
}

async fn sessions(c: &mut PgConnection, group: &[(Uuid, Uuid)]) -> Result<Vec<Result<Option<User>>>> {
    let rows = sqlx::query(&format!(
        "select i.ord, {USER_COLUMNS}
         from unnest($1::uuid[], $2::uuid[]) with ordinality as i(session_id, user_id, ord)
         join sessions s on s.id = i.session_id and s.user_id = i.user_id and s.revoked_at is null
         join users u on u.id = s.user_id"
    ))
    .bind(group.iter().map(|(session, _)| *session).collect::<Vec<_>>())
    .bind(group.iter().map(|(_, user)| *user).collect::<Vec<_>>())
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    let mut answers: Vec<Result<Option<User>>> = group.iter().map(|_| Ok(None)).collect();
    for row in rows {
        let ord: i64 = decode(&row, |r| r.try_get("ord"))?;
        let user = decode(&row, rows::user)?;
        let slot = usize::try_from(ord - 1).ok().and_then(|i| answers.get_mut(i));
        *slot.ok_or_else(|| internal(anyhow::anyhow!("a group answer out of range")))? = Ok(Some(user));
    }
    Ok(answers)
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
/// the statement. The upsert's input is sorted by `(user, day)`, so groups take their
/// row locks in one order and should not wait for each other in a circle; a deadlock
/// PostgreSQL detected anyway (40P01) is answered 503, worth a retry.
async fn create(c: &mut PgConnection, creates: &[(Uuid, Task)]) -> Result<Vec<Result<(LimitInForce, Option<u32>)>>> {
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
