//! The audit trail: an append-only, hash-chained `audit_event` table.
//!
//! Writes append their event inside the transaction that makes the change. Reads append
//! through a group committer: the handler waits until its event is durably committed before
//! it answers, so a response that was sent is never missing from the trail, and concurrent
//! reads share one commit. A read whose result is known only once its work is done (a search
//! and its hit count) is journaled when it begins, so the disk write runs while the work does;
//! its result follows in a line of its own, and the two become one row. Each row's hash covers
//! its canonical content and the previous row's hash, so editing, deleting or reordering rows
//! breaks the chain at that row.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::db::{Backend, Db, DbError, now_ms};
use crate::lock;

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Advisory-lock key serialising appends to the chain on PostgreSQL (SQLite writers are
/// serial already).
const CHAIN_LOCK: i64 = 0x6175_6469_7400;
/// How often the journal is moved into the table (sooner when someone flushes).
const MOVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Events committed together at most.
const GROUP: usize = 256;
/// How long the result of a read may wait in the journal for the next event's sync before
/// it is synced on its own.
const RESULTS_SYNCED_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// One event to record.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct AuditEvent {
    /// When it happened (ms); `None` means when it is appended.
    #[serde(default)]
    pub at: Option<i64>,
    /// Municipality.
    pub tenant: String,
    /// Who (user id), if authenticated.
    pub actor_id: Option<String>,
    /// Their role.
    pub actor_role: Option<String>,
    /// What, e.g. `document.download`.
    pub action: String,
    /// On what, e.g. `document:<id>`.
    pub target: String,
    /// The dossier concerned.
    pub dossier_id: Option<String>,
    /// `ok`, `denied`, `not_found`, `error`; for a search, `rejected` (a malformed query); for
    /// a read begun before its result was known, [`OUTCOME_UNKNOWN`] or [`OUTCOME_ABANDONED`].
    pub outcome: String,
    /// Client network address.
    pub client_address: Option<String>,
    /// Action-specific details.
    pub detail: serde_json::Value,
}

fn canonical(seq: i64, at: i64, e: &AuditEvent, detail: &str) -> String {
    // A JSON array has one serialisation for given values: the canonical form. Serialised
    // from a tuple of references: the same text as a `serde_json::Value` array, without
    // copying every field into one first (the mover does this for every event it moves).
    let row = (
        seq,
        at,
        &e.tenant,
        &e.actor_id,
        &e.actor_role,
        &e.action,
        &e.target,
        &e.dossier_id,
        &e.outcome,
        &e.client_address,
        detail,
    );
    serde_json::to_string(&row).expect("integers and strings always serialise")
}

fn chain_hash(prev: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Appends events inside the caller's write transaction.
pub async fn append_in_tx(
    db: &Db,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    events: &[AuditEvent],
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    if db.backend() == Backend::Postgres {
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let last = sqlx::query("select seq, hash from audit_event order by seq desc limit 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (mut seq, mut prev) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")?,
            row.try_get::<String, _>("hash")?,
        ),
        None => (0, GENESIS.to_owned()),
    };
    let at = now_ms();
    crate::db::insert_rows(
        tx,
        db.backend(),
        (
            "insert into audit_event (seq, at, tenant, actor_id, actor_role, action, target, \
             dossier_id, outcome, client_address, detail, prev_hash, hash) values ",
            "",
        ),
        events,
        |row, e| {
            seq += 1;
            let at = e.at.unwrap_or(at);
            let detail = e.detail.to_string();
            let hash = chain_hash(&prev, &canonical(seq, at, e, &detail));
            row.value(seq)
                .value(at)
                .value(e.tenant.clone())
                .value(e.actor_id.clone())
                .value(e.actor_role.clone())
                .value(e.action.clone())
                .value(e.target.clone())
                .value(e.dossier_id.clone())
                .value(e.outcome.clone())
                .value(e.client_address.clone())
                .value(detail)
                .value(std::mem::replace(&mut prev, hash.clone()))
                .value(hash);
        },
    )
    .await?;
    Ok(())
}

/// The audit trail could not be written: the request must not be answered as if it were.
#[derive(Debug, thiserror::Error)]
#[error("the audit trail could not be written")]
pub struct AuditUnavailable;

/// What the auditor's queue carries.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every entry is an event; boxing it would allocate once more per event"
)]
enum Entry {
    /// An event to record, acknowledged once durable. `read` numbers a read begun with
    /// [`Auditor::begin`] on a journaled auditor, whose result is handed over apart
    /// ([`Auditor::hand_result`]).
    Event {
        event: AuditEvent,
        read: Option<u64>,
        ack: oneshot::Sender<Result<(), ()>>,
    },
    /// Wakes the journal's writer to take the results handed to it
    /// ([`JournalState::results`]); sent only when it sleeps with nothing to expect.
    Wake,
}

impl Entry {
    fn ack(self, result: Result<(), ()>) {
        if let Self::Event { ack, .. } = self {
            let _ = ack.send(result);
        }
    }
}

/// A journal line completing the read numbered `amends`: its outcome, and details added to
/// those it began with. Serialised with `amends` first, so such a line starts with
/// [`RESULT_LINE`].
#[derive(Debug, Serialize, serde::Deserialize)]
struct ReadResult {
    amends: u64,
    outcome: String,
    /// The dossier concerned, when only the read's work found it out (a document looked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dossier: Option<String>,
    detail: serde_json::Value,
}

/// A result handed to the journal's writer, which writes it once the line of its read is
/// written. `again` marks a later result of a read that had one already.
#[derive(Debug)]
struct PendingResult {
    result: ReadResult,
    again: bool,
}

/// How the journal line of a read's result starts.
const RESULT_LINE: &[u8] = b"{\"amends\":";
/// How the journal line of a begun read starts (its number, then the event).
const BEGUN_LINE: &[u8] = b"{\"read\":";

/// The journal line of a begun read.
#[derive(Serialize)]
struct BegunOut<'a> {
    read: u64,
    event: &'a AuditEvent,
}

/// [`BegunOut`], read back by the mover.
#[derive(serde::Deserialize)]
struct BegunIn {
    read: u64,
    event: AuditEvent,
}

/// The outcome recorded for a begun read whose result never reached the journal: the server
/// stopped (or crashed) after the read began and before its result was written. Whether it
/// answered is not known; that it was asked is.
pub const OUTCOME_UNKNOWN: &str = "unknown";
/// The outcome recorded for a begun read given up before it had a result (the client went
/// away while it ran).
pub const OUTCOME_ABANDONED: &str = "abandoned";

/// Gives `event` its outcome (and its dossier, if the result names one) and adds `detail` to
/// its details.
fn complete_event(
    event: &mut AuditEvent,
    outcome: String,
    dossier: Option<String>,
    detail: serde_json::Value,
) {
    event.outcome = outcome;
    if dossier.is_some() {
        event.dossier_id = dossier;
    }
    match (&mut event.detail, detail) {
        (serde_json::Value::Object(have), serde_json::Value::Object(added)) => {
            have.extend(added);
        }
        (_, serde_json::Value::Null) => {}
        (have, added) => *have = added,
    }
}

/// Records read events with group commit.
#[derive(Clone, Debug)]
pub struct Auditor {
    queue: mpsc::Sender<Entry>,
    journal: Option<Arc<JournalState>>,
}

/// Progress of a journaled auditor: bytes acknowledged, bytes moved into the table.
#[derive(Debug, Default)]
struct JournalState {
    written: AtomicU64,
    moved: AtomicU64,
    moved_changed: Notify,
    wake_mover: Notify,
    /// Where this process began to journal: a begun read before it whose result is not in
    /// the journal will never have one.
    started_at: u64,
    /// The journal's writer has stopped: no begun read will have a result any more.
    closed: std::sync::atomic::AtomicBool,
    /// The number of the next begun read. Starts at `started_at`, so numbers never repeat
    /// across restarts: each journaled read takes more than one byte of the journal, so a
    /// process cannot number more reads than the bytes it writes, and the next one starts
    /// after them.
    next_read: AtomicU64,
    /// Results of begun reads, in the order they were given, for the journal's writer to
    /// take when it next runs: handing one over does not wake it (see [`Read::result`]).
    results: std::sync::Mutex<Vec<PendingResult>>,
    /// The writer sleeps with no read open and nothing unsynced: a result handed over now
    /// must wake it.
    sleeping: std::sync::atomic::AtomicBool,
}

impl Auditor {
    /// An auditor that records nothing and acknowledges at once. It exists only so that the
    /// audit benchmark can measure what auditing costs; no command or setting of the server
    /// uses it.
    #[doc(hidden)]
    pub fn discarding_for_benchmarks() -> Self {
        let (queue, mut receiver) = mpsc::channel::<Entry>(8192);
        tokio::spawn(async move {
            while let Some(entry) = receiver.recv().await {
                entry.ack(Ok(()));
            }
        });
        Self {
            queue,
            journal: None,
        }
    }

    /// Starts the group committer over `db`.
    pub fn start(db: Db) -> Self {
        let (queue, mut receiver) = mpsc::channel::<Entry>(8192);
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let batch = batch_from(first, &mut receiver);
                // Reads are begun only on journaled auditors: here every entry is an event.
                let events: Vec<AuditEvent> = batch
                    .iter()
                    .filter_map(|entry| match entry {
                        Entry::Event { event, .. } => Some(event.clone()),
                        Entry::Wake => None,
                    })
                    .collect();
                let result = commit(&db, &events).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "audit append failed");
                }
                for entry in batch {
                    entry.ack(result.as_ref().map(|_| ()).map_err(|_| ()));
                }
            }
        });
        Self {
            queue,
            journal: None,
        }
    }

    /// Starts a journaled auditor, for the server: each batch of reads is appended to a local
    /// journal file and fsynced before the requests are answered (no SQL on the request path);
    /// a mover appends the journal to the hash-chained table in large batches, recording in
    /// the same transaction how far it got, so a crash replays exactly what was not moved.
    /// The journal is kept in segments of 64 MiB, each deleted once all of it is in the table.
    pub fn start_journaled(db: Db, dir: &Path) -> std::io::Result<Self> {
        Self::start_journaled_in_segments(db, dir, SEGMENT_BYTES)
    }

    /// [`Auditor::start_journaled`] with segments of `segment_bytes` (tests use small ones).
    #[doc(hidden)]
    pub fn start_journaled_in_segments(
        db: Db,
        dir: &Path,
        segment_bytes: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A journal of one file, as earlier versions kept it, is the segment at position 0.
        let single = dir.join("journal.jsonl");
        if single.exists() {
            std::fs::rename(&single, segment_path(dir, 0))?;
            sync_dir(dir)?;
        }
        let base = segments(dir)?.last().map_or(0, |(base, _)| *base);
        // Each segment is allocated ahead in large steps, so an append changes no file size
        // and its fsync writes only the data; the bytes after the last line are zeros (JSON
        // lines never hold a NUL byte). A torn last line was never acknowledged (its fsync did
        // not return): it is zeroed too. Only the newest segment can have one: a segment is
        // closed only after an append to it was made durable.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(segment_path(dir, base))?;
        sync_dir(dir)?;
        let (end, complete) = journal_end(&mut file)?;
        if complete < end {
            use std::os::unix::fs::FileExt;
            let torn = usize::try_from(end - complete).map_err(std::io::Error::other)?;
            file.write_all_at(&vec![0; torn], complete)?;
            file.sync_data()?;
        }
        let allocated = file.metadata()?.len();
        let node = match std::fs::read_to_string(dir.join("node-id")) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                let id = uuid::Uuid::now_v7().to_string();
                // Durable before any event is journaled under it: a node id lost in a crash
                // would make the mover, under a new id, move the journal a second time.
                let mut file = std::fs::File::create(dir.join("node-id"))?;
                std::io::Write::write_all(&mut file, id.as_bytes())?;
                file.sync_all()?;
                sync_dir(dir)?;
                id
            }
        };
        let state = Arc::new(JournalState {
            written: AtomicU64::new(base + complete),
            started_at: base + complete,
            next_read: AtomicU64::new(base + complete),
            ..JournalState::default()
        });
        let (queue, mut receiver) = mpsc::channel::<Entry>(8192);
        let committer_state = state.clone();
        let journal_dir = dir.to_owned();
        // A thread of its own: requests hand their events straight to it, and it answers them
        // once the batch is on disk, with no task or blocking-pool hop in between. Its own
        // timer bounds how long results wait to be synced.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || {
                let mut journal = Journal {
                    dir: journal_dir,
                    file,
                    base,
                    end: complete,
                    unsynced: 0,
                    allocated,
                    segment_bytes,
                };
                // What the mover may move: the lines known to be durable.
                let publish = |journal: &Journal| {
                    committer_state
                        .written
                        .store(journal.durable_end(), Ordering::SeqCst);
                };
                let mut lines = Vec::new();
                // Begun reads written whose first result is still to come, and results whose
                // read is not written yet (its line is still queued).
                let mut open = std::collections::HashSet::new();
                let mut deferred = Vec::new();
                loop {
                    // Results are handed over without waking this thread: while a read is
                    // open, or lines wait for a sync, it sleeps on a timer, and takes them with
                    // the next event or when the timer fires; the next event's fsync, or the
                    // timer's, makes them durable. Only when it expects nothing does a result
                    // wake it.
                    let expecting =
                        journal.unsynced > 0 || !open.is_empty() || !deferred.is_empty();
                    let first = if expecting {
                        let next = timer.block_on(async {
                            tokio::time::timeout(RESULTS_SYNCED_AFTER, receiver.recv()).await
                        });
                        match next {
                            Ok(Some(first)) => Some(first),
                            Ok(None) => break,
                            Err(_) => None,
                        }
                    } else {
                        committer_state.sleeping.store(true, Ordering::SeqCst);
                        let handed = !lock(&committer_state.results).is_empty();
                        let first = if handed {
                            None
                        } else {
                            match receiver.blocking_recv() {
                                Some(first) => Some(first),
                                None => break,
                            }
                        };
                        committer_state.sleeping.store(false, Ordering::SeqCst);
                        first
                    };
                    let batch =
                        first.map_or_else(Vec::new, |first| batch_from(first, &mut receiver));
                    lines.clear();
                    for entry in &batch {
                        let written = match entry {
                            Entry::Event {
                                event, read: None, ..
                            } => serde_json::to_writer(&mut lines, event),
                            Entry::Event {
                                event,
                                read: Some(read),
                                ..
                            } => {
                                open.insert(*read);
                                serde_json::to_writer(&mut lines, &BegunOut { read: *read, event })
                            }
                            Entry::Wake => continue,
                        };
                        if written.is_ok() {
                            lines.push(b'\n');
                        }
                    }
                    // Then the results whose reads are written, in the order they were given.
                    let handed = std::mem::take(&mut *lock(&committer_state.results));
                    deferred = write_results(&mut lines, &mut open, deferred, handed);
                    let acknowledged = batch.iter().any(|e| matches!(e, Entry::Event { .. }));
                    let written = if lines.is_empty() {
                        Ok(())
                    } else {
                        journal.write(&lines)
                    };
                    let written = written.and_then(|()| {
                        // The timer fired: nothing else is coming to sync these lines with.
                        if acknowledged || (expecting && batch.is_empty()) {
                            journal.sync()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = &written {
                        tracing::error!(error = %e, "audit journal append failed");
                        journal.forget_unsynced();
                    }
                    // The mover is not woken here: it moves on its own tick, in large
                    // batches, so the table's SQL stays off the request path.
                    publish(&journal);
                    for entry in batch {
                        entry.ack(written.as_ref().map(|_| ()).map_err(|_| ()));
                    }
                }
                // The results still to write, of reads whose lines are written.
                lines.clear();
                let handed = std::mem::take(&mut *lock(&committer_state.results));
                write_results(&mut lines, &mut open, deferred, handed);
                if !lines.is_empty()
                    && let Err(e) = journal.write(&lines)
                {
                    tracing::error!(error = %e, "audit journal append failed");
                    journal.forget_unsynced();
                }
                journal.sync_or_forget();
                publish(&journal);
                committer_state.closed.store(true, Ordering::SeqCst);
                committer_state.wake_mover.notify_one();
            })?;
        tokio::spawn(move_journal(db, dir.to_owned(), node, state.clone()));
        Ok(Self {
            queue,
            journal: Some(state),
        })
    }

    /// Waits until every event acknowledged so far is in the table (journaled auditors move
    /// them in the background).
    pub async fn flush(&self) {
        let Some(state) = &self.journal else { return };
        let target = state.written.load(Ordering::SeqCst);
        while state.moved.load(Ordering::SeqCst) < target {
            let changed = state.moved_changed.notified();
            if state.moved.load(Ordering::SeqCst) >= target {
                break;
            }
            // Woken again each round: the mover may have stopped at a read still running.
            state.wake_mover.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(10), changed).await;
        }
    }

    /// Records an event and returns once it is durably committed.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        self.submit(event).await?.durable().await
    }

    /// Hands an event over and returns at once: the request can go on with its work while
    /// the event is written, and must wait for [`Receipt::durable`] before it answers.
    pub async fn submit(&self, event: AuditEvent) -> Result<Receipt, AuditUnavailable> {
        let (pending, receipt) = Receipt::new(event, None);
        self.queue
            .send(pending)
            .await
            .map_err(|_| AuditUnavailable)?;
        Ok(receipt)
    }

    /// Hands the result of a begun read to the journal's writer. It is written after the
    /// read's line, with the next event or within [`RESULTS_SYNCED_AFTER`]; the writer is woken
    /// only if it sleeps expecting nothing. A writer that has stopped leaves the read
    /// without a result: the mover records it as unknown, which is what it is.
    fn hand_result(&self, result: ReadResult, again: bool) {
        let Some(state) = &self.journal else { return };
        if state.closed.load(Ordering::SeqCst) {
            return;
        }
        lock(&state.results).push(PendingResult { result, again });
        if state.sleeping.swap(false, Ordering::SeqCst) {
            // A full queue holds events, which wake the writer anyway.
            let _ = self.queue.try_send(Entry::Wake);
        }
    }

    /// Begins a read whose result (outcome, and details such as a hit count) is known only
    /// once its work is done. On a journaled auditor the read is written to the journal at
    /// once, while the work runs, and its result follows in a line of its own; the mover
    /// joins the two into one row. The request answers once the read's first line is durable
    /// ([`Read::durable`]), so no answered read is missing from the trail; a crash between
    /// the answer and its result's line leaves the row with the outcome
    /// [`OUTCOME_UNKNOWN`]. Other auditors record the whole event when the read is made
    /// durable.
    pub async fn begin(&self, event: AuditEvent) -> Result<Read, AuditUnavailable> {
        let Some(state) = &self.journal else {
            return Ok(Read {
                auditor: self.clone(),
                state: ReadState::Deferred(Box::new(event)),
            });
        };
        let number = state.next_read.fetch_add(1, Ordering::SeqCst);
        let (pending, receipt) = Receipt::new(event, Some(number));
        self.queue
            .send(pending)
            .await
            .map_err(|_| AuditUnavailable)?;
        Ok(Read {
            auditor: self.clone(),
            state: ReadState::Begun {
                number,
                receipt: Some(receipt),
                resulted: false,
            },
        })
    }
}

/// A read begun with [`Auditor::begin`]: give it its result, then wait until it is durable.
/// Dropped without a result, it is recorded with the outcome [`OUTCOME_ABANDONED`].
#[derive(Debug)]
pub struct Read {
    auditor: Auditor,
    state: ReadState,
}

#[derive(Debug)]
enum ReadState {
    /// In the journal; its result goes there too.
    Begun {
        number: u64,
        receipt: Option<Receipt>,
        resulted: bool,
    },
    /// Recorded whole once durable is asked for (auditors without a journal).
    Deferred(Box<AuditEvent>),
}

impl Read {
    /// Sets the read's outcome and adds `detail` to the details it began with; called again,
    /// replaces the outcome and adds more. It never waits (it takes a lock held only to push
    /// onto a list), so it may be called from async code, or from the blocking thread that
    /// did the work: a search gives its hit count on the thread that counted it, so the
    /// result's line is written while the page is made.
    pub fn result(&mut self, outcome: &str, detail: serde_json::Value) {
        self.result_in(outcome, None, detail);
    }

    /// [`Read::result`] for a read that began before it knew the dossier concerned (a
    /// document still to be looked up): `dossier` becomes the row's dossier.
    pub fn result_in(&mut self, outcome: &str, dossier: Option<String>, detail: serde_json::Value) {
        match &mut self.state {
            ReadState::Begun {
                number, resulted, ..
            } => {
                let again = std::mem::replace(resulted, true);
                self.auditor.hand_result(
                    ReadResult {
                        amends: *number,
                        outcome: outcome.to_owned(),
                        dossier,
                        detail,
                    },
                    again,
                );
            }
            ReadState::Deferred(event) => {
                complete_event(event, outcome.to_owned(), dossier, detail);
            }
        }
    }

    /// Returns once the read is durably recorded: from then on it may be answered.
    pub async fn durable(mut self) -> Result<(), AuditUnavailable> {
        match &mut self.state {
            ReadState::Begun { receipt, .. } => match receipt.take() {
                Some(receipt) => receipt.durable().await,
                None => Err(AuditUnavailable),
            },
            ReadState::Deferred(event) => self.auditor.record(std::mem::take(&mut **event)).await,
        }
    }
}

impl Drop for Read {
    fn drop(&mut self) {
        let ReadState::Begun {
            number,
            resulted: false,
            ..
        } = self.state
        else {
            return;
        };
        self.auditor.hand_result(
            ReadResult {
                amends: number,
                outcome: OUTCOME_ABANDONED.to_owned(),
                dossier: None,
                detail: serde_json::Value::Null,
            },
            false,
        );
    }
}

/// An event handed to the [`Auditor`], not yet known to be durable.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<(), ()>>);

impl Receipt {
    /// `event`, stamped with the time if it has none, ready to queue, and its receipt.
    fn new(mut event: AuditEvent, read: Option<u64>) -> (Entry, Self) {
        event.at.get_or_insert_with(now_ms);
        let (ack, done) = oneshot::channel();
        (Entry::Event { event, read, ack }, Self(done))
    }

    /// Waits until the event is durably recorded.
    pub async fn durable(self) -> Result<(), AuditUnavailable> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(AuditUnavailable),
        }
    }
}

/// The journal's newest segment: lines up to `end`, zeros after it up to `allocated`. Its
/// first byte is at position `base` of the whole journal.
struct Journal {
    dir: std::path::PathBuf,
    file: std::fs::File,
    base: u64,
    end: u64,
    /// Bytes before `end` written since the last sync (all in this segment).
    unsynced: u64,
    allocated: u64,
    segment_bytes: u64,
}

/// `first` and whatever else is already queued, up to a group.
fn batch_from(first: Entry, receiver: &mut mpsc::Receiver<Entry>) -> Vec<Entry> {
    let mut batch = vec![first];
    while batch.len() < GROUP {
        match receiver.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

/// Adds to `lines` the results, `deferred` first and then `handed`, whose reads are written
/// (`open` holds those still waiting for their first result), in order: a later result of a
/// read comes after the earlier one. Returns those that must wait for their read's line.
fn write_results(
    lines: &mut Vec<u8>,
    open: &mut std::collections::HashSet<u64>,
    deferred: Vec<PendingResult>,
    handed: Vec<PendingResult>,
) -> Vec<PendingResult> {
    let mut waiting: Vec<PendingResult> = Vec::new();
    for pending in deferred.into_iter().chain(handed) {
        let read = pending.result.amends;
        let ready = if pending.again {
            !waiting.iter().any(|w| w.result.amends == read)
        } else {
            open.remove(&read)
        };
        if !ready {
            waiting.push(pending);
        } else if serde_json::to_writer(&mut *lines, &pending.result).is_ok() {
            lines.push(b'\n');
        }
    }
    waiting
}

/// Where the journal's lines end: the first NUL byte (or the end of the file), and the end of
/// the last complete line before it. Reads the lines in 1 MiB pieces and stops at the zeros,
/// so the preallocated tail is never read.
fn journal_end(file: &mut std::fs::File) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut buf = vec![0u8; 1024 * 1024];
    let (mut at, mut complete) = (0u64, 0u64);
    loop {
        let n = file.read(&mut buf)?;
        let piece = &buf[..n];
        let zero = piece.iter().position(|b| *b == 0);
        let data = &piece[..zero.unwrap_or(n)];
        if let Some(i) = data.iter().rposition(|b| *b == b'\n') {
            complete = at + i as u64 + 1;
        }
        at += data.len() as u64;
        if n == 0 || zero.is_some() {
            return Ok((at, complete));
        }
    }
}

/// How far ahead a journal segment is allocated, at most.
const JOURNAL_STEP: u64 = 64 * 1024 * 1024;
/// A journal segment is closed, and the next one started, once it holds this much.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The file of the segment starting at position `base` of the journal.
fn segment_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("journal-{base:020}.jsonl"))
}

/// The journal's segments, oldest first: (position of the first byte, file).
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((base, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Makes the creation, renaming or removal of files in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Journal {
    /// Writes `lines` after the last one; they are durable once [`Journal::sync`] returns.
    fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.end > 0 && self.end + lines.len() as u64 > self.segment_bytes {
            // A segment is closed only once all of it is durable.
            self.sync()?;
            self.next_segment()?;
        }
        let needed = self.end + lines.len() as u64;
        if needed > self.allocated {
            // The new size is made durable once here, not at every append.
            let step = JOURNAL_STEP.min(self.segment_bytes).max(1);
            self.allocated = needed.div_ceil(step) * step;
            self.file.set_len(self.allocated)?;
            self.file.sync_all()?;
        }
        self.file.write_all_at(lines, self.end)?;
        self.end = needed;
        self.unsynced += lines.len() as u64;
        Ok(())
    }

    /// Makes every line written durable.
    fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Lines written but not known to be durable are written over by the next ones (nobody
    /// was told they were recorded).
    fn forget_unsynced(&mut self) {
        self.end -= self.unsynced;
        self.unsynced = 0;
    }

    /// [`Journal::sync`], forgetting the lines on failure.
    fn sync_or_forget(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "audit journal sync failed");
            self.forget_unsynced();
        }
    }

    /// The position in the whole journal up to which every line is durable.
    fn durable_end(&self) -> u64 {
        self.base + self.end - self.unsynced
    }

    /// Closes the segment (everything in it is durable already) and starts the next one, at
    /// the position right after its last line; the new file's name is durable before any
    /// event in it is acknowledged.
    fn next_segment(&mut self) -> std::io::Result<()> {
        let base = self.base + self.end;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(segment_path(&self.dir, base))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.base = base;
        self.end = 0;
        self.allocated = 0;
        Ok(())
    }
}

/// Deletes the segments whose every event is in the table (all of a segment is moved once
/// the next one starts at or before `moved`).
fn drop_moved_segments(dir: &Path, moved: u64) -> std::io::Result<()> {
    let all = segments(dir)?;
    let mut dropped = false;
    for pair in all.windows(2) {
        if pair[1].0 <= moved {
            std::fs::remove_file(&pair[0].1)?;
            dropped = true;
        }
    }
    if dropped {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Moves journaled events into the chained table, in order, exactly once.
async fn move_journal(db: Db, dir: std::path::PathBuf, node: String, state: Arc<JournalState>) {
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
    state.moved.store(moved, Ordering::SeqCst);
    state.moved_changed.notify_waiters();
    drop_segments(&dir, moved).await;
    loop {
        let written = state.written.load(Ordering::SeqCst);
        if written > moved {
            match move_once(&db, &dir, &node, (moved, written), &state).await {
                Ok(next) if next > moved => {
                    moved = next;
                    state.moved.store(moved, Ordering::SeqCst);
                    state.moved_changed.notify_waiters();
                    drop_segments(&dir, moved).await;
                    continue;
                }
                // The next line is a read still running: moved once its result is written.
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "moving the audit journal; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        // Nobody can write any more (the auditor and its journal thread are gone) and all
        // is moved: done.
        if Arc::strong_count(&state) == 1 && moved >= state.written.load(Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(MOVE_EVERY, state.wake_mover.notified()).await;
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

/// How much of the journal the mover reads at a time, at most.
const MOVE_CHUNK: u64 = 4 * 1024 * 1024;

/// The journal's bytes from position `from` to `to`, at most `cap` of them, read across
/// segments (each one starts where the one before it ends).
fn read_span(dir: &Path, from: u64, to: u64, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let end = to.min(from.saturating_add(cap));
    let all = segments(dir)?;
    if all.first().is_none_or(|(base, _)| *base > from) {
        return Err(std::io::Error::other(format!(
            "no segment holds position {from}"
        )));
    }
    let mut out = Vec::with_capacity(usize::try_from(end - from).map_err(std::io::Error::other)?);
    for (i, (base, path)) in all.iter().enumerate() {
        let segment_end = all.get(i + 1).map_or(end, |(next, _)| *next).min(end);
        let at = from + out.len() as u64;
        if segment_end <= at {
            continue;
        }
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(at - base))?;
        let len = usize::try_from(segment_end - at).map_err(std::io::Error::other)?;
        let filled = out.len();
        out.resize(filled + len, 0);
        f.read_exact(&mut out[filled..])?;
    }
    Ok(out)
}

/// The events of a piece of the journal, with each read begun in it joined to its result.
/// A begun read whose result is not in the piece ends what can be moved (its result is still
/// to come) unless it never will have one: it began before this process started, or the
/// journal's writer has stopped. Those are recorded as [`OUTCOME_UNKNOWN`]. A line that cannot
/// be read becomes an [`ACTION_JOURNAL_CORRUPT`] row in its place and is quarantined.
fn journal_events(chunk: &[u8], from: u64, started_at: u64, closed: bool, full: bool) -> Moved {
    let complete = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    // Each event, and where its line starts in the piece.
    let mut events: Vec<(AuditEvent, usize)> = Vec::new();
    // Begun reads: number → index in `events`; and those without a result yet.
    let mut begun: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut open = std::collections::HashSet::new();
    let mut quarantined = Vec::new();
    let mut at = 0;
    for line in chunk[..complete].split(|b| *b == b'\n') {
        let start = at;
        at += line.len() + 1;
        if line.is_empty() {
            continue;
        }
        let parsed = if line.starts_with(RESULT_LINE) {
            serde_json::from_slice::<ReadResult>(line).map(|result| {
                // A later result of the same read replaces the outcome of an earlier one (a
                // search counted, then failed). A result whose read was moved already is
                // dropped.
                if let Some(&i) = begun.get(&result.amends) {
                    open.remove(&result.amends);
                    complete_event(
                        &mut events[i].0,
                        result.outcome,
                        result.dossier,
                        result.detail,
                    );
                }
            })
        } else if line.starts_with(BEGUN_LINE) {
            serde_json::from_slice::<BegunIn>(line).map(|read| {
                begun.insert(read.read, events.len());
                open.insert(read.read);
                events.push((read.event, start));
            })
        } else {
            serde_json::from_slice(line).map(|event| events.push((event, start)))
        };
        if let Err(error) = parsed {
            let position = from + start as u64;
            tracing::error!(position, bytes = line.len(), %error, "unreadable audit journal line quarantined");
            events.push((corrupt_line_event(position, line, &error), start));
            quarantined.push((position, line.to_vec()));
        }
    }
    let mut waiting: Vec<usize> = open.iter().map(|read| begun[read]).collect();
    waiting.sort_unstable();
    let mut cut = None;
    for i in waiting {
        let done = closed || from + (events[i].1 as u64) < started_at;
        // A read still open at the start of a full piece has had a whole piece of the
        // journal written after it: it is given up on rather than holding the trail back.
        let stuck = i == 0 && full;
        if done || stuck {
            if stuck && !done {
                tracing::warn!("an audited read has had no result for a whole journal chunk");
            }
            OUTCOME_UNKNOWN.clone_into(&mut events[i].0.outcome);
        } else {
            cut = Some(i);
            break;
        }
    }
    let used = cut.map_or(complete, |i| events[i].1);
    events.truncate(cut.unwrap_or(events.len()));
    // The events' tenant, for the rows that record unreadable lines: a node's journal holds
    // the events of the municipality it serves.
    let tenant = events
        .iter()
        .find(|(e, _)| e.action != ACTION_JOURNAL_CORRUPT)
        .map(|(e, _)| e.tenant.clone());
    let mut events: Vec<AuditEvent> = events.into_iter().map(|(e, _)| e).collect();
    if let Some(tenant) = tenant {
        for e in events
            .iter_mut()
            .filter(|e| e.action == ACTION_JOURNAL_CORRUPT)
        {
            e.tenant.clone_from(&tenant);
        }
    }
    quarantined.retain(|(position, _)| *position < from + used as u64);
    Moved {
        events,
        used,
        quarantined,
    }
}

/// What [`journal_events`] found in a piece of the journal.
struct Moved {
    /// The events to move, in journal order.
    events: Vec<AuditEvent>,
    /// How many bytes of the piece they take.
    used: usize,
    /// The unreadable lines among them, by journal position, kept verbatim before the piece
    /// is moved (its segment is deleted once moved).
    quarantined: Vec<(u64, Vec<u8>)>,
}

/// The action of the row that stands in the chain for a journal line the mover could not
/// read (a damaged disk, an edited file): the trail shows where it was and what it held, and
/// the lines after it are moved as usual instead of waiting behind it forever.
pub const ACTION_JOURNAL_CORRUPT: &str = "audit.journal_corrupt";

/// How much of an unreadable line its row quotes; the whole line is kept in the quarantine
/// folder, and its SHA-256 is in the row.
const QUOTED_BYTES: usize = 1024;

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

/// The folder of the journal directory that keeps unreadable lines.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The file, in [`QUARANTINE_DIR`], that keeps the unreadable line at `position`.
fn quarantine_name(position: u64) -> String {
    format!("line-{position:020}.bin")
}

/// Writes each quarantined line to a file of its own, durably, before the piece holding it is
/// moved (and may be deleted).
fn keep_quarantined(dir: &Path, lines: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
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

/// Moves up to a few MiB of complete journal lines after `from`; returns the new position
/// (`from` itself when the first line is a read whose result is still to come).
async fn move_once(
    db: &Db,
    dir: &Path,
    node: &str,
    (from, to): (u64, u64),
    state: &JournalState,
) -> Result<u64, DbError> {
    let span_dir = dir.to_owned();
    // Read before the bytes: a writer stopped by then wrote everything it ever will.
    let closed = state.closed.load(Ordering::SeqCst);
    let chunk = tokio::task::spawn_blocking(move || read_span(&span_dir, from, to, MOVE_CHUNK))
        .await
        .map_err(|e| DbError::Corrupt(e.to_string()))?
        .map_err(|e| DbError::Corrupt(format!("audit journal: {e}")))?;
    let full = chunk.len() as u64 == MOVE_CHUNK;
    let Moved {
        events,
        used,
        quarantined,
    } = journal_events(&chunk, from, state.started_at, closed, full);
    if used == 0 {
        return Ok(from);
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

async fn commit(db: &Db, events: &[AuditEvent]) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    append_in_tx(db, &mut tx, events).await?;
    tx.commit().await?;
    Ok(())
}

/// The newest row of the chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Head {
    /// Its position.
    pub seq: i64,
    /// Its hash: anchor it outside the system.
    pub hash: String,
    /// When it was written (RFC 3339).
    pub at: Option<String>,
}

/// The newest row, or the genesis hash for an empty trail.
pub async fn head(db: &Db) -> Result<Head, DbError> {
    let row = sqlx::query("select seq, hash, at from audit_event order by seq desc limit 1")
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Head {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            at: Some(crate::db::dossiers::rfc3339(r.try_get("at")?)),
        },
        None => Head {
            seq: 0,
            hash: GENESIS.to_owned(),
            at: None,
        },
    })
}

/// What a verification of the chain found.
#[derive(Debug, Serialize)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The first row that breaks the chain, and why.
    pub first_broken: Option<Broken>,
}

/// A row that breaks the chain.
#[derive(Debug, Serialize)]
pub struct Broken {
    /// Its position (or the position missing).
    pub seq: i64,
    /// What is wrong.
    pub reason: String,
}

/// Re-computes the whole chain from the first row.
pub async fn verify(db: &Db) -> Result<ChainReport, DbError> {
    use futures_util::TryStreamExt;
    let mut rows = sqlx::query(
        "select seq, at, tenant, actor_id, actor_role, action, target, dossier_id, outcome, \
         client_address, detail, prev_hash, hash from audit_event order by seq",
    )
    .fetch(db.pool());
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut count = 0u64;
    while let Some(row) = rows.try_next().await? {
        count += 1;
        let seq: i64 = row.try_get("seq")?;
        let broken = |reason: String| {
            Ok(ChainReport {
                rows: count,
                first_broken: Some(Broken { seq, reason }),
            })
        };
        if seq != expected_seq {
            return Ok(ChainReport {
                rows: count,
                first_broken: Some(Broken {
                    seq: expected_seq,
                    reason: format!("row {expected_seq} is missing (next row is {seq})"),
                }),
            });
        }
        let prev_hash: String = row.try_get("prev_hash")?;
        if prev_hash != prev {
            return broken("its previous hash does not match the row before it".into());
        }
        let detail: String = row.try_get("detail")?;
        let event = AuditEvent {
            at: None,
            tenant: row.try_get("tenant")?,
            actor_id: row.try_get("actor_id")?,
            actor_role: row.try_get("actor_role")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            dossier_id: row.try_get("dossier_id")?,
            outcome: row.try_get("outcome")?,
            client_address: row.try_get("client_address")?,
            detail: serde_json::Value::Null,
        };
        let at: i64 = row.try_get("at")?;
        let hash: String = row.try_get("hash")?;
        if chain_hash(&prev, &canonical(seq, at, &event, &detail)) != hash {
            return broken("its content does not match its hash".into());
        }
        prev = hash;
        expected_seq += 1;
    }
    Ok(ChainReport {
        rows: count,
        first_broken: None,
    })
}

/// Who makes a change or a read, as the audit trail records it.
#[derive(Clone, Debug)]
pub struct Actor {
    /// Municipality.
    pub tenant: String,
    /// User id.
    pub id: Option<String>,
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
            id: Some(caller.id().to_string()),
            role: Some(caller.role().to_string()),
            client,
        }
    }

    /// A tool acting as a system user (import, demo).
    pub fn system(tenant: &str, user: crate::domain::UserId, tool: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            id: Some(user.to_string()),
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
        dossier_id: Option<String>,
        outcome: &str,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            at: None,
            tenant: self.tenant.clone(),
            actor_id: self.id.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows chained by earlier versions, which built the canonical form as a JSON value,
    /// must hash alike: the text is compared with that construction, over escapes, non-ASCII
    /// text, absent fields and extreme numbers.
    #[test]
    fn the_canonical_form_is_the_json_array_of_the_fields() {
        let tricky = [
            "plain",
            "",
            "quote \" backslash \\ slash /",
            "controls \u{0}\u{1f}\n\t\r",
            "accenti àèéìòù, “virgolette” e € \u{1F600}",
            "\u{7f}\u{2028}\u{2029}",
        ];
        for (i, text) in tricky.iter().enumerate() {
            let some = |s: &str| (i % 2 == 0).then(|| s.to_owned());
            let event = AuditEvent {
                at: None,
                tenant: text.to_string(),
                actor_id: some(text),
                actor_role: some("staff"),
                action: format!("{text}.read"),
                target: format!("document:{text}"),
                dossier_id: some(text),
                outcome: text.to_string(),
                client_address: (i % 3 == 0).then(|| "::1".to_owned()),
                detail: serde_json::Value::Null,
            };
            let detail = serde_json::json!({ "query": text, "total": i }).to_string();
            for (seq, at) in [(1, 0), (i64::MAX, i64::MIN), (42, -1)] {
                let before = serde_json::json!([
                    seq,
                    at,
                    event.tenant,
                    event.actor_id,
                    event.actor_role,
                    event.action,
                    event.target,
                    event.dossier_id,
                    event.outcome,
                    event.client_address,
                    detail
                ])
                .to_string();
                assert_eq!(canonical(seq, at, &event, &detail), before, "{text:?}");
            }
        }
    }

    /// Results are handed to the journal's writer apart from the events: one whose read's line
    /// is not written yet waits for it, and a later result of a read never goes before the
    /// earlier one, so the mover, which lets the last result it reads stand, sees them in the
    /// order they were given.
    #[test]
    fn results_follow_their_read_and_each_other() {
        let result = |read: u64, outcome: &str, again: bool| PendingResult {
            result: ReadResult {
                amends: read,
                outcome: outcome.to_owned(),
                dossier: None,
                detail: serde_json::Value::Null,
            },
            again,
        };
        let written = |lines: &[u8]| -> Vec<(u64, String)> {
            lines
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let r: ReadResult = serde_json::from_slice(l).expect("a result line");
                    (r.amends, r.outcome)
                })
                .collect()
        };
        let mut open: std::collections::HashSet<u64> = [1].into();
        let mut lines = Vec::new();
        // Read 1's line is written, read 2's is still queued; both are counted, then read 2
        // fails and read 1 fails too.
        let handed = vec![
            result(2, "ok", false),
            result(1, "ok", false),
            result(2, "error", true),
            result(1, "error", true),
        ];
        let deferred = write_results(&mut lines, &mut open, Vec::new(), handed);
        assert_eq!(
            written(&lines),
            [(1, "ok".to_owned()), (1, "error".to_owned())]
        );
        assert_eq!(deferred.len(), 2, "read 2's results wait for its line");
        assert!(open.is_empty(), "read 1 has its first result");
        // Read 2's line is written: its results follow in their order, before any newer one.
        open.insert(2);
        open.insert(3);
        lines.clear();
        let deferred = write_results(
            &mut lines,
            &mut open,
            deferred,
            vec![result(3, "ok", false)],
        );
        assert_eq!(
            written(&lines),
            [
                (2, "ok".to_owned()),
                (2, "error".to_owned()),
                (3, "ok".to_owned())
            ]
        );
        assert!(deferred.is_empty() && open.is_empty());
    }
}

/// A verification of the chain, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// When it ran (RFC 3339).
    pub at: String,
    /// Who asked for it (an auditor's id; none for the command line).
    pub user_id: Option<String>,
    /// Rows checked.
    pub checked: i64,
    /// The first row that breaks the chain, if one does.
    pub broken_seq: Option<i64>,
    /// Why it breaks it.
    pub reason: Option<String>,
    /// The newest row when it ran.
    pub head_seq: i64,
    /// Its hash.
    pub head_hash: String,
}

/// Verifies the whole chain and records what was found.
pub async fn verify_and_record(
    db: &Db,
    by: Option<crate::domain::UserId>,
) -> Result<(ChainReport, Head), DbError> {
    let head = head(db).await?;
    let report = verify(db).await?;
    sqlx::query(
        "insert into audit_verification (id, at, user_id, checked, broken_seq, reason, head_seq, \
         head_hash) values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(crate::db::now_ms())
    .bind(by.map(|u| u.to_string()))
    .bind(i64::try_from(report.rows).unwrap_or(i64::MAX))
    .bind(report.first_broken.as_ref().map(|b| b.seq))
    .bind(report.first_broken.as_ref().map(|b| b.reason.clone()))
    .bind(head.seq)
    .bind(&head.hash)
    .execute(db.write_pool())
    .await?;
    Ok((report, head))
}

/// The newest recorded verification of the chain.
pub async fn last_verification(db: &Db) -> Result<Option<Verification>, DbError> {
    let row = sqlx::query(
        "select at, user_id, checked, broken_seq, reason, head_seq, head_hash \
         from audit_verification order by at desc limit 1",
    )
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(Verification {
            at: crate::db::dossiers::rfc3339(r.try_get("at")?),
            user_id: r.try_get("user_id")?,
            checked: r.try_get("checked")?,
            broken_seq: r.try_get("broken_seq")?,
            reason: r.try_get("reason")?,
            head_seq: r.try_get("head_seq")?,
            head_hash: r.try_get("head_hash")?,
        })
    })
    .transpose()
}
