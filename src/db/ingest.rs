//! New documents committed together: group commit for uploads.
//!
//! With a transaction per upload, uploads in flight on SQLite (one writer) would wait for
//! each other's commits one by one, and each commit is a flush of the write-ahead log plus a
//! round trip to the connection's thread for each of its statements. Instead, the documents
//! waiting to be created go into one queue; one task at a time takes everything queued (up to
//! [`MOST_PER_TRANSACTION`]) and writes it in a single transaction with multi-row statements,
//! so the cost of a commit is shared by all the uploads it carries. While it commits, the
//! next uploads queue for the next transaction.
//!
//! Each upload is still atomic: its document, version, change-log entry, timeline event and
//! audit record commit together or not at all, and its caller is answered only after the
//! commit. When a shared transaction fails, its documents are written again one per
//! transaction, so that one refused document (a dossier that vanished, say) is reported to
//! its own caller and does not fail the others.

use std::sync::{Arc, Mutex};

use sqlx::Row;
use tokio::sync::oneshot;

use super::{Db, DbError, RowValues, insert_rows, now_ms};
use crate::audit::AuditEvent;
use crate::blobs::{BlobStore, StoredBlob};
use crate::domain::{DocumentId, DocumentKind, DossierId, Role, UploadChannel, UserId, Visibility};

/// Documents one transaction carries at most.
const MOST_PER_TRANSACTION: usize = 64;

/// A document to create, owned so that it can wait in the queue.
pub(super) struct NewRow {
    pub id: DocumentId,
    pub at: i64,
    pub tenant: String,
    pub dossier: DossierId,
    pub title: String,
    pub kind: DocumentKind,
    pub visibility: Visibility,
    pub blob: StoredBlob,
    pub media_type: String,
    pub filename: String,
    pub created_by: UserId,
    pub created_role: Role,
    pub channel: UploadChannel,
    pub blobs: BlobStore,
    pub event: AuditEvent,
}

struct Queued {
    row: NewRow,
    reply: oneshot::Sender<Result<(), DbError>>,
}

#[derive(Default)]
struct State {
    queued: Vec<Queued>,
    /// A task is writing the queue out.
    writing: bool,
}

/// The documents waiting for their transaction.
#[derive(Default)]
pub struct CreateQueue {
    state: Mutex<State>,
}

impl std::fmt::Debug for CreateQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = crate::lock(&self.state);
        f.debug_struct("CreateQueue")
            .field("queued", &state.queued.len())
            .field("writing", &state.writing)
            .finish()
    }
}

/// Creates the document and answers once it is committed. The transaction runs in a task of
/// its own: a caller that goes away (a client that disconnects) cannot interrupt the
/// transaction that carries other callers' documents.
pub(super) async fn create(db: &Db, row: NewRow) -> Result<(), DbError> {
    let (reply, answer) = oneshot::channel();
    {
        let mut state = crate::lock(&db.creates.state);
        state.queued.push(Queued { row, reply });
        if !state.writing {
            state.writing = true;
            tokio::spawn(write_queue(db.clone()));
        }
    }
    answer.await.unwrap_or(Err(DbError::Interrupted))
}

/// Should the writing task end other than by emptying the queue (a panic, or its runtime
/// shutting down), the documents it held and those queued are answered with an error (their
/// reply channels drop), and the next document starts a new task.
struct Writing {
    queue: Arc<CreateQueue>,
    emptied: bool,
}

impl Drop for Writing {
    fn drop(&mut self) {
        if !self.emptied {
            let mut state = crate::lock(&self.queue.state);
            state.writing = false;
            state.queued.clear();
        }
    }
}

/// Writes out the queue, a transaction at a time, until it is empty.
async fn write_queue(db: Db) {
    let mut writing = Writing {
        queue: db.creates.clone(),
        emptied: false,
    };
    loop {
        let batch: Vec<Queued> = {
            let mut state = crate::lock(&writing.queue.state);
            if state.queued.is_empty() {
                state.writing = false;
                writing.emptied = true;
                return;
            }
            let n = state.queued.len().min(MOST_PER_TRANSACTION);
            state.queued.drain(..n).collect()
        };
        let (rows, replies): (Vec<NewRow>, Vec<_>) =
            batch.into_iter().map(|q| (q.row, q.reply)).unzip();
        match write(&db, &rows).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) if rows.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, documents = rows.len(), "a shared transaction failed; writing its documents one by one");
                for (row, reply) in rows.iter().zip(replies) {
                    let outcome = match write(&db, std::slice::from_ref(row)).await {
                        Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(DbError::Interrupted)),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// Writes `rows` in one transaction. Returns each row's outcome (a deduplicated blob that
/// vanished before the commit is refused alone), or the error that failed the transaction.
async fn write(db: &Db, rows: &[NewRow]) -> Result<Vec<Result<(), DbError>>, DbError> {
    let backend = db.backend();
    let mut tx = db.begin_write().await?;
    // Garbage collection takes the same lock for the blob it removes (PostgreSQL; on SQLite
    // the write lock serialises them). Under it, a blob found already stored must still be
    // there: garbage collection may have removed it since the upload looked.
    let hashes: Vec<_> = rows.iter().map(|r| r.blob.hash).collect();
    super::documents::lock_blobs(db, &mut tx, &hashes).await?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        outcomes.push(super::documents::still_stored(&row.blobs, &row.blob).await);
    }
    let kept: Vec<&NewRow> = rows
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_ok())
        .map(|(r, _)| r)
        .collect();
    if kept.is_empty() {
        tx.rollback().await?;
        return Ok(outcomes);
    }
    insert_rows(
        &mut tx,
        backend,
        (
            "insert into document (id, dossier_id, title, kind, visibility, current_version, \
             created_by, created_at, updated_at, side) values ",
            "",
        ),
        &kept,
        |v: &mut RowValues<'_>, r| {
            v.value(r.id.to_string())
                .value(r.dossier.to_string())
                .value(r.title.clone())
                .value(r.kind.as_str().to_owned())
                .value(r.visibility.as_str().to_owned())
                .value(1_i32)
                .value(r.created_by.to_string())
                .value(r.at)
                .value(r.at)
                .value(r.created_role.side().as_str().to_owned());
        },
    )
    .await?;
    insert_rows(
        &mut tx,
        backend,
        (
            "insert into blob (sha256, size, media_type, created_at, chunk_hashes) values ",
            " on conflict (sha256) do nothing",
        ),
        &kept,
        |v, r| {
            v.value(r.blob.hash.to_hex())
                .value(r.blob.size as i64)
                .value(r.media_type.clone())
                .value(r.at)
                .value(r.blob.chunks.as_str().to_owned());
        },
    )
    .await?;
    insert_rows(
        &mut tx,
        backend,
        (
            "insert into document_version (document_id, version, sha256, size, media_type, \
             filename, created_by, created_at, created_role, channel) values ",
            "",
        ),
        &kept,
        |v, r| {
            v.value(r.id.to_string())
                .value(1_i32)
                .value(r.blob.hash.to_hex())
                .value(r.blob.size as i64)
                .value(r.media_type.clone())
                .value(r.filename.clone())
                .value(r.created_by.to_string())
                .value(r.at)
                .value(r.created_role.as_str().to_owned())
                .value(r.channel.as_str().to_owned());
        },
    )
    .await?;
    let logged = now_ms();
    insert_rows(
        &mut tx,
        backend,
        (
            "insert into change_log (tenant, entity, entity_id, op, created_at) values ",
            "",
        ),
        &kept,
        |v, r| {
            v.value(r.tenant.clone())
                .value("document".to_owned())
                .value(r.id.to_string())
                .value("create".to_owned())
                .value(logged);
        },
    )
    .await?;
    // The timeline names the uploader as the user table has them now.
    let mut uploaders: Vec<String> = kept.iter().map(|r| r.created_by.to_string()).collect();
    uploaders.sort_unstable();
    uploaders.dedup();
    let mut users = super::Sql::new("select id, role, name from app_user where id in (");
    for (i, id) in uploaders.iter().enumerate() {
        if i > 0 {
            users.push(", ");
        }
        users.bind(id.clone());
    }
    users.push(")");
    let users: std::collections::HashMap<String, (String, String)> = users
        .query()
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>("id")?,
                (row.try_get("role")?, row.try_get("name")?),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let events: Vec<(&NewRow, &(String, String))> = kept
        .iter()
        .filter_map(|r| Some((*r, users.get(&r.created_by.to_string())?)))
        .collect();
    insert_rows(
        &mut tx,
        backend,
        (
            "insert into dossier_event (id, dossier_id, at, kind, actor_id, actor_role, \
             actor_name, document_id) values ",
            "",
        ),
        &events,
        |v, (r, (role, name))| {
            v.value(uuid::Uuid::now_v7().to_string())
                .value(r.dossier.to_string())
                .value(r.at)
                .value("document".to_owned())
                .value(r.created_by.to_string())
                .value(role.clone())
                .value(name.clone())
                .value(r.id.to_string());
        },
    )
    .await?;
    let audit: Vec<AuditEvent> = kept.iter().map(|r| r.event.clone()).collect();
    crate::audit::append_in_tx(db, &mut tx, &audit).await?;
    tx.commit().await?;
    Ok(outcomes)
}
