//! Operational endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::metrics;

/// What a probe answers: `ok` (alive) or `ready`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProbeStatus {
    #[schema(examples("ok", "ready"))]
    status: &'static str,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process is up", body = ProbeStatus)),
)]
pub async fn healthz_route() -> HttpResponse {
    HttpResponse::Ok().json(ProbeStatus { status: "ok" })
}

/// How long readiness waits for PostgreSQL: probes have short timeouts of their own.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: storage is prepared and answers within `READY_WITHIN`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = ProbeStatus),
        (status = 503, description = "unavailable: starting, storage does not answer, or the JWKS of HERALD_JWKS_URL never loaded", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn readyz_route(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.require_ready()?;
    if let Some(reason) = state.tokens.not_ready() {
        return Err(ApiError::new(ErrorCode::Unavailable, reason));
    }
    tokio::time::timeout(READY_WITHIN, state.store.ping())
        .await
        .map_err(|_| ApiError::unavailable())??;
    Ok(HttpResponse::Ok().json(ProbeStatus { status: "ready" }))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
)]
pub async fn metrics_route() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::global().render())
}
