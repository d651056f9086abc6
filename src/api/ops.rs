//! Operational endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::error::ApiError;
use crate::metrics;

/// `GET /healthz`: the process is up.
pub async fn healthz_route() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: storage answers.
pub async fn readyz_route(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_route() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::global().render())
}
