//! Opening SQLite's connections for the executor: the writer's, through `wal_buffer`
//! and with the pragmas that layer relies on, after the schema's migrations; the
//! reader's; and the settings every connection shares.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations};

use super::wal_buffer;

/// Opens the writer's connection, creating the database if need be, and migrates the
/// schema to the last of `migrations` (each once, tracked by `user_version`).
pub(super) fn open_writer(path: &Path, migrations: &[&str]) -> anyhow::Result<Connection> {
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
    Ok(conn)
}

/// Opens the reader's connection: it can only read.
pub(super) fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    configure(&conn)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// WAL pages after which the writer checkpoints what the checkpoint thread has not yet
/// copied, so that the next write starts the WAL over. The writer's checkpoint stalls
/// every create waiting for it, so it should be rare (a larger WAL) and short (the
/// checkpoint thread copying often, see `CHECKPOINT_BUSY`). At 4,000 pages it ran about
/// 15 times a second under creates and cost 2 to 3 ms of the writer's CPU each time;
/// at 16,000 the p99 of creates fell by about 1 ms (bench/README.md).
const WAL_RESTART_PAGES: i64 = 16_000;
/// The WAL is cut back to this size when it starts over. Above the largest WAL the
/// writer lets grow (16,000 frames of 4 KiB and a batch more, about 67 MB), so the
/// file is reused in place: growing it again costs block allocation inside commits.
const WAL_SIZE_LIMIT: i64 = 96 * 1024 * 1024;

/// Creates the database file readable by its owner only (it holds the signing secret);
/// SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// What every connection of the store shares: foreign keys enforced, a wait for
/// another process's lock, and room for each statement the store prepares.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema to the last of `migrations`. `rusqlite_migration` counts the
/// migrations applied in `user_version`, as this store always has, so a database
/// migrated before it came is not migrated again (see the tests). Unlike a plain loop,
/// it refuses a database migrated further than this binary knows, rather than serve a
/// schema it was not written for, and applies what is missing in one transaction.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> anyhow::Result<()> {
    Migrations::new(migrations.iter().map(|sql| M::up(sql)).collect()).to_latest(conn)?;
    Ok(())
}

/// Runs a statement without results through the statement cache (the transaction and
/// savepoint statements of every batch would otherwise be parsed anew each time).
pub(super) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::MIGRATIONS;

    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
    }

    /// The runner this store had before `rusqlite_migration`, as it was.
    fn former_migrate(conn: &mut Connection, migrations: &[&str]) {
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        for (i, sql) in migrations.iter().enumerate().skip(version) {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", i + 1).unwrap();
            tx.commit().unwrap();
        }
    }

    /// The migrations there were when the former runner was replaced.
    const FORMER: usize = 6;

    #[test]
    fn a_database_the_former_runner_migrated_opens_without_being_migrated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut old = Connection::open(&path).unwrap();
        old.pragma_update(None, "journal_mode", "wal").unwrap();
        former_migrate(&mut old, &MIGRATIONS[..FORMER]);
        old.execute("insert into settings (key, value) values ('kept', x'01')", []).unwrap();
        // Counts every change to the schema: a migration run again would move it.
        let schema = pragma(&old, "schema_version");
        drop(old);

        let reopened = open_writer(&path, &MIGRATIONS[..FORMER]).unwrap();
        assert_eq!(pragma(&reopened, "user_version"), FORMER as i64);
        assert_eq!(pragma(&reopened, "schema_version"), schema, "no migration ran again");
        drop(reopened);
        let latest = open_writer(&path, MIGRATIONS).unwrap();

        assert_eq!(pragma(&latest, "user_version"), MIGRATIONS.len() as i64, "the later ones ran");
        let kept: i64 = latest.query_row("select count(*) from settings where key = 'kept'", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1);
    }

    #[test]
    fn a_new_database_gets_every_migration_and_the_former_runners_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut former = Connection::open(dir.path().join("former")).unwrap();
        former_migrate(&mut former, MIGRATIONS);

        let new = open_writer(&dir.path().join("new"), MIGRATIONS).unwrap();

        assert_eq!(pragma(&new, "user_version"), MIGRATIONS.len() as i64);
        let schema = |c: &Connection| -> Vec<String> {
            let mut s = c.prepare("select sql from sqlite_schema where sql is not null order by name").unwrap();
            s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(schema(&new), schema(&former));
    }

    #[test]
    fn a_database_migrated_further_than_this_binary_knows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(open_writer(&path, MIGRATIONS).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", MIGRATIONS.len() + 1).unwrap();

        assert!(open_writer(&path, MIGRATIONS).is_err());
    }
}
