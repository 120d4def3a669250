//! Webhooks: the signed-in user's webhooks (create, list, delete, delivery log), and
//! the delivery of the outbox: claim due events with a lease, check the destination
//! again after DNS, POST the signed event to the address checked, record the attempt.
//! The rules (events, refused addresses, signature, retry schedule) are in
//! `domain::webhooks`; this module does their I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use jiff::Timestamp;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::Error;
use crate::clock::Clock;
use crate::domain::FieldError;
use crate::domain::webhooks::{
    self, CONNECT_TIMEOUT, DELIVERY_TIMEOUT, Delivery, DueEvent, EventTypes, Host, LEASE, MAX_PER_USER, Next,
    SECRET_BYTES, Webhook, WebhookUrl,
};
use crate::store::{AttemptRecord, NewWebhook, Store};

/// Deliveries in flight at once on one instance: a slow receiver holds one of them,
/// never the others.
const CONCURRENCY: usize = 32;
/// Events of the delivery log shown.
const LOG_EVENTS: u32 = 50;
/// How often an idle worker looks for due events.
const POLL: Duration = Duration::from_millis(500);
/// A name's lookup, at creation and before each attempt.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

fn duration(d: jiff::SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Where a destination may be reached: its addresses after DNS, each checked against
/// `domain::webhooks::is_refused` unless private destinations are allowed. Any refused
/// address refuses the destination (a name that resolves to a public and a private
/// address could be made to use either).
async fn destination(url: &WebhookUrl, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let port = url.port();
    let addrs: Vec<SocketAddr> = match url.host() {
        Host::Ip(ip) => vec![SocketAddr::new(ip, port)],
        Host::Name(name) => {
            match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((name.as_str(), port))).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(_)) | Err(_) => return Err(format!("the host {name} does not resolve")),
            }
        }
    };
    if addrs.is_empty() {
        return Err("the host does not resolve".into());
    }
    if !allow_private && let Some(refused) = addrs.iter().find(|a| webhooks::is_refused(a.ip())) {
        return Err(format!(
            "the destination {} is a loopback, private, link-local or otherwise internal address",
            refused.ip()
        ));
    }
    Ok(addrs)
}

/// The webhooks' use cases.
#[derive(Clone)]
pub struct WebhookService {
    store: Arc<dyn Store>,
    allow_private: bool,
}

impl WebhookService {
    pub fn new(store: Arc<dyn Store>, allow_private: bool) -> Self {
        WebhookService { store, allow_private }
    }

    /// Makes a webhook of `user_id` for `events` at `url`, which must not point inside
    /// the network (checked after DNS). The answer holds the secret, shown this once.
    pub async fn create<S: AsRef<str>>(
        &self,
        user_id: Uuid,
        url: &str,
        events: &[S],
        now: Timestamp,
    ) -> Result<Webhook, Error> {
        let (url, events) = match (WebhookUrl::parse(url), EventTypes::parse(events)) {
            (Ok(u), Ok(e)) => (u, e),
            (u, e) => return Err(Error::Invalid([u.err(), e.err()].into_iter().flatten().collect())),
        };
        destination(&url, self.allow_private).await.map_err(|why| FieldError::new("url", why))?;
        let secret = webhooks::new_secret(&rand::random::<[u8; SECRET_BYTES]>());
        let new = NewWebhook { url: url.as_str().to_owned(), events, secret };
        match self.store.create_webhook(user_id, new, MAX_PER_USER, now).await? {
            Some(hook) => Ok(hook),
            None => Err(Error::Conflict("a user holds at most 10 webhooks; delete one first")),
        }
    }

    /// The user's webhooks, oldest first (their secrets are not shown again).
    pub async fn list(&self, user_id: Uuid) -> Result<Vec<Webhook>, Error> {
        Ok(self.store.webhooks(user_id).await?)
    }

    /// Deletes the user's webhook `id`; nothing more is sent to it.
    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), Error> {
        if self.store.delete_webhook(user_id, id).await? { Ok(()) } else { Err(Error::NotFound) }
    }

    /// The latest events of the user's webhook `id`, newest first, with their attempts.
    pub async fn deliveries(&self, user_id: Uuid, id: Uuid) -> Result<Vec<Delivery>, Error> {
        self.store.deliveries(user_id, id, LOG_EVENTS).await?.ok_or(Error::NotFound)
    }
}

/// The delivery worker: every instance runs one; the lease on each claimed event makes
/// each event one instance's at a time.
#[derive(Clone)]
pub struct Deliveries {
    store: Arc<dyn Store>,
    allow_private: bool,
    slots: Arc<Semaphore>,
}

impl Deliveries {
    pub fn new(store: Arc<dyn Store>, allow_private: bool) -> Self {
        Deliveries { store, allow_private, slots: Arc::new(Semaphore::new(CONCURRENCY)) }
    }

    /// Claims the events due at `now` (at most `CONCURRENCY`) and delivers them,
    /// concurrently, waiting for every attempt to be recorded; how many it attempted.
    /// Tests call this with a clock they move; the worker (`spawn`) does not wait.
    pub async fn run_once(&self, now: Timestamp) -> Result<usize, Error> {
        let due = self.claim(now, CONCURRENCY).await?;
        let attempted = due.len();
        futures_util::stream::iter(due).for_each_concurrent(CONCURRENCY, |event| self.deliver(event, now)).await;
        Ok(attempted)
    }

    async fn claim(&self, now: Timestamp, limit: usize) -> Result<Vec<DueEvent>, Error> {
        let lease_until = now.checked_add(LEASE).unwrap_or(now);
        Ok(self.store.claim_due_events(now, lease_until, u32::try_from(limit).unwrap_or(u32::MAX)).await?)
    }

    /// Delivers due events until the runtime ends: as many at once as there are free
    /// slots, each in a task of its own, so a slow receiver holds up no other.
    pub fn spawn(self, clock: Arc<dyn Clock>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let free = self.slots.available_permits();
                let claimed = match free {
                    0 => Ok(Vec::new()),
                    free => self.claim(clock.now(), free).await,
                };
                let claimed = claimed.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "webhook deliveries: cannot claim due events");
                    Vec::new()
                });
                let busy = !claimed.is_empty();
                for event in claimed {
                    let Ok(slot) = self.slots.clone().acquire_owned().await else { return };
                    let (this, now) = (self.clone(), clock.now());
                    tokio::spawn(async move {
                        this.deliver(event, now).await;
                        drop(slot);
                    });
                }
                if !busy {
                    tokio::time::sleep(POLL).await;
                } else if self.slots.available_permits() == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    }

    /// One attempt: send, then record it and what follows (delivered, retry, give up).
    async fn deliver(&self, event: DueEvent, now: Timestamp) {
        let attempt = event.attempts + 1;
        let (status, error) = match self.send(&event, now).await {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("the receiver answered {status}"))),
            Err(why) => (None, Some(why)),
        };
        let next = webhooks::next_after(attempt, error.is_none(), now);
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "retry",
            Next::GiveUp => "given_up",
        };
        metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
        if next == Next::GiveUp {
            tracing::warn!(webhook = %event.webhook_id, event = %event.event_id, "webhook disabled: delivery failed for the whole retry schedule");
        }
        let record = AttemptRecord {
            event_id: event.event_id,
            webhook_id: event.webhook_id,
            attempt,
            at: now,
            status,
            error,
            next,
        };
        if let Err(e) = self.store.record_attempt(record).await {
            // The lease runs out and the event is attempted again: at least once.
            tracing::warn!(event = %event.event_id, error = %e, "could not record a webhook attempt");
        }
    }

    /// POSTs the event to the address its URL resolves to now, once checked; the
    /// receiver's status, or why there was none.
    async fn send(&self, event: &DueEvent, now: Timestamp) -> Result<u16, String> {
        let url = WebhookUrl::parse(&event.url).map_err(|e| e.message)?;
        let addrs = destination(&url, self.allow_private).await?;
        let key = webhooks::secret_key(&event.secret).ok_or("the webhook's secret is unreadable")?;
        let mut client = reqwest::Client::builder()
            .connect_timeout(duration(CONNECT_TIMEOUT))
            .timeout(duration(DELIVERY_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent("quotask-webhooks");
        if let Host::Name(name) = url.host() {
            // Connect to the address just checked, not to what a second lookup (made
            // by the client) could answer.
            client = client.resolve(&name, addrs[0]);
        }
        let client = client.build().map_err(|e| format!("cannot build the client: {e}"))?;
        let body = webhooks::body(&event.event_type, event.occurred_at, &event.data);
        let id = event.event_id.to_string();
        let timestamp = now.as_second();
        let signature = webhooks::signature(&key, &id, timestamp, &body);
        let response = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "the receiver did not answer in time".to_owned()
                } else if e.is_connect() {
                    "cannot connect to the receiver".to_owned()
                } else {
                    "the request failed".to_owned()
                }
            })?;
        Ok(response.status().as_u16())
    }
}
