//! SMS through an HTTP gateway. Italian providers differ only in the URL, the authentication
//! header and the body, so all three are configuration: the body is a template over `to`,
//! `text`, `reference` (the notification's id, the gateway's client reference, so a resend
//! is recognisable) and `sender`. A 2xx answer is sent; 429 and 5xx are retried, honouring
//! `Retry-After`; any other answer is a permanent failure.

use std::time::Duration;

use minijinja::Environment;

use super::SendError;
use crate::db::outbox::Claimed;

/// The body when none is configured: JSON.
pub const DEFAULT_BODY: &str = r#"{"to": {{ to|tojson }}, "text": {{ text|tojson }}, "sender": {{ sender|tojson }}, "reference": {{ reference|tojson }}}"#;

/// The SMS channel.
#[derive(Debug)]
pub struct SmsChannel {
    client: reqwest::Client,
    url: reqwest::Url,
    header: Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    body: Environment<'static>,
    sender: String,
}

impl SmsChannel {
    /// A gateway at `url`, with `auth_header` (`Name: value`) and a `body` template.
    pub fn new(
        url: &str,
        auth_header: Option<&str>,
        body: &str,
        sender: &str,
    ) -> Result<Self, String> {
        let url: reqwest::Url = url.parse().map_err(|e| format!("SMS gateway URL: {e}"))?;
        let header = auth_header
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .ok_or("the SMS gateway's header is `Name: value`")?;
                Ok::<_, String>((
                    name.trim()
                        .parse::<reqwest::header::HeaderName>()
                        .map_err(|e| format!("SMS header name: {e}"))?,
                    value
                        .trim()
                        .parse::<reqwest::header::HeaderValue>()
                        .map_err(|e| format!("SMS header value: {e}"))?,
                ))
            })
            .transpose()?;
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned("body", body.to_owned())
            .map_err(|e| format!("SMS body template: {e}"))?;
        Ok(Self {
            client: super::http_client()?,
            url,
            header,
            body: env,
            sender: sender.to_owned(),
        })
    }

    /// Sends `text` for `message`.
    pub async fn send(&self, message: &Claimed, text: &str) -> Result<(), SendError> {
        let body = self
            .body
            .get_template("body")
            .and_then(|t| {
                t.render(minijinja::context! {
                    to => &message.recipient, text => text, reference => &message.id,
                    sender => &self.sender,
                })
            })
            .map_err(|e| SendError::Permanent(format!("SMS body: {e}")))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type(&body))
            .body(body);
        if let Some((name, value)) = &self.header {
            request = request.header(name.clone(), value.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| SendError::Temporary(format!("SMS gateway: {e}")))?;
        super::http_outcome("SMS gateway", response).await.map(drop)
    }
}

/// JSON when the body looks like it, a form otherwise.
fn content_type(body: &str) -> &'static str {
    if body.trim_start().starts_with(['{', '[']) {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    }
}

/// How long to wait, from a `Retry-After` header (seconds or an HTTP date).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    Some(Duration::from_millis(
        u64::try_from(at.as_millisecond() - now.as_millisecond()).unwrap_or(0),
    ))
}
