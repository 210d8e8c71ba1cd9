//! The page of a document (its record, signers, extracted text) and its bytes as a browser
//! opens them: inline only for what a browser shows safely, under the API's sandbox policy.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::citizen::kind_label;
use super::visitor::Visitor;
use super::{Layout, WebError, italian_date, render};
use crate::app::Services;
use crate::db::documents::DocumentRecord;
use crate::domain::DocumentId;
use crate::http::extract::DocumentPath;
use crate::http::{ApiError, ClientAddress, documents};

/// Routes of the document pages.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/documenti/{id}", get(document_page))
        .route("/documenti/{id}/contenuto", get(content))
        .route("/documenti/{id}/contenuto-firmato", get(signed_content))
}

#[derive(Template)]
#[template(path = "document.html")]
struct DocumentPage {
    page: Layout,
    doc: DocumentRecord,
    kind: &'static str,
    date: String,
    inline: bool,
    size: String,
    text: Option<String>,
    /// The signatures, for a signed file.
    signers: Vec<SignerView>,
    /// The file signed inside a CAdES envelope: its media type, when it was kept.
    signed_content: Option<String>,
    /// That content opens in the browser.
    signed_inline: bool,
    /// How the text was read: by OCR, with its mean confidence.
    ocr: Option<String>,
}

/// One signature as the document page shows it.
struct SignerView {
    name: String,
    codice_fiscale: String,
    valid: bool,
    detail: String,
}

impl SignerView {
    /// The signers of a signed file, from its extraction metadata (CAdES or PAdES).
    fn all(meta: Option<&serde_json::Value>) -> Vec<Self> {
        let Some(meta) = meta else {
            return Vec::new();
        };
        crate::extract::signer_records(meta)
            .map(|s| {
                let valid = s["status"] == "valid";
                let text = |key: &str| s[key].as_str().unwrap_or_default().to_owned();
                let detail = if valid {
                    match s["signing_time"].as_str() {
                        Some(t) => format!("firma valida, apposta il {}", italian_date(t)),
                        None => "firma valida".to_owned(),
                    }
                } else {
                    format!("firma non valida: {}", text("reason"))
                };
                Self {
                    name: text("name"),
                    codice_fiscale: text("codice_fiscale"),
                    valid,
                    detail,
                }
            })
            .collect()
    }
}

/// Types a browser shows without running anything of the document's own.
fn viewable(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/pdf" | "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "text/plain"
    )
}

async fn document_page(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/documenti/{raw}"))?;
    let id = DocumentId::parse(&raw).ok_or(ApiError::NotFound)?;
    let Json(doc) = documents::get_document(
        State(services.clone()),
        caller.clone(),
        ClientAddress(visitor.client.clone()),
        DocumentPath(id),
    )
    .await?;
    let Json(text) = documents::get_text(
        State(services.clone()),
        caller.clone(),
        ClientAddress(visitor.client.clone()),
        DocumentPath(id),
    )
    .await?;
    let number = crate::db::dossiers::get(&services.db, &caller, doc.dossier_id)
        .await?
        .map(|d| d.number)
        .unwrap_or_default();
    render(&DocumentPage {
        page: Layout::new(&services, &visitor, doc.title.clone(), "").under(
            format!("Pratica {number}"),
            format!("/pratiche/{}", doc.dossier_id),
        ),
        kind: kind_label(doc.kind),
        date: italian_date(&doc.updated_at),
        inline: viewable(&doc.media_type),
        size: human_size(doc.size),
        text: text.text,
        signers: SignerView::all(doc.extraction.meta.as_ref()),
        signed_content: signed_content_type(&doc),
        signed_inline: signed_content_type(&doc).is_some_and(|t| viewable(&t)),
        ocr: doc.extraction.ocr.as_ref().map(|o| match (o.status.as_str(), o.mean_confidence) {
            ("done", Some(c)) => format!(
                "Il testo è stato letto con il riconoscimento ottico (OCR), confidenza media {c:.0}%."
            ),
            ("done" | "failed", _) => "Riconoscimento ottico (OCR) non riuscito.".to_owned(),
            _ => "Riconoscimento ottico (OCR) in corso: il testo delle pagine scansionate sarà \
                  cercabile a breve."
                .to_owned(),
        }),
        doc,
    })
}

/// The media type of the file signed inside a document's envelope, when it was kept.
fn signed_content_type(doc: &DocumentRecord) -> Option<String> {
    let content = doc.extraction.meta.as_ref()?.get("content")?;
    (content["kept"] == true)
        .then(|| content["media_type"].as_str().map(str::to_owned))
        .flatten()
}

fn human_size(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.0} kB", b as f64 / 1024.0),
        b => format!("{b} byte"),
    }
}

#[derive(Deserialize)]
struct ContentParams {
    scarica: Option<String>,
}

/// The file signed inside a document's envelope, through the API's own download, opened in
/// the browser as [`content`] opens a document.
async fn signed_content(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Query(params): Query<ContentParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/documenti/{raw}"))?;
    let id = DocumentId::parse(&raw).ok_or(ApiError::NotFound)?;
    let response = documents::get_signed_content(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DocumentPath(id),
    )
    .await?;
    Ok(inline_when_viewable(response, params.scarica.is_none()))
}

/// Turns a download into a page the browser shows, for types it shows safely.
fn inline_when_viewable(mut response: Response, inline: bool) -> Response {
    let media_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if inline
        && viewable(&media_type)
        && let Some(disposition) = response
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.replacen("attachment", "inline", 1))
        && let Ok(v) = HeaderValue::from_str(&disposition)
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// The document's bytes, through the API's own download. Types a browser shows safely open
/// in the browser (`inline`); the response keeps the API's `sandbox` policy, so nothing in
/// a document ever runs as a page of this site.
async fn content(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Query(params): Query<ContentParams>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/documenti/{raw}"))?;
    let id = DocumentId::parse(&raw).ok_or(ApiError::NotFound)?;
    let response = documents::get_content(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DocumentPath(id),
        headers,
    )
    .await?;
    Ok(inline_when_viewable(response, params.scarica.is_none()))
}
