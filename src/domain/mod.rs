//! Pure rules of the service: validated input types, the quota's day window, the
//! model. Nothing here does I/O or reads the clock; callers pass `now`.

pub mod idempotency;
pub mod input;
pub mod limits;
pub mod model;
pub mod prune;
pub mod quota;
pub mod tokens;
pub mod webhooks;

pub use idempotency::IdempotencyKey;
pub use input::{DailyLimit, FieldError, NameFragment, Password, TaskContent, TimeZoneName, Username};
pub use limits::{LimitInForce, LimitSettings, LimitSource};
pub use model::{
    AdminChanges, AuditChange, AuditEntry, LimitChange, MAX_BATCH, RefreshVerdict, Role, StoredRefreshToken, Task,
    TaskFilter, TaskPatch, TaskView, User, UserZone, check_role_change,
};
pub use quota::{DayQuota, DayWindow, QuotaStatus, admits};
pub use tokens::{Credential, Need, PersonalToken, Scope, Scopes, TokenName};
