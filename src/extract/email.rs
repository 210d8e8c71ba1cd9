//! E-mail (`.eml`), ordinary or certified (PEC), read with `mail-parser`: the headers (from,
//! to, date, subject), the text body (or the HTML body as text), and every attachment
//! extracted by the extractor of its own type and indexed as part of the e-mail, recursively
//! (a PEC envelope holds the original message as `postacert.eml`). The attachments are listed
//! in the metadata with how each was read; a PEC's `daticert.xml` gives the certified sender
//! and the delivery data.

use mail_parser::MimeHeaders;
use quick_xml::events::Event;
use serde_json::{Value, json};

use super::{ExtractError, Extracted, Limits, push_capped};

/// Attachments read per message; the rest are counted, not read.
const MAX_ATTACHMENTS: usize = 200;
/// Messages inside messages.
const MAX_DEPTH: u32 = 4;

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    list.map(|a| {
        a.iter()
            .map(|addr| {
                let email = addr.address().unwrap_or_default();
                match addr.name() {
                    Some(name) if !name.is_empty() => format!("{name} <{email}>"),
                    _ => email.to_owned(),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Extracts an e-mail's text and metadata.
pub fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let mut text = String::new();
    let mut count = 0;
    let mut truncated = false;
    let meta = message(bytes, limits, 0, &mut |piece: &str| {
        if !truncated && !push_capped(&mut text, &mut count, piece, limits.max_chars) {
            truncated = true;
        }
    })?;
    Ok(Extracted {
        pages: None,
        text,
        truncated,
        encoding: None,
        method: Some("email".to_owned()),
        meta: Some(meta),
        ocr_pages: Vec::new(),
        content: None,
    })
}

/// Reads one message, handing its text to `out`; returns its metadata.
fn message(
    bytes: &[u8],
    limits: &Limits,
    depth: u32,
    out: &mut dyn FnMut(&str),
) -> Result<Value, ExtractError> {
    let parsed = mail_parser::MessageParser::default()
        .parse(bytes)
        .filter(|m| m.headers().iter().any(|h| !h.name().is_empty()))
        .ok_or_else(|| ExtractError::Email("not an e-mail message".to_owned()))?;
    let from = addresses(parsed.from());
    let to = addresses(parsed.to());
    let cc = addresses(parsed.cc());
    let subject = parsed.subject().unwrap_or_default().to_owned();
    let date = parsed.date().map(|d| d.to_rfc3339());
    let mut head = String::new();
    for (label, value) in [
        ("Da", from.join(", ")),
        ("A", to.join(", ")),
        ("Cc", cc.join(", ")),
        ("Data", date.clone().unwrap_or_default()),
        ("Oggetto", subject.clone()),
    ] {
        if !value.is_empty() {
            head.push_str(&format!("{label}: {value}\n"));
        }
    }
    out(&head);
    if let Some(body) = parsed.body_text(0) {
        out("\n");
        out(&body);
        out("\n");
    }
    let mut attachments = Vec::new();
    let mut pec = Value::Null;
    let total = parsed.attachment_count();
    for (i, part) in parsed.attachments().enumerate() {
        if i >= MAX_ATTACHMENTS {
            break;
        }
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("allegato-{}", i + 1));
        let declared = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(sub) => format!("{}/{}", c.ctype(), sub),
                None => c.ctype().to_owned(),
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        let contents = part.contents();
        let media_type = if declared == "message/rfc822" || part.message().is_some() {
            "message/rfc822"
        } else {
            crate::domain::judge_media_type(contents, Some(&declared), &name)
        };
        let mut record = json!({
            "name": name,
            "media_type": media_type,
            "size": contents.len(),
        });
        if name.eq_ignore_ascii_case("daticert.xml") {
            pec = daticert(contents);
        }
        out(&format!("\n--- Allegato: {name} ---\n"));
        let outcome = if media_type == "message/rfc822" {
            if depth + 1 >= MAX_DEPTH {
                Err(ExtractError::Email(format!(
                    "messages nested past {MAX_DEPTH} levels"
                )))
            } else {
                message(contents, limits, depth + 1, out).map(|inner| {
                    record["message"] = inner;
                })
            }
        } else {
            super::extract(contents, media_type, limits).map(|extracted| {
                out(&extracted.text);
                out("\n");
                if let Some(method) = extracted.method {
                    record["method"] = method.into();
                }
            })
        };
        match outcome {
            Ok(()) => record["status"] = "done".into(),
            Err(e) => {
                record["status"] = "failed".into();
                record["reason"] = e.to_string().into();
            }
        }
        attachments.push(record);
    }
    let mut meta = json!({
        "from": from,
        "to": to,
        "subject": subject,
        "date": date,
        "attachments": attachments,
    });
    if !cc.is_empty() {
        meta["cc"] = cc.into();
    }
    if total > MAX_ATTACHMENTS {
        meta["attachments_not_read"] = (total - MAX_ATTACHMENTS).into();
    }
    if !pec.is_null() {
        meta["pec"] = pec;
    }
    Ok(meta)
}

/// The delivery data of a PEC (`daticert.xml`, DPR 68/2005): its kind, the certified sender,
/// the recipients, the provider, the date and the message's identifier.
fn daticert(xml: &[u8]) -> Value {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut out = json!({});
    let mut recipients: Vec<String> = Vec::new();
    let mut date = (String::new(), String::new());
    while let Ok(event) = reader.read_event_into(&mut buf) {
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "postacert" {
                    for a in e.attributes().flatten() {
                        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
                        let value = String::from_utf8_lossy(&a.value).into_owned();
                        if key == "tipo" || key == "errore" {
                            out[key] = value.into();
                        }
                    }
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.decode().map(|c| c.trim().to_owned()).unwrap_or_default();
                if text.is_empty() {
                    continue;
                }
                match path.last().map(String::as_str) {
                    Some("mittente") => out["sender"] = text.into(),
                    Some("destinatari") => recipients.push(text),
                    Some("oggetto") => out["subject"] = text.into(),
                    Some("gestore-emittente") => out["provider"] = text.into(),
                    Some("giorno") => date.0 = text,
                    Some("ora") => date.1 = text,
                    Some("identificativo") => out["id"] = text.into(),
                    Some("msgid") => out["message_id"] = text.into(),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !recipients.is_empty() {
        out["recipients"] = recipients.into();
    }
    if !date.0.is_empty() {
        out["date"] = format!("{} {}", date.0, date.1).trim().to_owned().into();
    }
    out
}
