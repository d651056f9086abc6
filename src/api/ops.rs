//! Operational endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::error::ApiError;
use crate::metrics;

/// `GET /healthz`: the process is up.
pub async fn healthz_route() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// How long readiness waits for PostgreSQL: probes have short timeouts of their own.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: storage is prepared and answers within `READY_WITHIN`.
pub async fn readyz_route(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.require_ready()?;
    tokio::time::timeout(READY_WITHIN, state.store.ping())
        .await
        .map_err(|_| ApiError::unavailable())??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_route() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::global().render())
}
