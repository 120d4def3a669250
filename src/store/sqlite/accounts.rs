//! Accounts on SQLite: users, their sessions and refresh tokens.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::rows::{
    USER_COLUMN_COUNT, USER_COLUMNS, from_micros, internal, is_unique_violation, micros, user_from_row, uuid_at,
};
use super::{SqliteStore, live_session_user, load_user, save_zone, tokens};
use crate::domain::{RefreshVerdict, StoredRefreshToken, User, Username};
use crate::store::{AccountStore, NewUser, Refreshed, Result, StoreError, UserChanges, new_id};

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> Result<User> {
        self.executor
            .write(move |c| {
                let id = new_id(now);
                // A taken skeleton (a look-alike of another user's name) breaks the
                // unique index as a taken name does, and is answered the same.
                let inserted = c.execute(
                    "insert into users
                         (id, username, skeleton, password_hash, role, daily_limit, limit_is_own, timezone, created_at)
                     values (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
                    params![
                        id.to_string(),
                        user.username.as_str(),
                        user.username.skeleton(),
                        user.password_hash,
                        user.role.as_str(),
                        user.daily_limit,
                        user.zone.current.as_str(),
                        micros(now)
                    ],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
                    other => other.map_err(internal)?,
                };
                load_user(c, id)?.ok_or_else(|| internal(anyhow::anyhow!("user vanished after insert")))
            })
            .await
    }

    async fn name_taken(&self, username: &Username) -> Result<bool> {
        let (name, skeleton) = (username.as_str().to_owned(), username.skeleton());
        self.executor
            .read(move |c| {
                c.prepare_cached("select exists (select 1 from users where username = ?1 or skeleton = ?2)")
                    .and_then(|mut s| s.query_row(params![name, skeleton], |r| r.get(0)))
                    .map_err(internal)
            })
            .await
    }

    async fn user_credentials(&self, username: &Username) -> Result<Option<(User, String)>> {
        let username = username.as_str().to_owned();
        self.executor
            .read(move |c| {
                c.prepare_cached(&format!("select {USER_COLUMNS}, u.password_hash from users u where u.username = ?1"))
                    .and_then(|mut s| {
                        s.query_row([username], |r| Ok((user_from_row(r)?, r.get(USER_COLUMN_COUNT)?))).optional()
                    })
                    .map_err(internal)
            })
            .await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>> {
        self.executor.read(move |c| load_user(c, id)).await
    }

    async fn session_user(&self, session_id: Uuid, user_id: Uuid) -> Result<Option<User>> {
        if let Some(user) = self.sessions.get(session_id, user_id) {
            return Ok(Some(user));
        }
        let generation = self.sessions.generation();
        let user = self.executor.read(move |c| live_session_user(c, session_id, user_id)).await?;
        if let Some(user) = &user {
            self.sessions.keep(generation, session_id, user);
        }
        Ok(user)
    }

    async fn update_user(&self, id: Uuid, changes: UserChanges) -> Result<Option<User>> {
        self.write_accounts(move |c| {
            if let Some(zone) = &changes.zone {
                save_zone(c, id, zone)?;
            }
            if let Some(change) = &changes.password {
                c.execute("update users set password_hash = ?2 where id = ?1", params![id.to_string(), change.hash])
                    .and_then(|_| {
                        c.execute(
                            "update sessions set revoked_at = ?3
                             where user_id = ?1 and id <> ?2 and revoked_at is null",
                            params![id.to_string(), change.keep_session.to_string(), micros(change.now)],
                        )
                    })
                    .map_err(internal)?;
                tokens::delete_all(c, id)?;
            }
            load_user(c, id)
        })
        .await
    }

    async fn create_session(
        &self,
        user_id: Uuid,
        refresh_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Uuid> {
        self.executor
            .write(move |c| {
                let id = new_id(now);
                c.execute(
                    "insert into sessions (id, user_id, created_at) values (?1, ?2, ?3)",
                    params![id.to_string(), user_id.to_string(), micros(now)],
                )
                .and_then(|_| {
                    c.execute(
                        "insert into refresh_tokens (hash, session_id, user_id, expires_at) values (?1, ?2, ?3, ?4)",
                        params![refresh_hash, id.to_string(), user_id.to_string(), micros(expires_at)],
                    )
                })
                .map_err(internal)?;
                Ok(id)
            })
            .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Refreshed> {
        self.write_accounts(move |c| {
            let found = c
                .query_row(
                    "select r.session_id, r.user_id, r.expires_at, r.spent_at, s.revoked_at
                     from refresh_tokens r join sessions s on s.id = r.session_id where r.hash = ?1",
                    [old_hash],
                    |r| {
                        Ok((
                            uuid_at(r, 0)?,
                            uuid_at(r, 1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(internal)?;
            let Some((session_id, user_id, expires, spent, revoked)) = found else { return Ok(Refreshed::Invalid) };
            let stored = StoredRefreshToken {
                spent: spent.is_some(),
                session_revoked: revoked.is_some(),
                expires_at: from_micros(expires).map_err(internal)?,
            };
            match RefreshVerdict::of(Some(stored), now) {
                RefreshVerdict::Rotate => {}
                RefreshVerdict::Refuse => return Ok(Refreshed::Invalid),
                RefreshVerdict::RevokeFamily => {
                    c.execute(
                        "update sessions set revoked_at = ?2 where id = ?1",
                        params![session_id.to_string(), micros(now)],
                    )
                    .map_err(internal)?;
                    return Ok(Refreshed::Reused);
                }
            }
            c.execute("update refresh_tokens set spent_at = ?2 where hash = ?1", params![old_hash, micros(now)])
                .and_then(|_| {
                    c.execute(
                        "insert into refresh_tokens (hash, session_id, user_id, expires_at) values (?1, ?2, ?3, ?4)",
                        params![new_hash, session_id.to_string(), user_id.to_string(), micros(expires_at)],
                    )
                })
                .map_err(internal)?;
            Ok(Refreshed::Rotated { user_id, session_id })
        })
        .await
    }

    async fn revoke_session(&self, session_id: Uuid, now: Timestamp) -> Result<()> {
        self.write_accounts(move |c| {
            c.execute(
                "update sessions set revoked_at = ?2 where id = ?1 and revoked_at is null",
                params![session_id.to_string(), micros(now)],
            )
            .map(drop)
            .map_err(internal)
        })
        .await
    }
}
