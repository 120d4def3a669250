//! Password hashing with argon2id, off the async threads and never more at once than
//! there are cores, so a sign-in flood cannot starve other routes or memory.
//!
//! Each hash needs 19 MiB of working memory. Allocated per hash, the allocator kept
//! those blocks around and fragmented them: 20 concurrent sign-ins took the process
//! from 25 to 240 MiB, and 200 to 430 MiB (measured, `tests/process.rs`). So hashes run
//! on a fixed set of threads, one per core, each reusing one working buffer it
//! allocates once: the memory is the cores times 19 MiB, whatever the load.
//!
//! Those threads also run at the lowest priority (nice 19, on Linux), so a hash only
//! gets a core that requests are not using. In `bench/run.sh`'s sign-in flood (32
//! sign-ins in flight on 2 cores), `GET /v1/me/quota` kept 0.60 of its rate without the
//! flood, p99 3.0 times as long, with the threads at nice 0; at nice 19 it kept 1.05,
//! p99 1.6 times. Sign-ins still progress while the cores are busy, more slowly.
//!
//! The queue in front of those threads is bounded (`QUEUE_PER_THREAD` hashes per
//! thread, one to two seconds of work on a 2-core VM): past it, a hash is refused at
//! once (`HashError::Busy`, which callers answer 503 with `Retry-After`), rather than
//! queued behind minutes of others. A queued hash whose requester has gone (its client
//! hung up) is never started, and holds no place: a full queue first drops those. So a
//! flood of requests that hang up costs no hashing and keeps no one else out.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OnceCell, oneshot};

use crate::domain::Password;

/// OWASP's argon2id floor: 19 MiB, two passes, one lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
/// The hashing threads' nice value: the lowest priority there is.
const HASHING_NICE: i32 = 19;
/// Hashes waiting per hashing thread, at most. A hash takes 20 to 30 ms on a 2-core VM
/// (a release build's calm sign-in, `bench/signup_flood.py`), so a full queue is one to
/// two seconds of work: a sign-in that would wait longer is better told to come back.
/// On 2 cores it is also more than the failed sign-ins one client address can have
/// evaluated in an hour (100 by default), so one address cannot fill it alone.
const QUEUE_PER_THREAD: usize = 64;
/// What a hash is assumed to take until one has been timed.
const FIRST_GUESS_MICROS: u64 = 30_000;
/// The longest `Retry-After` a full queue answers: on a machine so busy that hashes
/// crawl, a client is still told to come back within half a minute.
const MAX_RETRY_AFTER_SECS: u64 = 30;

/// Why a hash gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full; it should have room again after about `retry_after` seconds.
    #[error("the password hashing queue is full")]
    Busy { retry_after: u64 },
    /// Nobody waited for the hash any more when its turn came, so it was not computed.
    #[error("the hash was abandoned before it started")]
    Abandoned,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Kept by a request while its client waits, when its hashes run in a task of their
/// own (which outlives the request): once it is dropped, hashes queued with its
/// `Requester` are not started.
pub struct Waiting {
    _alive: Arc<()>,
}

/// Goes with the hashes queued on behalf of a `Waiting`.
#[derive(Clone)]
pub struct Requester(Weak<()>);

impl Requester {
    fn waits(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// A requester, and what its request keeps while its client waits.
pub fn requester() -> (Waiting, Requester) {
    let alive = Arc::new(());
    let requester = Requester(Arc::downgrade(&alive));
    (Waiting { _alive: alive }, requester)
}

#[derive(Clone)]
pub struct Hasher {
    queue: Arc<QueueHandle>,
    threads: usize,
    /// A hash of nothing in particular, verified when the user does not exist, so an
    /// unknown name costs as much as a wrong password.
    dummy: Arc<OnceCell<String>>,
}

impl Default for Hasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, cores * QUEUE_PER_THREAD)
    }
}

impl Hasher {
    /// `threads` hashing threads, with at most `capacity` hashes waiting for them.
    pub(crate) fn new(threads: usize, capacity: usize) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::new(State { jobs: VecDeque::new(), closed: false }),
            ready: Condvar::new(),
            capacity,
            mean_micros: AtomicU64::new(FIRST_GUESS_MICROS),
            computed: AtomicU64::new(0),
        });
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                yield_to_requests();
                while let Some(job) = queue.next() {
                    if job.abandoned() {
                        job.skip();
                    } else {
                        job.run(&queue);
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Self { queue: Arc::new(QueueHandle(queue)), threads: threads.max(1), dummy: Arc::default() }
    }
}

/// A hash waiting for a thread.
trait Job: Send {
    /// Whether nobody waits for its result any more.
    fn abandoned(&self) -> bool;
    /// Computes it, times it in `queue`, and hands the result over.
    fn run(self: Box<Self>, queue: &Queue);
    /// Hands `HashError::Abandoned` over instead, computing nothing.
    fn skip(self: Box<Self>);
}

struct Pending<T, F> {
    work: F,
    reply: oneshot::Sender<Result<T, HashError>>,
    requester: Option<Requester>,
}

impl<T: Send, F: FnOnce() -> anyhow::Result<T> + Send> Job for Pending<T, F> {
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.requester.as_ref().is_some_and(|r| !r.waits())
    }

    fn run(self: Box<Self>, queue: &Queue) {
        let started = Instant::now();
        let result = (self.work)().map_err(HashError::Failed);
        queue.timed(started.elapsed());
        metrics::counter!(crate::metrics::PASSWORD_HASHES, "outcome" => "computed").increment(1);
        let _ = self.reply.send(result);
    }

    fn skip(self: Box<Self>) {
        metrics::counter!(crate::metrics::PASSWORD_HASHES, "outcome" => "skipped").increment(1);
        let _ = self.reply.send(Err(HashError::Abandoned));
    }
}

/// The hashes waiting for a thread, shared by the threads and every clone of a `Hasher`.
struct Queue {
    state: Mutex<State>,
    /// Signalled when a job is queued or the queue is closed.
    ready: Condvar,
    capacity: usize,
    /// How long a hash takes (a moving average), for the `Retry-After` of a refusal.
    mean_micros: AtomicU64,
    /// Hashes computed (not those refused or skipped).
    computed: AtomicU64,
}

struct State {
    jobs: VecDeque<Box<dyn Job>>,
    /// Set when the last `Hasher` is gone: the threads exit.
    closed: bool,
}

impl Queue {
    /// Queues `job`, or gives it back if the queue is full even without the jobs whose
    /// callers have gone, which are dropped (answered `Abandoned`) to make room.
    fn push(&self, job: Box<dyn Job>) -> Result<(), Box<dyn Job>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.jobs.len() >= self.capacity {
            let (gone, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut state.jobs).into_iter().partition(|j| j.abandoned());
            state.jobs = waiting.into();
            gone.into_iter().for_each(Job::skip);
        }
        if state.jobs.len() >= self.capacity {
            return Err(job);
        }
        state.jobs.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job; `None` once the queue is closed.
    fn next(&self) -> Option<Box<dyn Job>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Counts a hash that took `took`, weighing it one eighth in the mean.
    fn timed(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self.mean_micros.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
            Some((mean - mean / 8).saturating_add(took / 8))
        });
        self.computed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Held by every clone of a `Hasher`: when the last one goes, the queue closes.
struct QueueHandle(Arc<Queue>);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.0.ready.notify_all();
    }
}

/// Lowers the calling thread's priority to `HASHING_NICE` (allowed without privileges).
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICE) {
        tracing::warn!(error = %e, "cannot lower the hashing threads' priority; sign-ins compete with requests");
    }
}

fn params() -> Params {
    Params::new(MEMORY_KIB, PASSES, 1, None).unwrap_or_default()
}

thread_local! {
    /// This hashing thread's working memory, reused by every hash it computes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The raw argon2id output of `password` with `salt` under `params`, computed in this
/// thread's reusable memory.
fn compute(password: &[u8], salt: &[u8], params: Params, out: &mut [u8]) -> anyhow::Result<()> {
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    MEMORY
        .with_borrow_mut(|memory| {
            if memory.len() < blocks {
                memory.resize(blocks, Block::default());
            }
            argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        })
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

/// A new PHC-format hash (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
fn hash_new(password: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = [0u8; 32];
    compute(password, raw_salt, params(), &mut out)?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (&params()).try_into().map_err(|e| anyhow::anyhow!("{e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("{e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC-format `hash` (compared in constant time).
fn matches(password: &[u8], hash: &str) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash unreadable: {e}"))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        anyhow::bail!("stored hash lacks a salt or an output");
    };
    if parsed.algorithm != ARGON2ID_IDENT {
        anyhow::bail!("stored hash is not argon2id");
    }
    let params = Params::try_from(&parsed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = vec![0u8; expected.len()];
    compute(password, raw_salt, params, &mut out)?;
    Ok(Output::new(&out).map_err(|e| anyhow::anyhow!("{e}"))? == expected)
}

impl Hasher {
    /// A new hash of `password`; not computed if the caller stops waiting first.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        self.bounded(move || hash_new(password.as_bytes()), None).await
    }

    /// Whether `password` matches `hash`; with no hash, spends the same time and says no.
    /// Not computed once `requester`'s waiter has gone.
    pub async fn verify(&self, password: &str, hash: Option<String>, requester: &Requester) -> Result<bool, HashError> {
        let (hash, known) = match hash {
            Some(hash) => (hash, true),
            None => (self.dummy_hash().await?, false),
        };
        let password = password.to_owned();
        let matches = self.bounded(move || matches(password.as_bytes(), &hash), Some(requester.clone())).await?;
        Ok(known && matches)
    }

    /// Hashes computed so far (not those refused or skipped).
    pub fn computed(&self) -> u64 {
        self.queue.0.computed.load(Ordering::Relaxed)
    }

    async fn dummy_hash(&self) -> Result<String, HashError> {
        self.dummy.get_or_try_init(|| async { self.bounded(|| hash_new(b"no such user"), None).await }).await.cloned()
    }

    /// Runs `work` on a hashing thread, unless the queue is full. A queued job whose
    /// caller has gone (its future dropped, or `requester`'s waiter) is skipped.
    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
        requester: Option<Requester>,
    ) -> Result<T, HashError> {
        let (reply, rx) = oneshot::channel();
        if self.queue.0.push(Box::new(Pending { work, reply, requester })).is_err() {
            metrics::counter!(crate::metrics::PASSWORD_HASHES, "outcome" => "refused").increment(1);
            return Err(HashError::Busy { retry_after: self.drain_secs() });
        }
        rx.await.map_err(|_| anyhow::anyhow!("a hashing thread stopped mid-hash"))?
    }

    /// Occupies a hashing thread until the returned sender is dropped.
    #[cfg(test)]
    pub(crate) async fn occupy(&self) -> std::sync::mpsc::Sender<()> {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let hasher = self.clone();
        tokio::spawn(async move {
            let blocker = move || {
                let _ = started.send(());
                let _ = released.recv();
                Ok(())
            };
            hasher.bounded(blocker, None).await.unwrap()
        });
        running.await.unwrap();
        release
    }

    /// Seconds for the threads to work through a full queue at the recent pace (1 to
    /// `MAX_RETRY_AFTER_SECS`).
    fn drain_secs(&self) -> u64 {
        let queued = u64::try_from(self.queue.0.capacity).unwrap_or(u64::MAX);
        let threads = u64::try_from(self.threads).unwrap_or(1);
        let micros = self.queue.0.mean_micros.load(Ordering::Relaxed).saturating_mul(queued) / threads;
        micros.div_ceil(1_000_000).clamp(1, MAX_RETRY_AFTER_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_at_the_lowest_priority() {
        let hasher = Hasher::default();
        let nice = hasher
            .bounded(|| Ok(rustix::process::getpriority_process(Some(rustix::thread::gettid()))?), None)
            .await
            .unwrap();
        assert_eq!(nice, HASHING_NICE);
    }

    fn password() -> Password {
        Password::parse("correct horse battery".into()).unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_with_the_seconds_to_wait() {
        let hasher = Hasher::new(1, 2);
        let release = hasher.occupy().await;
        let (one, two) = (password(), password());
        let mut first = std::pin::pin!(hasher.hash(&one));
        let mut second = std::pin::pin!(hasher.hash(&two));
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(futures::poll!(second.as_mut()).is_pending());

        let refused = hasher.hash(&password()).await;

        assert!(matches!(refused, Err(HashError::Busy { retry_after: 1.. })), "{refused:?}");
        drop(release);
        assert!(first.await.is_ok() && second.await.is_ok(), "what was queued is still computed");
    }

    #[tokio::test]
    async fn a_queued_hash_whose_caller_has_gone_is_never_computed() {
        let hasher = Hasher::new(1, 4);
        let stored = hash_new(b"correct horse battery").unwrap();
        let release = hasher.occupy().await;
        let gone = password();
        {
            // Polled once, the hash is queued; then dropped, as when its client hangs up.
            let mut hash = std::pin::pin!(hasher.hash(&gone));
            assert!(futures::poll!(hash.as_mut()).is_pending());
        }
        // A check that runs in a task of its own: queued, then its request goes away.
        let (waiting, requester) = requester();
        let mut check = std::pin::pin!(hasher.verify("correct horse battery", Some(stored), &requester));
        assert!(futures::poll!(check.as_mut()).is_pending());
        drop(waiting);

        drop(release);

        assert!(matches!(check.await, Err(HashError::Abandoned)));
        hasher.hash(&password()).await.unwrap();
        assert_eq!(hasher.computed(), 2, "only the blocker and the last hash were computed");
    }

    #[tokio::test]
    async fn a_full_queue_first_drops_the_hashes_whose_callers_have_gone() {
        let hasher = Hasher::new(1, 2);
        let release = hasher.occupy().await;
        let gone = password();
        for _ in 0..2 {
            let mut hash = std::pin::pin!(hasher.hash(&gone));
            assert!(futures::poll!(hash.as_mut()).is_pending());
        }

        let mut admitted = std::pin::pin!(hasher.hash(&gone));
        assert!(futures::poll!(admitted.as_mut()).is_pending(), "queued, not refused");

        drop(release);
        assert!(admitted.await.is_ok());
        assert_eq!(hasher.computed(), 2, "the blocker and the admitted hash, not the two abandoned ones");
    }

    #[test]
    fn a_hash_verifies_its_password_and_only_that() {
        let hash = hash_new("correct horse".as_bytes()).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(matches(b"correct horse", &hash).unwrap());
        assert!(!matches(b"correct horsf", &hash).unwrap());
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_itself_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8192, 3, 1, None).unwrap());
        let hash = argon2.hash_password(b"pa55word", &salt).unwrap().to_string();
        assert!(matches(b"pa55word", &hash).unwrap());
        assert!(!matches(b"pa55worD", &hash).unwrap());
    }
}
