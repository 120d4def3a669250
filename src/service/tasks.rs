//! Tasks: create (with the quota and safe retries), list, read, update, delete.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Error, KEY_IN_FLIGHT};
use crate::domain::{
    FieldError, IdempotencyKey, MAX_BATCH, QuotaStatus, Task, TaskContent, TaskFilter, TaskPatch, User,
};
use crate::events::{Events, Kind};
use crate::store::{Created, CreatedBatch, Store};

/// A task as clients see it, in answers and in events.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub content: String,
    pub done: bool,
    /// The user's local day whose quota the task used, `YYYY-MM-DD`.
    pub day: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        let created_at = t.created_at.to_string();
        // A task never changed has both times equal: formatted once.
        let updated_at = if t.updated_at == t.created_at { created_at.clone() } else { t.updated_at.to_string() };
        TaskView {
            id: t.id.to_string(),
            content: t.content,
            done: t.done,
            day: t.day.to_string(),
            created_at,
            updated_at,
        }
    }
}

/// A created task as its creator sees it: the task, today's quota, and whether this is
/// the replayed answer to an earlier request with the same idempotency key.
pub struct Outcome {
    pub task: Task,
    pub status: QuotaStatus,
    pub replayed: bool,
}

/// A created batch: its tasks in the order asked, today's quota, and whether this is the
/// replayed answer to an earlier request with the same idempotency key.
pub struct BatchOutcome {
    pub tasks: Vec<Task>,
    pub status: QuotaStatus,
    pub replayed: bool,
}

/// A page of tasks, newest first, and where the next page starts.
pub struct Page {
    pub items: Vec<Task>,
    pub next_cursor: Option<Uuid>,
}

#[derive(Clone)]
pub struct TaskService {
    store: Arc<dyn Store>,
    events: Events,
    in_flight: InFlight,
}

impl TaskService {
    pub fn new(store: Arc<dyn Store>, events: Events) -> Self {
        TaskService { store, events, in_flight: InFlight::default() }
    }

    /// Creates a task for `user`, using one unit of the quota of their day of `now`, or
    /// says why not. `key` is the request's `Idempotency-Key` as sent; `route` names the
    /// caller (`v1`, `seed`), so that a key used on one route is not taken for a repeat
    /// on the other.
    pub async fn create(
        &self,
        user: &User,
        content: String,
        key: Option<&[u8]>,
        route: &str,
        now: Timestamp,
    ) -> Result<Outcome, Error> {
        let content = TaskContent::parse(content)?;
        let key = key.map(|raw| IdempotencyKey::parse(raw, route, content.as_str())).transpose()?;
        // A repeat arriving while the first is still being created here is answered at
        // once rather than queued behind it; across instances the store tells the same.
        let _claim = match &key {
            Some(key) => Some(self.in_flight.claim(user.id, &key.key).ok_or(Error::Conflict(KEY_IN_FLIGHT))?),
            None => None,
        };
        let created = self.store.create_task(user, content, key, now).await?;
        match created {
            Created::Task(task, status) => {
                metrics::counter!(crate::metrics::TASKS_CREATED).increment(1);
                self.events.publish(user.id, Kind::TaskCreated, || TaskView::from(task.clone()));
                Ok(Outcome { task, status, replayed: false })
            }
            Created::Replay(task) => {
                let quota = self.store.day_quota(user.id, user.zone.window(now).day).await?;
                Ok(Outcome { task, status: QuotaStatus::of(user, quota, now), replayed: true })
            }
            Created::OverLimit(status) => {
                metrics::counter!(crate::metrics::QUOTA_REJECTIONS).increment(1);
                Err(Error::QuotaExceeded { status: Box::new(status), now, requested: 1 })
            }
            Created::KeyReused => {
                Err(FieldError::new("Idempotency-Key", "was already used with another request body").into())
            }
        }
    }

    /// Creates the tasks of `contents` (1 to `MAX_BATCH`, in order) for `user`, all or
    /// nothing: as many units as tasks, in one atomic step, or none when fewer remain
    /// (docs/quota.md item 9). `key` covers the batch as a whole.
    pub async fn create_batch(
        &self,
        user: &User,
        contents: Vec<String>,
        key: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<BatchOutcome, Error> {
        if contents.is_empty() || contents.len() > MAX_BATCH {
            return Err(FieldError::new("tasks", format!("must hold 1 to {MAX_BATCH} tasks")).into());
        }
        // The fingerprint covers every content, in order.
        let key = match key {
            Some(raw) => {
                Some(IdempotencyKey::parse(raw, "batch", &serde_json::to_string(&contents).unwrap_or_default())?)
            }
            None => None,
        };
        let mut errors = Vec::new();
        let mut parsed = Vec::with_capacity(contents.len());
        for (i, content) in contents.into_iter().enumerate() {
            match TaskContent::parse(content) {
                Ok(content) => parsed.push(content),
                Err(e) => errors.push(FieldError::new("tasks", format!("task {i}: content {}", e.message))),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let requested = u32::try_from(parsed.len()).unwrap_or(u32::MAX);
        let _claim = match &key {
            Some(key) => Some(self.in_flight.claim(user.id, &key.key).ok_or(Error::Conflict(KEY_IN_FLIGHT))?),
            None => None,
        };
        match self.store.create_tasks(user, parsed, key, now).await? {
            CreatedBatch::Tasks(tasks, status) => {
                metrics::counter!(crate::metrics::TASKS_CREATED).increment(u64::from(requested));
                for task in &tasks {
                    self.events.publish(user.id, Kind::TaskCreated, || TaskView::from(task.clone()));
                }
                Ok(BatchOutcome { tasks, status, replayed: false })
            }
            CreatedBatch::Replay(tasks) => {
                let quota = self.store.day_quota(user.id, user.zone.window(now).day).await?;
                Ok(BatchOutcome { tasks, status: QuotaStatus::of(user, quota, now), replayed: true })
            }
            CreatedBatch::OverLimit(status) => {
                metrics::counter!(crate::metrics::QUOTA_REJECTIONS).increment(1);
                Err(Error::QuotaExceeded { status: Box::new(status), now, requested })
            }
            CreatedBatch::KeyReused => {
                Err(FieldError::new("Idempotency-Key", "was already used with another request body").into())
            }
        }
    }

    /// The user's tasks matching `filter`, at most `filter.limit` of them.
    pub async fn list(&self, user_id: Uuid, filter: TaskFilter) -> Result<Page, Error> {
        let limit = filter.limit as usize;
        // One more than asked for tells whether there is a next page.
        let mut items = self.store.list_tasks(user_id, TaskFilter { limit: filter.limit + 1, ..filter }).await?;
        let next_cursor = (items.len() > limit).then(|| items[limit - 1].id);
        items.truncate(limit);
        Ok(Page { items, next_cursor })
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<Task, Error> {
        self.store.task(user_id, id).await?.ok_or(Error::NotFound)
    }

    pub async fn update(&self, user_id: Uuid, id: Uuid, patch: TaskPatch, now: Timestamp) -> Result<Task, Error> {
        let task = self.store.update_task(user_id, id, patch, now).await?.ok_or(Error::NotFound)?;
        self.events.publish(user_id, Kind::TaskUpdated, || TaskView::from(task.clone()));
        Ok(task)
    }

    /// Deletes the task; its unit of quota is not given back.
    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), Error> {
        if !self.store.delete_task(user_id, id).await? {
            return Err(Error::NotFound);
        }
        self.events.publish(user_id, Kind::TaskDeleted, || serde_json::json!({"id": id.to_string()}));
        Ok(())
    }
}

/// The (user, key) pairs being created by this instance right now.
#[derive(Default, Clone)]
struct InFlight(Arc<Mutex<HashSet<(Uuid, String)>>>);

/// Holds a key in flight until dropped.
struct Claim {
    registry: InFlight,
    entry: (Uuid, String),
}

impl InFlight {
    fn claim(&self, user_id: Uuid, key: &str) -> Option<Claim> {
        let entry = (user_id, key.to_owned());
        let fresh = self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.clone());
        fresh.then(|| Claim { registry: self.clone(), entry })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.registry.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_key_is_free_again_once_the_claim_is_dropped() {
        let in_flight = InFlight::default();
        let user = Uuid::now_v7();
        let claim = in_flight.claim(user, "k");
        assert!(claim.is_some());
        assert!(in_flight.claim(user, "k").is_none());
        drop(claim);
        assert!(in_flight.claim(user, "k").is_some());
    }
}
