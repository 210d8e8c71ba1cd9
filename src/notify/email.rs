//! E-mail over SMTP with `lettre`: STARTTLS or TLS and authentication as the URL says
//! (`smtp://user:password@host:587?tls=required`, `smtps://…:465`, `smtp://host:25` for a local
//! relay); a certified-mail (PEC) account is another SMTP account. Each message has a plain
//! text and an HTML part and a `Message-ID` derived from the notification, so a resend after
//! a crash is recognisable as the same message.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::SendError;
use super::templates::RenderedEmail;
use crate::db::outbox::Claimed;

/// Where e-mails go.
#[derive(Debug)]
enum Transport {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Standard output (`log:`), for trying the server (`serve --demo`) without a mail server.
    Print,
}

/// The SMTP channel.
#[derive(Debug)]
pub struct EmailChannel {
    transport: Transport,
    from: Mailbox,
    /// The right-hand side of every `Message-ID`: the sender's domain.
    id_domain: String,
}

impl EmailChannel {
    /// A channel sending through the server at `url` as `from` (`Name <address>`); `log:`
    /// prints each message on standard output instead.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let transport = if url == "log:" {
            Transport::Print
        } else {
            Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| format!("SMTP URL: {e}"))?
                    .timeout(Some(Duration::from_secs(30)))
                    .build(),
            )
        };
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("sender address {from:?}: {e}"))?;
        let id_domain = from.email.domain().to_owned();
        Ok(Self {
            transport,
            from,
            id_domain,
        })
    }

    /// The `Message-ID` of a notification: the same for every attempt.
    pub fn message_id(&self, notification: &str) -> String {
        format!("<{notification}@{}>", self.id_domain)
    }

    /// Sends one message.
    pub async fn send(&self, message: &Claimed, rendered: &RenderedEmail) -> Result<(), SendError> {
        let to: Mailbox = message
            .recipient
            .parse()
            .map_err(|e| SendError::Permanent(format!("recipient {:?}: {e}", message.recipient)))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject.clone())
            .message_id(Some(self.message_id(&message.id)))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("building the message: {e}")))?;
        let transport = match &self.transport {
            Transport::Smtp(t) => t,
            Transport::Print => {
                println!(
                    "\n--- e-mail to {} ---\nSubject: {}\n\n{}\n---",
                    message.recipient, rendered.subject, rendered.text
                );
                return Ok(());
            }
        };
        match transport.send(email).await {
            Ok(_) => Ok(()),
            // 5xx replies will be refused again; anything else (a refused connection, a
            // timeout, a 4xx reply) may pass later.
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Temporary(e.to_string())),
        }
    }
}
