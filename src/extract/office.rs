//! Office documents: Word (DOCX) and OpenDocument text (ODT) read with `zip` and `quick-xml`,
//! spreadsheets (XLSX, ODS) with `calamine`, RTF with [`super::rtf`]. Body text, headers, footers, tables, notes and
//! comments come out in reading order: headers, body (tables row by row, cells by tabs),
//! notes, footers, comments.
//!
//! Every ZIP entry is read through a cap on its decompressed size, so a zip bomb ends as a
//! failure with the reason, not as an exhausted worker; XML entities other than the five
//! predefined and character references are never expanded (`quick-xml` reads no DTD).

use std::io::Read;

use quick_xml::events::Event;

use super::{ExtractError, Extracted, Limits, push_capped};

/// Largest decompressed entry read from an office file.
const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;
/// Entries in an office file beyond which it is refused.
const MAX_ENTRIES: usize = 10_000;

/// Word processing, OpenDocument text and spreadsheets handled here.
pub const MEDIA_TYPES: &[&str] = &[
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/rtf",
];

fn office_error(reason: impl std::fmt::Display) -> ExtractError {
    ExtractError::Office(super::short(&reason.to_string()))
}

/// Extracts the text of an office file of `media_type`.
pub fn extract(bytes: &[u8], media_type: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    let text = match media_type {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => docx(bytes)?,
        "application/vnd.oasis.opendocument.text" => odt(bytes)?,
        "application/rtf" => super::rtf::text(bytes)?,
        _ => sheets(bytes)?,
    };
    let mut kept = String::new();
    let mut count = 0;
    let truncated = !push_capped(&mut kept, &mut count, &text, limits.max_chars);
    Ok(Extracted {
        pages: None,
        text: kept,
        truncated,
        encoding: None,
        method: Some("office".to_owned()),
        meta: None,
        ocr_pages: Vec::new(),
        content: None,
    })
}

/// The archive, refused past [`MAX_ENTRIES`].
fn archive(bytes: &[u8]) -> Result<zip::ZipArchive<std::io::Cursor<&[u8]>>, ExtractError> {
    let zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(office_error)?;
    if zip.len() > MAX_ENTRIES {
        return Err(office_error(format!(
            "{} entries in the archive",
            zip.len()
        )));
    }
    Ok(zip)
}

/// The entry `name`, decompressed up to [`MAX_ENTRY_BYTES`]; `None` if absent.
fn entry(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
) -> Result<Option<Vec<u8>>, ExtractError> {
    let file = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(office_error(e)),
    };
    let mut out = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(office_error)?;
    if out.len() as u64 > MAX_ENTRY_BYTES {
        return Err(office_error(format!(
            "{name} decompresses past {MAX_ENTRY_BYTES} bytes"
        )));
    }
    Ok(Some(out))
}

/// How an XML vocabulary marks text.
struct Vocabulary {
    /// Elements whose character data is text.
    text: &'static [&'static str],
    /// Paragraphs and headings: a line each (a space inside a table cell).
    paragraph: &'static [&'static str],
    /// Table cells: separated by tabs.
    cell: &'static [&'static str],
    /// Table rows: a line each.
    row: &'static [&'static str],
    /// Empty elements that stand for a tab.
    tab: &'static [&'static str],
    /// Empty elements that stand for a line break.
    line_break: &'static [&'static str],
    /// Empty elements that stand for a space (`text:s`).
    space: &'static [&'static str],
    /// Only text inside these elements counts (empty: all of it).
    within: &'static [&'static str],
}

const WORD: Vocabulary = Vocabulary {
    text: &["t"],
    paragraph: &["p"],
    cell: &["tc"],
    row: &["tr"],
    tab: &["tab"],
    line_break: &["br", "cr"],
    space: &[],
    within: &[],
};

const OPEN_DOCUMENT: Vocabulary = Vocabulary {
    text: &["p", "h"],
    paragraph: &["p", "h"],
    cell: &["table-cell"],
    row: &["table-row"],
    tab: &["tab"],
    line_break: &["line-break"],
    space: &["s"],
    within: &[],
};

/// The page headers and footers of an OpenDocument's styles.
const OPEN_DOCUMENT_MASTER: Vocabulary = Vocabulary {
    within: &["header", "footer", "header-left", "footer-left"],
    ..OPEN_DOCUMENT
};

fn trim_end_spaces(out: &mut String) {
    while out.ends_with([' ', '\t']) {
        out.pop();
    }
}

/// The text of one XML part.
fn xml_text(xml: &[u8], vocabulary: &Vocabulary) -> Result<String, ExtractError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = String::new();
    // Depth inside elements whose text counts, inside `within` elements, inside cells.
    let (mut in_text, mut within, mut cells) = (0usize, 0usize, 0usize);
    let counts = |within: usize| vocabulary.within.is_empty() || within > 0;
    let local = |name: &[u8]| -> String { String::from_utf8_lossy(name).into_owned() };
    loop {
        match reader.read_event_into(&mut buf).map_err(office_error)? {
            Event::Start(e) => {
                let name = local(e.local_name().as_ref());
                let name = name.as_str();
                if vocabulary.within.contains(&name) {
                    within += 1;
                }
                if vocabulary.text.contains(&name) {
                    in_text += 1;
                }
                if vocabulary.cell.contains(&name) {
                    cells += 1;
                }
            }
            Event::End(e) => {
                let name = local(e.local_name().as_ref());
                let name = name.as_str();
                if vocabulary.text.contains(&name) {
                    in_text = in_text.saturating_sub(1);
                }
                if counts(within) {
                    if vocabulary.paragraph.contains(&name) {
                        out.push(if cells > 0 { ' ' } else { '\n' });
                    } else if vocabulary.cell.contains(&name) {
                        trim_end_spaces(&mut out);
                        out.push('\t');
                    } else if vocabulary.row.contains(&name) {
                        trim_end_spaces(&mut out);
                        out.push('\n');
                    }
                }
                if vocabulary.cell.contains(&name) {
                    cells = cells.saturating_sub(1);
                }
                if vocabulary.within.contains(&name) {
                    within = within.saturating_sub(1);
                }
            }
            Event::Empty(e) if counts(within) => {
                let name = local(e.local_name().as_ref());
                let name = name.as_str();
                if vocabulary.line_break.contains(&name)
                    || (vocabulary.paragraph.contains(&name) && cells == 0)
                {
                    out.push('\n');
                } else if vocabulary.tab.contains(&name) || vocabulary.cell.contains(&name) {
                    out.push('\t');
                } else if vocabulary.space.contains(&name) {
                    out.push(' ');
                }
            }
            Event::Text(t) if in_text > 0 && counts(within) => {
                out.push_str(&t.decode().map_err(office_error)?);
            }
            Event::CData(t) if in_text > 0 && counts(within) => {
                out.push_str(&t.decode().map_err(office_error)?);
            }
            Event::GeneralRef(r) if in_text > 0 && counts(within) => {
                if let Some(c) = r.resolve_char_ref().map_err(office_error)? {
                    out.push(c);
                } else {
                    let name = r.decode().map_err(office_error)?;
                    out.push_str(match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        // Anything else would need a DTD, which is never read.
                        _ => "",
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// Appends `part` (trimmed of blank lines) to `out`, separated by a blank line.
fn append(out: &mut String, part: &str) {
    let part = part.trim_matches(['\n', ' ', '\t']);
    if part.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(part);
}

/// A Word document: headers, body, footnotes and endnotes, footers, comments.
fn docx(bytes: &[u8]) -> Result<String, ExtractError> {
    let mut zip = archive(bytes)?;
    let mut names: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .map(std::borrow::Cow::into_owned)
        .collect();
    names.sort();
    let part = |prefix: &str| -> Vec<String> {
        names
            .iter()
            .filter(|n| n.starts_with(prefix) && n.ends_with(".xml") && !n.contains("/_rels/"))
            .cloned()
            .collect()
    };
    let mut order = part("word/header");
    order.push("word/document.xml".to_owned());
    order.extend(part("word/footnotes"));
    order.extend(part("word/endnotes"));
    order.extend(part("word/footer"));
    order.extend(part("word/comments"));
    let mut out = String::new();
    let mut found_body = false;
    for name in order {
        if let Some(xml) = entry(&mut zip, &name)? {
            found_body |= name == "word/document.xml";
            append(&mut out, &xml_text(&xml, &WORD)?);
        }
    }
    if !found_body {
        return Err(office_error("no word/document.xml in the archive"));
    }
    Ok(out)
}

/// An OpenDocument text: page headers and footers (from its styles), then the body with its
/// tables, notes and comments in place.
fn odt(bytes: &[u8]) -> Result<String, ExtractError> {
    let mut zip = archive(bytes)?;
    let content = entry(&mut zip, "content.xml")?
        .ok_or_else(|| office_error("no content.xml in the archive"))?;
    let mut out = String::new();
    if let Some(styles) = entry(&mut zip, "styles.xml")? {
        append(&mut out, &xml_text(&styles, &OPEN_DOCUMENT_MASTER)?);
    }
    append(&mut out, &xml_text(&content, &OPEN_DOCUMENT)?);
    Ok(out)
}

/// A workbook: each sheet's name, then its rows, cells separated by tabs.
fn sheets(bytes: &[u8]) -> Result<String, ExtractError> {
    use calamine::Reader;
    // calamine reads the ZIP itself; refuse what would decompress past the cap first.
    {
        let mut zip = archive(bytes)?;
        for i in 0..zip.len() {
            let size = zip.by_index_raw(i).map_err(office_error)?.size();
            if size > MAX_ENTRY_BYTES {
                return Err(office_error(format!(
                    "an entry decompresses to {size} bytes"
                )));
            }
        }
    }
    let mut workbook =
        calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes)).map_err(office_error)?;
    let mut out = String::new();
    for name in workbook.sheet_names() {
        let range = workbook.worksheet_range(&name).map_err(office_error)?;
        let mut sheet = format!("{name}\n");
        for row in range.rows() {
            let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
            let line = cells.join("\t");
            if !line.trim().is_empty() {
                sheet.push_str(line.trim_end());
                sheet.push('\n');
            }
        }
        append(&mut out, &sheet);
    }
    Ok(out)
}
