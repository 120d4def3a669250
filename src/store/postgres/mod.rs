//! The PostgreSQL store, for several stateless quotask instances on one database. It
//! behaves as the SQLite store does, down to the error variants: a taken username is
//! `UsernameTaken`; whatever a retry later can fix (connection refused, pool
//! exhausted, server shutting down, statement or lock timeout) is `Unavailable`, which
//! the HTTP layer answers with 503 and `Retry-After`; anything else is `Internal`.
//!
//! Times are kept as unix microseconds (UTC) in `bigint`, as in the SQLite schema, so
//! both stores read back exactly the instant they were given; days are `date`.

mod accounts;
mod admin;
mod batch;
mod jobs;
mod plans;
mod pool;
mod rows;
mod skeletons;
mod tasks;
mod tokens;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::error::{BoxDynError, ErrorKind};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, Row as _};

use super::{Result, Store, StoreError};
use crate::domain::prune::{Prune, PruneStep};

/// Session settings sent in the start-up packet (no extra round trip), unless the
/// database URL sets them itself (`?options[statement_timeout]=...`). A statement that
/// runs or waits for a lock longer than this fails and is answered with 503, so a
/// request never hangs on a stuck database; an abandoned transaction cannot hold its
/// locks for long either.
const SESSION_DEFAULTS: &[(&str, &str)] =
    &[("statement_timeout", "5s"), ("lock_timeout", "2s"), ("idle_in_transaction_session_timeout", "10s")];

/// The client-side bound on one store call: a server that stops answering without
/// closing the connection cannot enforce its own `statement_timeout`.
const CALL_DEADLINE: Duration = Duration::from_secs(6);

/// The migrations in `migrations/`, compiled into the binary. (`sqlx::migrate!` would
/// embed them the same way, but needs sqlx's `macros` feature, which this build does
/// not enable; a test checks that every file there is listed here.)
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "idempotency", include_str!("migrations/0002_idempotency.sql")),
    (3, "prune_indexes", include_str!("migrations/0003_prune_indexes.sql")),
    (4, "username_skeletons", include_str!("migrations/0004_username_skeletons.sql")),
    (5, "idempotent_batches", include_str!("migrations/0005_idempotent_batches.sql")),
    (6, "personal_tokens", include_str!("migrations/0006_personal_tokens.sql")),
    (8, "plans", include_str!("migrations/0008_plans.sql")),
];

pub struct PostgresStore {
    /// The connections, each lent to one call at a time (see `pool` for why not sqlx's).
    db: pool::Pool,
}

impl PostgresStore {
    /// Applies the migrations (under sqlx's advisory lock, so instances starting
    /// together are safe) and opens a pool of at most `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let mut options: PgConnectOptions =
            url.parse().context("QUOTASK_DATABASE_URL is not a valid PostgreSQL URL")?;
        if options.get_application_name().is_none() {
            options = options.application_name("quotask");
        }
        migrate(&options).await?;
        let set = options.get_options().unwrap_or_default().to_owned();
        let defaults = SESSION_DEFAULTS.iter().filter(|(key, _)| !set.contains(&format!("{key}=")));
        let db = pool::Pool::open(options.options(defaults.copied()), max_connections)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(Self { db })
    }
}

/// Runs the migrations, then fills in the skeletons SQL cannot compute, on a connection
/// of their own, without the statement timeout: a migration may legitimately take
/// longer, and waiting for another instance's migration lock is expected.
async fn migrate(options: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(options).await.context("cannot connect to PostgreSQL")?;
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(&mut conn).await.context("PostgreSQL migrations failed")?;
    skeletons::fill_in(&mut conn).await.context("cannot fill in the usernames' skeletons")?;
    conn.close().await?;
    Ok(())
}

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(*version, Cow::Borrowed(*name), MigrationType::Simple, Cow::Borrowed(*sql), false)
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// Bounds a store call by `CALL_DEADLINE`; past it, the database counts as unavailable.
async fn bounded<T>(call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("database call timed out".into())))
}

/// SQLSTATE classes and codes that a retry later can fix.
fn is_transient(code: &str) -> bool {
    matches!(
        code.get(..2),
        // connection exception; insufficient resources (too many connections, disk full)
        Some("08" | "53")
    ) || matches!(
        code,
        // admin shutdown, crash shutdown, cannot connect now (starting or stopping)
        "57P01" | "57P02" | "57P03"
        // statement timeout (query canceled), lock timeout
        | "57014" | "55P03"
        // serialization failure, deadlock: the transaction may be retried
        | "40001" | "40P01"
        // read-only transaction: a standby promoted or being promoted
        | "25006"
    )
}

/// Maps a driver error onto the store's errors (see the module documentation).
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        // A name taken as it is, or as it looks (its skeleton).
        sqlx::Error::Database(db)
            if db.kind() == ErrorKind::UniqueViolation
                && matches!(db.constraint(), Some("users_username_key" | "users_skeleton_key")) =>
        {
            StoreError::UsernameTaken
        }
        sqlx::Error::Database(db)
            if db.kind() == ErrorKind::UniqueViolation && db.constraint() == Some("idempotency_keys_pkey") =>
        {
            StoreError::KeyInFlight
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| is_transient(&c)) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.into()),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        bounded(self.db.run(async |c| sqlx::query("select 1").execute(&mut *c).await.map(drop).map_err(classify))).await
    }

    async fn durability(&self) -> Result<String> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(
                "select current_setting('synchronous_commit') as synchronous_commit,
                        current_setting('fsync') as fsync,
                        current_setting('full_page_writes') as full_page_writes",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(classify)?;
            let get = |name: &str| row.try_get::<String, _>(name).map_err(classify);
            let (commit, fsync, pages) = (get("synchronous_commit")?, get("fsync")?, get("full_page_writes")?);
            if commit == "off" || fsync == "off" {
                tracing::warn!(synchronous_commit = %commit, fsync = %fsync, "PostgreSQL may lose acknowledged tasks on a crash");
            }
            Ok(format!("postgres synchronous_commit={commit} fsync={fsync} full_page_writes={pages}"))
        }))
        .await
    }

    async fn signing_secret(&self, candidate: Vec<u8>) -> Result<Vec<u8>> {
        bounded(self.db.run(async |c| {
            // Two statements: a select in the insert's own statement would not see a
            // secret that another instance committed while this one waited for it.
            sqlx::query("insert into settings (key, value) values ('jwt_secret', $1) on conflict (key) do nothing")
                .bind(candidate)
                .execute(&mut *c)
                .await
                .map_err(classify)?;
            sqlx::query_scalar("select value from settings where key = 'jwt_secret'")
                .fetch_one(&mut *c)
                .await
                .map_err(classify)
        }))
        .await
    }

    async fn claim_job_period(&self, job: &str, period: i64) -> Result<bool> {
        bounded(self.claim(format!("job:{job}"), period)).await
    }

    async fn prune_step(&self, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64> {
        self.prune_step_of(step, rules, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/postgres/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the migrations directory")
            .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|(v, name, _)| format!("{v:04}_{name}.sql")).collect();
        assert_eq!(files, listed);
    }

    #[test]
    fn an_unreachable_or_exhausted_database_is_unavailable_not_internal() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, sqlx::Error::Io(refused)] {
            assert!(matches!(classify(e), StoreError::Unavailable(_)));
        }
        assert!(matches!(classify(sqlx::Error::RowNotFound), StoreError::Internal(_)));
    }

    #[test]
    fn timeouts_shutdowns_and_overload_are_transient_and_constraint_failures_are_not() {
        for code in ["08006", "53300", "57P01", "57P03", "57014", "55P03", "40001"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22021"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
