//! Timestamped envelopes, as Italian signing tools write them: `.tsd` (RFC 5544
//! `TimeStampedData`: the file, usually a `.p7m`, with its time-stamp tokens) and `.m7m` (a
//! MIME message holding the `.p7m` and the time-stamp authority's reply). The file inside is
//! read by the extractor of its own type (a `.p7m` is unwrapped and its signatures verified);
//! each time stamp is described: the time, the authority, its serial number, whether its
//! message imprint matches the file, and whether the authority's signature verifies.
//!
//! The structures are RustCrypto's: `cms` for the token (a signed-data envelope, verified as
//! [`super::cades`] verifies a signature), `x509-tsp` for `TSTInfo` and the reply; `der`
//! reads the fields of `TimeStampedData` one element at a time.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use mail_parser::MimeHeaders;
use serde_json::{Value, json};
use sha2::Digest;

use super::cades::{open_envelope, signed_error};
use super::{ExtractError, Extracted, Limits};

/// `id-ct-timestampedData` (RFC 5544).
const ID_TIMESTAMPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.31");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// Time stamps read from one envelope.
const MAX_TOKENS: usize = 16;

/// Reads a `.tsd`: its content and time stamps.
pub fn extract_tsd(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let der = super::cades::envelope_der(bytes)?;
    let info = cms::content_info::ContentInfo::from_der(&der).map_err(signed_error)?;
    if info.content_type != ID_TIMESTAMPED_DATA {
        return Err(signed_error(format!(
            "content type {} is not time-stamped data",
            info.content_type
        )));
    }
    let body = info.content.value();
    let mut reader = SliceReader::new(body).map_err(signed_error)?;
    let mut content: Option<Vec<u8>> = None;
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    while !reader.is_finished() {
        let element: der::asn1::AnyRef<'_> = reader.decode().map_err(signed_error)?;
        match element.tag() {
            Tag::OctetString => content = Some(element.value().to_vec()),
            // temporalEvidence: tstEvidence [0] IMPLICIT SEQUENCE OF TimeStampAndCRL.
            Tag::ContextSpecific { number, .. } if number == TagNumber::N0 => {
                let mut list = SliceReader::new(element.value()).map_err(signed_error)?;
                while !list.is_finished() && tokens.len() < MAX_TOKENS {
                    let pair: der::asn1::AnyRef<'_> = list.decode().map_err(signed_error)?;
                    let mut fields = SliceReader::new(pair.value()).map_err(signed_error)?;
                    let token: der::asn1::AnyRef<'_> = fields.decode().map_err(signed_error)?;
                    tokens.push(token.to_der().map_err(signed_error)?);
                }
            }
            // version, dataUri, metaData: nothing to read.
            _ => {}
        }
    }
    let content = content.ok_or_else(|| {
        signed_error("the file is not inside the envelope (only a reference to it)")
    })?;
    read(content, &tokens, "tsd", limits)
}

/// Reads a `.m7m`: the `.p7m` part and the time-stamp reply beside it.
pub fn extract_m7m(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let message = mail_parser::MessageParser::default()
        .parse(bytes)
        .ok_or_else(|| signed_error("not a MIME message"))?;
    let mut signed = None;
    let mut tokens = Vec::new();
    for part in message.parts.iter() {
        let kind = part
            .content_type()
            .map(|c| {
                format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()).to_ascii_lowercase()
            })
            .unwrap_or_default();
        let name = part
            .attachment_name()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let body = part.contents();
        if kind.contains("timestamp") || name.ends_with(".tsr") || name.ends_with(".tst") {
            if tokens.len() < MAX_TOKENS {
                tokens.push(token_of_reply(body)?);
            }
        } else if kind.contains("pkcs7") || name.ends_with(".p7m") {
            signed = Some(body.to_vec());
        }
    }
    let signed = signed.ok_or_else(|| signed_error("no signed file (.p7m) in the envelope"))?;
    read(signed, &tokens, "m7m", limits)
}

/// A time-stamp token, from a reply (`TimeStampResp`) or given as it is.
fn token_of_reply(body: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let der = super::cades::envelope_der(body)?;
    if let Ok(reply) = x509_tsp::TimeStampResp::from_der(&der) {
        let token = reply
            .time_stamp_token
            .ok_or_else(|| signed_error("the time-stamp reply holds no token"))?;
        return token.to_der().map_err(signed_error);
    }
    Ok(der)
}

/// The content read by its own extractor, with the time stamps described.
fn read(
    content: Vec<u8>,
    tokens: &[Vec<u8>],
    format: &str,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    let stamps: Vec<Value> = tokens.iter().map(|t| stamp(t, &content)).collect();
    let media_type = crate::domain::sniff_media_type(&content);
    if media_type == "application/timestamped-data" {
        return Err(signed_error("a time-stamped envelope inside another"));
    }
    let mut inner = super::extract(&content, media_type, limits)?;
    let mut meta = match inner.meta.take() {
        Some(Value::Object(m)) => Value::Object(m),
        _ => json!({}),
    };
    meta["timestamped"] = json!({
        "format": format,
        "timestamps": stamps,
        "chain_checked": false,
    });
    if media_type != "application/pkcs7-mime" {
        // The content is kept to be read alone, as a signed file's is.
        meta["content"] = json!({
            "media_type": media_type,
            "size": content.len(),
            "sha256": crate::domain::ContentHash::of(&content).to_string(),
            "kept": content.len() <= super::cades::MAX_KEPT_CONTENT,
            "method": inner.method,
        });
        if content.len() <= super::cades::MAX_KEPT_CONTENT {
            inner.content = Some(content);
        }
    }
    inner.meta = Some(meta);
    inner.method = Some(match inner.method.as_deref() {
        Some("signed") => "signed+timestamped".to_owned(),
        _ => "timestamped".to_owned(),
    });
    Ok(inner)
}

/// One time stamp: when, by whom, and whether it holds for `content`.
fn stamp(token: &[u8], content: &[u8]) -> Value {
    let mut out = json!({});
    let (signers, info) = match open_envelope(token, None) {
        Ok(opened) => opened,
        Err(e) => {
            out["status"] = "invalid".into();
            out["reason"] = e.to_string().into();
            return out;
        }
    };
    let info = match x509_tsp::TstInfo::from_der(&info) {
        Ok(info) => info,
        Err(e) => {
            out["status"] = "invalid".into();
            out["reason"] = format!("unreadable TSTInfo: {e}").into();
            return out;
        }
    };
    let ms = i64::try_from(info.gen_time.to_unix_duration().as_millis()).unwrap_or(i64::MAX);
    out["time"] = super::cades::rfc3339(ms).into();
    out["serial"] = hex::encode(info.serial_number.as_bytes()).into();
    let authority = signers.first();
    out["authority"] = authority
        .and_then(|s| s["name"].as_str().map(str::to_owned))
        .or_else(|| tsa_name(&info))
        .into();
    let imprint = info.message_imprint.hashed_message.as_bytes();
    let algorithm = info.message_imprint.hash_algorithm.oid;
    let matches = if algorithm == ID_SHA256 {
        Some(sha2::Sha256::digest(content).as_slice() == imprint)
    } else if algorithm == ID_SHA512 {
        Some(sha2::Sha512::digest(content).as_slice() == imprint)
    } else {
        None
    };
    let verified = authority.is_some_and(|s| s["status"] == "valid");
    match (matches, verified) {
        (Some(true), true) => out["status"] = "valid".into(),
        (Some(false), _) => {
            out["status"] = "invalid".into();
            out["reason"] = "the time stamp is for other bytes: the file was changed".into();
        }
        (None, _) => {
            out["status"] = "invalid".into();
            out["reason"] = format!("hash algorithm {algorithm} is not supported").into();
        }
        (Some(true), false) => {
            out["status"] = "invalid".into();
            out["reason"] = authority
                .and_then(|s| s["reason"].as_str())
                .unwrap_or("the authority's signature does not verify")
                .into();
        }
    }
    out
}

/// The authority's name as the token states it (`tsa`, a directory name's CN).
fn tsa_name(info: &x509_tsp::TstInfo) -> Option<String> {
    match info.tsa.as_ref()? {
        x509_cert::ext::pkix::name::GeneralName::DirectoryName(name) => {
            super::cades::name_part(name, super::cades::CN)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element: tag, definite length (short or long form), value.
    fn der(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if value.len() < 0x80 {
            out.push(value.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn tsd(content: &[u8]) -> Vec<u8> {
        let oid = ID_TIMESTAMPED_DATA.to_der().expect("oid");
        let mut body = der(0x02, &[1]);
        body.extend(der(0x04, content));
        let mut info = oid;
        info.extend(der(0xa0, &der(0x30, &body)));
        der(0x30, &info)
    }

    #[test]
    fn an_envelope_of_text_without_time_stamps_is_read_and_says_so() {
        let out = extract_tsd(&tsd(b"verbale di collaudo"), &Limits::default()).expect("read");
        assert_eq!(out.text, "verbale di collaudo");
        assert_eq!(out.method.as_deref(), Some("timestamped"));
        let meta = out.meta.expect("meta");
        assert_eq!(
            meta["timestamped"]["timestamps"].as_array().map(Vec::len),
            Some(0)
        );
        assert_eq!(meta["content"]["media_type"], "text/plain");
    }

    #[test]
    fn hostile_envelopes_are_refused() {
        let limits = Limits::default();
        // An envelope inside an envelope, a token that is not one, truncated DER.
        assert!(extract_tsd(&tsd(&tsd(b"x")), &limits).is_err());
        let oid = ID_TIMESTAMPED_DATA.to_der().expect("oid");
        let mut body = der(0x02, &[1]);
        body.extend(der(0x04, b"testo"));
        body.extend(der(0xa0, &der(0x30, &der(0x30, b"\x05\x00"))));
        let mut info = oid;
        info.extend(der(0xa0, &der(0x30, &body)));
        let bad_token = extract_tsd(&der(0x30, &info), &limits).expect("the text is read");
        let stamp = &bad_token.meta.expect("meta")["timestamped"]["timestamps"][0];
        assert_eq!(stamp["status"], "invalid", "{stamp}");
        assert!(extract_tsd(&tsd(b"x")[..10], &limits).is_err());
        assert!(extract_m7m(b"MIME-Version: 1.0\r\n\r\nniente", &limits).is_err());
    }
}
