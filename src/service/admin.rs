//! Administration: users with today's use, their limits and roles, and the audit trail
//! of every change. `/v1/admin` and the command line both come here.

use std::sync::Arc;

use jiff::Timestamp;
use uuid::Uuid;

use super::Error;
use crate::domain::{AdminChanges, AuditEntry, DailyLimit, NameFragment, Role, User, Username, check_role_change};
use crate::events::{Events, Kind};
use crate::store::Store;

#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn Store>,
    events: Events,
}

impl AdminService {
    pub fn new(store: Arc<dyn Store>, events: Events) -> Self {
        AdminService { store, events }
    }

    /// Users after `after` in id order, each with the units used on their current day;
    /// with `name`, only those whose username contains it.
    pub async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: u32,
        name: Option<NameFragment>,
        now: Timestamp,
    ) -> Result<Vec<(User, u32)>, Error> {
        if name.as_ref().is_some_and(|n| !n.can_match()) {
            return Ok(Vec::new());
        }
        Ok(self.store.list_users(after, limit, name, now).await?)
    }

    pub async fn user_named(&self, name: &str) -> Result<User, Error> {
        let username = Username::canonical(name)?;
        let (user, _) = self.store.user_credentials(&username).await?.ok_or(Error::NotFound)?;
        Ok(user)
    }

    /// Changes `target`'s limit and role as `actor` asks (`None`: the command line on
    /// the server). A new limit applies at once, to the current day too, and the user's
    /// event streams hear of it. Every change is audited in the same transaction.
    pub async fn update_user(
        &self,
        actor: Option<Uuid>,
        target: Uuid,
        daily_limit: Option<i64>,
        role: Option<Role>,
        now: Timestamp,
    ) -> Result<User, Error> {
        let daily_limit = daily_limit.map(DailyLimit::parse).transpose()?.map(DailyLimit::get);
        if let (Some(actor), Some(role)) = (actor, role) {
            check_role_change(actor, target, role).map_err(Error::Conflict)?;
        }
        let changes = AdminChanges { daily_limit, role };
        let user = self.store.admin_update_user(actor, target, changes, now).await?.ok_or(Error::NotFound)?;
        if daily_limit.is_some() {
            self.announce(&user, Kind::QuotaChanged, || serde_json::json!({"daily_limit": user.daily_limit})).await;
        }
        Ok(user)
    }

    /// The changes made to `target`, oldest first, after the entry `after`.
    pub async fn audit_trail(&self, target: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<AuditEntry>, Error> {
        self.store.user(target).await?.ok_or(Error::NotFound)?;
        Ok(self.store.audit_trail(target, after, limit).await?)
    }

    /// Tells `user`'s event streams. With Redis, waits until Redis has the event, so
    /// that the command line, which exits right after, does not leave it unsent.
    async fn announce<T: serde::Serialize>(&self, user: &User, kind: Kind, data: impl FnOnce() -> T) {
        if !self.events.shared() {
            self.events.publish(user.id, kind, data);
        } else if !self.events.publish_and_wait(user.id, kind, data).await {
            tracing::warn!(user = %user.id, "Redis did not take the event; other instances' streams were not told");
        }
    }
}
