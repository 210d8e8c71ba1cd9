//! Delivery of the notification outbox (DESIGN.md §4, `notify/`): a loop on every node claims
//! due messages with a lease, renders them from their templates, sends them, and records the
//! outcome. Temporary failures (a refused connection, a 4xx SMTP reply) retry with exponential
//! back-off and jitter; permanent ones, and a message past its attempts, become `failed` with
//! the reason. A crash between sending and recording may send a message again, never drop it:
//! its `Message-ID` is derived from the notification, so the receiver can drop the repeat.
//!
//! Channels: e-mail over SMTP (`lettre`), SMS through an HTTP gateway, App IO. Each claims
//! its own batches, so a slow gateway never holds e-mail back.

pub mod app_io;
mod email;
pub mod sms;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;

use crate::db::outbox::{self, Claimed};
use crate::db::{Db, now_ms};

pub use app_io::AppIoChannel;
pub use email::EmailChannel;
pub use sms::SmsChannel;
pub use templates::Templates;

/// Messages claimed at once, per channel.
const BATCH: i64 = 64;
/// Attempts before a message is given up.
pub const MAX_ATTEMPTS: i32 = 8;
/// The first retry's delay; each later one doubles it, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// How often the queue is looked at when nothing wakes the loop.
const POLL: Duration = Duration::from_millis(250);
/// How often the daily digest is looked for.
const DIGEST_CHECK: Duration = Duration::from_secs(60);

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt later.
    #[error("temporary: {0}")]
    Temporary(String),
    /// Worth another attempt, not before the receiver said (`Retry-After`).
    #[error("temporary: {0}")]
    Later(String, Duration),
    /// Will fail again: a rejected address, a template that cannot render.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The HTTP client of the SMS and App IO channels: bounded in time.
fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The body of a 2xx answer; 429 and 5xx are temporary (honouring `Retry-After`), 408 too,
/// anything else permanent.
async fn http_outcome(who: &str, response: reqwest::Response) -> Result<bytes::Bytes, SendError> {
    let status = response.status();
    let wait = sms::retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
    let reason = format!("{who} answered {status}: {excerpt}");
    if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
        Err(match wait {
            Some(d) => SendError::Later(reason, d),
            None => SendError::Temporary(reason),
        })
    } else {
        Err(SendError::Permanent(reason))
    }
}

/// When and for what the daily digest of deadlines is written.
#[derive(Clone, Debug)]
pub struct DigestSettings {
    /// The municipality.
    pub tenant: String,
    /// Hour of the day (Europe/Rome) after which it is written.
    pub hour: u8,
    /// "Close to the deadline": this many days left or fewer.
    pub within_days: i64,
    /// The start of links.
    pub public_url: String,
}

/// The delivery loop of one node.
#[derive(Clone, Debug)]
pub struct Notifier {
    db: Db,
    node: String,
    email: Option<Arc<EmailChannel>>,
    sms: Option<Arc<SmsChannel>>,
    app_io: Option<Arc<AppIoChannel>>,
    templates: Arc<Templates>,
    lease_ms: i64,
    digest: Option<DigestSettings>,
}

impl Notifier {
    /// A notifier sending through the channels given; the others' messages wait.
    pub fn new(db: Db, templates: Templates) -> Self {
        Self {
            db,
            node: uuid::Uuid::now_v7().to_string(),
            email: None,
            sms: None,
            app_io: None,
            templates: Arc::new(templates),
            lease_ms: 60_000,
            digest: None,
        }
    }

    /// Sends e-mail through `channel`.
    pub fn with_email(mut self, channel: EmailChannel) -> Self {
        self.email = Some(Arc::new(channel));
        self
    }

    /// Sends SMS through `channel`.
    pub fn with_sms(mut self, channel: SmsChannel) -> Self {
        self.sms = Some(Arc::new(channel));
        self
    }

    /// Sends to App IO through `channel`.
    pub fn with_app_io(mut self, channel: AppIoChannel) -> Self {
        self.app_io = Some(Arc::new(channel));
        self
    }

    /// Holds claimed messages this long.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1);
        self
    }

    /// Writes the daily digest of deadlines.
    pub fn with_digest(mut self, settings: DigestSettings) -> Self {
        self.digest = Some(settings);
        self
    }

    /// This node's name in leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Delivers due messages until `stop` is notified; `wake` brings it round at once.
    pub async fn run(self, wake: Arc<Notify>, stop: Arc<Notify>) {
        let mut digest_checked: Option<tokio::time::Instant> = None;
        loop {
            if self.digest.is_some() && digest_checked.is_none_or(|t| t.elapsed() >= DIGEST_CHECK) {
                digest_checked = Some(tokio::time::Instant::now());
                if let Err(e) = self.write_digest_if_due().await {
                    tracing::warn!(error = %e, "the daily digest could not be written");
                }
            }
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

    /// Writes today's digest if its hour has come and no node wrote it yet.
    pub async fn write_digest_if_due(&self) -> Result<usize, crate::db::DbError> {
        let Some(settings) = &self.digest else {
            return Ok(0);
        };
        let now = jiff::Timestamp::now();
        let local = now
            .in_tz("Europe/Rome")
            .unwrap_or_else(|_| now.to_zoned(jiff::tz::TimeZone::UTC));
        if local.hour() < i8::try_from(settings.hour).unwrap_or(i8::MAX) {
            return Ok(0);
        }
        let day = local.strftime("%Y-%m-%d").to_string();
        crate::db::notices::enqueue_digest(
            &self.db,
            &settings.tenant,
            &day,
            settings.within_days,
            &settings.public_url,
        )
        .await
    }

    /// Claims and sends one batch per configured channel; returns the most claimed on one.
    pub async fn deliver_due(&self) -> Result<usize, crate::db::DbError> {
        let mut most = 0;
        for (channel, configured) in [
            ("email", self.email.is_some()),
            ("sms", self.sms.is_some()),
            ("app_io", self.app_io.is_some()),
        ] {
            if !configured {
                continue;
            }
            let claimed =
                outbox::claim(&self.db, &self.node, channel, BATCH, self.lease_ms).await?;
            most = most.max(claimed.len());
            // Sends run together; each wave of finished ones is recorded in one commit as
            // soon as the first of it finishes, so a slow recipient delays nobody's record.
            let mut sends: FuturesUnordered<_> = claimed
                .iter()
                .map(|message| async move {
                    let outcome = self.send(message).await;
                    (message.id.clone(), self.outcome(message, outcome))
                })
                .collect();
            while let Some(first) = sends.next().await {
                let mut wave = vec![first];
                while let Some(Some(more)) = sends.next().now_or_never() {
                    wave.push(more);
                }
                outbox::record(&self.db, &self.node, &wave).await?;
            }
        }
        Ok(most)
    }

    /// Renders and sends one message on its channel.
    async fn send(&self, message: &Claimed) -> Result<(), SendError> {
        let template = |e: templates::TemplateError| SendError::Permanent(e.to_string());
        match message.channel.as_str() {
            "email" => match &self.email {
                Some(c) => {
                    c.send(message, &self.templates.render(message).map_err(template)?)
                        .await
                }
                None => Err(SendError::Temporary("no SMTP server configured".into())),
            },
            "sms" => match &self.sms {
                Some(c) => {
                    c.send(
                        message,
                        &self.templates.render_sms(message).map_err(template)?,
                    )
                    .await
                }
                None => Err(SendError::Temporary("no SMS gateway configured".into())),
            },
            "app_io" => match &self.app_io {
                Some(c) => {
                    c.send(
                        message,
                        &self.templates.render_io(message).map_err(template)?,
                    )
                    .await
                }
                None => Err(SendError::Temporary("App IO is not configured".into())),
            },
            other => Err(SendError::Permanent(format!("unknown channel {other:?}"))),
        }
    }

    /// What to record of a send: sent, retried later (exponential back-off with jitter, or
    /// the receiver's `Retry-After`), or failed.
    fn outcome(&self, message: &Claimed, sent: Result<(), SendError>) -> outbox::Outcome {
        match sent {
            Ok(()) => {
                tracing::info!(id = %message.id, channel = %message.channel, template = %message.template, "notification sent");
                outbox::Outcome::Sent
            }
            Err(SendError::Temporary(reason)) if message.attempt < MAX_ATTEMPTS => {
                let retry_at = now_ms() + backoff_ms(message.attempt, &message.id);
                tracing::warn!(id = %message.id, attempt = message.attempt, %reason, "notification will be retried");
                outbox::Outcome::Retry(retry_at, reason)
            }
            Err(SendError::Later(reason, wait)) if message.attempt < MAX_ATTEMPTS => {
                // The receiver's word, but never sooner than a quarter of our first step.
                let wait = i64::try_from(wait.as_millis()).unwrap_or(MAX_BACKOFF_MS);
                let retry_at = now_ms() + wait.clamp(FIRST_BACKOFF_MS / 4, MAX_BACKOFF_MS);
                tracing::warn!(id = %message.id, attempt = message.attempt, %reason, "notification will be retried as asked");
                outbox::Outcome::Retry(retry_at, reason)
            }
            Err(e) => {
                tracing::error!(id = %message.id, error = %e, "notification failed");
                outbox::Outcome::Failed(e.to_string())
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
