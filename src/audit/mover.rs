//! The journal's mover: appends the journal's lines to the hash-chained table in large
//! batches, in order, exactly once. Each batch records, in the transaction that appends it, how
//! far into this node's journal it got, so a crash replays exactly what was not moved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::journal::{drop_moved_segments, read_span, sync_dir};
use super::{AuditEvent, Progress, append_in_tx};
use crate::db::{Db, DbError};

/// How often the journal is moved into the table (sooner when someone flushes).
const MOVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// How much of the journal the mover reads at a time, at most.
const MOVE_CHUNK: u64 = 4 * 1024 * 1024;

/// The action of the row that stands in the chain for a journal line the mover could not
/// read (a damaged disk, an edited file): the trail shows where it was and what it held, and
/// the lines after it are moved as usual instead of waiting behind it forever.
pub const ACTION_JOURNAL_CORRUPT: &str = "audit.journal_corrupt";
/// The folder of the journal directory that keeps unreadable lines.
pub const QUARANTINE_DIR: &str = "quarantine";
/// How much of an unreadable line its row quotes; the whole line is kept in the quarantine
/// folder, and its SHA-256 is in the row.
const QUOTED_BYTES: usize = 1024;

/// Moves the journal in `dir` into the table until the writer is gone and all is moved.
pub(super) async fn run(db: Db, dir: PathBuf, node: String, progress: Arc<Progress>) {
    let mut moved: u64 = loop {
        match sqlx::query_scalar::<_, i64>("select moved from audit_journal where node = $1")
            .bind(node.clone())
            .fetch_optional(db.pool())
            .await
        {
            Ok(m) => break m.map_or(0, |m| u64::try_from(m).unwrap_or(0)),
            Err(e) => {
                tracing::error!(error = %e, "reading the audit journal position");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        progress.moved.store(moved, Ordering::SeqCst);
        progress.moved_changed.notify_waiters();
        drop_segments(&dir, moved).await;
        let written = progress.written.load(Ordering::SeqCst);
        if written > moved {
            match move_once(&db, &dir, &node, moved, written).await {
                Ok(next) => {
                    moved = next;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "moving the audit journal; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        // Nobody can write any more (the auditor and its writer are gone) and all is moved.
        if Arc::strong_count(&progress) == 1 && moved >= progress.written.load(Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(MOVE_EVERY, progress.wake_mover.notified()).await;
    }
}

/// Deletes the segments moved entirely, logging (not failing) if that fails.
async fn drop_segments(dir: &Path, moved: u64) {
    let dir = dir.to_owned();
    let dropped = tokio::task::spawn_blocking(move || drop_moved_segments(&dir, moved)).await;
    if let Ok(Err(e)) = dropped {
        tracing::warn!(error = %e, "deleting moved audit journal segments");
    }
}

/// Moves up to [`MOVE_CHUNK`] bytes of complete journal lines after `from` (written lines end
/// at `to`); returns the new position.
async fn move_once(db: &Db, dir: &Path, node: &str, from: u64, to: u64) -> Result<u64, DbError> {
    let span_dir = dir.to_owned();
    let chunk = tokio::task::spawn_blocking(move || read_span(&span_dir, from, to, MOVE_CHUNK))
        .await
        .map_err(|e| DbError::Corrupt(e.to_string()))?
        .map_err(|e| DbError::Corrupt(format!("audit journal: {e}")))?;
    let Lines {
        events,
        used,
        quarantined,
    } = journal_events(&chunk, from);
    if used == 0 {
        // A line longer than a chunk: no reader of ours wrote it.
        return Err(DbError::Corrupt(format!(
            "audit journal: no line ends within {MOVE_CHUNK} bytes of position {from}"
        )));
    }
    if !quarantined.is_empty() {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || keep_quarantined(&dir, &quarantined))
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?
            .map_err(|e| DbError::Corrupt(format!("audit journal quarantine: {e}")))?;
    }
    let next = from + used as u64;
    let mut tx = db.begin_write().await?;
    append_in_tx(db, &mut tx, &events).await?;
    sqlx::query(
        "insert into audit_journal (node, moved) values ($1, $2) \
         on conflict (node) do update set moved = excluded.moved",
    )
    .bind(node.to_owned())
    .bind(i64::try_from(next).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// What [`journal_events`] found in a piece of the journal.
struct Lines {
    /// The events to move, in journal order.
    events: Vec<AuditEvent>,
    /// How many bytes of the piece they take: its complete lines.
    used: usize,
    /// The unreadable lines among them, by journal position, kept verbatim before the piece
    /// is moved (its segment is deleted once moved).
    quarantined: Vec<(u64, Vec<u8>)>,
}

/// The events of the complete lines of a piece of the journal starting at position `from`. A
/// line that cannot be read becomes an [`ACTION_JOURNAL_CORRUPT`] row in its place and is
/// quarantined.
fn journal_events(chunk: &[u8], from: u64) -> Lines {
    let used = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut events = Vec::new();
    let mut quarantined = Vec::new();
    let mut at = 0;
    for line in chunk[..used].split(|b| *b == b'\n') {
        let position = from + at as u64;
        at += line.len() + 1;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<AuditEvent>(line) {
            Ok(event) => events.push(event),
            Err(error) => {
                tracing::error!(position, bytes = line.len(), %error, "unreadable audit journal line quarantined");
                events.push(corrupt_line_event(position, line, &error));
                quarantined.push((position, line.to_vec()));
            }
        }
    }
    // The rows that record unreadable lines take the events' tenant: a node's journal holds
    // the events of the municipality it serves.
    if let Some(tenant) = events
        .iter()
        .find(|e| e.action != ACTION_JOURNAL_CORRUPT)
        .map(|e| e.tenant.clone())
    {
        for e in events
            .iter_mut()
            .filter(|e| e.action == ACTION_JOURNAL_CORRUPT)
        {
            e.tenant.clone_from(&tenant);
        }
    }
    Lines {
        events,
        used,
        quarantined,
    }
}

/// The row standing for the unreadable journal line at `position`.
fn corrupt_line_event(position: u64, line: &[u8], error: &serde_json::Error) -> AuditEvent {
    let quoted = &line[..line.len().min(QUOTED_BYTES)];
    AuditEvent {
        at: None,
        tenant: String::new(),
        actor_id: None,
        actor_role: Some("system:audit".to_owned()),
        action: ACTION_JOURNAL_CORRUPT.to_owned(),
        target: format!("journal:{position}"),
        dossier_id: None,
        outcome: "corrupt".to_owned(),
        client_address: None,
        detail: serde_json::json!({
            "position": position,
            "bytes": line.len(),
            "sha256": hex::encode(Sha256::digest(line)),
            "error": error.to_string(),
            "quoted": String::from_utf8_lossy(quoted),
            "quarantine": quarantine_name(position),
        }),
    }
}

/// The file, in [`QUARANTINE_DIR`], that keeps the unreadable line at `position`.
fn quarantine_name(position: u64) -> String {
    format!("line-{position:020}.bin")
}

/// Writes each quarantined line to a file of its own, durably, before the piece holding it is
/// moved (and may be deleted).
fn keep_quarantined(dir: &Path, lines: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
    let folder = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&folder)?;
    for (position, bytes) in lines {
        let mut file = std::fs::File::create(folder.join(quarantine_name(*position)))?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
    }
    sync_dir(&folder)?;
    sync_dir(dir)
}
