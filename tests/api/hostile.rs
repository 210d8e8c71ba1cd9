//! Crafted PDFs meet the sandbox: each ends within the limits, the server keeps answering, and
//! the bytes stay downloadable.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{cf, pdf, spawn_app, stream};

const FONT: &str = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>";

fn page(contents: usize, parent: usize, font: usize) -> Vec<u8> {
    format!("<< /Type /Page /Parent {parent} 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R /Resources << /Font << /F1 {font} 0 R >> >> >>").into_bytes()
}

fn hostile_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();

    let depth = 300_000;
    let mut nested = b"<< /Type /Catalog /Pages 2 0 R /X ".to_vec();
    nested.extend(std::iter::repeat_n(b'[', depth));
    nested.extend(std::iter::repeat_n(b']', depth));
    nested.extend_from_slice(b" >>");
    files.push((
        "deep nesting",
        pdf(&[nested, b"<< /Type /Pages /Kids [] /Count 0 >>".to_vec()]),
    ));

    files.push((
        "reference loop",
        pdf(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 /Parent 3 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>".to_vec(),
        ]),
    ));

    let mut huge_xref = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
    let at = huge_xref.len();
    huge_xref.extend_from_slice(b"xref\n0 2147483647\n0000000000 65535 f \n0000000009 00000 n \n");
    huge_xref.extend_from_slice(
        format!("trailer\n<< /Size 2147483647 /Root 1 0 R >>\nstartxref\n{at}\n%%EOF\n").as_bytes(),
    );
    files.push(("huge declared xref", huge_xref));

    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..256 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    files.push((
        "decompression bomb",
        pdf(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            page(4, 2, 5),
            stream("/Filter /FlateDecode", &bomb),
            FONT.as_bytes().to_vec(),
        ]),
    ));

    let pages = 100_000;
    let kids: String = (0..pages).map(|i| format!("{} 0 R ", i + 5)).collect();
    let mut many = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{kids}] /Count {pages} >>").into_bytes(),
        stream("", b"BT /F1 12 Tf 72 720 Td (pagina) Tj ET"),
        FONT.as_bytes().to_vec(),
    ];
    for _ in 0..pages {
        many.push(page(3, 2, 4));
    }
    files.push(("100000 pages", pdf(&many)));

    let mut ops = b"BT /F1 12 Tf 72 720 Td ".to_vec();
    for _ in 0..1_500_000 {
        ops.extend_from_slice(b"(a) Tj\n");
    }
    ops.extend_from_slice(b"ET");
    files.push((
        "millions of text operators",
        pdf(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            page(4, 2, 5),
            stream("", &ops),
            FONT.as_bytes().to_vec(),
        ]),
    ));

    let good = crate::helpers::sample_pdf("documento troncato");
    files.push(("truncated", good[..good.len() / 2].to_vec()));

    let mut garbage = b"%PDF-1.7\n".to_vec();
    let mut x: u32 = 12345;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    files.push(("garbage", garbage));
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pdfs_end_within_limits_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let citizen = app.citizen(95).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(95)).await;
    let d = dossier["id"].as_str().unwrap();
    let mut uploaded = Vec::new();
    for (name, bytes) in hostile_files() {
        let response = app
            .upload(
                &citizen,
                &format!("/v1/dossiers/{d}/documents"),
                bytes.clone(),
                "ostile.pdf",
                &[("title", name)],
            )
            .await;
        assert_eq!(response.status(), 201, "{name}");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["media_type"], "application/pdf", "{name}");
        uploaded.push((name, doc["id"].as_str().unwrap().to_owned(), bytes));
    }
    // Each file may take up to the wall-clock limit (15 s in tests); two run at a time.
    let deadline = Instant::now() + Duration::from_secs(150);
    for (name, id, bytes) in &uploaded {
        let doc: Value = loop {
            let health = app.client.get(app.url("/health")).send().await.unwrap();
            assert_eq!(health.status(), 200, "the server must keep answering");
            let doc: Value = app
                .get(&citizen, &format!("/v1/documents/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if doc["extraction"]["status"] != "pending" {
                break doc;
            }
            assert!(Instant::now() < deadline, "{name} still pending");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let status = doc["extraction"]["status"].as_str().unwrap();
        match status {
            "failed" => {
                let reason = doc["extraction"]["reason"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "{name} failed without a reason");
            }
            "done" => {
                assert!(
                    doc["extraction"]["chars"].as_u64().unwrap() <= 2_000_000,
                    "{name}"
                );
            }
            other => panic!("{name}: unexpected status {other}"),
        }
        eprintln!("{name}: {}", doc["extraction"]);
        let content = app
            .get(&citizen, &format!("/v1/documents/{id}/content"))
            .await;
        assert_eq!(content.status(), 200, "{name} must stay downloadable");
        assert_eq!(
            content.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "{name}"
        );
    }
    // The 100 000-page file reports its page count.
    let many = uploaded
        .iter()
        .find(|(n, _, _)| *n == "100000 pages")
        .unwrap();
    let doc: Value = app
        .get(&citizen, &format!("/v1/documents/{}", many.1))
        .await
        .json()
        .await
        .unwrap();
    if doc["extraction"]["status"] == "done" {
        assert_eq!(doc["extraction"]["pages"], 100_000);
    }
}

/// Workers are reused from file to file; one that dies takes only its own file with it, and
/// the files before and after it are extracted normally, past a worker's retirement too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_takes_only_its_own_file() {
    use fascicolo::extract::sandbox::{FILES_PER_WORKER, Outcome, Sandbox, SandboxLimits};

    let limits = SandboxLimits {
        cpu_seconds: 5,
        wall: Duration::from_secs(15),
        memory_bytes: 512 * 1024 * 1024,
        ..SandboxLimits::default()
    };
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_fascicolo").into(), limits, 1);
    let text = |i: usize| bytes::Bytes::from(format!("documento numero {i}"));
    let done = |outcome: Outcome, expected: &str| match outcome {
        Outcome::Done(e) => assert_eq!(e.text.trim(), expected),
        Outcome::Failed { reason } => panic!("{expected}: {reason}"),
    };
    done(
        sandbox.run(text(0), "text/plain").await,
        "documento numero 0",
    );
    let (_, nested) = hostile_files()
        .into_iter()
        .find(|(name, _)| *name == "deep nesting")
        .unwrap();
    // It ends (the sandbox's limits end it if nothing else does) with a reason or nothing.
    match sandbox.run(nested.into(), "application/pdf").await {
        Outcome::Failed { reason } => assert!(!reason.is_empty()),
        Outcome::Done(e) => assert!(e.text.is_empty(), "nothing to read in it"),
    }
    let pdf = crate::helpers::sample_pdf("dopo il file ostile");
    match sandbox.run(pdf.into(), "application/pdf").await {
        Outcome::Done(e) => assert!(e.text.contains("dopo il file ostile"), "{}", e.text),
        Outcome::Failed { reason } => panic!("the next file failed: {reason}"),
    }
    // A worker serves file after file until it retires after `FILES_PER_WORKER`: the files
    // past one retirement start exactly one more process.
    let files = FILES_PER_WORKER as usize + 10;
    let before = sandbox.workers_started();
    for i in 1..=files {
        done(
            sandbox.run(text(i), "text/plain").await,
            &format!("documento numero {i}"),
        );
    }
    let started = sandbox.workers_started() - before;
    assert!(
        (1..=2).contains(&started),
        "{started} processes for {files} files"
    );
}

/// A TIFF of one page claiming `width` × `height` 8-bit grey pixels in one strip of ten bytes.
fn tiff_claiming(width: u32, height: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32); 8] = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 8 * 12 + 4),
        (278, 4, height),
        (279, 4, 10),
    ];
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            tiff.extend_from_slice(&(value as u16).to_le_bytes());
            tiff.extend_from_slice(&[0, 0]);
        } else {
            tiff.extend_from_slice(&value.to_le_bytes());
        }
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&[0u8; 10]);
    tiff
}

/// Decompression bombs in every image format OCR reads are refused from their headers,
/// before a pixel is decoded: the extraction fails with the reason, no OCR is queued, and the
/// file stays downloadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_bombs_are_refused_from_their_headers_and_stay_downloadable() {
    let app = crate::helpers::spawn_app_with(|c| c.ocr_workers = 1).await;
    let citizen = app.citizen(96).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(96)).await;
    let d = dossier["id"].as_str().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
    png.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");
    // A baseline JPEG frame of 65 500 × 65 500 pixels.
    let jpeg = b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xdc\xff\xdc\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9".to_vec();
    let files = [
        ("bomba.png", "image/png", png),
        ("bomba.jpg", "image/jpeg", jpeg),
        ("bomba.tif", "image/tiff", tiff_claiming(100_000, 100_000)),
    ];
    for (name, media_type, bytes) in files {
        let response = app
            .upload(
                &citizen,
                &format!("/v1/dossiers/{d}/documents"),
                bytes.clone(),
                name,
                &[("title", name)],
            )
            .await;
        assert_eq!(response.status(), 201, "{name}");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["media_type"], media_type, "{name}");
        let id = doc["id"].as_str().unwrap().to_owned();
        let doc = crate::formats::extracted(&app, &citizen, &id).await;
        assert_eq!(doc["extraction"]["status"], "failed", "{doc}");
        let reason = doc["extraction"]["reason"].as_str().unwrap();
        assert!(reason.contains("too large"), "{name}: {reason}");
        assert!(doc["extraction"]["ocr"].is_null(), "no OCR queued: {doc}");
        let content = app
            .get(&citizen, &format!("/v1/documents/{id}/content"))
            .await;
        assert_eq!(content.status(), 200, "{name}");
        assert_eq!(content.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
