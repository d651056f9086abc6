//! How an [`ApiError`] reaches an HTTP client: its status and a JSON error body, counted in
//! the metrics.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::metrics;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorBody)]
pub(super) struct HttpErrorBody<'a> {
    error: HttpErrorDetail<'a>,
}

/// An error as the HTTP API shows it, alone or inside a batch's results.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub(super) struct HttpErrorDetail<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl<'a> From<&'a ApiError> for HttpErrorDetail<'a> {
    fn from(error: &'a ApiError) -> Self {
        HttpErrorDetail {
            code: error.code,
            message: &error.message,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        metrics::global().error(self.code);
        HttpResponse::build(self.code.status()).json(HttpErrorBody {
            error: HttpErrorDetail::from(self),
        })
    }
}
