//! The WebSocket upgrade.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{require_active, AppState};
use crate::auth::{bearer, unauthorized};
use crate::budget::RequestKind;
use crate::error::ApiError;
use crate::session;

#[derive(Deserialize)]
struct TokenQuery {
    /// The user token, for clients (browsers) that cannot send an `Authorization` header.
    token: Option<String>,
}

/// `GET /v1/ws`: authenticates (401/403 before any upgrade), then starts a session.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "user",
    security(("user_token" = []), ()),
    params(("token" = Option<String>, Query, description = "The user token, when no bearer header is sent")),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket session of docs/protocol.md"),
        (status = 400, description = "bad_request: not a WebSocket upgrade, or a bad query", body = super::error_response::HttpErrorBody),
        (status = 401, description = "unauthorized: no token, or an invalid or expired one", body = super::error_response::HttpErrorBody),
        (status = 403, description = "forbidden: the user is deactivated, or the origin is not allowed", body = super::error_response::HttpErrorBody),
        (status = 429, description = "rate_limited: the user's request budget is spent", body = super::error_response::HttpErrorBody),
        (status = 503, description = "unavailable: starting, or storage unavailable; retry", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn ws_route(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.require_ready()?;
    check_origin(&req, &state.allowed_origins)?;
    let header = bearer(
        req.headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok()),
    );
    let query = web::Query::<TokenQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let token = header
        .or(query.token.as_deref())
        .ok_or_else(|| unauthorized("missing token: send a bearer header or ?token="))?;
    let identity = state.tokens.verify(token).await?;
    tracing::Span::current().record("uid", identity.uid);
    state.charge(identity.uid, RequestKind::Connect)?;
    require_active(&state.store, identity.uid).await?;
    session::start(identity, state.sessions.clone(), &req, stream)
        .map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))
}

/// Refuses (403) a browser's upgrade from an origin not allowed. Requests without `Origin`
/// do not come from a browser page and are not cross-site: they pass.
fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    if allowed.is_empty() {
        return Ok(());
    }
    match req.headers().get("origin").map(|h| h.to_str()) {
        None => Ok(()),
        Some(Ok(origin)) if allowed.iter().any(|a| a == origin.trim_end_matches('/')) => Ok(()),
        Some(_) => Err(ApiError::forbidden("this origin may not open WebSockets")),
    }
}
