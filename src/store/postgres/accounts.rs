//! Accounts on PostgreSQL: users, their sessions and refresh tokens.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::Row as _;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::rows::{USER_COLUMNS, decode, micros};
use super::{PostgresStore, bounded, classify, rows};
use crate::domain::{RefreshVerdict, StoredRefreshToken, User, Username};
use crate::store::{AccountStore, NewUser, Refreshed, Result, UserChanges, new_id};

pub(super) async fn load_user(c: &mut PgConnection, id: Uuid) -> Result<Option<User>> {
    let row = sqlx::query(&format!("select {USER_COLUMNS} from users u where u.id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(|r| decode(r, rows::user)).transpose()
}

/// Marks a refresh family revoked; `revoked_at` keeps the first revocation.
pub(super) async fn revoke(c: &mut PgConnection, session_id: Uuid, now: Timestamp) -> Result<()> {
    sqlx::query("update sessions set revoked_at = $2 where id = $1 and revoked_at is null")
        .bind(session_id)
        .bind(micros(now))
        .execute(&mut *c)
        .await
        .map(drop)
        .map_err(classify)
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> Result<User> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(&format!(
                "insert into users as u
                     (id, username, skeleton, password_hash, role, daily_limit, limit_is_own, timezone, created_at)
                 values ($1, $2, $3, $4, $5, $6, false, $7, $8) returning {USER_COLUMNS}"
            ))
            .bind(new_id(now))
            .bind(user.username.as_str())
            .bind(user.username.skeleton())
            .bind(&user.password_hash)
            .bind(user.role.as_str())
            .bind(i64::from(user.daily_limit))
            .bind(user.zone.current.as_str())
            .bind(micros(now))
            .fetch_one(&mut *c)
            .await
            .map_err(classify)?;
            decode(&row, rows::user)
        }))
        .await
    }

    async fn name_taken(&self, username: &Username) -> Result<bool> {
        bounded(self.db.run(async |c| {
            sqlx::query_scalar("select exists (select 1 from users where username = $1 or skeleton = $2)")
                .bind(username.as_str())
                .bind(username.skeleton())
                .fetch_one(&mut *c)
                .await
                .map_err(classify)
        }))
        .await
    }

    async fn user_credentials(&self, username: &Username) -> Result<Option<(User, String)>> {
        bounded(self.db.run(async |c| {
            let row =
                sqlx::query(&format!("select {USER_COLUMNS}, u.password_hash from users u where u.username = $1"))
                    .bind(username.as_str())
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(classify)?;
            row.as_ref().map(|r| decode(r, |r| Ok((rows::user(r)?, r.try_get("password_hash")?)))).transpose()
        }))
        .await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>> {
        bounded(self.db.run(async |c| load_user(c, id).await)).await
    }

    async fn session_user(&self, session_id: Uuid, user_id: Uuid) -> Result<Option<User>> {
        bounded(self.db.run(async |c| {
            let row = sqlx::query(&format!(
                "select {USER_COLUMNS} from sessions s join users u on u.id = s.user_id
                 where s.id = $1 and s.user_id = $2 and s.revoked_at is null"
            ))
            .bind(session_id)
            .bind(user_id)
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            row.as_ref().map(|r| decode(r, rows::user)).transpose()
        }))
        .await
    }

    async fn update_user(&self, id: Uuid, changes: UserChanges) -> Result<Option<User>> {
        bounded(self.db.run(async |c| {
            let zone = changes.zone.as_ref();
            let pending = zone.and_then(|z| z.pending.as_ref());
            let password = changes.password.as_ref();
            // One statement, so one transaction: the new hash, the end of every other
            // session and of every personal token of the user (a data-modifying CTE runs
            // whether or not it is read).
            let row = sqlx::query(&format!(
                "with revoked as (
                     update sessions set revoked_at = $8
                     where $6::text is not null and user_id = $1 and id <> $7 and revoked_at is null
                 ), tokens_ended as (
                     delete from personal_tokens where $6::text is not null and user_id = $1
                 )
                 update users as u set
                     timezone = case when $2 then $3 else u.timezone end,
                     pending_timezone = case when $2 then $4 else u.pending_timezone end,
                     timezone_effective_at = case when $2 then $5 else u.timezone_effective_at end,
                     password_hash = coalesce($6, u.password_hash)
                 where u.id = $1 returning {USER_COLUMNS}"
            ))
            .bind(id)
            .bind(zone.is_some())
            .bind(zone.map(|z| z.current.as_str()))
            .bind(pending.map(|(tz, _)| tz.as_str()))
            .bind(pending.map(|(_, at)| micros(*at)))
            .bind(password.map(|p| p.hash.as_str()))
            .bind(password.map(|p| p.keep_session))
            .bind(password.map(|p| micros(p.now)))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            row.as_ref().map(|r| decode(r, rows::user)).transpose()
        }))
        .await
    }

    async fn create_session(
        &self,
        user_id: Uuid,
        refresh_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Uuid> {
        bounded(self.db.run(async |c| {
            let id = new_id(now);
            sqlx::query(
                "with s as (insert into sessions (id, user_id, created_at) values ($1, $2, $3) returning id)
                 insert into refresh_tokens (hash, session_id, user_id, expires_at) select $4, s.id, $2, $5 from s",
            )
            .bind(id)
            .bind(user_id)
            .bind(micros(now))
            .bind(&refresh_hash[..])
            .bind(micros(expires_at))
            .execute(&mut *c)
            .await
            .map_err(classify)?;
            Ok(id)
        }))
        .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Refreshed> {
        bounded(self.db.run(async |c| {
            // Spending the token and recording its successor is one statement. Of two
            // concurrent uses of one token, the second waits for the first's row lock,
            // then finds it spent and takes the reuse path below.
            let rotated = sqlx::query(
                "with spent as (
                     update refresh_tokens as r set spent_at = $2 from sessions s
                     where r.hash = $1 and s.id = r.session_id and r.spent_at is null
                       and s.revoked_at is null and r.expires_at > $2
                     returning r.session_id, r.user_id
                 )
                 insert into refresh_tokens (hash, session_id, user_id, expires_at)
                 select $3, session_id, user_id, $4 from spent returning session_id, user_id",
            )
            .bind(&old_hash[..])
            .bind(micros(now))
            .bind(&new_hash[..])
            .bind(micros(expires_at))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            if let Some(row) = rotated {
                let (session_id, user_id) = decode(&row, |r| Ok((r.try_get("session_id")?, r.try_get("user_id")?)))?;
                return Ok(Refreshed::Rotated { user_id, session_id });
            }
            // Not rotated: unknown, revoked, expired, or spent before (a reuse). The
            // statement above is `RefreshVerdict::Rotate` done in one step; the rest of
            // the rule is the domain's.
            let found = sqlx::query(
                "select r.session_id, r.spent_at is not null as spent, s.revoked_at is not null as revoked,
                        r.expires_at
                 from refresh_tokens r join sessions s on s.id = r.session_id where r.hash = $1",
            )
            .bind(&old_hash[..])
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
            let Some(row) = found else { return Ok(Refreshed::Invalid) };
            let (session_id, spent, session_revoked): (Uuid, bool, bool) =
                decode(&row, |r| Ok((r.try_get("session_id")?, r.try_get("spent")?, r.try_get("revoked")?)))?;
            let expires_at = decode(&row, |r| rows::timestamp(r, "expires_at"))?;
            let stored = StoredRefreshToken { spent, session_revoked, expires_at };
            match RefreshVerdict::of(Some(stored), now) {
                RefreshVerdict::RevokeFamily => {
                    revoke(c, session_id, now).await?;
                    Ok(Refreshed::Reused)
                }
                // `Rotate` here would mean the token became spendable after the statement
                // above found it not to be, which nothing does; refuse rather than guess.
                RefreshVerdict::Rotate | RefreshVerdict::Refuse => Ok(Refreshed::Invalid),
            }
        }))
        .await
    }

    async fn revoke_session(&self, session_id: Uuid, now: Timestamp) -> Result<()> {
        bounded(self.db.run(async |c| revoke(c, session_id, now).await)).await
    }
}
