//! RTF, read as its specification's reference reader reads it: groups, control words and
//! text, with the destinations that hold no text (font, colour and style tables, document
//! information, pictures, field instructions, every `\*` destination but comments) skipped, `\'hh` bytes
//! decoded in the document's code page (`\ansicpg`, Windows-1252 by default) and `\uN`
//! characters with their `\ucN` fallbacks dropped.
//!
//! Written here because the one RTF crate at hand (`rtf-parser` 0.4) loses what Italian
//! text needs: it drops a `\u` letter with the word after it (`conformit\u224?` came out as
//! `conformit`), drops `\'e8 ` with its space, joins paragraphs without a break, and returns
//! pictures' hex and the document information as text (the unit test below holds each case).

use super::ExtractError;

/// Groups nested deeper than this are refused (a hostile file, not a document).
const MAX_DEPTH: usize = 512;

/// Destinations whose content is not text of the document.
const SKIPPED: &[&str] = &[
    "fonttbl",
    "colortbl",
    "stylesheet",
    "info",
    "pict",
    "object",
    "themedata",
    "colorschememapping",
    "datastore",
    "latentstyles",
    "listtable",
    "listoverridetable",
    "rsidtbl",
    "generator",
    "xmlnstbl",
    "mmathPr",
    "pgdsctbl",
    "revtbl",
    "filetbl",
    "fldinst",
    "bkmkstart",
    "bkmkend",
    "shpinst",
    "nonshppict",
];

/// Ignorable (`\*`) destinations that hold text of the document: comments.
const KEPT: &[&str] = &["annotation"];

#[derive(Clone, Copy)]
struct Group {
    skip: bool,
    /// Characters that follow a `\u` as its fallback.
    uc: usize,
}

/// The text of an RTF file: paragraphs on lines of their own, table cells separated by tabs,
/// rows by lines.
pub fn text(bytes: &[u8]) -> Result<String, ExtractError> {
    let error = |m: &str| ExtractError::Office(format!("unreadable RTF: {m}"));
    if !bytes.starts_with(b"{\\rtf") {
        return Err(error("it does not begin with {\\rtf"));
    }
    let mut encoding = encoding_rs::WINDOWS_1252;
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut stack: Vec<Group> = Vec::new();
    let mut group = Group { skip: false, uc: 1 };
    // Fallback characters still to drop after a `\u`.
    let mut drop_next = 0usize;
    // True right after `{`: a `\*` or a destination word there names the group.
    let mut group_start = false;
    // True right after `{\*`: the destination word that follows may be one to keep.
    let mut after_star = false;
    let mut i = 0;
    let flush =
        |pending: &mut Vec<u8>, out: &mut String, encoding: &'static encoding_rs::Encoding| {
            if !pending.is_empty() {
                let (decoded, _, _) = encoding.decode(pending);
                out.push_str(&decoded);
                pending.clear();
            }
        };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'{' => {
                flush(&mut pending, &mut out, encoding);
                if stack.len() >= MAX_DEPTH {
                    return Err(error("groups nested too deep"));
                }
                stack.push(group);
                group_start = true;
                after_star = false;
                i += 1;
                continue;
            }
            b'}' => {
                flush(&mut pending, &mut out, encoding);
                group = stack
                    .pop()
                    .ok_or_else(|| error("a group closed that was never opened"))?;
                drop_next = 0;
                after_star = false;
                i += 1;
            }
            b'\\' => {
                let Some(&next) = bytes.get(i + 1) else {
                    break;
                };
                if next.is_ascii_alphabetic() {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && bytes[end].is_ascii_alphabetic() && end - start < 32
                    {
                        end += 1;
                    }
                    let word = std::str::from_utf8(&bytes[start..end]).unwrap_or_default();
                    let mut number_end = end;
                    if number_end < bytes.len() && bytes[number_end] == b'-' {
                        number_end += 1;
                    }
                    while number_end < bytes.len()
                        && bytes[number_end].is_ascii_digit()
                        && number_end - end < 10
                    {
                        number_end += 1;
                    }
                    let parameter: Option<i64> = std::str::from_utf8(&bytes[end..number_end])
                        .ok()
                        .and_then(|n| n.parse().ok());
                    i = number_end;
                    // One space ends a control word and belongs to it.
                    if bytes.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    if group_start && SKIPPED.contains(&word) {
                        group.skip = true;
                    }
                    if after_star && KEPT.contains(&word) {
                        group.skip = stack.last().is_some_and(|outer| outer.skip);
                    }
                    group_start = false;
                    after_star = false;
                    if word == "bin" {
                        // Binary data: skipped whole.
                        i = i.saturating_add(usize::try_from(parameter.unwrap_or(0)).unwrap_or(0));
                        continue;
                    }
                    if drop_next > 0 {
                        drop_next -= 1;
                        continue;
                    }
                    if group.skip {
                        continue;
                    }
                    match (word, parameter) {
                        ("ansicpg", Some(page)) => {
                            if let Some(e) = encoding_rs::Encoding::for_label(
                                format!("windows-{page}").as_bytes(),
                            ) {
                                encoding = e;
                            }
                        }
                        ("uc", Some(n)) => group.uc = usize::try_from(n).unwrap_or(1).min(8),
                        ("u", Some(n)) => {
                            flush(&mut pending, &mut out, encoding);
                            let code = if n < 0 { n + 65_536 } else { n };
                            if let Some(c) = u32::try_from(code).ok().and_then(char::from_u32) {
                                out.push(c);
                            }
                            drop_next = group.uc;
                        }
                        ("par" | "line" | "sect" | "page" | "row", _) => {
                            flush(&mut pending, &mut out, encoding);
                            out.push('\n');
                        }
                        ("tab" | "cell", _) => {
                            flush(&mut pending, &mut out, encoding);
                            out.push('\t');
                        }
                        (special, _) => {
                            let c = match special {
                                "emdash" => "—",
                                "endash" => "–",
                                "bullet" => "•",
                                "lquote" => "‘",
                                "rquote" => "’",
                                "ldblquote" => "“",
                                "rdblquote" => "”",
                                _ => "",
                            };
                            if !c.is_empty() {
                                flush(&mut pending, &mut out, encoding);
                                out.push_str(c);
                            }
                        }
                    }
                    continue;
                }
                i += 2;
                match next {
                    b'*' => {
                        // An ignorable destination: skipped, unless it is a comment.
                        if group_start {
                            group.skip = true;
                            after_star = true;
                        }
                        group_start = false;
                        continue;
                    }
                    b'\'' => {
                        let hex = bytes
                            .get(i..i + 2)
                            .and_then(|h| std::str::from_utf8(h).ok());
                        let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                        i += 2;
                        if drop_next > 0 {
                            drop_next -= 1;
                        } else if let (Some(byte), false) = (byte, group.skip) {
                            pending.push(byte);
                        }
                    }
                    b'~' if !group.skip => pending.push(0xa0),
                    b'_' if !group.skip => pending.push(b'-'),
                    b'\\' | b'{' | b'}' if !group.skip => pending.push(next),
                    b'\n' | b'\r' if !group.skip => {
                        flush(&mut pending, &mut out, encoding);
                        out.push('\n');
                    }
                    _ => {}
                }
            }
            b'\r' | b'\n' => i += 1,
            _ => {
                if drop_next > 0 {
                    drop_next -= 1;
                } else if !group.skip {
                    pending.push(b);
                }
                i += 1;
            }
        }
        group_start = false;
    }
    flush(&mut pending, &mut out, encoding);
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    let mut text = String::with_capacity(out.len());
    for line in lines {
        if line.trim().is_empty() && (text.is_empty() || text.ends_with("\n\n")) {
            continue;
        }
        text.push_str(line.trim_start_matches(' '));
        text.push('\n');
    }
    Ok(text.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTF shaped as Word writes one: font, colour and style tables, an ignorable
    /// destination, document information, a picture, a header, a table, a field, and accented
    /// letters both as code-page escapes and as `\u` escapes.
    const WORD_RTF: &str = r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\froman\fcharset0 Times New Roman;}{\f1\fswiss Arial;}}
{\colortbl;\red0\green0\blue0;\red255\green0\blue0;}
{\stylesheet{\s0 Normal;}{\s1 heading 1;}}
{\*\generator Microsoft Word 16.0;}
{\info{\title Relazione}{\author Studio Rossi}}
{\header \pard Comune di Ciri\'e8 - Sportello unico\par}
\pard\plain\f0 Il tecnico incaricato attesta la conformit\u224? dell'intervento.\par
{\pict\pngblip\picw10\pich10 89504e470d0a1a0a0000000d49484452}
\trowd\cellx3000\cellx6000 Foglio\cell 12\cell\row
{\field{\*\fldinst HYPERLINK https://example.it}{\fldrslt sito del Comune}}\par
{\*\atnid GB}{\*\atnauthor Geom. Bianchi}{\*\annotation{\*\atndate 1}\pard verificare la quota\par}
\pard Citt\'e0 di Ciri\'e8, perch\'e9 \'e8 cos\'ec: \ldblquote sanatoria\rdblquote  \'80 50.\par
}";

    #[test]
    fn rtf_gives_its_text_without_tables_of_fonts_colours_styles_or_pictures() {
        let text = text(WORD_RTF.as_bytes()).expect("rtf");
        assert_eq!(
            text,
            "Comune di Ciriè - Sportello unico\n\
             Il tecnico incaricato attesta la conformità dell'intervento.\n\
             Foglio\t12\n\
             sito del Comune\n\
             verificare la quota\n\
             Città di Ciriè, perché è così: “sanatoria” € 50."
        );
    }

    #[test]
    fn the_crate_at_hand_loses_what_this_reader_keeps() {
        let theirs = rtf_parser::RtfDocument::try_from(WORD_RTF)
            .expect("rtf-parser reads it")
            .get_text();
        // What rtf-parser 0.4 makes of the same file (why this reader exists).
        assert!(!theirs.contains("conformità dell'intervento"), "{theirs}");
        assert!(theirs.contains("89504e47"), "{theirs}");
        let ours = text(WORD_RTF.as_bytes()).expect("rtf");
        assert!(ours.contains("conformità dell'intervento"));
        assert!(!ours.contains("89504e47"));
    }

    #[test]
    fn hostile_rtf_is_refused_or_bounded() {
        let deep = format!("{{\\rtf1{}", "{".repeat(10_000));
        assert!(text(deep.as_bytes()).is_err());
        assert!(text(b"{\\rtf1 a}}").is_err());
        assert!(text(b"plain text").is_err());
        // A binary blob's length past the end ends the text, it does not read past it.
        assert_eq!(
            text(b"{\\rtf1 ciao\\bin999999 xx}").expect("bounded"),
            "ciao"
        );
    }
}
