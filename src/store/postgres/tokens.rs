//! Personal access tokens on PostgreSQL: the statements behind the `Store` methods.
//! Nothing is cached: a deleted token must stop working on every instance at once.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use super::rows::{USER_COLUMNS, decode, micros};
use super::{PostgresStore, bounded, classify, rows};
use crate::domain::{PersonalToken, Scopes, User};
use crate::store::{NewPersonalToken, Result, TokenStore, new_id};

/// The token columns, for a query that names `personal_tokens` as `t`; aliased, since a
/// lookup also reads the user's `id` and `created_at`.
const TOKEN_COLUMNS: &str = "t.id as token_id, t.name as token_name, t.scopes as token_scopes, \
     t.created_at as token_created_at, t.expires_at as token_expires_at, t.last_used_at as token_last_used_at";

fn token(row: &PgRow) -> Result<PersonalToken, sqlx::Error> {
    let scopes: String = row.try_get("token_scopes")?;
    let optional = |column: &str| -> Result<Option<Timestamp>, sqlx::Error> {
        match row.try_get::<Option<i64>, _>(column)? {
            Some(_) => rows::timestamp(row, column).map(Some),
            None => Ok(None),
        }
    };
    Ok(PersonalToken {
        id: row.try_get("token_id")?,
        name: row.try_get("token_name")?,
        scopes: Scopes::from_stored(&scopes)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown scope in {scopes:?}").into()))?,
        created_at: rows::timestamp(row, "token_created_at")?,
        expires_at: optional("token_expires_at")?,
        last_used_at: optional("token_last_used_at")?,
    })
}

/// The count and the insert in one transaction, after locking the user's row, so that
/// concurrent creates (on any instance) cannot pass `max` together. `for no key update`
/// does not block the user's task inserts, whose foreign key takes `key share`.
pub(super) async fn create(
    c: &mut PgConnection,
    user_id: Uuid,
    new: NewPersonalToken,
    max: u32,
    now: Timestamp,
) -> Result<Option<PersonalToken>> {
    let mut tx = c.begin().await.map_err(classify)?;
    sqlx::query("select 1 from users where id = $1 for no key update")
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    let row = sqlx::query(&format!(
        "insert into personal_tokens as t (id, user_id, hash, name, scopes, created_at, expires_at)
         select $1, $2, $3, $4, $5, $6, $7
         where (select count(*) from personal_tokens where user_id = $2) < $8
         returning {TOKEN_COLUMNS}"
    ))
    .bind(new_id(now))
    .bind(user_id)
    .bind(&new.hash[..])
    .bind(new.name.as_str())
    .bind(new.scopes.to_stored())
    .bind(micros(now))
    .bind(new.expires_at.map(micros))
    .bind(i64::from(max))
    .fetch_optional(&mut *tx)
    .await
    .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    row.as_ref().map(|r| decode(r, token)).transpose()
}

pub(super) async fn list(c: &mut PgConnection, user_id: Uuid) -> Result<Vec<PersonalToken>> {
    sqlx::query(&format!("select {TOKEN_COLUMNS} from personal_tokens t where t.user_id = $1 order by t.id"))
        .bind(user_id)
        .fetch_all(&mut *c)
        .await
        .map_err(classify)?
        .iter()
        .map(|r| decode(r, token))
        .collect()
}

pub(super) async fn one(c: &mut PgConnection, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>> {
    let row = sqlx::query(&format!("select {TOKEN_COLUMNS} from personal_tokens t where t.id = $1 and t.user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(|r| decode(r, token)).transpose()
}

pub(super) async fn delete(c: &mut PgConnection, user_id: Uuid, id: Uuid) -> Result<bool> {
    sqlx::query("delete from personal_tokens where id = $1 and user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(&mut *c)
        .await
        .map(|done| done.rows_affected() > 0)
        .map_err(classify)
}

/// The token of hash `hash` and its user, in one round trip through the unique index.
pub(super) async fn by_hash(c: &mut PgConnection, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>> {
    let row = sqlx::query(&format!(
        "select {USER_COLUMNS}, {TOKEN_COLUMNS} from personal_tokens t join users u on u.id = t.user_id
         where t.hash = $1"
    ))
    .bind(&hash[..])
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)?;
    row.as_ref().map(|r| decode(r, |r| Ok((rows::user(r)?, token(r)?)))).transpose()
}

pub(super) async fn touch(c: &mut PgConnection, id: Uuid, now: Timestamp) -> Result<()> {
    sqlx::query(
        "update personal_tokens set last_used_at = $2
         where id = $1 and (last_used_at is null or last_used_at < $2)",
    )
    .bind(id)
    .bind(micros(now))
    .execute(&mut *c)
    .await
    .map(drop)
    .map_err(classify)
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn create_personal_token(
        &self,
        user_id: Uuid,
        token: NewPersonalToken,
        max: u32,
        now: Timestamp,
    ) -> Result<Option<PersonalToken>> {
        bounded(self.db.run(async |c| create(c, user_id, token, max, now).await)).await
    }

    async fn personal_tokens(&self, user_id: Uuid) -> Result<Vec<PersonalToken>> {
        bounded(self.db.run(async |c| list(c, user_id).await)).await
    }

    async fn personal_token(&self, user_id: Uuid, id: Uuid) -> Result<Option<PersonalToken>> {
        bounded(self.db.run(async |c| one(c, user_id, id).await)).await
    }

    async fn delete_personal_token(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        bounded(self.db.run(async |c| delete(c, user_id, id).await)).await
    }

    async fn personal_token_user(&self, hash: [u8; 32]) -> Result<Option<(User, PersonalToken)>> {
        bounded(self.db.run(async |c| by_hash(c, hash).await)).await
    }

    async fn touch_personal_token(&self, id: Uuid, now: Timestamp) -> Result<()> {
        bounded(self.db.run(async |c| touch(c, id, now).await)).await
    }
}
