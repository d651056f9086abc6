//! A user's own profile and their sync.

use actix_web::{web, HttpResponse};

use super::{publish, AppState, User};
use crate::budget::RequestKind;
use crate::error::ApiError;
use crate::model::sync::{ProfileEdit, SyncReply, SyncRequest, UserInfo};

/// `GET /v1/me`: the user's profile with its versions.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "user",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The profile", body = UserInfo),
    ),
)]
pub async fn profile_route(
    user: User,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.profile(user.uid).await?))
}

/// `PATCH /v1/me`: changes some of the profile's fields; only changed fields get versions.
#[utoipa::path(
    patch,
    path = "/v1/me",
    tag = "user",
    security(("user_token" = [])),
    request_body = ProfileEdit,
    responses(
        (status = 200, description = "The profile as it is now", body = UserInfo),
    ),
)]
pub async fn edit_profile_route(
    user: User,
    body: web::Json<ProfileEdit>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let edit = body.into_inner().validate()?;
    let effects = state.store.update_profile(user.uid, edit).await?;
    publish(&state, effects).await?;
    Ok(HttpResponse::Ok().json(state.store.profile(user.uid).await?))
}

/// `POST /v1/sync`: what changed since the client's versions.
#[utoipa::path(
    post,
    path = "/v1/sync",
    tag = "user",
    security(("user_token" = [])),
    request_body = SyncRequest,
    responses(
        (status = 200, description = "What changed since the versions sent", body = SyncReply),
    ),
)]
pub async fn sync_route(
    user: User,
    body: web::Json<SyncRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().validate()?;
    state.charge(user.uid, RequestKind::sync(&request))?;
    Ok(HttpResponse::Ok().json(state.store.sync(user.uid, &request).await?))
}
