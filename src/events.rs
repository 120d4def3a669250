//! Live events of a user's tasks (`GET /v1/events`): what handlers publish after the
//! store has accepted a change, delivered to every open stream of that user on every
//! instance.
//!
//! Each instance fans events out to its own streams through one bounded
//! `tokio::sync::broadcast` per user with a stream open, so a slow client only lags
//! (and is told so) and never holds up a publisher or another client. With Redis, each
//! event also goes to one pub/sub channel through a bounded outbox (handlers never wait
//! on Redis; on a Redis Cluster the channel is a sharded one, SPUBLISH/SSUBSCRIBE), and one subscriber task per instance feeds the events of other instances
//! into the local fan-out, reconnecting by itself. Events are live only: nothing is kept,
//! so a client that reconnects re-reads what it shows (see the README).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::redis_link::{Messages, RedisLink};

/// Events a stream may fall behind by before it is told it lagged.
const PER_USER_BUFFER: usize = 64;
/// Streams one instance serves at most; past it, new ones are refused (503). Each user
/// also has a cap of their own (`QUOTASK_MAX_STREAMS_PER_USER`), so that one user cannot
/// hold them all.
pub const MAX_STREAMS: usize = 10_000;
/// Events waiting to go to Redis; past it they stay local (counted in metrics).
const OUTBOX: usize = 1024;
/// A stream ends when the token it was opened with stops being accepted, at most an
/// access token's lifetime after it opened; clients reconnect with a current token.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(crate::auth::token::ACCESS_TTL_SECS.unsigned_abs());
/// Pause before the subscriber reconnects, growing to `RECONNECT_MAX` while Redis stays away.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TaskCreated,
    TaskUpdated,
    TaskDeleted,
    /// An administrator changed the user's daily limit.
    QuotaChanged,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TaskCreated => "task.created",
            Kind::TaskUpdated => "task.updated",
            Kind::TaskDeleted => "task.deleted",
            Kind::QuotaChanged => "quota.changed",
        }
    }
}

/// One event, as streams send it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Unique across instances (UUIDv7); the stream's `id:`.
    pub id: Uuid,
    pub user_id: Uuid,
    /// `task.created`, ...; the stream's `event:`.
    pub kind: String,
    /// JSON text; the stream's `data:`.
    pub data: String,
}

/// An event between instances: the origin lets an instance skip its own.
#[derive(Serialize, Deserialize)]
struct Wire {
    origin: Uuid,
    event: Event,
}

/// What a stream reads next.
pub enum Item {
    Event(Arc<Event>),
    /// The stream fell this many events behind and they are gone.
    Lagged(u64),
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This instance serves `MAX_STREAMS` already.
    InstanceFull,
    /// The user holds as many streams here as one user may.
    UserFull { limit: usize },
}

/// The publisher and the fan-out; cheap to clone.
#[derive(Clone)]
pub struct Events(Arc<Hub>);

struct Hub {
    instance: Uuid,
    users: Mutex<HashMap<Uuid, broadcast::Sender<Arc<Event>>>>,
    streams: Arc<Semaphore>,
    /// Streams one user may hold open here.
    max_per_user: usize,
    /// True once the server stops, which ends every stream.
    closed: watch::Sender<bool>,
    outbox: Option<mpsc::Sender<Arc<Event>>>,
    redis: Option<RedisLink>,
    /// Whether the subscriber is receiving other instances' events.
    relaying: AtomicBool,
    relay_started: AtomicBool,
}

impl Events {
    /// A hub whose users may each hold `max_per_user` streams; with Redis, also the task
    /// that forwards this instance's events to it.
    pub fn new(redis: Option<RedisLink>, max_per_user: usize) -> Self {
        let instance = Uuid::now_v7();
        let outbox = redis.as_ref().map(|redis| {
            let (tx, rx) = mpsc::channel(OUTBOX);
            tokio::spawn(forward(redis.clone(), instance, rx));
            tx
        });
        Events(Arc::new(Hub {
            instance,
            users: Mutex::default(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            max_per_user: max_per_user.max(1),
            closed: watch::Sender::new(false),
            outbox,
            redis,
            relaying: AtomicBool::new(false),
            relay_started: AtomicBool::new(false),
        }))
    }

    /// Publishes what `data` makes (serialised once) as a `kind` event of `user_id`.
    /// Never waits: local streams get it at once; Redis gets it from the outbox.
    /// `data` is called only when someone can receive the event.
    pub fn publish<T: Serialize>(&self, user_id: Uuid, kind: Kind, data: impl FnOnce() -> T) {
        if self.0.outbox.is_none() && !self.0.listens(user_id) {
            // Nobody here streams this user's events and no other instance shares them.
            return;
        }
        let Some(event) = new_event(user_id, kind, data) else { return };
        self.0.deliver(event.clone());
        if let Some(outbox) = &self.0.outbox
            && outbox.try_send(event).is_err()
        {
            metrics::counter!(crate::metrics::EVENTS_NOT_SHARED).increment(1);
        }
    }

    /// `publish` for a process about to exit, the command line: waits until Redis has
    /// taken the event (or failed to, within its call timeout) instead of leaving it in
    /// the outbox. True if Redis took it. Without Redis it reaches nobody, since event
    /// streams are served by the server processes, not this one.
    pub async fn publish_and_wait<T: Serialize>(&self, user_id: Uuid, kind: Kind, data: impl FnOnce() -> T) -> bool {
        let Some(redis) = &self.0.redis else { return false };
        let Some(event) = new_event(user_id, kind, data) else { return false };
        self.0.deliver(event.clone());
        share(redis, self.0.instance, &event).await
    }

    /// Whether events reach other instances (through Redis).
    pub fn shared(&self) -> bool {
        self.0.redis.is_some()
    }

    /// A stream of `user_id`'s events from now on, for `lifetime` (at most
    /// `STREAM_LIFETIME`), unless this instance already serves `MAX_STREAMS` or this user
    /// holds as many streams here as one user may. A stream's place is free again once it
    /// is dropped.
    pub fn subscribe(&self, user_id: Uuid, lifetime: Duration) -> Result<Subscription, Refused> {
        let refused = |why: Refused| {
            let label = match why {
                Refused::InstanceFull => "instance_full",
                Refused::UserFull { .. } => "user_full",
            };
            metrics::counter!(crate::metrics::EVENT_STREAMS_REFUSED, "why" => label).increment(1);
            why
        };
        let permit = self.0.streams.clone().try_acquire_owned().map_err(|_| refused(Refused::InstanceFull))?;
        let rx = {
            // The user's streams are its sender's receivers; counted and joined under one
            // lock, so two streams opened at once cannot both take the last place.
            let mut users = self.0.users.lock().unwrap_or_else(|e| e.into_inner());
            let tx = users.entry(user_id).or_insert_with(|| broadcast::channel(PER_USER_BUFFER).0);
            if tx.receiver_count() >= self.0.max_per_user {
                return Err(refused(Refused::UserFull { limit: self.0.max_per_user }));
            }
            tx.subscribe()
        };
        metrics::gauge!(crate::metrics::EVENT_STREAMS).increment(1);
        Ok(Subscription {
            hub: self.0.clone(),
            user_id,
            rx: Some(rx),
            closed: self.0.closed.subscribe(),
            deadline: Instant::now() + lifetime.min(STREAM_LIFETIME),
            _permit: permit,
        })
    }

    /// Starts the subscriber that brings other instances' events (once; without Redis,
    /// nothing to do).
    pub fn start_relay(&self) {
        let Some(redis) = &self.0.redis else { return };
        if self.0.relay_started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(relay(Arc::downgrade(&self.0), redis.clone(), self.0.closed.subscribe()));
    }

    /// Whether other instances' events reach this one now (always false without Redis).
    pub fn relaying(&self) -> bool {
        self.0.relaying.load(Ordering::Acquire)
    }

    /// Ends every stream, and the subscriber: the server is stopping.
    pub fn close(&self) {
        self.0.closed.send_replace(true);
    }
}

impl Hub {
    /// Whether a stream of `user_id`'s events is open here.
    fn listens(&self, user_id: Uuid) -> bool {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).get(&user_id).is_some_and(|tx| tx.receiver_count() > 0)
    }

    fn deliver(&self, event: Arc<Event>) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = users.get(&event.user_id) {
            // An error means no stream is open; the event is simply not wanted here.
            let _ = tx.send(event);
        }
    }

    /// An event from Redis: delivered unless this instance published it.
    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<Wire>(payload) {
            Ok(wire) if wire.origin != self.instance => self.deliver(Arc::new(wire.event)),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "an event from Redis could not be read"),
        }
    }
}

/// One open stream. Dropping it (the client went away) frees its place.
pub struct Subscription {
    hub: Arc<Hub>,
    user_id: Uuid,
    rx: Option<broadcast::Receiver<Arc<Event>>>,
    closed: watch::Receiver<bool>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Subscription {
    /// The next event, or `None` once the stream should end (server stopping, lifetime
    /// over).
    pub async fn next(&mut self) -> Option<Item> {
        let Subscription { rx, closed, deadline, .. } = self;
        let rx = rx.as_mut()?;
        tokio::select! {
            received = rx.recv() => match received {
                Ok(event) => Some(Item::Event(event)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!(crate::metrics::EVENTS_LAGGED).increment(1);
                    Some(Item::Lagged(missed))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = closed.wait_for(|closed| *closed) => None,
            _ = tokio::time::sleep_until(*deadline) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut users = self.hub.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.get(&self.user_id).is_some_and(|tx| tx.receiver_count() == 0) {
            users.remove(&self.user_id);
        }
        metrics::gauge!(crate::metrics::EVENT_STREAMS).decrement(1);
    }
}

/// Sends this instance's events to Redis, in order. While Redis is unavailable they
/// stay local (the call fails at once).
async fn forward(redis: RedisLink, instance: Uuid, mut outbox: mpsc::Receiver<Arc<Event>>) {
    while let Some(event) = outbox.recv().await {
        share(&redis, instance, &event).await;
    }
}

/// A new event of `user_id`, its data serialised once (`None`, logged, if it cannot be).
fn new_event<T: Serialize>(user_id: Uuid, kind: Kind, data: impl FnOnce() -> T) -> Option<Arc<Event>> {
    let data = match serde_json::to_string(&data()) {
        Ok(data) => data,
        Err(e) => {
            tracing::error!(error = %e, "an event could not be serialised");
            return None;
        }
    };
    metrics::counter!(crate::metrics::EVENTS_PUBLISHED, "kind" => kind.as_str()).increment(1);
    Some(Arc::new(Event { id: Uuid::now_v7(), user_id, kind: kind.as_str().to_owned(), data }))
}

/// Publishes `event` to the other instances through Redis; true if Redis took it.
async fn share(redis: &RedisLink, instance: Uuid, event: &Event) -> bool {
    let Ok(payload) = serde_json::to_vec(&Wire { origin: instance, event: event.clone() }) else { return false };
    let sent = redis.publish(redis.key("events"), payload).await;
    if sent.is_err() {
        metrics::counter!(crate::metrics::EVENTS_NOT_SHARED).increment(1);
    }
    sent.is_ok()
}

/// Subscribes to the events channel and feeds what other instances publish into the
/// local fan-out; reconnects whenever the subscription is lost, until the server stops.
async fn relay(hub: Weak<Hub>, redis: RedisLink, mut closed: watch::Receiver<bool>) {
    let channel = redis.key("events");
    let mut pause = RECONNECT_MIN;
    let mut lost_logged = false;
    while !*closed.borrow() {
        let subscribed = redis.subscribe(&channel).await;
        if let Ok(messages) = subscribed {
            if lost_logged {
                tracing::info!("receiving other instances' events again");
            }
            pause = RECONNECT_MIN;
            lost_logged = false;
            if !relay_until_lost(&hub, messages, &mut closed).await {
                return;
            }
        }
        if !lost_logged {
            tracing::warn!("not subscribed to other instances' events (Redis unavailable); retrying");
            lost_logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = closed.changed() => return,
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

/// Delivers messages until the subscription is lost (true: reconnect) or the server
/// stops (false).
async fn relay_until_lost(hub: &Weak<Hub>, mut messages: Messages, closed: &mut watch::Receiver<bool>) -> bool {
    let set_relaying = |on: bool| hub.upgrade().map(|live| live.relaying.store(on, Ordering::Release)).is_some();
    if !set_relaying(true) {
        return false;
    }
    loop {
        tokio::select! {
            message = messages.next() => match (message, hub.upgrade()) {
                (Some(message), Some(live)) => live.receive(&message),
                (None, Some(_)) => return set_relaying(false),
                (_, None) => return false,
            },
            _ = closed.changed() => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_now(subscription: &mut Subscription) -> Option<Item> {
        tokio::time::timeout(Duration::from_millis(100), subscription.next()).await.ok().flatten()
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_how_much_it_missed_then_goes_on() {
        let events = Events::new(None, 5);
        let user = Uuid::now_v7();
        let mut slow = events.subscribe(user, STREAM_LIFETIME).unwrap();

        for i in 0..PER_USER_BUFFER + 10 {
            events.publish(user, Kind::TaskUpdated, || i);
        }

        assert!(matches!(next_now(&mut slow).await, Some(Item::Lagged(10))));
        match next_now(&mut slow).await {
            Some(Item::Event(e)) => assert_eq!(e.data, "10"),
            _ => panic!("the oldest event still buffered comes next"),
        }
    }

    #[tokio::test]
    async fn streams_get_only_their_users_events_and_a_closed_stream_frees_its_place() {
        let events = Events::new(None, 5);
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut ann_stream = events.subscribe(ann, STREAM_LIFETIME).unwrap();
        let bob_stream = events.subscribe(bob, STREAM_LIFETIME).unwrap();

        events.publish(bob, Kind::TaskCreated, || "bob's");
        events.publish(ann, Kind::TaskDeleted, || "ann's");

        match next_now(&mut ann_stream).await {
            Some(Item::Event(e)) => assert_eq!((e.kind.as_str(), e.data.as_str()), ("task.deleted", "\"ann's\"")),
            _ => panic!("ann's event"),
        }
        assert!(next_now(&mut ann_stream).await.is_none());
        drop(bob_stream);
        assert!(!events.0.users.lock().unwrap().contains_key(&bob), "no sender kept for nobody");
    }

    #[tokio::test]
    async fn a_user_holds_at_most_their_share_of_streams_and_a_closed_one_frees_a_place() {
        let events = Events::new(None, 2);
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = events.subscribe(ann, STREAM_LIFETIME).unwrap();
        let _second = events.subscribe(ann, STREAM_LIFETIME).unwrap();

        assert_eq!(events.subscribe(ann, STREAM_LIFETIME).err(), Some(Refused::UserFull { limit: 2 }));
        assert!(events.subscribe(bob, STREAM_LIFETIME).is_ok(), "another user's streams are not counted");
        drop(first);
        assert!(events.subscribe(ann, STREAM_LIFETIME).is_ok());
    }

    #[tokio::test]
    async fn closing_ends_every_stream() {
        let events = Events::new(None, 5);
        let mut stream = events.subscribe(Uuid::now_v7(), STREAM_LIFETIME).unwrap();

        events.close();

        assert!(tokio::time::timeout(Duration::from_secs(1), stream.next()).await.unwrap().is_none());
    }
}
