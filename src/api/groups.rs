//! Group operations. The same handlers serve users (who act by their role in the group) and
//! the admin API (which may do anything), mounted once for each kind of [`Caller`].

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{publish, AppState, Caller, User};
use crate::error::ApiError;
use crate::model::check_length;
use crate::model::effect::Effect;
use crate::model::sync::{GroupEdit, MAX_GROUP_DESCRIPTION_CHARS, MAX_GROUP_NAME_CHARS};
use crate::model::valid_id;
use crate::model::Role;
use crate::store::NewGroup;

/// Most members named in one request.
pub const MAX_MEMBERS_PER_REQUEST: usize = 10_000;

/// Checks a list of uids: each in range, and not too many.
pub fn valid_uids(uids: &[u64]) -> Result<(), ApiError> {
    if uids.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_MEMBERS_PER_REQUEST} uids per request"
        )));
    }
    uids.iter().try_for_each(|&uid| valid_id(uid).map(drop))
}

/// A new group's name and description, checked.
pub fn valid_group_info(name: &str, description: &str) -> Result<(), ApiError> {
    check_length("name", Some(name), MAX_GROUP_NAME_CHARS)?;
    check_length(
        "description",
        Some(description),
        MAX_GROUP_DESCRIPTION_CHARS,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    members: Vec<u64>,
}

/// `POST /v1/groups`: a user creates a group and owns it.
pub async fn create_route(
    user: User,
    body: web::Json<CreateGroup>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let CreateGroup {
        name,
        description,
        members,
    } = body.into_inner();
    valid_group_info(&name, &description)?;
    valid_uids(&members)?;
    let group = NewGroup {
        gid: None,
        name: &name,
        description: &description,
        owner: user.uid,
        members: &members,
    };
    let (gid, effects) = state.store.create_group(&group, Some(user.uid)).await?;
    publish(&state, effects).await?;
    let info = state.store.group_info(gid).await?;
    Ok(HttpResponse::Created().json(info))
}

/// `PATCH /v1/groups/{gid}`: changes the name and/or description (owner or admin).
pub async fn update_route<C: Caller>(
    caller: C,
    gid: web::Path<u64>,
    body: web::Json<GroupEdit>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    let edit = body.into_inner().validate()?;
    let effects = state
        .store
        .update_group(gid, &edit, caller.acting_uid())
        .await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::Ok().json(state.store.group_info(gid).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    uids: Vec<u64>,
}

/// `POST /v1/groups/{gid}/members`: adds members (owner or admin); adding twice is a no-op.
pub async fn add_members_route<C: Caller>(
    caller: C,
    gid: web::Path<u64>,
    body: web::Json<AddMembers>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    valid_uids(&body.uids)?;
    let effects = state
        .store
        .add_to_group(gid, &body.uids, caller.acting_uid())
        .await?;
    let added = Effect::joined(&effects);
    publish(&state, effects).await?;
    Ok(HttpResponse::Ok().json(json!({ "added": added })))
}

/// `DELETE /v1/groups/{gid}/members/{uid}`: removes a member (204 also for a non-member);
/// a user removing themself quits.
pub async fn remove_member_route<C: Caller>(
    caller: C,
    path: web::Path<(u64, u64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = path.into_inner();
    let (gid, uid) = (valid_id(gid)?, valid_id(uid)?);
    let effects = state
        .store
        .remove_from_group(gid, uid, caller.acting_uid())
        .await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/groups/{gid}/leave`: the user quits the group.
pub async fn leave_route(
    user: User,
    gid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    let effects = state
        .store
        .remove_from_group(gid, user.uid, Some(user.uid))
        .await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    role: String,
}

/// `PUT /v1/groups/{gid}/members/{uid}/role`: makes a member admin or member (owner only).
pub async fn set_role_route<C: Caller>(
    caller: C,
    path: web::Path<(u64, u64)>,
    body: web::Json<SetRole>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = path.into_inner();
    let (gid, uid) = (valid_id(gid)?, valid_id(uid)?);
    let role = match Role::parse(&body.role) {
        Some(role @ (Role::Admin | Role::Member)) => role,
        _ => return Err(ApiError::bad_request("role must be `admin` or `member`")),
    };
    let effects = state
        .store
        .set_role(gid, uid, role, caller.acting_uid())
        .await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /v1/groups/{gid}`: disbands the group (owner only).
pub async fn disband_route<C: Caller>(
    caller: C,
    gid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    let effects = state.store.disband_group(gid, caller.acting_uid()).await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}
