//! Extractors that answer bad input with [`ApiError`] JSON instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::access::{self, Caller};
use crate::app::Services;
use crate::domain::{DocumentId, DossierId};

impl FromRequestParts<Services> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Services) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::Unauthorized("invalid or expired token"))
            })
            .transpose()?;
        Ok(access::authenticate(&state.db, header).await?)
    }
}

/// A JSON body; a malformed one is a 400 saying what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "invalid_body",
                "expected a JSON body with Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// Query parameters; malformed ones are a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::bad_request("invalid_query", e.body_text()))
            }
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// Path parameters, each parsed before any query runs. An id that cannot exist is a 404,
/// exactly like one that does not.
macro_rules! id_path {
    ($(#[$doc:meta])* $name:ident, $id:ty) => {
        $(#[$doc])*
        pub struct $name(pub $id);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let Path(raw) = Path::<String>::from_request_parts(parts, state)
                    .await
                    .map_err(|_| ApiError::NotFound)?;
                <$id>::parse(&raw).map($name).ok_or(ApiError::NotFound)
            }
        }
    };
}

id_path!(
    /// `{id}` of a dossier.
    DossierPath,
    DossierId
);
id_path!(
    /// `{id}` of a document.
    DocumentPath,
    DocumentId
);

/// `{id}/versions/{n}` of a document.
pub struct VersionPath(pub DocumentId, pub i32);

impl<S: Send + Sync> FromRequestParts<S> for VersionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((raw_id, raw_n)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let id = DocumentId::parse(&raw_id).ok_or(ApiError::NotFound)?;
        let n = raw_n
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(ApiError::NotFound)?;
        Ok(VersionPath(id, n))
    }
}

/// A multipart body; anything else is a 400.
pub struct ApiMultipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for ApiMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::extract::Multipart::from_request(req, state)
            .await
            .map(ApiMultipart)
            .map_err(|e| ApiError::bad_request("invalid_upload", e.body_text()))
    }
}

/// The client's network address, for the audit trail and rate limits.
pub struct ClientAddress(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
        ))
    }
}
