//! Photos and scans become searchable through OCR: scans are made here the way a desk gets
//! them, by drawing a text PDF into pixels (`pdftoppm`) and wrapping the pixels back into a
//! PDF, a PNG or a multi-page TIFF; then they are uploaded over HTTP, read by Tesseract in
//! the OCR queue, and found by a phrase of their text.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestApp, cf, pdf, spawn_app_with, stream};

/// Text drawn with a PDF font: Latin-1 bytes (WinAnsi agrees on the accented vowels),
/// parentheses and backslashes escaped.
fn pdf_string(text: &str) -> Vec<u8> {
    let mut out = b"(".to_vec();
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push(b'\\');
                out.push(c as u8);
            }
            c => out.push(u8::try_from(u32::from(c)).expect("a Latin-1 character")),
        }
    }
    out.push(b')');
    out
}

/// An A4 page of text in 13-point Helvetica, one line each.
fn text_pdf(lines: &[&str]) -> Vec<u8> {
    let mut content = b"BT /F1 13 Tf 72 760 Td 19 TL".to_vec();
    for line in lines {
        content.push(b' ');
        content.extend_from_slice(&pdf_string(line));
        content.extend_from_slice(b" '");
    }
    content.extend_from_slice(b" ET");
    pdf(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
          /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_vec(),
        stream("", &content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ])
}

/// Draws page 1 of a PDF with `pdftoppm`: `-jpeg` in colour (as a scanner writes it), `-png`
/// in grey, or `-pgm` (grey, pdftoppm's default then).
fn draw(pdf: &[u8], format: &str, dpi: u32) -> Vec<u8> {
    let mut args = vec!["-r".to_owned(), dpi.to_string()];
    match format {
        "-jpeg" => args.push(format.to_owned()),
        "-pgm" => args.push("-gray".to_owned()),
        _ => args.extend(["-gray".to_owned(), format.to_owned()]),
    }
    args.extend(["-singlefile".to_owned(), "-".to_owned()]);
    let mut child = Command::new("pdftoppm")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pdftoppm (Debian: poppler-utils)");
    let mut stdin = child.stdin.take().unwrap();
    let input = pdf.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&input).unwrap();
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "pdftoppm failed");
    output.stdout
}

/// A scanned PDF: the colour JPEG of a page drawn over a whole A4 page, with an optional stamped
/// line in the text layer (as a protocol stamp is added to a scan).
fn scanned_pdf(jpeg: &[u8], stamp: Option<&str>) -> Vec<u8> {
    let size = imagesize::blob_size(jpeg).expect("a JPEG");
    let image = format!(
        "/Type /XObject /Subtype /Image /Width {} /Height {} /ColorSpace /DeviceRGB \
         /BitsPerComponent 8 /Filter /DCTDecode",
        size.width, size.height
    );
    page_with_image(&stream(&image, jpeg), stamp)
}

/// A PDF page drawing a white image of raw grey pixels, with a stamped line: what the text
/// step sees of a scan (it reads no pixel).
fn scanned_pdf_raw(width: usize, height: usize, stamp: &str) -> Vec<u8> {
    let image = format!(
        "/Type /XObject /Subtype /Image /Width {width} /Height {height} \
         /ColorSpace /DeviceGray /BitsPerComponent 8"
    );
    page_with_image(&stream(&image, &vec![255u8; width * height]), Some(stamp))
}

/// An A4 page drawing `image` (an image XObject) over its whole surface, and `stamp` in its
/// text layer.
fn page_with_image(image: &[u8], stamp: Option<&str>) -> Vec<u8> {
    let mut content = b"q 595 0 0 842 0 0 cm /Im0 Do Q".to_vec();
    if let Some(stamp) = stamp {
        content.extend_from_slice(b" BT /F1 9 Tf 380 820 Td ");
        content.extend_from_slice(&pdf_string(stamp));
        content.extend_from_slice(b" Tj ET");
    }
    pdf(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
          /Resources << /XObject << /Im0 5 0 R >> /Font << /F1 6 0 R >> >> >>"
            .to_vec(),
        stream("", &content),
        image.to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ])
}

/// A multi-page grey TIFF from PGM pages (as `pdftoppm -pgm` writes them).
fn tiff_of(pages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut encoder = tiff::encoder::TiffEncoder::new(&mut out).unwrap();
    for pgm in pages {
        // "P5\n<width> <height>\n255\n" then the pixels.
        let mut fields = pgm.splitn(4, |b| b.is_ascii_whitespace());
        assert_eq!(fields.next().unwrap(), b"P5");
        let width: u32 = std::str::from_utf8(fields.next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let height: u32 = std::str::from_utf8(fields.next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let rest = fields.next().unwrap();
        let pixels = &rest[rest.len() - (width * height) as usize..];
        encoder
            .write_image::<tiff::encoder::colortype::Gray8>(width, height, pixels)
            .unwrap();
    }
    out.into_inner()
}

async fn upload(app: &TestApp, token: &str, dossier: &str, bytes: Vec<u8>, name: &str) -> String {
    let r = app
        .upload(
            token,
            &format!("/v1/dossiers/{dossier}/documents"),
            bytes,
            name,
            &[("title", name)],
        )
        .await;
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    doc["id"].as_str().unwrap().to_owned()
}

/// The document once `done(doc)` holds.
async fn document_when(
    app: &TestApp,
    token: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let doc: Value = app
            .get(token, &format!("/v1/documents/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if done(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "not yet: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ocr_ended(doc: &Value) -> bool {
    matches!(
        doc["extraction"]["ocr"]["status"].as_str(),
        Some("done" | "failed")
    )
}

/// A grey PNG of `width` × `height` white pixels.
fn blank_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![255u8; (width * height) as usize])
        .unwrap();
    writer.finish().unwrap();
    out
}

/// With OCR off (or busy), an image's pages and a scanned PDF's wait in the OCR queue while
/// their extraction is done, and a text uploaded after them is found at once: cheap
/// extractions never wait behind OCR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_to_read_wait_for_ocr_while_text_is_found_at_once() {
    let app = spawn_app_with(|c| c.ocr_workers = 0).await;
    let citizen = app.citizen(7100).await;
    let d = app.open_dossier(&citizen, "cila", &cf(7100)).await;
    let dossier = d["id"].as_str().unwrap();
    let photo = upload(&app, &citizen, dossier, blank_png(40, 60), "foto.png").await;
    // A scan with a stamped protocol line: its text layer has a few words, it still needs OCR.
    let stamp = "Prot. n. 4521 del 03/12/2026";
    let scan = upload(
        &app,
        &citizen,
        dossier,
        scanned_pdf_raw(8, 8, stamp),
        "scansione.pdf",
    )
    .await;
    let text = upload(
        &app,
        &citizen,
        dossier,
        b"Relazione asseverata: parola chiave ornitorinco.".to_vec(),
        "relazione.txt",
    )
    .await;
    let within = Duration::from_secs(30);
    let photo = document_when(&app, &citizen, &photo, within, |d| {
        d["extraction"]["status"] != "pending"
    })
    .await;
    assert_eq!(photo["media_type"], "image/png");
    assert_eq!(photo["extraction"]["status"], "done", "{photo}");
    assert_eq!(photo["extraction"]["pages"], 1);
    assert_eq!(photo["extraction"]["method"], "ocr");
    assert_eq!(photo["extraction"]["ocr"]["status"], "pending", "{photo}");
    assert_eq!(photo["extraction"]["ocr"]["pages"], 1);
    let scan = document_when(&app, &citizen, &scan, within, |d| {
        d["extraction"]["status"] != "pending"
    })
    .await;
    assert_eq!(scan["extraction"]["status"], "done", "{scan}");
    assert_eq!(scan["extraction"]["method"], "text_layer");
    assert_eq!(scan["extraction"]["ocr"]["status"], "pending", "{scan}");
    let (found, _) = app
        .search_until(&citizen, &[("q", "ornitorinco")], 1, within)
        .await;
    assert_eq!(found["hits"][0]["document_id"], text.as_str(), "{found}");
    // The stamped line is searchable before any OCR.
    let (found, _) = app
        .search_until(&citizen, &[("q", "4521")], 1, within)
        .await;
    assert_eq!(found["hits"][0]["document_id"], scan["id"], "{found}");
}

const PERMESSO: &[&str] = &[
    "Il Comune di Ciriè rilascia il permesso di costruire",
    "per la realizzazione di una tettoia in località Borgata Rossa.",
    "La pratica è stata istruita dall'ufficio tecnico comunale",
    "e l'esito è favorevole con prescrizioni sulla viabilità.",
];

const COLLAUDO: &[&str] = &[
    "Certificato di collaudo statico delle strutture in cemento",
    "armato della palazzina sita in via Vittorio Emanuele.",
    "Il collaudatore attesta la conformità delle opere eseguite.",
];

/// Scans in every shape a desk receives them are read by OCR and found by a phrase of their
/// text: a scanned PDF with a stamped line, a PNG photo of a page, a two-page TIFF, and a
/// scan signed by a professional (CAdES, `.pdf.p7m`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tesseract (tesseract-ocr, -ita, -eng), pdftoppm (poppler-utils) and openssl"]
async fn scans_photos_and_tiffs_are_read_with_ocr_and_found_by_their_words() {
    let app = spawn_app_with(|c| c.ocr_workers = 2).await;
    let staff = app.staff(&["edilizia"]).await;
    let citizen = app.citizen(7101).await;
    let d = app.open_dossier(&citizen, "cila", &cf(7101)).await;
    let dossier = d["id"].as_str().unwrap();

    let permesso = text_pdf(PERMESSO);
    let collaudo = text_pdf(COLLAUDO);
    let scan = scanned_pdf(&draw(&permesso, "-jpeg", 200), Some("Prot. n. 4521"));
    let photo = draw(&collaudo, "-png", 150);
    let tiff = tiff_of(&[draw(&permesso, "-pgm", 200), draw(&collaudo, "-pgm", 200)]);
    let kit = crate::formats::signing_kit();
    std::fs::write(kit.path().join("scansione.pdf"), &scan).unwrap();
    crate::formats::sign(kit.path(), "scansione.pdf", "scansione.pdf.p7m", false);
    let signed = std::fs::read(kit.path().join("scansione.pdf.p7m")).unwrap();
    let scan = upload(&app, &citizen, dossier, scan, "permesso.pdf").await;
    let signed = upload(&app, &citizen, dossier, signed, "permesso.pdf.p7m").await;
    let photo = upload(&app, &citizen, dossier, photo, "collaudo.png").await;
    let tiff = upload(&app, &citizen, dossier, tiff, "fascicolo.tif").await;

    let within = Duration::from_secs(240);
    for (id, method, pages) in [
        (&scan, "text_layer+ocr", 1),
        (&photo, "ocr", 1),
        (&tiff, "ocr", 2),
        (&signed, "signed+ocr", 1),
    ] {
        let doc = document_when(&app, &staff, id, within, ocr_ended).await;
        let extraction = &doc["extraction"];
        assert_eq!(extraction["status"], "done", "{doc}");
        assert_eq!(extraction["ocr"]["status"], "done", "{doc}");
        assert_eq!(extraction["ocr"]["pages"], pages, "{doc}");
        assert_eq!(extraction["ocr"]["pages_read"], pages, "{doc}");
        assert_eq!(extraction["method"], method, "{doc}");
        let confidence = extraction["ocr"]["mean_confidence"].as_f64().unwrap();
        assert!(confidence > 60.0 && confidence <= 100.0, "{doc}");
        assert_eq!(extraction["meta"]["ocr"]["engine"], "tesseract", "{doc}");
        assert!(extraction["chars"].as_u64().unwrap() > 100, "{doc}");
    }
    app.indexed().await;
    // A phrase from each text, accents included, finds its scans and nothing else.
    let found = |q: &'static str| {
        let app = &app;
        let staff = &staff;
        async move {
            let body: Value = app
                .search(staff, &[("q", q), ("limit", "10")])
                .await
                .json()
                .await
                .unwrap();
            let mut ids: Vec<String> = body["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["document_id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut expected = vec![scan.clone(), tiff.clone(), signed.clone()];
    expected.sort();
    assert_eq!(
        found("\"rilascia il permesso di costruire\"").await,
        expected
    );
    assert_eq!(found("\"località Borgata Rossa\"").await, expected);
    let mut expected = vec![photo.clone(), tiff.clone()];
    expected.sort();
    assert_eq!(
        found("\"collaudo statico delle strutture\"").await,
        expected
    );
    // The stamped line of the text layer stays beside the OCR text.
    let mut expected = vec![scan.clone(), signed.clone()];
    expected.sort();
    assert_eq!(found("4521").await, expected);
    // The text is the OCR's: the API serves it as the document's text.
    let text = app.get(&staff, &format!("/v1/documents/{tiff}/text")).await;
    assert_eq!(text.status(), 200);
    let text: Value = text.json().await.unwrap();
    assert!(
        text["text"].as_str().unwrap().contains("Vittorio Emanuele"),
        "{text}"
    );
}

/// Twelve Italian pages, scanned: a phrase of each finds its scan among the first ten hits
/// (recall@10 ≥ 0.9), accents included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tesseract (tesseract-ocr, -ita, -eng) and pdftoppm (poppler-utils)"]
async fn known_item_search_finds_scanned_italian_pages() {
    const PAGES: &[(&[&str], &str)] = &[
        (
            &[
                "Domanda di autorizzazione allo scarico delle acque reflue",
                "domestiche in corpo idrico superficiale non recapitante in fognatura.",
            ],
            "scarico delle acque reflue",
        ),
        (
            &[
                "Segnalazione certificata di inizio attività per la ristrutturazione",
                "edilizia leggera di un fabbricato residenziale unifamiliare.",
            ],
            "fabbricato residenziale unifamiliare",
        ),
        (
            &[
                "Richiesta di occupazione temporanea di suolo pubblico per",
                "l'installazione di un ponteggio in piazza della Libertà.",
            ],
            "ponteggio in piazza della Libertà",
        ),
        (
            &[
                "Comunicazione di fine lavori e richiesta di agibilità parziale",
                "dell'unità immobiliare al piano terreno con autorimessa.",
            ],
            "agibilità parziale",
        ),
        (
            &[
                "Istanza di contributo per la rimozione dell'amianto dalle coperture",
                "di edifici privati secondo il bando regionale vigente.",
            ],
            "rimozione dell'amianto dalle coperture",
        ),
        (
            &[
                "Dichiarazione sostitutiva di atto di notorietà resa dal tecnico",
                "abilitato circa la conformità urbanistica dell'immobile.",
            ],
            "conformità urbanistica dell'immobile",
        ),
        (
            &[
                "Verbale di sopralluogo della polizia municipale relativo a",
                "un abuso edilizio segnalato da un residente di frazione Devesi.",
            ],
            "abuso edilizio segnalato",
        ),
        (
            &[
                "Parere favorevole della commissione locale per il paesaggio",
                "sulla sostituzione degli infissi in un edificio vincolato.",
            ],
            "commissione locale per il paesaggio",
        ),
        (
            &[
                "Richiesta di accesso civico generalizzato agli atti relativi",
                "all'appalto di manutenzione del verde pubblico cittadino.",
            ],
            "manutenzione del verde pubblico",
        ),
        (
            &[
                "Denuncia di inizio attività per l'apertura di un esercizio di",
                "somministrazione di alimenti e bevande in corso Martiri.",
            ],
            "somministrazione di alimenti e bevande",
        ),
        (
            &[
                "Certificato di destinazione urbanistica del terreno censito al",
                "catasto terreni foglio dodici particella trecentoquattro.",
            ],
            "certificato di destinazione urbanistica",
        ),
        (
            &[
                "Autorizzazione paesaggistica semplificata per la posa di pannelli",
                "fotovoltaici sulla falda esposta a sud del fienile.",
            ],
            "pannelli fotovoltaici",
        ),
    ];
    let app = spawn_app_with(|c| c.ocr_workers = 2).await;
    let staff = app.staff(&["edilizia"]).await;
    let citizen = app.citizen(7102).await;
    let d = app.open_dossier(&citizen, "cila", &cf(7102)).await;
    let dossier = d["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for (i, (lines, _)) in PAGES.iter().enumerate() {
        let scan = scanned_pdf(&draw(&text_pdf(lines), "-jpeg", 200), None);
        ids.push(upload(&app, &citizen, dossier, scan, &format!("scansione-{i}.pdf")).await);
    }
    for id in &ids {
        let doc = document_when(&app, &staff, id, Duration::from_secs(400), ocr_ended).await;
        assert_eq!(doc["extraction"]["ocr"]["status"], "done", "{doc}");
    }
    app.indexed().await;
    let mut found = 0;
    for ((_, phrase), id) in PAGES.iter().zip(&ids) {
        let q = format!("\"{phrase}\"");
        let body: Value = app
            .search(&staff, &[("q", q.as_str()), ("limit", "10")])
            .await
            .json()
            .await
            .unwrap();
        let hit = body["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["document_id"] == id.as_str());
        eprintln!("{phrase}: {}", if hit { "found" } else { "missed" });
        found += usize::from(hit);
    }
    let recall = found as f64 / PAGES.len() as f64;
    assert!(recall >= 0.9, "recall@10 {recall}");
}

/// OCR stays off, and says why, when Tesseract, pdftoppm or a language is missing: pages then
/// wait as pending instead of failing one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocr_waits_when_its_programs_or_languages_are_missing() {
    let app = spawn_app_with(|c| {
        c.ocr_workers = 1;
        c.ocr_languages = "ita+tlh".into();
    })
    .await;
    let pipeline = app.services.pipeline().unwrap();
    let why = app.services.ocr_service(&pipeline).unwrap_err();
    // Without Tesseract at all the reason is that; with it, the missing language.
    assert!(
        why.contains("\"tlh\"") || why.contains("tesseract not found"),
        "{why}"
    );
    let mut config = (*app.services.config).clone();
    config.tesseract = "/nonexistent/tesseract".into();
    let services = fascicolo::app::Services {
        config: std::sync::Arc::new(config),
        ..app.services.clone()
    };
    let why = services.ocr_service(&pipeline).unwrap_err();
    assert!(why.contains("/nonexistent/tesseract not found"), "{why}");
    let mut config = (*app.services.config).clone();
    config.ocr_workers = 0;
    let services = fascicolo::app::Services {
        config: std::sync::Arc::new(config),
        ..app.services.clone()
    };
    assert!(
        services
            .ocr_service(&pipeline)
            .unwrap_err()
            .contains("switched off")
    );
}
