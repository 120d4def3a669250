//! Administration: users with today's use, their limits, roles and plans, plans and
//! boosts, and the audit trail of every change. `/v1/admin` and the command line both
//! come here.

use std::sync::Arc;

use jiff::Timestamp;
use uuid::Uuid;

use super::Error;
use crate::domain::limits::{Adapt, Boost, NewBoost, Plan, PlanChanges, PlanName};
use crate::domain::{
    AdminChanges, AuditEntry, DailyLimit, FieldError, LimitChange, NameFragment, Role, User, Username,
    check_role_change,
};
use crate::events::{Events, Kind};
use crate::store::Store;

#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn Store>,
    events: Events,
    /// What a user whose own limit is dropped falls back to without a plan.
    default_limit: u32,
}

/// What an administrator changes about a user; each field absent is left as it is.
#[derive(Debug, Default)]
pub struct UserUpdate {
    /// `Some(None)` drops the user's own limit.
    pub daily_limit: Option<Option<i64>>,
    pub role: Option<Role>,
    /// `Some(None)` takes the user off their plan.
    pub plan: Option<Option<String>>,
}

/// An adaptive rule as a client sent it (checked by `limits::Adapt::parse`).
#[derive(Debug, Clone, Copy)]
pub struct AdaptRule {
    pub step: i64,
    pub after_days_at_limit: i64,
    pub max: i64,
    pub after_idle_days: i64,
    pub min: i64,
}

impl AdaptRule {
    fn parse(self) -> Result<Adapt, Error> {
        Adapt::parse(self.step, self.after_days_at_limit, self.max, self.after_idle_days, self.min)
            .map_err(Error::Invalid)
    }
}

impl AdminService {
    pub fn new(store: Arc<dyn Store>, events: Events, default_limit: u32) -> Self {
        AdminService { store, events, default_limit }
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

    /// Changes `target`'s limit, role and plan as `actor` asks (`None`: the command line
    /// on the server). A new limit or plan applies at once, to the current day too, and
    /// the user's event streams hear of it. Every change is audited in the same
    /// transaction.
    pub async fn update_user(
        &self,
        actor: Option<Uuid>,
        target: Uuid,
        update: UserUpdate,
        now: Timestamp,
    ) -> Result<User, Error> {
        let daily_limit = match update.daily_limit {
            None => None,
            Some(None) => Some(LimitChange::Drop { default: self.default_limit }),
            Some(Some(n)) => Some(LimitChange::Own(DailyLimit::parse(n)?.get())),
        };
        if let (Some(actor), Some(role)) = (actor, update.role) {
            check_role_change(actor, target, role).map_err(Error::Conflict)?;
        }
        let plan = match update.plan {
            Some(Some(name)) => Some(Some(self.existing_plan(&name).await?.name)),
            other => other.map(|_| None),
        };
        let quota_changes = daily_limit.is_some() || plan.is_some();
        let changes = AdminChanges { daily_limit, role: update.role, plan };
        let user = self.store.admin_update_user(actor, target, changes, now).await?.ok_or(Error::NotFound)?;
        if quota_changes {
            let limit = user.base_limit(now).0;
            self.announce(&user, Kind::QuotaChanged, || serde_json::json!({"daily_limit": limit})).await;
        }
        Ok(user)
    }

    /// The plan named `name`, or why it cannot be given to a user.
    async fn existing_plan(&self, name: &str) -> Result<Plan, Error> {
        let invalid = || Error::Invalid(vec![FieldError::new("plan", "names no plan")]);
        let name = PlanName::parse(name).map_err(|_| invalid())?;
        self.store.plan(name.as_str()).await?.ok_or_else(invalid)
    }

    /// Makes a plan; 409 if one has the name already.
    pub async fn create_plan(
        &self,
        actor: Option<Uuid>,
        name: &str,
        daily_limit: i64,
        adapt: Option<AdaptRule>,
        now: Timestamp,
    ) -> Result<Plan, Error> {
        let mut errors = Vec::new();
        let name = PlanName::parse(name).map_err(|e| errors.push(e)).ok();
        let limit = DailyLimit::parse(daily_limit).map_err(|e| errors.push(e)).ok();
        let adapt = match adapt.map(AdaptRule::parse).transpose() {
            Ok(adapt) => adapt,
            Err(Error::Invalid(more)) => {
                errors.extend(more);
                None
            }
            Err(other) => return Err(other),
        };
        let (Some(name), Some(limit), true) = (name, limit, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        let plan = Plan { name: name.as_str().to_owned(), daily_limit: limit.get(), adapt, created_at: now };
        self.store.create_plan(actor, plan).await?.ok_or(Error::Conflict("a plan has this name already"))
    }

    /// Every plan, by name.
    pub async fn plans(&self) -> Result<Vec<Plan>, Error> {
        Ok(self.store.plans().await?)
    }

    /// The plan `name` and its audit trail.
    pub async fn plan(&self, name: &str) -> Result<(Plan, Vec<AuditEntry>), Error> {
        let name = PlanName::parse(name).map_err(|_| Error::NotFound)?;
        let name = name.as_str();
        let plan = self.store.plan(name).await?.ok_or(Error::NotFound)?;
        let audit = self.store.plan_audit(name).await?;
        Ok((plan, audit))
    }

    /// Changes plan `name`. A new limit applies at once to all its users, today included,
    /// on every instance: their rows are not touched, every create reads the plan's limit.
    pub async fn update_plan(
        &self,
        actor: Option<Uuid>,
        name: &str,
        daily_limit: Option<i64>,
        adapt: Option<Option<AdaptRule>>,
        now: Timestamp,
    ) -> Result<Plan, Error> {
        // A name no plan can have (it would not even reach the database intact).
        let name = PlanName::parse(name).map_err(|_| Error::NotFound)?;
        let daily_limit = daily_limit.map(DailyLimit::parse).transpose()?.map(DailyLimit::get);
        let adapt = match adapt {
            None => None,
            Some(None) => Some(None),
            Some(Some(rule)) => Some(Some(rule.parse()?)),
        };
        let changes = PlanChanges { daily_limit, adapt };
        self.store.update_plan(actor, name.as_str(), changes, now).await?.ok_or(Error::NotFound)
    }

    /// Grants `target` a boost of `extra` units on each local day from `from` to `to`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_boost(
        &self,
        actor: Option<Uuid>,
        target: Uuid,
        extra: i64,
        from: &str,
        to: &str,
        reason: String,
        now: Timestamp,
    ) -> Result<Boost, Error> {
        let boost = NewBoost::parse(extra, from, to, reason).map_err(Error::Invalid)?;
        self.store.add_boost(actor, target, boost, now).await?.ok_or(Error::NotFound)
    }

    /// The boosts of `target`, by first day.
    pub async fn boosts(&self, target: Uuid) -> Result<Vec<Boost>, Error> {
        self.store.user(target).await?.ok_or(Error::NotFound)?;
        Ok(self.store.boosts(target).await?)
    }

    /// Takes back `target`'s boost `id`.
    pub async fn delete_boost(&self, actor: Option<Uuid>, target: Uuid, id: Uuid, now: Timestamp) -> Result<(), Error> {
        if self.store.delete_boost(actor, target, id, now).await? { Ok(()) } else { Err(Error::NotFound) }
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
