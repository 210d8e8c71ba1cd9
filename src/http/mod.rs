//! The HTTP API. Only this module knows about axum.

pub(crate) mod delegations;
pub(crate) mod documents;
pub(crate) mod dossiers;
mod error;
pub(crate) mod extract;
pub(crate) mod identities;
pub(crate) mod lifecycle;
pub mod limits;
pub(crate) mod notifications;
pub(crate) mod procedures;
pub(crate) mod records;
pub(crate) mod search;
pub mod serve;
pub(crate) mod uploads;
pub(crate) mod users;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

pub use error::ApiError;
pub use extract::ClientAddress;
pub(crate) use identities::{new_code, valid_email};

/// Largest body of any request but an upload: a JSON body past it is a 413 before more of
/// it is read.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

use crate::app::Services;

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "fascicolo", description = "Dossiers and documents of a municipality's one-stop desk"),
    paths(
        health,
        dossiers::open_dossier, dossiers::get_dossier, dossiers::list_dossiers, dossiers::list_documents,
        uploads::add_document, uploads::add_version, documents::get_document,
        documents::list_versions, documents::get_content, documents::get_text, documents::get_signed_content, documents::get_version_content,
        procedures::list_procedures, procedures::me, search::search,
        delegations::grant, delegations::list, delegations::revoke,
        identities::register, identities::activate, users::list_tokens, users::create_token,
        users::revoke_token, users::list_users, users::create_user, users::set_offices,
        users::disable_user, users::verify_identity,
        lifecycle::transition, lifecycle::timeline, lifecycle::integration_requests, lifecycle::rate,
        lifecycle::propose, records::stats, records::history, records::export, records::audit_head,
        notifications::list_mine, notifications::list_failed, notifications::retry,
        notifications::get_contacts, notifications::add_contact, notifications::confirm_contact,
        notifications::get_preferences, notifications::put_preferences,
        notifications::list_postal, notifications::postal_done,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "dossiers", description = "Dossiers (pratiche)"),
        (name = "documents", description = "Documents and their versions"),
        (name = "catalogue", description = "Procedures, offices, and the caller"),
        (name = "search", description = "Full-text search"),
        (name = "identities", description = "Registration, tokens and users"),
        (name = "records", description = "Statistics, histories, exports and the audit trail"),
        (name = "notifications", description = "Messages, contacts, preferences and postal tasks"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        document_common_errors(openapi);
    }
}

/// Documents on every operation the errors any request may meet, where the operation does
/// not say more itself: a malformed request (400), a missing or dead token (401, secured
/// operations), a body past its limit (413, operations with a body), a rate limit (429), a
/// server fault or stored bytes failing their check (500), a search past its budget (503).
fn document_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(description).into());
            };
            add("400", "Malformed request");
            if secured {
                add("401", "Missing, unknown, revoked or expired token");
            }
            if has_body {
                add("413", "Body past its limit");
            }
            add("429", "Too many requests; see Retry-After");
            add(
                "500",
                "Server fault, or stored content that failed its integrity check",
            );
            add("503", "Unavailable for now; see Retry-After");
        }
    }
}

/// The whole router, with tracing and request ids.
pub fn router(services: Services) -> Router {
    let body_limit = uploads::upload_body_limit(services.config.max_upload_bytes);
    let v1 = Router::new()
        .merge(dossiers::router(body_limit))
        .merge(documents::router(body_limit))
        .merge(procedures::router())
        .merge(search::router())
        .merge(delegations::router())
        .merge(users::router())
        .merge(identities::public_router())
        .merge(lifecycle::router())
        .merge(records::router())
        .merge(notifications::router());
    // The API answers JSON, its errors included; every other path is a page of the site.
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .nest("/v1", v1.fallback(not_found))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .merge(api)
        .merge(crate::web::router(&services))
        // JSON and every other body: uploads raise it on their own routes.
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(services)
}

/// Health of the server and its database.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok` or `degraded`.
    status: &'static str,
    /// Whether the database answered.
    database: bool,
}

#[utoipa::path(get, path = "/health",
    responses((status = 200, body = Health), (status = 503, body = Health)), tag = "catalogue")]
async fn health(State(services): State<Services>) -> Response {
    let database = services.db.ping().await.is_ok();
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if database { "ok" } else { "degraded" },
        database,
    };
    (status, Json(body)).into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> Response {
    error::error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this resource".to_owned(),
    )
}

/// Records a read in the audit trail before the response is sent; without the record there
/// is no response.
#[expect(
    clippy::too_many_arguments,
    reason = "each argument is one column of the audit row; a struct would only rename them"
)]
pub(crate) async fn audit_read(
    services: &Services,
    caller: &crate::access::Caller,
    client: &extract::ClientAddress,
    action: &str,
    target: String,
    dossier: Option<crate::domain::DossierId>,
    found: bool,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    let actor = crate::audit::Actor::of(caller, client.0.clone());
    let outcome = if found { "ok" } else { "not_found" };
    services
        .auditor
        .record(actor.event(action, target, dossier, outcome, detail))
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}
