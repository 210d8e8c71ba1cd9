//! Documents and their versions, with permission-filtered reads.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::dossiers::{log_change, rfc3339};
use super::{Backend, Db, DbError, Sql, now_ms, parse_stored};
use crate::access::Caller;
use crate::blobs::{BlobError, BlobStore, StoredBlob};
use crate::domain::{
    ContentHash, DocumentId, DocumentKind, DossierId, Role, Side, UploadChannel, UserId, Visibility,
};

/// A document with its newest version.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentRecord {
    /// Its id.
    #[schema(value_type = String)]
    pub id: DocumentId,
    /// The dossier it belongs to.
    #[schema(value_type = String)]
    pub dossier_id: DossierId,
    /// Title.
    pub title: String,
    /// Its role in the dossier.
    pub kind: DocumentKind,
    /// Who may read it.
    pub visibility: Visibility,
    /// Number of the newest version.
    pub version: i32,
    /// SHA-256 of the newest version's bytes (hex).
    pub sha256: String,
    /// Size of the newest version in bytes.
    pub size: i64,
    /// Media type sniffed from the newest version's bytes.
    pub media_type: String,
    /// File name of the newest version as uploaded (sanitised).
    pub filename: String,
    /// When the document was first added (RFC 3339).
    pub created_at: String,
    /// When its newest version was added (RFC 3339).
    pub updated_at: String,
    /// Text extraction of the newest version.
    pub extraction: Extraction,
    /// Who uploaded the newest version.
    pub uploaded_by: Uploader,
    /// The side that uploaded the document, which alone adds its versions.
    pub side: Side,
    /// The office handling the dossier (for write decisions; not sent).
    #[serde(skip)]
    pub office: String,
}

/// Who uploaded a version: the person for staff and auditors, only the side for applicants.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Uploader {
    /// `applicant` or `office`.
    pub side: Side,
    /// The uploader's account (staff and auditors).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub user_id: Option<UserId>,
    /// Their name (staff and auditors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Their role (staff and auditors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// How it arrived (staff and auditors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<UploadChannel>,
}

impl Uploader {
    /// Read from the `up_*` columns of a version's row, as `caller` may see it.
    fn from_row(row: &AnyRow, caller: &Caller) -> Result<Self, DbError> {
        let role: Role = parse_stored(&row.try_get::<String, _>("up_role")?, "role")?;
        if !caller.sees_uploaders() {
            return Ok(Self {
                side: role.side(),
                user_id: None,
                name: None,
                role: None,
                channel: None,
            });
        }
        let id: String = row.try_get("up_id")?;
        Ok(Self {
            side: role.side(),
            user_id: UserId::parse(&id),
            name: Some(row.try_get("up_name")?),
            role: Some(role),
            channel: Some(parse_stored(
                &row.try_get::<String, _>("up_channel")?,
                "channel",
            )?),
        })
    }
}

/// One version of a document.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VersionRecord {
    /// Version number, from 1.
    pub version: i32,
    /// SHA-256 of its bytes (hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// Sniffed media type.
    pub media_type: String,
    /// File name as uploaded (sanitised).
    pub filename: String,
    /// When it was added (RFC 3339).
    pub created_at: String,
    /// Who added it.
    pub uploaded_by: Uploader,
}

const DOCUMENT_COLUMNS: &str = "doc.id, doc.dossier_id, doc.title, doc.kind, doc.visibility, \
    doc.current_version, doc.created_at, doc.updated_at, doc.side, d.office_code, \
    v.sha256, v.size, v.media_type, v.filename, v.extraction_status, v.extraction_pages, \
    v.extraction_chars, v.extraction_error, v.extraction_method, v.extraction_meta, \
    o.status as ocr_status, o.pages as ocr_pages, o.pages_read as ocr_pages_read, \
    o.mean_confidence as ocr_confidence, o.reason as ocr_reason, \
    v.created_by as up_id, v.created_role as up_role, v.channel as up_channel, up.name as up_name";

/// The columns of a version with its uploader (`up_*`), from `document_version` joined with
/// `app_user up`.
const VERSION_COLUMNS: &str = "v.version, v.sha256, v.size, v.media_type, v.filename, \
    v.created_at, v.created_by as up_id, v.created_role as up_role, v.channel as up_channel, \
    up.name as up_name";

/// Where text extraction of a version stands.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Extraction {
    /// `pending`, `done` or `failed`.
    pub status: String,
    /// Pages, for paged formats (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<i32>,
    /// Characters of text extracted (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chars: Option<i64>,
    /// Why it failed (when failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the text was obtained: `text_layer`, `text`, `html`, `office`, `email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// What the format says of itself: an e-mail's `from`, `to`, `date`, `subject` and
    /// `attachments` (each with its `name`, `media_type`, `size`, `status`), a PEC's `pec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
    /// Reading the pages that have no text (an image's, a scanned PDF's) with OCR, a step
    /// of its own after the text: absent when no page needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocr: Option<OcrStep>,
}

/// Where the OCR of a version's pages stands.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OcrStep {
    /// `pending`, `running`, `done` or `failed`.
    pub status: String,
    /// Pages to read.
    pub pages: u32,
    /// Pages read (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages_read: Option<i32>,
    /// Tesseract's mean word confidence over the pages read, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_confidence: Option<f64>,
    /// Why pages were not read (when failed, or some pages failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl OcrStep {
    fn from_row(row: &AnyRow) -> Result<Option<Self>, DbError> {
        let Some(status) = row.try_get::<Option<String>, _>("ocr_status")? else {
            return Ok(None);
        };
        let pages: String = row.try_get("ocr_pages")?;
        let pages = serde_json::from_str::<Vec<u32>>(&pages).map_or(0, |p| p.len() as u32);
        Ok(Some(Self {
            status,
            pages,
            pages_read: row.try_get("ocr_pages_read")?,
            mean_confidence: row.try_get("ocr_confidence")?,
            reason: row.try_get("ocr_reason")?,
        }))
    }
}

fn document_from_row(row: &AnyRow, caller: &Caller) -> Result<DocumentRecord, DbError> {
    let id: String = row.try_get("id")?;
    let dossier: String = row.try_get("dossier_id")?;
    Ok(DocumentRecord {
        id: DocumentId::parse(&id)
            .ok_or_else(|| DbError::Corrupt(format!("document id {id:?}")))?,
        dossier_id: DossierId::parse(&dossier)
            .ok_or_else(|| DbError::Corrupt(format!("dossier id {dossier:?}")))?,
        title: row.try_get("title")?,
        kind: parse_stored(&row.try_get::<String, _>("kind")?, "kind")?,
        visibility: parse_stored(&row.try_get::<String, _>("visibility")?, "visibility")?,
        version: row.try_get("current_version")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        media_type: row.try_get("media_type")?,
        filename: row.try_get("filename")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        office: row.try_get("office_code")?,
        side: parse_stored(&row.try_get::<String, _>("side")?, "side")?,
        uploaded_by: Uploader::from_row(row, caller)?,
        extraction: Extraction {
            status: row.try_get("extraction_status")?,
            pages: row.try_get("extraction_pages")?,
            chars: row.try_get("extraction_chars")?,
            reason: row.try_get("extraction_error")?,
            method: row.try_get("extraction_method")?,
            meta: row
                .try_get::<Option<String>, _>("extraction_meta")?
                .and_then(|m| serde_json::from_str(&m).ok()),
            ocr: OcrStep::from_row(row)?,
        },
    })
}

fn version_from_row(row: &AnyRow, caller: &Caller) -> Result<VersionRecord, DbError> {
    Ok(VersionRecord {
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        media_type: row.try_get("media_type")?,
        filename: row.try_get("filename")?,
        created_at: rfc3339(row.try_get("created_at")?),
        uploaded_by: Uploader::from_row(row, caller)?,
    })
}

/// The bytes of a new version, already in the blob store.
pub struct NewContent<'a> {
    /// The stored blob.
    pub blob: StoredBlob,
    /// Its sniffed media type.
    pub media_type: &'a str,
    /// Its sanitised file name.
    pub filename: &'a str,
    /// Who uploaded it.
    pub created_by: UserId,
    /// Their role when they did.
    pub created_role: Role,
    /// How it arrived.
    pub channel: UploadChannel,
    /// The store holding it, to re-check a deduplicated blob under the lock.
    pub blobs: &'a BlobStore,
}

/// A new document; permission was checked by the caller.
pub struct NewDocument<'a> {
    /// The municipality (for the change log).
    pub tenant: &'a str,
    /// The dossier it joins.
    pub dossier: DossierId,
    /// Title.
    pub title: &'a str,
    /// Kind.
    pub kind: DocumentKind,
    /// Visibility.
    pub visibility: Visibility,
    /// Its first version.
    pub content: NewContent<'a>,
}

/// Serialises a transaction that references a blob with garbage collection of that blob.
/// SQLite write transactions are already serial; PostgreSQL takes an advisory lock keyed
/// by the hash. While the lock is held, the blob cannot be collected.
pub async fn lock_blob(
    db: &Db,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    hash: &ContentHash,
) -> Result<(), DbError> {
    lock_blobs(db, tx, std::slice::from_ref(hash)).await
}

/// [`lock_blob`] for several blobs, in a fixed order, so that two transactions locking
/// overlapping sets cannot wait for each other.
pub(super) async fn lock_blobs(
    db: &Db,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    hashes: &[ContentHash],
) -> Result<(), DbError> {
    if db.backend() == Backend::Postgres {
        let mut keys: Vec<i64> = hashes.iter().map(blob_lock_key).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sqlx::query("select pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The PostgreSQL advisory lock that serialises transactions referencing the blob `hash`
/// with its garbage collection.
fn blob_lock_key(hash: &ContentHash) -> i64 {
    i64::from_str_radix(&hash.to_hex()[..15], 16).unwrap_or_default()
}

/// Inside the locked transaction, checks that a blob found already stored (deduplicated)
/// is still there: garbage collection may have removed it between the upload's check and
/// this transaction.
async fn ensure_blob_still_stored(
    db: &Db,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    content: &NewContent<'_>,
) -> Result<(), DbError> {
    lock_blob(db, tx, &content.blob.hash).await?;
    still_stored(content.blobs, &content.blob).await
}

/// Whether `blob`, if it was deduplicated against bytes already stored, is still in the
/// store. Call it under the blob's lock (`lock_blob`; on SQLite, the write lock).
pub(super) async fn still_stored(blobs: &BlobStore, blob: &StoredBlob) -> Result<(), DbError> {
    if blob.deduplicated {
        match blobs.size(&blob.hash).await {
            Ok(_) => {}
            Err(BlobError::Missing(_)) => return Err(DbError::BlobVanished),
            Err(e) => return Err(DbError::Corrupt(format!("blob store: {e}"))),
        }
    }
    Ok(())
}

async fn insert_blob_and_version(
    db: &Db,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    document: DocumentId,
    version: i32,
    content: &NewContent<'_>,
    now: i64,
) -> Result<(), DbError> {
    ensure_blob_still_stored(db, tx, content).await?;
    sqlx::query(
        "insert into blob (sha256, size, media_type, created_at, chunk_hashes) \
         values ($1, $2, $3, $4, $5) on conflict (sha256) do nothing",
    )
    .bind(content.blob.hash.to_hex())
    .bind(content.blob.size as i64)
    .bind(content.media_type)
    .bind(now)
    .bind(content.blob.chunks.as_str())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "insert into document_version (document_id, version, sha256, size, media_type, filename, \
         created_by, created_at, created_role, channel) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(document.to_string())
    .bind(version)
    .bind(content.blob.hash.to_hex())
    .bind(content.blob.size as i64)
    .bind(content.media_type)
    .bind(content.filename)
    .bind(content.created_by.to_string())
    .bind(now)
    .bind(content.created_role.as_str())
    .bind(content.channel.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds a document event to the dossier's timeline.
async fn record_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dossier: DossierId,
    kind: &str,
    document: DocumentId,
    content: &NewContent<'_>,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into dossier_event (id, dossier_id, at, kind, actor_id, actor_role, actor_name, \
         document_id) select $1, $2, $3, $4, id, role, name, $5 from app_user where id = $6",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(dossier.to_string())
    .bind(now)
    .bind(kind.to_owned())
    .bind(document.to_string())
    .bind(content.created_by.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds a document with its first version, its change-log entry, timeline event and audit
/// record, in one transaction (shared with other uploads waiting at the same time: see
/// `ingest`), and answers once it is committed.
pub async fn create(
    db: &Db,
    new: NewDocument<'_>,
    actor: &crate::audit::Actor,
) -> Result<DocumentId, DbError> {
    let id = DocumentId::new();
    let content = new.content;
    let event = actor.event(
        "document.create",
        format!("document:{id}"),
        Some(new.dossier),
        "ok",
        serde_json::json!({"sha256": content.blob.hash.to_hex(), "size": content.blob.size, "visibility": new.visibility.as_str(), "kind": new.kind.as_str()}),
    );
    super::ingest::create(
        db,
        super::ingest::NewRow {
            id,
            at: now_ms(),
            tenant: new.tenant.to_owned(),
            dossier: new.dossier,
            title: new.title.to_owned(),
            kind: new.kind,
            visibility: new.visibility,
            blob: content.blob,
            media_type: content.media_type.to_owned(),
            filename: content.filename.to_owned(),
            created_by: content.created_by,
            created_role: content.created_role,
            channel: content.channel,
            blobs: content.blobs.clone(),
            event,
        },
    )
    .await?;
    Ok(id)
}

/// Adds a new version to a document and returns its number.
pub async fn add_version(
    db: &Db,
    tenant: &str,
    document: DocumentId,
    content: NewContent<'_>,
    actor: &crate::audit::Actor,
) -> Result<i32, DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let version: i32 = sqlx::query_scalar(
        "update document set current_version = current_version + 1, updated_at = $1 \
         where id = $2 returning current_version",
    )
    .bind(now)
    .bind(document.to_string())
    .fetch_one(&mut *tx)
    .await?;
    insert_blob_and_version(db, &mut tx, document, version, &content, now).await?;
    log_change(
        &mut tx,
        tenant,
        "document",
        &document.to_string(),
        "version",
    )
    .await?;
    let dossier: String = sqlx::query_scalar("select dossier_id from document where id = $1")
        .bind(document.to_string())
        .fetch_one(&mut *tx)
        .await?;
    let dossier_id = DossierId::parse(&dossier)
        .ok_or_else(|| DbError::Corrupt(format!("dossier id {dossier:?}")))?;
    record_event(&mut tx, dossier_id, "version", document, &content, now).await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "document.version",
            format!("document:{document}"),
            Some(dossier_id),
            "ok",
            serde_json::json!({"version": version, "sha256": content.blob.hash.to_hex(), "size": content.blob.size}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}

/// The documents `caller` may read, with their newest version (a `where` clause follows).
async fn select_documents(db: &Db, caller: &Caller) -> Result<Sql, DbError> {
    let scope = caller.scope(db).await?;
    let mut sql = Sql::new(&format!(
        "select {DOCUMENT_COLUMNS} from document doc \
         join dossier d on d.id = doc.dossier_id \
         join document_version v on v.document_id = doc.id and v.version = doc.current_version \
         join app_user up on up.id = v.created_by \
         left join ocr_job o on o.sha256 = v.sha256 \
         where "
    ));
    super::scope::push_dossiers(&mut sql, db.backend(), &scope);
    sql.push(" and ");
    super::scope::push_documents(&mut sql, &scope);
    Ok(sql)
}

/// The document, if it exists and the caller may see it.
pub async fn get(
    db: &Db,
    caller: &Caller,
    id: DocumentId,
) -> Result<Option<DocumentRecord>, DbError> {
    let mut sql = select_documents(db, caller).await?;
    sql.push(" and doc.id = ").bind(id.to_string());
    let row = sql.query().fetch_optional(db.pool()).await?;
    row.as_ref()
        .map(|r| document_from_row(r, caller))
        .transpose()
}

/// The documents of a dossier that the caller may see, oldest first.
pub async fn list_for_dossier(
    db: &Db,
    caller: &Caller,
    dossier: DossierId,
) -> Result<Vec<DocumentRecord>, DbError> {
    let mut sql = select_documents(db, caller).await?;
    sql.push(" and doc.dossier_id = ")
        .bind(dossier.to_string())
        .push(" order by doc.id");
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter().map(|r| document_from_row(r, caller)).collect()
}

/// Every version of a document the caller may see, oldest first; `None` if they may not.
pub async fn versions(
    db: &Db,
    caller: &Caller,
    id: DocumentId,
) -> Result<Option<Vec<VersionRecord>>, DbError> {
    if get(db, caller, id).await?.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {VERSION_COLUMNS} from document_version v join app_user up on up.id = v.created_by \
         where v.document_id = $1 order by v.version"
    )))
    .bind(id.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| version_from_row(r, caller))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// One version of a document the caller may see.
pub async fn version(
    db: &Db,
    caller: &Caller,
    id: DocumentId,
    number: i32,
) -> Result<Option<VersionRecord>, DbError> {
    if get(db, caller, id).await?.is_none() {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {VERSION_COLUMNS} from document_version v join app_user up on up.id = v.created_by \
         where v.document_id = $1 and v.version = $2"
    )))
    .bind(id.to_string())
    .bind(number)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref()
        .map(|r| version_from_row(r, caller))
        .transpose()
}

/// The hashes of a blob's pieces, when they were recorded at upload.
pub async fn chunk_hashes(
    db: &Db,
    sha256: &str,
) -> Result<Option<crate::blobs::ChunkHashes>, DbError> {
    let text: Option<Option<String>> =
        sqlx::query_scalar("select chunk_hashes from blob where sha256 = $1")
            .bind(sha256)
            .fetch_optional(db.pool())
            .await?;
    Ok(text
        .flatten()
        .and_then(|t| crate::blobs::ChunkHashes::parse(&t)))
}

/// Bytes of every version `user` uploaded.
pub async fn uploaded_bytes(db: &Db, user: UserId) -> Result<u64, DbError> {
    // PostgreSQL sums bigints as numeric: cast back.
    let total: i64 = sqlx::query_scalar(
        "select cast(coalesce(sum(size), 0) as bigint) from document_version where created_by = $1",
    )
    .bind(user.to_string())
    .fetch_one(db.pool())
    .await?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Every blob hash referenced by a document version.
pub async fn referenced_hashes(db: &Db) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("select distinct sha256 from document_version order by sha256")
            .fetch_all(db.pool())
            .await?,
    )
}

/// True when some document version references the blob.
pub async fn is_referenced(db: &Db, sha256: &str) -> Result<bool, DbError> {
    let found: Option<i64> =
        sqlx::query_scalar("select 1 from document_version where sha256 = $1 limit 1")
            .bind(sha256)
            .fetch_optional(db.pool())
            .await?;
    Ok(found.is_some())
}

/// Forgets a blob row that no version references (garbage collection).
pub async fn forget_unreferenced_blob(db: &Db, sha256: &str) -> Result<(), DbError> {
    sqlx::query(
        "delete from blob where sha256 = $1 and not exists \
         (select 1 from document_version where sha256 = $1)",
    )
    .bind(sha256)
    .execute(db.pool())
    .await?;
    Ok(())
}
