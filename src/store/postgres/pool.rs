//! The store's connection pool: at most a set number of connections to PostgreSQL, each
//! lent to one call at a time and put back as soon as that call has run to its end.
//!
//! sqlx's own pool pings every connection it takes back (a `Sync` message and its
//! answer), which is one more round trip for every call: a create, two statements, made
//! four round trips (`perf stat` counted 3.9 `sendto` calls a create). That ping is
//! there for calls cancelled half-way, whose connection may be in the middle of an
//! answer. Here a cancelled call's connection is not put back at all: it is closed when
//! the call is dropped. A call that ended with an error is pinged before its connection
//! is reused, which also sends the `rollback` sqlx queues for a dropped transaction, so
//! no lock stays held by an idle connection. One that ended well goes straight back.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::classify;
use super::hosts::Hosts;
use crate::store::{Result, StoreError};

/// How long a call waits for a connection (a free one, or a new one while the server
/// refuses them) before answering 503, so an outage is reported within 2 s
/// (docs/reliability.md) and a restart is noticed as soon as it is over.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A connection idle for longer than this is pinged before it is lent again (it may
/// have been cut meanwhile, by a restart of the server, say). One broken in between
/// fails its statement with an I/O error: a 503, and the connection is closed.
const RETEST_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Idle connections older than this are closed when a call puts one back, so a burst's
/// extra connections do not stay open on the server while the load is lower. (With no
/// calls at all nothing is closed; a readiness probe is a call.)
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The first and the longest pause between attempts to connect while the server refuses.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(250);

pub(super) struct Pool {
    /// Where connections are opened: one host, or several of which one is chosen.
    hosts: Hosts,
    /// One permit for each call holding a connection. A connection is opened only when
    /// none is idle, so there are never more connections than permits.
    permits: Semaphore,
    /// Connections not lent, the most recently used last (lent first, so the others
    /// age out when the load falls).
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// A connection lent to one call, and the permit it counts against.
struct Lease<'p> {
    // Declared first, so a dropped lease closes its connection before its permit lets
    // another call open one.
    conn: PgConnection,
    _permit: SemaphorePermit<'p>,
}

impl Pool {
    /// A pool of at most `max` connections; one is opened now, so a wrong address or
    /// password is reported at start-up.
    pub(super) async fn open(hosts: Hosts, max: u32) -> std::result::Result<Self, sqlx::Error> {
        let conn = hosts.connect().await?;
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Ok(Self { hosts, permits: Semaphore::new(max), idle: Mutex::new(vec![Idle { conn, since: Instant::now() }]) })
    }

    /// Runs `work` on a connection of its own. If `work` is cancelled (its request
    /// dropped, or past its deadline), the connection is closed with it.
    pub(super) async fn run<T>(&self, work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>) -> Result<T> {
        self.run_waiting_since(Instant::now(), work).await
    }

    /// `run` for a call that began waiting at `since` (a group's oldest call): it gets a
    /// connection by `since + ACQUIRE_TIMEOUT` or answers unavailable, so time spent
    /// queued for the group counts against the same bound.
    pub(super) async fn run_waiting_since<T>(
        &self,
        since: Instant,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let mut lease = self.lease(since + ACQUIRE_TIMEOUT).await?;
        let result = work(&mut lease.conn).await;
        match &result {
            Ok(_) => self.put_back(lease),
            // A broken connection, or one whose statement timed out: not worth keeping.
            Err(StoreError::Unavailable(_)) => {}
            Err(_) => {
                if lease.conn.ping().await.is_ok() {
                    self.put_back(lease);
                }
            }
        }
        result
    }

    async fn lease(&self, deadline: Instant) -> Result<Lease<'_>> {
        let permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("every database connection is busy".into()))?
            .map_err(|_| StoreError::Unavailable("the database pool is closed".into()))?;
        while let Some(Idle { mut conn, since }) = self.take_idle() {
            if since.elapsed() <= RETEST_IDLE_AFTER || conn.ping().await.is_ok() {
                return Ok(Lease { conn, _permit: permit });
            }
        }
        let mut pause = RETRY_FIRST;
        loop {
            let error = match tokio::time::timeout_at(deadline, self.hosts.connect()).await {
                Ok(Ok(conn)) => return Ok(Lease { conn, _permit: permit }),
                Ok(Err(e)) => classify(e),
                Err(_) => StoreError::Unavailable("no connection to the database in time".into()),
            };
            // Only what a retry can fix is retried (not a wrong password, say).
            if !matches!(error, StoreError::Unavailable(_)) || Instant::now() + pause >= deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn put_back(&self, lease: Lease<'_>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle.first().is_some_and(|oldest| oldest.since.elapsed() > IDLE_TIMEOUT) {
            let Idle { conn, .. } = idle.remove(0);
            tokio::spawn(conn.close());
        }
        idle.push(Idle { conn: lease.conn, since: Instant::now() });
        // The permit is released here, after the connection is back.
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    fn url() -> String {
        std::env::var("QUOTASK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    fn server() -> Hosts {
        Hosts::parse(&url()).expect("a PostgreSQL URL")
    }

    fn options() -> sqlx::postgres::PgConnectOptions {
        url().parse().expect("a PostgreSQL URL")
    }

    async fn backend_pid(pool: &Pool) -> i32 {
        pool.run(async |c| sqlx::query_scalar("select pg_backend_pid()").fetch_one(&mut *c).await.map_err(classify))
            .await
            .unwrap()
    }

    /// Ends the server's side of connection `pid`, and waits until it is gone.
    async fn cut(pid: i32) {
        let mut other = PgConnection::connect_with(&options()).await.unwrap();
        sqlx::query("select pg_terminate_backend($1, 5000)").bind(pid).execute(&mut other).await.unwrap();
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn a_finished_call_leaves_its_connection_for_the_next() {
        let pool = Pool::open(server(), 4).await.unwrap();
        let first = backend_pid(&pool).await;
        assert_eq!(backend_pid(&pool).await, first);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn a_call_cancelled_mid_statement_takes_its_connection_with_it() {
        let pool = Pool::open(server(), 1).await.unwrap();
        let first = backend_pid(&pool).await;
        let slow =
            pool.run(async |c| sqlx::query("select pg_sleep(5)").execute(&mut *c).await.map(drop).map_err(classify));
        assert!(tokio::time::timeout(Duration::from_millis(200), slow).await.is_err(), "pg_sleep(5) finished");
        // Put back, the connection would still owe pg_sleep's answer; the next call gets
        // a new one at once.
        let next = tokio::time::timeout(Duration::from_secs(10), backend_pid(&pool)).await.expect("a connection");
        assert_ne!(next, first);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn a_transaction_that_failed_holds_no_lock_once_its_connection_is_back() {
        let pool = Pool::open(server(), 1).await.unwrap();
        let key: i64 = rand::random();
        let failed = pool
            .run(async |c| {
                let mut tx = c.begin().await.map_err(classify)?;
                sqlx::query("select pg_advisory_xact_lock($1)").bind(key).execute(&mut *tx).await.map_err(classify)?;
                // Not an error of the database's, which would abort the transaction
                // there (and free its locks): one of ours, a row that does not decode.
                Err::<(), _>(StoreError::Internal(anyhow::anyhow!("a row that does not decode")))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        let mut other = PgConnection::connect_with(&options()).await.unwrap();
        let free: bool =
            sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(key).fetch_one(&mut other).await.unwrap();
        assert!(free, "the failed transaction's lock is still held by the idle connection");
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn no_more_connections_are_open_at_once_than_the_pool_allows() {
        let pool = Pool::open(server(), 2).await.unwrap();
        let calls = (0..8).map(|_| {
            pool.run(async |c| {
                sqlx::query_scalar("select pg_backend_pid() from pg_sleep(0.2)")
                    .fetch_one(&mut *c)
                    .await
                    .map_err(classify)
            })
        });
        let pids: std::collections::HashSet<i32> =
            futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
        assert!(pids.len() <= 2, "{} connections", pids.len());
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn a_call_that_cannot_get_a_connection_in_time_is_unavailable() {
        let pool = Pool::open(server(), 1).await.unwrap();
        let busy = pool.run(async |c| sqlx::query("select pg_sleep(4)").execute(&mut *c).await.map_err(classify));
        let waiting = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pool.run(async |_| Ok(())).await
        };
        let (busy, waiting) = tokio::join!(busy, waiting);
        busy.unwrap();
        assert!(matches!(waiting, Err(StoreError::Unavailable(_))), "{waiting:?}");
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn an_idle_connection_cut_by_the_server_is_replaced_not_reported() {
        let pool = Pool::open(server(), 1).await.unwrap();
        let first = backend_pid(&pool).await;
        cut(first).await;
        tokio::time::sleep(RETEST_IDLE_AFTER + Duration::from_millis(200)).await;
        assert_ne!(backend_pid(&pool).await, first);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn a_connection_that_broke_during_a_call_is_not_lent_again() {
        let pool = Pool::open(server(), 1).await.unwrap();
        let first = backend_pid(&pool).await;
        cut(first).await;
        // Used again at once, before it would be tested: the call finds it cut.
        let cut = pool.run(async |c| sqlx::query("select 1").execute(&mut *c).await.map_err(classify)).await;
        assert!(matches!(cut, Err(StoreError::Unavailable(_))), "{cut:?}");
        assert_ne!(backend_pid(&pool).await, first);
    }
}
