//! The audit trail: an append-only, hash-chained `audit_event` table ([`chain`]).
//!
//! Writes append their event inside the transaction that makes the change
//! ([`append_in_tx`]). Reads are recorded by the [`Auditor`] once their work is done, and a
//! read is answered only once its record is durable, so a response that was sent is never
//! missing from the trail. On the server a read's record is one line of a local journal
//! ([`journal`]): a [`writer`] thread appends the lines of concurrent reads together and
//! fsyncs them once (group commit), and a [`mover`] task appends them to the table in large
//! batches off the request path.

mod chain;
mod journal;
mod mover;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

pub use chain::{
    Broken, ChainReport, GENESIS, Head, Verification, append_in_tx, head, last_verification,
    verify, verify_and_record,
};
pub use mover::{ACTION_JOURNAL_CORRUPT, QUARANTINE_DIR};

use crate::db::{Db, DbError, now_ms};
use crate::domain::{DossierId, UserId};

/// One event to record.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct AuditEvent {
    /// When it happened (ms); `None` means when it is appended.
    #[serde(default)]
    pub at: Option<i64>,
    /// Municipality.
    pub tenant: String,
    /// Who, if authenticated.
    pub actor_id: Option<UserId>,
    /// Their role.
    pub actor_role: Option<String>,
    /// What, e.g. `document.download`.
    pub action: String,
    /// On what, e.g. `document:<id>`.
    pub target: String,
    /// The dossier concerned.
    pub dossier_id: Option<DossierId>,
    /// `ok`, `denied`, `not_found`, `error`; for a search, `rejected` (a malformed query).
    pub outcome: String,
    /// Client network address.
    pub client_address: Option<String>,
    /// Action-specific details.
    pub detail: serde_json::Value,
}

/// The audit trail could not be written: the request must not be answered as if it were.
#[derive(Debug, thiserror::Error)]
#[error("the audit trail could not be written")]
pub struct AuditUnavailable;

/// Records reads. Cloned into every request; all clones share one journal.
#[derive(Clone, Debug)]
pub struct Auditor(Sink);

#[derive(Clone, Debug)]
enum Sink {
    /// Each event appended to the table in a transaction of its own: the command line, which
    /// runs beside a server and so may not write to its journal.
    Table(Db),
    /// The server's journal: the writer's queue, and the progress of the writer and mover.
    Journal {
        queue: mpsc::Sender<writer::Pending>,
        progress: Arc<Progress>,
    },
    /// Records nothing: the audit benchmark's arm without audit (feature `bench`).
    #[cfg(feature = "bench")]
    Nothing,
}

/// How far the journal is written (durably) and moved into the table, as byte positions.
#[derive(Debug, Default)]
struct Progress {
    written: AtomicU64,
    moved: AtomicU64,
    moved_changed: Notify,
    wake_mover: Notify,
}

impl Auditor {
    /// An auditor that appends each event to the table in its own transaction.
    pub fn start(db: Db) -> Self {
        Self(Sink::Table(db))
    }

    /// An auditor that records nothing and acknowledges at once, so that the audit benchmark
    /// can measure what auditing costs. Built only with the `bench` feature.
    #[cfg(feature = "bench")]
    pub fn recording_nothing() -> Self {
        Self(Sink::Nothing)
    }

    /// Starts a journaled auditor, for the server: each batch of reads is appended to a local
    /// journal and fsynced before the requests are answered (no SQL on the request path); a
    /// mover appends the journal to the table. The journal is kept in segments of 64 MiB, each
    /// deleted once all of it is in the table. `dir` must be this process's alone.
    pub fn start_journaled(db: Db, dir: &Path) -> std::io::Result<Self> {
        Self::start_journaled_in_segments(db, dir, journal::SEGMENT_BYTES)
    }

    /// [`Auditor::start_journaled`] with segments of `segment_bytes` (tests use small ones to
    /// see segments roll over).
    pub fn start_journaled_in_segments(
        db: Db,
        dir: &Path,
        segment_bytes: u64,
    ) -> std::io::Result<Self> {
        let journal = journal::Journal::open(dir, segment_bytes)?;
        let node = journal::node_id(dir)?;
        let progress = Arc::new(Progress::default());
        progress
            .written
            .store(journal.durable_end(), Ordering::SeqCst);
        let (queue, receiver) = mpsc::channel(8192);
        // A thread of its own: requests hand their events straight to it, and it answers them
        // once the batch is on disk, with no task or blocking-pool hop in between.
        let writer = writer::Writer {
            journal,
            queue: receiver,
            progress: progress.clone(),
        };
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || writer.run())?;
        tokio::spawn(mover::run(db, dir.to_owned(), node, progress.clone()));
        Ok(Self(Sink::Journal { queue, progress }))
    }

    /// Waits until every event acknowledged so far is in the table (journaled auditors move
    /// them in the background).
    pub async fn flush(&self) {
        let Sink::Journal { progress, .. } = &self.0 else {
            return;
        };
        let target = progress.written.load(Ordering::SeqCst);
        while progress.moved.load(Ordering::SeqCst) < target {
            let changed = progress.moved_changed.notified();
            if progress.moved.load(Ordering::SeqCst) >= target {
                break;
            }
            progress.wake_mover.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(10), changed).await;
        }
    }

    /// Records an event and returns once it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        match &self.0 {
            Sink::Table(db) => commit(db, event).await.map_err(|e| {
                tracing::error!(error = %e, "audit append failed");
                AuditUnavailable
            }),
            _ => self.submit(event).await?.durable().await,
        }
    }

    /// Hands an event over and returns at once: the request can go on with its work (read the
    /// bytes it will send, serialise its answer) while the event is written, and must wait for
    /// [`Receipt::durable`] before it answers.
    pub async fn submit(&self, event: AuditEvent) -> Result<Receipt, AuditUnavailable> {
        match &self.0 {
            Sink::Journal { queue, .. } => {
                let (pending, receipt) = Receipt::new(event);
                queue.send(pending).await.map_err(|_| AuditUnavailable)?;
                Ok(receipt)
            }
            Sink::Table(db) => Ok(Receipt::done(commit(db, event).await.map_err(|e| {
                tracing::error!(error = %e, "audit append failed");
            }))),
            #[cfg(feature = "bench")]
            Sink::Nothing => Ok(Receipt::done(Ok(()))),
        }
    }

    /// [`Auditor::submit`] from a blocking thread (a search hands its event over on the thread
    /// that ran it, then serialises its answer while the journal writes).
    pub fn submit_blocking(&self, event: AuditEvent) -> Result<Receipt, AuditUnavailable> {
        match &self.0 {
            Sink::Journal { queue, .. } => {
                let (pending, receipt) = Receipt::new(event);
                queue.blocking_send(pending).map_err(|_| AuditUnavailable)?;
                Ok(receipt)
            }
            Sink::Table(db) => {
                let db = db.clone();
                let committed = tokio::runtime::Handle::current()
                    .block_on(async move { commit(&db, event).await });
                Ok(Receipt::done(committed.map_err(|e| {
                    tracing::error!(error = %e, "audit append failed");
                })))
            }
            #[cfg(feature = "bench")]
            Sink::Nothing => Ok(Receipt::done(Ok(()))),
        }
    }
}

async fn commit(db: &Db, event: AuditEvent) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    append_in_tx(db, &mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(())
}

/// An event handed to the [`Auditor`], not yet known to be durable.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<(), ()>>);

impl Receipt {
    /// `event`, stamped with the time if it has none, ready to queue, and its receipt.
    fn new(mut event: AuditEvent) -> (writer::Pending, Self) {
        event.at.get_or_insert_with(now_ms);
        let (ack, done) = oneshot::channel();
        (writer::Pending { event, ack }, Self(done))
    }

    /// A receipt for an event already recorded (or not).
    fn done(result: Result<(), ()>) -> Self {
        let (ack, done) = oneshot::channel();
        let _ = ack.send(result);
        Self(done)
    }

    /// Waits until the event is durably recorded.
    pub async fn durable(self) -> Result<(), AuditUnavailable> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(AuditUnavailable),
        }
    }
}

/// Who makes a change or a read, as the audit trail records it.
#[derive(Clone, Debug)]
pub struct Actor {
    /// Municipality.
    pub tenant: String,
    /// The user, if authenticated.
    pub id: Option<UserId>,
    /// Role.
    pub role: Option<String>,
    /// Client network address.
    pub client: Option<String>,
}

impl Actor {
    /// An authenticated caller.
    pub fn of(caller: &crate::access::Caller, client: Option<String>) -> Self {
        Self {
            tenant: caller.tenant().to_owned(),
            id: Some(caller.id()),
            role: Some(caller.role().to_string()),
            client,
        }
    }

    /// A tool acting as a system user (import, demo).
    pub fn system(tenant: &str, user: UserId, tool: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            id: Some(user),
            role: Some(format!("system:{tool}")),
            client: None,
        }
    }

    /// An administrator at the command line.
    pub fn cli(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            id: None,
            role: Some("system:cli".to_owned()),
            client: None,
        }
    }

    /// Someone not authenticated (online registration).
    pub fn anonymous(tenant: &str, client: Option<String>) -> Self {
        Self {
            tenant: tenant.to_owned(),
            id: None,
            role: Some("anonymous".to_owned()),
            client,
        }
    }

    /// An event by this actor.
    pub fn event(
        &self,
        action: &str,
        target: String,
        dossier_id: Option<DossierId>,
        outcome: &str,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            at: None,
            tenant: self.tenant.clone(),
            actor_id: self.id,
            actor_role: self.role.clone(),
            action: action.to_owned(),
            target,
            dossier_id,
            outcome: outcome.to_owned(),
            client_address: self.client.clone(),
            detail,
        }
    }
}
