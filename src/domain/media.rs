//! Media types sniffed from a file's first bytes, and safe file names. The client's claims
//! about either are never trusted.

/// The media type of a file, judged from its first bytes.
pub fn sniff_media_type(head: &[u8]) -> &'static str {
    if head.is_empty() {
        return "application/octet-stream";
    }
    if is_pkcs7_signed(head) {
        // CAdES-signed files (.p7m) are common in Italian public administration.
        return "application/pkcs7-mime";
    }
    if let Some(kind) = infer::get(head) {
        return kind.mime_type();
    }
    if looks_like_text(head) {
        let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
        let start = start.trim_start_matches('\u{feff}').trim_start();
        if start.starts_with("<!doctype html") || start.starts_with("<html") {
            return "text/html";
        }
        if start.starts_with("<?xml") {
            return "application/xml";
        }
        return "text/plain";
    }
    "application/octet-stream"
}

/// DER `SEQUENCE` holding the PKCS#7 signedData object identifier near its start.
fn is_pkcs7_signed(head: &[u8]) -> bool {
    const SIGNED_DATA_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    head.first() == Some(&0x30)
        && head[..head.len().min(32)]
            .windows(SIGNED_DATA_OID.len())
            .any(|w| w == SIGNED_DATA_OID)
}

/// Text: no NUL bytes and few control characters other than whitespace.
fn looks_like_text(head: &[u8]) -> bool {
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    !head.contains(&0) && controls * 100 <= head.len()
}

/// Unicode's bidirectional formatting characters: in a file name they make `gpj.exe` display
/// as `exe.jpg` (U+200E, U+200F, U+061C marks; U+202A–U+202E embeddings and overrides;
/// U+2066–U+2069 isolates).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A file name safe to store and show: no directories, no control characters (bidirectional
/// formatting included), at most 200 characters; `document` when nothing is left.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .take(200)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        "document".to_owned()
    } else {
        cleaned.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_common_formats_from_bytes() {
        assert_eq!(sniff_media_type(b"%PDF-1.7\n%\xe2\xe3"), "application/pdf");
        assert_eq!(
            sniff_media_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            "image/png"
        );
        assert_eq!(
            sniff_media_type(b"Gentile ufficio,\nallego..."),
            "text/plain"
        );
        assert_eq!(sniff_media_type(b"  <!DOCTYPE html><html>"), "text/html");
        assert_eq!(
            sniff_media_type(b"\0\x01\x02\x03binary"),
            "application/octet-stream"
        );
        let p7m = [
            0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0,
        ];
        assert_eq!(sniff_media_type(&p7m), "application/pkcs7-mime");
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\a\\pianta.pdf"), "pianta.pdf");
        assert_eq!(sanitize_filename("a\r\nb\".pdf"), "ab\".pdf");
        assert_eq!(sanitize_filename("  "), "document");
        assert_eq!(sanitize_filename(".hidden"), "hidden");
        assert_eq!(
            sanitize_filename("fattura\u{202e}fdp.exe"),
            "fatturafdp.exe"
        );
        assert_eq!(sanitize_filename("\u{2067}a\u{2069}\u{200f}.pdf"), "a.pdf");
    }
}
