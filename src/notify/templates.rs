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

/// The built-in templates, by file name.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "registration_activation.subject.txt",
        include_str!("../../schema/notifications/registration_activation.subject.txt"),
    ),
    (
        "registration_activation.txt",
        include_str!("../../schema/notifications/registration_activation.txt"),
    ),
    (
        "registration_activation.html",
        include_str!("../../schema/notifications/registration_activation.html"),
    ),
    (
        "account_activation.subject.txt",
        include_str!("../../schema/notifications/account_activation.subject.txt"),
    ),
    (
        "account_activation.txt",
        include_str!("../../schema/notifications/account_activation.txt"),
    ),
    (
        "account_activation.html",
        include_str!("../../schema/notifications/account_activation.html"),
    ),
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
    /// The built-in templates, each replaced by the file of the same name in `overrides`.
    pub fn load(overrides: Option<&Path>) -> Result<Self, TemplateError> {
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
                if name.ends_with(".txt") || name.ends_with(".html") {
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
        // HTML parts escape every value; plain text and subjects take them as they are.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
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

    /// The e-mail for `message`.
    pub fn render(&self, message: &Claimed) -> Result<RenderedEmail, TemplateError> {
        let base = &message.template;
        Ok(RenderedEmail {
            subject: self
                .render_one(&format!("{base}.subject.txt"), message)?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            text: self.render_one(&format!("{base}.txt"), message)?,
            html: self.render_one(&format!("{base}.html"), message)?,
        })
    }
}
