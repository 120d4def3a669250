//! The periodic jobs' statements: claiming a period under an advisory lock, and pruning
//! in batches.

use sqlx::Connection as _;

use super::rows::micros;
use super::{PostgresStore, bounded, classify};
use crate::domain::prune::{Prune, PruneStep};
use crate::store::Result;

impl PostgresStore {
    /// Claims `period` of the job named by `key`: true for the one caller, on any
    /// instance, that moves the job's last period forward.
    pub(super) async fn claim(&self, key: String, period: i64) -> Result<bool> {
        self.db
            .run(async |c| {
                let mut tx = c.begin().await.map_err(classify)?;
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
            })
            .await
    }

    /// Deletes what `rules` say is no longer needed, in batches.
    /// Deletes at most `batch` rows of `step`.
    pub(super) async fn prune_step_of(&self, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64> {
        let (sql, cutoff) = match step {
            PruneStep::Usage => (USAGE, Cutoff::Day(rules.usage_before.to_string())),
            PruneStep::ExpiredRefreshTokens => (EXPIRED_TOKENS, Cutoff::Micros(micros(rules.tokens_expired_by))),
            PruneStep::RevokedRefreshTokens => (REVOKED_TOKENS, Cutoff::Micros(micros(rules.tokens_expired_by))),
            PruneStep::Sessions => (SESSIONS, Cutoff::Micros(micros(rules.tokens_expired_by))),
            PruneStep::IdempotencyKeys => (KEYS, Cutoff::Micros(micros(rules.keys_created_before))),
            PruneStep::WebhookAttempts => (WEBHOOK_ATTEMPTS, Cutoff::Micros(micros(rules.webhook_events_before))),
            PruneStep::WebhookEvents => (WEBHOOK_EVENTS, Cutoff::Micros(micros(rules.webhook_events_before))),
        };
        let query = sqlx::query(sql);
        let query = match &cutoff {
            Cutoff::Day(day) => query.bind(day),
            Cutoff::Micros(us) => query.bind(us),
        };
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        bounded(
            self.db
                .run(async |c| query.bind(batch).execute(&mut *c).await.map(|d| d.rows_affected()).map_err(classify)),
        )
        .await
    }
}

// Each finds its rows through an index of migration 0003 (a test checks the plans).
const USAGE: &str = "delete from usage where (user_id, day) in
    (select user_id, day from usage where day < $1::date limit $2)";
/// Refresh tokens expired by `$1`, then (`REVOKED_TOKENS`) those of revoked sessions:
/// two statements, because one with an `or` across the join could use no index.
const EXPIRED_TOKENS: &str = "delete from refresh_tokens where hash in
    (select hash from refresh_tokens where expires_at <= $1 limit $2)";
/// `$1` is unused: every token of a revoked session goes, whatever its expiry.
const REVOKED_TOKENS: &str = "delete from refresh_tokens where hash in
    (select r.hash from sessions s join refresh_tokens r on r.session_id = s.id
     where s.revoked_at is not null limit $2)";
/// After the tokens: sessions left without a refresh token (see `Prune`), made by `$1`.
const SESSIONS: &str = "delete from sessions where id in
    (select s.id from sessions s where s.created_at <= $1
     and not exists (select 1 from refresh_tokens r where r.session_id = s.id) limit $2)";
const KEYS: &str = "delete from idempotency_keys where (user_id, key) in
    (select user_id, key from idempotency_keys where created_at < $1 limit $2)";

/// Attempts of old webhook events, then (`WEBHOOK_EVENTS`) the events (migration 0009's
/// `webhook_events_by_age`).
const WEBHOOK_ATTEMPTS: &str = "delete from webhook_attempts where (event_id, attempt) in
    (select a.event_id, a.attempt from webhook_events e join webhook_attempts a on a.event_id = e.id
     where e.occurred_at < $1 limit $2)";
const WEBHOOK_EVENTS: &str = "delete from webhook_events where id in
    (select id from webhook_events where occurred_at < $1 limit $2)";

/// The `$1` of a prune statement.
enum Cutoff {
    Day(String),
    Micros(i64),
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, Executor as _, PgConnection};

    use super::*;

    /// PostgreSQL's plan for `sql`, run with `$1` of `first_type`. Sequential scans are
    /// priced out, so a plan that still has one found no index to use.
    async fn plan(conn: &mut PgConnection, name: &str, sql: &str, first_type: &str) -> String {
        conn.execute(format!("prepare {name} ({first_type}, bigint) as {sql}").as_str()).await.unwrap();
        let argument = if first_type == "text" { "'2026-01-01'" } else { "0" };
        let rows: Vec<(String,)> =
            sqlx::query_as(&format!("explain execute {name} ({argument}, 100)")).fetch_all(&mut *conn).await.unwrap();
        rows.into_iter().map(|(line,)| line).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at QUOTASK_TEST_POSTGRES_URL or 127.0.0.1:5432"]
    async fn every_prune_finds_its_rows_through_an_index() {
        let server = std::env::var("QUOTASK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut conn = PgConnection::connect(&server).await.unwrap();
        // Named as the API tests name theirs, so that a schema left by a failed run is swept.
        let schema = format!("t_{}_{:016x}", jiff::Timestamp::now().as_second(), rand::random::<u64>());
        conn.execute(format!("create schema {schema}; set search_path to {schema}").as_str()).await.unwrap();
        for (_, _, sql) in super::super::MIGRATIONS {
            conn.execute(*sql).await.unwrap();
        }
        // Tables of some size with statistics, as in a deployment, where nearly nothing
        // is old enough to go: with empty tables the planner's choice is arbitrary.
        conn.execute(
            "insert into users select gen_random_uuid(), 'u' || n, 'x', 'user', 10, 'UTC', null, null, n
                 from generate_series(1, 2000) n;
             insert into usage select id, date '2026-06-01' + (created_at % 90)::int, 1 from users;
             insert into sessions select gen_random_uuid(), id, 1000 + created_at, null from users;
             insert into refresh_tokens select sha256(id::text::bytea), id, user_id, 1000 + created_at, null
                 from sessions;
             insert into idempotency_keys select id, 'k', 'f', gen_random_uuid(), 'c', '2026-06-01', 1000 + created_at
                 from users;
             analyze",
        )
        .await
        .unwrap();
        conn.execute("set enable_seqscan = off").await.unwrap();
        for (sql, first_type, index) in [
            (USAGE, "text", "usage_by_day"),
            (KEYS, "bigint", "idempotency_keys_by_age"),
            (EXPIRED_TOKENS, "bigint", "refresh_tokens_by_expiry"),
            (REVOKED_TOKENS, "bigint", "sessions_revoked"),
            (SESSIONS, "bigint", "sessions_by_age"),
            (WEBHOOK_EVENTS, "bigint", "webhook_events_by_age"),
        ] {
            let plan = plan(&mut conn, index, sql, first_type).await;
            assert!(plan.contains(index), "{index} unused:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "a whole-table scan:\n{plan}");
        }
        conn.execute(format!("drop schema {schema} cascade").as_str()).await.unwrap();
    }
}
