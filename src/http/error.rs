//! The one HTTP error type: every failure becomes `{"error":{"code","message"}}` with the
//! right status. Internal errors are logged in full and answered without detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::{AuthError, Denied, Refused};
use crate::blobs::BlobError;
use crate::db::DbError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Does not exist, or the caller may not see it: the two are indistinguishable.
    #[error("not found")]
    NotFound,
    /// The request is malformed; the message says how.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The caller may see the object but not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// A transition that does not exist from the current state.
    #[error("{message}")]
    IllegalTransition {
        /// Explanation.
        message: String,
        /// The transitions the caller may make now.
        allowed: Vec<String>,
    },
    /// The request conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// The upload exceeds the configured limit.
    #[error("the upload exceeds the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// The caller's uploads would pass their quota.
    #[error("this upload would pass your upload quota of {0} bytes")]
    QuotaExceeded(u64),
    /// A `Range` outside the content.
    #[error("the requested range is outside the content")]
    RangeNotSatisfiable(u64),
    /// Too many requests from this client or caller; retry after the given seconds.
    #[error("{message}")]
    TooManyRequests {
        /// Explanation.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The server cannot answer now (a search over its time budget); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Stored bytes failed their integrity check; they are not served.
    #[error("the stored content failed its integrity check and cannot be served")]
    Integrity,
    /// Anything else: logged, answered as a bare 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`.
    code: String,
    /// Explanation for people.
    message: String,
}

impl ApiError {
    /// A 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl ToString) -> Self {
        ApiError::BadRequest {
            code,
            message: message.to_string(),
        }
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::IllegalTransition { .. } => (StatusCode::CONFLICT, "illegal_transition"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::QuotaExceeded(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            ApiError::RangeNotSatisfiable(_) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, "integrity_error"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Builds an error response with a given status, code and message.
pub(crate) fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        if let ApiError::IllegalTransition { allowed, .. } = &self {
            let body = serde_json::json!({"error": {"code": code, "message": message, "allowed": allowed}});
            return (status, axum::Json(body)).into_response();
        }
        let mut response = error_response(status, code, message);
        match self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"fascicolo\""),
                );
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::RangeNotSatisfiable(size) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::Unauthorized("missing bearer token"),
            AuthError::Invalid => ApiError::Unauthorized("invalid or expired token"),
            AuthError::Db(e) => e.into(),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        ApiError::Forbidden(e.0.to_owned())
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Denied(d) => d.into(),
            Refused::Closed => ApiError::Conflict(
                "the dossier's state takes no such upload: a concluded dossier takes only new \
                 documents of the office, a withdrawn or archived one nothing"
                    .into(),
            ),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { limit } => ApiError::PayloadTooLarge(limit),
            BlobError::Corrupt(_) => ApiError::Integrity,
            other => ApiError::Internal(other.into()),
        }
    }
}
