//! The pages: server-rendered HTML in the design system of Italian public services
//! (Bootstrap Italia), on the same handlers and permission checks as the JSON API.
//!
//! A page handler authenticates its visitor from the session cookie ([`session`]), then
//! calls the API's own handler for what it shows or does, and renders the result. Nothing
//! here computes a permission or runs a query the API would not: a dossier the visitor may
//! not see is the API's 404, rendered as the same "not found" page as a missing one.

mod admin;
mod assets;
mod audit;
mod citizen;
mod desk;
mod document;
mod error;
mod office;
mod public;
mod signin;
pub mod visitor;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use error::WebError;

use crate::access::Caller;
use crate::app::Services;
use crate::domain::Role;

/// Where Bootstrap Italia's files are served; the version in the path lets browsers keep
/// them for a year.
pub const BI: &str = "/static/bootstrap-italia-2.18.3";

/// The routes of every page, with the security headers and the form-origin check.
pub fn router(services: &Services) -> Router<Services> {
    let body_limit = crate::http::uploads::upload_body_limit(services.config.max_upload_bytes);
    Router::new()
        .merge(assets::router())
        .merge(public::router())
        .merge(signin::router())
        .merge(citizen::router(body_limit))
        .merge(document::router())
        .merge(office::router())
        .merge(audit::router())
        .merge(desk::router())
        .merge(admin::router())
        .fallback(|| async { WebError::Api(crate::http::ApiError::NotFound) })
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            error::render_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            visitor::anonymous_csrf,
        ))
        .layer(axum::middleware::from_fn(guard))
}

/// Refuses a form posted from another site (its `Origin` names another host), and sets the
/// security headers on every page: a Content-Security-Policy with no inline script and no
/// framing, no referrer to other sites, no content sniffing.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !same_origin(&request) {
        return WebError::Csrf.into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    );
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
    response
}

/// Whether a request's `Origin`, if it has one, is the host it was sent to.
fn same_origin(request: &Request) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .is_some_and(|o| {
            let port = o.port().map(|p| format!(":{p}")).unwrap_or_default();
            o.host_str()
                .is_some_and(|h| format!("{h}{port}").eq_ignore_ascii_case(host))
        })
}

/// What every page's layout shows: the municipality, who is signed in, the menu, the
/// breadcrumbs, and the token its forms carry.
pub struct Layout {
    /// The municipality's name.
    pub municipality: String,
    /// The page's title.
    pub title: String,
    /// The signed-in person's name, if any.
    pub user: Option<String>,
    /// The main menu.
    pub nav: Vec<Link>,
    /// From the home page to this one (this one last, without a link).
    pub crumbs: Vec<Link>,
    /// The token every form of the page carries.
    pub csrf: String,
    /// Where Bootstrap Italia is served.
    pub bi: &'static str,
}

/// A labelled link.
pub struct Link {
    /// What it says.
    pub label: String,
    /// Where it goes.
    pub href: String,
    /// Whether it is the current page's section.
    pub active: bool,
}

impl Link {
    fn new(label: impl Into<String>, href: impl Into<String>) -> Self {
        Link {
            label: label.into(),
            href: href.into(),
            active: false,
        }
    }
}

impl Layout {
    /// The layout of a page titled `title` for `visitor`, under `section` of the menu.
    pub fn new(
        services: &Services,
        visitor: &visitor::Visitor,
        title: impl Into<String>,
        section: &str,
    ) -> Self {
        let role = visitor.session.as_ref().map(|s| s.user.role);
        let mut nav = vec![Link::new("Servizi", "/servizi")];
        match role {
            Some(Role::Citizen | Role::Professional) => {
                nav.push(Link::new("Le mie pratiche", "/pratiche"));
            }
            Some(Role::Staff) => {
                nav.push(Link::new("Pratiche dell'ufficio", "/ufficio/coda"));
                nav.push(Link::new("Cerca nei documenti", "/ufficio/cerca"));
                nav.push(Link::new("Statistiche", "/ufficio/statistiche"));
                if visitor.session.as_ref().is_some_and(|s| {
                    Caller::from_user(s.user.clone())
                        .may_verify_identities()
                        .is_ok()
                }) {
                    nav.push(Link::new("Sportello", "/sportello/identita"));
                }
            }
            Some(Role::Auditor) => {
                nav.push(Link::new("Cerca nei documenti", "/ufficio/cerca"));
                nav.push(Link::new("Statistiche", "/ufficio/statistiche"));
                nav.push(Link::new("Registro degli accessi", "/audit"));
            }
            Some(Role::Admin) => {
                nav.push(Link::new("Amministrazione", "/amministrazione"));
            }
            None => {}
        }
        for link in &mut nav {
            link.active = link.href == section;
        }
        let title = title.into();
        Layout {
            municipality: services.config.municipality.clone(),
            user: visitor.session.as_ref().map(|s| s.user.name.clone()),
            nav,
            crumbs: vec![Link::new("Home", "/"), Link::new(title.clone(), "")],
            title,
            csrf: visitor.csrf.clone(),
            bi: BI,
        }
    }

    /// Puts `label` (linking to `href`) between the home page and this one.
    pub fn under(mut self, label: impl Into<String>, href: impl Into<String>) -> Self {
        let at = self.crumbs.len() - 1;
        self.crumbs.insert(at, Link::new(label, href));
        self
    }
}

/// Renders an askama template as a page.
pub fn render(template: &impl askama::Template) -> Result<Response, WebError> {
    let html = template
        .render()
        .map_err(|e| WebError::Api(crate::http::ApiError::Internal(e.into())))?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::response::Html(html),
    )
        .into_response())
}

/// A `303 See Other` to `to`, after a form.
pub fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

/// The state of a dossier in Italian, and the badge colour of Bootstrap Italia it shows in.
pub fn status_badge(status: crate::domain::DossierStatus) -> (&'static str, &'static str) {
    use crate::domain::DossierStatus::*;
    match status {
        Draft => ("Bozza", "secondary"),
        Submitted => ("Presentata", "primary"),
        Started => ("In lavorazione", "info"),
        AwaitingIntegration => ("In attesa di integrazione", "warning"),
        Concluded => ("Conclusa", "success"),
        Withdrawn => ("Ritirata", "secondary"),
        Archived => ("Archiviata", "dark"),
    }
}

/// A date and time (RFC 3339, as the API gives them) as Italians read it, in Rome's time.
pub fn italian_date(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| crate::db::notices::italian_date(t.as_millisecond()))
        .unwrap_or_else(|_| rfc3339.to_owned())
}
