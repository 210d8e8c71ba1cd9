//! Optical character recognition of images and scanned PDF pages, with Tesseract run as a
//! program (Debian's `tesseract-ocr`, languages `ita` and `eng`) and PDF pages rasterised by
//! `pdftoppm` (`poppler-utils`). Nothing here links a C library.
//!
//! Two halves, both run inside sandboxed workers:
//! - [`probe_image`] is cheap: it reads an image's header (every page of a TIFF) and refuses
//!   decompression bombs before anything decodes a pixel. The text extractor calls it, so an
//!   image gets its page count (and its OCR job) or its reason for failing at once.
//! - [`recognise_page`] does one page of one file: the OCR worker (`fascicolo ocr-worker`)
//!   confines itself as the extraction worker does, except that it may start these two
//!   programs, which inherit its confinement (Landlock, seccomp, rlimits, namespace). Images
//!   go to Tesseract on its stdin and text comes back on its stdout: no file is written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::ExtractError;

/// Media types recognised as images to read with OCR.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/tiff"];

/// The most pixels one page may have (a 600 dpi A3 scan is about 70 million).
pub const MAX_PIXELS: u64 = 100_000_000;
/// The most pages of a TIFF read.
pub const MAX_TIFF_PAGES: usize = 2_000;
/// A rasterised PDF page's longer side, in pixels: 300 dpi for A4, whatever the page's
/// declared size, so a page that claims to be a kilometre wide is still a bounded image.
pub const RASTER_LONG_SIDE: u32 = 3_508;
/// Largest image read back from `pdftoppm` (an 8-bit grey A4 page at 300 dpi is 8.7 MB; the
/// longer side is bounded by [`RASTER_LONG_SIDE`], so a page of any shape is at most 12.3 MB).
const MAX_RASTER_BYTES: u64 = 64 * 1024 * 1024;
/// Largest text read back from Tesseract for one page.
const MAX_TSV_BYTES: u64 = 16 * 1024 * 1024;
/// What a program may write on stderr that is kept for the failure reason.
const MAX_STDERR_BYTES: u64 = 4 * 1024;

/// The pages of an image, after checking each page's size.
pub fn probe_image(bytes: &[u8], media_type: &str) -> Result<u32, ExtractError> {
    let check = |width: u64, height: u64| {
        if width == 0 || height == 0 {
            return Err(ExtractError::Image("an image without pixels".into()));
        }
        if width.saturating_mul(height) > MAX_PIXELS {
            return Err(ExtractError::Image(format!(
                "image too large to read: {width} × {height} pixels (at most {MAX_PIXELS})"
            )));
        }
        Ok(())
    };
    if media_type == "image/tiff" {
        let mut decoder = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes))
            .map_err(|e| ExtractError::Image(format!("unreadable TIFF: {e}")))?;
        let mut pages = 0u32;
        loop {
            let (w, h) = decoder
                .dimensions()
                .map_err(|e| ExtractError::Image(format!("unreadable TIFF page: {e}")))?;
            check(u64::from(w), u64::from(h))?;
            pages += 1;
            if pages as usize >= MAX_TIFF_PAGES || !decoder.more_images() {
                break;
            }
            decoder
                .next_image()
                .map_err(|e| ExtractError::Image(format!("unreadable TIFF page: {e}")))?;
        }
        return Ok(pages);
    }
    let size = imagesize::blob_size(bytes)
        .map_err(|e| ExtractError::Image(format!("unreadable image: {e}")))?;
    check(size.width as u64, size.height as u64)?;
    Ok(1)
}

/// The programs OCR runs and how.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OcrTools {
    /// Tesseract.
    pub tesseract: PathBuf,
    /// Poppler's `pdftoppm`.
    pub pdftoppm: PathBuf,
    /// Tesseract's languages, `+`-joined.
    pub languages: String,
}

/// The text of one recognised page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageText {
    /// Lines joined by newlines, paragraphs by a blank line.
    pub text: String,
    /// Words recognised.
    pub words: u32,
    /// Tesseract's mean word confidence, 0 to 100 (absent when no word was read).
    pub confidence: Option<f32>,
}

/// Reads page `page` (1-based) of an image or a PDF.
pub fn recognise_page(
    bytes: &[u8],
    media_type: &str,
    page: u32,
    tools: &OcrTools,
) -> Result<PageText, ExtractError> {
    if page == 0 {
        return Err(ExtractError::Image("pages are counted from 1".into()));
    }
    if media_type == "application/pkcs7-mime" {
        // A signed scan: the pages are the signed content's.
        let (content, inner) = super::cades::signed_content(bytes)?;
        if inner == "application/pkcs7-mime" {
            return Err(ExtractError::Signed("an envelope inside itself".into()));
        }
        return recognise_page(&content, inner, page, tools);
    }
    let tsv = match media_type {
        "application/pdf" => {
            let raster = run(
                &tools.pdftoppm,
                &[
                    "-f".into(),
                    page.to_string(),
                    "-l".into(),
                    page.to_string(),
                    "-scale-to".into(),
                    RASTER_LONG_SIDE.to_string(),
                    // Grey PGM: no compression to pay for on either side of the pipe
                    // (PNG's costs more than Tesseract's reading of the page).
                    "-gray".into(),
                    "-singlefile".into(),
                    "-".into(),
                ],
                bytes,
                MAX_RASTER_BYTES,
            )?;
            if raster.is_empty() {
                return Err(ExtractError::Pdf(format!("page {page} could not be drawn")));
            }
            tesseract(tools, &raster, None)?
        }
        "image/tiff" => {
            probe_image(bytes, media_type)?;
            tesseract(tools, bytes, Some(page - 1))?
        }
        other if IMAGE_TYPES.contains(&other) => {
            probe_image(bytes, media_type)?;
            tesseract(tools, bytes, None)?
        }
        other => return Err(ExtractError::Unsupported(other.to_owned())),
    };
    Ok(read_tsv(&String::from_utf8_lossy(&tsv)))
}

fn tesseract(tools: &OcrTools, image: &[u8], page: Option<u32>) -> Result<Vec<u8>, ExtractError> {
    let mut args: Vec<String> = vec![
        "stdin".into(),
        "stdout".into(),
        "-l".into(),
        tools.languages.clone(),
    ];
    if let Some(page) = page {
        args.push("-c".into());
        args.push(format!("tessedit_page_number={page}"));
    }
    args.push("tsv".into());
    run(&tools.tesseract, &args, image, MAX_TSV_BYTES)
}

/// Runs a program with `input` on its stdin; returns its stdout, at most `cap` bytes.
fn run(program: &Path, args: &[String], input: &[u8], cap: u64) -> Result<Vec<u8>, ExtractError> {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        // One core per page: the OCR worker count is the CPU budget.
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExtractError::Image(format!("cannot start {name}: {e}")))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ExtractError::Image(format!("{name} has no pipes")));
    };
    // Written from a thread while stdout is read, so neither side waits on a full pipe.
    let (output, errors) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.take(MAX_STDERR_BYTES).read_to_end(&mut text);
            text
        });
        let mut output = Vec::new();
        let read = stdout.take(cap + 1).read_to_end(&mut output);
        let _ = writer.join();
        (read.map(|_| output), errors.join().unwrap_or_default())
    });
    let output = output.map_err(|e| ExtractError::Image(format!("reading from {name}: {e}")))?;
    if output.len() as u64 > cap {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ExtractError::Image(format!(
            "{name} wrote more than {cap} bytes"
        )));
    }
    let status = child
        .wait()
        .map_err(|e| ExtractError::Image(format!("waiting for {name}: {e}")))?;
    if !status.success() {
        let said = String::from_utf8_lossy(&errors);
        let said = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(ExtractError::Image(format!(
            "{name} failed ({status}): {}",
            super::short(said.trim())
        )));
    }
    Ok(output)
}

/// Text and mean confidence from Tesseract's TSV output: one row per word (level 5) with its
/// block, paragraph and line numbers and its confidence.
pub fn read_tsv(tsv: &str) -> PageText {
    let mut text = String::new();
    let mut last: Option<(&str, &str, &str)> = None;
    let mut words = 0u32;
    let mut confidence_sum = 0f64;
    for row in tsv.lines().skip(1) {
        let columns: Vec<&str> = row.split('\t').collect();
        if columns.len() < 12 || columns[0] != "5" {
            continue;
        }
        let word = columns[11].trim();
        if word.is_empty() {
            continue;
        }
        let place = (columns[2], columns[3], columns[4]);
        match last {
            Some((block, par, _)) if (block, par) != (place.0, place.1) => text.push_str("\n\n"),
            Some(previous) if previous != place => text.push('\n'),
            Some(_) => text.push(' '),
            None => {}
        }
        last = Some(place);
        text.push_str(word);
        words += 1;
        confidence_sum += columns[10].parse::<f64>().unwrap_or(0.0).clamp(0.0, 100.0);
    }
    PageText {
        text,
        words,
        confidence: (words > 0).then(|| (confidence_sum / f64::from(words)) as f32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_rows_become_lines_paragraphs_and_a_mean_confidence() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t96.5\tIl\n\
                   5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t93.5\tComune\n\
                   5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t90\tdi\n\
                   5\t1\t1\t1\t2\t2\t0\t0\t1\t1\t-1\t \n\
                   5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t80\tCiriè\n";
        let page = read_tsv(tsv);
        assert_eq!(page.text, "Il Comune\ndi\n\nCiriè");
        assert_eq!(page.words, 4);
        assert_eq!(page.confidence, Some(90.0));
        assert_eq!(read_tsv("level\n").confidence, None);
    }

    /// A PNG's signature and header chunk, claiming `width` × `height` pixels.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&width.to_be_bytes());
        png.extend_from_slice(&height.to_be_bytes());
        png.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 0]);
        png
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        assert_eq!(
            probe_image(&png_header(2480, 3508), "image/png").expect("test"),
            1
        );
        let refused = probe_image(&png_header(100_000, 100_000), "image/png").expect_err("refused");
        assert!(refused.to_string().contains("100000 × 100000"), "{refused}");
        assert!(probe_image(b"\x89PNG\r\n", "image/png").is_err());
    }

    #[test]
    fn every_page_of_a_tiff_is_counted_and_measured() {
        let tiff = |sizes: &[(u32, u32)]| {
            let mut out = std::io::Cursor::new(Vec::new());
            let mut encoder = tiff::encoder::TiffEncoder::new(&mut out).expect("test");
            for &(w, h) in sizes {
                let pixels = vec![255u8; (w * h) as usize];
                encoder
                    .write_image::<tiff::encoder::colortype::Gray8>(w, h, &pixels)
                    .expect("test");
            }
            out.into_inner()
        };
        assert_eq!(
            probe_image(&tiff(&[(8, 8), (4, 6), (2, 2)]), "image/tiff").expect("test"),
            3
        );
        assert!(probe_image(b"II*\0garbage", "image/tiff").is_err());
    }
}
