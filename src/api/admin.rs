//! The admin API, for the app's own backend (admin bearer key): tokens, users, group
//! creation, deactivation. Group operations it shares with users are in `groups`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::groups::{valid_group_info, valid_uids};
use super::{publish, Admin, AppState};
use crate::auth::token_ttl_s;
use crate::error::ApiError;
use crate::model::refusal::Refusal;
use crate::model::valid_id;
use crate::store::{NewGroup, UserUpsert};

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
