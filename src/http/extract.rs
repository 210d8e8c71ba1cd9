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
        match access::authenticate(&state.db, &state.callers, header).await {
            Ok(caller) => Ok(caller),
            Err(e @ access::AuthError::Invalid) => {
                // Counted per address and hour, not one audit row each (see
                // `users::record_auth_failure`); an address past the anonymous rate limit is
                // answered 429 without another write, so guessing tokens cannot load the
                // database either.
                let ClientAddress(client) = ClientAddress::from_parts(parts, state);
                state.limits.check(
                    super::limits::Kind::Anonymous,
                    client.as_deref().unwrap_or("unknown"),
                )?;
                crate::db::users::record_auth_failure(
                    &state.db,
                    &state.config.tenant,
                    client.as_deref(),
                    "token",
                )
                .await?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
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
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(super::JSON_BODY_LIMIT as u64))
            }
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

impl FromRequestParts<Services> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Services,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts, services))
    }
}

impl ClientAddress {
    /// The client of a request, from its connection and the trusted proxies' header.
    pub fn from_parts(parts: &Parts, services: &Services) -> Self {
        ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| {
                    client_ip(c.0.ip(), &parts.headers, &services.config.trusted_proxies)
                        .to_string()
                }),
        )
    }
}

/// The client behind `peer`: `peer` itself, unless it is a trusted proxy; then the last
/// address of `X-Forwarded-For` (all such headers, in order) that is not a trusted proxy, or
/// the first one if all are. A malformed entry ends the walk: what is left of it cannot be
/// trusted.
fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Right to left: the last header first, each one's entries from its end.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','));
    for hop in hops {
        let hop = hop.trim();
        let Some(ip) = hop
            .parse::<std::net::IpAddr>()
            .ok()
            .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::client_ip;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_client_is_named_only_by_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().expect("range"),
            "10.0.0.0/8".parse().expect("range"),
        ];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
        let from = |peer: &str, h: &[&str]| client_ip(ip(peer), &headers(h), &trusted);
        // Not a proxy: the header is whatever the client wants it to be.
        assert_eq!(from("192.0.2.9", &["203.0.113.7"]), ip("192.0.2.9"));
        // Behind proxies: the last hop that is not one, across repeated headers.
        assert_eq!(
            from("10.0.0.2", &["198.51.100.1, 203.0.113.7", "10.9.9.9"]),
            ip("203.0.113.7")
        );
        // An IPv4 peer seen through an IPv6 socket is still the proxy.
        assert_eq!(
            from("::ffff:127.0.0.1", &["203.0.113.7"]),
            ip("203.0.113.7")
        );
        // A malformed hop ends the walk at the proxy before it.
        assert_eq!(from("127.0.0.1", &["203.0.113.7, junk"]), ip("127.0.0.1"));
        assert_eq!(from("127.0.0.1", &["junk, 203.0.113.7"]), ip("203.0.113.7"));
        // IPv6 clients, with or without a port.
        assert_eq!(from("127.0.0.1", &["2001:db8::1"]), ip("2001:db8::1"));
        assert_eq!(
            from("127.0.0.1", &["[2001:db8::1]:4711"]),
            ip("2001:db8::1")
        );
        // Only proxies: the first of them.
        assert_eq!(from("127.0.0.1", &["10.1.1.1, 10.2.2.2"]), ip("10.1.1.1"));
        assert_eq!(from("127.0.0.1", &[]), ip("127.0.0.1"));
    }
}
