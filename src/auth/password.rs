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
//! thread, about a second of work on a 2-core VM): past it, a hash is refused at once
//! (`HashError::Busy`, which callers answer 503 with `Retry-After`), rather than queued
//! behind minutes of others. And a queued hash whose requester has gone (its client
//! hung up) is dropped unstarted: a flood of requests that hang up costs no hashing.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::Instant;

use argon2::password_hash::{Output, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OnceCell, oneshot};

use crate::domain::Password;

/// OWASP's argon2id floor: 19 MiB, two passes, one lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
/// The hashing threads' nice value: the lowest priority there is.
const HASHING_NICE: i32 = 19;
/// Hashes waiting per hashing thread, at most. A hash takes about 30 ms on a 2-core VM,
/// so a full queue is about two seconds of work: a sign-in that would wait longer is
/// better told to come back. It is also more than the sign-ins one client address
/// can have evaluated in an hour (100 by default), so one address cannot fill it alone.
const QUEUE_PER_THREAD: usize = 64;
/// What a hash is assumed to take until one has been timed.
const FIRST_GUESS_MICROS: u64 = 30_000;

type Job = Box<dyn FnOnce() + Send>;

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
    /// Work for the hashing threads, bounded; they exit when the last `Hasher` is dropped.
    jobs: mpsc::SyncSender<Job>,
    threads: usize,
    queue: usize,
    /// How long the last hash took, for the `Retry-After` of a refusal.
    last_micros: Arc<AtomicU64>,
    /// Hashes computed by this hasher's threads (skipped ones are not counted).
    computed: Arc<AtomicU64>,
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
    /// `threads` hashing threads, with at most `queue` hashes waiting for them.
    pub(super) fn new(threads: usize, queue: usize) -> Self {
        let (jobs, waiting) = mpsc::sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for i in 0..threads {
            let waiting = waiting.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                yield_to_requests();
                loop {
                    let job = waiting.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Self {
            jobs,
            threads: threads.max(1),
            queue,
            last_micros: Arc::new(AtomicU64::new(FIRST_GUESS_MICROS)),
            computed: Arc::default(),
            dummy: Arc::default(),
        }
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
        self.computed.load(Ordering::Relaxed)
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
        let (tx, rx) = oneshot::channel();
        let (last_micros, computed) = (self.last_micros.clone(), self.computed.clone());
        let job: Job = Box::new(move || {
            if tx.is_closed() || requester.is_some_and(|r| !r.waits()) {
                metrics::counter!(crate::metrics::PASSWORD_HASHES, "outcome" => "skipped").increment(1);
                let _ = tx.send(Err(HashError::Abandoned));
                return;
            }
            let started = Instant::now();
            let result = work().map_err(HashError::Failed);
            last_micros.store(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
            computed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::PASSWORD_HASHES, "outcome" => "computed").increment(1);
            let _ = tx.send(result);
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                metrics::counter!(crate::metrics::PASSWORD_HASHES, "outcome" => "refused").increment(1);
                return Err(HashError::Busy { retry_after: self.drain_secs() });
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(anyhow::anyhow!("the hashing threads have stopped").into());
            }
        }
        rx.await.map_err(|_| anyhow::anyhow!("a hashing thread stopped mid-hash"))?
    }

    /// Occupies a hashing thread until the returned sender is dropped.
    #[cfg(test)]
    pub(super) async fn occupy(&self) -> mpsc::Sender<()> {
        let (release, released) = mpsc::channel::<()>();
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

    /// Seconds for the threads to work through a full queue at the last hash's pace.
    fn drain_secs(&self) -> u64 {
        let queued = u64::try_from(self.queue).unwrap_or(u64::MAX);
        let threads = u64::try_from(self.threads).unwrap_or(1);
        let micros = self.last_micros.load(Ordering::Relaxed).saturating_mul(queued) / threads;
        micros.div_ceil(1_000_000).max(1)
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
