//! Browser sessions and the token every form carries.
//!
//! The session cookie holds a random secret; the database keeps only its SHA-256, with the
//! session's form token, its last activity (idle expiry) and its absolute end. The cookie is
//! `HttpOnly`, `SameSite=Lax` (a link in a notification e-mail still arrives signed in) and
//! `Secure` whenever the site is reached over TLS. Before signing in, forms carry the value
//! of a separate random cookie (double submit); after, the session's own token.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::WebError;
use crate::access::Caller;
use crate::app::Services;
use crate::db::web::{self as store, Session};
use crate::http::ClientAddress;

/// The session cookie.
pub const SESSION_COOKIE: &str = "fascicolo_session";
/// The form-token cookie of visitors not signed in.
const CSRF_COOKIE: &str = "fascicolo_csrf";
/// Activity is written down at most this often, not on every request.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Whoever is asking for a page: signed in or not.
#[derive(Clone, Debug)]
pub struct Visitor {
    /// The live session, if the browser has one.
    pub session: Option<Session>,
    /// The browser's network address.
    pub client: Option<String>,
    /// The token this visitor's forms carry.
    pub csrf: String,
    /// Whether the site is reached over TLS (directly or through a trusted proxy).
    pub secure: bool,
}

/// The form token of a visitor not signed in, put in the request by [`anonymous_csrf`].
#[derive(Clone, Debug)]
struct AnonymousCsrf(String);

/// Gives every visitor without one a form-token cookie, so the sign-in forms carry a token
/// that a page on another site cannot know.
pub async fn anonymous_csrf(
    axum::extract::State(services): axum::extract::State<Services>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let existing = cookie(&parts.headers, CSRF_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let (value, new) = match existing {
        Some(v) => (v, false),
        None => (crate::credentials::new_secret(), true),
    };
    parts.extensions.insert(AnonymousCsrf(value.clone()));
    let secure = secure(&parts, &services);
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if new {
        let cookie = format!(
            "{CSRF_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The value of cookie `name` in a request's headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_owned())
}

impl Visitor {
    /// The visitor of a request: their session, if the cookie names a live one.
    pub async fn from_parts(parts: &mut Parts, services: &Services) -> Self {
        let ClientAddress(client) = ClientAddress::from_parts(parts, services);
        let secure = secure(parts, services);
        let anonymous = parts
            .extensions
            .get::<AnonymousCsrf>()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        let session = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(secret) if secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let hash = crate::access::hash_token(&secret);
                match store::session(
                    &services.db,
                    &services.config.tenant,
                    &hash,
                    idle_ms(services),
                )
                .await
                {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a session");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(s) = &session
            && crate::db::now_ms() - s.last_seen_at > TOUCH_EVERY_MS
            && let Err(e) = store::touch(&services.db, &s.id_hash).await
        {
            tracing::warn!(error = %e, "recording session activity");
        }
        let csrf = session.as_ref().map_or(anonymous, |s| s.csrf.clone());
        Visitor {
            session,
            client,
            csrf,
            secure,
        }
    }

    /// Checks the token a form came with.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), WebError> {
        let expected = self.csrf.as_bytes();
        let submitted = submitted.as_bytes();
        let differ = expected.len() != submitted.len()
            || expected
                .iter()
                .zip(submitted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0;
        if expected.is_empty() || differ {
            return Err(WebError::Csrf);
        }
        Ok(())
    }

    /// The signed-in caller, or a redirect to the sign-in page that comes back to `path`.
    pub fn caller(&self, path: &str) -> Result<Caller, WebError> {
        self.session
            .as_ref()
            .map(|s| Caller::from_user(s.user.clone()))
            .ok_or_else(|| WebError::SignIn(path.to_owned()))
    }

    /// The `Set-Cookie` value that opens a session with `secret`.
    pub fn session_cookie(&self, secret: &str, max_age_s: i64) -> String {
        format!(
            "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn cleared_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// Whether the request reached the site over TLS: the public address says `https`, or a
/// trusted proxy said so (`X-Forwarded-Proto`, honoured only when the peer is one).
fn secure(parts: &Parts, services: &Services) -> bool {
    if services.config.public_url.starts_with("https://") {
        return true;
    }
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    peer.is_some_and(|ip| {
        services
            .config
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip))
    }) && parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Milliseconds without a request after which a session ends.
pub fn idle_ms(services: &Services) -> i64 {
    i64::from(services.config.sign_in_idle_minutes) * 60_000
}

impl FromRequestParts<Services> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Services,
    ) -> Result<Self, Self::Rejection> {
        Ok(Visitor::from_parts(parts, services).await)
    }
}
