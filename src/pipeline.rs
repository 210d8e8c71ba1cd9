//! Change log → extraction → index, with resume (DESIGN.md §1).
//!
//! The indexer reads the change log after the position stored in the index's last commit,
//! applies each entry idempotently (the document's current state replaces whatever the index
//! holds), and commits with the new position. A crash anywhere means some entries are applied
//! again, never that one is skipped. Every node runs its own indexer over the shared log.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sqlx::Row;
use tokio::sync::Notify;

use crate::app::Services;
use crate::db::{Db, DbError, now_ms};
use crate::domain::ContentHash;
use crate::extract::EXTRACTOR_VERSION;
use crate::extract::sandbox::{Outcome, Sandbox};
use crate::index::{IndexedDoc, SearchIndex};

/// Entries read per batch; each batch ends in one commit.
const BATCH: i64 = 256;
/// How often the log is polled for changes written by other processes or nodes.
const POLL: Duration = Duration::from_millis(250);
/// After a batch that did not fill up, how long the indexer lets further changes gather
/// before it reads the log again, so that under a stream of uploads each commit takes many
/// documents rather than a few (a commit writes and fsyncs new segment files, and each new
/// segment is warmed and later merged). A change arriving while the indexer is idle is read
/// at once.
const GATHER: Duration = Duration::from_millis(100);
/// A hole in the sequence older than this belongs to a rolled-back transaction.
const GAP_TIMEOUT_MS: i64 = 5_000;
/// Documents read by one query of the indexer.
const LOAD_AT_ONCE: usize = 512;
/// Texts read at a time by `reindex`.
const REINDEX_PARALLEL: usize = 16;

/// A pipeline failure (it is retried; nothing is lost).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Database driver.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// Index.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// Blob store.
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
    /// A blocking task died.
    #[error("indexing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The indexer.
#[derive(Clone, Debug)]
pub struct Pipeline {
    services: Services,
    index: Arc<SearchIndex>,
    sandbox: Sandbox,
    parallel: usize,
    /// Woken when an OCR job is queued.
    ocr_wake: Arc<Notify>,
}

/// What one batch applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// The log had nothing new (or only a hole still being committed).
    Nothing,
    /// Fewer entries than a batch holds: the indexer has caught up.
    Some,
    /// A full batch: more may be waiting.
    Full,
}

/// What the pipeline stores about a version's text.
struct Loaded {
    doc: IndexedDoc,
    version: i32,
    sha256: String,
    media_type: String,
    status: String,
}

impl Pipeline {
    /// The sandbox it extracts in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The services it works with.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Notified whenever the indexer queues an OCR job.
    pub fn ocr_wake(&self) -> Arc<Notify> {
        self.ocr_wake.clone()
    }

    /// A pipeline over `index`, extracting with `sandbox`, `parallel` files at a time.
    pub fn new(
        services: Services,
        index: Arc<SearchIndex>,
        sandbox: Sandbox,
        parallel: usize,
    ) -> Self {
        Self {
            services,
            index,
            sandbox,
            parallel: parallel.max(1),
            ocr_wake: Arc::new(Notify::new()),
        }
    }

    /// Follows the change log until `shutdown` is notified; errors are logged and retried.
    pub async fn run(self, wake: Arc<Notify>, shutdown: Arc<Notify>) {
        loop {
            match self.apply_batch().await {
                Ok(Applied::Full) => continue,
                Ok(Applied::Some) => {
                    tokio::select! {
                        () = tokio::time::sleep(GATHER) => {}
                        () = shutdown.notified() => return,
                    }
                    continue;
                }
                Ok(Applied::Nothing) => {}
                Err(e) => {
                    tracing::error!(error = %e, "indexing failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.notified() => return,
            }
        }
    }

    /// Applies every pending entry; returns how many batches it took.
    pub async fn catch_up(&self) -> Result<usize, PipelineError> {
        let mut batches = 0;
        while self.apply_batch().await? != Applied::Nothing {
            batches += 1;
        }
        Ok(batches)
    }

    /// Applies one batch.
    async fn apply_batch(&self) -> Result<Applied, PipelineError> {
        let position = self.index.position();
        let rows = sqlx::query(
            "select seq, entity, entity_id, op, created_at from change_log where seq > $1 \
             order by seq limit $2",
        )
        .bind(position)
        .bind(BATCH)
        .fetch_all(self.services.db.pool())
        .await?;
        if rows.is_empty() {
            return Ok(Applied::Nothing);
        }
        let now = now_ms();
        let mut expected = position + 1;
        let mut last = position;
        let mut documents = BTreeSet::new();
        let mut dossiers = BTreeSet::new();
        // A dossier opened or a delegation changed, possibly through another node: what
        // callers may see changed.
        let mut rights_changed = false;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let created_at: i64 = row.try_get("created_at")?;
            // A hole may be a transaction still committing: wait for it, unless it is old
            // enough to have been rolled back (sequences are not transactional).
            if seq != expected && now - created_at < GAP_TIMEOUT_MS {
                break;
            }
            let entity: String = row.try_get("entity")?;
            let id: String = row.try_get("entity_id")?;
            let op: String = row.try_get("op")?;
            match entity.as_str() {
                "document" => {
                    documents.insert(id);
                }
                "dossier" => {
                    rights_changed = true;
                    if op != "create" {
                        dossiers.insert(id);
                    }
                }
                _ => {}
            }
            last = seq;
            expected = seq + 1;
        }
        if last == position {
            return Ok(Applied::Nothing);
        }
        for dossier in dossiers {
            let ids: Vec<String> =
                sqlx::query_scalar("select id from document where dossier_id = $1")
                    .bind(&dossier)
                    .fetch_all(self.services.db.pool())
                    .await?;
            documents.extend(ids);
        }
        let count = documents.len();
        self.index_documents(documents.into_iter().collect())
            .await?;
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.commit(last)).await??;
        if rights_changed {
            self.services.db.access_changed();
        }
        tracing::debug!(position = last, documents = count, "index committed");
        Ok(if rows.len() as i64 >= BATCH {
            Applied::Full
        } else {
            Applied::Some
        })
    }

    /// Re-reads, extracts (or takes from the cache) and indexes these documents; documents
    /// that no longer exist are removed from the index. The documents are read in one query
    /// and their new extraction outcomes recorded in one transaction.
    pub async fn index_documents(&self, ids: Vec<String>) -> Result<(), PipelineError> {
        let mut found = load_many(&self.services.db, &ids).await?;
        let loaded: Vec<Option<Loaded>> = ids.iter().map(|id| found.remove(id)).collect();
        let results: Vec<Result<Option<Completed>, PipelineError>> =
            futures_util::stream::iter(loaded)
                .map(|loaded| async move {
                    match loaded {
                        Some(loaded) => self.complete(loaded).await.map(Some),
                        None => Ok(None),
                    }
                })
                .buffered(self.parallel)
                .collect()
                .await;
        let mut docs = Vec::with_capacity(results.len());
        let mut outcomes = Vec::new();
        for (id, result) in ids.into_iter().zip(results) {
            match result? {
                Some((doc, recorded)) => {
                    outcomes.extend(recorded);
                    docs.push((id, Some(doc)));
                }
                None => docs.push((id, None)),
            }
        }
        if record_outcomes(&self.services.db, &outcomes).await? {
            self.ocr_wake.notify_waiters();
        }
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || {
            for (id, doc) in docs {
                match doc {
                    Some(doc) => index.upsert(&doc)?,
                    None => match crate::domain::DocumentId::parse(&id) {
                        Some(id) => index.delete(id),
                        // Never indexed: the index holds typed ids only.
                        None => tracing::warn!(id, "a change names a document id that is not one"),
                    },
                }
            }
            Ok::<_, crate::index::IndexError>(())
        })
        .await??;
        Ok(())
    }

    /// Adds the text to a loaded document; returns it with the extraction outcome to record
    /// if the version had none yet.
    async fn complete(&self, mut loaded: Loaded) -> Result<Completed, PipelineError> {
        let outcome = self.text_for(&loaded.sha256, &loaded.media_type).await?;
        let recorded = (loaded.status == "pending").then(|| {
            Recorded::of(
                &loaded.doc.doc_id.to_string(),
                loaded.version,
                &loaded.sha256,
                &loaded.media_type,
                &outcome,
            )
        });
        if let Outcome::Done(extracted) = outcome {
            if let Some(signers) = extracted.meta.as_ref().and_then(crate::extract::signers_of) {
                loaded.doc.signed = true;
                loaded.doc.signers = signers;
            }
            loaded.doc.text = extracted.text;
        }
        Ok((loaded.doc, recorded))
    }

    /// The text of a blob: from the cache of extracted texts, or extracted in the sandbox
    /// and cached (failures too, so a hostile file is parsed once per extractor version);
    /// with what OCR read of its pages merged in, once it has.
    pub async fn text_for(&self, sha256: &str, media_type: &str) -> Result<Outcome, PipelineError> {
        if let Some(outcome) = stored_text(&self.services.blobs, sha256).await? {
            return Ok(outcome);
        }
        let mut outcome = self.extract(sha256, media_type).await?;
        with_ocr(&self.services.blobs, sha256, &mut outcome).await?;
        Ok(outcome)
    }

    /// Extracts the text of a blob in the sandbox and caches the outcome.
    async fn extract(&self, sha256: &str, media_type: &str) -> Result<Outcome, PipelineError> {
        let key = text_cache_key(sha256);
        let mut outcome = match ContentHash::parse(sha256) {
            // Nothing to extract: do not read the bytes at all.
            Ok(_) if !crate::extract::supports(media_type) => Outcome::Failed {
                reason: format!("no text extractor for {media_type}"),
            },
            Ok(hash)
                if self.services.blobs.size(&hash).await.unwrap_or(0)
                    > self.sandbox.max_input_bytes() =>
            {
                Outcome::Failed {
                    reason: format!(
                        "file larger than the extraction limit of {} bytes",
                        self.sandbox.max_input_bytes()
                    ),
                }
            }
            Ok(hash) => match self.services.blobs.read_verified(&hash).await {
                Ok(bytes) => self.sandbox.run(bytes, media_type).await,
                Err(crate::blobs::BlobError::Corrupt(_)) => Outcome::Failed {
                    reason: "the stored file failed its integrity check".into(),
                },
                Err(crate::blobs::BlobError::Missing(_)) => Outcome::Failed {
                    reason: "the stored file is missing".into(),
                },
                Err(e) => return Err(e.into()),
            },
            Err(_) => Outcome::Failed {
                reason: "invalid content hash".into(),
            },
        };
        // A signed file's content is kept beside it, to be read and downloaded alone.
        if let Outcome::Done(extracted) = &mut outcome
            && let Some(content) = extracted.content.take()
        {
            self.services
                .blobs
                .put_derived(&unwrapped_key(sha256), Bytes::from(content))
                .await?;
        }
        // Store failures of the file itself, not of the store.
        let json = serde_json::to_vec(&outcome).unwrap_or_default();
        self.services
            .blobs
            .put_derived(&key, Bytes::from(json))
            .await?;
        Ok(outcome)
    }
}

/// The text of a blob as far as it is known: the cached extraction outcome, with what OCR
/// read merged in; `None` when it was not extracted yet.
pub async fn stored_text(
    blobs: &crate::blobs::BlobStore,
    sha256: &str,
) -> Result<Option<Outcome>, crate::blobs::BlobError> {
    let Some(cached) = blobs.get_derived(&text_cache_key(sha256)).await? else {
        return Ok(None);
    };
    let Ok(mut outcome) = serde_json::from_slice::<Outcome>(&cached) else {
        return Ok(None);
    };
    with_ocr(blobs, sha256, &mut outcome).await?;
    Ok(Some(outcome))
}

/// Merges what OCR read of a blob's pages into its extracted text, once it has.
async fn with_ocr(
    blobs: &crate::blobs::BlobStore,
    sha256: &str,
    outcome: &mut Outcome,
) -> Result<(), crate::blobs::BlobError> {
    if let Outcome::Done(extracted) = outcome
        && !extracted.ocr_pages.is_empty()
        && let Some(stored) = blobs.get_derived(&crate::ocr::result_key(sha256)).await?
        && let Ok(read) = serde_json::from_slice::<crate::ocr::OcrResult>(&stored)
    {
        crate::ocr::merge(extracted, &read);
    }
    Ok(())
}

/// Where the signed content inside a blob (a CAdES envelope) is kept.
pub fn unwrapped_key(sha256: &str) -> String {
    let (a, b) = (
        sha256.get(..2).unwrap_or("xx"),
        sha256.get(2..4).unwrap_or("xx"),
    );
    format!("unwrapped/v1/{a}/{b}/{sha256}")
}

/// Where the extracted text of a blob is cached, for this extractor version.
pub fn text_cache_key(sha256: &str) -> String {
    let (a, b) = (
        sha256.get(..2).unwrap_or("xx"),
        sha256.get(2..4).unwrap_or("xx"),
    );
    format!("extracted/v{EXTRACTOR_VERSION}/{a}/{b}/{sha256}.json")
}

/// The columns [`loaded`] reads: a document, its dossier and its newest version.
const LOAD_COLUMNS: &str = "select doc.id, doc.dossier_id, doc.title, doc.kind, doc.visibility, \
     doc.current_version, d.number, d.tenant, d.office_code, d.procedure_code, d.status, d.year, \
     v.sha256, v.media_type, v.created_at, v.extraction_status \
     from document doc join dossier d on d.id = doc.dossier_id and d.status <> 'draft' \
     join document_version v on v.document_id = doc.id and v.version = doc.current_version";

/// The documents of `ids` that exist, by id, in one query per [`LOAD_AT_ONCE`] ids (a change
/// to many dossiers can bring more documents than a statement may bind).
async fn load_many(
    db: &Db,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Loaded>, PipelineError> {
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for part in ids.chunks(LOAD_AT_ONCE) {
        let mut sql = crate::db::Sql::new_positional(db.backend(), LOAD_COLUMNS);
        sql.push(" where doc.id in (");
        for (i, id) in part.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(id.clone());
        }
        sql.push(")");
        for row in sql.query().fetch_all(db.pool()).await? {
            let loaded = loaded(&row)?;
            found.insert(loaded.doc.doc_id.to_string(), loaded);
        }
    }
    Ok(found)
}

/// A stored id, typed.
fn parse_id<T>(text: String, parse: fn(&str) -> Option<T>) -> Result<T, PipelineError> {
    parse(&text).ok_or_else(|| DbError::Corrupt(format!("stored id {text:?}")).into())
}

fn loaded(row: &sqlx::any::AnyRow) -> Result<Loaded, PipelineError> {
    let year: i32 = row.try_get("year")?;
    Ok(Loaded {
        doc: IndexedDoc {
            doc_id: parse_id(row.try_get("id")?, crate::domain::DocumentId::parse)?,
            dossier_id: parse_id(row.try_get("dossier_id")?, crate::domain::DossierId::parse)?,
            dossier_number: row.try_get("number")?,
            tenant: row.try_get("tenant")?,
            office: row.try_get("office_code")?,
            procedure: row.try_get("procedure_code")?,
            kind: row.try_get("kind")?,
            status: row.try_get("status")?,
            visibility: row.try_get("visibility")?,
            year: u64::try_from(year).unwrap_or_default(),
            date_ms: row.try_get("created_at")?,
            title: row.try_get("title")?,
            text: String::new(),
            signed: false,
            signers: Vec::new(),
        },
        version: row.try_get("current_version")?,
        sha256: row.try_get("sha256")?,
        media_type: row.try_get("media_type")?,
        status: row.try_get("extraction_status")?,
    })
}

/// A document ready to index, with the extraction outcome to record if it is new.
type Completed = (IndexedDoc, Option<Recorded>);

/// An extraction outcome to record on a document version.
#[derive(Debug)]
struct Recorded {
    id: String,
    version: i32,
    status: &'static str,
    pages: Option<i64>,
    chars: Option<i64>,
    error: Option<String>,
    method: Option<String>,
    meta: Option<String>,
    /// The file and its pages to read with OCR, when some page has no text but a picture.
    ocr: Option<(String, String, Vec<u32>)>,
}

impl Recorded {
    fn of(id: &str, version: i32, sha256: &str, media_type: &str, outcome: &Outcome) -> Self {
        let (status, pages, chars, error) = match outcome {
            Outcome::Done(e) => (
                "done",
                e.pages.map(i64::from),
                Some(e.text.chars().count() as i64),
                None,
            ),
            Outcome::Failed { reason } => ("failed", None, None, Some(reason.clone())),
        };
        let (method, meta) = match outcome {
            Outcome::Done(e) => (
                e.method.clone(),
                e.meta.as_ref().map(serde_json::Value::to_string),
            ),
            Outcome::Failed { .. } => (None, None),
        };
        let ocr = match outcome {
            Outcome::Done(e) if !e.ocr_pages.is_empty() => Some((
                sha256.to_owned(),
                media_type.to_owned(),
                e.ocr_pages.clone(),
            )),
            _ => None,
        };
        Self {
            id: id.to_owned(),
            version,
            status,
            pages,
            chars,
            error,
            method,
            meta,
            ocr,
        }
    }
}

/// Records extraction outcomes, all in one transaction: one commit for a batch of documents,
/// not one each, so the indexer takes the write lock once while uploads go on. Pages to read
/// with OCR are queued in the same transaction; returns whether any were.
async fn record_outcomes(db: &Db, outcomes: &[Recorded]) -> Result<bool, PipelineError> {
    if outcomes.is_empty() {
        return Ok(false);
    }
    let mut queued = false;
    let mut tx = db.begin_write().await?;
    for r in outcomes {
        sqlx::query(
            "update document_version set extraction_status = $1, extraction_pages = $2, \
             extraction_chars = $3, extraction_error = $4, extraction_method = $7, \
             extraction_meta = $8 where document_id = $5 and version = $6",
        )
        .bind(r.status)
        .bind(r.pages)
        .bind(r.chars)
        .bind(r.error.clone())
        .bind(r.id.clone())
        .bind(r.version)
        .bind(r.method.clone())
        .bind(r.meta.clone())
        .execute(&mut *tx)
        .await?;
        if let Some((sha256, media_type, pages)) = &r.ocr {
            crate::db::ocr::enqueue(&mut tx, sha256, media_type, pages).await?;
            queued = true;
        }
    }
    tx.commit().await?;
    Ok(queued)
}

/// Rebuilds the index from the database and the cached texts (extracting only what is not
/// cached), then records the change-log position it reflects. Returns the documents indexed.
///
/// The documents are read in one pass over the database, their texts fetched
/// [`REINDEX_PARALLEL`] at a time, and handed to the index writer, whose threads analyse them
/// while the next ones are read.
pub async fn reindex(
    services: &Services,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<usize> {
    let pipeline = services.pipeline()?;
    let index = services
        .index
        .clone()
        .ok_or_else(|| anyhow::anyhow!("index not open"))?;
    // Changes after this position are applied by the server's indexer when it starts.
    let position: i64 = sqlx::query_scalar("select coalesce(max(seq), 0) from change_log")
        .fetch_one(services.db.pool())
        .await?;
    let total: i64 = sqlx::query_scalar("select count(*) from document")
        .fetch_one(services.db.pool())
        .await?;
    progress.set_length(u64::try_from(total).unwrap_or(0));
    index.clear()?;
    let rows = sqlx::query(LOAD_COLUMNS).fetch(services.db.pool());
    let mut docs = rows
        .map(|row| {
            let pipeline = &pipeline;
            async move { pipeline.complete(loaded(&row?)?).await }
        })
        .buffered(REINDEX_PARALLEL)
        .ready_chunks(REINDEX_PARALLEL * 8);
    let mut count = 0;
    while let Some(chunk) = docs.next().await {
        let (chunk, outcomes): (Vec<_>, Vec<_>) = chunk
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        record_outcomes(
            &services.db,
            &outcomes.into_iter().flatten().collect::<Vec<_>>(),
        )
        .await?;
        count += chunk.len();
        progress.inc(chunk.len() as u64);
        let index = index.clone();
        tokio::task::spawn_blocking(move || chunk.iter().try_for_each(|doc| index.add(doc)))
            .await??;
    }
    let committing = index.clone();
    tokio::task::spawn_blocking(move || committing.commit(position)).await??;
    progress.finish();
    Ok(count)
}
