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

use std::cell::RefCell;
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::{Output, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OnceCell, oneshot};

use crate::domain::Password;

/// OWASP's argon2id floor: 19 MiB, two passes, one lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
/// The hashing threads' nice value: the lowest priority there is.
const HASHING_NICE: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Hasher {
    /// Work for the hashing threads; they exit when the last `Hasher` is dropped.
    jobs: mpsc::Sender<Job>,
    /// A hash of nothing in particular, verified when the user does not exist, so an
    /// unknown name costs as much as a wrong password.
    dummy: Arc<OnceCell<String>>,
}

impl Default for Hasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..cores {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                yield_to_requests();
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
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
        Self { jobs, dummy: Arc::default() }
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
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.expose().to_owned();
        self.bounded(move || hash_new(password.as_bytes())).await
    }

    /// Whether `password` matches `hash`; with no hash, spends the same time and says no.
    pub async fn verify(&self, password: &str, hash: Option<String>) -> anyhow::Result<bool> {
        let (hash, known) = match hash {
            Some(hash) => (hash, true),
            None => (self.dummy_hash().await?, false),
        };
        let password = password.to_owned();
        let matches = self.bounded(move || matches(password.as_bytes(), &hash)).await?;
        Ok(known && matches)
    }

    async fn dummy_hash(&self) -> anyhow::Result<String> {
        self.dummy.get_or_try_init(|| async { self.bounded(|| hash_new(b"no such user")).await }).await.cloned()
    }

    /// Runs `work` on a hashing thread; callers queue (as futures, costing next to
    /// nothing) while all of them are busy.
    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(work());
            }))
            .map_err(|_| anyhow::anyhow!("the hashing threads have stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("a hashing thread stopped mid-hash"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_at_the_lowest_priority() {
        let hasher = Hasher::default();
        let nice =
            hasher.bounded(|| Ok(rustix::process::getpriority_process(Some(rustix::thread::gettid()))?)).await.unwrap();
        assert_eq!(nice, HASHING_NICE);
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
