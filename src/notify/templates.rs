//! Message templates: one per event and channel, in Italian, in `schema/notifications/`
//! (built in), each replaceable by a file of the same name in a folder the municipality
//! configures (`FASCICOLO_TEMPLATES_DIR`), read at start, without rebuilding.
//!
//! An e-mail is `NAME.subject.txt`, `NAME.txt` (plain text) and `NAME.html`; values come from
//! the message's payload.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{AutoEscape, Environment};

use crate::db::outbox::Claimed;

/// The built-in templates, by file name: every file of `schema/notifications/`.
macro_rules! built_in {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../schema/notifications/", $file)))),*]
    };
}

const BUILT_IN: &[(&str, &str)] = built_in![
    "_layout.html",
    "registration_activation.subject.txt",
    "registration_activation.txt",
    "registration_activation.html",
    "account_activation.subject.txt",
    "account_activation.txt",
    "account_activation.html",
    "dossier_submitted.subject.txt",
    "dossier_submitted.txt",
    "dossier_submitted.html",
    "dossier_submitted.sms.txt",
    "dossier_submitted.io.subject.txt",
    "dossier_submitted.io.md",
    "dossier_started.subject.txt",
    "dossier_started.txt",
    "dossier_started.html",
    "dossier_started.sms.txt",
    "dossier_started.io.subject.txt",
    "dossier_started.io.md",
    "integration_requested.subject.txt",
    "integration_requested.txt",
    "integration_requested.html",
    "integration_requested.sms.txt",
    "integration_requested.io.subject.txt",
    "integration_requested.io.md",
    "integration_received.subject.txt",
    "integration_received.txt",
    "integration_received.html",
    "integration_received.sms.txt",
    "integration_received.io.subject.txt",
    "integration_received.io.md",
    "dossier_concluded.subject.txt",
    "dossier_concluded.txt",
    "dossier_concluded.html",
    "dossier_concluded.sms.txt",
    "dossier_concluded.io.subject.txt",
    "dossier_concluded.io.md",
    "dossier_withdrawn.subject.txt",
    "dossier_withdrawn.txt",
    "dossier_withdrawn.html",
    "dossier_withdrawn.sms.txt",
    "dossier_withdrawn.io.subject.txt",
    "dossier_withdrawn.io.md",
    "delegation_granted.subject.txt",
    "delegation_granted.txt",
    "delegation_granted.html",
    "delegation_granted.sms.txt",
    "delegation_granted.io.subject.txt",
    "delegation_granted.io.md",
    "delegation_revoked.subject.txt",
    "delegation_revoked.txt",
    "delegation_revoked.html",
    "delegation_revoked.sms.txt",
    "delegation_revoked.io.subject.txt",
    "delegation_revoked.io.md",
    "deadline_digest.subject.txt",
    "deadline_digest.txt",
    "deadline_digest.html",
    "contact_confirmation.subject.txt",
    "contact_confirmation.txt",
    "contact_confirmation.html",
    "contact_confirmation.sms.txt",
    "sign_in_code.subject.txt",
    "sign_in_code.txt",
    "sign_in_code.html",
    "sign_in_code.sms.txt",
    "activation_link.subject.txt",
    "activation_link.txt",
    "activation_link.html",
];

/// An e-mail ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedEmail {
    /// One line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// An App IO message ready to send, within the lengths App IO accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedIo {
    /// 10–120 characters.
    pub subject: String,
    /// Markdown, 80–10,000 characters.
    pub markdown: String,
}

/// A template that is missing or does not render.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {reason}")]
pub struct TemplateError {
    name: String,
    reason: String,
}

/// The loaded templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `overrides`;
    /// every template sees `municipality`.
    pub fn load(overrides: Option<&Path>, municipality: &str) -> Result<Self, TemplateError> {
        let mut sources: BTreeMap<String, String> = BUILT_IN
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        if let Some(dir) = overrides {
            let entries = std::fs::read_dir(dir).map_err(|e| TemplateError {
                name: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if [".txt", ".html", ".md"].iter().any(|x| name.ends_with(x)) {
                    let text =
                        std::fs::read_to_string(entry.path()).map_err(|e| TemplateError {
                            name: name.clone(),
                            reason: e.to_string(),
                        })?;
                    sources.insert(name, text);
                }
            }
        }
        let mut env = Environment::new();
        // HTML parts escape every value; plain text, Markdown and subjects take them as they
        // are.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_global("municipality", municipality.to_owned());
        for (name, text) in sources {
            env.add_template_owned(name.clone(), text)
                .map_err(|e| TemplateError {
                    name,
                    reason: e.to_string(),
                })?;
        }
        Ok(Self { env })
    }

    fn render_one(&self, name: &str, message: &Claimed) -> Result<String, TemplateError> {
        let error = |e: minijinja::Error| TemplateError {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let template = self.env.get_template(name).map_err(error)?;
        let values = minijinja::Value::from(minijinja::value::Serde(&message.payload));
        template.render(values).map_err(error)
    }

    /// The first line of a rendered template, trimmed.
    fn line(&self, name: &str, message: &Claimed) -> Result<String, TemplateError> {
        Ok(self
            .render_one(name, message)?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    /// The e-mail for `message`.
    pub fn render(&self, message: &Claimed) -> Result<RenderedEmail, TemplateError> {
        let base = &message.template;
        Ok(RenderedEmail {
            subject: self.line(&format!("{base}.subject.txt"), message)?,
            text: self.render_one(&format!("{base}.txt"), message)?,
            html: self.render_one(&format!("{base}.html"), message)?,
        })
    }

    /// The SMS for `message`: one paragraph, its whitespace folded.
    pub fn render_sms(&self, message: &Claimed) -> Result<String, TemplateError> {
        let name = format!("{}.sms.txt", message.template);
        let text = self.render_one(&name, message)?;
        Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The App IO message for `message`, checked against App IO's lengths.
    pub fn render_io(&self, message: &Claimed) -> Result<RenderedIo, TemplateError> {
        let base = &message.template;
        let subject = self.line(&format!("{base}.io.subject.txt"), message)?;
        let markdown = self
            .render_one(&format!("{base}.io.md"), message)?
            .trim()
            .to_owned();
        let (s, m) = (subject.chars().count(), markdown.chars().count());
        if !(10..=120).contains(&s) || !(80..=10_000).contains(&m) {
            return Err(TemplateError {
                name: format!("{base}.io"),
                reason: format!(
                    "App IO takes a subject of 10-120 characters and a body of 80-10000; \
                     this one has {s} and {m}"
                ),
            });
        }
        Ok(RenderedIo { subject, markdown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(template: &str, channel: &str, payload: serde_json::Value) -> Claimed {
        Claimed {
            id: "m".into(),
            tenant: "t".into(),
            channel: channel.into(),
            recipient: "r".into(),
            template: template.into(),
            payload,
            attempt: 1,
        }
    }

    fn dossier_values() -> serde_json::Value {
        serde_json::json!({
            "name": "Giulia Neri", "relation": "applicant", "number": "2026/000042",
            "subject": "Ampliamento <b>veranda</b>", "procedure": "SCIA edilizia",
            "office": "Edilizia privata", "deadline_days": 30, "deadline_date": "05/01/2027",
            "filed_at": "06/12/2026 10:00", "at": "06/12/2026 11:00",
            "link": "https://sportello.example.it/pratiche/x", "note": "Nota pubblica",
            "missing_items": ["Planimetria", "Ricevuta"], "outcome": "approved",
            "outcome_text": "accolta", "professional_cf": "RSSMRA80A01H501U", "until": null,
            "channel": "online",
        })
    }

    #[test]
    fn every_event_renders_on_every_channel_within_app_io_lengths() {
        let templates = Templates::load(None, "Comune di Ciriè").expect("built-in templates");
        for event in crate::db::notices::Event::ALL {
            if event == crate::db::notices::Event::DeadlineDigest {
                continue;
            }
            for relation in ["applicant", "professional"] {
                let mut values = dossier_values();
                values["relation"] = relation.into();
                let m = message(event.as_str(), "email", values);
                let email = templates.render(&m).expect("e-mail");
                assert!(email.subject.contains("2026/000042"), "{}", email.subject);
                assert!(email.text.contains("Comune di Ciriè"));
                // Values are escaped in HTML and only there.
                if event == crate::db::notices::Event::DossierSubmitted {
                    assert!(email.html.contains("&lt;b&gt;veranda"), "{}", email.html);
                    assert!(email.text.contains("<b>veranda"));
                }
                let sms = templates.render_sms(&m).expect("sms");
                assert!(sms.contains("2026/000042"));
                // SMS carry no note and no subject line of the dossier.
                assert!(
                    !sms.contains("Nota pubblica") && !sms.contains("veranda"),
                    "{sms}"
                );
                let io = templates.render_io(&m).expect("app io");
                assert!(!io.markdown.contains("Nota pubblica"), "{}", io.markdown);
            }
        }
    }

    #[test]
    fn codes_render_by_email_and_sms() {
        let templates = Templates::load(None, "Comune di Ciriè").expect("built-in templates");
        for name in ["sign_in_code", "contact_confirmation"] {
            let m = message(
                name,
                "email",
                serde_json::json!({"name": "Giulia", "code": "12345678", "expires_at": "06/12/2026 10:30"}),
            );
            let email = templates.render(&m).expect("e-mail");
            assert!(email.text.contains("12345678") && email.html.contains("12345678"));
            let sms = templates.render_sms(&m).expect("sms");
            assert!(
                sms.contains("12345678") && sms.contains("Comune di Ciriè"),
                "{sms}"
            );
        }
    }

    #[test]
    fn a_missing_value_is_an_error_not_an_empty_message() {
        let templates = Templates::load(None, "Comune").expect("built-in templates");
        let m = message("dossier_started", "email", serde_json::json!({"name": "x"}));
        assert!(templates.render(&m).is_err());
    }
}
