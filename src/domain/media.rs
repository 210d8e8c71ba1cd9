//! Media types sniffed from a file's first bytes, and safe file names. The client's claims
//! about either are never trusted.

/// The media type of a file, judged from its first bytes alone (no name, no declared type).
pub fn sniff_media_type(head: &[u8]) -> &'static str {
    judge_media_type(head, None, "")
}

/// Office and archive formats a ZIP container may hold, by extension.
const ZIP_KINDS: &[(&str, &str)] = &[
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("odp", "application/vnd.oasis.opendocument.presentation"),
    ("zip", "application/zip"),
];

/// Types whose signature `infer` reads at offset 0 and which text cannot begin with by
/// accident (a few bytes outside printable text, or a long exact string).
const MAGIC_AT_ZERO: &[&str] = &[
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/tiff",
    "image/webp",
    "application/gzip",
    "application/x-7z-compressed",
    "application/vnd.rar",
    "application/x-ole-storage",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/rtf",
];

/// The file name's extension, lower case.
fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The media type of a file, judged from its first bytes, the type the client declared and
/// its name. Sniffing decides alone only where a signature sits at offset 0 and text cannot
/// begin with it by accident; a signature elsewhere (a tar header at byte 257, which the
/// Italian "aggiustare" can spell) counts only when the declared type or the name agree; and
/// text that decodes as text is text.
pub fn judge_media_type(head: &[u8], declared: Option<&str>, name: &str) -> &'static str {
    if head.is_empty() {
        return "application/octet-stream";
    }
    let extension = extension(name);
    let declared = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let says_text = declared.starts_with("text/")
        && matches!(extension.as_str(), "txt" | "text" | "csv" | "md" | "log");
    // A text file its sender and its name both call text, and that reads as text, is text,
    // whatever word it begins with.
    if says_text && looks_like_text(head) {
        return text_kind(head);
    }
    // A signed file and its time stamp in one MIME message (`.m7m`), when it is called one.
    if extension == "m7m" && looks_like_text(head) {
        return "application/x-m7m";
    }
    if is_der_with_oid(head, TIMESTAMPED_DATA_OID) {
        // RFC 5544 time-stamped data (`.tsd`), RFC 5955's media type.
        return "application/timestamped-data";
    }
    // An e-mail is text whose sender or name says so (a PEC arrives as `.eml`).
    if (extension == "eml" || declared == "message/rfc822") && looks_like_text(head) {
        return "message/rfc822";
    }
    if is_pkcs7_signed(head) {
        // CAdES-signed files (.p7m) are common in Italian public administration.
        return "application/pkcs7-mime";
    }
    // The same in Base64, as some signing tools write it.
    if (extension == "p7m" || declared.contains("pkcs7")) && looks_like_text(head) {
        return "application/pkcs7-mime";
    }
    if head.starts_with(b"PK\x03\x04") {
        // A ZIP container: its first entries say which office format it is, else its name.
        if let Some(kind) = zip_kind(head) {
            return kind;
        }
        return ZIP_KINDS
            .iter()
            .find(|(e, _)| *e == extension)
            .map_or("application/zip", |(_, m)| m);
    }
    if is_pdf_header(head) {
        return "application/pdf";
    }
    let inferred = infer::get(head);
    if let Some(kind) = inferred
        && kind.mime_type() != "application/pdf"
        && MAGIC_AT_ZERO.contains(&kind.mime_type())
    {
        return kind.mime_type();
    }
    // A PDF with bytes before its header (readers skip up to 1 KiB), if it is called one.
    if (declared == "application/pdf" || extension == "pdf")
        && head[..head.len().min(1024)]
            .windows(5)
            .any(|w| w == b"%PDF-")
    {
        return "application/pdf";
    }
    if looks_like_text(head) {
        return text_kind(head);
    }
    // Any other signature, when the declared type or the name agree with it.
    if let Some(kind) = inferred
        && (kind.extension() == extension || declared == kind.mime_type())
    {
        return kind.mime_type();
    }
    "application/octet-stream"
}

/// The office format of a ZIP container, from the entries whose local headers are in `head`:
/// OOXML keeps its parts under `word/`, `xl/` or `ppt/`; OpenDocument starts with a stored
/// `mimetype` entry naming its type.
fn zip_kind(head: &[u8]) -> Option<&'static str> {
    let mut at = 0;
    for _ in 0..64 {
        let header = head.get(at..at + 30)?;
        if !header.starts_with(b"PK\x03\x04") {
            return None;
        }
        let field = |i: usize| usize::from(u16::from_le_bytes([header[i], header[i + 1]]));
        let compressed = u32::from_le_bytes([header[18], header[19], header[20], header[21]]);
        let (name_len, extra_len) = (field(26), field(28));
        let name = head.get(at + 30..at + 30 + name_len)?;
        let data = at + 30 + name_len + extra_len;
        let found = if name.starts_with(b"word/") {
            Some("docx")
        } else if name.starts_with(b"xl/") {
            Some("xlsx")
        } else if name.starts_with(b"ppt/") {
            Some("pptx")
        } else if name == b"mimetype" {
            let value = head.get(data..data + usize::try_from(compressed).ok()?)?;
            match value {
                b"application/vnd.oasis.opendocument.text" => Some("odt"),
                b"application/vnd.oasis.opendocument.spreadsheet" => Some("ods"),
                b"application/vnd.oasis.opendocument.presentation" => Some("odp"),
                _ => None,
            }
        } else {
            None
        };
        if let Some(extension) = found {
            return ZIP_KINDS
                .iter()
                .find(|(e, _)| *e == extension)
                .map(|(_, m)| *m);
        }
        // Entries streamed with a data descriptor do not say their size here: stop.
        if header[6] & 0x08 != 0 {
            return None;
        }
        at = data + usize::try_from(compressed).ok()?;
    }
    None
}

/// `%PDF-` and a version digit at offset 0.
fn is_pdf_header(head: &[u8]) -> bool {
    head.starts_with(b"%PDF-") && head.get(5).is_some_and(u8::is_ascii_digit)
}

/// Text: HTML, XML or plain.
fn text_kind(head: &[u8]) -> &'static str {
    let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
    let start = start.trim_start_matches('\u{feff}').trim_start();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        return "text/html";
    }
    if start.starts_with("<?xml") {
        return "application/xml";
    }
    "text/plain"
}

/// The DER of the PKCS#7 signedData object identifier.
const SIGNED_DATA_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
/// The DER of `id-ct-timestampedData` (RFC 5544).
const TIMESTAMPED_DATA_OID: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x1f,
];

/// DER `SEQUENCE` holding the PKCS#7 signedData object identifier near its start.
fn is_pkcs7_signed(head: &[u8]) -> bool {
    is_der_with_oid(head, SIGNED_DATA_OID)
}

/// A DER (or BER) `SEQUENCE` holding the object identifier `oid` near its start.
fn is_der_with_oid(head: &[u8], oid: &[u8]) -> bool {
    head.first() == Some(&0x30)
        && head[..head.len().min(32)]
            .windows(oid.len())
            .any(|w| w == oid)
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

    /// A text of `len` bytes with `word` at byte `at`.
    fn text_with(word: &str, at: usize, len: usize) -> Vec<u8> {
        let mut text = b"Il tecnico incaricato dovra ".repeat(len / 28 + 1);
        text.truncate(len);
        text[at..at + word.len()].copy_from_slice(word.as_bytes());
        text
    }

    #[test]
    fn a_signature_elsewhere_than_offset_zero_does_not_beat_text() {
        // "aggiustare" puts `ustar` where a tar header keeps its magic.
        let text = text_with("aggiustare", 253, 600);
        assert_eq!(&text[257..262], b"ustar");
        assert_eq!(
            infer::get(&text).map(|k| k.mime_type()),
            Some("application/x-tar")
        );
        assert_eq!(
            judge_media_type(&text, Some("text/plain"), "relazione.txt"),
            "text/plain"
        );
        assert_eq!(judge_media_type(&text, None, "relazione"), "text/plain");
        assert_eq!(sniff_media_type(&text), "text/plain");
    }

    #[test]
    fn text_beginning_with_a_signature_word_is_text() {
        let prose = b"%PDF e il formato richiesto per gli allegati alla domanda.\n";
        assert_eq!(judge_media_type(prose, None, "nota.txt"), "text/plain");
        let prose = b"%PDF-1.7 e la versione da usare: lo dice la circolare.\n";
        assert_eq!(
            judge_media_type(prose, Some("text/plain"), "nota.txt"),
            "text/plain"
        );
        // Without a name or type that says text, the signature at offset 0 decides.
        assert_eq!(judge_media_type(prose, None, "upload"), "application/pdf");
    }

    #[test]
    fn a_pdf_with_leading_bytes_is_a_pdf_when_it_is_called_one() {
        let mut file = b"\x00\x01garbage from a scanner\r\n".to_vec();
        file.extend_from_slice(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n");
        assert_eq!(
            judge_media_type(&file, None, "scansione.pdf"),
            "application/pdf"
        );
        assert_eq!(
            judge_media_type(&file, Some("application/pdf"), "upload"),
            "application/pdf"
        );
        assert_eq!(
            judge_media_type(&file, None, "upload.bin"),
            "application/octet-stream"
        );
    }

    #[test]
    fn a_zip_container_is_judged_by_its_entries_or_its_name() {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("[Content_Types].xml", options)
            .expect("entry");
        zip.write_all(b"<Types/>").expect("write");
        zip.start_file("word/document.xml", options).expect("entry");
        zip.write_all(b"<w:document/>").expect("write");
        let docx = zip.finish().expect("zip").into_inner();
        let word = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(judge_media_type(&docx, None, "domanda.docx"), word);
        assert_eq!(judge_media_type(&docx, None, "upload"), word);
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("content.xml", options).expect("entry");
        zip.write_all(b"<office:document-content/>").expect("write");
        let odt = zip.finish().expect("zip").into_inner();
        assert_eq!(
            judge_media_type(&odt, None, "relazione.odt"),
            "application/vnd.oasis.opendocument.text"
        );
        assert_eq!(
            judge_media_type(&odt, None, "archivio.zip"),
            "application/zip"
        );
    }

    #[test]
    fn a_real_archive_is_an_archive_when_named_so() {
        let mut tar = vec![0u8; 1024];
        tar[..9].copy_from_slice(b"file.txt\0");
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(
            judge_media_type(&tar, None, "allegati.tar"),
            "application/x-tar"
        );
        assert_eq!(
            judge_media_type(&tar, None, "allegati"),
            "application/octet-stream"
        );
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
