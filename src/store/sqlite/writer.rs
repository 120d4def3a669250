//! The writer thread: group commit, and the epoch that tells a memo of earlier reads
//! when to forget them.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit waits
//! for the disk. So all writes go to one thread, which takes every job waiting, runs
//! each in its own savepoint (a failing job is rolled back alone; a job of one
//! statement needs none), commits once, and only then answers them all. A job that
//! panics fails alone too (see `run_job`).
//!
//! The writer keeps an `Epoch`: a count that moves whenever what a job read in an earlier
//! batch may no longer be what the database holds. Jobs that want to remember what they
//! read (the quota's counts, see `tasks::QuotaMemo`) keep it only while the epoch stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::batching::{MAX_BATCH, next_batch};
use super::connection::run;
use super::wal_buffer;
use crate::store::{Result, StoreError};

/// Answers a job's caller with the batch's outcome, once the batch is over.
pub(super) type Reply = Box<dyn FnOnce(Result<()>) + Send>;
/// Runs a job in the batch's transaction: whether it succeeded, and its `Reply`.
pub(super) type Run = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// A write waiting for the writer.
pub(super) struct Job {
    pub(super) run: Run,
    pub(super) mode: Mode,
}

/// How the writer runs a job: in a savepoint of its own or not, and whether it keeps
/// the `Epoch`.
///
/// The epoch rule: a job moves the epoch before it runs, so that the quota memo
/// (`tasks::QuotaMemo`) forgets every count it holds, unless its mode says
/// `keeping_epoch`. Only a job that records each change it makes in that memo itself,
/// or that changes nothing the memo holds (a user's limit or a day's use, a user's
/// enabled webhooks), may keep it: today single and batch creates (`tasks::create`,
/// `tasks::create_batch`), the record of a personal token's last use, and the webhook
/// outbox's claims and attempts (`webhooks`; not the attempt that disables a webhook).
/// So a new kind of write is right without a thought: both modes move the epoch, and
/// so does `Executor::write`.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    savepoint: bool,
    keeps_epoch: bool,
}

impl Mode {
    /// In a savepoint of its own, so that its failure undoes its changes alone; moves the
    /// epoch. `Executor::write` runs jobs so.
    pub const SAVEPOINT: Mode = Mode { savepoint: true, keeps_epoch: false };
    /// Without a savepoint, for a job that changes the database with one statement at
    /// most: SQLite applies a statement whole or not at all, so its failure leaves
    /// nothing to undo, and the writer, which every create waits for, runs two
    /// statements fewer. (A create that also writes webhook events opens a savepoint
    /// of its own around its statements: `webhooks::with_events`.) Moves the epoch.
    pub const ONE_STATEMENT: Mode = Mode { savepoint: false, keeps_epoch: false };

    /// This mode, leaving the epoch where it is: only for a job that records in the
    /// quota memo every change it makes (see the epoch rule above).
    pub const fn keeping_epoch(self) -> Mode {
        Mode { keeps_epoch: true, ..self }
    }
}

/// See the module doc. It moves before a job that does not keep it, after a batch that
/// failed (its changes were rolled back, including those a memo recorded), and when
/// another connection (another process: the command line) committed since the last
/// batch. Only the writer thread moves or reads it.
#[derive(Clone, Default)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn advance(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the writer thread on `conn`, which runs the jobs sent on `jobs`.
pub(super) fn start(conn: Connection, jobs: mpsc::Receiver<Job>, epoch: Epoch) -> std::io::Result<()> {
    std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || run_writer(conn, jobs, epoch)).map(drop)
}

/// The writer thread. It stops (and `Executor::ping` fails from then on) only when its
/// connection is left inside a transaction that cannot be rolled back: every later
/// batch would fail to begin.
fn run_writer(conn: Connection, mut rx: mpsc::Receiver<Job>, epoch: Epoch) {
    let mut data_version = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut rx, &mut batch) {
        metrics::histogram!(crate::metrics::DB_GROUP_COMMIT_SIZE).record(batch.len() as f64);
        let (replies, outcome) = commit_batch(&conn, batch.drain(..), &epoch, &mut data_version);
        if let Err(e) = &outcome {
            epoch.advance();
            tracing::error!(error = %e, jobs = replies.len(), "group commit failed");
        }
        // A failed WAL write fails the rest of its transaction only.
        wal_buffer::end_transaction(&conn);
        for reply in replies {
            reply(outcome.as_ref().map(|_| ()).map_err(|e| StoreError::Unavailable(e.to_string())));
        }
        if !conn.is_autocommit() {
            tracing::error!("the writer cannot roll back its transaction; it stops, and /readyz answers 503");
            return;
        }
    }
}

/// Runs a batch in one transaction and hands back every job's reply, with the batch's
/// outcome (on failure nothing of the batch is kept, so each caller hears of it).
fn commit_batch(
    conn: &Connection,
    jobs: impl Iterator<Item = Job>,
    epoch: &Epoch,
    data_version: &mut Option<i64>,
) -> (Vec<Reply>, rusqlite::Result<()>) {
    let mut replies = Vec::with_capacity(MAX_BATCH);
    let mut failure = begin(conn, epoch, data_version).err();
    for job in jobs {
        if failure.is_some() {
            replies.push(never_ran());
            continue;
        }
        let (reply, outcome) = run_job(conn, job, epoch);
        replies.push(reply);
        failure = outcome.err();
    }
    let outcome = match failure {
        None => run(conn, "commit"),
        Some(e) => Err(e),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("rollback");
    }
    (replies, outcome)
}

/// Begins the batch's transaction, and moves the epoch if another connection committed
/// since the last batch.
fn begin(conn: &Connection, epoch: &Epoch, data_version: &mut Option<i64>) -> rusqlite::Result<()> {
    run(conn, "begin immediate")?;
    // Read with the write lock held: no other connection can commit until ours does.
    let now = conn.prepare_cached("pragma data_version")?.query_row([], |r| r.get(0))?;
    if Some(now) != *data_version {
        *data_version = Some(now);
        epoch.advance();
    }
    Ok(())
}

/// Runs one job of the batch: its reply, and whether the batch can go on. A job that
/// panics fails alone: its reply channel goes with it (its caller hears that it failed)
/// and its changes are undone with its savepoint. A job without a savepoint promised one
/// statement at most; if it changed anything before it panicked, that cannot be undone
/// alone, so the batch fails instead, and no caller is told of a change that is kept.
fn run_job(conn: &Connection, job: Job, epoch: &Epoch) -> (Reply, rusqlite::Result<()>) {
    if !job.mode.keeps_epoch {
        epoch.advance();
    }
    if job.mode.savepoint
        && let Err(e) = run(conn, "savepoint job")
    {
        return (never_ran(), Err(e));
    }
    let changes = conn.total_changes();
    let (ok, reply) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(conn))) {
        Ok(ran) => ran,
        Err(_) => {
            // A memo may have recorded a change that is now undone.
            epoch.advance();
            tracing::error!("a write job panicked; its changes are undone");
            if !job.mode.savepoint && conn.total_changes() != changes {
                return (never_ran(), Err(aborted("a job without a savepoint panicked after a change")));
            }
            (false, never_ran())
        }
    };
    let end = match (job.mode.savepoint, ok) {
        (false, _) => Ok(()),
        (true, true) => run(conn, "release job"),
        (true, false) => run(conn, "rollback to job").and(run(conn, "release job")),
    };
    // Some errors (a full disk, an I/O error) make SQLite roll the whole transaction
    // back; what follows must not run outside of it.
    let end = end.and_then(|()| match conn.is_autocommit() {
        true => Err(aborted("the transaction was rolled back by a failed statement")),
        false => Ok(()),
    });
    (reply, end)
}

fn aborted(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT), Some(why.into()))
}

/// The reply in place of one that went with its job: the job never ran (the batch had
/// already failed) or it panicked. Its caller reads the dropped channel as a failure.
fn never_ran() -> Reply {
    Box::new(|_| {})
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::sqlite::executor::Executor;
    use crate::store::sqlite::executor::tests::{executor_in, ids, insert, one_batch_of};

    const KEEPS: Mode = Mode::ONE_STATEMENT.keeping_epoch();
    const ONE_STATEMENT: Mode = Mode::ONE_STATEMENT;

    /// The epoch as a job that keeps it sees it.
    async fn at(executor: &Executor) -> u64 {
        let epoch = executor.epoch();
        executor.write_with(KEEPS, move |_| Ok(epoch.get())).await.unwrap()
    }
    #[tokio::test]
    async fn the_epoch_moves_for_every_change_a_memo_could_miss() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor_in(&dir);
        let epoch = executor.epoch();
        let first = at(&executor).await;
        assert_eq!(at(&executor).await, first, "jobs that keep it leave it");

        executor
            .write(|c| c.execute("insert into t values (1)", []).map_err(|e| StoreError::Internal(e.into())))
            .await
            .unwrap();
        let after_write = at(&executor).await;
        assert!(after_write > first, "another job moves it");
        executor.write_with(ONE_STATEMENT, insert(3)).await.unwrap();
        let after_one_statement = at(&executor).await;
        assert!(after_one_statement > after_write, "a job of one statement moves it too");

        let other = Connection::open(dir.path().join("db")).unwrap();
        other.execute("insert into t values (2)", []).unwrap();
        let after_other = at(&executor).await;
        assert!(after_other > after_one_statement, "another connection's commit moves it");

        // A job that ends the transaction under the writer makes the batch fail.
        let failed = executor
            .write_with(KEEPS, |c| c.execute_batch("rollback").map_err(|e| StoreError::Internal(e.into())))
            .await;
        assert!(failed.is_err());
        assert!(at(&executor).await > after_other, "a failed batch moves it");
        assert_eq!(epoch.get(), at(&executor).await);
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_job_fails_alone_and_later_writes_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(executor_in(&dir));
        let held = one_batch_of(&executor, 3).await;
        let (before, panics, after) = tokio::join!(
            executor.write(insert(1)),
            executor.write(|c| -> Result<()> {
                insert(2)(c)?;
                panic!("a bug in a write")
            }),
            executor.write(insert(3)),
        );
        held.await.unwrap();

        assert!(before.is_ok() && after.is_ok(), "{before:?} {after:?}");
        assert!(matches!(panics, Err(StoreError::Unavailable(_))), "{panics:?}");
        executor.write(insert(4)).await.expect("the writer goes on");
        assert_eq!(ids(&dir), [1, 3, 4], "the panicking job's insert was undone alone");
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_without_a_savepoint_that_panics_before_any_change_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(executor_in(&dir));
        let held = one_batch_of(&executor, 3).await;
        let (before, panics, after) = tokio::join!(
            executor.write_with(ONE_STATEMENT, insert(1)),
            executor.write_with(ONE_STATEMENT, |_| -> Result<()> { panic!("a bug before the statement") }),
            executor.write_with(ONE_STATEMENT, insert(3)),
        );
        held.await.unwrap();

        assert!(before.is_ok() && after.is_ok(), "{before:?} {after:?}");
        assert!(matches!(panics, Err(StoreError::Unavailable(_))), "{panics:?}");
        assert_eq!(ids(&dir), [1, 3]);
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_without_a_savepoint_that_panics_after_a_change_fails_its_batch_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(executor_in(&dir));
        let held = one_batch_of(&executor, 3).await;
        let (before, panics, after) = tokio::join!(
            executor.write_with(ONE_STATEMENT, insert(1)),
            executor.write_with(ONE_STATEMENT, |c| -> Result<()> {
                insert(2)(c)?;
                panic!("a bug after the statement")
            }),
            executor.write_with(ONE_STATEMENT, insert(3)),
        );
        held.await.unwrap();

        for answer in [before, panics, after] {
            assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
        }
        executor.write(insert(4)).await.expect("the writer goes on");
        assert_eq!(ids(&dir), [4], "no failed answer hides a kept change");
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_wal_write_found_by_a_read_fails_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let executor =
            Arc::new(Executor::open(&path, &["create table t (x integer primary key, body text not null)"]).unwrap());
        // A page cache of 10 pages: the batch's changes spill into the WAL before its
        // commit, and are read back while it goes on.
        executor
            .write(|c| c.pragma_update(None, "cache_size", 10).map_err(|e| StoreError::Internal(e.into())))
            .await
            .unwrap();
        let fill = |from: i64| {
            move |c: &Connection| {
                for i in from..from + 300 {
                    c.execute("insert into t values (?1, ?2)", (i, format!("{i:0>2000}")))
                        .map_err(|e| StoreError::Internal(e.into()))?;
                }
                Ok(())
            }
        };
        let held = one_batch_of(&executor, 3).await;
        let update_path = path.clone();
        let (filled, updated, inserted) = tokio::join!(
            executor.write(fill(0)),
            executor.write(move |c| {
                wal_buffer::tests::fail_next_read_flush(&update_path);
                c.execute("update t set body = upper(body) where x % 3 = 0", [])
                    .map(drop)
                    .map_err(|e| StoreError::Internal(e.into()))
            }),
            executor.write(fill(1000)),
        );
        held.await.unwrap();

        assert!(!wal_buffer::tests::read_flush_fault_armed(&path), "the fault fired");
        assert!(filled.is_err() && updated.is_err() && inserted.is_err(), "{filled:?} {updated:?} {inserted:?}");
        executor.write(fill(5000)).await.expect("the writer goes on");
        drop(executor);
        // Let the writer thread close its connection.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let reopened = Connection::open(&path).unwrap();
        let check: String = reopened.query_row("pragma integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let rows: i64 = reopened.query_row("select count(*) from t where x >= 5000", [], |r| r.get(0)).unwrap();
        let all: i64 = reopened.query_row("select count(*) from t", [], |r| r.get(0)).unwrap();
        assert_eq!((rows, all), (300, 300), "only the acknowledged batch is stored");
    }
}
