//! The checkpoint thread: copies the WAL back into the database on a connection of its
//! own, so that the writer's commits rarely pay for it.

use std::path::Path;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::connection::configure;

/// How soon the checkpoint thread copies again after it found pages to copy: the less
/// it leaves, the less the writer's own checkpoint has to copy.
const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_millis(20);
/// How soon it looks again after it found nothing to copy (no writes meanwhile).
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Starts the thread that checkpoints the WAL (`PASSIVE`: it never blocks the writer or
/// readers; what it cannot copy yet it copies next time). A request on the returned
/// sender makes it checkpoint everything and empty the WAL (`TRUNCATE`), then answer;
/// it stops when the sender is dropped.
pub(super) fn start(path: &Path) -> anyhow::Result<std::sync::mpsc::Sender<oneshot::Sender<()>>> {
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
