//! Store maintenance: re-hash every referenced blob (`verify`) and delete blobs nothing
//! references (`gc`).

use serde::Serialize;

use crate::app::Services;
use crate::blobs::BlobError;
use crate::db::documents;
use crate::db::now_ms;
use crate::domain::ContentHash;

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Blobs referenced by document versions.
    pub checked: usize,
    /// Referenced but absent from the store.
    pub missing: Vec<String>,
    /// Present but not matching their hash.
    pub corrupt: Vec<String>,
}

impl VerifyReport {
    /// True when every referenced blob is present and intact.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}

/// Re-hashes every blob that a document version references.
pub async fn verify(services: &Services) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for hex in documents::referenced_hashes(&services.db).await? {
        report.checked += 1;
        let hash = match ContentHash::parse(&hex) {
            Ok(h) => h,
            Err(_) => {
                report.corrupt.push(hex);
                continue;
            }
        };
        match services.blobs.verify(&hash).await {
            Ok(()) => {}
            Err(BlobError::Missing(_)) => report.missing.push(hex),
            Err(BlobError::Corrupt(_)) => report.corrupt.push(hex),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Objects in the store.
    pub examined: usize,
    /// Unreferenced objects deleted.
    pub deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Unreferenced objects kept because they are younger than the grace period (an upload
    /// may be about to reference them).
    pub kept_young: usize,
    /// Stale spool files removed.
    pub spool_files_removed: usize,
}

/// Deletes blobs that no document version references and that are older than `grace_ms`.
///
/// Each deletion runs inside a write transaction holding the blob's lock, the same lock an
/// upload takes before committing a row that reuses an existing blob; so a blob is never
/// deleted under a row that references it.
pub async fn gc(services: &Services, grace_ms: i64) -> anyhow::Result<GcReport> {
    let mut report = GcReport::default();
    let cutoff = now_ms() - grace_ms;
    let listed = services.blobs.list().await?;
    report.examined = listed.len();
    for blob in listed {
        if blob.modified_ms > cutoff {
            if !documents::is_referenced(&services.db, &blob.hash.to_hex()).await? {
                report.kept_young += 1;
            }
            continue;
        }
        let mut tx = services.db.begin_write().await?;
        documents::lock_blob(&services.db, &mut tx, &blob.hash).await?;
        let referenced: Option<i64> =
            sqlx::query_scalar("select 1 from document_version where sha256 = $1 limit 1")
                .bind(blob.hash.to_hex())
                .fetch_optional(&mut *tx)
                .await?;
        if referenced.is_some() {
            tx.rollback().await?;
            continue;
        }
        services.blobs.delete(&blob.hash).await?;
        sqlx::query("delete from blob where sha256 = $1")
            .bind(blob.hash.to_hex())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        report.deleted += 1;
        report.bytes_freed += blob.size;
        tracing::info!(hash = %blob.hash, size = blob.size, "unreferenced blob deleted");
    }
    report.spool_files_removed = services
        .blobs
        .clean_spool(u64::try_from(grace_ms).unwrap_or(0))
        .await?;
    Ok(report)
}
