//! SQLite's executor: every write goes to one writer thread that commits in groups
//! (`writer`), every read to one reader thread that reads in groups, and a checkpoint
//! thread copies the WAL back (`checkpointer`).
//!
//! Reads go to a thread of their own, with its own connection, so they never queue
//! behind the writer (WAL lets them read meanwhile). It takes every read waiting and
//! runs them all in one read transaction: group read. Beginning and ending a read
//! transaction was half of what a read cost in SQLite, in locks on the `-shm` file that
//! the async workers' own connections contended for. One transaction per batch took
//! `GET /v1/me/quota` from 70,658 and 67,508 to 90,638 and 85,454 a second in two pairs
//! of 5 s runs (bench/README.md). Every read in a batch was asked for before the batch's
//! transaction began, so it sees at least every commit its caller could know of. Reads
//! are short indexed lookups (a page of at most 100 tasks at worst), so one thread runs
//! them in turn without holding others up for long.
//!
//! The writer's connection writes its WAL through `wal_buffer`: one `pwrite` a commit
//! (per 124 KiB) instead of two for each page.

use std::path::Path;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::batching::{MAX_BATCH, next_batch};
use super::connection::{open_reader, open_writer, run};
pub use super::writer::{Epoch, Mode};
use super::writer::{Job, Reply, Run};
use super::{checkpointer, writer};
use crate::store::{Result, StoreError};

/// Jobs that may wait for the writer, or for the reader, before senders wait too
/// (backpressure).
const QUEUE: usize = 4096;

/// A read waiting for the reader: given the connection inside the batch's transaction,
/// or `None` when that transaction could not begin.
type Read = Box<dyn FnOnce(Option<&Connection>) + Send>;

/// The writer, reader and checkpoint threads of one database, and the queues to them.
pub struct Executor {
    writer: mpsc::Sender<Job>,
    /// Asks the checkpoint thread for a final checkpoint; dropped with the executor,
    /// which tells the thread to stop.
    checkpoints: std::sync::mpsc::Sender<oneshot::Sender<()>>,
    reader: mpsc::Sender<Read>,
    /// Reads asked for and not yet answered.
    reads_in_flight: metrics::Gauge,
    epoch: Epoch,
}

impl Executor {
    /// Opens the database, applies `migrations` (each once, tracked by `user_version`)
    /// and starts the writer, reader and checkpoint threads.
    pub fn open(path: &Path, migrations: &[&str]) -> anyhow::Result<Self> {
        let writer_conn = open_writer(path, migrations)?;
        let checkpoints = checkpointer::start(path)?;
        let reader_conn = open_reader(path)?;
        let (reader, reads) = mpsc::channel(QUEUE);
        std::thread::Builder::new().name("sqlite-reader".into()).spawn(move || run_reader(reader_conn, reads))?;
        let (writer, jobs) = mpsc::channel(QUEUE);
        let epoch = Epoch::default();
        writer::start(writer_conn, jobs, epoch.clone())?;
        Ok(Self {
            writer,
            checkpoints,
            reader,
            reads_in_flight: metrics::gauge!(crate::metrics::DB_READS_IN_FLIGHT),
            epoch,
        })
    }

    /// The writer's epoch, for jobs to read (on the writer thread).
    pub fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    /// Runs `f` inside the next group commit, in a savepoint of its own; answers after
    /// the commit is on disk. Moves the writer's epoch (see `Mode`).
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(Mode::SAVEPOINT, f).await
    }

    /// `write`, run as `mode` says.
    pub async fn write_with<T, F>(&self, mode: Mode, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Run = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, reply)
        });
        self.writer.send(Job { run, mode }).await.map_err(|_| writer_stopped())?;
        // Without an answer: the job panicked (and was undone), or the writer stopped.
        rx.await.map_err(|_| {
            if self.writer.is_closed() {
                writer_stopped()
            } else {
                StoreError::Unavailable("a write failed on the writer thread".into())
            }
        })?
    }

    /// Runs `f` on the reader thread, in the next group read: every statement of `f`,
    /// and of the other reads in its batch, sees one snapshot of the database, taken
    /// after `f` was asked for.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let read: Read = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Unavailable("cannot begin a read transaction".into())),
            };
            let _ = tx.send(result);
        });
        self.reads_in_flight.increment(1);
        let _answered = scopeguard(|| self.reads_in_flight.decrement(1));
        self.reader.send(read).await.map_err(|_| StoreError::Unavailable("the reader has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("a read failed on the reader thread".into()))?
    }

    /// Whether both threads serve: the writer is running (it stops only when it cannot go
    /// on, see `writer::start`) and the reader answers.
    pub async fn ping(&self) -> Result<()> {
        if self.writer.is_closed() {
            return Err(writer_stopped());
        }
        self.read(|c| c.query_row("select 1", [], |_| Ok(())).map_err(|e| StoreError::Internal(e.into()))).await
    }

    /// At a clean stop, after the last request: copies the whole WAL into the database
    /// and empties it, so the next start has no WAL to read back (a full one took
    /// 180 ms to recover). Waits at most a few seconds for reads still running.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.checkpoints.send(done).is_ok() {
            let _ = finished.await;
        }
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the writer has stopped".into())
}

/// Runs `f` when dropped, so the readers-busy gauge comes down even if a read fails.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The reader thread: takes every read waiting, then begins one read transaction for
/// all of them (its snapshot is taken at its first statement, after each of them was
/// asked for), runs them and ends it. A read that panics is answered as failed; the
/// others, and the thread, go on.
fn run_reader(conn: Connection, mut rx: mpsc::Receiver<Read>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut rx, &mut batch) {
        let began = run(&conn, "begin");
        if let Err(e) = &began {
            tracing::error!(error = %e, reads = batch.len(), "cannot begin a read transaction");
        }
        let conn = began.is_ok().then_some(&conn);
        for read in batch.drain(..) {
            // Its reply channel is dropped with it, which its caller reads as a failure.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(conn)));
        }
        // Only reads ran: ending it either way changes nothing.
        if let Some(conn) = conn
            && run(conn, "commit").or_else(|_| run(conn, "rollback")).is_err()
        {
            tracing::error!("cannot end a read transaction");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;

    pub(in crate::store::sqlite) fn executor_in(dir: &tempfile::TempDir) -> Executor {
        Executor::open(&dir.path().join("db"), &["create table t (x integer primary key)"]).unwrap()
    }
    pub(in crate::store::sqlite) fn count(c: &Connection) -> Result<i64> {
        c.query_row("select count(*) from t", [], |r| r.get(0)).map_err(|e| StoreError::Internal(e.into()))
    }
    /// Holds the writer inside a job until `n` more jobs wait behind it, so that they
    /// make one batch together.
    pub(in crate::store::sqlite) async fn one_batch_of(
        executor: &Arc<Executor>,
        n: usize,
    ) -> tokio::task::JoinHandle<()> {
        let queue = executor.writer.clone();
        let executor = executor.clone();
        let (running, started) = oneshot::channel();
        let held = tokio::spawn(async move {
            executor
                .write(move |_| {
                    let _ = running.send(());
                    while queue.max_capacity() - queue.capacity() < n {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Ok(())
                })
                .await
                .unwrap();
        });
        started.await.unwrap();
        held
    }
    pub(in crate::store::sqlite) fn insert(i: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |c| c.execute("insert into t values (?1)", [i]).map(drop).map_err(|e| StoreError::Internal(e.into()))
    }
    pub(in crate::store::sqlite) fn ids(dir: &tempfile::TempDir) -> Vec<i64> {
        let c = Connection::open(dir.path().join("db")).unwrap();
        let mut s = c.prepare("select x from t order by x").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_every_write_answered_before_it_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let executor = Arc::new(executor_in(&dir));
        // Other reads keep the reader busy, so that reads are batched.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..8)
            .map(|_| {
                let (executor, stop) = (executor.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        executor.read(count).await.unwrap();
                    }
                })
            })
            .collect();
        for i in 1..=2000 {
            executor
                .write(move |c| {
                    c.execute("insert into t values (?1)", [i]).map(drop).map_err(|e| StoreError::Internal(e.into()))
                })
                .await
                .unwrap();
            assert_eq!(executor.read(count).await.unwrap(), i, "a read after the write's answer");
        }
        stop.store(true, Ordering::Relaxed);
        for task in busy {
            task.await.unwrap();
        }
    }
    #[tokio::test]
    async fn a_read_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor_in(&dir);
        let failed = executor.read(|_| -> Result<()> { panic!("a bug in a read") }).await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
        assert_eq!(executor.read(count).await.unwrap(), 0, "the reader goes on");
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_fails_once_the_writer_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor_in(&dir);
        executor.ping().await.expect("a fresh store answers");
        // A fault in the writer's own code, outside any job: its thread ends.
        let run: Run = Box::new(|_| (true, Box::new(|_| panic!("a bug in the writer"))));
        executor.writer.send(Job { run, mode: Mode::SAVEPOINT }).await.unwrap();

        let mut answer = executor.ping().await;
        for _ in 0..100 {
            if answer.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            answer = executor.ping().await;
        }
        assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    }
}
