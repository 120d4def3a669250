//! Use cases: one function per thing a client or an operator can do, each calling the
//! store, telling event streams, and counting in metrics. The HTTP handlers (both `/v1`
//! and the seed's routes) and the command line call these and nothing below them.

pub mod accounts;
pub mod admin;
pub mod tasks;
pub mod tokens;

use std::sync::Arc;

use jiff::Timestamp;

use crate::domain::{FieldError, QuotaStatus};
use crate::service::accounts::Accounts;
use crate::store::{Store, StoreError};

pub use admin::AdminService;
pub use tasks::TaskService;
pub use tokens::{Caller, TokenService};

/// Why a use case of tasks or administration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// No such task or user, or one the caller may not see.
    #[error("not found")]
    NotFound,
    /// The request cannot be done now, for the reason given (shown to the client).
    #[error("{0}")]
    Conflict(&'static str),
    /// Fewer units remain today than `requested`: the quota as it stood at `now`.
    #[error("quota exceeded")]
    QuotaExceeded { status: Box<QuotaStatus>, now: Timestamp, requested: u32 },
    /// The database cannot be reached or is overloaded; worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What a request with an `Idempotency-Key` still being worked on is answered with.
pub(crate) const KEY_IN_FLIGHT: &str = "a request with this Idempotency-Key is still being processed";

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Error::Conflict("the username is taken"),
            StoreError::KeyInFlight => Error::Conflict(KEY_IN_FLIGHT),
            StoreError::Unavailable(why) => Error::Unavailable(why),
            StoreError::Internal(e) => Error::Internal(e),
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::Invalid(vec![e])
    }
}

/// Every use case, built once at start-up (`app`) and shared by the handlers and the
/// command line.
#[derive(Clone)]
pub struct Services {
    pub accounts: Arc<Accounts>,
    pub tasks: TaskService,
    pub admin: AdminService,
    /// Personal access tokens, and the check of every request's bearer token.
    pub tokens: TokenService,
    store: Arc<dyn Store>,
}

impl Services {
    pub fn new(store: Arc<dyn Store>, accounts: Accounts, events: crate::events::Events) -> Self {
        let accounts = Arc::new(accounts);
        let admin = AdminService::new(store.clone(), events.clone(), accounts.default_limit());
        Services {
            tokens: TokenService::new(store.clone(), accounts.clone()),
            accounts,
            tasks: TaskService::new(store.clone(), events),
            admin,
            store,
        }
    }

    /// Whether the database answers, for readiness.
    pub async fn database_ready(&self) -> Result<(), Error> {
        Ok(self.store.ping().await?)
    }
}
