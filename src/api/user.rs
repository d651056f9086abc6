//! Endpoints for users (bearer JWT): pull, ack, their groups.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, User};
use crate::budget::RequestKind;
use crate::error::ApiError;
use crate::messages::{AckUpTo, OnlineIn, ReadsOf};
use crate::model::{valid_id, GroupCursor, Mark, MessageView, ReadPosition};
use crate::protocol::pull_limit;
use crate::registry::directory::{ask_group, LiveCursors};
use crate::session::pull_page;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page starts after this msgid.
    #[serde(default)]
    after: u64,
    /// Messages in the page, 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct PageBody<'a> {
    gid: u64,
    msgs: &'a [MessageView],
    more: bool,
    /// The group's first retained msgid, present when retention pruned messages above
    /// `after`: the page starts there, and history before it is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<u64>,
}

/// `GET /v1/groups/{gid}/messages?after=&limit=`: a page of messages, members only.
#[utoipa::path(
    get,
    path = "/v1/groups/{gid}/messages",
    tag = "user",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group"), PageQuery),
    responses(
        (status = 200, description = "A page of messages, oldest first", body = PageBody),
        (status = 404, description = "not_found: no such group (a non-member is refused with 403)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn messages_route(
    user: User,
    gid: web::Path<u64>,
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    let limit = pull_limit(query.limit)?;
    state.charge(user.uid, RequestKind::Pull { limit })?;
    let page = pull_page(&state.store, gid, user.uid, query.after, limit).await?;
    Ok(HttpResponse::Ok().json(PageBody {
        gid,
        msgs: &page.msgs,
        more: page.more,
        first: page.first,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct MarkBody {
    msgid: u64,
}

/// `POST /v1/groups/{gid}/ack {"msgid"}`: cumulative ack, never backwards.
#[utoipa::path(
    post,
    path = "/v1/groups/{gid}/ack",
    tag = "user",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    request_body = MarkBody,
    responses(
        (status = 204, description = "Received up to msgid"),
        (status = 404, description = "not_found: no such group (a non-member is refused with 403)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn ack_route(
    user: User,
    gid: web::Path<u64>,
    body: web::Json<MarkBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    move_mark(&state, user, *gid, body.msgid, Mark::Received).await
}

/// `POST /v1/groups/{gid}/read {"msgid"}`: the member has read up to it; never backwards.
#[utoipa::path(
    post,
    path = "/v1/groups/{gid}/read",
    tag = "user",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    request_body = MarkBody,
    responses(
        (status = 204, description = "Read up to msgid"),
        (status = 404, description = "not_found: no such group (a non-member is refused with 403)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn read_route(
    user: User,
    gid: web::Path<u64>,
    body: web::Json<MarkBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    move_mark(&state, user, *gid, body.msgid, Mark::Read).await
}

async fn move_mark(
    state: &AppState,
    user: User,
    gid: u64,
    msgid: u64,
    mark: Mark,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(gid)?;
    let moved = AckUpTo {
        uid: user.uid,
        msgid,
        mark,
    };
    ask_group(&state.directory, gid, moved).await??;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
struct ReadsBody {
    gid: u64,
    reads: Vec<ReadPosition>,
}

/// `GET /v1/groups/{gid}/reads`: how far each member has read the group.
#[utoipa::path(
    get,
    path = "/v1/groups/{gid}/reads",
    tag = "user",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    responses(
        (status = 200, description = "Each member's read position", body = ReadsBody),
        (status = 404, description = "not_found: no such group (a non-member is refused with 403)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn reads_route(
    user: User,
    gid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    state.charge(user.uid, RequestKind::Read)?;
    let reads = ask_group(&state.directory, gid, ReadsOf { uid: user.uid }).await??;
    Ok(HttpResponse::Ok().json(ReadsBody { gid, reads }))
}

#[derive(Serialize, ToSchema)]
struct OnlineBody {
    gid: u64,
    uids: Vec<u64>,
}

/// `GET /v1/groups/{gid}/online`: the members online now, anywhere in the cluster.
#[utoipa::path(
    get,
    path = "/v1/groups/{gid}/online",
    tag = "user",
    security(("user_token" = [])),
    params(("gid" = u64, Path, description = "The group")),
    responses(
        (status = 200, description = "The members online", body = OnlineBody),
        (status = 413, description = "too_large: the group is over the presence size (HERALD_PRESENCE_MAX_GROUP)", body = super::error_response::HttpErrorBody),
        (status = 404, description = "not_found: no such group (a non-member is refused with 403)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn online_route(
    user: User,
    gid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gid = valid_id(*gid)?;
    state.charge(user.uid, RequestKind::Read)?;
    let uids = ask_group(
        &state.directory,
        gid,
        OnlineIn {
            uid: user.uid,
            session: None,
        },
    )
    .await??;
    Ok(HttpResponse::Ok().json(OnlineBody { gid, uids }))
}

#[derive(Serialize, ToSchema)]
struct GroupsBody {
    groups: Vec<GroupCursor>,
}

/// `GET /v1/me/groups`: every group of the user with `last_ack` and `latest`.
#[utoipa::path(
    get,
    path = "/v1/me/groups",
    tag = "user",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The user's groups and cursors", body = GroupsBody),
    ),
)]
pub async fn my_groups_route(
    user: User,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let groups = live_cursors(&state, user.uid).await?;
    Ok(HttpResponse::Ok().json(GroupsBody { groups }))
}

/// Every group of the user with its cursor, counting acks held in memory not yet written.
pub async fn live_cursors(state: &AppState, uid: u64) -> Result<Vec<GroupCursor>, ApiError> {
    let stored = state.store.user_groups(uid).await?;
    Ok(state.directory.send(LiveCursors { uid, stored }).await?)
}
