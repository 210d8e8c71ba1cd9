//! CAdES envelopes (`.p7m`, DER or Base64, attached content, nested): the signed content is
//! unwrapped and read by the extractor of its own type, recursively, and each signature is
//! verified — the message digest against the content, and the signature over the signed
//! attributes with the signer's certificate (RSA with SHA-256, what Italian qualified
//! signatures use, or ECDSA on P-256 with SHA-256). Each signer is described: name, codice
//! fiscale (the certificate's `serialNumber`, `TINIT-` prefix), issuer, signing time, whether
//! the certificate was valid then, and `valid` or `invalid` with the reason. The chain up to the EU trusted lists is
//! not checked, and the metadata says so.
//!
//! Parsing is RustCrypto's `cms` and `x509-cert`. Italian signing tools often write BER with
//! indefinite lengths, which `der` refuses; [`ber_to_der`] rewrites them as definite lengths
//! first, bounded in depth and size.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::Digest;

use super::{ExtractError, Extracted, Limits};

/// Envelopes inside envelopes read before giving up.
const MAX_NESTING: u32 = 8;
/// Depth of BER structures rewritten.
const MAX_BER_DEPTH: u32 = 64;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(super) const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
pub(super) const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

pub(super) fn signed_error(reason: impl std::fmt::Display) -> ExtractError {
    ExtractError::Signed(super::short(&reason.to_string()))
}

/// The envelope's DER: as it is, from Base64 (with or without PEM armour), and with BER's
/// indefinite lengths made definite.
pub(super) fn envelope_der(bytes: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let raw = if bytes.first() == Some(&0x30) {
        bytes.to_vec()
    } else {
        use base64::Engine;
        let text: String = String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| signed_error(format!("neither DER nor Base64: {e}")))?
    };
    let mut out = Vec::with_capacity(raw.len());
    let used = ber_to_der(&raw, 0, &mut out)?;
    if used == 0 {
        return Err(signed_error("empty envelope"));
    }
    Ok(out)
}

/// Reads a BER length at `input[at..]`: `Some(n)` definite, `None` indefinite; returns it
/// and the bytes it took.
fn ber_length(input: &[u8], at: usize) -> Result<(Option<usize>, usize), ExtractError> {
    let first = *input
        .get(at)
        .ok_or_else(|| signed_error("truncated length"))?;
    if first < 0x80 {
        return Ok((Some(usize::from(first)), 1));
    }
    if first == 0x80 {
        return Ok((None, 1));
    }
    let count = usize::from(first & 0x7f);
    if count > 4 {
        return Err(signed_error("length too long"));
    }
    let mut n = 0usize;
    for i in 0..count {
        n = (n << 8)
            | usize::from(
                *input
                    .get(at + 1 + i)
                    .ok_or_else(|| signed_error("truncated length"))?,
            );
    }
    Ok((Some(n), 1 + count))
}

fn der_length(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Rewrites the BER element at the start of `input` as DER into `out` (definite lengths,
/// constructed OCTET STRINGs joined into one); returns the bytes of `input` it took.
fn ber_to_der(input: &[u8], depth: u32, out: &mut Vec<u8>) -> Result<usize, ExtractError> {
    if depth > MAX_BER_DEPTH {
        return Err(signed_error("structures nested too deep"));
    }
    let mut at = 0;
    let first = *input
        .first()
        .ok_or_else(|| signed_error("truncated element"))?;
    let mut tag = vec![first];
    at += 1;
    if first & 0x1f == 0x1f {
        loop {
            let b = *input.get(at).ok_or_else(|| signed_error("truncated tag"))?;
            tag.push(b);
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            if tag.len() > 5 {
                return Err(signed_error("tag too long"));
            }
        }
    }
    let constructed = first & 0x20 != 0;
    let (length, took) = ber_length(input, at)?;
    at += took;
    if !constructed {
        let n = length.ok_or_else(|| signed_error("indefinite length on a primitive"))?;
        let body = input
            .get(at..at + n)
            .ok_or_else(|| signed_error("truncated content"))?;
        out.extend_from_slice(&tag);
        der_length(n, out);
        out.extend_from_slice(body);
        return Ok(at + n);
    }
    // Children, rewritten one by one.
    let mut children = Vec::new();
    let end = match length {
        Some(n) => {
            let end = at + n;
            if end > input.len() {
                return Err(signed_error("truncated content"));
            }
            while at < end {
                at += ber_to_der(&input[at..end], depth + 1, &mut children)?;
            }
            end
        }
        None => loop {
            if input.get(at..at + 2) == Some(&[0, 0]) {
                break at + 2;
            }
            if at >= input.len() {
                return Err(signed_error("unterminated indefinite length"));
            }
            at += ber_to_der(&input[at..], depth + 1, &mut children)?;
        },
    };
    if tag == [0x24] {
        // A constructed OCTET STRING: DER has only the primitive form, its pieces joined.
        let mut joined = Vec::new();
        let mut i = 0;
        while i < children.len() {
            let (n, took) = ber_length(&children, i + 1)?;
            let n = n.ok_or_else(|| signed_error("indefinite piece"))?;
            let start = i + 1 + took;
            joined.extend_from_slice(
                children
                    .get(start..start + n)
                    .ok_or_else(|| signed_error("truncated piece"))?,
            );
            i = start + n;
        }
        out.push(0x04);
        der_length(joined.len(), out);
        out.extend_from_slice(&joined);
    } else {
        out.extend_from_slice(&tag);
        der_length(children.len(), out);
        out.extend_from_slice(&children);
    }
    Ok(end)
}

/// A name's attribute `oid` as text.
pub(super) fn name_part(name: &x509_cert::name::Name, oid: ObjectIdentifier) -> Option<String> {
    name.0.iter().flat_map(|rdn| rdn.0.iter()).find_map(|atv| {
        (atv.oid == oid).then(|| String::from_utf8_lossy(atv.value.value()).into_owned())
    })
}

fn unix_ms(t: &x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// One signer, verified.
fn signer(
    info: &cms::signed_data::SignerInfo,
    certificates: &[x509_cert::Certificate],
    content: &[u8],
) -> Value {
    let certificate = match &info.sid {
        cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(id) => {
            certificates.iter().find(|c| {
                c.tbs_certificate.serial_number == id.serial_number
                    && c.tbs_certificate.issuer == id.issuer
            })
        }
        cms::signed_data::SignerIdentifier::SubjectKeyIdentifier(_) => certificates.first(),
    };
    let mut out = json!({});
    let mut invalid: Option<String> = None;
    let mut signing_ms = None;
    if let Some(attrs) = &info.signed_attrs {
        for attr in attrs.iter() {
            let Some(value) = attr.values.iter().next() else {
                continue;
            };
            if attr.oid == ID_SIGNING_TIME
                && let Ok(der) = value.to_der()
                && let Ok(t) = x509_cert::time::Time::from_der(&der)
            {
                signing_ms = Some(unix_ms(&t));
            }
        }
    }
    if let Some(ms) = signing_ms {
        out["signing_time"] = rfc3339(ms).into();
    }
    match certificate {
        None => invalid = Some("the signer's certificate is not in the envelope".into()),
        Some(cert) => {
            let tbs = &cert.tbs_certificate;
            out["name"] = name_part(&tbs.subject, CN).into();
            if let Some(serial) = name_part(&tbs.subject, SERIAL_NUMBER) {
                out["codice_fiscale"] = serial.strip_prefix("TINIT-").unwrap_or(&serial).into();
            }
            out["issuer"] = name_part(&tbs.issuer, CN)
                .or_else(|| name_part(&tbs.issuer, ORGANIZATION))
                .into();
            let (from, until) = (
                unix_ms(&tbs.validity.not_before),
                unix_ms(&tbs.validity.not_after),
            );
            out["certificate_valid_from"] = rfc3339(from).into();
            out["certificate_valid_until"] = rfc3339(until).into();
            if let Some(at) = signing_ms {
                out["certificate_valid_at_signing"] = (from <= at && at <= until).into();
            }
            if let Err(reason) = verify(info, cert, content) {
                invalid = Some(reason);
            }
        }
    }
    match invalid {
        None => out["status"] = "valid".into(),
        Some(reason) => {
            out["status"] = "invalid".into();
            out["reason"] = reason.into();
        }
    }
    out
}

/// Checks the message digest and the signature over the signed attributes.
fn verify(
    info: &cms::signed_data::SignerInfo,
    cert: &x509_cert::Certificate,
    content: &[u8],
) -> Result<(), String> {
    if info.digest_alg.oid != ID_SHA256 {
        return Err(format!(
            "digest algorithm {} is not supported",
            info.digest_alg.oid
        ));
    }
    let digest = sha2::Sha256::digest(content);
    let attrs = info
        .signed_attrs
        .as_ref()
        .ok_or("no signed attributes (not CAdES)")?;
    let declared = attrs
        .iter()
        .find(|a| a.oid == ID_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .ok_or("no message digest among the signed attributes")?;
    if declared.value() != digest.as_slice() {
        return Err(
            "the content does not match its signed digest: it was changed after signing".into(),
        );
    }
    let algorithm = info.signature_algorithm.oid;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    let signed = attrs.to_der().map_err(|e| e.to_string())?;
    let failed = |_| "the signature does not verify with the signer's certificate".to_owned();
    if algorithm == RSA_ENCRYPTION || algorithm == SHA256_WITH_RSA {
        let key = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&spki)
            .map_err(|e| format!("the certificate's key: {e}"))?;
        let signature = rsa::pkcs1v15::Signature::try_from(info.signature.as_bytes())
            .map_err(|e| format!("signature: {e}"))?;
        rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key)
            .verify(&signed, &signature)
            .map_err(failed)
    } else if algorithm == ECDSA_WITH_SHA256 || algorithm == EC_PUBLIC_KEY {
        let key =
            <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(&spki)
                .map_err(|e| format!("the certificate's key (a P-256 key expected): {e}"))?;
        let signature = p256::ecdsa::Signature::from_der(info.signature.as_bytes())
            .map_err(|e| format!("signature: {e}"))?;
        key.verify(&signed, &signature).map_err(failed)
    } else {
        Err(format!("signature algorithm {algorithm} is not supported"))
    }
}

/// Opens one envelope: its signers, verified against its content (inside it, or `detached`
/// when the envelope only signs it, as a PDF's signature does), and that content.
pub(super) fn open_envelope(
    envelope: &[u8],
    detached: Option<&[u8]>,
) -> Result<(Vec<Value>, Vec<u8>), ExtractError> {
    let der = envelope_der(envelope)?;
    let info = cms::content_info::ContentInfo::from_der(&der).map_err(signed_error)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(signed_error(format!(
            "content type {} is not signed data",
            info.content_type
        )));
    }
    let signed: cms::signed_data::SignedData = info.content.decode_as().map_err(signed_error)?;
    let content = match (&signed.encap_content_info.econtent, detached) {
        (_, Some(detached)) => detached.to_vec(),
        (Some(inside), None) => inside.value().to_vec(),
        (None, None) => {
            return Err(signed_error(
                "a detached signature: the signed file is not inside",
            ));
        }
    };
    let certificates: Vec<x509_cert::Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(cert) => Some(cert.clone()),
            _ => None,
        })
        .collect();
    let signers = signed
        .signer_infos
        .0
        .iter()
        .map(|s| signer(s, &certificates, &content))
        .collect();
    Ok((signers, content))
}

/// Opens an envelope and those nested inside it, verifying every signature: the signers of
/// each envelope, outermost first, and the signed content.
fn unwrap_all(bytes: &[u8]) -> Result<(Vec<Value>, Vec<u8>), ExtractError> {
    let mut envelopes = Vec::new();
    let mut content = bytes.to_vec();
    loop {
        if envelopes.len() as u32 >= MAX_NESTING {
            return Err(signed_error(format!("envelopes nested past {MAX_NESTING}")));
        }
        let (signers, inner) = open_envelope(&content, None)?;
        envelopes.push(json!({"signers": signers}));
        content = inner;
        let kind = crate::domain::sniff_media_type(&content);
        if kind != "application/pkcs7-mime" && !looks_like_base64_envelope(&content) {
            return Ok((envelopes, content));
        }
    }
}

/// The signed content inside an envelope (and those nested in it), with its media type.
pub fn signed_content(bytes: &[u8]) -> Result<(Vec<u8>, &'static str), ExtractError> {
    let (_, content) = unwrap_all(bytes)?;
    let media_type = crate::domain::sniff_media_type(&content);
    Ok((content, media_type))
}

/// The largest signed content kept beside its envelope, to be read and downloaded alone.
pub const MAX_KEPT_CONTENT: usize = 64 * 1024 * 1024;

/// Unwraps an envelope (and those inside it), verifies every signature, and extracts the
/// signed content.
pub fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let (envelopes, content) = unwrap_all(bytes)?;
    let media_type = crate::domain::sniff_media_type(&content);
    let inner = super::extract(&content, media_type, limits)?;
    let signers: Vec<Value> = envelopes
        .iter()
        .flat_map(|e| e["signers"].as_array().cloned().unwrap_or_default())
        .collect();
    let kept = content.len() <= MAX_KEPT_CONTENT;
    let meta = json!({
        "signed": true,
        "signers": signers,
        "envelopes": envelopes.len(),
        "chain_checked": false,
        "content": {
            "media_type": media_type,
            "size": content.len(),
            "sha256": crate::domain::ContentHash::of(&content).to_string(),
            "kept": kept,
            "method": inner.method,
            "meta": inner.meta,
        },
    });
    Ok(Extracted {
        pages: inner.pages,
        text: inner.text,
        truncated: inner.truncated,
        encoding: inner.encoding,
        method: Some("signed".to_owned()),
        meta: Some(meta),
        // A signed scan: OCR unwraps the envelope again and reads the content's pages.
        ocr_pages: inner.ocr_pages,
        content: kept.then_some(content),
    })
}

/// The signatures of a PDF (PAdES): each signature dictionary's byte ranges, their digest
/// checked by the detached CMS envelope in `/Contents`, its signers; and whether bytes were
/// added after the last signature (an incremental update that no signature covers).
/// `None` for an unsigned PDF.
pub fn pdf_signatures(document: &lopdf::Document, bytes: &[u8]) -> Option<Value> {
    let mut found: Vec<(usize, Value)> = Vec::new();
    for object in document.objects.values() {
        let Ok(dict) = object.as_dict() else { continue };
        let (Ok(range), Ok(contents)) = (dict.get(b"ByteRange"), dict.get(b"Contents")) else {
            continue;
        };
        let (Ok(range), Ok(contents)) = (range.as_array(), contents.as_str()) else {
            continue;
        };
        let numbers: Vec<usize> = range
            .iter()
            .filter_map(|n| n.as_i64().ok())
            .filter_map(|n| usize::try_from(n).ok())
            .collect();
        let mut record = json!({});
        let [a, b, c, d] = numbers[..] else {
            record["status"] = "invalid".into();
            record["reason"] = "a malformed byte range".into();
            found.push((0, record));
            continue;
        };
        let end = c.saturating_add(d);
        let (Some(first), Some(second)) = (bytes.get(a..a.saturating_add(b)), bytes.get(c..end))
        else {
            record["status"] = "invalid".into();
            record["reason"] = "the byte range runs past the file".into();
            found.push((end, record));
            continue;
        };
        let mut signed = Vec::with_capacity(first.len() + second.len());
        signed.extend_from_slice(first);
        signed.extend_from_slice(second);
        record["byte_range"] = json!([a, b, c, d]);
        record["covers_whole_file"] = (a == 0 && end >= bytes.len()).into();
        match open_envelope(contents, Some(&signed)) {
            Ok((signers, _)) => {
                record["signers"] = signers.into();
            }
            Err(e) => {
                record["status"] = "invalid".into();
                record["reason"] = e.to_string().into();
            }
        }
        found.push((end, record));
    }
    if found.is_empty() {
        return None;
    }
    found.sort_by_key(|(end, _)| *end);
    let last_end = found.last().map_or(0, |(end, _)| *end);
    // What follows the last signed range, but the line ends that close a file.
    let after = bytes
        .get(last_end..)
        .unwrap_or_default()
        .iter()
        .any(|b| !b.is_ascii_whitespace());
    Some(json!({
        "signed": true,
        "signatures": found.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        "modified_after_last_signature": after,
        "chain_checked": false,
    }))
}

/// Base64 text that decodes to a signed-data envelope (`MII…` is a DER sequence's start).
fn looks_like_base64_envelope(content: &[u8]) -> bool {
    content.starts_with(b"MII")
        || content.starts_with(b"MIA")
        || content.starts_with(b"-----BEGIN PKCS7")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_and_constructed_strings_become_der() {
        // SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "c" }, NULL }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x05,
            0x00, 0x00, 0x00,
        ];
        let mut out = Vec::new();
        assert_eq!(ber_to_der(&ber, 0, &mut out).expect("ber"), ber.len());
        assert_eq!(out, [0x30, 0x07, 0x04, 0x03, b'a', b'b', b'c', 0x05, 0x00]);
    }

    #[test]
    fn hostile_ber_is_refused_not_followed() {
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(ber_to_der(&deep, 0, &mut Vec::new()).is_err());
        assert!(ber_to_der(&[0x30, 0x85, 1, 2, 3, 4, 5], 0, &mut Vec::new()).is_err());
        assert!(ber_to_der(&[0x04, 0x05, 1], 0, &mut Vec::new()).is_err());
        assert!(extract(b"\x30\x03\x02\x01\x00", &Limits::default()).is_err());
    }
}
