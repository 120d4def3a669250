//! Fills in the skeleton (`domain::input::skeleton`) of every user who has none: the
//! accounts made before migration 0007, which SQL could not compute it for.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::rows::is_unique_violation;
use crate::domain::input::skeleton;

/// Runs at every start, right after the migrations and before any request, on a
/// connection of its own (the writer's thread is idle until the first request), oldest
/// account first. Of two accounts that already looked alike, the one that has the
/// skeleton (the older, if neither had) keeps it; the other is left without one and
/// named in a warning. Both can still sign in, and neither name, nor any other
/// look-alike of it, can be taken anew. Such rows are looked at again at each start,
/// which costs one index lookup when there are none.
pub(super) fn fill_in(path: &Path) -> anyhow::Result<()> {
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "synchronous", "full")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let missing: Vec<(String, String)> = tx
            .prepare("select id, username from users where skeleton is null order by id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut set = tx.prepare("update users set skeleton = ?2 where id = ?1")?;
        let mut holder = tx.prepare("select username from users where skeleton = ?1")?;
        for (id, username) in missing {
            let skeleton = skeleton(&username);
            match set.execute(params![id, skeleton]) {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let older: String = holder.query_row([&skeleton], |r| r.get(0))?;
                    tracing::warn!(
                        username,
                        looks_like = older,
                        "two existing usernames look alike; the older keeps the name's skeleton"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    tx.commit()?;
    Ok(())
}
