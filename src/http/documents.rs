//! `/v1/documents`: a document's record, text, versions and bytes (ranges checked against the
//! chunk hashes recorded at upload), every read audited. Uploads are in `uploads`.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt as _;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{ClientAddress, DocumentPath, VersionPath};
use crate::access::Caller;
use crate::app::Services;
use crate::audit::Actor;
use crate::blobs::VERIFY_BEFORE_SEND_LIMIT;
use crate::db::documents::{self, DocumentRecord, VersionRecord};
use crate::domain::ContentHash;

/// Routes of this resource (uploads into a dossier are routed by `dossiers`).
pub fn router(upload_limit: usize) -> Router<Services> {
    Router::new()
        .route("/documents/{id}", get(get_document))
        .route("/documents/{id}/content", get(get_content))
        .route("/documents/{id}/text", get(get_text))
        .route("/documents/{id}/signed-content", get(get_signed_content))
        .route(
            "/documents/{id}/versions",
            get(list_versions).merge(
                post(super::uploads::add_version).layer(DefaultBodyLimit::max(upload_limit)),
            ),
        )
        .route(
            "/documents/{id}/versions/{n}/content",
            get(get_version_content),
        )
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
