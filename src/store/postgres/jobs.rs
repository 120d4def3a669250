//! The periodic jobs' statements: claiming a period under an advisory lock, and pruning
//! in batches.

use super::rows::micros;
use super::{PostgresStore, bounded, classify};
use crate::store::{PRUNE_BATCH, Prune, Pruned, Result};

impl PostgresStore {
    /// Claims `period` of the job named by `key`: true for the one caller, on any
    /// instance, that moves the job's last period forward.
    pub(super) async fn claim(&self, key: String, period: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // Keyed by schema too, so deployments (and tests) in other schemas of this
        // database do not contend. Released with the transaction.
        let locked: bool =
            sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtext(current_schema() || '.' || $1))")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
        if !locked {
            return Ok(false);
        }
        // Big-endian bytes compare as the numbers do.
        let claimed = sqlx::query(
            "insert into settings (key, value) values ($1, $2)
             on conflict (key) do update set value = excluded.value where settings.value < excluded.value",
        )
        .bind(&key)
        .bind(&period.to_be_bytes()[..])
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected()
            > 0;
        tx.commit().await.map_err(classify)?;
        Ok(claimed)
    }

    /// Deletes what `rules` say is no longer needed, in batches.
    pub(super) async fn prune_all(&self, rules: Prune) -> Result<Pruned> {
        let usage = "delete from usage where (user_id, day) in
             (select user_id, day from usage where day < $1::date limit $2)";
        let tokens = "delete from refresh_tokens where hash in
             (select r.hash from refresh_tokens r join sessions s on s.id = r.session_id
              where r.expires_at <= $1 or s.revoked_at is not null limit $2)";
        // After the tokens: sessions left without one (see `Prune`).
        let sessions = "delete from sessions where id in
             (select s.id from sessions s where s.created_at <= $1
              and not exists (select 1 from refresh_tokens r where r.session_id = s.id) limit $2)";
        let keys = "delete from idempotency_keys where (user_id, key) in
             (select user_id, key from idempotency_keys where created_at < $1 limit $2)";
        Ok(Pruned {
            usage: self.prune_batches(usage, Cutoff::Day(rules.usage_before.to_string())).await?,
            refresh_tokens: self.prune_batches(tokens, Cutoff::Micros(micros(rules.tokens_expired_by))).await?,
            sessions: self.prune_batches(sessions, Cutoff::Micros(micros(rules.tokens_expired_by))).await?,
            idempotency_keys: self.prune_batches(keys, Cutoff::Micros(micros(rules.keys_created_before))).await?,
        })
    }
}

/// The `$1` of a prune statement.
enum Cutoff {
    Day(String),
    Micros(i64),
}

impl PostgresStore {
    /// Runs `sql` (deleting at most `$2` rows older than `$1`) until a batch comes back short.
    async fn prune_batches(&self, sql: &str, cutoff: Cutoff) -> Result<u64> {
        let mut total = 0;
        loop {
            let query = sqlx::query(sql);
            let query = match &cutoff {
                Cutoff::Day(day) => query.bind(day),
                Cutoff::Micros(us) => query.bind(us),
            };
            let batch = i64::try_from(PRUNE_BATCH).unwrap_or(i64::MAX);
            let deleted = bounded(async {
                query.bind(batch).execute(&self.pool).await.map(|d| d.rows_affected()).map_err(classify)
            })
            .await?;
            total += deleted;
            if deleted < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }
}
