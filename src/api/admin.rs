//! The admin API, for the app's own backend (admin bearer key).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AppState};
use crate::error::ApiError;
use crate::protocol::{valid_id, RemovalReason};
use crate::registry::{Deactivated, MemberRemoved, MembersAdded};
use crate::store::UserUpsert;

/// Longest token lifetime the admin API issues: 30 days.
const MAX_TOKEN_TTL_S: u64 = 30 * 24 * 3600;
const DEFAULT_TOKEN_TTL_S: u64 = 3600;

#[derive(Deserialize)]
pub struct TokenRequest {
    uid: u64,
    ttl_s: Option<u64>,
    dev: Option<String>,
}

/// `POST /v1/admin/tokens`: issues a user token (404 for a user never created, 403 for a
/// deactivated one).
pub async fn tokens_route(
    _: Admin,
    body: web::Json<TokenRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let TokenRequest { uid, ttl_s, dev } = body.into_inner();
    let uid = valid_id(uid)?;
    let ttl_s = ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S);
    if ttl_s == 0 || ttl_s > MAX_TOKEN_TTL_S {
        return Err(ApiError::bad_request(format!(
            "ttl_s must be 1..={MAX_TOKEN_TTL_S}"
        )));
    }
    match state.store.user_active(uid).await? {
        Some(true) => {}
        Some(false) => return Err(ApiError::forbidden(format!("user {uid} is deactivated"))),
        None => return Err(ApiError::not_found(format!("user {uid} does not exist"))),
    }
    Ok(HttpResponse::Ok().json(json!({"token": state.tokens.issue(uid, ttl_s, dev)})))
}

#[derive(Deserialize)]
pub struct UsersRequest {
    users: Vec<UserUpsert>,
}

/// `POST /v1/admin/users`: creates users or updates their profiles.
pub async fn users_route(
    _: Admin,
    body: web::Json<UsersRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let users = body.into_inner().users;
    users
        .iter()
        .try_for_each(|user| valid_id(user.uid).map(drop))?;
    state.store.upsert_users(&users).await?;
    Ok(HttpResponse::Ok().json(json!({"upserted": users.len()})))
}

#[derive(Deserialize)]
pub struct CreateGroup {
    gid: Option<u64>,
    name: String,
    owner: u64,
    #[serde(default)]
    members: Vec<u64>,
}

/// `POST /v1/admin/groups`: creates a group; `gid` may be chosen.
pub async fn create_group_route(
    _: Admin,
    body: web::Json<CreateGroup>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let CreateGroup {
        gid,
        name,
        owner,
        members,
    } = body.into_inner();
    let gid = gid.map(valid_id).transpose()?;
    members
        .iter()
        .try_for_each(|&uid| valid_id(uid).map(drop))?;
    let gid = state
        .store
        .create_group(gid, &name, valid_id(owner)?, &members)
        .await?;
    let mut uids = members;
    uids.push(owner);
    // Founding members' online sessions join the group; no event per founding member.
    state
        .registry
        .send(MembersAdded {
            gid,
            uids,
            announce: false,
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"gid": gid})))
}

#[derive(Deserialize)]
pub struct AddMembers {
    uids: Vec<u64>,
}

/// `POST /v1/admin/groups/{gid}/members`: adds members; adding one twice is a no-op.
pub async fn add_members_route(
    _: Admin,
    gid: web::Path<u64>,
    body: web::Json<AddMembers>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    body.uids
        .iter()
        .try_for_each(|&uid| valid_id(uid).map(drop))?;
    let added = state.store.add_members(gid, &body.uids).await?;
    if !added.is_empty() {
        state
            .registry
            .send(MembersAdded {
                gid,
                uids: added.clone(),
                announce: true,
            })
            .await?;
    }
    Ok(HttpResponse::Ok().json(json!({"added": added})))
}

/// `DELETE /v1/admin/groups/{gid}/members/{uid}`: removes a member (204 also when the
/// user was not one).
pub async fn remove_member_route(
    _: Admin,
    path: web::Path<(u64, u64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = path.into_inner();
    let (gid, uid) = (valid_id(gid)?, valid_id(uid)?);
    if state.store.remove_member(gid, uid).await? {
        state
            .registry
            .send(MemberRemoved {
                gid,
                uid,
                by: None,
                reason: RemovalReason::Removed,
            })
            .await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/admin/users/{uid}/deactivate`: removes the user from every group (each group
/// is told) and closes their sessions with 4003.
pub async fn deactivate_route(
    _: Admin,
    uid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let uid = valid_id(*uid)?;
    let gids = state.store.deactivate_user(uid).await?;
    state.registry.send(Deactivated { uid, gids }).await?;
    Ok(HttpResponse::NoContent().finish())
}
