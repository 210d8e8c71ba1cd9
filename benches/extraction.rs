//! Extraction and indexing benchmark.
//!
//! - PDF text extraction, pages/s, on generated multi-page PDFs: the parser in-process, the
//!   same through the sandbox (persistent worker processes, one file at a time, as the server
//!   runs it), and `pdftotext` (poppler-utils) on the same files, in the same run.
//! - OCR, pages/s on one core: scanned pages (a text PDF drawn at 300 dpi by `pdftoppm`, its
//!   JPEGs wrapped back into a PDF) read page by page by the sandboxed OCR worker (`pdftoppm`
//!   and Tesseract), and by `ocrmypdf -j 1` (PyPI, the peer) on the same PDF with the same
//!   languages, alternated per round; each side's share of the source words it read back.
//! - Indexing, documents/s: Italian-analysed documents of ~2 KB added to a fresh index and
//!   committed.
//!
//! `cargo bench --bench extraction` (`FASCICOLO_BENCH_QUICK=1` for a short run).

#[path = "common/corpus.rs"]
mod corpus;

use std::path::Path;
use std::time::{Duration, Instant};

use fascicolo::extract::ocr::OcrTools;
use fascicolo::extract::sandbox::{Outcome, Sandbox, SandboxLimits, WorkerKind};
use fascicolo::extract::{Limits, extract};
use fascicolo::index::{IndexedDoc, SearchIndex};

const WORDS: &[&str] = &[
    "comune",
    "pratica",
    "domanda",
    "richiedente",
    "ufficio",
    "tecnico",
    "permesso",
    "costruire",
    "edilizia",
    "residenza",
    "anagrafe",
    "tributi",
    "rimborso",
    "versamento",
    "ricevuta",
    "planimetria",
    "relazione",
    "asseverata",
    "progetto",
    "intervento",
    "immobile",
    "foglio",
    "mappale",
    "particella",
    "catasto",
    "proprieta",
    "istanza",
    "autorizzazione",
    "parere",
    "commissione",
    "paesaggio",
    "vincolo",
    "dichiarazione",
    "sostitutiva",
    "certificato",
    "agibilita",
    "segnalazione",
    "certificata",
    "inizio",
    "attivita",
    "lavori",
    "direttore",
    "impresa",
    "esecutrice",
    "sicurezza",
    "cantiere",
    "documentazione",
    "integrazione",
    "protocollo",
    "responsabile",
    "procedimento",
    "termine",
    "giorni",
    "provvedimento",
    "conclusivo",
    "accoglimento",
    "diniego",
    "ricorso",
    "tribunale",
    "amministrativo",
    "regionale",
    "ciriè",
    "torino",
    "via",
    "piazza",
    "corso",
    "numero",
    "civico",
    "signor",
    "signora",
    "nato",
    "residente",
    "codice",
    "fiscale",
    "allegato",
    "firma",
    "digitale",
];

/// Deterministic text with a skewed word frequency.
fn text(seed: &mut u64, words: usize) -> String {
    let mut out = String::new();
    for i in 0..words {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (*seed >> 33) as usize;
        // Squaring a uniform index skews it towards the start of the list (Zipf-like).
        let k = (r % 1000) * (r % 1000) / 1000 * WORDS.len() / 1000;
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[k.min(WORDS.len() - 1)]);
    }
    out
}

/// A multi-page PDF with 30 lines of text on each page.
fn multi_page_pdf(pages: usize, seed: &mut u64) -> Vec<u8> {
    corpus::pdf(&text(seed, pages * 30 * 12), pages)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pdftotext_available() -> bool {
    std::process::Command::new("pdftotext")
        .arg("-v")
        .output()
        .is_ok()
}

fn run_pdftotext(dir: &Path, files: usize) -> Duration {
    let start = Instant::now();
    for i in 0..files {
        let status = std::process::Command::new("pdftotext")
            .arg(dir.join(format!("{i}.pdf")))
            .arg(dir.join(format!("{i}.txt")))
            .status()
            .expect("pdftotext");
        assert!(status.success());
    }
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let quick = std::env::var_os("FASCICOLO_BENCH_QUICK").is_some();
    let (files, pages, rounds) = if quick { (10, 10, 3) } else { (40, 20, 5) };
    let mut seed = 42u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let pdfs: Vec<Vec<u8>> = (0..files)
        .map(|_| multi_page_pdf(pages, &mut seed))
        .collect();
    for (i, pdf) in pdfs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.pdf")), pdf).expect("write");
    }
    let total_pages = (files * pages) as f64;
    let check = extract(&pdfs[0], "application/pdf", &Limits::default()).expect("extracts");
    assert_eq!(check.pages, Some(pages as u32));
    assert!(check.text.contains("comune") || check.text.contains("pratica"));

    println!(
        "fascicolo extraction benchmark: {files} PDFs x {pages} pages, median of {rounds} rounds"
    );
    let mut inproc = Vec::new();
    let mut sandboxed = Vec::new();
    let mut poppler = Vec::new();
    let sandbox = Sandbox::new(
        env!("CARGO_BIN_EXE_fascicolo").into(),
        SandboxLimits::default(),
        1,
    );
    for _ in 0..rounds {
        let start = Instant::now();
        for pdf in &pdfs {
            let out = extract(pdf, "application/pdf", &Limits::default()).expect("extract");
            std::hint::black_box(out);
        }
        inproc.push(total_pages / start.elapsed().as_secs_f64());

        let start = Instant::now();
        for pdf in &pdfs {
            match sandbox
                .run(bytes::Bytes::from(pdf.clone()), "application/pdf")
                .await
            {
                Outcome::Done(_) => {}
                Outcome::Failed { reason } => panic!("sandbox failed: {reason}"),
            }
        }
        sandboxed.push(total_pages / start.elapsed().as_secs_f64());

        if pdftotext_available() {
            poppler.push(total_pages / run_pdftotext(dir.path(), files).as_secs_f64());
        }
    }
    let ours = median(sandboxed.clone());
    println!(
        "  parser in-process (lopdf)        {:>9.0} pages/s",
        median(inproc)
    );
    println!("  sandboxed workers                {:>9.0} pages/s", ours);
    if poppler.is_empty() {
        println!(
            "  pdftotext                        not installed (apt-get install poppler-utils)"
        );
    } else {
        let theirs = median(poppler);
        println!("  pdftotext, one process per file  {:>9.0} pages/s", theirs);
        println!("  ratio sandboxed / pdftotext      {:>9.2}", ours / theirs);
    }

    formats(&sandbox, &pdfs[0], if quick { 20 } else { 200 }, rounds).await;
    ocr(
        if quick { 2 } else { 8 },
        if quick { 1 } else { 3 },
        &mut seed,
    )
    .await;

    let docs: usize = if quick { 2_000 } else { 20_000 };
    let index_dir = tempfile::tempdir().expect("temp dir");
    let index = SearchIndex::open(index_dir.path()).expect("index");
    let dossiers: Vec<fascicolo::domain::DossierId> = (0..docs.div_ceil(5))
        .map(|_| fascicolo::domain::DossierId::new())
        .collect();
    let prepared: Vec<IndexedDoc> = (0..docs)
        .map(|i| IndexedDoc {
            signed: false,
            signers: Vec::new(),
            doc_id: fascicolo::domain::DocumentId::new(),
            dossier_id: dossiers[i / 5],
            dossier_number: format!("2026/{:06}", i / 5),
            tenant: "c_c722".into(),
            office: ["edilizia", "tributi", "suap", "anagrafe"][i % 4].into(),
            procedure: ["cila", "rimborso-imu", "dehors", "cambio-residenza"][i % 4].into(),
            kind: "attachment".into(),
            status: "submitted".into(),
            visibility: "public".into(),
            year: 2026,
            date_ms: 1_780_000_000_000 + i as i64,
            title: text(&mut seed, 6),
            text: text(&mut seed, 300),
        })
        .collect();
    let bytes: usize = prepared.iter().map(|d| d.text.len()).sum();
    let start = Instant::now();
    for doc in &prepared {
        index.upsert(doc).expect("upsert");
    }
    index.commit(1).expect("commit");
    let took = start.elapsed().as_secs_f64();
    println!(
        "indexing: {docs} documents ({:.1} MiB of text) in {:.2} s = {:.0} docs/s",
        bytes as f64 / 1048576.0,
        took,
        docs as f64 / took
    );
}

/// Files of `media_type` per second through the sandbox, median over `rounds` of `n` files.
async fn files_per_second(
    sandbox: &Sandbox,
    bytes: &[u8],
    media_type: &str,
    n: usize,
    rounds: usize,
) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..n {
            match sandbox
                .run(bytes::Bytes::from(bytes.to_vec()), media_type)
                .await
            {
                Outcome::Done(e) => assert!(!e.text.is_empty(), "{media_type}: no text"),
                Outcome::Failed { reason } => panic!("{media_type}: {reason}"),
            }
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    median(rates)
}

/// The formats a desk receives besides PDF: office files (the test fixtures, written by
/// python-docx, odfpy and openpyxl), an e-mail with a PDF and a DOCX attached, and the cost of
/// a CAdES envelope over the plain PDF it signs (signed with `openssl cms`, when installed).
async fn formats(sandbox: &Sandbox, pdf: &[u8], n: usize, rounds: usize) {
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/tests/fixtures/office/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    };
    let docx = fixture("relazione.docx");
    let encode = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let eml = format!(
        "From: studio@example.it\r\nTo: protocollo@comune.example.it\r\nSubject: Integrazione\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSi trasmette la documentazione.\r\n\
         --b\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"r.docx\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        encode(pdf),
        encode(&docx)
    );
    println!("formats through the sandboxed workers, files/s (median of {rounds} rounds of {n}):");
    for (name, bytes, media_type) in [
        (
            "DOCX",
            docx.clone(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            "ODT",
            fixture("domanda.odt"),
            "application/vnd.oasis.opendocument.text",
        ),
        (
            "XLSX",
            fixture("versamenti.xlsx"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        (
            "EML (PDF + DOCX attached)",
            eml.into_bytes(),
            "message/rfc822",
        ),
    ] {
        let rate = files_per_second(sandbox, &bytes, media_type, n, rounds).await;
        println!("  {name:<28} {rate:>9.0}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(p)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::write(p.join("a.pdf"), pdf).expect("write");
    let signed = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "k.pem",
        "-out",
        "c.pem",
        "-days",
        "30",
        "-subj",
        "/CN=ROSSI MARIO/serialNumber=TINIT-RSSMRA80A01H501U",
    ]) && run(&[
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-md",
        "sha256",
        "-in",
        "a.pdf",
        "-signer",
        "c.pem",
        "-inkey",
        "k.pem",
        "-outform",
        "DER",
        "-out",
        "a.pdf.p7m",
    ]);
    if !signed {
        println!("  p7m overhead                 openssl not installed");
        return;
    }
    let p7m = std::fs::read(p.join("a.pdf.p7m")).expect("p7m");
    let plain = files_per_second(sandbox, pdf, "application/pdf", n, rounds).await;
    let enveloped = files_per_second(sandbox, &p7m, "application/pkcs7-mime", n, rounds).await;
    println!(
        "  PDF plain / in a p7m         {plain:>9.0} / {enveloped:.0}: {:.2} ms more per file",
        1000.0 / enveloped - 1000.0 / plain
    );
}

/// A scanned PDF: each JPEG drawn over a whole A4 page.
fn scanned_pdf(jpegs: &[Vec<u8>]) -> Vec<u8> {
    let mut bodies = vec![b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(), Vec::new()];
    let mut kids = String::new();
    for jpeg in jpegs {
        let size = imagesize::blob_size(jpeg).expect("a JPEG");
        let page = bodies.len() + 1;
        kids.push_str(&format!("{page} 0 R "));
        bodies.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {} 0 R \
                 /Resources << /XObject << /Im0 {} 0 R >> >> >>",
                page + 1,
                page + 2
            )
            .into_bytes(),
        );
        let content = b"q 595 0 0 842 0 0 cm /Im0 Do Q";
        let mut body = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(b"\nendstream");
        bodies.push(body);
        let mut image = format!(
            "<< /Type /XObject /Subtype /Image /Width {} /Height {} /ColorSpace /DeviceRGB \
             /BitsPerComponent 8 /Filter /DCTDecode /Length {} >>\nstream\n",
            size.width,
            size.height,
            jpeg.len()
        )
        .into_bytes();
        image.extend_from_slice(jpeg);
        image.extend_from_slice(b"\nendstream");
        bodies.push(image);
    }
    bodies[1] = format!("<< /Type /Pages /Kids [{kids}] /Count {} >>", jpegs.len()).into_bytes();
    corpus::pdf_of(&bodies)
}

/// The share of `source`'s words found among `read`'s (each occurrence counted once).
fn words_read(source: &str, read: &str) -> f64 {
    use std::collections::HashMap;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for w in read
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *seen.entry(w.to_lowercase()).or_default() += 1;
    }
    let (mut found, mut total) = (0usize, 0usize);
    for w in source.split_whitespace() {
        total += 1;
        if let Some(n) = seen.get_mut(&w.to_lowercase())
            && *n > 0
        {
            *n -= 1;
            found += 1;
        }
    }
    found as f64 / total.max(1) as f64
}

/// OCR pages per second on one core, ours beside `ocrmypdf -j 1`, alternated per round.
async fn ocr(pages: usize, rounds: usize, seed: &mut u64) {
    let installed = |program: &str, arg: &str| {
        std::process::Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !installed("tesseract", "--version") || !installed("pdftoppm", "-v") {
        println!("OCR: tesseract or pdftoppm not installed (Debian: tesseract-ocr, poppler-utils)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let source = text(seed, pages * 30 * 12);
    let original = corpus::pdf(&source, pages);
    std::fs::write(dir.path().join("original.pdf"), &original).expect("write");
    let drawn = std::process::Command::new("pdftoppm")
        .args(["-r", "300", "-jpeg"])
        .arg(dir.path().join("original.pdf"))
        .arg(dir.path().join("page"))
        .status()
        .expect("pdftoppm");
    assert!(drawn.success());
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    names.sort();
    let jpegs: Vec<Vec<u8>> = names
        .iter()
        .map(|p| std::fs::read(p).expect("jpeg"))
        .collect();
    assert_eq!(jpegs.len(), pages);
    let scan = scanned_pdf(&jpegs);
    let scan_path = dir.path().join("scan.pdf");
    std::fs::write(&scan_path, &scan).expect("write");
    let sandbox = Sandbox::of_kind(
        env!("CARGO_BIN_EXE_fascicolo").into(),
        WorkerKind::Ocr(OcrTools {
            tesseract: "/usr/bin/tesseract".into(),
            pdftoppm: "/usr/bin/pdftoppm".into(),
            languages: "ita+eng".into(),
        }),
        SandboxLimits {
            cpu_seconds: 120,
            memory_bytes: 2048 * 1024 * 1024,
            wall: Duration::from_secs(300),
            ..SandboxLimits::default()
        },
        1,
    );
    let peer = installed("ocrmypdf", "--version");
    let sidecar = dir.path().join("sidecar.txt");
    let run_peer = || {
        let start = Instant::now();
        let status = std::process::Command::new("ocrmypdf")
            .args(["-q", "-j", "1", "-l", "ita+eng", "--output-type", "none"])
            .args(["--rasterizer", "pypdfium", "--optimize", "0", "--sidecar"])
            .arg(&sidecar)
            .arg(&scan_path)
            .arg("-")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("ocrmypdf");
        assert!(status.success(), "ocrmypdf failed");
        let took = start.elapsed();
        (took, std::fs::read_to_string(&sidecar).unwrap_or_default())
    };
    let bytes = bytes::Bytes::from(scan);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_text, mut their_text) = (String::new(), String::new());
    let mut confidence = 0f64;
    for round in 0..rounds {
        // Alternated: whoever went first in one round goes second in the next.
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let start = Instant::now();
                let mut text = String::new();
                let mut sum = 0f64;
                for page in 1..=pages as u32 {
                    let read = sandbox
                        .read_page(bytes.clone(), "application/pdf", page)
                        .await
                        .expect("OCR of a page");
                    sum += f64::from(read.confidence.unwrap_or(0.0));
                    text.push_str(&read.text);
                    text.push('\n');
                }
                ours.push(pages as f64 / start.elapsed().as_secs_f64());
                confidence = sum / pages as f64;
                our_text = text;
            } else if peer {
                let (took, text) = run_peer();
                theirs.push(pages as f64 / took.as_secs_f64());
                their_text = text;
            }
        }
    }
    println!(
        "OCR of {pages} scanned A4 pages (300 dpi JPEG in a PDF), ita+eng, one core, median of {rounds} rounds:"
    );
    let ours = median(ours);
    println!(
        "  sandboxed OCR worker (pdftoppm + tesseract per page) {ours:>6.2} pages/s, {:.1} % of the words read, mean confidence {confidence:.1}",
        words_read(&source, &our_text) * 100.0
    );
    if theirs.is_empty() {
        println!("  ocrmypdf                       not installed (pip install ocrmypdf)");
    } else {
        let theirs = median(theirs);
        println!(
            "  ocrmypdf -j 1 (text only)                           {theirs:>6.2} pages/s, {:.1} % of the words read",
            words_read(&source, &their_text) * 100.0
        );
        println!("  ratio ours / ocrmypdf          {:>6.2}", ours / theirs);
    }
}
