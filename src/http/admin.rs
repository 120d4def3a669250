//! `/v1/admin`: users, their limits, roles and plans, plans and boosts, and the audit
//! trail of every change.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::accounts::UserView;
use super::error::{ApiError, Problem, path_id};
use super::extract::{Admin, JsonBody, nullable, nullable_integer, present, present_integer};
use crate::domain::limits::{Adapt, Boost, Plan};
use crate::domain::{AuditEntry, FieldError, NameFragment, Role};
use crate::service::admin::{AdaptRule, UserUpdate};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users))
        .route("/v1/admin/users/{id}", axum::routing::patch(update_user))
        .route("/v1/admin/users/{id}/audit", get(audit))
        .route("/v1/admin/users/{id}/boosts", get(list_boosts).post(add_boost))
        .route("/v1/admin/users/{id}/boosts/{boost_id}", delete(delete_boost))
        .route("/v1/admin/plans", get(list_plans).post(create_plan))
        .route("/v1/admin/plans/{name}", axum::routing::patch(update_plan))
        .route("/v1/admin/plans/{name}/audit", get(plan_audit))
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
    /// The user's own limit, 0 (no new tasks) to 1,000,000, which overrides any plan;
    /// `null` drops it (the plan's limit, else the default, applies). Applies at once,
    /// to today too.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "nullable_integer")]
    daily_limit: Option<Option<i64>>,
    /// A plan's name; `null` takes the user off their plan.
    #[schema(value_type = Option<String>)]
    #[serde(default, deserialize_with = "nullable")]
    plan: Option<Option<String>>,
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
              (status = 409, description = "Admins cannot remove their own admin role", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid input, or `plan` names no plan", body = Problem, content_type = "application/problem+json")))]
async fn update_user(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AdminChanges>,
) -> Result<Json<UserView>, ApiError> {
    let id = path_id(&id)?;
    let role = body.role.map(|r| match r {
        RoleName::User => Role::User,
        RoleName::Admin => Role::Admin,
    });
    let update = UserUpdate { daily_limit: body.daily_limit, role, plan: body.plan };
    let user = state.services.admin.update_user(Some(auth.user.id), id, update, auth.now).await?;
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
    let id = path_id(&id)?;
    let (after, limit) = paging(&params)?;
    let rows = state.services.admin.audit_trail(id, after, limit + 1).await?;
    Ok(Json(page_of(rows, limit, |e| e.id, AuditView::from)))
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        AuditView {
            id: e.id.to_string(),
            actor_id: e.actor_id.map(|a| a.to_string()),
            user_id: e.target_id.to_string(),
            field: e.field,
            old_value: e.old_value,
            new_value: e.new_value,
            at: e.at.to_string(),
        }
    }
}

/// A plan's adaptive rule: after `after_days_at_limit` local days in a row on which a
/// user used their whole limit, their limit rises by `step` (up to `max`); after
/// `after_idle_days` days in a row without a task, it falls by `step` (down to `min`).
/// Decided once per user per local day; a change starts on the user's next local day.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct AdaptView {
    #[schema(minimum = 1, maximum = 1000000)]
    step: i64,
    #[schema(minimum = 1, maximum = 366)]
    after_days_at_limit: i64,
    #[schema(minimum = 0, maximum = 1000000)]
    max: i64,
    #[schema(minimum = 1, maximum = 366)]
    after_idle_days: i64,
    #[schema(minimum = 0, maximum = 1000000)]
    min: i64,
}

impl From<AdaptView> for AdaptRule {
    fn from(a: AdaptView) -> Self {
        AdaptRule {
            step: a.step,
            after_days_at_limit: a.after_days_at_limit,
            max: a.max,
            after_idle_days: a.after_idle_days,
            min: a.min,
        }
    }
}

impl From<Adapt> for AdaptView {
    fn from(a: Adapt) -> Self {
        AdaptView {
            step: a.step.into(),
            after_days_at_limit: a.after_days_at_limit.into(),
            max: a.max.into(),
            after_idle_days: a.after_idle_days.into(),
            min: a.min.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct PlanView {
    name: String,
    daily_limit: u32,
    adapt: Option<AdaptView>,
    created_at: String,
}

impl From<Plan> for PlanView {
    fn from(p: Plan) -> Self {
        PlanView {
            name: p.name,
            daily_limit: p.daily_limit,
            adapt: p.adapt.map(AdaptView::from),
            created_at: p.created_at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct PlanList {
    items: Vec<PlanView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPlan {
    /// 1 to 64 lowercase letters, digits, `_`, `-` or `.`, starting with a letter or digit.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    name: String,
    /// 0 to 1,000,000.
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(deserialize_with = "integer")]
    daily_limit: i64,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    adapt: Option<AdaptView>,
}

fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error as _;
    present_integer(d)?.ok_or_else(|| D::Error::custom("must be a whole number"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlanChangesBody {
    /// 0 to 1,000,000; applies at once to every user of the plan, today included.
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false)]
    daily_limit: Option<i64>,
    /// The adaptive rule; `null` removes it.
    #[schema(value_type = Option<AdaptView>)]
    #[serde(default, deserialize_with = "nullable")]
    adapt: Option<Option<AdaptView>>,
}

#[derive(Serialize, ToSchema)]
struct BoostView {
    id: String,
    user_id: String,
    extra: u32,
    /// The first local day it covers, `YYYY-MM-DD`.
    from: String,
    /// The last local day it covers, `YYYY-MM-DD`.
    to: String,
    reason: String,
    actor_id: Option<String>,
    created_at: String,
}

impl From<Boost> for BoostView {
    fn from(b: Boost) -> Self {
        BoostView {
            id: b.id.to_string(),
            user_id: b.user_id.to_string(),
            extra: b.extra,
            from: b.from.to_string(),
            to: b.to.to_string(),
            reason: b.reason,
            actor_id: b.actor_id.map(|a| a.to_string()),
            created_at: b.created_at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct BoostList {
    items: Vec<BoostView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewBoostBody {
    /// Extra units on each day covered: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1000000)]
    #[serde(deserialize_with = "integer")]
    extra: i64,
    /// The first local day covered, `YYYY-MM-DD`.
    #[schema(format = Date)]
    from: String,
    /// The last local day covered (inclusive), at most 365 days after `from`.
    #[schema(format = Date)]
    to: String,
    /// Why, for the audit trail: at most 500 characters.
    #[schema(max_length = 500)]
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    reason: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/plans", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every plan, by name", body = PlanList),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json")))]
async fn list_plans(State(state): State<AppState>, Admin(_): Admin) -> Result<Json<PlanList>, ApiError> {
    let plans = state.services.admin.plans().await?;
    Ok(Json(PlanList { items: plans.into_iter().map(PlanView::from).collect() }))
}

#[utoipa::path(post, path = "/v1/admin/plans", tag = "admin", security(("bearer" = [])), request_body = NewPlan,
    responses((status = 201, description = "The plan", body = PlanView),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "A plan has this name already", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
async fn create_plan(
    State(state): State<AppState>,
    Admin(auth): Admin,
    JsonBody(body): JsonBody<NewPlan>,
) -> Result<(StatusCode, Json<PlanView>), ApiError> {
    let adapt = body.adapt.map(AdaptRule::from);
    let plan =
        state.services.admin.create_plan(Some(auth.user.id), &body.name, body.daily_limit, adapt, auth.now).await?;
    Ok((StatusCode::CREATED, Json(PlanView::from(plan))))
}

#[utoipa::path(patch, path = "/v1/admin/plans/{name}", tag = "admin", security(("bearer" = [])), params(("name" = String, Path)),
    request_body = PlanChangesBody,
    responses((status = 200, description = "The plan; a new limit applies at once to all its users, today included", body = PlanView),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such plan", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
async fn update_plan(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PlanChangesBody>,
) -> Result<Json<PlanView>, ApiError> {
    let adapt = body.adapt.map(|a| a.map(AdaptRule::from));
    let plan = state.services.admin.update_plan(Some(auth.user.id), &name, body.daily_limit, adapt, auth.now).await?;
    Ok(Json(PlanView::from(plan)))
}

#[utoipa::path(get, path = "/v1/admin/plans/{name}/audit", tag = "admin", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, description = "Every change to the plan, oldest first (`user_id` is the nil id: no user)", body = Page<AuditView>),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such plan", body = Problem, content_type = "application/problem+json")))]
async fn plan_audit(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    let (_, entries) = state.services.admin.plan(&name).await?;
    Ok(Json(Page { items: entries.into_iter().map(AuditView::from).collect(), next_cursor: None }))
}

#[utoipa::path(get, path = "/v1/admin/users/{id}/boosts", tag = "admin", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The user's boosts, by first day", body = BoostList),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json")))]
async fn list_boosts(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Json<BoostList>, ApiError> {
    let id = path_id(&id)?;
    let boosts = state.services.admin.boosts(id).await?;
    Ok(Json(BoostList { items: boosts.into_iter().map(BoostView::from).collect() }))
}

#[utoipa::path(post, path = "/v1/admin/users/{id}/boosts", tag = "admin", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = NewBoostBody,
    responses((status = 201, description = "The boost; it adds to the user's limit on the local days it covers, today's at once", body = BoostView),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json")))]
async fn add_boost(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewBoostBody>,
) -> Result<(StatusCode, Json<BoostView>), ApiError> {
    let id = path_id(&id)?;
    let reason = body.reason.unwrap_or_default();
    let boost = state
        .services
        .admin
        .add_boost(Some(auth.user.id), id, body.extra, &body.from, &body.to, reason, auth.now)
        .await?;
    Ok((StatusCode::CREATED, Json(BoostView::from(boost))))
}

#[utoipa::path(delete, path = "/v1/admin/users/{id}/boosts/{boost_id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path), ("boost_id" = String, Path)),
    responses((status = 204, description = "The boost is taken back, today's share at once"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such user or boost", body = Problem, content_type = "application/problem+json")))]
async fn delete_boost(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path((id, boost_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (Ok(id), Ok(boost_id)) = (Uuid::parse_str(&id), Uuid::parse_str(&boost_id)) else {
        return Err(ApiError::NotFound);
    };
    state.services.admin.delete_boost(Some(auth.user.id), id, boost_id, auth.now).await?;
    Ok(StatusCode::NO_CONTENT)
}
