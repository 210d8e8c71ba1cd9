//! Uploads into dossiers: a new document (`POST /v1/dossiers/{id}/documents`) or a new
//! version of one (`POST /v1/documents/{id}/versions`). The file is streamed to a spool file,
//! hashed as it arrives, held to its limit and the uploader's quota, then stored by its hash
//! (deduplicated) and recorded.

use axum::Json;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{ApiMultipart, ClientAddress, DocumentPath, DossierPath};
use crate::access::Caller;
use crate::app::Services;
use crate::audit::Actor;
use crate::blobs::{Spooled, StoredBlob};
use crate::db::DbError;
use crate::db::documents::{self, DocumentRecord, NewContent, NewDocument};
use crate::db::dossiers;
use crate::domain::{
    DocumentKind, Role, Visibility, clean_text, judge_media_type, sanitize_filename,
};

/// Room for the multipart framing and text fields beside the file itself.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// How much of a refused upload is read and discarded before the connection is closed.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
/// Largest text field of an upload form.
const MAX_TEXT_FIELD: usize = 4096;

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
pub(crate) async fn add_version(
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
