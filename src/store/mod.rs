//! Persistence behind one trait, with an embedded SQLite and a PostgreSQL
//! implementation chosen by the database URL's scheme. The quota's check-and-consume
//! lives here, in the same transaction as the insert it guards (docs/quota.md item 2).

pub mod postgres;
pub mod sqlite;

use std::sync::Mutex;

use async_trait::async_trait;
use jiff::{Timestamp, civil::Date};
use uuid::Uuid;

use crate::domain::limits::{Boost, NewBoost, Plan, PlanChanges};
use crate::domain::prune::{Prune, PruneStep};
use crate::domain::webhooks::{Delivery, DueEvent, EventTypes, Next, Webhook};
use crate::domain::{
    AdminChanges, AuditEntry, DayQuota, IdempotencyKey, NameFragment, PersonalToken, QuotaStatus, Role, Scopes, Task,
    TaskContent, TaskFilter, TaskPatch, TokenName, User, UserZone, Username,
};

/// Why a store call failed. Callers map these onto answers; none carries client detail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another user has this username (the unique index decided it).
    #[error("the username is taken")]
    UsernameTaken,
    /// Another request with the same idempotency key is being created at this moment
    /// (on this or another instance).
    #[error("a request with this idempotency key is in flight")]
    KeyInFlight,
    /// The database cannot be reached or is overloaded; worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A user to create.
pub struct NewUser {
    pub username: Username,
    pub password_hash: String,
    pub role: Role,
    pub daily_limit: u32,
    pub zone: UserZone,
}

/// What happens when a user with these settings changes them.
pub struct UserChanges {
    pub zone: Option<UserZone>,
    pub password: Option<PasswordChange>,
}

/// A new password hash. Every other session of the user is revoked with it, in the same
/// transaction, so that no token issued before the change outlives it.
pub struct PasswordChange {
    pub hash: String,
    /// The session that made the change, which lives on.
    pub keep_session: Uuid,
    pub now: Timestamp,
}

/// A personal access token to keep: its hash, never the token itself.
pub struct NewPersonalToken {
    pub hash: [u8; 32],
    pub name: TokenName,
    pub scopes: Scopes,
    pub expires_at: Option<Timestamp>,
}

/// A task creation: one unit of quota and one row, or neither.
pub enum Created {
    Task(Task, QuotaStatus),
    OverLimit(QuotaStatus),
    /// The idempotency key was used before for the same request: the task as it was
    /// first created, and no quota used.
    Replay(Task),
    /// The idempotency key was used before for another request.
    KeyReused,
}

/// A batch creation: as many units and rows as tasks, or none.
pub enum CreatedBatch {
    Tasks(Vec<Task>, QuotaStatus),
    /// Fewer units remain than the batch asks for: nothing was created.
    OverLimit(QuotaStatus),
    /// The idempotency key was used before for the same batch: its tasks as first
    /// created, and no quota used.
    Replay(Vec<Task>),
    /// The idempotency key was used before for another request.
    KeyReused,
}

/// How both stores keep a batch's first answer with its idempotency key: its tasks' ids
/// and contents, in order, as JSON (the tasks share their day and their instant).
pub(crate) fn encode_batch(tasks: &[Task]) -> String {
    let pairs: Vec<(Uuid, &str)> = tasks.iter().map(|t| (t.id, t.content.as_str())).collect();
    serde_json::to_string(&pairs).unwrap_or_default()
}

pub(crate) fn decode_batch(text: &str) -> Result<Vec<(Uuid, String)>> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(anyhow::anyhow!("a kept batch is unreadable: {e}")))
}

/// What a refresh token turned out to be.
pub enum Refreshed {
    /// Spent now, replaced by the new one in the same family.
    Rotated { user_id: Uuid, session_id: Uuid },
    /// Spent before: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// All a store does, by concern; `Store` is what the application holds (`Arc<dyn Store>`).
#[async_trait]
pub trait Store:
    AccountStore + AdminStore + PlanStore + TokenStore + TaskStore + WebhookStore + Send + Sync + 'static
{
    /// Whether the database answers; for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// A one-line description of durability settings, read back from the database.
    async fn durability(&self) -> Result<String>;
    /// Tidies up at a clean stop, after the last request has been answered.
    async fn close(&self) {}
    /// The signing secret kept in the database; `candidate` is stored if none is yet.
    async fn signing_secret(&self, candidate: Vec<u8>) -> Result<Vec<u8>>;

    /// `session_user` and that user's quota on the day of `now` (in the zone ruling
    /// then), for `GET /v1/me/quota`; a store may read both at once.
    async fn session_usage(&self, session_id: Uuid, user_id: Uuid, now: Timestamp) -> Result<Option<(User, DayQuota)>> {
        let Some(user) = self.session_user(session_id, user_id).await? else { return Ok(None) };
        let quota = self.day_quota(user.id, user.zone.window(now).day).await?;
        Ok(Some((user, quota)))
    }
    /// `personal_token_user` and the user's quota on the day of `now` (in the zone
    /// ruling then), for `GET /v1/me/quota`; a store may read both at once.
    async fn personal_token_usage(
        &self,
        hash: [u8; 32],
        now: Timestamp,
    ) -> Result<Option<(User, PersonalToken, DayQuota)>> {
        let Some((user, token)) = self.personal_token_user(hash).await? else { return Ok(None) };
        let quota = self.day_quota(user.id, user.zone.window(now).day).await?;
        Ok(Some((user, token, quota)))
    }
    /// Claims period `period` of the periodic job `job`: true for exactly one caller per
    /// period among all instances on this database (the claim is kept in `settings`; on
    /// PostgreSQL a transaction-scoped advisory lock makes a concurrent claimer give up at
    /// once instead of queueing).
    async fn claim_job_period(&self, job: &str, period: i64) -> Result<bool>;
    /// Deletes at most `batch` rows of what `step` of `rules` says is no longer needed;
    /// how many it deleted. The job (`jobs`) runs the steps in order, each until a short
    /// batch comes back.
    async fn prune_step(&self, step: PruneStep, rules: &Prune, batch: u64) -> Result<u64>;
}

/// Users, their sign-in data, sessions and refresh tokens.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> Result<User>;
    /// Whether `username`, or a name that looks like it (the same confusable skeleton),
    /// belongs to a user.
    async fn name_taken(&self, username: &Username) -> Result<bool>;
    /// The user and their password hash.
    async fn user_credentials(&self, username: &Username) -> Result<Option<(User, String)>>;
    async fn user(&self, id: Uuid) -> Result<Option<User>>;
    /// The user behind an access token, if its session is still live.
    async fn session_user(&self, session_id: Uuid, user_id: Uuid) -> Result<Option<User>>;
    /// Applies the user's own changes. A new password also deletes every personal token
    /// of the user, in the same transaction (docs/reliability.md, "password change").
    async fn update_user(&self, id: Uuid, changes: UserChanges) -> Result<Option<User>>;
    /// Opens a session (a refresh-token family) with its first refresh token.
    async fn create_session(
        &self,
        user_id: Uuid,
        refresh_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Uuid>;
    /// Spends a refresh token and records its successor, atomically.
    async fn rotate_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Refreshed>;
    async fn revoke_session(&self, session_id: Uuid, now: Timestamp) -> Result<()>;
}

/// What administrators read and change, with the audit trail.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Users after `after` in id order, each with the quota used on their current day;
    /// with `name`, only those whose username contains it.
    async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: u32,
        name: Option<NameFragment>,
        now: Timestamp,
    ) -> Result<Vec<(User, u32)>>;
    async fn admin_update_user(
        &self,
        actor: Option<Uuid>,
        target: Uuid,
        changes: AdminChanges,
        now: Timestamp,
    ) -> Result<Option<User>>;
    async fn audit_trail(&self, target: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// Plans, the boosts of users, and the adaptive rule's changes (docs/quota.md item 10).
/// Every change is audited in the same transaction; on SQLite each moves the writer's
/// epoch, so the quota memo forgets the limits it holds.
#[async_trait]
pub trait PlanStore: Send + Sync {
    /// Keeps a new plan, unless one has its name already (then `None`).
    async fn create_plan(&self, actor: Option<Uuid>, plan: Plan) -> Result<Option<Plan>>;
    /// Every plan, by name.
    async fn plans(&self) -> Result<Vec<Plan>>;
    async fn plan(&self, name: &str) -> Result<Option<Plan>>;
    /// Changes plan `name`; its users' rows are not touched: a create reads the plan's
    /// limit in its own atomic step, so the change applies at once, today included.
    async fn update_plan(
        &self,
        actor: Option<Uuid>,
        name: &str,
        changes: PlanChanges,
        now: Timestamp,
    ) -> Result<Option<Plan>>;
    /// The plan's audit trail, oldest first.
    async fn plan_audit(&self, name: &str) -> Result<Vec<AuditEntry>>;
    /// Grants `boost` to `user_id` (`None` if there is no such user).
    async fn add_boost(
        &self,
        actor: Option<Uuid>,
        user_id: Uuid,
        boost: NewBoost,
        now: Timestamp,
    ) -> Result<Option<Boost>>;
    /// The user's boosts, by first day.
    async fn boosts(&self, user_id: Uuid) -> Result<Vec<Boost>>;
    /// Takes back the user's boost `id`; whether there was one.
    async fn delete_boost(&self, actor: Option<Uuid>, user_id: Uuid, id: Uuid, now: Timestamp) -> Result<bool>;
    /// Applies the adaptive rules to at most `batch` users after `after` (in id order)
    /// that are on an adaptive plan, have no limit of their own and were not looked at
    /// on their local day of `now` yet; each change starts on the user's next local day
    /// and is audited with no actor (`system`). The last user looked at (none: done)
    /// and how many limits changed.
    async fn adapt_step(&self, after: Option<Uuid>, batch: u32, now: Timestamp) -> Result<(Option<Uuid>, u32)>;
}

/// Personal access tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Keeps a new personal token of `user_id`, unless the user already holds `max`
    /// tokens (then `None`, and nothing is kept).
    async fn create_personal_token(
        &self,
        user_id: Uuid,
        token: NewPersonalToken,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<PersonalToken>>;
    /// The user's personal tokens, oldest first.
    async fn personal_tokens(&self, user_id: Uuid) -> Result<Vec<PersonalToken>>;
    /// The user's token `id`, if it still exists.
    async fn personal_token(&self, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>>;
    /// Deletes the user's token `id`; whether there was one. From the moment this
    /// returns, no instance accepts the token.
    async fn delete_personal_token(&self, user_id: Uuid, id: Uuid) -> Result<bool>;
    /// The token whose hash is `hash`, with its user: the one lookup a request made with
    /// a personal token costs, as `session_user` is for an access token.
    async fn personal_token_user(&self, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>>;
    /// Records a use of token `id` at `now`, unless a later one is recorded already.
    async fn touch_personal_token(&self, id: Uuid, now: Timestamp) -> Result<()>;
}

/// Tasks and the quota that guards their creation.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Checks and consumes one unit of the user's quota for the day of `now` and
    /// inserts the task, as one atomic step, which also writes the webhook events the
    /// create makes (`task.created`, `quota.exhausted`) to the outbox. The day comes from `user`'s zone as the
    /// request read it (a zone change only takes effect at a midnight); the limit is
    /// read inside the step, so a change made an instant before applies. With an
    /// idempotency key, a repeat within the window is answered from the first creation
    /// instead, and the key is recorded in the same transaction as the task.
    async fn create_task(
        &self,
        user: &User,
        content: TaskContent,
        idempotency: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<Created>;
    /// `create_task` for several tasks at once, all or nothing: one atomic step that
    /// uses `contents.len()` units and inserts every task, or changes nothing when fewer
    /// units remain. The tasks are created in the order given, with ids in that order.
    async fn create_tasks(
        &self,
        user: &User,
        contents: Vec<TaskContent>,
        idempotency: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<CreatedBatch>;
    /// The units of quota the user has used on local `day`.
    async fn used(&self, user_id: Uuid, day: Date) -> Result<u32>;
    /// The user's limit in force on local `day` and the units used on it, read together.
    async fn day_quota(&self, user_id: Uuid, day: Date) -> Result<DayQuota>;
    async fn list_tasks(&self, user_id: Uuid, filter: TaskFilter) -> Result<Vec<Task>>;
    async fn task(&self, user_id: Uuid, id: Uuid) -> Result<Option<Task>>;
    /// Changes the task; its `task.updated` event is written with the change.
    async fn update_task(&self, user_id: Uuid, id: Uuid, patch: TaskPatch, now: Timestamp) -> Result<Option<Task>>;
    /// Deletes the task; its `task.deleted` event is written with the deletion, at `now`.
    async fn delete_task(&self, user_id: Uuid, id: Uuid, now: Timestamp) -> Result<bool>;
}

/// A webhook to keep.
pub struct NewWebhook {
    pub url: String,
    pub events: EventTypes,
    pub secret: String,
}

/// An attempt to deliver an event, as the delivery worker records it.
pub struct AttemptRecord {
    pub event_id: Uuid,
    pub webhook_id: Uuid,
    /// This attempt's number, 1-based.
    pub attempt: u32,
    pub at: Timestamp,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: Next,
}

/// Webhooks and their outbox. The outbox rows themselves are written by `TaskStore`'s
/// changes, in the same atomic step as the change they report.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Keeps a new webhook of `user_id`, unless the user already holds `max` (then
    /// `None`, and nothing is kept).
    async fn create_webhook(&self, user_id: Uuid, new: NewWebhook, max: u32, now: Timestamp)
    -> Result<Option<Webhook>>;
    /// The user's webhooks, oldest first.
    async fn webhooks(&self, user_id: Uuid) -> Result<Vec<Webhook>>;
    /// Deletes the user's webhook `id` with its events and their log; whether there was one.
    async fn delete_webhook(&self, user_id: Uuid, id: Uuid) -> Result<bool>;
    /// The latest `limit` events of the user's webhook `id`, newest first, each with its
    /// attempts; `None` if the user has no such webhook.
    async fn deliveries(&self, user_id: Uuid, id: Uuid, limit: u32) -> Result<Option<Vec<Delivery>>>;
    /// Claims at most `limit` events due at `now` whose webhook is enabled and which no
    /// live lease holds, leasing them until `lease_until`, atomically: two callers (on
    /// any instances) never get the same event while its lease runs.
    async fn claim_due_events(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> Result<Vec<DueEvent>>;
    /// Records an attempt and what follows it (ends the lease; on `GiveUp`, disables
    /// the webhook).
    async fn record_attempt(&self, attempt: AttemptRecord) -> Result<()>;
}

/// A UUIDv7 for `now`: its leading 48 bits are exactly `now`'s unix milliseconds (the
/// task list's day ranges rely on it), then a 28-bit counter that keeps the ids made in
/// one millisecond in order, whatever other milliseconds ids are made for meanwhile
/// (its high 12 bits in the version's field, its low 16 after the variant's byte, left
/// zero), then 40 random bits. The counter starts below 256 each millisecond, so it
/// cannot wrap: ids stay in order even when a test's frozen clock makes every id of a
/// run in one millisecond. Unlike uuid's own context, an earlier `now` (a clock
/// stepped back, a test's clock) is not bumped to the latest one seen.
pub fn new_id(now: Timestamp) -> Uuid {
    /// The latest counter of each of the last few milliseconds ids were made for, so
    /// that clocks used side by side (tests' clocks, each frozen at its own instant)
    /// do not restart each other's counters.
    static RECENT: Mutex<([(u64, u32); 16], usize)> = Mutex::new(([(u64::MAX, 0); 16], 0));
    let millis = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let mut bytes: [u8; 10] = rand::random();
    let counter = {
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, next) = &mut *recent;
        if let Some(slot) = slots.iter_mut().find(|(m, _)| *m == millis) {
            slot.1 = (slot.1 + 1).min(0x0fff_ffff);
            slot.1
        } else {
            let counter = u32::from(bytes[0]);
            slots[*next] = (millis, counter);
            *next = (*next + 1) % slots.len();
            counter
        }
    };
    let [top, high, mid, low] = counter.to_be_bytes();
    bytes[0] = top & 0x0f;
    bytes[1] = high;
    bytes[2] = 0;
    bytes[3] = mid;
    bytes[4] = low;
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_millisecond_keep_their_order_past_thousands() {
        let now: Timestamp = "2026-06-15T12:00:00.123Z".parse().unwrap();
        let other: Timestamp = "2026-06-15T12:00:07Z".parse().unwrap();
        // Another clock's ids in between, as tests with their own clocks make them.
        let ids: Vec<Uuid> = (0..10_000)
            .map(|i| (new_id(now), new_id(other.checked_add(jiff::SignedDuration::from_millis(i % 3)).unwrap())).0)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids made in one millisecond are in order");
        for id in &ids {
            let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((seconds, nanos / 1_000_000), (1_781_524_800, 123));
            assert_eq!(id.get_version_num(), 7);
        }
    }
}
