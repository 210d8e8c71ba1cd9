//! Extraction and indexing benchmark.
//!
//! - PDF text extraction, pages/s, on generated multi-page PDFs: the parser in-process, the
//!   same through the sandbox (persistent worker processes, one file at a time, as the server
//!   runs it), and `pdftotext` (poppler-utils) on the same files, in the same run.
//! - Indexing, documents/s: Italian-analysed documents of ~2 KB added to a fresh index and
//!   committed.
//!
//! `cargo bench --bench extraction` (`FASCICOLO_BENCH_QUICK=1` for a short run).

#[path = "common/corpus.rs"]
mod corpus;

use std::path::Path;
use std::time::{Duration, Instant};

use fascicolo::extract::sandbox::{Outcome, Sandbox, SandboxLimits};
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

    let docs = if quick { 2_000 } else { 20_000 };
    let index_dir = tempfile::tempdir().expect("temp dir");
    let index = SearchIndex::open(index_dir.path()).expect("index");
    let prepared: Vec<IndexedDoc> = (0..docs)
        .map(|i| IndexedDoc {
            doc_id: format!("doc-{i}"),
            dossier_id: format!("dossier-{}", i / 5),
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
