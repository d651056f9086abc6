//! Group operations. The same handlers serve users (who act by their role in the group) and
//! the admin API (which may do anything), mounted once for each kind of [`Caller`].

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{publish, AppState, Caller, User};
use crate::error::ApiError;
use crate::model::check_length;
use crate::model::effect::Effect;
use crate::model::sync::{GroupEdit, GroupInfo, MAX_GROUP_DESCRIPTION_CHARS, MAX_GROUP_NAME_CHARS};
use crate::model::valid_id;
use crate::model::Role;
use crate::session::recall;
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    members: Vec<u64>,
}

/// `POST /v1/groups`: a user creates a group and owns it.
#[utoipa::path(
    post,
    path = "/v1/groups",
    tag = "groups",
    security(("user_token" = [])),
    request_body = CreateGroup,
    responses(
        (status = 201, description = "The group created", body = GroupInfo),
        (status = 404, description = "not_found: a member named is not an active user", body = super::error_response::HttpErrorBody),
    ),
)]
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
#[utoipa::path(
    patch,
    path = "/v1/groups/{gid}",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    request_body = GroupEdit,
    responses(
        (status = 200, description = "The group as it is now", body = GroupInfo),
        (status = 403, description = "forbidden: the caller's role does not allow it", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group, or a user named is not a member or not active", body = super::error_response::HttpErrorBody),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    uids: Vec<u64>,
}

/// The members a request added: those not members before.
#[derive(Serialize, ToSchema)]
pub struct AddedMembers {
    added: Vec<u64>,
}

/// `POST /v1/groups/{gid}/members`: adds members (owner or admin); adding twice is a no-op.
#[utoipa::path(
    post,
    path = "/v1/groups/{gid}/members",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    request_body = AddMembers,
    responses(
        (status = 200, description = "Who joined", body = AddedMembers),
        (status = 403, description = "forbidden: the caller's role does not allow it", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group, or a user named is not a member or not active", body = super::error_response::HttpErrorBody),
    ),
)]
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
    Ok(HttpResponse::Ok().json(AddedMembers { added }))
}

/// `DELETE /v1/groups/{gid}/members/{uid}`: removes a member (204 also for a non-member);
/// a user removing themself quits.
#[utoipa::path(
    delete,
    path = "/v1/groups/{gid}/members/{uid}",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group"), ("uid" = u64, Path, description = "The member")),
    responses(
        (status = 204, description = "The user is not a member (any more)"),
        (status = 403, description = "forbidden: the caller's role does not allow it", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group, or a user named is not a member or not active", body = super::error_response::HttpErrorBody),
    ),
)]
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

/// `POST /v1/groups/{gid}/messages/{msgid}/recall`: recalls a message — the sender within
/// HERALD_RECALL_WINDOW_S, an owner or admin (or the admin API) any at any time. Its body
/// goes, its msgid stays (a tombstone); online members get `message_recalled`. Recalling a
/// tombstone again answers the same.
#[utoipa::path(
    post,
    path = "/v1/groups/{gid}/messages/{msgid}/recall",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group"), ("msgid" = u64, Path, description = "The message")),
    responses(
        (status = 204, description = "The message is a tombstone (now, or already before)"),
        (status = 403, description = "forbidden: not a member, not the sender and not an owner or admin, or past the recall window", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group or message", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn recall_route<C: Caller>(
    caller: C,
    path: web::Path<(u64, u64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (gid, msgid) = path.into_inner();
    let (gid, msgid) = (valid_id(gid)?, valid_id(msgid)?);
    recall(&state.sessions, gid, msgid, caller.acting_uid()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/groups/{gid}/leave`: the user quits the group.
#[utoipa::path(
    post,
    path = "/v1/groups/{gid}/leave",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    responses(
        (status = 204, description = "The user left"),
        (status = 404, description = "not_found: no such group, or a user named is not a member or not active", body = super::error_response::HttpErrorBody),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    #[schema(examples("admin", "member"))]
    role: String,
}

/// `PUT /v1/groups/{gid}/members/{uid}/role`: makes a member admin or member (owner only).
#[utoipa::path(
    put,
    path = "/v1/groups/{gid}/members/{uid}/role",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group"), ("uid" = u64, Path, description = "The member")),
    request_body = SetRole,
    responses(
        (status = 204, description = "The role is set"),
        (status = 403, description = "forbidden: the caller's role does not allow it", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group, or a user named is not a member or not active", body = super::error_response::HttpErrorBody),
    ),
)]
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
#[utoipa::path(
    delete,
    path = "/v1/groups/{gid}",
    tag = "groups",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    responses(
        (status = 204, description = "The group is disbanded"),
        (status = 403, description = "forbidden: the caller's role does not allow it", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group, or a user named is not a member or not active", body = super::error_response::HttpErrorBody),
    ),
)]
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
