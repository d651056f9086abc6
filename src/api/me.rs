//! A user's own profile and their sync.

use actix_web::{web, HttpResponse};

use super::{publish, AppState, User};
use crate::budget::RequestKind;
use crate::error::ApiError;
use crate::model::sync::{ProfileEdit, SyncRequest};

/// `GET /v1/me`: the user's profile with its versions.
pub async fn profile_route(
    user: User,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.profile(user.uid).await?))
}

/// `PATCH /v1/me`: changes some of the profile's fields; only changed fields get versions.
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
pub async fn sync_route(
    user: User,
    body: web::Json<SyncRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().validate()?;
    state.charge(user.uid, RequestKind::sync(&request))?;
    Ok(HttpResponse::Ok().json(state.store.sync(user.uid, &request).await?))
}
