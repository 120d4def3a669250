//! SQLite's connections: one writer thread that commits in groups, one reader thread that
//! reads in groups, and a checkpoint thread.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit waits
//! for the disk. So all writes go to one thread, which takes every job waiting, runs
//! each in its own savepoint (a failing job is rolled back alone; a job of one
//! statement needs none), commits once, and only then answers them all: group commit.
//!
//! Reads go the same way to a reader thread of their own, with its own connection, so
//! they never queue behind the writer (WAL lets them read meanwhile). It takes every
//! read waiting and runs them all in one read transaction: group read. Beginning and
//! ending a read transaction was half of what a read cost in SQLite, in locks on the
//! `-shm` file that the async workers' own connections contended for. One transaction per batch
//! took `GET /v1/me/quota` from 70,658 and 67,508 to 90,638 and 85,454 a second in two
//! pairs of 5 s runs (bench/README.md, "Seventh session"). Every read in a batch was
//! asked for before the batch's transaction began, so it sees at least every commit its
//! caller could know of. Reads are short indexed lookups (a page of at most 100 tasks
//! at worst), so one thread runs them in turn without holding others up for long.
//!
//! Checkpoints (copying the WAL back into the database) run mostly on a thread of their
//! own, so the writer's commits rarely pay for them.
//!
//! The writer's connection writes its WAL through `wal_buffer`: one `pwrite` a commit
//! (per 124 KiB) instead of two for each page.
//!
//! The writer keeps an `Epoch`: a count that moves whenever what a job read in an earlier
//! batch may no longer be what the database holds. Jobs that want to remember what they
//! read (the quota's counts, see `tasks::QuotaMemo`) keep it only while the epoch stays.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::wal_buffer;
use crate::store::{Result, StoreError};

/// The most jobs one commit, or one read transaction, carries; bounds a batch's latency.
const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer, or for the reader, before senders wait too
/// (backpressure).
const QUEUE: usize = 4096;

type Reply = Box<dyn FnOnce(Result<()>) + Send>;
type Run = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
/// A read waiting for the reader: given the connection inside the batch's transaction,
/// or `None` when that transaction could not begin.
type Read = Box<dyn FnOnce(Option<&Connection>) + Send>;

/// A write waiting for the writer.
struct Job {
    run: Run,
    mode: Mode,
}

/// How the writer runs a job.
#[derive(Clone, Copy)]
pub struct Mode {
    /// Whether the job gets a savepoint, so that its failure undoes its changes alone.
    /// A job that changes the database in one statement at most does not need one:
    /// SQLite applies a statement whole or not at all.
    pub savepoint: bool,
    /// Whether the job leaves the `Epoch` where it is: true only for jobs whose every
    /// change is recorded by the memo that relies on the epoch (creates, in
    /// `tasks::QuotaMemo`). Any other job moves it before it runs.
    pub keeps_epoch: bool,
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

pub struct Pool {
    writer: mpsc::Sender<Job>,
    /// Asks the checkpoint thread for a final checkpoint; dropped with the pool, which
    /// tells the thread to stop.
    checkpoints: std::sync::mpsc::Sender<oneshot::Sender<()>>,
    reader: mpsc::Sender<Read>,
    /// Reads asked for and not yet answered.
    reads_in_flight: metrics::Gauge,
    epoch: Epoch,
}

impl Pool {
    /// Opens the database, applies `migrations` (each once, tracked by `user_version`)
    /// and starts the writer, reader and checkpoint threads.
    pub fn open(path: &Path, migrations: &[&str]) -> anyhow::Result<Self> {
        create_private(path)?;
        // The writer's WAL writes go through `wal_buffer`, which relies on every commit
        // syncing the WAL (`synchronous=FULL`); it is checked here, not assumed.
        let mut conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), wal_buffer::register()?)?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "full")?;
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        anyhow::ensure!(synchronous >= 2, "SQLite refused synchronous=FULL for the writer");
        configure(&conn)?;
        migrate(&mut conn, migrations)?;
        // The checkpoint thread does the copying; the writer still checkpoints when the
        // WAL passes `WAL_RESTART_PAGES`, because only a checkpoint that reaches the end
        // of the WAL right before a write lets SQLite start the WAL over. Without it,
        // under steady writes the WAL grew by 38 MB a second (measured), and a restart
        // then spent 0.5 s reading it back.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_RESTART_PAGES)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let checkpoints = start_checkpointer(path)?;
        let reader_conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure(&reader_conn)?;
        reader_conn.pragma_update(None, "query_only", true)?;
        let (reader, reads) = mpsc::channel(QUEUE);
        std::thread::Builder::new().name("sqlite-reader".into()).spawn(move || run_reader(reader_conn, reads))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let epoch = Epoch::default();
        let writer_epoch = epoch.clone();
        std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || run_writer(conn, rx, writer_epoch))?;
        Ok(Self {
            writer: tx,
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
    /// the commit is on disk.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(Mode { savepoint: true, keeps_epoch: false }, f).await
    }

    /// `write`, run as `mode` says. Without a savepoint (for an `f` that changes the
    /// database with one statement at most, so that its failure leaves nothing to undo)
    /// the writer, which every create waits for, runs two statements fewer.
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
    /// on, see `run_writer`) and the reader answers.
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

/// WAL pages after which the writer checkpoints what the checkpoint thread has not yet
/// copied, so that the next write starts the WAL over. The writer's checkpoint stalls
/// every create waiting for it, so it should be rare (a larger WAL) and short (the
/// checkpoint thread copying often, see `CHECKPOINT_BUSY`). At 4,000 pages it ran about
/// 15 times a second under creates and cost 2 to 3 ms of the writer's CPU each time;
/// at 16,000 the p99 of creates fell by about 1 ms (bench/README.md, "Third session").
const WAL_RESTART_PAGES: i64 = 16_000;
/// The WAL is cut back to this size when it starts over. Above the largest WAL the
/// writer lets grow (16,000 frames of 4 KiB and a batch more, about 67 MB), so the
/// file is reused in place: growing it again costs block allocation inside commits.
const WAL_SIZE_LIMIT: i64 = 96 * 1024 * 1024;
/// How soon the checkpoint thread copies again after it found pages to copy: the less
/// it leaves, the less the writer's own checkpoint has to copy.
const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_millis(20);
/// How soon it looks again after it found nothing to copy (no writes meanwhile).
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Starts the thread that checkpoints the WAL (`PASSIVE`: it never blocks the writer or
/// readers; what it cannot copy yet it copies next time). A request on the returned
/// sender makes it checkpoint everything and empty the WAL (`TRUNCATE`), then answer;
/// it stops when the sender is dropped.
fn start_checkpointer(path: &Path) -> anyhow::Result<std::sync::mpsc::Sender<oneshot::Sender<()>>> {
    use std::sync::mpsc::RecvTimeoutError;
    let conn = Connection::open(path)?;
    configure(&conn)?;
    let (requests, received) = std::sync::mpsc::channel::<oneshot::Sender<()>>();
    std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
        // The WAL's (pages, pages copied) at the last look; unchanged means no writes.
        let mut last = (0, 0);
        let mut wait = CHECKPOINT_IDLE;
        loop {
            match received.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
                Ok(done) => {
                    if let Err(e) = conn.query_row("pragma wal_checkpoint(truncate)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "final WAL checkpoint failed; the next start reads the WAL back");
                    }
                    let _ = done.send(());
                    continue;
                }
            }
            match conn
                .query_row("pragma wal_checkpoint(passive)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            {
                Ok(now) => {
                    wait = if now == last { CHECKPOINT_IDLE } else { CHECKPOINT_BUSY };
                    last = now;
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
            }
        }
    })?;
    Ok(requests)
}

/// Creates the database file readable by its owner only (it holds the signing secret);
/// SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
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

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> anyhow::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// How long the writer and the reader look for the next job before they sleep, when
/// there is more than one core. Under load the next job comes within microseconds; a
/// thread that slept has to be woken by a system call of its caller's, and then wait
/// for a core. With 30 µs, in five pairs of 5 s quota runs: 83,335, 91,681, 84,865,
/// 93,217 and 90,677 reads/s, p99 1.62 to 2.06 ms, against 83,793, 88,929, 81,318,
/// 86,067 and 87,735, p99 2.48 to 3.75 (the reader's own CPU 3.3 to 3.6 µs a read
/// against 2.5 to 2.7; the server's the same or less). Creates did not change: the
/// writer finds work waiting.
const LOOK_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(30);

/// Waits for a job, then adds every job already waiting to `batch`, up to `MAX_BATCH`.
/// False once every sender is gone.
fn next_batch<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) -> bool {
    static LOOK: std::sync::LazyLock<std::time::Duration> = std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores > 1 { LOOK_BEFORE_SLEEP } else { std::time::Duration::ZERO }
    });
    let started = std::time::Instant::now();
    let first = loop {
        match rx.try_recv() {
            Ok(job) => break Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
            Err(mpsc::error::TryRecvError::Empty) if started.elapsed() < *LOOK => std::hint::spin_loop(),
            Err(mpsc::error::TryRecvError::Empty) => break None,
        }
    };
    let Some(first) = first.or_else(|| rx.blocking_recv()) else { return false };
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    true
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

/// The writer thread. It stops (and `Pool::ping` fails from then on) only when its
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

/// Runs a statement without results through the statement cache (the transaction and
/// savepoint statements of every batch would otherwise be parsed anew each time).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The reply in place of one that went with its job: the job never ran (the batch had
/// already failed) or it panicked. Its caller reads the dropped channel as a failure.
fn never_ran() -> Reply {
    Box::new(|_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dir: &tempfile::TempDir) -> Pool {
        Pool::open(&dir.path().join("db"), &["create table t (x integer primary key)"]).unwrap()
    }

    const KEEPS: Mode = Mode { savepoint: false, keeps_epoch: true };

    /// The epoch as a job that keeps it sees it.
    async fn at(pool: &Pool) -> u64 {
        let epoch = pool.epoch();
        pool.write_with(KEEPS, move |_| Ok(epoch.get())).await.unwrap()
    }

    fn count(c: &Connection) -> Result<i64> {
        c.query_row("select count(*) from t", [], |r| r.get(0)).map_err(|e| StoreError::Internal(e.into()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_every_write_answered_before_it_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(pool(&dir));
        // Other reads keep the reader busy, so that reads are batched.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..8)
            .map(|_| {
                let (pool, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        pool.read(count).await.unwrap();
                    }
                })
            })
            .collect();
        for i in 1..=2000 {
            pool.write(move |c| {
                c.execute("insert into t values (?1)", [i]).map(drop).map_err(|e| StoreError::Internal(e.into()))
            })
            .await
            .unwrap();
            assert_eq!(pool.read(count).await.unwrap(), i, "a read after the write's answer");
        }
        stop.store(true, Ordering::Relaxed);
        for task in busy {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_read_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir);
        let failed = pool.read(|_| -> Result<()> { panic!("a bug in a read") }).await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
        assert_eq!(pool.read(count).await.unwrap(), 0, "the reader goes on");
    }

    #[tokio::test]
    async fn the_epoch_moves_for_every_change_a_memo_could_miss() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir);
        let epoch = pool.epoch();
        let first = at(&pool).await;
        assert_eq!(at(&pool).await, first, "jobs that keep it leave it");

        pool.write(|c| c.execute("insert into t values (1)", []).map_err(|e| StoreError::Internal(e.into())))
            .await
            .unwrap();
        let after_write = at(&pool).await;
        assert!(after_write > first, "another job moves it");

        let other = Connection::open(dir.path().join("db")).unwrap();
        other.execute("insert into t values (2)", []).unwrap();
        let after_other = at(&pool).await;
        assert!(after_other > after_write, "another connection's commit moves it");

        // A job that ends the transaction under the writer makes the batch fail.
        let failed =
            pool.write_with(KEEPS, |c| c.execute_batch("rollback").map_err(|e| StoreError::Internal(e.into()))).await;
        assert!(failed.is_err());
        assert!(at(&pool).await > after_other, "a failed batch moves it");
        assert_eq!(epoch.get(), at(&pool).await);
    }

    /// Holds the writer inside a job until `n` more jobs wait behind it, so that they
    /// make one batch together.
    async fn one_batch_of(pool: &Arc<Pool>, n: usize) -> tokio::task::JoinHandle<()> {
        let queue = pool.writer.clone();
        let pool = pool.clone();
        let (running, started) = oneshot::channel();
        let held = tokio::spawn(async move {
            pool.write(move |_| {
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

    fn insert(i: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |c| c.execute("insert into t values (?1)", [i]).map(drop).map_err(|e| StoreError::Internal(e.into()))
    }

    fn ids(dir: &tempfile::TempDir) -> Vec<i64> {
        let c = Connection::open(dir.path().join("db")).unwrap();
        let mut s = c.prepare("select x from t order by x").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_job_fails_alone_and_later_writes_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(pool(&dir));
        let held = one_batch_of(&pool, 3).await;
        let (before, panics, after) = tokio::join!(
            pool.write(insert(1)),
            pool.write(|c| -> Result<()> {
                insert(2)(c)?;
                panic!("a bug in a write")
            }),
            pool.write(insert(3)),
        );
        held.await.unwrap();

        assert!(before.is_ok() && after.is_ok(), "{before:?} {after:?}");
        assert!(matches!(panics, Err(StoreError::Unavailable(_))), "{panics:?}");
        pool.write(insert(4)).await.expect("the writer goes on");
        assert_eq!(ids(&dir), [1, 3, 4], "the panicking job's insert was undone alone");
    }

    const ONE_STATEMENT: Mode = Mode { savepoint: false, keeps_epoch: false };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_without_a_savepoint_that_panics_before_any_change_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(pool(&dir));
        let held = one_batch_of(&pool, 3).await;
        let (before, panics, after) = tokio::join!(
            pool.write_with(ONE_STATEMENT, insert(1)),
            pool.write_with(ONE_STATEMENT, |_| -> Result<()> { panic!("a bug before the statement") }),
            pool.write_with(ONE_STATEMENT, insert(3)),
        );
        held.await.unwrap();

        assert!(before.is_ok() && after.is_ok(), "{before:?} {after:?}");
        assert!(matches!(panics, Err(StoreError::Unavailable(_))), "{panics:?}");
        assert_eq!(ids(&dir), [1, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_without_a_savepoint_that_panics_after_a_change_fails_its_batch_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(pool(&dir));
        let held = one_batch_of(&pool, 3).await;
        let (before, panics, after) = tokio::join!(
            pool.write_with(ONE_STATEMENT, insert(1)),
            pool.write_with(ONE_STATEMENT, |c| -> Result<()> {
                insert(2)(c)?;
                panic!("a bug after the statement")
            }),
            pool.write_with(ONE_STATEMENT, insert(3)),
        );
        held.await.unwrap();

        for answer in [before, panics, after] {
            assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
        }
        pool.write(insert(4)).await.expect("the writer goes on");
        assert_eq!(ids(&dir), [4], "no failed answer hides a kept change");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_fails_once_the_writer_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir);
        pool.ping().await.expect("a fresh store answers");
        // A fault in the writer's own code, outside any job: its thread ends.
        let run: Run = Box::new(|_| (true, Box::new(|_| panic!("a bug in the writer"))));
        pool.writer.send(Job { run, mode: Mode { savepoint: true, keeps_epoch: false } }).await.unwrap();

        let mut answer = pool.ping().await;
        for _ in 0..100 {
            if answer.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            answer = pool.ping().await;
        }
        assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_wal_write_found_by_a_read_fails_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let pool =
            Arc::new(Pool::open(&path, &["create table t (x integer primary key, body text not null)"]).unwrap());
        // A page cache of 10 pages: the batch's changes spill into the WAL before its
        // commit, and are read back while it goes on.
        pool.write(|c| c.pragma_update(None, "cache_size", 10).map_err(|e| StoreError::Internal(e.into())))
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
        let held = one_batch_of(&pool, 3).await;
        let update_path = path.clone();
        let (filled, updated, inserted) = tokio::join!(
            pool.write(fill(0)),
            pool.write(move |c| {
                crate::store::sqlite::wal_buffer::tests::fail_next_read_flush(&update_path);
                c.execute("update t set body = upper(body) where x % 3 = 0", [])
                    .map(drop)
                    .map_err(|e| StoreError::Internal(e.into()))
            }),
            pool.write(fill(1000)),
        );
        held.await.unwrap();

        assert!(!crate::store::sqlite::wal_buffer::tests::read_flush_fault_armed(&path), "the fault fired");
        assert!(filled.is_err() && updated.is_err() && inserted.is_err(), "{filled:?} {updated:?} {inserted:?}");
        pool.write(fill(5000)).await.expect("the writer goes on");
        drop(pool);
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
