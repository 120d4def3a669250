//! Property test of the quota memo (`QuotaMemo`): random runs of creates, single and in
//! batches, with and without idempotency keys (here and in another process), limit
//! changes (through the store, another process or any SQLite client), own limits
//! dropped, plans given and their limits changed, boosts granted and taken back (here
//! and in another process), zone changes, deletes, the clock moving on and restarts. After each step the memo must hold what
//! the database holds, and every create must have been decided as the database's own
//! counts say. `PROPTEST_CASES=1000 cargo test --lib memo` runs longer.

use std::collections::HashMap;
use std::sync::PoisonError;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::limit_and_use;
use crate::domain::idempotency::remembered_since;
use crate::domain::limits::{NewBoost, Plan, PlanChanges};
use crate::domain::{AdminChanges, IdempotencyKey, LimitChange, Role, TaskContent, TimeZoneName, UserZone, Username};
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::executor::Mode;
use crate::store::{AccountStore, AdminStore, Created, CreatedBatch, NewUser, PlanStore, TaskStore, UserChanges};

/// The limit in force and the day's use, as the database holds them.
fn counts(c: &Connection, user: Uuid, day: jiff::civil::Date) -> (u32, u32) {
    let quota = limit_and_use(c, user, day).unwrap();
    (quota.in_force.total(), quota.used)
}

const PLANS: &[&str] = &["p0", "p1"];

const USERS: usize = 3;
const ZONES: &[&str] = &["UTC", "Pacific/Kiritimati", "America/St_Johns", "Pacific/Niue"];

#[derive(Debug, Clone)]
enum Step {
    /// A create through the store, with one of a few idempotency keys or none.
    Create {
        user: usize,
        key: Option<u8>,
    },
    /// A create by another process on the same file (a second store).
    CreateElsewhere {
        user: usize,
    },
    /// A batch create through the store, all or nothing, with one of a few keys or none.
    CreateBatch {
        user: usize,
        size: u32,
        key: Option<u8>,
    },
    /// An administrator's limit change through the store.
    SetLimit {
        user: usize,
        limit: u32,
    },
    /// A limit change by another process, as the command line makes it: a second store.
    SetLimitElsewhere {
        user: usize,
        limit: u32,
    },
    /// A limit change by any SQLite client on the same file.
    SetLimitRaw {
        user: usize,
        limit: u32,
    },
    ChangeZone {
        user: usize,
        zone: usize,
    },
    /// An administrator drops the user's own limit (the plan's or the default applies).
    DropLimit {
        user: usize,
    },
    /// An administrator puts the user on a plan, or off any (here or in another process).
    SetPlan {
        user: usize,
        plan: Option<usize>,
        elsewhere: bool,
    },
    /// A plan's limit changes (here, in another process, or by any SQLite client).
    SetPlanLimit {
        plan: usize,
        limit: u32,
        how: u8,
    },
    /// A boost of the user's current day, or of another day (here or in another process).
    Boost {
        user: usize,
        extra: u32,
        today: bool,
        elsewhere: bool,
    },
    /// Takes back the user's oldest boost.
    Unboost {
        user: usize,
    },
    /// Deletes the user's newest task (which gives no unit back).
    Delete {
        user: usize,
    },
    /// The clock moves on, maybe into another day.
    Wait {
        minutes: i64,
    },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let limit = 0u32..5;
    prop_oneof![
        5 => (0..USERS, proptest::option::of(0u8..3)).prop_map(|(user, key)| Step::Create { user, key }),
        1 => (0..USERS).prop_map(|user| Step::CreateElsewhere { user }),
        2 => (0..USERS, 1u32..4, proptest::option::of(0u8..3))
            .prop_map(|(user, size, key)| Step::CreateBatch { user, size, key }),
        1 => (0..USERS, limit.clone()).prop_map(|(user, limit)| Step::SetLimit { user, limit }),
        1 => (0..USERS, limit.clone()).prop_map(|(user, limit)| Step::SetLimitElsewhere { user, limit }),
        1 => (0..USERS, limit).prop_map(|(user, limit)| Step::SetLimitRaw { user, limit }),
        1 => (0..USERS, 0..ZONES.len()).prop_map(|(user, zone)| Step::ChangeZone { user, zone }),
        1 => (0..USERS).prop_map(|user| Step::DropLimit { user }),
        1 => (0..USERS, proptest::option::of(0..PLANS.len()), any::<bool>())
            .prop_map(|(user, plan, elsewhere)| Step::SetPlan { user, plan, elsewhere }),
        1 => (0..PLANS.len(), 0u32..5, 0u8..3).prop_map(|(plan, limit, how)| Step::SetPlanLimit { plan, limit, how }),
        1 => (0..USERS, 1u32..3, any::<bool>(), any::<bool>())
            .prop_map(|(user, extra, today, elsewhere)| Step::Boost { user, extra, today, elsewhere }),
        1 => (0..USERS).prop_map(|user| Step::Unboost { user }),
        1 => (0..USERS).prop_map(|user| Step::Delete { user }),
        1 => (1i64..36 * 60).prop_map(|minutes| Step::Wait { minutes }),
        1 => Just(Step::Restart),
    ]
}

struct World {
    dir: tempfile::TempDir,
    store: SqliteStore,
    /// Another process on the same database.
    other: SqliteStore,
    /// Any other SQLite client, and the test's own view of the database.
    raw: Connection,
    users: Vec<Uuid>,
    now: Timestamp,
    /// When a create with (user, key) was answered with a task.
    keys: HashMap<(Uuid, String), Timestamp>,
    tasks: HashMap<Uuid, Vec<Uuid>>,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path).unwrap();
        let other = SqliteStore::open(&path).unwrap();
        let raw = Connection::open(&path).unwrap();
        let now: Timestamp = "2026-03-28T22:30:00Z".parse().unwrap();
        let mut users = Vec::new();
        for i in 0..USERS {
            let user = NewUser {
                username: Username::parse(&format!("memo{i}")).unwrap(),
                password_hash: String::new(),
                role: Role::User,
                daily_limit: 2,
                zone: UserZone { current: TimeZoneName::parse(ZONES[i % ZONES.len()]).unwrap(), pending: None },
            };
            users.push(store.create_user(user, now).await.unwrap().id);
        }
        for (i, name) in PLANS.iter().enumerate() {
            let plan = Plan { name: (*name).to_owned(), daily_limit: i as u32 + 1, adapt: None, created_at: now };
            store.create_plan(None, plan).await.unwrap().unwrap();
        }
        Self { dir, store, other, raw, users, now, keys: HashMap::new(), tasks: HashMap::new() }
    }

    async fn run(&mut self, step: Step) {
        let id = |user: usize| self.users[user];
        match step {
            Step::Create { user, key } => self.create(false, id(user), key).await,
            Step::CreateElsewhere { user } => self.create(true, id(user), None).await,
            Step::CreateBatch { user, size, key } => self.create_batch(id(user), size, key).await,
            Step::SetLimit { user, limit } => self.set_limit(false, id(user), limit).await,
            Step::SetLimitElsewhere { user, limit } => self.set_limit(true, id(user), limit).await,
            Step::SetLimitRaw { user, limit } => {
                self.raw
                    .execute("update users set daily_limit = ?2 where id = ?1", params![id(user).to_string(), limit])
                    .unwrap();
            }
            Step::ChangeZone { user, zone } => {
                let found = self.store.user(id(user)).await.unwrap().unwrap();
                let zone = found.zone.change_to(TimeZoneName::parse(ZONES[zone]).unwrap(), self.now);
                let changes = UserChanges { zone: Some(zone), password: None };
                self.store.update_user(id(user), changes).await.unwrap();
            }
            Step::DropLimit { user } => {
                let changes =
                    AdminChanges { daily_limit: Some(LimitChange::Drop { default: 2 }), ..AdminChanges::default() };
                self.store.admin_update_user(None, id(user), changes, self.now).await.unwrap().unwrap();
            }
            Step::SetPlan { user, plan, elsewhere } => {
                let store = if elsewhere { &self.other } else { &self.store };
                let changes = AdminChanges { plan: Some(plan.map(|p| PLANS[p].to_owned())), ..AdminChanges::default() };
                store.admin_update_user(None, id(user), changes, self.now).await.unwrap().unwrap();
            }
            Step::SetPlanLimit { plan, limit, how } => {
                let changes = PlanChanges { daily_limit: Some(limit), adapt: None };
                match how {
                    0 => drop(self.store.update_plan(None, PLANS[plan], changes, self.now).await.unwrap().unwrap()),
                    1 => drop(self.other.update_plan(None, PLANS[plan], changes, self.now).await.unwrap().unwrap()),
                    _ => {
                        self.raw
                            .execute("update plans set daily_limit = ?2 where name = ?1", params![PLANS[plan], limit])
                            .unwrap();
                    }
                }
            }
            Step::Boost { user, extra, today, elsewhere } => {
                let store = if elsewhere { &self.other } else { &self.store };
                let found = store.user(id(user)).await.unwrap().unwrap();
                let day = found.zone.window(self.now).day;
                let day = if today { day } else { day.tomorrow().unwrap() };
                let boost = NewBoost { extra, from: day, to: day, reason: String::new() };
                store.add_boost(None, id(user), boost, self.now).await.unwrap().unwrap();
            }
            Step::Unboost { user } => {
                if let Some(boost) = self.store.boosts(id(user)).await.unwrap().first() {
                    assert!(self.store.delete_boost(None, id(user), boost.id, self.now).await.unwrap());
                }
            }
            Step::Delete { user } => {
                if let Some(task) = self.tasks.get_mut(&id(user)).and_then(Vec::pop) {
                    assert!(self.store.delete_task(id(user), task).await.unwrap());
                }
            }
            Step::Wait { minutes } => self.now += SignedDuration::from_mins(minutes),
            Step::Restart => self.store = SqliteStore::open(&self.dir.path().join("db")).unwrap(),
        }
    }

    /// A create, checked against the database's counts read just before it.
    async fn create(&mut self, elsewhere: bool, id: Uuid, key: Option<u8>) {
        let store = if elsewhere { &self.other } else { &self.store };
        let user = store.user(id).await.unwrap().unwrap();
        let day = user.zone.window(self.now).day;
        let key = key.map(|k| IdempotencyKey { key: format!("k{k}"), fingerprint: [k; 32] });
        let since = remembered_since(self.now);
        let remembered =
            key.as_ref().is_some_and(|k| self.keys.get(&(id, k.key.clone())).is_some_and(|&at| at > since));
        let before = counts(&self.raw, id, day);

        let content = TaskContent::parse("a task".into()).unwrap();
        let created = store.create_task(&user, content, key.clone(), self.now).await.unwrap();

        let after = counts(&self.raw, id, day);
        let (limit, used) = before;
        match created {
            Created::Task(task, status) => {
                assert!(!remembered, "a repeated key created a second task");
                assert!(used < limit, "a create past the limit: {used} used of {limit}");
                assert_eq!((status.limit, status.used), (limit, used + 1), "the answer's counts");
                assert_eq!(after, (limit, used + 1), "the database's counts");
                if let Some(key) = key {
                    self.keys.insert((id, key.key), self.now);
                }
                self.tasks.entry(id).or_default().push(task.id);
            }
            Created::OverLimit(status) => {
                assert!(!remembered, "a repeated key was refused");
                assert!(used >= limit, "refused with {used} used of {limit}");
                assert_eq!((status.limit, status.used), before, "the answer's counts");
                assert_eq!(after, before);
            }
            Created::Replay(_) => {
                assert!(remembered, "a replay of a key never used");
                assert_eq!(after, before, "a replay uses no unit");
            }
            Created::KeyReused => panic!("each key always comes with the same request"),
        }
    }

    /// A batch create, checked as `create` is.
    async fn create_batch(&mut self, id: Uuid, size: u32, key: Option<u8>) {
        let user = self.store.user(id).await.unwrap().unwrap();
        let day = user.zone.window(self.now).day;
        // Keys of their own: a batch's key never names a single create's.
        let key = key.map(|k| IdempotencyKey { key: format!("batch{k}"), fingerprint: [k + 100; 32] });
        let since = remembered_since(self.now);
        let remembered =
            key.as_ref().is_some_and(|k| self.keys.get(&(id, k.key.clone())).is_some_and(|&at| at > since));
        let before = counts(&self.raw, id, day);

        let contents = (0..size).map(|i| TaskContent::parse(format!("task {i}")).unwrap()).collect();
        let created = self.store.create_tasks(&user, contents, key.clone(), self.now).await.unwrap();

        let after = counts(&self.raw, id, day);
        let (limit, used) = before;
        match created {
            CreatedBatch::Tasks(tasks, status) => {
                assert!(!remembered, "a repeated key created a second batch");
                assert!(used + size <= limit, "a batch of {size} past the limit: {used} used of {limit}");
                assert_eq!(tasks.len(), size as usize);
                assert_eq!((status.limit, status.used), (limit, used + size), "the answer's counts");
                assert_eq!(after, (limit, used + size), "the database's counts");
                if let Some(key) = key {
                    self.keys.insert((id, key.key), self.now);
                }
                self.tasks.entry(id).or_default().extend(tasks.iter().map(|t| t.id));
            }
            CreatedBatch::OverLimit(status) => {
                assert!(!remembered, "a repeated key was refused");
                assert!(used + size > limit, "a batch of {size} refused with {used} used of {limit}");
                assert_eq!((status.limit, status.used), before, "the answer's counts");
                assert_eq!(after, before);
            }
            CreatedBatch::Replay(_) => {
                assert!(remembered, "a replay of a key never used");
                assert_eq!(after, before, "a replay uses no unit");
            }
            CreatedBatch::KeyReused => panic!("each key always comes with the same request"),
        }
    }

    async fn set_limit(&self, elsewhere: bool, id: Uuid, limit: u32) {
        let store = if elsewhere { &self.other } else { &self.store };
        let changes = AdminChanges { daily_limit: Some(LimitChange::Own(limit)), ..AdminChanges::default() };
        store.admin_update_user(None, id, changes, self.now).await.unwrap().unwrap();
    }
}

/// What `store`'s memo holds that the database does not, seen where the next create
/// would rely on it: in a job of the writer that keeps the epoch, after its batch began.
async fn memo_disagreements(store: &SqliteStore) -> Vec<String> {
    let (memo, epoch) = (store.quota_memo.clone(), store.executor.epoch());
    store
        .executor
        .write_with(Mode::ONE_STATEMENT.keeping_epoch(), move |c| {
            let memo = memo.lock().unwrap_or_else(PoisonError::into_inner);
            if memo.epoch != epoch.get() {
                // Out of date, and known to be: the next create starts it over.
                return Ok(Vec::new());
            }
            let mut wrong = Vec::new();
            for (user, (day, in_force, used)) in &memo.users {
                let database = limit_and_use(c, *user, *day)?;
                if (&database.in_force, database.used) != (in_force, *used) {
                    wrong.push(format!("{user} on {day}: memo {:?}, database {database:?}", (in_force, used)));
                }
            }
            Ok(wrong)
        })
        .await
        .unwrap()
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    // Each case opens two stores and commits every step: fewer cases than the default.
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 48;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_quota_memo_always_holds_what_the_database_holds(steps in proptest::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut world = World::new().await;
            for (i, step) in steps.into_iter().enumerate() {
                let shown = format!("{step:?}");
                world.run(step).await;
                for (name, store) in [("store", &world.store), ("other", &world.other)] {
                    let wrong = memo_disagreements(store).await;
                    assert!(wrong.is_empty(), "after step {i} ({shown}), {name}'s memo: {wrong:?}");
                }
            }
        });
    }
}
