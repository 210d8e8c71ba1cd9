//! Records for managers and auditors: statistics, dossier histories, exports, and the head of
//! the audit trail.

use std::collections::BTreeMap;
use std::io::Write;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use super::extract::{ClientAddress, DossierPath};
use crate::access::Caller;
use crate::app::Services;
use crate::db::delegations::{self, DelegationRecord};
use crate::db::documents::{self, VersionRecord};
use crate::db::dossiers::{self, DossierRecord, rfc3339};
use crate::db::lifecycle::{self, EventRecord};
use crate::db::now_ms;
use crate::domain::{ContentHash, DossierId, Role};

const DAY_MS: i64 = 86_400_000;

/// Routes of this resource.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/stats", get(stats))
        .route("/dossiers/{id}/history", get(history))
        .route("/dossiers/{id}/export", get(export))
        .route("/audit/head", get(audit_head))
}

/// Figures for one procedure.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProcedureStats {
    /// Procedure code.
    pub(crate) procedure: String,
    /// Office.
    pub(crate) office: String,
    /// Dossiers.
    pub(crate) total: u64,
    /// Dossiers by state.
    pub(crate) by_status: BTreeMap<String, u64>,
    /// Median processing days of concluded dossiers (suspensions excluded).
    pub(crate) median_days: Option<i64>,
    /// 90th percentile of processing days.
    pub(crate) p90_days: Option<i64>,
    /// Dossiers past their legal deadline (open, or concluded late).
    pub(crate) overdue: u64,
    /// Share filed online rather than at the desk, 0 to 1.
    pub(crate) online_share: f64,
    /// Average satisfaction, 1 to 5.
    pub(crate) average_rating: Option<f64>,
    /// Ratings given.
    pub(crate) ratings: u64,
}

/// Statistics over the dossiers the caller may see.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// By procedure.
    pub(crate) items: Vec<ProcedureStats>,
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[utoipa::path(get, path = "/v1/stats",
    responses((status = 200, body = Stats)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn stats(
    State(services): State<Services>,
    caller: Caller,
    client: super::extract::ClientAddress,
) -> Result<Json<Stats>, ApiError> {
    let (rows, by_dossier) = lifecycle::stats_rows(&services.db, &caller)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    struct Acc {
        office: String,
        by_status: BTreeMap<String, u64>,
        days: Vec<i64>,
        overdue: u64,
        online: u64,
        total: u64,
        ratings: Vec<i64>,
    }
    let now = now_ms();
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for row in rows {
        let lifecycle::StatRow {
            id,
            procedure,
            office,
            status,
            channel,
            score,
        } = row;
        let deadline = services
            .catalogue
            .procedure(&procedure)
            .map_or(0, |p| i64::from(p.deadline_days));
        let a = acc.entry(procedure).or_insert_with(|| Acc {
            office,
            by_status: BTreeMap::new(),
            days: Vec::new(),
            overdue: 0,
            online: 0,
            total: 0,
            ratings: Vec::new(),
        });
        a.total += 1;
        *a.by_status.entry(status.clone()).or_default() += 1;
        a.online += u64::from(channel == "online");
        if let Some(s) = score {
            a.ratings.push(i64::from(s));
        }
        let (running, _) =
            lifecycle::clock(by_dossier.get(&id).map_or(&[][..], |v| v.as_slice()), now);
        let days = running / DAY_MS;
        if status == "concluded" || status == "archived" {
            a.days.push(days);
        }
        if days > deadline && status != "withdrawn" {
            a.overdue += 1;
        }
    }
    let items: Vec<_> = acc
        .into_iter()
        .map(|(procedure, mut a)| {
            a.days.sort_unstable();
            ProcedureStats {
                procedure,
                office: a.office,
                total: a.total,
                by_status: a.by_status,
                median_days: percentile(&a.days, 0.5),
                p90_days: percentile(&a.days, 0.9),
                overdue: a.overdue,
                online_share: a.online as f64 / a.total.max(1) as f64,
                average_rating: (!a.ratings.is_empty())
                    .then(|| a.ratings.iter().sum::<i64>() as f64 / a.ratings.len() as f64),
                ratings: a.ratings.len() as u64,
            }
        })
        .collect();
    super::audit_read(
        &services,
        &caller,
        &client,
        "stats.read",
        "stats".to_owned(),
        None,
        true,
        serde_json::json!({"procedures": items.len()}),
    )
    .await?;
    Ok(Json(Stats { items }))
}

/// A document with all its versions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentHistory {
    /// Id.
    pub(crate) id: String,
    /// Title.
    pub(crate) title: String,
    /// Kind.
    pub(crate) kind: String,
    /// Visibility.
    pub(crate) visibility: String,
    /// Every version, with its SHA-256.
    pub(crate) versions: Vec<VersionRecord>,
}

/// One access or change recorded in the audit trail.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessRecord {
    /// Position in the audit chain.
    pub(crate) seq: i64,
    /// When (RFC 3339).
    pub(crate) at: String,
    /// Who (user id).
    pub(crate) actor_id: Option<String>,
    /// Their role.
    pub(crate) actor_role: Option<String>,
    /// What.
    pub(crate) action: String,
    /// On what.
    pub(crate) target: String,
    /// Outcome.
    pub(crate) outcome: String,
    /// From where.
    pub(crate) client_address: Option<String>,
}

/// The whole life of a dossier.
#[derive(Serialize, utoipa::ToSchema)]
pub struct History {
    pub(crate) dossier: DossierRecord,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) documents: Vec<DocumentHistory>,
    pub(crate) delegations: Vec<DelegationRecord>,
    pub(crate) accesses: Vec<AccessRecord>,
}

async fn documents_with_versions(
    services: &Services,
    caller: &Caller,
    id: DossierId,
) -> Result<Vec<DocumentHistory>, ApiError> {
    let mut out = Vec::new();
    for d in documents::list_for_dossier(&services.db, caller, id).await? {
        let versions = documents::versions(&services.db, caller, d.id)
            .await?
            .unwrap_or_default();
        out.push(DocumentHistory {
            id: d.id.to_string(),
            title: d.title,
            kind: d.kind.to_string(),
            visibility: d.visibility.to_string(),
            versions,
        });
    }
    Ok(out)
}

/// Every access and change the audit trail records about dossier `id`, oldest first: reads
/// of it and its documents, searches and listings that disclosed it, and changes. Every read
/// acknowledged so far, the caller's own included, is in it.
async fn accesses(services: &Services, id: DossierId) -> Result<Vec<AccessRecord>, ApiError> {
    services.auditor.flush().await;
    let covered = crate::db::disclosures::position(&services.db).await?;
    let rows =
        crate::db::disclosures::dossier_accesses(&services.db, &id.to_string(), covered).await?;
    Ok(rows
        .into_iter()
        .map(|r| AccessRecord {
            seq: r.seq,
            at: rfc3339(r.at),
            actor_id: r.actor_id,
            actor_role: r.actor_role,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            client_address: r.client_address,
        })
        .collect())
}

#[utoipa::path(get, path = "/v1/dossiers/{id}/history",
    params(("id" = String, Path, description = "Dossier id")),
    responses((status = 200, body = History), (status = 404, body = super::error::ErrorBody, description = "Not an auditor, or no such dossier")),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn history(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Json<History>, ApiError> {
    // Histories hold every access by anyone: auditors only.
    let dossier = if caller.role() == Role::Auditor {
        dossiers::get(&services.db, &caller, id).await?
    } else {
        None
    };
    super::audit_read(
        &services,
        &caller,
        &client,
        "dossier.history",
        format!("dossier:{id}"),
        dossier.as_ref().map(|_| id),
        dossier.is_some(),
        serde_json::json!({}),
    )
    .await?;
    let dossier = dossier.ok_or(ApiError::NotFound)?;
    let accesses = accesses(&services, id).await?;
    Ok(Json(History {
        events: lifecycle::events(&services.db, id, true).await?,
        documents: documents_with_versions(&services, &caller, id).await?,
        delegations: delegations::list(&services.db, id).await?,
        accesses,
        dossier,
    }))
}

#[derive(Serialize)]
struct ExportManifest {
    dossier: ExportDossier,
    documents: Vec<ExportDocument>,
}

#[derive(Serialize)]
struct ExportDossier {
    id: String,
    number: String,
    procedure: String,
    procedure_name: String,
    office: String,
    office_name: String,
    applicant_cf: String,
    subject: String,
    status: String,
    opened_at: String,
    closed_at: Option<String>,
}

#[derive(Serialize)]
struct ExportDocument {
    id: String,
    title: String,
    kind: String,
    visibility: String,
    versions: Vec<ExportVersion>,
}

#[derive(Serialize)]
struct ExportVersion {
    version: i32,
    path: String,
    sha256: String,
    size: i64,
    media_type: String,
    filename: String,
    added_at: String,
}

#[utoipa::path(get, path = "/v1/dossiers/{id}/export",
    params(("id" = String, Path, description = "Dossier id")),
    responses(
        (status = 200, description = "ZIP: every document version, manifest.json, history.json (steps, delegations and, for auditors, every access), manifest-sha256.txt", content_type = "application/zip"),
        (status = 404, body = super::error::ErrorBody),
    ),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn export(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Response, ApiError> {
    let dossier = dossiers::get(&services.db, &caller, id).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "dossier.export",
        format!("dossier:{id}"),
        dossier.as_ref().map(|_| id),
        dossier.is_some(),
        serde_json::json!({}),
    )
    .await?;
    let dossier = dossier.ok_or(ApiError::NotFound)?;
    let closed_at = crate::db::lifecycle::concluded_at(&services.db, id).await?;
    let staff_view = matches!(caller.role(), Role::Staff | Role::Auditor);
    // Every file of the archive, by its path in it.
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let mut manifest_docs = Vec::new();
    for d in documents_with_versions(&services, &caller, id).await? {
        let mut versions = Vec::new();
        for v in &d.versions {
            let path = format!(
                "documents/{}/v{}-{}",
                d.id,
                v.version,
                v.filename.replace(['/', '\\'], "_")
            );
            let hash = ContentHash::parse(&v.sha256).map_err(|e| ApiError::Internal(e.into()))?;
            entries.push((
                path.clone(),
                Entry::Blob(hash, u64::try_from(v.size).unwrap_or(0)),
            ));
            versions.push(ExportVersion {
                version: v.version,
                path,
                sha256: v.sha256.clone(),
                size: v.size,
                media_type: v.media_type.clone(),
                filename: v.filename.clone(),
                added_at: v.created_at.clone(),
            });
        }
        manifest_docs.push(ExportDocument {
            id: d.id,
            title: d.title,
            kind: d.kind,
            visibility: d.visibility,
            versions,
        });
    }
    let procedure = services.catalogue.procedure(&dossier.procedure);
    let office = services.catalogue.office(&dossier.office);
    let manifest = ExportManifest {
        dossier: ExportDossier {
            id: dossier.id.to_string(),
            number: dossier.number.clone(),
            procedure: dossier.procedure.clone(),
            procedure_name: procedure.map(|p| p.name.clone()).unwrap_or_default(),
            office: dossier.office.clone(),
            office_name: office.map(|o| o.name.clone()).unwrap_or_default(),
            applicant_cf: dossier.applicant_cf.clone(),
            subject: dossier.subject.clone(),
            status: dossier.status.to_string(),
            opened_at: dossier.created_at.clone(),
            closed_at: closed_at.map(rfc3339),
        },
        documents: manifest_docs,
    };
    let history = serde_json::json!({
        "events": lifecycle::events(&services.db, id, staff_view).await?,
        "delegations": delegations::list(&services.db, id).await?,
        "accesses": if caller.role() == Role::Auditor {
            accesses(&services, id).await?
        } else {
            Vec::new()
        },
    });
    // Files in path order, the checksums last; a document's checksum is its content address,
    // which the stream below checks against the bytes as it reads them.
    entries.push(("manifest.json".into(), Entry::Bytes(pretty(&manifest))));
    entries.push(("history.json".into(), Entry::Bytes(pretty(&history))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sums = String::new();
    for (path, entry) in &entries {
        let hash = match entry {
            Entry::Blob(hash, _) => *hash,
            Entry::Bytes(bytes) => ContentHash::of(bytes),
        };
        sums.push_str(&format!("{hash}  {path}\n"));
    }
    entries.push((
        "manifest-sha256.txt".into(),
        Entry::Bytes(sums.into_bytes()),
    ));
    let mut response = Response::new(stream_zip(&services, entries).await?);
    let name = format!("fascicolo-{}.zip", dossier.number.replace('/', "-"));
    for (k, v) in [
        (header::CONTENT_TYPE, "application/zip".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
        (header::CACHE_CONTROL, "private, no-cache".to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            response.headers_mut().insert(k, v);
        }
    }
    Ok(response)
}

/// Pretty JSON ending in a newline; serde_json writes struct fields and maps in a fixed
/// order, so equal values give equal bytes.
fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Where the bytes of an archived file come from.
enum Entry {
    /// A stored blob of the given size, streamed and checked against its hash.
    Blob(ContentHash, u64),
    /// Bytes made for the archive.
    Bytes(Vec<u8>),
}

/// What the archive writer is handed, in order.
enum Piece {
    /// A new file at this path; whether it may exceed 4 GiB (ZIP64).
    File(String, bool),
    /// More bytes of the current file.
    Bytes(bytes::Bytes),
    /// The last file is complete: close the archive.
    End,
}

/// Streams a ZIP of `entries`, in their order, whose bytes depend only on the files (fixed
/// timestamps and permissions; sizes in data descriptors, as a writer that cannot seek back
/// writes them). Every blob is read and checked against its hash first, so a corrupt document
/// fails the export with a JSON error before any archive byte is sent; then the archive is
/// made while it is sent, each blob checked again as it streams through (a blob corrupted in
/// between cuts the response short rather than completing it). Nothing is written to disk and
/// memory stays constant whatever the dossier's size; a client that goes away stops it.
async fn stream_zip(services: &Services, entries: Vec<(String, Entry)>) -> Result<Body, ApiError> {
    for (_, entry) in &entries {
        if let Entry::Blob(hash, _) = entry {
            services.blobs.verify(hash).await?;
        }
    }
    let (pieces, mut received) = tokio::sync::mpsc::channel::<Piece>(16);
    let (out, archive) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let sink = ChannelWriter {
            out: out.clone(),
            buffer: Vec::with_capacity(ARCHIVE_CHUNK),
        };
        let written = (|| -> anyhow::Result<()> {
            let mut zip = zip::ZipWriter::new_stream(sink);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .last_modified_time(zip::DateTime::default())
                .unix_permissions(0o644);
            while let Some(piece) = received.blocking_recv() {
                match piece {
                    Piece::File(path, large) => {
                        zip.start_file(path.as_str(), options.large_file(large))?;
                    }
                    Piece::Bytes(bytes) => zip.write_all(&bytes)?,
                    Piece::End => {
                        let mut sink = zip.finish()?.into_inner();
                        sink.flush()?;
                        return Ok(());
                    }
                }
            }
            anyhow::bail!("the export stopped before its end")
        })();
        if let Err(e) = written {
            tracing::warn!(error = %e, "export cut short");
            let _ = out.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let services = services.clone();
    tokio::spawn(async move {
        if let Err(Some(e)) = feed(&services, entries, &pieces).await {
            tracing::error!(error = %e, "an export's document failed while streaming");
        }
    });
    Ok(Body::from_stream(futures_util::stream::unfold(
        archive,
        |mut archive| async move { archive.recv().await.map(|item| (item, archive)) },
    )))
}

/// Bytes handed to the response at a time.
const ARCHIVE_CHUNK: usize = 64 * 1024;

/// The archive writer's output: gathered into chunks and handed to the response through a
/// bounded channel (the writer waits while the client reads).
struct ChannelWriter {
    out: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= ARCHIVE_CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(ARCHIVE_CHUNK),
        ));
        self.out
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

async fn feed(
    services: &Services,
    entries: Vec<(String, Entry)>,
    pieces: &tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), Option<ApiError>> {
    use futures_util::StreamExt;
    let gone = |_| None;
    for (path, entry) in entries {
        let large = matches!(entry, Entry::Blob(_, size) if size >= u64::from(u32::MAX));
        pieces.send(Piece::File(path, large)).await.map_err(gone)?;
        match entry {
            Entry::Bytes(bytes) => pieces
                .send(Piece::Bytes(bytes.into()))
                .await
                .map_err(gone)?,
            Entry::Blob(hash, size) => {
                let mut stream = services
                    .blobs
                    .stream_verified(&hash, 0..size)
                    .await
                    .map_err(|e| Some(e.into()))?;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| Some(e.into()))?;
                    pieces.send(Piece::Bytes(chunk)).await.map_err(gone)?;
                }
            }
        }
    }
    pieces.send(Piece::End).await.map_err(gone)
}

#[utoipa::path(get, path = "/v1/audit/head",
    responses((status = 200, body = crate::audit::Head), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn audit_head(
    State(services): State<Services>,
    caller: Caller,
) -> Result<Json<crate::audit::Head>, ApiError> {
    if caller.role() != Role::Auditor {
        return Err(ApiError::Forbidden(
            "only auditors read the audit trail".into(),
        ));
    }
    Ok(Json(crate::audit::head(&services.db).await?))
}
