//! Accounts: sign-up, sign-in, refresh, sign-out and the signed-in user's settings.
//! The HTTP layer (both `/v1` and the seed's routes) calls these and nothing else.

use std::net::IpAddr;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::auth::password::{self, HashError, Hasher};
use crate::auth::throttle::{Counted, Throttle};
use crate::auth::token::{self, Access, Tokens};
use crate::domain::{DayQuota, FieldError, Password, Role, TimeZoneName, User, UserZone, Username};
use crate::redis_link::RedisLink;
use crate::store::{NewUser, PasswordChange, Refreshed, Store, StoreError, UserChanges};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("username taken")]
    UsernameTaken,
    /// Wrong password, unknown user, or a bad, spent or revoked token: one answer.
    #[error("invalid credentials")]
    Unauthorized,
    #[error("too many failed sign-ins")]
    Throttled { retry_after: u64 },
    #[error("too many sign-ups from this address")]
    SignUpThrottled { retry_after: u64 },
    /// Too many passwords wait to be hashed; nothing was done.
    #[error("the password hashing queue is full")]
    Overloaded { retry_after: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy { retry_after } => AuthError::Overloaded { retry_after },
            HashError::Abandoned => AuthError::Internal(anyhow::anyhow!("the password check was abandoned")),
            HashError::Failed(e) => AuthError::Internal(e),
        }
    }
}

/// Who a valid bearer token speaks for, and until when the token is accepted.
pub struct Bearer {
    pub user: User,
    pub session_id: Uuid,
    pub accepted_until: Timestamp,
}

/// What a client gets on sign-in and refresh.
pub struct Session {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
}

/// The signed-in user's own changes (`PATCH /v1/me`).
pub struct OwnChanges {
    pub timezone: Option<String>,
    pub password: Option<String>,
    /// Required with `password`: a stolen access token alone must not take the account.
    pub current_password: Option<String>,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    hasher: Hasher,
    tokens: Tokens,
    /// Failed sign-ins per account and client address. Shared with the checks it
    /// counts, which outlive a request that goes away.
    throttle: Arc<Throttle>,
    /// Sign-ups per client address.
    signups: Throttle,
    default_limit: u32,
    default_zone: TimeZoneName,
}

impl Accounts {
    /// The limit a new user gets (`QUOTASK_DEFAULT_DAILY_LIMIT`).
    pub fn default_limit(&self) -> u32 {
        self.default_limit
    }

    pub fn new(
        store: Arc<dyn Store>,
        secret: &[u8],
        max_failures_per_hour: u32,
        signups_per_hour: u32,
        redis: Option<RedisLink>,
        default_limit: u32,
        default_zone: TimeZoneName,
    ) -> Self {
        Self {
            store,
            hasher: Hasher::default(),
            tokens: Tokens::new(secret),
            throttle: Arc::new(Throttle::new("signin", max_failures_per_hour, redis.clone())),
            signups: Throttle::new("signup", signups_per_hour, redis),
            default_limit,
            default_zone,
        }
    }

    /// Password hashes computed so far (not those refused or skipped), for diagnostics.
    pub fn hashes_computed(&self) -> u64 {
        self.hasher.computed()
    }

    /// Creates a user. From a client address (`client`), sign-ups are throttled per
    /// address; every one that gets as far as the name check counts, a taken name too,
    /// which also limits how fast one address can probe for names. A taken name costs
    /// no hash; the unique index still decides between two sign-ups racing for a name.
    pub async fn sign_up(
        &self,
        username: &str,
        password: String,
        timezone: Option<&str>,
        role: Role,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<User, AuthError> {
        let username = Username::parse(username);
        let password = Password::parse(password);
        let zone = timezone.map_or_else(|| Ok(self.default_zone.clone()), TimeZoneName::parse);
        let (username, password, zone) = match (username, password, zone) {
            (Ok(u), Ok(p), Ok(z)) => (u, p, z),
            (u, p, z) => {
                let errors = [u.err(), p.err(), z.err()].into_iter().flatten().collect();
                return Err(AuthError::Invalid(errors));
            }
        };
        let counted = match client {
            Some(ip) => Some(self.signups.acquire(vec![format!("ip:{ip}")], now).await.map_err(|retry_after| {
                metrics::counter!(crate::metrics::SIGNUP_THROTTLED).increment(1);
                AuthError::SignUpThrottled { retry_after }
            })?),
            None => None,
        };
        if self.store.name_taken(&username).await? {
            return Err(AuthError::UsernameTaken);
        }
        let password_hash = match self.hasher.hash(&password).await {
            Ok(hash) => hash,
            Err(e) => {
                // Refused before any work: the client is told to come back, uncounted.
                if let (HashError::Busy { .. }, Some(counted)) = (&e, counted) {
                    self.signups.refund(counted).await;
                }
                return Err(e.into());
            }
        };
        let user = NewUser {
            username,
            password_hash,
            role,
            daily_limit: self.default_limit,
            zone: UserZone { current: zone, pending: None },
        };
        match self.store.create_user(user, now).await {
            Err(StoreError::UsernameTaken) => Err(AuthError::UsernameTaken),
            other => Ok(other?),
        }
    }

    /// Checks the password (throttled per account and per client) and opens a session.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Session, AuthError> {
        let username = Username::canonical(username).ok();
        let counted = self.count_sign_in(username.as_ref(), client, now).await?;
        let user = self.check_password(username, password, counted).await?.ok_or(AuthError::Unauthorized)?;
        let (refresh_token, refresh_hash) = token::new_refresh_token();
        let session_id = self.store.create_session(user.id, refresh_hash, now, refresh_expiry(now)).await?;
        self.session(Access { user_id: user.id, session_id }, refresh_token, now)
    }

    /// Spends `refresh_token` for a new pair; a token spent before revokes its family.
    pub async fn refresh(&self, refresh_token: &str, now: Timestamp) -> Result<Session, AuthError> {
        let (new_token, new_hash) = token::new_refresh_token();
        let old_hash = token::hash_refresh_token(refresh_token);
        match self.store.rotate_refresh(old_hash, new_hash, now, refresh_expiry(now)).await? {
            Refreshed::Rotated { user_id, session_id } => self.session(Access { user_id, session_id }, new_token, now),
            Refreshed::Reused => {
                tracing::warn!("a spent refresh token was reused; its session is revoked");
                Err(AuthError::Unauthorized)
            }
            Refreshed::Invalid => Err(AuthError::Unauthorized),
        }
    }

    pub async fn sign_out(&self, session_id: Uuid, now: Timestamp) -> Result<(), AuthError> {
        Ok(self.store.revoke_session(session_id, now).await?)
    }

    /// Whether `session_id` of `user_id` is still signed in (not signed out, not revoked
    /// for a reused refresh token), for what outlives its request: an event stream.
    pub async fn still_signed_in(&self, session_id: Uuid, user_id: Uuid) -> Result<bool, AuthError> {
        Ok(self.store.session_user(session_id, user_id).await?.is_some())
    }

    /// The user behind a bearer token, if it is valid and its session is live.
    pub async fn authenticate(&self, bearer: &str, now: Timestamp) -> Result<Bearer, AuthError> {
        let (access, accepted_until) = self.tokens.verify(bearer, now).ok_or(AuthError::Unauthorized)?;
        let user = self.store.session_user(access.session_id, access.user_id).await?.ok_or(AuthError::Unauthorized)?;
        Ok(Bearer { user, session_id: access.session_id, accepted_until })
    }

    /// `authenticate`, and the user's quota on the day of `now`, read together.
    pub async fn authenticate_with_usage(&self, bearer: &str, now: Timestamp) -> Result<(Bearer, DayQuota), AuthError> {
        let (access, accepted_until) = self.tokens.verify(bearer, now).ok_or(AuthError::Unauthorized)?;
        let (user, used) =
            self.store.session_usage(access.session_id, access.user_id, now).await?.ok_or(AuthError::Unauthorized)?;
        Ok((Bearer { user, session_id: access.session_id, accepted_until }, used))
    }

    /// Counts a credential that matched nothing (a wrong personal access token),
    /// presented from `client`, as a failed sign-in of that address; refused with the
    /// seconds to wait once the address is past its limit. It stays counted: unlike a
    /// sign-in, there is no right answer to refund it for.
    pub async fn count_failed_credential(&self, client: Option<IpAddr>, now: Timestamp) -> Result<(), AuthError> {
        let Some(ip) = client else { return Ok(()) };
        match self.throttle.acquire(vec![format!("ip:{ip}")], now).await {
            Ok(counted) => {
                metrics::counter!(crate::metrics::SIGNIN_FAILURES).increment(1);
                drop(counted);
                Ok(())
            }
            Err(retry_after) => {
                metrics::counter!(crate::metrics::SIGNIN_THROTTLED).increment(1);
                Err(AuthError::Throttled { retry_after })
            }
        }
    }

    /// Applies the signed-in user's own changes: a new zone (effective at the old
    /// zone's next midnight) and a new password. A new password needs the current one,
    /// checked and throttled as a sign-in of the account from `client`; with it, every
    /// other session of the user ends (their access and refresh tokens stop working at
    /// once), in the same transaction. `session_id`, the one making the change, lives on.
    pub async fn update_me(
        &self,
        user: &User,
        session_id: Uuid,
        changes: OwnChanges,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<User, AuthError> {
        let zone = changes.timezone.as_deref().map(TimeZoneName::parse).transpose();
        let password = changes.password.map(Password::parse).transpose();
        let current = match (&password, changes.current_password) {
            (Ok(Some(_)), None) => Err(FieldError::new("current_password", "is required to change the password")),
            (_, current) => Ok(current),
        };
        let (zone, password, current) = match (zone, password, current) {
            (Ok(z), Ok(p), Ok(c)) => (z, p, c),
            (z, p, c) => return Err(AuthError::Invalid([z.err(), p.err(), c.err()].into_iter().flatten().collect())),
        };
        let password = match (password, current) {
            (Some(new), Some(current)) => {
                let username =
                    Username::parse(&user.username).map_err(|e| anyhow::anyhow!("a stored username: {}", e.message))?;
                let counted = self.count_sign_in(Some(&username), client, now).await?;
                match self.check_password(Some(username), &current, counted).await? {
                    Some(checked) if checked.id == user.id => {}
                    _ => return Err(AuthError::Unauthorized),
                }
                let hash = self.hasher.hash(&new).await?;
                Some(PasswordChange { hash, keep_session: session_id, now })
            }
            _ => None,
        };
        let changes = UserChanges { zone: zone.map(|z| user.zone.change_to(z, now)), password };
        self.store.update_user(user.id, changes).await?.ok_or(AuthError::Unauthorized)
    }

    /// Counts a password check against the account and the client address, or refuses
    /// it with the seconds to wait.
    async fn count_sign_in(
        &self,
        username: Option<&Username>,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Counted, AuthError> {
        let account_key = format!("user:{}", username.map_or(username_fallback(), Username::as_str));
        let keys = std::iter::once(account_key).chain(client.map(|ip| format!("ip:{ip}"))).collect();
        self.throttle.acquire(keys, now).await.map_err(|retry_after| {
            metrics::counter!(crate::metrics::SIGNIN_THROTTLED).increment(1);
            AuthError::Throttled { retry_after }
        })
    }

    /// The user named `username` if `password` is theirs, counted in `counted`: refunded
    /// unless it was a failure. Once counted, the check runs to its end in a task of its
    /// own even if the caller goes away (a timeout while hashes queue, say), so that a
    /// right password is refunded rather than left counted. A check whose caller went
    /// away before its hash started is not made, and refunded too; so is one refused
    /// because too many hashes wait.
    async fn check_password(
        &self,
        username: Option<Username>,
        password: &str,
        counted: Counted,
    ) -> Result<Option<User>, AuthError> {
        let (_waiting, requester) = password::requester();
        let check = tokio::spawn({
            let (store, hasher, throttle) = (Arc::clone(&self.store), self.hasher.clone(), Arc::clone(&self.throttle));
            let password = password.to_owned();
            async move {
                let found = match &username {
                    Some(name) => store.user_credentials(name).await?,
                    None => None,
                };
                let (user, hash) = found.map_or((None, None), |(u, h)| (Some(u), Some(h)));
                match hasher.verify(&password, hash, &requester).await {
                    Ok(true) => {
                        throttle.refund(counted).await;
                        Ok(user)
                    }
                    Ok(false) => {
                        metrics::counter!(crate::metrics::SIGNIN_FAILURES).increment(1);
                        drop(counted);
                        Ok(None)
                    }
                    Err(e @ (HashError::Busy { .. } | HashError::Abandoned)) => {
                        throttle.refund(counted).await;
                        Err(e.into())
                    }
                    Err(e) => Err::<_, AuthError>(e.into()),
                }
            }
        });
        check.await.map_err(|e| anyhow::anyhow!("the password check stopped: {e}"))?
    }

    fn session(&self, access: Access, refresh_token: String, now: Timestamp) -> Result<Session, AuthError> {
        Ok(Session { access_token: self.tokens.issue(access, now)?, expires_in: token::ACCESS_TTL_SECS, refresh_token })
    }
}

/// Names that cannot be usernames still get an account key, so throttling holds.
fn username_fallback() -> &'static str {
    "(invalid)"
}

fn refresh_expiry(now: Timestamp) -> Timestamp {
    now.checked_add(SignedDuration::from_secs(token::REFRESH_TTL_SECS)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Backend;

    #[tokio::test]
    async fn a_right_password_abandoned_mid_check_does_not_count_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::app::open_store(&Backend::Sqlite(dir.path().join("t.db")), 1).await.unwrap();
        let utc = TimeZoneName::parse("UTC").unwrap();
        let accounts = Accounts::new(store, &[7; 32], 3, 20, None, 10, utc);
        let now = Timestamp::now();
        accounts.sign_up("alice", "a long enough password".into(), None, Role::User, None, now).await.unwrap();
        for _ in 0..3 {
            // Polled once, the attempt is counted and its check begun; then dropped, as
            // when its client goes away.
            let mut attempt = std::pin::pin!(accounts.sign_in("alice", "a long enough password", None, now));
            assert!(futures::poll!(attempt.as_mut()).is_pending());
        }
        // Three failures would throttle the account for an hour; three refunds leave it
        // free once the abandoned checks are done.
        for _ in 0..100 {
            match accounts.sign_in("alice", "a long enough password", None, now).await {
                Ok(_) => return,
                Err(AuthError::Throttled { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("still throttled 10 s after three sign-ins with the right password were abandoned");
    }

    async fn accounts(failures_per_hour: u32, signups_per_hour: u32) -> (Accounts, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::app::open_store(&Backend::Sqlite(dir.path().join("t.db")), 1).await.unwrap();
        let utc = TimeZoneName::parse("UTC").unwrap();
        let accounts = Accounts::new(store, &[7; 32], failures_per_hour, signups_per_hour, None, 10, utc);
        // One hashing thread with room for one waiting hash.
        (Accounts { hasher: Hasher::new(1, 1), ..accounts }, dir)
    }

    #[tokio::test]
    async fn a_sign_in_refused_because_too_many_hashes_wait_is_not_counted() {
        let (accounts, _dir) = accounts(1, 20).await;
        let now = Timestamp::now();
        accounts.sign_up("alice", "a long enough password".into(), None, Role::User, None, now).await.unwrap();
        let release = accounts.hasher.occupy().await;
        let waiting = Password::parse("a waiting hash".into()).unwrap();
        let mut queued = std::pin::pin!(accounts.hasher.hash(&waiting));
        assert!(futures::poll!(queued.as_mut()).is_pending());

        let client = Some(IpAddr::from([192, 0, 2, 1]));
        for _ in 0..3 {
            // With one failure allowed, a second counted attempt would be throttled.
            let refused = accounts.sign_in("alice", "a wrong password", client, now).await;
            assert!(matches!(refused, Err(AuthError::Overloaded { retry_after: 1.. })), "{:?}", refused.err());
        }

        drop(release);
        queued.await.unwrap();
        let wrong = accounts.sign_in("alice", "a wrong password", client, now).await;
        assert!(matches!(wrong, Err(AuthError::Unauthorized)), "evaluated once the queue has room");
        let throttled = accounts.sign_in("alice", "a wrong password", client, now).await;
        assert!(matches!(throttled, Err(AuthError::Throttled { .. })), "and that one counted");
    }

    #[tokio::test]
    async fn a_sign_up_refused_because_too_many_hashes_wait_is_not_counted() {
        let (accounts, _dir) = accounts(100, 1).await;
        let now = Timestamp::now();
        let release = accounts.hasher.occupy().await;
        let waiting = Password::parse("a waiting hash".into()).unwrap();
        let mut queued = std::pin::pin!(accounts.hasher.hash(&waiting));
        assert!(futures::poll!(queued.as_mut()).is_pending());

        let client = Some(IpAddr::from([192, 0, 2, 1]));
        for _ in 0..3 {
            // With one sign-up allowed, a second counted one would be throttled.
            let refused = accounts.sign_up("bob", "a long enough password".into(), None, Role::User, client, now).await;
            assert!(matches!(refused, Err(AuthError::Overloaded { .. })), "{:?}", refused.err());
        }

        drop(release);
        queued.await.unwrap();
        accounts.sign_up("bob", "a long enough password".into(), None, Role::User, client, now).await.unwrap();
        let throttled = accounts.sign_up("carol", "a long enough password".into(), None, Role::User, client, now).await;
        assert!(matches!(throttled, Err(AuthError::SignUpThrottled { retry_after: 3600 })), "{:?}", throttled.err());
    }
}
