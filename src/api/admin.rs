//! The admin API, for the app's own backend (admin bearer key): tokens, users, group
//! creation, deactivation, groups' retention limits. Group operations it shares with users are in `groups`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::groups::{valid_group_info, valid_uids};
use super::{publish, Admin, AppState};
use crate::auth::token_ttl_s;
use crate::error::ApiError;
use crate::model::refusal::Refusal;
use crate::model::{valid_id, MAX_ID};
use crate::store::{GroupRetention, NewGroup, UserUpsert};

#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    uid: u64,
    /// Lifetime in seconds, 1..=30 days; one hour when absent.
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_s: Option<u64>,
    /// The device the token is for, carried in its claims.
    dev: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    token: String,
}

/// `POST /v1/admin/tokens`: issues a user token (404 for a user never created, 403 for a
/// deactivated one).
#[utoipa::path(
    post,
    path = "/v1/admin/tokens",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The token", body = IssuedToken),
        (status = 403, description = "forbidden: the user is deactivated", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: the user was never created", body = super::error_response::HttpErrorBody),
        (status = 409, description = "conflict: the gateway issues no tokens (HERALD_JWT_SECRET is not set)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn tokens_route(
    _: Admin,
    body: web::Json<TokenRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let TokenRequest { uid, ttl_s, dev } = body.into_inner();
    let uid = valid_id(uid)?;
    let ttl_s =
        token_ttl_s(ttl_s).map_err(|problem| ApiError::bad_request(format!("ttl_s {problem}")))?;
    match state.store.user_active(uid).await? {
        Some(true) => {}
        Some(false) => return Err(Refusal::UserDeactivated { uid }.into()),
        None => return Err(Refusal::UserMissing { uid }.into()),
    }
    Ok(HttpResponse::Ok().json(IssuedToken {
        token: state.issuer.issue(uid, ttl_s, dev)?,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct UsersRequest {
    users: Vec<UserUpsert>,
}

#[derive(Serialize, ToSchema)]
pub struct Upserted {
    /// Users created or updated.
    upserted: usize,
}

/// `POST /v1/admin/users`: creates users or updates their profiles.
#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = UsersRequest,
    responses((status = 200, description = "Users created or updated", body = Upserted)),
)]
pub async fn users_route(
    _: Admin,
    body: web::Json<UsersRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let users = body.into_inner().users;
    for user in &users {
        valid_id(user.uid)?;
        user.edit().validate()?;
    }
    let effects = state.store.upsert_users(&users).await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::Ok().json(Upserted {
        upserted: users.len(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = AdminCreateGroup)]
pub struct CreateGroup {
    gid: Option<u64>,
    name: String,
    #[serde(default)]
    description: String,
    owner: u64,
    #[serde(default)]
    members: Vec<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedGroup {
    gid: u64,
}

/// `POST /v1/admin/groups`: creates a group; `gid` may be chosen.
#[utoipa::path(
    post,
    path = "/v1/admin/groups",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = CreateGroup,
    responses(
        (status = 200, description = "The group was created", body = CreatedGroup),
        (status = 404, description = "not_found: the owner or a member is not an active user", body = super::error_response::HttpErrorBody),
        (status = 409, description = "conflict: the gid is taken", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn create_group_route(
    _: Admin,
    body: web::Json<CreateGroup>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let CreateGroup {
        gid,
        name,
        description,
        owner,
        members,
    } = body.into_inner();
    valid_group_info(&name, &description)?;
    valid_uids(&members)?;
    let group = NewGroup {
        gid: gid.map(valid_id).transpose()?,
        name: &name,
        description: &description,
        owner: valid_id(owner)?,
        members: &members,
    };
    let (gid, effects) = state.store.create_group(&group, None).await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::Ok().json(CreatedGroup { gid }))
}

/// `POST /v1/admin/users/{uid}/deactivate`: in one transaction the user leaves every group
/// (each group is told, as for a removal) and every friend list; then their sessions close
/// with 4003.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{uid}/deactivate",
    tag = "admin",
    security(("admin_key" = [])),
    params(("uid" = u64, Path, description = "The user")),
    responses(
        (status = 204, description = "The user is deactivated"),
        (status = 404, description = "not_found: the user was never created", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn deactivate_route(
    _: Admin,
    uid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let uid = valid_id(*uid)?;
    let effects = state.store.deactivate_user(uid).await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A group's own retention limits: `null` (or absent) takes the deployment's
/// (`HERALD_RETENTION_MAX_AGE`, `HERALD_RETENTION_MAX_MESSAGES`); the stricter of the two
/// applies.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionLimits {
    /// Seconds a message is kept, at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    max_age_s: Option<u64>,
    /// Newest messages kept, at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    max_messages: Option<u64>,
}

/// A group's retention as the admin API shows it.
#[derive(Serialize, ToSchema)]
pub struct RetentionView {
    gid: u64,
    /// The group's own age limit in seconds; `null`: the deployment's.
    max_age_s: Option<u64>,
    /// The group's own count limit; `null`: the deployment's.
    max_messages: Option<u64>,
    /// The oldest msgid still stored; `null` when the group holds no message.
    first: Option<u64>,
    /// The group's newest msgid.
    latest: u64,
}

impl From<GroupRetention> for RetentionView {
    fn from(retention: GroupRetention) -> Self {
        RetentionView {
            gid: retention.gid,
            max_age_s: retention.max_age_s,
            max_messages: retention.max_messages,
            first: retention.first,
            latest: retention.latest,
        }
    }
}

/// A limit given: at least 1, and within what PostgreSQL's milliseconds hold.
fn valid_limit(name: &str, limit: Option<u64>) -> Result<Option<u64>, ApiError> {
    match limit {
        Some(0) => Err(ApiError::bad_request(format!(
            "{name} must be at least 1 (null: the deployment's)"
        ))),
        Some(limit) if limit > MAX_ID => Err(ApiError::bad_request(format!(
            "{name} must be at most {MAX_ID}"
        ))),
        limit => Ok(limit),
    }
}

/// `GET /v1/admin/groups/{gid}/retention`: the group's own retention limits and the msgids it
/// holds.
#[utoipa::path(
    get,
    path = "/v1/admin/groups/{gid}/retention",
    tag = "admin",
    security(("admin_key" = [])),
    params(("gid" = u64, Path, description = "The group")),
    responses(
        (status = 200, description = "The group's retention", body = RetentionView),
        (status = 404, description = "not_found: no such group", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn retention_route(
    _: Admin,
    gid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    let retention = state.store.group_retention(gid).await?;
    Ok(HttpResponse::Ok().json(RetentionView::from(retention)))
}

/// `PUT /v1/admin/groups/{gid}/retention`: sets the group's own retention limits (idempotent);
/// the pruner applies them at its next run.
#[utoipa::path(
    put,
    path = "/v1/admin/groups/{gid}/retention",
    tag = "admin",
    security(("admin_key" = [])),
    params(("gid" = u64, Path, description = "The group")),
    request_body = RetentionLimits,
    responses(
        (status = 200, description = "The group's retention as it is now", body = RetentionView),
        (status = 400, description = "bad_request: a limit below 1", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn set_retention_route(
    _: Admin,
    gid: web::Path<u64>,
    body: web::Json<RetentionLimits>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    let RetentionLimits {
        max_age_s,
        max_messages,
    } = body.into_inner();
    let retention = state
        .store
        .set_group_retention(
            gid,
            valid_limit("max_age_s", max_age_s)?,
            valid_limit("max_messages", max_messages)?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(RetentionView::from(retention)))
}
