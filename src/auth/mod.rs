//! Accounts: sign-up, sign-in, refresh, sign-out and the signed-in user's settings.
//! The HTTP layer (both `/v1` and the seed's routes) calls these and nothing else.

pub mod password;
pub mod throttle;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use self::password::Hasher;
use self::throttle::Throttle;
use self::token::{Access, Tokens};
use crate::domain::{FieldError, Password, Role, TimeZoneName, User, UserZone, Username};
use crate::redis_link::RedisLink;
use crate::store::{NewUser, Refreshed, Store, StoreError, UserChanges};

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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

pub struct Accounts {
    store: Arc<dyn Store>,
    hasher: Hasher,
    tokens: Tokens,
    /// Shared with the checks it counts, which outlive a request that goes away.
    throttle: Arc<Throttle>,
    default_limit: u32,
    default_zone: TimeZoneName,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        secret: &[u8],
        max_failures_per_hour: u32,
        redis: Option<RedisLink>,
        default_limit: u32,
        default_zone: TimeZoneName,
    ) -> Self {
        Self {
            store,
            hasher: Hasher::default(),
            tokens: Tokens::new(secret),
            throttle: Arc::new(Throttle::new(max_failures_per_hour, redis)),
            default_limit,
            default_zone,
        }
    }

    pub async fn sign_up(
        &self,
        username: &str,
        password: String,
        timezone: Option<&str>,
        role: Role,
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
        let password_hash = self.hasher.hash(&password).await?;
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
        let username = Username::parse(username).ok();
        let account_key = format!("user:{}", username.as_ref().map_or(username_fallback(), Username::as_str));
        let keys = std::iter::once(account_key).chain(client.map(|ip| format!("ip:{ip}"))).collect();
        let counted = self.throttle.acquire(keys, now).await.map_err(|retry_after| {
            metrics::counter!(crate::metrics::SIGNIN_THROTTLED).increment(1);
            AuthError::Throttled { retry_after }
        })?;
        // Counted: from here the check runs to its end even if the client goes away
        // (a timeout while hashes queue, say), so that a right password is refunded
        // rather than left counted as a failure.
        let check = tokio::spawn({
            let (store, hasher, throttle) = (Arc::clone(&self.store), self.hasher.clone(), Arc::clone(&self.throttle));
            let password = password.to_owned();
            async move {
                let found = match &username {
                    Some(name) => store.user_credentials(name).await?,
                    None => None,
                };
                let (user, hash) = found.map_or((None, None), |(u, h)| (Some(u), Some(h)));
                if !hasher.verify(&password, hash).await? {
                    metrics::counter!(crate::metrics::SIGNIN_FAILURES).increment(1);
                    return Ok(None);
                }
                throttle.refund(counted).await;
                Ok::<_, AuthError>(user)
            }
        });
        let checked = check.await.map_err(|e| anyhow::anyhow!("the password check stopped: {e}"))?;
        let user = checked?.ok_or(AuthError::Unauthorized)?;
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

    /// `authenticate`, and the units the user used on the day of `now`, read together.
    pub async fn authenticate_with_usage(&self, bearer: &str, now: Timestamp) -> Result<(Bearer, u32), AuthError> {
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
    /// zone's next midnight) and a new password.
    pub async fn update_me(
        &self,
        user: &User,
        timezone: Option<&str>,
        password: Option<String>,
        now: Timestamp,
    ) -> Result<User, AuthError> {
        let zone = timezone.map(TimeZoneName::parse).transpose();
        let password = password.map(Password::parse).transpose();
        let (zone, password) = match (zone, password) {
            (Ok(z), Ok(p)) => (z, p),
            (z, p) => return Err(AuthError::Invalid([z.err(), p.err()].into_iter().flatten().collect())),
        };
        let password_hash = match password {
            Some(p) => Some(self.hasher.hash(&p).await?),
            None => None,
        };
        let changes = UserChanges { zone: zone.map(|z| user.zone.change_to(z, now)), password_hash };
        self.store.update_user(user.id, changes).await?.ok_or(AuthError::Unauthorized)
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
    use crate::store::Backend;

    #[tokio::test]
    async fn a_right_password_abandoned_mid_check_does_not_count_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::app::open_store(&Backend::Sqlite(dir.path().join("t.db")), 1).await.unwrap();
        let utc = TimeZoneName::parse("UTC").unwrap();
        let accounts = Accounts::new(store, &[7; 32], 3, None, 10, utc);
        let now = Timestamp::now();
        accounts.sign_up("alice", "a long enough password".into(), None, Role::User, now).await.unwrap();
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
}
