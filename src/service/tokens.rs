//! Bearer tokens: the personal access tokens' use cases (create, list, delete: a
//! signed-in session's), and resolving the token of any request, an access token or a
//! personal one, to who it speaks for and how (docs/api.md, "Personal access tokens").

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use uuid::Uuid;

use super::Error;
use crate::auth::token;
use crate::domain::tokens::{self, MAX_PER_USER};
use crate::domain::{Credential, DayQuota, PersonalToken, Scopes, TokenName, User};
use crate::service::accounts::{Accounts, AuthError};
use crate::store::{NewPersonalToken, Store};

/// Tokens whose last recorded use this instance remembers at most; past that it starts
/// over, which costs at most one more write per token.
const REMEMBERED_USES: usize = 100_000;

/// Who a request speaks for, how it proved it, and until when its token is accepted
/// (what outlives the request, an event stream, ends then).
pub struct Caller {
    pub user: User,
    pub credential: Credential,
    pub accepted_until: Timestamp,
}

impl Caller {
    fn personal(user: User, token: &PersonalToken) -> Self {
        Caller {
            user,
            credential: Credential::Personal { token_id: token.id, scopes: token.scopes },
            accepted_until: token.expires_at.unwrap_or(Timestamp::MAX),
        }
    }
}

/// A token just made: as kept, and the token itself, which is shown this once.
pub struct Issued {
    pub token: PersonalToken,
    pub secret: String,
}

#[derive(Clone)]
pub struct TokenService {
    store: Arc<dyn Store>,
    /// Access tokens, and the sign-in throttle a wrong personal token counts against.
    accounts: Arc<Accounts>,
    /// The last use this instance recorded of each token, so that a token in steady use
    /// costs one write a minute, not one a request: on SQLite the lookup may come from
    /// a cache that does not see the write.
    recorded: Arc<Mutex<HashMap<Uuid, Timestamp>>>,
}

impl TokenService {
    pub fn new(store: Arc<dyn Store>, accounts: Arc<Accounts>) -> Self {
        TokenService { store, accounts, recorded: Arc::default() }
    }

    /// Makes a token for `user_id` with `scopes`, lasting until `expires_at` (an RFC
    /// 3339 instant after `now`) or until deleted.
    pub async fn create<S: AsRef<str>>(
        &self,
        user_id: Uuid,
        name: &str,
        scopes: &[S],
        expires_at: Option<&str>,
        now: Timestamp,
    ) -> Result<Issued, Error> {
        let (name, scopes, expires_at) =
            match (TokenName::parse(name), Scopes::parse(scopes), tokens::parse_expiry(expires_at, now)) {
                (Ok(n), Ok(s), Ok(e)) => (n, s, e),
                (n, s, e) => return Err(Error::Invalid([n.err(), s.err(), e.err()].into_iter().flatten().collect())),
            };
        let (secret, hash) = token::new_personal_token();
        let new = NewPersonalToken { hash, name, scopes, expires_at };
        match self.store.create_personal_token(user_id, new, MAX_PER_USER, now).await? {
            Some(token) => Ok(Issued { token, secret }),
            None => Err(Error::Conflict("a user holds at most 50 personal access tokens; delete one first")),
        }
    }

    /// The user's tokens, oldest first, expired ones included.
    pub async fn list(&self, user_id: Uuid) -> Result<Vec<PersonalToken>, Error> {
        Ok(self.store.personal_tokens(user_id).await?)
    }

    /// Deletes the user's token `id`: from now on no instance accepts it.
    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), Error> {
        if self.store.delete_personal_token(user_id, id).await? { Ok(()) } else { Err(Error::NotFound) }
    }

    /// The caller behind `bearer`, from `client`: an access token of a live session,
    /// or a live personal token. A `qtk_` token that matches none (wrong, deleted, or
    /// ended by a password change) counts as a failed sign-in of `client`; an expired
    /// one, which its owner made, does not. Either costs one store lookup, as an access
    /// token's session does.
    pub async fn authenticate(
        &self,
        bearer: &str,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Caller, AuthError> {
        if !tokens::is_personal(bearer) {
            let bearer = self.accounts.authenticate(bearer, now).await?;
            let credential = Credential::Session { session_id: bearer.session_id };
            return Ok(Caller { user: bearer.user, credential, accepted_until: bearer.accepted_until });
        }
        let found = match tokens::well_formed(bearer) {
            true => self.store.personal_token_user(token::hash_personal_token(bearer)).await?,
            false => None,
        };
        self.admit(found.as_ref().map(|(_, t)| t), client, now).await?;
        let (user, token) = found.ok_or(AuthError::Unauthorized)?;
        Ok(Caller::personal(user, &token))
    }

    /// `authenticate`, and the user's quota on the day of `now`, read together.
    pub async fn authenticate_with_usage(
        &self,
        bearer: &str,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<(Caller, DayQuota), AuthError> {
        if !tokens::is_personal(bearer) {
            let (bearer, used) = self.accounts.authenticate_with_usage(bearer, now).await?;
            let credential = Credential::Session { session_id: bearer.session_id };
            return Ok((Caller { user: bearer.user, credential, accepted_until: bearer.accepted_until }, used));
        }
        let found = match tokens::well_formed(bearer) {
            true => self.store.personal_token_usage(token::hash_personal_token(bearer), now).await?,
            false => None,
        };
        self.admit(found.as_ref().map(|(_, t, _)| t), client, now).await?;
        let (user, token, used) = found.ok_or(AuthError::Unauthorized)?;
        Ok((Caller::personal(user, &token), used))
    }

    /// Whether what `credential` proved for `user_id` still holds at `now`, for what
    /// outlives its request (an event stream): the session not signed out or revoked,
    /// the personal token not deleted or expired.
    pub async fn still_accepted(
        &self,
        user_id: Uuid,
        credential: Credential,
        now: Timestamp,
    ) -> Result<bool, AuthError> {
        match credential {
            Credential::Session { session_id } => self.accounts.still_signed_in(session_id, user_id).await,
            Credential::Personal { token_id, .. } => {
                let token = self.store.personal_token(user_id, token_id).await?;
                Ok(token.is_some_and(|t| t.is_live(now)))
            }
        }
    }

    /// Refuses a personal token that was not found or has expired, counting the first
    /// against `client`; records the use of one accepted.
    async fn admit(
        &self,
        token: Option<&PersonalToken>,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let Some(token) = token else {
            self.accounts.count_failed_credential(client, now).await?;
            return Err(AuthError::Unauthorized);
        };
        if !token.is_live(now) {
            return Err(AuthError::Unauthorized);
        }
        self.record_use(token, now).await;
        Ok(())
    }

    /// Records `token`'s use at `now` if its last recorded use is a minute old. Waited
    /// for (once a minute per token), so that `last_used_at` is current when the answer
    /// is; a failure to record it does not fail the request it came with.
    async fn record_use(&self, token: &PersonalToken, now: Timestamp) {
        {
            let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            let last = recorded.get(&token.id).copied().max(token.last_used_at);
            if !tokens::last_use_due(last, now) {
                return;
            }
            if recorded.len() >= REMEMBERED_USES {
                recorded.clear();
            }
            recorded.insert(token.id, now);
        }
        if let Err(e) = self.store.touch_personal_token(token.id, now).await {
            tracing::warn!(token = %token.id, error = %e, "could not record a personal token's use");
        }
    }
}
