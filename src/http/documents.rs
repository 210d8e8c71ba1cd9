//! `/v1/documents` and uploads into dossiers: streamed, hashed, deduplicated.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt as _;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{ApiMultipart, ClientAddress, DocumentPath, DossierPath, VersionPath};
use crate::access::Caller;
use crate::app::Services;
use crate::audit::Actor;
use crate::blobs::{Spooled, StoredBlob, VERIFY_BEFORE_SEND_LIMIT};
use crate::db::DbError;
use crate::db::documents::{self, DocumentRecord, NewContent, NewDocument, VersionRecord};
use crate::db::dossiers;
use crate::domain::{
    ContentHash, DocumentKind, Role, Visibility, clean_text, judge_media_type, sanitize_filename,
};

/// Room for the multipart framing and text fields beside the file itself.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// How much of a refused upload is read and discarded before the connection is closed.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
/// Largest text field of an upload form.
const MAX_TEXT_FIELD: usize = 4096;

/// Routes of this resource (uploads into a dossier are routed by `dossiers`).
pub fn router(upload_limit: usize) -> Router<Services> {
    Router::new()
        .route("/documents/{id}", get(get_document))
        .route("/documents/{id}/content", get(get_content))
        .route("/documents/{id}/text", get(get_text))
        .route("/documents/{id}/signed-content", get(get_signed_content))
        .route(
            "/documents/{id}/versions",
            get(list_versions).merge(post(add_version).layer(DefaultBodyLimit::max(upload_limit))),
        )
        .route(
            "/documents/{id}/versions/{n}/content",
            get(get_version_content),
        )
}

/// The body limit for upload routes, from the configured file limit: the file and its form,
/// and room for [`drain`] to read what a refused upload is still sending (the file itself is
/// held to its limit as it is spooled). Without that room an upload announcing too large a
/// body could not be drained at all, and the client, still sending, would often see its
/// connection reset instead of the 413.
pub(crate) fn upload_body_limit(max_upload_bytes: u64) -> usize {
    usize::try_from(
        max_upload_bytes
            .saturating_add(MULTIPART_OVERHEAD)
            .saturating_add(DRAIN_LIMIT as u64),
    )
    .unwrap_or(usize::MAX)
}

/// The fields of an upload form.
#[derive(Default)]
struct UploadForm {
    file: Option<(Spooled, String)>,
    /// The type the client declared for the file part.
    declared: Option<String>,
    title: Option<String>,
    kind: Option<String>,
    visibility: Option<String>,
    integration_item: Option<String>,
}

/// Reads a multipart upload, spooling `file` to disk as it arrives.
async fn read_upload(
    services: &Services,
    headers: &HeaderMap,
    mut multipart: Multipart,
) -> Result<UploadForm, ApiError> {
    let limit = services.config.max_upload_bytes;
    // Refuse at once what announces itself as too large, before storing a byte.
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit.saturating_add(MULTIPART_OVERHEAD)
    {
        drain(&mut multipart).await;
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut form = UploadForm::default();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                if form.file.is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_upload",
                        "only one file per upload",
                    ));
                }
                let filename = sanitize_filename(field.file_name().unwrap_or_default());
                form.declared = field.content_type().map(str::to_owned);
                let mut spool = services.blobs.spool(limit).await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if let Err(e) = spool.write(&chunk).await {
                        drop(field);
                        drain(&mut multipart).await;
                        return Err(e.into());
                    }
                }
                form.file = Some((spool.finish().await?, filename));
            }
            "title" | "kind" | "visibility" | "integration_item" => {
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    value.extend_from_slice(&chunk);
                    if value.len() > MAX_TEXT_FIELD {
                        return Err(ApiError::bad_request(
                            "invalid_upload",
                            format!("field {name} is longer than {MAX_TEXT_FIELD} bytes"),
                        ));
                    }
                }
                let value = String::from_utf8(value).map_err(|_| {
                    ApiError::bad_request("invalid_upload", format!("field {name} is not UTF-8"))
                })?;
                match name.as_str() {
                    "title" => form.title = Some(value),
                    "kind" => form.kind = Some(value),
                    "integration_item" => form.integration_item = Some(value),
                    _ => form.visibility = Some(value),
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_upload",
                    format!(
                        "unexpected field {:?}; expected file, title, kind, visibility, integration_item",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok(form)
}

/// Reads and discards up to a few MiB more of a refused upload, so that the client, still
/// sending, gets to read the error instead of a reset connection. Past that the connection
/// is simply closed: a refused upload is never read to its end.
async fn drain(multipart: &mut Multipart) {
    let mut drained = 0usize;
    while drained < DRAIN_LIMIT {
        let Ok(Some(mut field)) = multipart.next_field().await else {
            return;
        };
        while drained < DRAIN_LIMIT {
            match field.chunk().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                _ => break,
            }
        }
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The body outgrew the route's limit: the file is past the configured size.
        return ApiError::PayloadTooLarge(0);
    }
    ApiError::bad_request("invalid_upload", e.body_text())
}

/// Refuses an upload of `size` bytes that would take a citizen or professional past their
/// upload quota (staff upload for the office and are not limited).
async fn within_quota(services: &Services, caller: &Caller, size: u64) -> Result<(), ApiError> {
    if caller.role().side() == crate::domain::Side::Office {
        return Ok(());
    }
    let quota = services.config.upload_quota_mib.saturating_mul(1024 * 1024);
    let used = documents::uploaded_bytes(&services.db, caller.id()).await?;
    if used.saturating_add(size) > quota {
        return Err(ApiError::QuotaExceeded(quota));
    }
    Ok(())
}

/// Stores the spooled bytes, then runs `commit`; if garbage collection removed a
/// deduplicated blob in between, stores the bytes again and retries once.
async fn store_and_commit<T, F, Fut>(
    services: &Services,
    spooled: &Spooled,
    commit: F,
) -> Result<T, ApiError>
where
    F: Fn(StoredBlob) -> Fut,
    Fut: Future<Output = Result<T, DbError>>,
{
    let blob = services.blobs.put(spooled, false).await?;
    match commit(blob).await {
        Err(DbError::BlobVanished) => {
            let blob = services.blobs.put(spooled, true).await?;
            Ok(commit(blob).await?)
        }
        other => Ok(other?),
    }
}

#[utoipa::path(post, path = "/v1/dossiers/{id}/documents",
    params(("id" = String, Path, description = "Dossier id")),
    request_body(content_type = "multipart/form-data", description = "Fields: `file` (required), `title` (default: the file name), `kind` (default `attachment`), `visibility` (`public` or `internal`; default `public` for applicants, `internal` for staff)"),
    responses(
        (status = 201, body = DocumentRecord, description = "Stored"),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody, description = "Past the configured size limit; nothing was stored"),
    ),
    security(("bearer" = [])), tag = "documents")]
pub(crate) async fn add_document(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    DossierPath(dossier_id): DossierPath,
    headers: HeaderMap,
    ApiMultipart(multipart): ApiMultipart,
) -> Result<Response, ApiError> {
    services
        .limits
        .check(super::limits::Kind::Upload, &caller.id().to_string())?;
    let dossier = dossiers::get(&services.db, &caller, dossier_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let form = read_upload(&services, &headers, multipart).await?;
    let (spooled, filename) = form
        .file
        .ok_or_else(|| ApiError::bad_request("invalid_upload", "the form has no file field"))?;
    within_quota(&services, &caller, spooled.size).await?;
    let title = clean_text(form.title.as_deref().unwrap_or(&filename), "title", 300)
        .map_err(|e| ApiError::bad_request("invalid_upload", e))?;
    let kind = match form.kind.as_deref() {
        Some(k) => k
            .parse()
            .map_err(|e| ApiError::bad_request("invalid_upload", e))?,
        None => DocumentKind::Attachment,
    };
    let visibility = match form.visibility.as_deref() {
        Some(v) => v
            .parse()
            .map_err(|e| ApiError::bad_request("invalid_upload", e))?,
        // Staff documents stay internal unless said otherwise: publishing is a decision.
        None if caller.role() == Role::Staff => Visibility::Internal,
        None => Visibility::Public,
    };
    caller.may_add_document(&dossier.facts(), kind, visibility)?;
    let item = match form.integration_item.as_deref() {
        None => None,
        Some(raw) => {
            let (request, position) = raw
                .split_once('/')
                .and_then(|(r, p)| Some((r.to_owned(), p.parse::<i32>().ok()?)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_upload",
                        "integration_item is REQUEST_ID/POSITION",
                    )
                })?;
            let open = crate::db::lifecycle::integration_requests(&services.db, dossier_id)
                .await?
                .into_iter()
                .any(|r| {
                    r.open && r.id == request && r.items.iter().any(|i| i.position == position)
                });
            if !open {
                return Err(ApiError::bad_request(
                    "invalid_upload",
                    "no such open integration item in this dossier",
                ));
            }
            Some((request, position))
        }
    };
    let media_type = judge_media_type(&spooled.head, form.declared.as_deref(), &filename);
    let actor = Actor::of(&caller, client);
    let id = store_and_commit(&services, &spooled, |blob| {
        documents::create(
            &services.db,
            NewDocument {
                tenant: caller.tenant(),
                dossier: dossier_id,
                title: &title,
                kind,
                visibility,
                content: NewContent {
                    blob,
                    media_type,
                    filename: &filename,
                    created_by: caller.id(),
                    created_role: caller.role(),
                    channel: caller.role().upload_channel(),
                    blobs: &services.blobs,
                },
            },
            &actor,
        )
    })
    .await?;
    if let Some((request, position)) = item {
        crate::db::lifecycle::satisfy_item(
            &services.db,
            dossier_id,
            &request,
            position,
            &id.to_string(),
        )
        .await?;
    }
    services.wake.notify_one();
    tracing::info!(document = %id, dossier = %dossier_id, sha256 = %spooled.hash, size = spooled.size, "document stored");
    let record = documents::get(&services.db, &caller, id)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "stored document {id} is not visible to its uploader"
            ))
        })?;
    let location = format!("/v1/documents/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/documents/{id}/versions",
    params(("id" = String, Path, description = "Document id")),
    request_body(content_type = "multipart/form-data", description = "Field `file`: the new version's bytes"),
    responses(
        (status = 201, body = DocumentRecord, description = "The document with its new version"),
        (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody),
    ),
    security(("bearer" = [])), tag = "documents")]
async fn add_version(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    DocumentPath(id): DocumentPath,
    headers: HeaderMap,
    ApiMultipart(multipart): ApiMultipart,
) -> Result<Response, ApiError> {
    services
        .limits
        .check(super::limits::Kind::Upload, &caller.id().to_string())?;
    let document = documents::get(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let dossier = dossiers::get(&services.db, &caller, document.dossier_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Refused before a byte of the file is read.
    caller.may_add_version(&dossier.facts(), document.side)?;
    let form = read_upload(&services, &headers, multipart).await?;
    if form.title.is_some() || form.kind.is_some() || form.visibility.is_some() {
        return Err(ApiError::bad_request(
            "invalid_upload",
            "a new version takes only a file field",
        ));
    }
    let (spooled, filename) = form
        .file
        .ok_or_else(|| ApiError::bad_request("invalid_upload", "the form has no file field"))?;
    within_quota(&services, &caller, spooled.size).await?;
    let media_type = judge_media_type(&spooled.head, form.declared.as_deref(), &filename);
    let actor = Actor::of(&caller, client);
    let version = store_and_commit(&services, &spooled, |blob| {
        documents::add_version(
            &services.db,
            caller.tenant(),
            id,
            NewContent {
                blob,
                media_type,
                filename: &filename,
                created_by: caller.id(),
                created_role: caller.role(),
                channel: caller.role().upload_channel(),
                blobs: &services.blobs,
            },
            &actor,
        )
    })
    .await?;
    services.wake.notify_one();
    tracing::info!(document = %id, version, sha256 = %spooled.hash, "version stored");
    let record = documents::get(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

#[utoipa::path(get, path = "/v1/documents/{id}",
    params(("id" = String, Path, description = "Document id")),
    responses((status = 200, body = DocumentRecord), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "documents")]
pub(crate) async fn get_document(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DocumentPath(id): DocumentPath,
) -> Result<Json<DocumentRecord>, ApiError> {
    let document = audited_document(&services, &caller, &client, id, "document.read", None).await?;
    Ok(Json(document))
}

/// Looks a document up for the caller and records the read (or the miss) in the audit trail.
async fn audited_document(
    services: &Services,
    caller: &Caller,
    client: &ClientAddress,
    id: crate::domain::DocumentId,
    action: &str,
    version: Option<i32>,
) -> Result<DocumentRecord, ApiError> {
    let (receipt, document) = document_read(services, caller, client, id, action, version).await?;
    receipt
        .durable()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    document.ok_or(ApiError::NotFound)
}

/// Looks document `id` up for the caller and hands the read (or the miss) to the audit trail.
/// The caller may go on with its work (reading the bytes) while the record is written, and
/// answers only once it is durable ([`crate::audit::Receipt::durable`]).
async fn document_read(
    services: &Services,
    caller: &Caller,
    client: &ClientAddress,
    id: crate::domain::DocumentId,
    action: &str,
    version: Option<i32>,
) -> Result<(crate::audit::Receipt, Option<DocumentRecord>), ApiError> {
    let looked_up = documents::get(&services.db, caller, id).await;
    let (outcome, dossier, detail) = match &looked_up {
        Ok(Some(document)) => (
            "ok",
            Some(document.dossier_id),
            serde_json::json!({ "version": version.unwrap_or(document.version) }),
        ),
        Ok(None) => ("not_found", None, serde_json::json!({ "version": version })),
        Err(_) => ("error", None, serde_json::json!({ "version": version })),
    };
    let event = Actor::of(caller, client.0.clone()).event(
        action,
        format!("document:{id}"),
        dossier,
        outcome,
        detail,
    );
    let receipt = services
        .auditor
        .submit(event)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((receipt, looked_up?))
}

/// Every version of a document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionList {
    /// Oldest first.
    items: Vec<VersionRecord>,
}

/// The extracted text of a document's newest version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentText {
    /// `pending`, `done` or `failed`.
    pub(crate) status: String,
    /// The text (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// Pages (when done, for paged formats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pages: Option<u32>,
    /// Why extraction failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

#[utoipa::path(get, path = "/v1/documents/{id}/text",
    params(("id" = String, Path, description = "Document id")),
    responses((status = 200, body = DocumentText), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "documents")]
pub(crate) async fn get_text(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DocumentPath(id): DocumentPath,
) -> Result<Json<DocumentText>, ApiError> {
    use crate::extract::sandbox::Outcome;
    let document = audited_document(&services, &caller, &client, id, "document.text", None).await?;
    let outcome = crate::pipeline::stored_text(&services.blobs, &document.sha256).await?;
    Ok(Json(match outcome {
        Some(Outcome::Done(e)) => DocumentText {
            status: "done".into(),
            text: Some(e.text),
            pages: e.pages,
            reason: None,
        },
        Some(Outcome::Failed { reason }) => DocumentText {
            status: "failed".into(),
            text: None,
            pages: None,
            reason: Some(reason),
        },
        None => DocumentText {
            status: "pending".into(),
            text: None,
            pages: None,
            reason: None,
        },
    }))
}

#[utoipa::path(get, path = "/v1/documents/{id}/versions",
    params(("id" = String, Path, description = "Document id")),
    responses((status = 200, body = VersionList), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "documents")]
async fn list_versions(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DocumentPath(id): DocumentPath,
) -> Result<Json<VersionList>, ApiError> {
    audited_document(&services, &caller, &client, id, "document.versions", None).await?;
    let items = documents::versions(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(VersionList { items }))
}

#[utoipa::path(get, path = "/v1/documents/{id}/content",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 200, description = "The newest version's bytes; `ETag` is its SHA-256", content_type = "*/*"),
        (status = 206, description = "The requested range"),
        (status = 304, description = "Unchanged (If-None-Match)"),
        (status = 404, body = super::error::ErrorBody),
        (status = 416, body = super::error::ErrorBody),
        (status = 500, body = super::error::ErrorBody, description = "The stored bytes failed their integrity check"),
    ),
    security(("bearer" = [])), tag = "documents")]
pub(crate) async fn get_content(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DocumentPath(id): DocumentPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (receipt, document) =
        document_read(&services, &caller, &client, id, "document.download", None).await?;
    let Some(document) = document else {
        receipt
            .durable()
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        return Err(ApiError::NotFound);
    };
    // The read's record is written while the bytes are read and checked; the response leaves
    // only once both are done.
    let content = serve_content(
        &services,
        &headers,
        &document.sha256,
        &document.media_type,
        &document.filename,
    );
    let (audited, response) = tokio::join!(receipt.durable(), content);
    audited.map_err(|e| ApiError::Internal(e.into()))?;
    response
}

#[utoipa::path(get, path = "/v1/documents/{id}/versions/{n}/content",
    params(("id" = String, Path, description = "Document id"), ("n" = i32, Path, description = "Version number, from 1")),
    responses(
        (status = 200, description = "That version's bytes", content_type = "*/*"),
        (status = 206, description = "The requested range"),
        (status = 404, body = super::error::ErrorBody),
    ),
    security(("bearer" = [])), tag = "documents")]
async fn get_version_content(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    VersionPath(id, n): VersionPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    audited_document(
        &services,
        &caller,
        &client,
        id,
        "document.download",
        Some(n),
    )
    .await?;
    let version = documents::version(&services.db, &caller, id, n)
        .await?
        .ok_or(ApiError::NotFound)?;
    serve_content(
        &services,
        &headers,
        &version.sha256,
        &version.media_type,
        &version.filename,
    )
    .await
}

#[utoipa::path(get, path = "/v1/documents/{id}/signed-content",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 200, description = "The file signed inside a CAdES envelope (`.p7m`), unwrapped", content_type = "*/*"),
        (status = 404, body = super::error::ErrorBody, description = "No such document, or it is not a signed envelope"),
    ),
    security(("bearer" = [])), tag = "documents")]
pub(crate) async fn get_signed_content(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DocumentPath(id): DocumentPath,
) -> Result<Response, ApiError> {
    let document =
        audited_document(&services, &caller, &client, id, "document.download", None).await?;
    let content = document
        .extraction
        .meta
        .as_ref()
        .and_then(|m| m.get("content"))
        .cloned()
        .unwrap_or_default();
    let (Some(sha256), Some(media_type)) =
        (content["sha256"].as_str(), content["media_type"].as_str())
    else {
        return Err(ApiError::NotFound);
    };
    let bytes = services
        .blobs
        .get_derived(&crate::pipeline::unwrapped_key(&document.sha256))
        .await?
        .ok_or(ApiError::NotFound)?;
    if ContentHash::of(&bytes).to_hex() != sha256 {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the signed content of {} failed its integrity check",
            document.sha256
        )));
    }
    // `relazione.pdf.p7m.p7m` holds `relazione.pdf`.
    let mut filename = document.filename.as_str();
    while let Some(stem) = filename
        .strip_suffix(".p7m")
        .or_else(|| filename.strip_suffix(".P7M"))
    {
        filename = stem;
    }
    let size = bytes.len() as u64;
    let mut response = Response::new(Body::from(bytes));
    download_headers(
        &mut response,
        &format!("\"{sha256}\""),
        media_type,
        size,
        filename,
    );
    Ok(response)
}

/// The headers of every download: its tag, type and length, an `attachment` disposition,
/// and what keeps a browser from running it as a page of this origin.
fn download_headers(
    response: &mut Response,
    etag: &str,
    media_type: &str,
    length: u64,
    filename: &str,
) {
    insert(response, header::ETAG, etag);
    insert(response, header::CONTENT_TYPE, media_type);
    insert(response, header::CONTENT_LENGTH, &length.to_string());
    insert(
        response,
        header::CONTENT_DISPOSITION,
        &content_disposition(filename),
    );
    insert(response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    insert(
        response,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
    insert(response, header::CACHE_CONTROL, "private, no-cache");
}

/// Serves a blob with `ETag`, conditional and range requests, and a download-only
/// disposition: uploaded HTML or SVG must never run as a page of this origin.
async fn serve_content(
    services: &Services,
    headers: &HeaderMap,
    sha256: &str,
    media_type: &str,
    filename: &str,
) -> Result<Response, ApiError> {
    let hash = ContentHash::parse(sha256).map_err(|e| ApiError::Internal(e.into()))?;
    let etag = format!("\"{sha256}\"");
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && (inm.trim() == "*"
            || inm
                .split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert(&mut response, header::ETAG, &etag);
        return Ok(response);
    }
    let size = services.blobs.size(&hash).await?;
    let range = requested_range(headers, &etag, size)?;
    let (status, start, end) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end),
        None => (StatusCode::OK, 0, size),
    };
    // A range reads only the pieces it covers, each checked against its hash recorded at
    // upload; the whole content (or a blob stored before pieces were recorded) is checked
    // whole before its last byte goes out.
    let pieces = if status == StatusCode::PARTIAL_CONTENT {
        documents::chunk_hashes(&services.db, sha256).await?
    } else {
        None
    };
    let body = if let Some(pieces) = pieces {
        let stream = services
            .blobs
            .stream_range_verified(&hash, &pieces, size, start..end)?;
        if end - start <= VERIFY_BEFORE_SEND_LIMIT {
            // Checked before the status goes out: a corrupt piece is a 500, not a cut body.
            let parts: Vec<bytes::Bytes> = stream.try_collect().await?;
            Body::from(parts.concat())
        } else {
            Body::from_stream(stream)
        }
    } else if size <= VERIFY_BEFORE_SEND_LIMIT {
        let bytes = services.blobs.read_verified(&hash).await?;
        Body::from(bytes.slice(start as usize..end as usize))
    } else {
        Body::from_stream(services.blobs.stream_verified(&hash, start..end).await?)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    download_headers(&mut response, &etag, media_type, end - start, filename);
    insert(&mut response, header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        insert(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    Ok(response)
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

/// The single byte range asked for, if it applies. Several ranges, or an `If-Range` that
/// does not match, get the whole content (RFC 9110 allows ignoring `Range`).
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Ok(None);
    }
    let parsed = match http_range_header::parse_range_header(raw) {
        Ok(p) => p,
        // An unparseable Range is ignored, as RFC 9110 asks.
        Err(_) => return Ok(None),
    };
    let ranges = parsed
        .validate(size)
        .map_err(|_| ApiError::RangeNotSatisfiable(size))?;
    match ranges.as_slice() {
        [one] => Ok(Some(*one.start()..*one.end() + 1)),
        _ => Ok(None),
    }
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266), safe
/// whatever the original held: quotes, backslashes, semicolons and non-ASCII are replaced
/// in the fallback and percent-encoded in the exact form.
fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(filename, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe_for_hostile_names() {
        let cd = content_disposition("pianta \"piano\";terra\u{e0}.pdf");
        assert_eq!(
            cd,
            "attachment; filename=\"pianta _piano__terra_.pdf\"; \
             filename*=UTF-8''pianta%20%22piano%22%3Bterra%C3%A0%2Epdf"
        );
        assert!(HeaderValue::from_str(&cd).is_ok());
    }
}
