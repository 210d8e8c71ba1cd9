//! The journal's writer: one thread that takes the reads' events from a queue, appends as
//! many as are waiting (up to [`GROUP`]) to the journal as one line each, fsyncs them once,
//! and then tells every waiting request that its event is durable (group commit).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::journal::Journal;
use super::{AuditEvent, Progress};

/// Events written and synced together at most.
const GROUP: usize = 256;

/// An event waiting for the writer, and where to say whether it is durable.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) event: AuditEvent,
    pub(super) ack: oneshot::Sender<Result<(), ()>>,
}

/// The writer's state: the journal, its queue, and the progress it publishes to the mover.
pub(super) struct Writer {
    pub(super) journal: Journal,
    pub(super) queue: mpsc::Receiver<Pending>,
    pub(super) progress: Arc<Progress>,
}

impl Writer {
    /// Runs until every sender of the queue is gone.
    pub(super) fn run(mut self) {
        let mut batch: Vec<Pending> = Vec::with_capacity(GROUP);
        let mut lines = Vec::new();
        let mut serialised = Vec::with_capacity(GROUP);
        while let Some(first) = self.queue.blocking_recv() {
            batch.push(first);
            while batch.len() < GROUP {
                match self.queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            lines.clear();
            serialised.clear();
            for pending in &batch {
                let ok = serde_json::to_writer(&mut lines, &pending.event).is_ok();
                if ok {
                    lines.push(b'\n');
                }
                serialised.push(ok);
            }
            let written = self
                .journal
                .write(&lines)
                .and_then(|()| self.journal.sync());
            if let Err(e) = &written {
                tracing::error!(error = %e, "audit journal append failed");
                self.journal.forget_unsynced();
            }
            // The mover is not woken here: it moves on its own tick, in large batches, so the
            // table's SQL stays off the request path.
            self.progress
                .written
                .store(self.journal.durable_end(), Ordering::SeqCst);
            for (pending, ok) in batch.drain(..).zip(&serialised) {
                let durable = if written.is_ok() && *ok {
                    Ok(())
                } else {
                    Err(())
                };
                let _ = pending.ack.send(durable);
            }
        }
        self.progress.wake_mover.notify_one();
    }
}
