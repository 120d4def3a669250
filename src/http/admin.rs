//! `/v1/admin`: users, their limits and roles, and the audit trail of every change.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::accounts::UserView;
use super::error::{ApiError, Problem};
use super::extract::{Admin, JsonBody, present, present_integer};
use crate::domain::{FieldError, NameFragment, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users))
        .route("/v1/admin/users/{id}", axum::routing::patch(update_user))
        .route("/v1/admin/users/{id}/audit", get(audit))
}

#[derive(Serialize, ToSchema)]
struct AdminUserView {
    #[serde(flatten)]
    user: UserView,
    /// Quota used on the user's current local day.
    used: u32,
}

#[derive(Serialize, ToSchema)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AuditView {
    id: String,
    actor_id: Option<String>,
    user_id: String,
    field: String,
    old_value: String,
    new_value: String,
    at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminChanges {
    /// 0 (no new tasks) to 1,000,000; applies at once, to today too.
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false)]
    daily_limit: Option<i64>,
    /// Admins cannot take away their own admin role (409); another admin can.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    role: Option<RoleName>,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RoleName {
    User,
    Admin,
}

/// `cursor` and `limit` (1 to 100, default 50) of a paged list.
fn paging(params: &HashMap<String, String>) -> Result<(Option<Uuid>, u32), ApiError> {
    let mut errors = Vec::new();
    let mut page = (None, 50);
    for (key, value) in params {
        match key.as_str() {
            "cursor" => match Uuid::parse_str(value) {
                Ok(id) => page.0 = Some(id),
                Err(_) => errors.push(FieldError::new("cursor", "is not a cursor this service gave out")),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n @ 1..=100) => page.1 = n,
                _ => errors.push(FieldError::new("limit", "must be a whole number from 1 to 100")),
            },
            _ => errors.push(FieldError::new("query", format!("unknown parameter {key:?}"))),
        }
    }
    if errors.is_empty() { Ok(page) } else { Err(ApiError::Validation(errors)) }
}

/// Keeps the first `limit` of `limit + 1` rows and the cursor to the rest.
fn page_of<T, V>(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid, view: impl Fn(T) -> V) -> Page<V> {
    let limit = limit as usize;
    let next_cursor = (rows.len() > limit).then(|| id(&rows[limit - 1]).to_string());
    rows.truncate(limit);
    Page { items: rows.into_iter().map(view).collect(), next_cursor }
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(("cursor" = Option<String>, Query, format = Uuid), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100),
           ("q" = Option<String>, Query, max_length = 32,
            description = "Only users whose name contains this, case aside; blank means everyone")),
    responses((status = 200, description = "Users with today's use", body = Page<AdminUserView>),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json")))]
async fn list_users(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Query(mut params): Query<HashMap<String, String>>,
) -> Result<Json<Page<AdminUserView>>, ApiError> {
    let name = params.remove("q").map(|q| NameFragment::parse(&q)).transpose()?.flatten();
    let (after, limit) = paging(&params)?;
    let rows = state.services.admin.list_users(after, limit + 1, name, auth.now).await?;
    Ok(Json(page_of(rows, limit, |(u, _)| u.id, |(u, used)| AdminUserView { user: UserView::new(&u, auth.now), used })))
}

#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = AdminChanges,
    responses((status = 200, description = "The user; a new limit applies at once", body = UserView),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Admins cannot remove their own admin role", body = Problem, content_type = "application/problem+json")))]
async fn update_user(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AdminChanges>,
) -> Result<Json<UserView>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let role = body.role.map(|r| match r {
        RoleName::User => Role::User,
        RoleName::Admin => Role::Admin,
    });
    let user = state.services.admin.update_user(Some(auth.user.id), id, body.daily_limit, role, auth.now).await?;
    Ok(Json(UserView::new(&user, auth.now)))
}

#[utoipa::path(get, path = "/v1/admin/users/{id}/audit", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path), ("cursor" = Option<String>, Query, format = Uuid), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, description = "Every change to the user, oldest first", body = Page<AuditView>),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json")))]
async fn audit(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let (after, limit) = paging(&params)?;
    let rows = state.services.admin.audit_trail(id, after, limit + 1).await?;
    Ok(Json(page_of(
        rows,
        limit,
        |e| e.id,
        |e| AuditView {
            id: e.id.to_string(),
            actor_id: e.actor_id.map(|a| a.to_string()),
            user_id: e.target_id.to_string(),
            field: e.field,
            old_value: e.old_value,
            new_value: e.new_value,
            at: e.at.to_string(),
        },
    )))
}
