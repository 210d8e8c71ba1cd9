//! Delivery of the notification outbox (DESIGN.md §4, `notify/`): a loop on every node claims
//! due messages with a lease, renders them from their templates, sends them, and records the
//! outcome. Temporary failures (a refused connection, a 4xx SMTP reply) retry with exponential
//! back-off and jitter; permanent ones, and a message past its attempts, become `failed` with
//! the reason. A crash between sending and recording may send a message again, never drop it:
//! its `Message-ID` is derived from the notification, so the receiver can drop the repeat.
//!
//! Channels: e-mail over SMTP (`lettre`); the SMS gateway and App IO are later slices.

mod email;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::outbox::{self, Claimed};
use crate::db::{Db, now_ms};

pub use email::EmailChannel;
pub use templates::Templates;

/// Messages claimed at once.
const BATCH: i64 = 32;
/// How long a claim holds a message; a sender that takes longer lets it go back to the queue.
const LEASE_MS: i64 = 60_000;
/// Attempts before a message is given up.
pub const MAX_ATTEMPTS: i32 = 8;
/// The first retry's delay; each later one doubles it, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// How often the queue is looked at when nothing wakes the loop.
const POLL: Duration = Duration::from_millis(500);

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt later.
    #[error("temporary: {0}")]
    Temporary(String),
    /// Will fail again: a rejected address, a template that cannot render.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The delivery loop of one node.
#[derive(Clone, Debug)]
pub struct Notifier {
    db: Db,
    node: String,
    email: Option<Arc<EmailChannel>>,
    templates: Arc<Templates>,
}

impl Notifier {
    /// A notifier sending e-mail through `email`, if configured.
    pub fn new(db: Db, email: Option<EmailChannel>, templates: Templates) -> Self {
        Self {
            db,
            node: uuid::Uuid::now_v7().to_string(),
            email: email.map(Arc::new),
            templates: Arc::new(templates),
        }
    }

    /// Delivers due messages until `stop` is notified; `wake` brings it round at once.
    pub async fn run(self, wake: Arc<Notify>, stop: Arc<Notify>) {
        loop {
            let delivered = self.deliver_due().await;
            if let Err(e) = &delivered {
                tracing::warn!(error = %e, "notification delivery failed; retrying");
            }
            // A full batch: more may be due at once.
            if matches!(delivered, Ok(n) if n as i64 >= BATCH) {
                continue;
            }
            tokio::select! {
                () = stop.notified() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Claims and sends one batch per configured channel; returns how many were claimed.
    pub async fn deliver_due(&self) -> Result<usize, crate::db::DbError> {
        let Some(email) = &self.email else {
            return Ok(0);
        };
        let claimed = outbox::claim(&self.db, &self.node, "email", BATCH, LEASE_MS).await?;
        let count = claimed.len();
        let sends = claimed.into_iter().map(|message| {
            let email = email.clone();
            async move {
                let outcome = match self.templates.render(&message) {
                    Ok(rendered) => email.send(&message, &rendered).await,
                    Err(e) => Err(SendError::Permanent(e.to_string())),
                };
                self.record(&message, outcome).await
            }
        });
        for recorded in futures_util::future::join_all(sends).await {
            recorded?;
        }
        Ok(count)
    }

    async fn record(
        &self,
        message: &Claimed,
        outcome: Result<(), SendError>,
    ) -> Result<(), crate::db::DbError> {
        match outcome {
            Ok(()) => {
                tracing::info!(id = %message.id, template = %message.template, "notification sent");
                outbox::sent(&self.db, &message.id, &self.node).await
            }
            Err(SendError::Temporary(reason)) if message.attempt < MAX_ATTEMPTS => {
                let retry_at = now_ms() + backoff_ms(message.attempt, &message.id);
                tracing::warn!(id = %message.id, attempt = message.attempt, %reason, "notification will be retried");
                outbox::retry(&self.db, &message.id, &self.node, retry_at, &reason).await
            }
            Err(e) => {
                tracing::error!(id = %message.id, error = %e, "notification failed");
                outbox::failed(&self.db, &message.id, &self.node, &e.to_string()).await
            }
        }
    }
}

/// The delay before the attempt after `attempt`: doubling from [`FIRST_BACKOFF_MS`], capped,
/// with up to a quarter of jitter (drawn from the message id and attempt, so retries of many
/// messages spread out instead of arriving together).
pub fn backoff_ms(attempt: i32, id: &str) -> i64 {
    let exponent = u32::try_from(attempt.clamp(1, 30) - 1).unwrap_or(0);
    let base = FIRST_BACKOFF_MS
        .saturating_mul(1_i64 << exponent.min(22))
        .min(MAX_BACKOFF_MS);
    let mut seed = 0xcbf2_9ce4_8422_2325_u64;
    for b in id.bytes().chain(attempt.to_le_bytes()) {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let jitter = i64::try_from(seed % (base as u64 / 4 + 1)).unwrap_or(0);
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_bounded_jitter() {
        let delays: Vec<i64> = (1..=14).map(|a| backoff_ms(a, "msg")).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = (FIRST_BACKOFF_MS << i).min(MAX_BACKOFF_MS);
            assert!(
                *d >= base && *d <= base + base / 4,
                "attempt {}: {d}",
                i + 1
            );
        }
        assert_ne!(
            backoff_ms(3, "a"),
            backoff_ms(3, "b"),
            "jitter differs by message"
        );
    }
}
