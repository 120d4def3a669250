//! What every handler can reach: the use cases, the clock, and what only HTTP needs
//! (whose `X-Forwarded-For` to believe, whether a stop has begun).

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::client_ip::TrustedProxies;
use crate::clock::Clock;
use crate::events::Events;
use crate::service::Services;

/// The handlers' state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub services: Services,
    /// Read once per request: the day, the reset and the headers all come from it.
    pub clock: Arc<dyn Clock>,
    /// Live events, for `/v1/events` to subscribe to (the services publish).
    pub events: Events,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Set when a stop has begun, so `/readyz` sends load elsewhere.
    pub draining: AtomicBool,
}

impl AppState {
    pub fn new(services: Services, clock: Arc<dyn Clock>, events: Events, trusted_proxies: TrustedProxies) -> Self {
        AppState(Arc::new(Shared { services, clock, events, trusted_proxies, draining: AtomicBool::new(false) }))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
