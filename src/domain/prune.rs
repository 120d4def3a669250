//! What the hourly pruning job deletes: rows no rule can need again, in which order,
//! and how many at a time. The stores only know how to delete one step's rows.

use jiff::{Timestamp, civil::Date};

use super::idempotency;

/// Rows one prune statement deletes at most, so that it never holds the database (or
/// SQLite's single writer) for long; the job repeats a step until less comes back.
pub const BATCH: u64 = 5000;

/// The cut-offs of one run of the job.
#[derive(Debug, Clone, Copy)]
pub struct Prune {
    /// Quota counters of days before this one (UTC date, past any zone's current day).
    pub usage_before: Date,
    /// Refresh tokens expired by then, and every token of a revoked session. A spent token
    /// of a live session is kept until it expires, because its reuse revokes the family.
    pub tokens_expired_by: Timestamp,
    /// Idempotency keys first used before then.
    pub keys_created_before: Timestamp,
    /// Webhook events (with their attempts) that happened before then: long delivered
    /// or given up (the retries end after about 28 hours), or of a deleted webhook.
    pub webhook_events_before: Timestamp,
}

/// How long a webhook's events stay in its delivery log.
pub const WEBHOOK_EVENT_RETENTION: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

impl Prune {
    /// The cut-offs at `now`, keeping `usage_retention_days` days of quota counters.
    /// Usage is cut by UTC date; as at least two days are kept, no zone's current day
    /// (UTC-12 to UTC+14) is ever near the cut.
    pub fn at(now: Timestamp, usage_retention_days: u32) -> Self {
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let keep = jiff::Span::new().days(i64::from(usage_retention_days));
        Prune {
            usage_before: today.checked_sub(keep).unwrap_or(today),
            tokens_expired_by: now,
            keys_created_before: idempotency::remembered_since(now),
            webhook_events_before: now.checked_sub(WEBHOOK_EVENT_RETENTION).unwrap_or(now),
        }
    }
}

/// One kind of row the job deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneStep {
    /// Quota counters of days before `usage_before`.
    Usage,
    /// Refresh tokens expired by `tokens_expired_by`.
    ExpiredRefreshTokens,
    /// Every refresh token of a revoked session.
    RevokedRefreshTokens,
    /// Sessions made by `tokens_expired_by` that the token steps left without a refresh
    /// token: revoked ones, and ones idle past their last token's 30 days. Neither has a
    /// live access token (those last 15 minutes from the last refresh), and a live
    /// session always has a token, made in the same transaction as the session or as its
    /// rotation.
    Sessions,
    /// Idempotency keys first used before `keys_created_before`.
    IdempotencyKeys,
    /// The attempts of webhook events before `webhook_events_before`.
    WebhookAttempts,
    /// Webhook events before `webhook_events_before`, after their attempts.
    WebhookEvents,
}

impl PruneStep {
    /// The steps in the order they run: sessions after the tokens, since a session goes
    /// once it has no token left.
    pub const ORDER: [PruneStep; 7] = [
        PruneStep::Usage,
        PruneStep::ExpiredRefreshTokens,
        PruneStep::RevokedRefreshTokens,
        PruneStep::Sessions,
        PruneStep::IdempotencyKeys,
        PruneStep::WebhookAttempts,
        PruneStep::WebhookEvents,
    ];
}

/// How many rows a run deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub usage: u64,
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub idempotency_keys: u64,
    pub webhook_attempts: u64,
    pub webhook_events: u64,
}

impl Pruned {
    /// Counts `deleted` rows of `step`.
    pub fn add(&mut self, step: PruneStep, deleted: u64) {
        let count = match step {
            PruneStep::Usage => &mut self.usage,
            PruneStep::ExpiredRefreshTokens | PruneStep::RevokedRefreshTokens => &mut self.refresh_tokens,
            PruneStep::Sessions => &mut self.sessions,
            PruneStep::IdempotencyKeys => &mut self.idempotency_keys,
            PruneStep::WebhookAttempts => &mut self.webhook_attempts,
            PruneStep::WebhookEvents => &mut self.webhook_events,
        };
        *count += deleted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_pruned_after_every_token_step() {
        let at = |step| PruneStep::ORDER.iter().position(|s| *s == step).unwrap();
        assert!(at(PruneStep::Sessions) > at(PruneStep::ExpiredRefreshTokens));
        assert!(at(PruneStep::Sessions) > at(PruneStep::RevokedRefreshTokens));
        assert!(at(PruneStep::WebhookEvents) > at(PruneStep::WebhookAttempts));
    }

    #[test]
    fn the_cut_offs_keep_the_retention_days_and_a_keys_24_hours() {
        let now: Timestamp = "2026-03-08T12:00:00Z".parse().unwrap();
        let rules = Prune::at(now, 90);
        assert_eq!(rules.usage_before, jiff::civil::date(2025, 12, 8));
        assert_eq!(rules.tokens_expired_by, now);
        assert_eq!(rules.keys_created_before, "2026-03-07T12:00:00Z".parse::<Timestamp>().unwrap());
    }
}
