//! Text extraction from untrusted files (DESIGN.md §2).
//!
//! The parsers here are pure: bytes and limits in, text or an error out; no database, no
//! store. They are only ever run inside a sandboxed child process ([`sandbox`]), because a
//! hostile file can make a parser overflow its stack or abort on allocation, which no
//! in-process guard can stop.

pub(crate) mod cades;
pub mod confine;
mod email;
pub mod ocr;
mod office;
mod rtf;
pub mod sandbox;
mod timestamp;

use serde::{Deserialize, Serialize};

/// Bumped whenever extraction output changes, so cached texts are recomputed.
pub const EXTRACTOR_VERSION: u32 = 2;

/// Limits for one extraction.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// Characters of text kept; the rest is dropped (and `truncated` set).
    pub max_chars: usize,
    /// Largest decompressed content of one PDF page.
    pub max_page_content_bytes: usize,
    /// Pages of a PDF whose text is read; the page count is still reported in full.
    pub max_pages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chars: 2_000_000,
            max_page_content_bytes: 16 * 1024 * 1024,
            max_pages: 5_000,
        }
    }
}

/// The text of a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    /// Pages, for paged formats.
    pub pages: Option<u32>,
    /// The text, pages separated by form feeds.
    pub text: String,
    /// True when the text was cut at the character limit or the page limit.
    pub truncated: bool,
    /// Character encoding detected for plain text.
    pub encoding: Option<String>,
    /// How the text was obtained: `text_layer` (a PDF's), `text`, `html`, `office`, `email`.
    #[serde(default)]
    pub method: Option<String>,
    /// What the format says of itself: an e-mail's headers and attachments, a PEC's
    /// delivery data.
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    /// Pages (1-based) with no text but a picture: an image's pages, a PDF's scanned pages.
    /// They are read by OCR later, in a queue of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ocr_pages: Vec<u32>,
    /// The signed content inside an envelope, handed back beside the text. Never serialised:
    /// the worker sends it as a frame of its own and the pipeline keeps it as a derived blob
    /// (its hash is in `meta.content.sha256`).
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
}

/// Why no text could be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// No extractor for this media type.
    #[error("no text extractor for {0}")]
    Unsupported(String),
    /// The file is not a readable PDF.
    #[error("unreadable PDF: {0}")]
    Pdf(String),
    /// The file is not a readable office document.
    #[error("unreadable office document: {0}")]
    Office(String),
    /// The file is not a readable e-mail.
    #[error("unreadable e-mail: {0}")]
    Email(String),
    /// The file is not a readable signed envelope.
    #[error("unreadable signed envelope: {0}")]
    Signed(String),
    /// The image cannot be read, or is too large to read.
    #[error("{0}")]
    Image(String),
}

/// Media types with an extractor.
pub fn supports(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/pdf"
            | "text/plain"
            | "text/csv"
            | "application/xml"
            | "text/html"
            | "message/rfc822"
            | "application/pkcs7-mime"
            | "application/timestamped-data"
            | "application/x-m7m"
    ) || office::MEDIA_TYPES.contains(&media_type)
        || ocr::IMAGE_TYPES.contains(&media_type)
}

/// Extracts the text of a file of the given (sniffed) media type.
pub fn extract(bytes: &[u8], media_type: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    match media_type {
        "application/pdf" => extract_pdf(bytes, limits),
        "text/plain" | "text/csv" | "application/xml" => Ok(extract_plain(bytes, limits)),
        "text/html" => Ok(extract_html(bytes, limits)),
        "message/rfc822" => email::extract(bytes, limits),
        "application/pkcs7-mime" => cades::extract(bytes, limits),
        "application/timestamped-data" => timestamp::extract_tsd(bytes, limits),
        "application/x-m7m" => timestamp::extract_m7m(bytes, limits),
        other if office::MEDIA_TYPES.contains(&other) => office::extract(bytes, other, limits),
        other if ocr::IMAGE_TYPES.contains(&other) => {
            let pages = ocr::probe_image(bytes, other)?;
            Ok(Extracted {
                pages: Some(pages),
                text: String::new(),
                truncated: false,
                encoding: None,
                method: Some("ocr".to_owned()),
                meta: None,
                ocr_pages: (1..=pages).collect(),
                content: None,
            })
        }
        other => Err(ExtractError::Unsupported(other.to_owned())),
    }
}

/// Whether a file is signed, from its extraction metadata (a CAdES envelope's or a signed
/// PDF's), and the codice fiscale of each signer that has one (`None`: not signed).
pub fn signers_of(meta: &serde_json::Value) -> Option<Vec<String>> {
    if meta["signed"] != true {
        return None;
    }
    let mut cfs: Vec<String> = signer_records(meta)
        .filter_map(|s| s["codice_fiscale"].as_str())
        .map(str::to_ascii_uppercase)
        .collect();
    cfs.sort();
    cfs.dedup();
    Some(cfs)
}

/// Every signer described in extraction metadata: a CAdES envelope's (`signers`) and each
/// PAdES signature's (`signatures[].signers`).
pub fn signer_records(meta: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    let direct = meta["signers"].as_array().into_iter().flatten();
    let in_pdf = meta["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["signers"].as_array().into_iter().flatten());
    direct.chain(in_pdf)
}

/// Appends `piece` to `text` up to the limit; returns false once the limit is reached.
fn push_capped(text: &mut String, count: &mut usize, piece: &str, max: usize) -> bool {
    for c in piece.chars() {
        if *count >= max {
            return false;
        }
        text.push(c);
        *count += 1;
    }
    true
}

/// Up to this many pages, text is extracted page by page.
const PAGE_BY_PAGE_LIMIT: usize = 2000;
/// A PDF page with a picture and fewer letters and digits than this in its text layer is
/// a scan (perhaps with a stamped line, such as a protocol number) and is read by OCR.
pub const SCANNED_PAGE_CHARS: usize = 200;

fn extract_pdf(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let document =
        lopdf::Document::load_mem(bytes).map_err(|e| ExtractError::Pdf(short(&e.to_string())))?;
    let pages = document.get_pages();
    let page_count = u32::try_from(pages.len()).unwrap_or(u32::MAX);
    let mut text = String::new();
    let mut count = 0usize;
    let mut truncated = pages.len() > limits.max_pages;
    let mut failures = 0usize;
    let mut first_error = None;
    let numbers: Vec<u32> = pages.keys().take(limits.max_pages).copied().collect();
    // lopdf walks the page tree on every call: page by page is quadratic, so long documents
    // are read in one pass (their text then has no page breaks).
    let per_page: Vec<lopdf::Result<String>> = if numbers.len() <= PAGE_BY_PAGE_LIMIT {
        numbers
            .iter()
            .map(|n| document.extract_text_with_limit(&[*n], limits.max_page_content_bytes))
            .collect()
    } else {
        document.extract_text_chunks_with_limit(&numbers, limits.max_page_content_bytes)
    };
    let pieces = per_page.len();
    let mut ocr_pages = Vec::new();
    let by_page = numbers.len() <= PAGE_BY_PAGE_LIMIT;
    for (i, piece) in per_page.into_iter().enumerate() {
        match piece {
            Ok(page_text) => {
                if by_page
                    && page_text.chars().filter(|c| c.is_alphanumeric()).count()
                        < SCANNED_PAGE_CHARS
                    && has_picture(&document, &pages, numbers[i])
                {
                    ocr_pages.push(numbers[i]);
                }
                let separator = if i > 0 && numbers.len() <= PAGE_BY_PAGE_LIMIT {
                    "\u{c}"
                } else {
                    ""
                };
                if !push_capped(&mut text, &mut count, separator, limits.max_chars)
                    || !push_capped(
                        &mut text,
                        &mut count,
                        page_text.trim_end(),
                        limits.max_chars,
                    )
                {
                    truncated = true;
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| short(&e.to_string()));
            }
        }
    }
    // A document whose every page failed has no usable text: report why.
    if failures > 0 && failures == pieces {
        return Err(ExtractError::Pdf(first_error.unwrap_or_default()));
    }
    Ok(Extracted {
        pages: Some(page_count),
        text,
        truncated,
        encoding: None,
        method: Some("text_layer".to_owned()),
        meta: cades::pdf_signatures(&document, bytes),
        ocr_pages,
        content: None,
    })
}

/// Whether a page draws an image.
fn has_picture(
    document: &lopdf::Document,
    pages: &std::collections::BTreeMap<u32, lopdf::ObjectId>,
    number: u32,
) -> bool {
    pages
        .get(&number)
        .and_then(|id| document.get_page_images(*id).ok())
        .is_some_and(|images| !images.is_empty())
}

fn short(message: &str) -> String {
    message.chars().take(300).collect()
}

/// Decodes plain text: UTF-8 (with or without BOM), else Windows-1252 when it uses the
/// 0x80–0x9F range (curly quotes, euro sign), else ISO-8859-1.
pub fn decode_text(bytes: &[u8]) -> (String, &'static str) {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_owned(), "utf-8");
    }
    if bytes.iter().any(|b| (0x80..=0x9f).contains(b)) {
        let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
        return (text.into_owned(), "windows-1252");
    }
    (bytes.iter().map(|&b| char::from(b)).collect(), "iso-8859-1")
}

fn extract_plain(bytes: &[u8], limits: &Limits) -> Extracted {
    let (decoded, encoding) = decode_text(bytes);
    let mut text = String::new();
    let mut count = 0;
    let truncated = !push_capped(&mut text, &mut count, &decoded, limits.max_chars);
    Extracted {
        pages: None,
        text,
        truncated,
        encoding: Some(encoding.to_owned()),
        method: Some("text".to_owned()),
        meta: None,
        ocr_pages: Vec::new(),
        content: None,
    }
}

/// Text of an HTML page: tags dropped, `script` and `style` bodies skipped, entities decoded,
/// block elements turned into line breaks.
fn extract_html(bytes: &[u8], limits: &Limits) -> Extracted {
    let (html, encoding) = decode_text(bytes);
    let mut raw = String::with_capacity(html.len() / 2);
    let mut rest = html.as_str();
    while let Some(open) = rest.find('<') {
        raw.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[1..close].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        rest = &after[close + 1..];
        if (name == "script" || name == "style") && !after[1..].starts_with('/') {
            let end_tag = format!("</{name}");
            match rest.to_ascii_lowercase().find(&end_tag) {
                Some(end) => rest = &rest[end..],
                None => rest = "",
            }
            continue;
        }
        if matches!(
            name.as_str(),
            "p" | "br" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "title"
        ) {
            raw.push('\n');
        } else {
            raw.push(' ');
        }
    }
    raw.push_str(rest);
    let decoded = htmlescape::decode_html(&raw).unwrap_or(raw);
    let collapsed: String = decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let mut text = String::new();
    let mut count = 0;
    let truncated = !push_capped(&mut text, &mut count, &collapsed, limits.max_chars);
    Extracted {
        pages: None,
        text,
        truncated,
        encoding: Some(encoding.to_owned()),
        method: Some("html".to_owned()),
        meta: None,
        ocr_pages: Vec::new(),
        content: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_encodings_are_told_apart() {
        assert_eq!(
            decode_text("città".as_bytes()),
            ("città".to_owned(), "utf-8")
        );
        // "perché €5" in Windows-1252: é = 0xE9, € = 0x80.
        assert_eq!(
            decode_text(b"perch\xe9 \x805"),
            ("perché €5".to_owned(), "windows-1252")
        );
        // "perché" in ISO-8859-1 (no 0x80-0x9F bytes).
        assert_eq!(
            decode_text(b"perch\xe9"),
            ("perché".to_owned(), "iso-8859-1")
        );
        assert_eq!(decode_text(b"\xef\xbb\xbfciao").1, "utf-8");
    }

    #[test]
    fn html_loses_tags_scripts_and_entities() {
        let html = b"<html><head><style>p{x:1}</style><script>alert('x<y')</script></head>\
                     <body><h1>Permesso</h1><p>Citt&agrave; di Ciri&egrave; &amp; dintorni</p></body></html>";
        let out = extract(html, "text/html", &Limits::default()).expect("html");
        assert_eq!(out.text, "Permesso\nCittà di Ciriè & dintorni");
    }

    #[test]
    fn text_is_capped_at_the_character_limit() {
        let limits = Limits {
            max_chars: 5,
            ..Limits::default()
        };
        let out = extract("àèìòùxyz".as_bytes(), "text/plain", &limits).expect("text");
        assert_eq!(out.text, "àèìòù");
        assert!(out.truncated);
    }

    #[test]
    fn garbage_is_an_unreadable_pdf_and_gifs_are_unsupported() {
        assert!(matches!(
            extract(b"%PDF-1.4 garbage", "application/pdf", &Limits::default()),
            Err(ExtractError::Pdf(_))
        ));
        assert!(matches!(
            extract(b"GIF89a", "image/gif", &Limits::default()),
            Err(ExtractError::Unsupported(_))
        ));
    }
}
