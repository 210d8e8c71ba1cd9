//! `/v1/dossiers`: open, read and list dossiers.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, ClientAddress, DossierPath};
use crate::access::Caller;
use crate::app::Services;
use crate::audit::Actor;
use crate::db::documents::{self, DocumentRecord};
use crate::db::dossiers::{self, DossierRecord, ListFilter, NewDossier};
use crate::domain::{CodiceFiscale, DossierId, DossierStatus, clean_text};

/// Routes of this resource.
/// Routes of this resource; uploads take bodies of up to `upload_limit` bytes.
pub fn router(upload_limit: usize) -> Router<Services> {
    Router::new()
        .route("/dossiers", get(list_dossiers).post(open_dossier))
        .route("/dossiers/{id}", get(get_dossier))
        .route(
            "/dossiers/{id}/documents",
            get(list_documents).merge(
                post(super::uploads::add_document)
                    .layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
            ),
        )
}

/// Body of `POST /v1/dossiers`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenDossier {
    /// Procedure code from `GET /v1/procedures`.
    #[schema(example = "scia-edilizia")]
    pub(crate) procedure: String,
    /// The applicant's codice fiscale.
    #[schema(example = "RSSMRA85T10A562S")]
    pub(crate) applicant_cf: String,
    /// What the dossier is about.
    #[schema(example = "Rifacimento della facciata, via Roma 12")]
    pub(crate) subject: String,
    /// Open it as a draft: its applicant alone sees it until they file it (transition to
    /// `submitted`, ticking the procedure's required documents); the office sees it and its
    /// receipt goes out only then. Default: filed at once.
    #[serde(default)]
    pub(crate) draft: bool,
    /// The applicant's name, written by the front office when filing for someone at the desk.
    #[schema(example = "Mario Rossi")]
    pub(crate) applicant_name: Option<String>,
}

#[utoipa::path(post, path = "/v1/dossiers", request_body = OpenDossier,
    responses(
        (status = 201, body = DossierRecord, description = "Opened"),
        (status = 400, body = super::error::ErrorBody, description = "Unknown procedure, bad codice fiscale or subject"),
        (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody, description = "Not allowed to open this dossier"),
    ),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn open_dossier(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<OpenDossier>,
) -> Result<
    (
        StatusCode,
        [(header::HeaderName, String); 1],
        Json<DossierRecord>,
    ),
    ApiError,
> {
    let procedure = services
        .catalogue
        .procedure(&body.procedure)
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_procedure",
                format!(
                    "unknown procedure {:?}; see GET /v1/procedures",
                    truncate(&body.procedure)
                ),
            )
        })?;
    let applicant = CodiceFiscale::parse(&body.applicant_cf)
        .map_err(|e| ApiError::bad_request("invalid_codice_fiscale", e))?;
    let subject = clean_text(&body.subject, "subject", 500)
        .map_err(|e| ApiError::bad_request("invalid_subject", e))?;
    let channel = caller.may_open_dossier(procedure, &applicant)?;
    let applicant_name = body
        .applicant_name
        .as_deref()
        .map(|n| clean_text(n, "applicant_name", 200))
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_applicant_name", e))?;
    let record = dossiers::create(
        &services.db,
        NewDossier {
            tenant: caller.tenant(),
            procedure,
            applicant: &applicant,
            subject: &subject,
            channel,
            created_by: caller.id(),
            delivery: services.delivery(),
            draft: body.draft,
            applicant_name: applicant_name.as_deref(),
        },
        &Actor::of(&caller, client),
    )
    .await?;
    tracing::info!(dossier = %record.id, number = %record.number, "dossier opened");
    let location = format!("/v1/dossiers/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    ))
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[utoipa::path(get, path = "/v1/dossiers/{id}",
    params(("id" = String, Path, description = "Dossier id")),
    responses(
        (status = 200, body = DossierRecord),
        (status = 404, body = super::error::ErrorBody, description = "No such dossier, or not visible to the caller"),
    ),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn get_dossier(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Json<DossierRecord>, ApiError> {
    let record = dossiers::get(&services.db, &caller, id).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "dossier.read",
        format!("dossier:{id}"),
        record.as_ref().map(|_| id),
        record.is_some(),
        serde_json::json!({}),
    )
    .await?;
    record.map(Json).ok_or(ApiError::NotFound)
}

/// Query of `GET /v1/dossiers`.
#[derive(Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1–100 (default 20).
    pub(crate) limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
    /// Only dossiers in this state.
    pub(crate) status: Option<String>,
    /// Only dossiers of this procedure.
    pub(crate) procedure: Option<String>,
}

/// A page of dossiers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DossierPage {
    /// Newest first.
    pub(crate) items: Vec<DossierRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/dossiers", params(ListQuery),
    responses((status = 200, body = DossierPage), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn list_dossiers(
    State(services): State<Services>,
    caller: Caller,
    client: super::extract::ClientAddress,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DossierPage>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 100",
        ));
    }
    let before = query
        .cursor
        .map(|c| {
            DossierId::parse(&c).ok_or_else(|| {
                ApiError::bad_request("invalid_query", "cursor is not a valid cursor")
            })
        })
        .transpose()?;
    let status = query
        .status
        .map(|s| s.parse::<DossierStatus>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e))?;
    let filter = ListFilter {
        status,
        procedure: query.procedure,
        before,
    };
    let (items, more) = dossiers::list(&services.db, &caller, &filter, limit).await?;
    let next_cursor = if more {
        items.last().map(|d| d.id.to_string())
    } else {
        None
    };
    // A listing discloses every dossier on its page: each one's history shows it.
    let disclosed: Vec<serde_json::Value> = items
        .iter()
        .map(|d| serde_json::json!({"dossier": d.id.to_string()}))
        .collect();
    super::audit_read(
        &services,
        &caller,
        &client,
        "dossiers.list",
        "dossiers".to_owned(),
        None,
        true,
        serde_json::json!({"count": items.len(), "disclosed": disclosed}),
    )
    .await?;
    Ok(Json(DossierPage { items, next_cursor }))
}

/// The documents of a dossier.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentList {
    /// Oldest first.
    pub(crate) items: Vec<DocumentRecord>,
}

#[utoipa::path(get, path = "/v1/dossiers/{id}/documents",
    params(("id" = String, Path, description = "Dossier id")),
    responses((status = 200, body = DocumentList), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "documents")]
pub(crate) async fn list_documents(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Json<DocumentList>, ApiError> {
    let visible = dossiers::get(&services.db, &caller, id).await?.is_some();
    super::audit_read(
        &services,
        &caller,
        &client,
        "dossier.documents",
        format!("dossier:{id}"),
        visible.then_some(id),
        visible,
        serde_json::json!({}),
    )
    .await?;
    if !visible {
        return Err(ApiError::NotFound);
    }
    let items = documents::list_for_dossier(&services.db, &caller, id).await?;
    Ok(Json(DocumentList { items }))
}
