//! Failures of a page, answered as a page of the site with the right status.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Layout;
use super::visitor::Visitor;
use crate::app::Services;
use crate::http::ApiError;

/// Why a page could not be shown or a form not be taken.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// What the API answered.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The page needs a signed-in visitor: sign in, then come back to the path.
    #[error("sign in first")]
    SignIn(String),
    /// A form without its token, with a stale one, or posted from another site.
    #[error("form token")]
    Csrf,
}

impl From<crate::db::DbError> for WebError {
    fn from(e: crate::db::DbError) -> Self {
        WebError::Api(e.into())
    }
}

impl From<crate::access::Denied> for WebError {
    fn from(e: crate::access::Denied) -> Self {
        WebError::Api(e.into())
    }
}

/// The error a response stands for, left for [`render_errors`] to draw in the layout.
#[derive(Clone, Debug)]
struct ErrorPage {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let page = match self {
            WebError::SignIn(next) => {
                let to = format!(
                    "/accedi?next={}",
                    percent_encoding::utf8_percent_encode(
                        &next,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                return super::see_other(&to);
            }
            WebError::Csrf => ErrorPage {
                status: StatusCode::FORBIDDEN,
                title: "Modulo scaduto",
                message: "Il modulo è scaduto o non proviene da questo sito. Torna alla pagina, \
                          ricaricala e invialo di nuovo."
                    .to_owned(),
            },
            WebError::Api(e) => {
                // The API's own answer decides the status; its message, in English for
                // developers, is not shown beyond what a person can act on.
                let status = e.status();
                let (title, message) = match &e {
                    ApiError::NotFound | ApiError::Unauthorized(_) => (
                        "Pagina non trovata",
                        "La pagina che cerchi non esiste, oppure non hai i permessi per vederla."
                            .to_owned(),
                    ),
                    ApiError::BadRequest { message, .. } => (
                        "Dati non validi",
                        format!("Controlla i dati inseriti: {message}."),
                    ),
                    ApiError::Forbidden(m) | ApiError::Conflict(m) => {
                        ("Operazione non consentita", format!("{m}."))
                    }
                    ApiError::IllegalTransition { message, .. } => {
                        ("Operazione non consentita", format!("{message}."))
                    }
                    ApiError::PayloadTooLarge(_) | ApiError::QuotaExceeded(_) => {
                        ("File troppo grande", format!("{e}."))
                    }
                    ApiError::TooManyRequests { retry_after, .. } => (
                        "Troppe richieste",
                        format!("Hai fatto troppe richieste. Riprova tra {retry_after} secondi."),
                    ),
                    ApiError::Unavailable(_) => (
                        "Servizio momentaneamente non disponibile",
                        "Il servizio è molto carico in questo momento. Riprova tra poco."
                            .to_owned(),
                    ),
                    _ => {
                        if let ApiError::Internal(inner) = &e {
                            tracing::error!(error = ?inner, "internal error on a page");
                        }
                        (
                            "Errore del servizio",
                            "Si è verificato un errore. Riprova più tardi; se il problema \
                             continua, contatta l'ufficio."
                                .to_owned(),
                        )
                    }
                };
                let mut response = ErrorPage {
                    status,
                    title,
                    message,
                }
                .into_bare();
                if let ApiError::TooManyRequests { retry_after, .. } = e
                    && let Ok(v) = retry_after.to_string().parse()
                {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return response;
            }
        };
        page.into_bare()
    }
}

impl ErrorPage {
    fn into_bare(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate {
    page: Layout,
    message: String,
}

/// Draws the page of an error left by a handler (or a 404 for a path no page has), in the
/// layout of the visitor who met it.
pub async fn render_errors(
    State(services): State<Services>,
    request: Request,
    next: Next,
) -> Response {
    // Only an error page needs to know who is signed in: the session is read then, not on
    // every request.
    let (parts, body) = request.into_parts();
    let kept = Request::from_parts(parts.clone(), ());
    let response = next.run(Request::from_parts(parts, body)).await;
    let error = match response.extensions().get::<ErrorPage>() {
        Some(e) => e.clone(),
        None if response.status() == StatusCode::NOT_FOUND => ErrorPage {
            status: StatusCode::NOT_FOUND,
            title: "Pagina non trovata",
            message: "La pagina che cerchi non esiste, oppure non hai i permessi per vederla."
                .to_owned(),
        },
        None if response.status() == StatusCode::METHOD_NOT_ALLOWED => ErrorPage {
            status: StatusCode::METHOD_NOT_ALLOWED,
            title: "Operazione non consentita",
            message: "Questa pagina non accetta questa richiesta.".to_owned(),
        },
        None => return response,
    };
    let (mut kept, ()) = kept.into_parts();
    let visitor = Visitor::from_parts(&mut kept, &services).await;
    let template = ErrorTemplate {
        page: Layout::new(&services, &visitor, error.title, ""),
        message: error.message,
    };
    let mut page = match super::render(&template) {
        Ok(page) => page,
        Err(_) => return error.status.into_response(),
    };
    *page.status_mut() = error.status;
    for name in [header::RETRY_AFTER, header::SET_COOKIE] {
        for value in response.headers().get_all(&name) {
            page.headers_mut().append(name.clone(), value.clone());
        }
    }
    page
}
