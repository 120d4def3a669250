//! What the service keeps: users, their zone settings, tasks and the audit trail.

use jiff::{Timestamp, civil::Date};
use uuid::Uuid;

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
    pub daily_limit: u32,
    pub zone: UserZone,
    pub created_at: Timestamp,
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
pub struct AdminChanges {
    pub daily_limit: Option<u32>,
    pub role: Option<Role>,
}

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
