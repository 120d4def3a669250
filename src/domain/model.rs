//! What the service keeps: users, their zone settings, tasks and the audit trail.

use jiff::{Timestamp, civil::Date};
use uuid::Uuid;

use super::limits::{LimitSettings, LimitSource, base_limit};
use super::{TaskContent, TimeZoneName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Whether `actor` (an admin) may give `target` the role `role`, or why not. Admins may
/// not take away their own admin role, so that one slip cannot leave a deployment with no
/// admin; another admin can, and `quotask user create NAME --admin` on the server makes a
/// new one.
pub fn check_role_change(actor: Uuid, target: Uuid, role: Role) -> Result<(), &'static str> {
    if actor == target && role != Role::Admin {
        return Err("admins cannot remove their own admin role; another admin can");
    }
    Ok(())
}

/// A user's zone, with a change that waits for the old zone's next midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserZone {
    pub current: TimeZoneName,
    pub pending: Option<(TimeZoneName, Timestamp)>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// The user's own limit or sign-up default, plan and adapted limit: what decides
    /// their limit on each day (`limits::base_limit`).
    pub limits: LimitSettings,
    pub zone: UserZone,
    pub created_at: Timestamp,
}

impl User {
    /// The user's base limit (before boosts) on their local day of `now`, and its source.
    pub fn base_limit(&self, now: Timestamp) -> (u32, LimitSource) {
        base_limit(&self.limits, self.zone.window(now).day)
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: Uuid,
    pub content: String,
    pub done: bool,
    /// The local day whose quota the task used.
    pub day: Date,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Task {
    /// A task as it is at its creation: not done, never updated. Also what a replayed
    /// idempotent create answers, whatever became of the task since.
    pub fn new(id: Uuid, content: String, day: Date, created_at: Timestamp) -> Self {
        Task { id, content, done: false, day, created_at, updated_at: created_at }
    }
}

/// One administrative change: who changed what on whom, and when.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub target_id: Uuid,
    pub field: String,
    pub old_value: String,
    pub new_value: String,
    pub at: Timestamp,
}

/// An administrator's change to a user; every field set is audited.
#[derive(Debug, Clone, Default)]
pub struct AdminChanges {
    pub daily_limit: Option<LimitChange>,
    pub role: Option<Role>,
    /// `Some(None)` takes the user off their plan.
    pub plan: Option<Option<String>>,
}

/// A change to a user's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitChange {
    /// The user's own limit, which overrides any plan.
    Own(u32),
    /// No own limit any more: the plan's, else `default` (the default of the server
    /// that made the change, as a new user would get it).
    Drop { default: u32 },
}

/// Most tasks one batch may create.
pub const MAX_BATCH: usize = 100;

/// Which of a user's tasks to list, newest first.
#[derive(Default)]
pub struct TaskFilter {
    pub day: Option<Date>,
    pub done: Option<bool>,
    /// Only tasks older than this id (ids are UUIDv7, so they sort by creation).
    pub before: Option<Uuid>,
    pub limit: u32,
}

pub struct TaskPatch {
    pub content: Option<TaskContent>,
    pub done: Option<bool>,
}

/// One audited change: the field and its value before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChange {
    pub field: &'static str,
    pub old_value: String,
    pub new_value: String,
}

impl AdminChanges {
    /// What the audit trail records when these changes are made to `before`: every field
    /// the admin set, even to the value it had, since the trail records what was done.
    /// A limit is shown as the base limit in force on the user's day of `now` before,
    /// and as the new own limit, or `none` when it was dropped.
    pub fn audit(&self, before: &User, now: Timestamp) -> Vec<AuditChange> {
        let mut changes = Vec::new();
        if let Some(limit) = self.daily_limit {
            changes.push(AuditChange {
                field: "daily_limit",
                old_value: before.base_limit(now).0.to_string(),
                new_value: match limit {
                    LimitChange::Own(n) => n.to_string(),
                    LimitChange::Drop { .. } => "none".to_owned(),
                },
            });
        }
        if let Some(plan) = &self.plan {
            let name = |p: Option<&str>| p.unwrap_or("none").to_owned();
            changes.push(AuditChange {
                field: "plan",
                old_value: name(before.limits.plan.as_ref().map(|(n, _, _)| &**n)),
                new_value: name(plan.as_deref()),
            });
        }
        if let Some(role) = self.role {
            changes.push(AuditChange {
                field: "role",
                old_value: before.role.as_str().to_owned(),
                new_value: role.as_str().to_owned(),
            });
        }
        changes
    }
}

/// A refresh token as the store found it.
#[derive(Debug, Clone, Copy)]
pub struct StoredRefreshToken {
    /// Spent by an earlier refresh.
    pub spent: bool,
    /// Its session was signed out or revoked.
    pub session_revoked: bool,
    pub expires_at: Timestamp,
}

/// What presenting a refresh token at `now` does (RFC 9700, rotation with reuse
/// detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Spend it and issue its successor in the same session.
    Rotate,
    /// It was spent before: someone holds a copy. Revoke its whole session (family).
    RevokeFamily,
    /// Unknown, expired, or of a session already ended: refuse, change nothing.
    Refuse,
}

impl RefreshVerdict {
    pub fn of(found: Option<StoredRefreshToken>, now: Timestamp) -> Self {
        match found {
            None => RefreshVerdict::Refuse,
            Some(t) if t.session_revoked => RefreshVerdict::Refuse,
            // A spent token is a reuse even once expired: the family may still be live.
            Some(t) if t.spent => RefreshVerdict::RevokeFamily,
            Some(t) if t.expires_at <= now => RefreshVerdict::Refuse,
            Some(_) => RefreshVerdict::Rotate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: Uuid::nil(),
            username: "ann".into(),
            role: Role::User,
            limits: LimitSettings { stored: 5, ..LimitSettings::default() },
            zone: UserZone { current: TimeZoneName::utc(), pending: None },
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn every_field_an_admin_sets_is_audited_with_its_old_value() {
        let both = AdminChanges {
            daily_limit: Some(LimitChange::Own(5)),
            role: Some(Role::Admin),
            plan: Some(Some("pro".into())),
        };
        let audit = both.audit(&user(), Timestamp::UNIX_EPOCH);
        assert_eq!(audit.len(), 3);
        assert_eq!(
            (audit[0].field, audit[0].old_value.as_str(), audit[0].new_value.as_str()),
            ("daily_limit", "5", "5")
        );
        assert_eq!((audit[1].field, audit[1].old_value.as_str(), audit[1].new_value.as_str()), ("plan", "none", "pro"));
        assert_eq!(
            (audit[2].field, audit[2].old_value.as_str(), audit[2].new_value.as_str()),
            ("role", "user", "admin")
        );
        let dropped = AdminChanges { daily_limit: Some(LimitChange::Drop { default: 5 }), ..AdminChanges::default() };
        assert_eq!(dropped.audit(&user(), Timestamp::UNIX_EPOCH)[0].new_value, "none");
        assert!(AdminChanges::default().audit(&user(), Timestamp::UNIX_EPOCH).is_empty());
    }

    #[test]
    fn a_spent_refresh_token_revokes_its_family_and_nothing_else_does() {
        let now: Timestamp = "2026-03-08T12:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-03-09T12:00:00Z".parse().unwrap();
        let token =
            |spent, session_revoked, expires_at| Some(StoredRefreshToken { spent, session_revoked, expires_at });
        assert_eq!(RefreshVerdict::of(None, now), RefreshVerdict::Refuse);
        assert_eq!(RefreshVerdict::of(token(false, false, later), now), RefreshVerdict::Rotate);
        assert_eq!(RefreshVerdict::of(token(true, false, later), now), RefreshVerdict::RevokeFamily);
        assert_eq!(RefreshVerdict::of(token(true, false, now), now), RefreshVerdict::RevokeFamily);
        assert_eq!(RefreshVerdict::of(token(false, false, now), now), RefreshVerdict::Refuse);
        assert_eq!(RefreshVerdict::of(token(true, true, later), now), RefreshVerdict::Refuse);
        assert_eq!(RefreshVerdict::of(token(false, true, later), now), RefreshVerdict::Refuse);
    }
}
