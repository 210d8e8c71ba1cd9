//! App IO, the national app for public-service messages (PagoPA's "IO API for Public
//! Administration Services"): the recipient's profile is looked up by codice fiscale
//! (`POST /api/v1/profiles`), and if the service may write to them the message follows
//! (`POST /api/v1/messages`: subject, Markdown body, optional due date), each with the
//! service's key in `Ocp-Apim-Subscription-Key`. Only verified codici fiscali are sent
//! here (`db::notices`). A citizen without IO, or who blocked the service, is a permanent
//! failure; 429 and 5xx are retried.

use super::SendError;
use super::templates::RenderedIo;
use crate::db::outbox::Claimed;

/// The App IO channel.
#[derive(Debug)]
pub struct AppIoChannel {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl AppIoChannel {
    /// The API at `base` (without `/api/v1`), with the service's key.
    pub fn new(base: &str, key: &str) -> Result<Self, String> {
        base.parse::<reqwest::Url>()
            .map_err(|e| format!("App IO URL: {e}"))?;
        Ok(Self {
            client: super::http_client()?,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, SendError> {
        let response = self
            .client
            .post(format!("{}/api/v1/{path}", self.base))
            .header("Ocp-Apim-Subscription-Key", &self.key)
            .json(body)
            .send()
            .await
            .map_err(|e| SendError::Temporary(format!("App IO: {e}")))?;
        let body = super::http_outcome("App IO", response).await?;
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// Sends `rendered` to the codice fiscale `message.recipient`.
    pub async fn send(&self, message: &Claimed, rendered: &RenderedIo) -> Result<(), SendError> {
        let fiscal_code = &message.recipient;
        let profile = self
            .post("profiles", &serde_json::json!({"fiscal_code": fiscal_code}))
            .await
            .map_err(|e| match e {
                SendError::Permanent(reason) if reason.contains("404") => {
                    SendError::Permanent("the recipient does not use App IO".into())
                }
                other => other,
            })?;
        if profile.get("sender_allowed") != Some(&serde_json::Value::Bool(true)) {
            return Err(SendError::Permanent(
                "the recipient does not accept messages from this service on App IO".into(),
            ));
        }
        let mut content = serde_json::json!({
            "subject": rendered.subject,
            "markdown": rendered.markdown,
        });
        if let Some(due) = message.payload.get("due_date").and_then(|d| d.as_str()) {
            content["due_date"] = due.into();
        }
        self.post(
            "messages",
            &serde_json::json!({"fiscal_code": fiscal_code, "content": content}),
        )
        .await
        .map(drop)
    }
}
