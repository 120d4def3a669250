//! The periodic job's statements on SQLite: the period claim and one batch of each
//! prune step (`domain::prune`), each its own write so that the single writer is never
//! held for long.

use rusqlite::{Connection, params};

use super::executor::Executor;
use super::{internal, micros};
use rusqlite::types::Value;

use crate::domain::prune::{Prune, PruneStep};
use crate::store::Result;

/// Records `period` under `key` unless that period or a later one is recorded already.
/// Periods are stored big-endian, so that comparing the blobs compares the numbers.
pub fn claim(c: &Connection, key: &str, period: i64) -> Result<bool> {
    let claimed = c
        .execute(
            "insert into settings (key, value) values (?1, ?2)
             on conflict (key) do update set value = excluded.value where settings.value < excluded.value",
            params![key, period.to_be_bytes()],
        )
        .map_err(internal)?;
    Ok(claimed > 0)
}

const USAGE: &str = "delete from usage where (user_id, day) in
    (select user_id, day from usage where day < ?1 limit ?2)";
/// Refresh tokens expired by `?1`, then (`REVOKED_TOKENS`) those of revoked sessions:
/// two statements, because one with an `or` across the join could use no index.
const EXPIRED_TOKENS: &str = "delete from refresh_tokens where rowid in
    (select rowid from refresh_tokens where expires_at <= ?1 limit ?2)";
/// `?1` is unused: every token of a revoked session goes, whatever its expiry.
const REVOKED_TOKENS: &str = "delete from refresh_tokens where rowid in
    (select r.rowid from sessions s join refresh_tokens r on r.session_id = s.id
     where s.revoked_at is not null limit ?2)";
/// After the tokens: sessions left without a refresh token (see `Prune`), made by `?1`.
const SESSIONS: &str = "delete from sessions where id in
    (select s.id from sessions s where s.created_at <= ?1
     and not exists (select 1 from refresh_tokens r where r.session_id = s.id) limit ?2)";
const KEYS: &str = "delete from idempotency_keys where (user_id, key) in
    (select user_id, key from idempotency_keys where created_at < ?1 limit ?2)";

/// Attempts of old webhook events, then (`WEBHOOK_EVENTS`) the events.
const WEBHOOK_ATTEMPTS: &str = "delete from webhook_attempts where rowid in
    (select a.rowid from webhook_events e join webhook_attempts a on a.event_id = e.id
     where e.occurred_at < ?1 limit ?2)";
const WEBHOOK_EVENTS: &str = "delete from webhook_events where id in
    (select id from webhook_events where occurred_at < ?1 limit ?2)";

/// Deletes at most `batch` rows of `step`, in one write of its own.
pub async fn step(executor: &Executor, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64> {
    let (sql, cutoff): (&'static str, Value) = match step {
        PruneStep::Usage => (USAGE, rules.usage_before.to_string().into()),
        PruneStep::ExpiredRefreshTokens => (EXPIRED_TOKENS, micros(rules.tokens_expired_by).into()),
        PruneStep::RevokedRefreshTokens => (REVOKED_TOKENS, micros(rules.tokens_expired_by).into()),
        PruneStep::Sessions => (SESSIONS, micros(rules.tokens_expired_by).into()),
        PruneStep::IdempotencyKeys => (KEYS, micros(rules.keys_created_before).into()),
        PruneStep::WebhookAttempts => (WEBHOOK_ATTEMPTS, micros(rules.webhook_events_before).into()),
        PruneStep::WebhookEvents => (WEBHOOK_EVENTS, micros(rules.webhook_events_before).into()),
    };
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let deleted = executor
        .write(move |c| c.prepare_cached(sql).and_then(|mut s| s.execute(params![cutoff, batch])).map_err(internal))
        .await?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, one step a line.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut s = c.prepare(&format!("explain query plan {sql}")).unwrap();
        let steps = s.query_map(params!["2026-01-01", 100], |r| r.get::<_, String>(3)).unwrap();
        steps.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_prunes_that_run_on_the_writer_find_their_rows_through_an_index() {
        let mut c = Connection::open_in_memory().unwrap();
        for sql in super::super::MIGRATIONS {
            let tx = c.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.commit().unwrap();
        }
        for (sql, index) in [
            (USAGE, "usage_by_day"),
            (KEYS, "idempotency_keys_by_age"),
            (EXPIRED_TOKENS, "refresh_tokens_by_expiry"),
            (REVOKED_TOKENS, "sessions_revoked"),
            (SESSIONS, "sessions_by_age"),
            (WEBHOOK_ATTEMPTS, "webhook_events_by_age"),
            (WEBHOOK_EVENTS, "webhook_events_by_age"),
        ] {
            let plan = plan(&c, sql);
            assert!(plan.contains(&format!("INDEX {index}")), "{plan}");
            // A scan of the partial index of revoked sessions is fine; of a table, not.
            let table_scan = plan.lines().any(|step| step.starts_with("SCAN") && !step.contains("USING"));
            assert!(!table_scan, "a whole-table scan on the writer: {plan}");
        }
        // The create's own lookup of a key stays on the primary key.
        let remembered = "select fingerprint from idempotency_keys where user_id = ?1 and key = ?2 and created_at > 0";
        assert!(plan(&c, remembered).contains("PRIMARY KEY"), "{}", plan(&c, remembered));
    }
}
