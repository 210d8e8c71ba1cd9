//! The OCR queue: one job per stored file whose pages need OCR (`ocr_job`), claimed by the
//! OCR workers of any node under a lease.

use sqlx::Row;

use super::{Db, DbError, now_ms};

/// A claimed job.
#[derive(Clone, Debug)]
pub struct OcrJob {
    /// The file.
    pub sha256: String,
    /// Its sniffed media type.
    pub media_type: String,
    /// The 1-based pages to read.
    pub pages: Vec<u32>,
    /// When this claim was made (the lease is renewed from it).
    pub claimed_at: i64,
    /// Claims so far, this one included.
    pub attempts: i32,
}

/// Queues the OCR of `pages` of a file, inside the transaction recording its text; a file
/// already queued (or read) keeps its job.
pub async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sha256: &str,
    media_type: &str,
    pages: &[u32],
) -> Result<(), DbError> {
    let pages = serde_json::to_string(pages).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query(
        "insert into ocr_job (sha256, media_type, pages, status, created_at) \
         values ($1, $2, $3, 'pending', $4) on conflict (sha256) do nothing",
    )
    .bind(sha256)
    .bind(media_type)
    .bind(pages)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims the oldest waiting job: a pending one, or a running one whose lease (`lease_ms`
/// since its last renewal) ran out. Two workers racing for a job: one claims it, the other
/// gets the next.
pub async fn claim(db: &Db, lease_ms: i64) -> Result<Option<OcrJob>, DbError> {
    loop {
        let now = now_ms();
        let row = sqlx::query(
            "select sha256, media_type, pages, status, coalesce(claimed_at, 0) as claimed_at, \
             attempts from ocr_job \
             where status = 'pending' or (status = 'running' and claimed_at < $1) \
             order by created_at, sha256 limit 1",
        )
        .bind(now - lease_ms)
        .fetch_optional(db.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sha256: String = row.try_get("sha256")?;
        let status: String = row.try_get("status")?;
        let previous: i64 = row.try_get("claimed_at")?;
        let claimed = sqlx::query(
            "update ocr_job set status = 'running', claimed_at = $1, attempts = attempts + 1 \
             where sha256 = $2 and status = $3 and coalesce(claimed_at, 0) = $4",
        )
        .bind(now)
        .bind(&sha256)
        .bind(&status)
        .bind(previous)
        .execute(db.write_pool())
        .await?;
        if claimed.rows_affected() == 1 {
            let pages: String = row.try_get("pages")?;
            return Ok(Some(OcrJob {
                pages: serde_json::from_str(&pages)
                    .map_err(|e| DbError::Corrupt(format!("OCR pages {pages:?}: {e}")))?,
                media_type: row.try_get("media_type")?,
                sha256,
                claimed_at: now,
                attempts: row.try_get::<i32, _>("attempts")? + 1,
            }));
        }
    }
}

/// Renews a claim after a page, so a long document keeps its job; false when the claim was
/// lost (another worker took the job after the lease ran out).
pub async fn renew(db: &Db, job: &mut OcrJob) -> Result<bool, DbError> {
    let now = now_ms();
    let renewed = sqlx::query(
        "update ocr_job set claimed_at = $1 where sha256 = $2 and status = 'running' \
         and claimed_at = $3",
    )
    .bind(now)
    .bind(&job.sha256)
    .bind(job.claimed_at)
    .execute(db.write_pool())
    .await?;
    if renewed.rows_affected() == 1 {
        job.claimed_at = now;
        return Ok(true);
    }
    Ok(false)
}

/// How a job ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// `done` (some pages were read) or `failed`.
    pub status: &'static str,
    /// Pages read.
    pub pages_read: i32,
    /// Mean word confidence over them.
    pub mean_confidence: Option<f64>,
    /// Why pages were not read.
    pub reason: Option<String>,
    /// The version's text as it now stands: characters, method, metadata (JSON).
    pub chars: i64,
    /// How the text was obtained.
    pub method: Option<String>,
    /// The format's metadata with the OCR's.
    pub meta: Option<String>,
}

/// Records how a job ended, updates the text of every version of the file, and logs a change
/// of every document whose current version it is, so every node's indexer reads the new text.
/// Nothing is written when the claim was lost.
pub async fn finish(db: &Db, job: &OcrJob, finished: &Finished) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let ended = sqlx::query(
        "update ocr_job set status = $1, finished_at = $2, pages_read = $3, \
         mean_confidence = $4, reason = $5 \
         where sha256 = $6 and status = 'running' and claimed_at = $7",
    )
    .bind(finished.status)
    .bind(now_ms())
    .bind(finished.pages_read)
    .bind(finished.mean_confidence)
    .bind(finished.reason.clone())
    .bind(&job.sha256)
    .bind(job.claimed_at)
    .execute(&mut *tx)
    .await?;
    if ended.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "update document_version set extraction_chars = $1, extraction_method = $2, \
         extraction_meta = $3 where sha256 = $4 and extraction_status = 'done'",
    )
    .bind(finished.chars)
    .bind(finished.method.clone())
    .bind(finished.meta.clone())
    .bind(&job.sha256)
    .execute(&mut *tx)
    .await?;
    let documents = sqlx::query(
        "select doc.id, d.tenant from document doc join dossier d on d.id = doc.dossier_id \
         join document_version v on v.document_id = doc.id and v.version = doc.current_version \
         where v.sha256 = $1",
    )
    .bind(&job.sha256)
    .fetch_all(&mut *tx)
    .await?;
    for row in documents {
        let id: String = row.try_get("id")?;
        let tenant: String = row.try_get("tenant")?;
        super::dossiers::log_change(&mut tx, &tenant, "document", &id, "update").await?;
    }
    tx.commit().await?;
    Ok(true)
}
