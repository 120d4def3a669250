//! Personal access tokens on SQLite: the statements behind the `Store` methods (the
//! cache in front of the lookup is `sessions`).

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::SqliteStore;
use super::executor::Mode;
use super::rows::{USER_COLUMN_COUNT, USER_COLUMNS, conversion, from_micros, internal, micros, user_from_row, uuid_at};
use crate::domain::{PersonalToken, Scopes, User};
use crate::store::{NewPersonalToken, Result, TokenStore, new_id};

/// The token columns, for a query that names `personal_tokens` as `t`.
const TOKEN_COLUMNS: &str = "t.id, t.name, t.scopes, t.created_at, t.expires_at, t.last_used_at";

/// A token from the six `TOKEN_COLUMNS` starting at column `at`.
fn token_at(row: &Row, at: usize) -> rusqlite::Result<PersonalToken> {
    let scopes: String = row.get(at + 2)?;
    let optional = |i: usize| row.get::<_, Option<i64>>(at + i)?.map(from_micros).transpose();
    Ok(PersonalToken {
        id: uuid_at(row, at)?,
        name: row.get(at + 1)?,
        scopes: Scopes::from_stored(&scopes)
            .ok_or_else(|| conversion(anyhow::anyhow!("unknown scope in {scopes:?}")))?,
        created_at: from_micros(row.get(at + 3)?)?,
        expires_at: optional(4)?,
        last_used_at: optional(5)?,
    })
}

/// Run by the writer, so the count and the insert see no other write between them.
pub(super) fn create(
    c: &Connection,
    user_id: Uuid,
    new: NewPersonalToken,
    max: u32,
    now: Timestamp,
) -> Result<Option<PersonalToken>> {
    let held: u32 = c
        .prepare_cached("select count(*) from personal_tokens where user_id = ?1")
        .and_then(|mut s| s.query_row([user_id.to_string()], |r| r.get(0)))
        .map_err(internal)?;
    if held >= max {
        return Ok(None);
    }
    let token = PersonalToken {
        id: new_id(now),
        name: new.name.as_str().to_owned(),
        scopes: new.scopes,
        created_at: now,
        expires_at: new.expires_at,
        last_used_at: None,
    };
    c.prepare_cached(
        "insert into personal_tokens (id, user_id, hash, name, scopes, created_at, expires_at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.id.to_string(),
            user_id.to_string(),
            new.hash,
            token.name,
            token.scopes.to_stored(),
            micros(now),
            token.expires_at.map(micros)
        ])
    })
    .map_err(internal)?;
    Ok(Some(token))
}

pub(super) fn list(c: &Connection, user_id: Uuid) -> Result<Vec<PersonalToken>> {
    c.prepare_cached(&format!("select {TOKEN_COLUMNS} from personal_tokens t where t.user_id = ?1 order by t.id"))
        .and_then(|mut s| s.query_map([user_id.to_string()], |r| token_at(r, 0))?.collect())
        .map_err(internal)
}

pub(super) fn one(c: &Connection, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>> {
    c.prepare_cached(&format!("select {TOKEN_COLUMNS} from personal_tokens t where t.id = ?1 and t.user_id = ?2"))
        .and_then(|mut s| s.query_row([id.to_string(), user_id.to_string()], |r| token_at(r, 0)).optional())
        .map_err(internal)
}

pub(super) fn delete(c: &Connection, user_id: Uuid, id: Uuid) -> Result<bool> {
    c.execute("delete from personal_tokens where id = ?1 and user_id = ?2", [id.to_string(), user_id.to_string()])
        .map(|n| n > 0)
        .map_err(internal)
}

/// Every token of the user: a new password ends them all.
pub(super) fn delete_all(c: &Connection, user_id: Uuid) -> Result<()> {
    c.execute("delete from personal_tokens where user_id = ?1", [user_id.to_string()]).map(drop).map_err(internal)
}

/// The token of hash `hash` and its user, through the unique index on the hash.
pub(super) fn by_hash(c: &Connection, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>> {
    c.prepare_cached(&format!(
        "select {USER_COLUMNS}, {TOKEN_COLUMNS} from personal_tokens t join users u on u.id = t.user_id
         where t.hash = ?1"
    ))
    .and_then(|mut s| s.query_row([hash], |r| Ok((user_from_row(r)?, token_at(r, USER_COLUMN_COUNT)?))).optional())
    .map_err(internal)
}

/// One statement: the writer runs it without a savepoint.
pub(super) fn touch(c: &Connection, id: Uuid, now: Timestamp) -> Result<()> {
    c.prepare_cached(
        "update personal_tokens set last_used_at = ?2
         where id = ?1 and (last_used_at is null or last_used_at < ?2)",
    )
    .and_then(|mut s| s.execute(params![id.to_string(), micros(now)]))
    .map(drop)
    .map_err(internal)
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_personal_token(
        &self,
        user_id: Uuid,
        token: NewPersonalToken,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<PersonalToken>> {
        // A token never looked up cannot be cached: no entry to forget.
        self.executor.write(move |c| create(c, user_id, token, max, now)).await
    }

    async fn personal_tokens(&self, user_id: Uuid) -> Result<Vec<PersonalToken>> {
        self.executor.read(move |c| list(c, user_id)).await
    }

    async fn personal_token(&self, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>> {
        self.executor.read(move |c| one(c, user_id, id)).await
    }

    async fn delete_personal_token(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        self.write_accounts(move |c| delete(c, user_id, id)).await
    }

    async fn personal_token_user(&self, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>> {
        if let Some(found) = self.sessions.token(&hash) {
            return Ok(Some(found));
        }
        let generation = self.sessions.generation();
        let found = self.executor.read(move |c| by_hash(c, hash)).await?;
        if let Some(found) = &found {
            self.sessions.keep_token(generation, hash, found);
        }
        Ok(found)
    }

    async fn touch_personal_token(&self, id: Uuid, now: Timestamp) -> Result<()> {
        // One statement, so no savepoint; and it changes no limit or day's use, so the
        // writer's quota memo stays valid across it.
        let mode = Mode::ONE_STATEMENT.keeping_epoch();
        self.executor.write_with(mode, move |c| touch(c, id, now)).await
    }
}
