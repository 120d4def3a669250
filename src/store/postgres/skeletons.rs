//! Fills in the skeleton (`domain::input::skeleton`) of every user who has none: the
//! accounts made before migration 0004, which SQL could not compute it for, and any
//! made meanwhile by an instance of an older version (during a rolling upgrade).

use sqlx::error::ErrorKind;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::domain::input::skeleton;

/// Rows read and written by one statement.
const BATCH: i64 = 1000;

/// Runs at every start of every instance, after the migrations and before any request,
/// oldest account first, a batch at a time. Of two accounts that already looked alike,
/// the one that has the skeleton (the older, if neither had) keeps it; the other is left
/// without one and named in a warning. Both can still sign in, and neither name, nor any
/// other look-alike of it, can be taken anew. Such rows are looked at again at each
/// start. Instances that start together may both fill in a row: a write only fills in a
/// missing value, so they agree.
pub(super) async fn fill_in(c: &mut PgConnection) -> anyhow::Result<()> {
    let mut after: Option<Uuid> = None;
    loop {
        let missing: Vec<(Uuid, String)> = sqlx::query_as(
            "select id, username from users where skeleton is null and ($1::uuid is null or id > $1)
             order by id limit $2",
        )
        .bind(after)
        .bind(BATCH)
        .fetch_all(&mut *c)
        .await?;
        let Some((last, _)) = missing.last() else { return Ok(()) };
        after = Some(*last);
        let (ids, skeletons): (Vec<Uuid>, Vec<String>) =
            missing.iter().map(|(id, username)| (*id, skeleton(username))).unzip();
        let batch = sqlx::query(
            "update users u set skeleton = v.skeleton from unnest($1::uuid[], $2::text[]) as v (id, skeleton)
             where u.id = v.id and u.skeleton is null",
        )
        .bind(&ids)
        .bind(&skeletons)
        .execute(&mut *c)
        .await;
        match batch {
            Ok(_) => {}
            // Some name of the batch looks like another: one at a time, in age order.
            Err(e) if is_unique_violation(&e) => {
                for ((id, username), skeleton) in missing.iter().zip(&skeletons) {
                    fill_in_one(c, *id, username, skeleton).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn fill_in_one(c: &mut PgConnection, id: Uuid, username: &str, skeleton: &str) -> anyhow::Result<()> {
    let set = sqlx::query("update users set skeleton = $2 where id = $1 and skeleton is null")
        .bind(id)
        .bind(skeleton)
        .execute(&mut *c)
        .await;
    match set {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            let older: Option<String> = sqlx::query_scalar("select username from users where skeleton = $1")
                .bind(skeleton)
                .fetch_optional(&mut *c)
                .await?;
            tracing::warn!(
                username,
                looks_like = older.as_deref().unwrap_or("?"),
                "two existing usernames look alike; the older keeps the name's skeleton"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation)
}
