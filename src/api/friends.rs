//! Friends: mutual, by request and acceptance (a request to someone who asked too), or made
//! directly by the app's backend.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{publish, Admin, AppState, User};
use crate::error::ApiError;
use crate::model::valid_id;
use crate::store::{FriendRequest, Friends};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Befriend {
    uid: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Friendship {
    Friends,
    Requested,
}

/// Where a friend request left the two users.
#[derive(Serialize, ToSchema)]
pub struct FriendStatus {
    status: Friendship,
}

/// `POST /v1/friends {"uid"}`: asks to be friends; 200 when they now are, 202 when the
/// request waits for the other side.
#[utoipa::path(
    post,
    path = "/v1/friends",
    tag = "friends",
    security(("user_token" = [])),
    request_body = Befriend,
    responses(
        (status = 200, description = "They are friends now", body = FriendStatus),
        (status = 202, description = "The request waits for the other side", body = FriendStatus),
        (status = 404, description = "not_found: the other user is not an active user", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn request_route(
    user: User,
    body: web::Json<Befriend>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let other = valid_id(body.uid)?;
    let (status, effects) = state.store.request_friend(user.uid, other).await?;
    publish(&state, effects).await?;
    Ok(match status {
        FriendRequest::Friends => HttpResponse::Ok().json(FriendStatus {
            status: Friendship::Friends,
        }),
        FriendRequest::Requested => HttpResponse::Accepted().json(FriendStatus {
            status: Friendship::Requested,
        }),
    })
}

/// `DELETE /v1/friends/{uid}`: ends the friendship, or withdraws or declines a request.
#[utoipa::path(
    delete,
    path = "/v1/friends/{uid}",
    tag = "friends",
    security(("user_token" = [])),
    params(("uid" = u64, Path, description = "The other user")),
    responses(
        (status = 204, description = "No friendship or request between them (any more)"),
        (status = 404, description = "not_found: the other user is not an active user", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn unfriend_route(
    user: User,
    other: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let other = valid_id(*other)?;
    let effects = state.store.set_friendship(user.uid, other, false).await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/friends`: friends with their profiles, and pending requests both ways.
#[utoipa::path(
    get,
    operation_id = "list_friends",
    path = "/v1/friends",
    tag = "friends",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "Friends and requests", body = Friends),
    ),
)]
pub async fn list_route(user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.friends(user.uid).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    uids: [u64; 2],
}

/// `POST /v1/admin/friends {"uids":[a,b]}`: makes two users friends.
#[utoipa::path(
    post,
    path = "/v1/admin/friends",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = Pair,
    responses(
        (status = 204, description = "They are friends"),
        (status = 404, description = "not_found: a user is not an active user", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn admin_befriend_route(
    _: Admin,
    body: web::Json<Pair>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let [a, b] = body.uids;
    let effects = state
        .store
        .set_friendship(valid_id(a)?, valid_id(b)?, true)
        .await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /v1/admin/friends/{uid}/{friend}`: ends a friendship.
#[utoipa::path(
    delete,
    path = "/v1/admin/friends/{uid}/{friend}",
    tag = "admin",
    security(("admin_key" = [])),
    params(("uid" = u64, Path, description = "One user"), ("friend" = u64, Path, description = "The other")),
    responses(
        (status = 204, description = "They are not friends (any more)"),
        (status = 404, description = "not_found: a user is not an active user", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn admin_unfriend_route(
    _: Admin,
    path: web::Path<(u64, u64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (a, b) = path.into_inner();
    let effects = state
        .store
        .set_friendship(valid_id(a)?, valid_id(b)?, false)
        .await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::NoContent().finish())
}
