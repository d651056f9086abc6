//! Friends: mutual, by request and acceptance (a request to someone who asked too), or made
//! directly by the app's backend.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{publish, Admin, AppState, User};
use crate::error::ApiError;
use crate::model::valid_id;
use crate::store::FriendRequest;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Befriend {
    uid: u64,
}

/// `POST /v1/friends {"uid"}`: asks to be friends; 200 when they now are, 202 when the
/// request waits for the other side.
pub async fn request_route(
    user: User,
    body: web::Json<Befriend>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let other = valid_id(body.uid)?;
    let (status, effects) = state.store.request_friend(user.uid, other).await?;
    publish(&state, effects).await?;
    Ok(match status {
        FriendRequest::Friends => HttpResponse::Ok().json(json!({"status": "friends"})),
        FriendRequest::Requested => HttpResponse::Accepted().json(json!({"status": "requested"})),
    })
}

/// `DELETE /v1/friends/{uid}`: ends the friendship, or withdraws or declines a request.
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
pub async fn list_route(user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.friends(user.uid).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    uids: [u64; 2],
}

/// `POST /v1/admin/friends {"uids":[a,b]}`: makes two users friends.
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
