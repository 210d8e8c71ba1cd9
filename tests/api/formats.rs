//! What a desk receives is judged by its content, its declared type and its name together:
//! uploads over HTTP, then the document's extraction and a search for its words.

use serde_json::Value;

use crate::helpers::{TestApp, cf, spawn_app};

async fn upload_as(
    app: &TestApp,
    token: &str,
    dossier: &str,
    bytes: Vec<u8>,
    name: &str,
    declared: &str,
) -> Value {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(declared)
            .unwrap(),
    );
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{dossier}/documents")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// A member of the building office and a dossier a citizen (test person `n`) opened there.
async fn staff_and_dossier(app: &TestApp, n: u32) -> (String, String) {
    let staff = app.staff(&["edilizia"]).await;
    let citizen = app.citizen(n).await;
    let d = app.open_dossier(&citizen, "cila", &cf(n)).await;
    (staff, d["id"].as_str().unwrap().to_owned())
}

/// The document once its extraction ended.
pub(crate) async fn extracted(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let doc: Value = app
            .get(token, &format!("/v1/documents/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if doc["extraction"]["status"] != "pending" {
            return doc;
        }
        assert!(std::time::Instant::now() < deadline, "still pending: {doc}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_that_spells_a_tar_signature_is_read_as_text_and_found() {
    let app = spawn_app().await;
    let citizen = app.citizen(6000).await;
    let d = app.open_dossier(&citizen, "cila", &cf(6000)).await;
    let dossier = d["id"].as_str().unwrap();
    // Byte 257 begins `ustar`, where a tar header keeps its magic.
    let mut text = String::from("Relazione tecnica. ");
    while text.len() < 253 {
        text.push_str("Il serramento esistente va ");
    }
    text.truncate(253);
    text.push_str("aggiustare prima del sopralluogo; parola chiave zibaldone.\n");
    assert_eq!(&text.as_bytes()[257..262], b"ustar");
    let doc = upload_as(
        &app,
        &citizen,
        dossier,
        text.into_bytes(),
        "relazione.txt",
        "text/plain",
    )
    .await;
    assert_eq!(doc["media_type"], "text/plain", "{doc}");
    let id = doc["id"].as_str().unwrap();
    let doc = extracted(&app, &citizen, id).await;
    assert_eq!(doc["extraction"]["status"], "done", "{doc}");
    let (found, _) = app
        .search_until(
            &citizen,
            &[("q", "zibaldone")],
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["hits"][0]["document_id"], id, "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_with_bytes_before_its_header_and_prose_beginning_with_pdf_are_told_apart() {
    let app = spawn_app().await;
    let citizen = app.citizen(6010).await;
    let d = app.open_dossier(&citizen, "cila", &cf(6010)).await;
    let dossier = d["id"].as_str().unwrap();
    let mut pdf = b"\r\n\x00scanner header\r\n".to_vec();
    pdf.extend_from_slice(&crate::helpers::sample_pdf(
        "verbale di sopralluogo firmato",
    ));
    let doc = upload_as(
        &app,
        &citizen,
        dossier,
        pdf,
        "scansione.pdf",
        "application/octet-stream",
    )
    .await;
    assert_eq!(doc["media_type"], "application/pdf", "{doc}");
    let prose = b"%PDF-1.7 e la versione da usare per gli allegati, dice la circolare.\n".to_vec();
    let doc = upload_as(&app, &citizen, dossier, prose, "nota.txt", "text/plain").await;
    assert_eq!(doc["media_type"], "text/plain", "{doc}");
    let doc = extracted(&app, &citizen, doc["id"].as_str().unwrap()).await;
    assert_eq!(doc["extraction"]["status"], "done", "{doc}");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/office/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_documents_are_read_with_headers_tables_and_comments_and_found() {
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6020).await;
    let dossier = dossier.as_str();
    let cases = [
        (
            "relazione.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            vec![
                "intestazione tracciabile",
                "Relazione tecnica asseverata",
                "conformità urbanistica",
                "Foglio\tMappale",
                "Pagina di piè tracciabile",
                "Verificare il mappale gelsomino",
            ],
        ),
        (
            "domanda.odt",
            "application/vnd.oasis.opendocument.text",
            vec![
                "Intestazione ODT tracciabile",
                "Piede ODT tracciabile",
                "Domanda di contributo",
                "mensa scolastica",
                "Commento ODT tracciabile",
                "Alunno\tClasse",
            ],
        ),
        (
            "versamenti.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            vec![
                "Versamenti",
                "Rossi Mario\t125.5",
                "Note",
                "rateizzazione tracciabile",
            ],
        ),
        (
            "occupazioni.ods",
            "application/vnd.oasis.opendocument.spreadsheet",
            vec!["Occupazioni", "Via Roma\t12"],
        ),
    ];
    for (name, media_type, expected) in cases {
        // Declared as a generic binary, as browsers often do: judged by content and name.
        let doc = upload_as(
            &app,
            &staff,
            dossier,
            fixture(name),
            name,
            "application/octet-stream",
        )
        .await;
        assert_eq!(doc["media_type"], media_type, "{name}");
        let id = doc["id"].as_str().unwrap().to_owned();
        let doc = extracted(&app, &staff, &id).await;
        assert_eq!(doc["extraction"]["status"], "done", "{name}: {doc}");
        assert_eq!(doc["extraction"]["method"], "office");
        let text: Value = app
            .get(&staff, &format!("/v1/documents/{id}/text"))
            .await
            .json()
            .await
            .unwrap();
        let text = text["text"].as_str().unwrap().to_owned();
        let mut at = 0;
        for piece in &expected {
            let found = text
                .find(piece)
                .unwrap_or_else(|| panic!("{name}: {piece:?} not in {text:?}"));
            // In reading order: headers, body with its tables, footers, comments (an ODT's
            // comments stand where they were made).
            assert!(found >= at, "{name}: {piece:?} out of order in {text:?}");
            at = found;
        }
    }
    let (found, _) = app
        .search_until(
            &staff,
            &[("q", "gelsomino")],
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["total"], 1, "{found}");
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// An e-mail with a text body and these attachments `(name, type, bytes)`.
fn email(
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
    attachments: &[(&str, &str, Vec<u8>)],
) -> String {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Fri, 04 Dec 2026 10:15:00 +0100\r\n\
         Message-ID: <{}@example.it>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"confine\"\r\n\r\n\
         --confine\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n",
        subject.len()
    );
    for (name, kind, bytes) in attachments {
        if *kind == "message/rfc822" {
            m.push_str(&format!(
                "--confine\r\nContent-Type: message/rfc822; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n",
                String::from_utf8_lossy(bytes)
            ));
        } else {
            m.push_str(&format!(
                "--confine\r\nContent-Type: {kind}; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64(bytes)
            ));
        }
    }
    m.push_str("--confine--\r\n");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_and_a_pec_envelope_are_read_with_their_attachments() {
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6030).await;
    let dossier = dossier.as_str();
    // The original message a professional sent by PEC, with a PDF and a DOCX attached.
    let original = email(
        "Studio Bianchi <studio.bianchi@pec.example.it>",
        "protocollo@pec.comune.example.it",
        "Integrazione pratica CILA",
        "Si trasmette la documentazione integrativa richiesta.",
        &[
            (
                "planimetria.pdf",
                "application/pdf",
                crate::helpers::sample_pdf("planimetria catastale quercia"),
            ),
            (
                "relazione.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                fixture("relazione.docx"),
            ),
        ],
    );
    let daticert = r#"<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="posta-certificata" errore="nessuno">
  <intestazione>
    <mittente>studio.bianchi@pec.example.it</mittente>
    <destinatari tipo="certificato">protocollo@pec.comune.example.it</destinatari>
    <risposte>studio.bianchi@pec.example.it</risposte>
    <oggetto>Integrazione pratica CILA</oggetto>
  </intestazione>
  <dati>
    <gestore-emittente>Gestore PEC di prova</gestore-emittente>
    <data zona="+0100"><giorno>04/12/2026</giorno><ora>10:15:02</ora></data>
    <identificativo>opec21.20261204101502.12345.01@pec.example.it</identificativo>
    <msgid>&lt;11@example.it&gt;</msgid>
  </dati>
</postacert>"#;
    let envelope = email(
        "Per conto di: studio.bianchi@pec.example.it <posta-certificata@pec.example.it>",
        "protocollo@pec.comune.example.it",
        "POSTA CERTIFICATA: Integrazione pratica CILA",
        "Messaggio di posta certificata inviato da studio.bianchi@pec.example.it.",
        &[
            (
                "daticert.xml",
                "application/xml",
                daticert.as_bytes().to_vec(),
            ),
            ("postacert.eml", "message/rfc822", original.into_bytes()),
        ],
    );
    let doc = upload_as(
        &app,
        &staff,
        dossier,
        envelope.into_bytes(),
        "pec.eml",
        "message/rfc822",
    )
    .await;
    assert_eq!(doc["media_type"], "message/rfc822");
    let id = doc["id"].as_str().unwrap().to_owned();
    let doc = extracted(&app, &staff, &id).await;
    assert_eq!(doc["extraction"]["status"], "done", "{doc}");
    let meta = &doc["extraction"]["meta"];
    assert_eq!(doc["extraction"]["method"], "email");
    assert_eq!(
        meta["subject"],
        "POSTA CERTIFICATA: Integrazione pratica CILA"
    );
    assert_eq!(meta["pec"]["tipo"], "posta-certificata");
    assert_eq!(meta["pec"]["sender"], "studio.bianchi@pec.example.it");
    assert_eq!(meta["pec"]["provider"], "Gestore PEC di prova");
    assert_eq!(meta["pec"]["date"], "04/12/2026 10:15:02");
    let attachments = meta["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2, "{meta}");
    let inner = &attachments[1]["message"];
    assert_eq!(
        inner["from"][0],
        "Studio Bianchi <studio.bianchi@pec.example.it>"
    );
    let inner_attachments = inner["attachments"].as_array().unwrap();
    assert_eq!(inner_attachments[0]["name"], "planimetria.pdf");
    assert_eq!(inner_attachments[0]["status"], "done");
    assert_eq!(inner_attachments[0]["method"], "text_layer");
    assert_eq!(inner_attachments[1]["method"], "office");
    // The attachments' words find the e-mail.
    for word in ["quercia", "gelsomino", "integrativa"] {
        let (found, _) = app
            .search_until(
                &staff,
                &[("q", word)],
                1,
                std::time::Duration::from_secs(20),
            )
            .await;
        assert_eq!(
            found["hits"][0]["document_id"],
            id.as_str(),
            "{word}: {found}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_ten_thousand_attachments_reads_a_bounded_number() {
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6040).await;
    let attachments: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("a{i}.txt"), format!("allegato {i}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &str, Vec<u8>)> = attachments
        .iter()
        .map(|(n, b)| (n.as_str(), "text/plain", b.clone()))
        .collect();
    let bomb = email(
        "a@example.it",
        "b@example.it",
        "Tanti allegati",
        "Corpo",
        &refs,
    );
    let doc = upload_as(
        &app,
        &staff,
        &dossier,
        bomb.into_bytes(),
        "tanti.eml",
        "message/rfc822",
    )
    .await;
    let id = doc["id"].as_str().unwrap().to_owned();
    let doc = extracted(&app, &staff, &id).await;
    assert_eq!(doc["extraction"]["status"], "done", "{doc}");
    let meta = &doc["extraction"]["meta"];
    assert_eq!(meta["attachments"].as_array().unwrap().len(), 200);
    assert_eq!(meta["attachments_not_read"], 9_800);
    // Stored whole and downloadable.
    let content = app
        .get(&staff, &format!("/v1/documents/{id}/content"))
        .await;
    assert_eq!(content.status(), 200);
}

/// A DOCX whose body is `document_xml`.
fn docx_with(document_xml: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("[Content_Types].xml", options).unwrap();
    zip.write_all(b"<Types/>").unwrap();
    zip.start_file("word/document.xml", options).unwrap();
    zip.write_all(document_xml).unwrap();
    zip.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_office_files_end_failed_or_unexpanded_and_stay_downloadable() {
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6050).await;
    let dossier = dossier.as_str();
    // A zip bomb: 80 MiB of body in a few hundred KiB.
    let mut body = b"<w:document><w:body><w:p><w:r><w:t>".to_vec();
    body.resize(80 * 1024 * 1024, b' ');
    body.extend_from_slice(b"</w:t></w:r></w:p></w:body></w:document>");
    let bomb = docx_with(&body);
    assert!(bomb.len() < 1024 * 1024);
    let doc = upload_as(
        &app,
        &staff,
        dossier,
        bomb.clone(),
        "bomba.docx",
        "application/octet-stream",
    )
    .await;
    let id = doc["id"].as_str().unwrap().to_owned();
    let doc = extracted(&app, &staff, &id).await;
    assert_eq!(doc["extraction"]["status"], "failed", "{doc}");
    assert!(
        doc["extraction"]["reason"]
            .as_str()
            .unwrap()
            .contains("decompresses past"),
        "{doc}"
    );
    let content = app
        .get(&staff, &format!("/v1/documents/{id}/content"))
        .await;
    assert_eq!(content.bytes().await.unwrap().len(), bomb.len());
    // Entity expansion ("billion laughs"): no DTD is read, so nothing expands.
    let laughs = br#"<?xml version="1.0"?>
<!DOCTYPE w:document [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<w:document><w:body><w:p><w:r><w:t>risata &lol4; finita</w:t></w:r></w:p></w:body></w:document>"#;
    let doc = upload_as(
        &app,
        &staff,
        dossier,
        docx_with(laughs),
        "risate.docx",
        "application/octet-stream",
    )
    .await;
    let id = doc["id"].as_str().unwrap().to_owned();
    let doc = extracted(&app, &staff, &id).await;
    assert_eq!(doc["extraction"]["status"], "done", "{doc}");
    let text = app
        .get(&staff, &format!("/v1/documents/{id}/text"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("risata") && text.contains("finita"), "{text}");
    assert!(!text.contains("lol"), "{text}");
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian: openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a signer certificate shaped like an Italian qualified one.
pub(crate) fn signing_kit() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-subj",
            "/C=IT/O=Certificatore di prova S.p.A./CN=CA Firma Qualificata di prova",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "signer.key",
            "-out",
            "signer.csr",
            "-subj",
            "/C=IT/O=Studio Tecnico Rossi/CN=ROSSI MARIO/serialNumber=TINIT-RSSMRA80A01H501U/GN=MARIO/SN=ROSSI",
        ],
    );
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "signer.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "signer.pem",
            "-days",
            "365",
        ],
    );
    // A second signer whose certificate holds an elliptic-curve key (P-256).
    openssl(
        p,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ec.key",
            "-out",
            "ec.csr",
            "-subj",
            "/C=IT/CN=VERDI ANNA/serialNumber=TINIT-VRDNNA85M41L219X",
        ],
    );
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "ec.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "ec.pem",
            "-days",
            "365",
        ],
    );
    dir
}

pub(crate) fn sign(kit: &std::path::Path, input: &str, output: &str, stream: bool) {
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-cades",
        "-md",
        "sha256",
        "-in",
        input,
        "-signer",
        "signer.pem",
        "-inkey",
        "signer.key",
        "-outform",
        "DER",
        "-out",
        output,
    ];
    if stream {
        args.push("-stream");
    }
    openssl(kit, &args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openssl"]
async fn signed_files_are_unwrapped_verified_and_their_signers_shown() {
    let kit = signing_kit();
    let k = kit.path();
    std::fs::write(
        k.join("verbale.pdf"),
        crate::helpers::sample_pdf("verbale di sopralluogo mandorlo"),
    )
    .unwrap();
    sign(k, "verbale.pdf", "verbale.pdf.p7m", false);
    sign(k, "verbale.pdf", "stream.pdf.p7m", true);
    sign(k, "verbale.pdf.p7m", "doppia.pdf.p7m.p7m", false);
    openssl(
        k,
        &["base64", "-in", "verbale.pdf.p7m", "-out", "base64.pdf.p7m"],
    );
    // A copy changed after signing: one letter of the signed text.
    let mut tampered = std::fs::read(k.join("verbale.pdf.p7m")).unwrap();
    let at = tampered
        .windows(8)
        .position(|w| w == b"mandorlo")
        .expect("the text inside");
    tampered[at] = b'M';
    std::fs::write(k.join("alterato.pdf.p7m"), tampered).unwrap();

    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6060).await;
    let dossier = dossier.as_str();
    for (name, envelopes, valid) in [
        ("verbale.pdf.p7m", 1, true),
        ("stream.pdf.p7m", 1, true),
        ("doppia.pdf.p7m.p7m", 2, true),
        ("base64.pdf.p7m", 1, true),
        ("alterato.pdf.p7m", 1, false),
    ] {
        let bytes = std::fs::read(k.join(name)).unwrap();
        let doc = upload_as(
            &app,
            &staff,
            dossier,
            bytes,
            name,
            "application/octet-stream",
        )
        .await;
        assert_eq!(doc["media_type"], "application/pkcs7-mime", "{name}");
        let doc = extracted(&app, &staff, doc["id"].as_str().unwrap()).await;
        let extraction = &doc["extraction"];
        assert_eq!(extraction["status"], "done", "{name}: {doc}");
        assert_eq!(extraction["method"], "signed");
        let meta = &extraction["meta"];
        assert_eq!(meta["envelopes"], envelopes, "{name}");
        assert_eq!(meta["chain_checked"], false);
        assert_eq!(meta["content"]["media_type"], "application/pdf");
        assert_eq!(meta["content"]["method"], "text_layer");
        let signers = meta["signers"].as_array().unwrap();
        assert_eq!(signers.len(), envelopes, "{name}: {meta}");
        for s in signers {
            assert_eq!(s["name"], "ROSSI MARIO");
            assert_eq!(s["codice_fiscale"], "RSSMRA80A01H501U");
            assert_eq!(s["issuer"], "CA Firma Qualificata di prova");
            assert_eq!(s["certificate_valid_at_signing"], true);
            assert!(s["signing_time"].is_string());
        }
        if valid {
            assert!(
                signers.iter().all(|s| s["status"] == "valid"),
                "{name}: {meta}"
            );
            // The signed PDF itself is kept beside its envelope, to read and download alone.
            let id = doc["id"].as_str().unwrap();
            let inner = app
                .get(&staff, &format!("/v1/documents/{id}/signed-content"))
                .await;
            assert_eq!(inner.status(), 200, "{name}");
            assert_eq!(inner.headers()["content-type"], "application/pdf");
            let disposition = inner.headers()["content-disposition"].to_str().unwrap();
            assert!(disposition.contains("filename=\""), "{disposition}");
            assert!(!disposition.contains(".p7m"), "{disposition}");
            let original = std::fs::read(k.join("verbale.pdf")).unwrap();
            assert_eq!(inner.bytes().await.unwrap().as_ref(), original.as_slice());
            assert_eq!(meta["content"]["kept"], true);
        } else {
            assert_eq!(signers[0]["status"], "invalid");
            assert!(
                signers[0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("changed after signing"),
                "{meta}"
            );
        }
    }
    // Envelopes nested past the limit end failed with the reason, the file kept whole.
    let mut inner = "verbale.pdf".to_owned();
    for level in 0..9 {
        let outer = format!("livello{level}.p7m");
        sign(k, &inner, &outer, false);
        inner = outer;
    }
    let deep = std::fs::read(k.join(&inner)).unwrap();
    let doc = upload_as(
        &app,
        &staff,
        dossier,
        deep.clone(),
        "profonda.p7m",
        "application/pkcs7-mime",
    )
    .await;
    let id = doc["id"].as_str().unwrap().to_owned();
    let doc = extracted(&app, &staff, &id).await;
    assert_eq!(doc["extraction"]["status"], "failed", "{doc}");
    assert!(
        doc["extraction"]["reason"]
            .as_str()
            .unwrap()
            .contains("nested past 8"),
        "{doc}"
    );
    let content = app
        .get(&staff, &format!("/v1/documents/{id}/content"))
        .await;
    assert_eq!(content.bytes().await.unwrap().len(), deep.len());
    // The signed text is found in every envelope (the altered one too: what it says is
    // searchable; that it was altered is in its metadata).
    let (found, _) = app
        .search_until(
            &staff,
            &[("q", "mandorlo")],
            5,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["total"], 5, "{found}");
    // Staff filter signed files, and the files one professional signed; an unsigned file
    // with the same word is left out. Citizens cannot filter by a signer.
    upload_as(
        &app,
        &staff,
        dossier,
        b"Appunti sul mandorlo del cortile".to_vec(),
        "appunti.txt",
        "text/plain",
    )
    .await;
    app.search_until(
        &staff,
        &[("q", "mandorlo")],
        6,
        std::time::Duration::from_secs(20),
    )
    .await;
    let total = |params: &'static [(&'static str, &'static str)]| {
        let app = &app;
        let staff = &staff;
        async move {
            let body: Value = app.search(staff, params).await.json().await.unwrap();
            body["total"].clone()
        }
    };
    assert_eq!(total(&[("q", "mandorlo"), ("signed", "true")]).await, 5);
    assert_eq!(total(&[("signed", "true")]).await, 5);
    assert_eq!(total(&[("signer", "RSSMRA80A01H501U")]).await, 5);
    assert_eq!(
        total(&[("signer", "rssmra80a01h501u"), ("q", "mandorlo")]).await,
        5
    );
    assert_eq!(total(&[("signer", "BNCLRA85M41L219X")]).await, 0);
    let citizen = app.citizen(6061).await;
    let refused = app
        .search(&citizen, &[("signer", "RSSMRA80A01H501U")])
        .await;
    assert_eq!(refused.status(), 400);
    let allowed = app.search(&citizen, &[("signed", "true")]).await;
    assert_eq!(allowed.status(), 200);
    // A file that is not an envelope has no signed content.
    let unsigned = upload_as(
        &app,
        &staff,
        dossier,
        crate::helpers::sample_pdf("non firmato"),
        "semplice.pdf",
        "application/pdf",
    )
    .await;
    let unsigned = extracted(&app, &staff, unsigned["id"].as_str().unwrap()).await;
    let none = app
        .get(
            &staff,
            &format!(
                "/v1/documents/{}/signed-content",
                unsigned["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(none.status(), 404);
    // A signature with an elliptic-curve key (ECDSA on P-256) verifies the same way.
    std::fs::write(
        k.join("gelso.pdf"),
        crate::helpers::sample_pdf("verbale gelso"),
    )
    .unwrap();
    openssl(
        k,
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-cades",
            "-md",
            "sha256",
            "-in",
            "gelso.pdf",
            "-signer",
            "ec.pem",
            "-inkey",
            "ec.key",
            "-outform",
            "DER",
            "-out",
            "gelso.pdf.p7m",
        ],
    );
    let ec = upload_as(
        &app,
        &staff,
        dossier,
        std::fs::read(k.join("gelso.pdf.p7m")).unwrap(),
        "gelso.pdf.p7m",
        "application/octet-stream",
    )
    .await;
    let ec = extracted(&app, &staff, ec["id"].as_str().unwrap()).await;
    let signer = &ec["extraction"]["meta"]["signers"][0];
    assert_eq!(signer["name"], "VERDI ANNA", "{ec}");
    assert_eq!(signer["codice_fiscale"], "VRDNNA85M41L219X");
    assert_eq!(signer["status"], "valid", "{ec}");
}

/// Signs `input` into `output` as a PAdES signature with the kit's signer (pyHanko), and
/// writes `updated`: the signed file with an incremental update appended afterwards.
fn pades(kit: &std::path::Path, input: &str, output: &str, updated: &str) {
    let script = format!(
        r#"
from pyhanko.sign import signers
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils import generic
signer = signers.SimpleSigner.load("signer.key", "signer.pem", ca_chain_files=("ca.pem",))
with open("{input}", "rb") as inf:
    w = IncrementalPdfFileWriter(inf)
    with open("{output}", "wb") as outf:
        signers.sign_pdf(w, signers.PdfSignatureMetadata(field_name="Firma1", md_algorithm="sha256"), signer=signer, output=outf)
with open("{output}", "rb") as inf:
    w = IncrementalPdfFileWriter(inf)
    w.add_object(generic.TextStringObject("aggiunto dopo la firma"))
    with open("{updated}", "wb") as outf:
        w.write(outf)
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(kit)
        .output()
        .expect("python3 with pyhanko (PyPI)");
    assert!(
        out.status.success(),
        "pyhanko: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openssl and pyhanko"]
async fn signed_pdfs_list_their_signatures_and_say_when_changed_afterwards() {
    let kit = signing_kit();
    let k = kit.path();
    std::fs::write(
        k.join("atto.pdf"),
        crate::helpers::sample_pdf("determina dirigenziale castagno"),
    )
    .unwrap();
    pades(k, "atto.pdf", "firmato.pdf", "aggiornato.pdf");
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6070).await;
    let dossier = dossier.as_str();
    for (name, modified) in [("firmato.pdf", false), ("aggiornato.pdf", true)] {
        let bytes = std::fs::read(k.join(name)).unwrap();
        let doc = upload_as(&app, &staff, dossier, bytes, name, "application/pdf").await;
        let doc = extracted(&app, &staff, doc["id"].as_str().unwrap()).await;
        let extraction = &doc["extraction"];
        assert_eq!(extraction["status"], "done", "{name}: {doc}");
        assert_eq!(extraction["method"], "text_layer");
        let meta = &extraction["meta"];
        assert_eq!(meta["signed"], true, "{name}: {meta}");
        assert_eq!(
            meta["modified_after_last_signature"], modified,
            "{name}: {meta}"
        );
        let signatures = meta["signatures"].as_array().unwrap();
        assert_eq!(signatures.len(), 1, "{meta}");
        let signer = &signatures[0]["signers"][0];
        assert_eq!(signer["status"], "valid", "{meta}");
        assert_eq!(signer["codice_fiscale"], "RSSMRA80A01H501U");
        assert_eq!(signatures[0]["covers_whole_file"], !modified);
    }
    // An unsigned PDF says nothing of signatures.
    let doc = upload_as(
        &app,
        &staff,
        dossier,
        crate::helpers::sample_pdf("non firmato"),
        "semplice.pdf",
        "application/pdf",
    )
    .await;
    let doc = extracted(&app, &staff, doc["id"].as_str().unwrap()).await;
    assert!(doc["extraction"].get("meta").is_none(), "{doc}");
}

/// An RTF letter (as Word saves one) is read with its accented letters and found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtf_letter_is_read_and_found() {
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6070).await;
    let rtf = br"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Calibri;}}{\info{\author Geom. Bianchi}}
\pard\f0 Oggetto: richiesta di proroga per la pratica edilizia\par
Si chiede la proroga dei termini per la consegna della relazione paesaggistica, perch\'e9 \'e8 in corso la verifica della propriet\u224?.\par
}";
    let doc = upload_as(
        &app,
        &staff,
        &dossier,
        rtf.to_vec(),
        "proroga.rtf",
        "application/rtf",
    )
    .await;
    assert_eq!(doc["media_type"], "application/rtf", "{doc}");
    let id = doc["id"].as_str().unwrap();
    let doc = extracted(&app, &staff, id).await;
    assert_eq!(doc["extraction"]["status"], "done", "{doc}");
    assert_eq!(doc["extraction"]["method"], "office");
    let text: Value = app
        .get(&staff, &format!("/v1/documents/{id}/text"))
        .await
        .json()
        .await
        .unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(
        text.contains("perché è in corso la verifica della proprietà."),
        "{text}"
    );
    assert!(
        !text.contains("Calibri") && !text.contains("Bianchi"),
        "{text}"
    );
    let (found, _) = app
        .search_until(
            &staff,
            &[("q", "\"relazione paesaggistica\"")],
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["hits"][0]["document_id"], id, "{found}");
}

/// A DER element: tag, definite length, value.
fn der(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// An RFC 5544 `.tsd`: `content` with one time-stamp token (the token of a reply).
fn tsd(content: &[u8], token: &[u8]) -> Vec<u8> {
    // id-ct-timestampedData 1.2.840.113549.1.9.16.1.31
    let oid = [
        0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x1f,
    ];
    let evidence = der(0xa0, &der(0x30, token));
    let mut body = der(0x02, &[1]);
    body.extend(der(0x04, content));
    body.extend(evidence);
    let mut info = oid.to_vec();
    info.extend(der(0xa0, &der(0x30, &body)));
    der(0x30, &info)
}

fn base64_lines(bytes: &[u8]) -> String {
    base64(bytes)
        .as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// An `.m7m`: the `.p7m` and the time-stamp reply in one MIME message.
fn m7m(p7m: &[u8], reply: &[u8]) -> Vec<u8> {
    format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m7m\"\r\n\r\n\
         --m7m\r\nContent-Type: application/pkcs7-mime; name=\"verbale.pdf.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --m7m\r\nContent-Type: application/timestamp-reply; name=\"verbale.tsr\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--m7m--\r\n",
        base64_lines(p7m),
        base64_lines(reply)
    )
    .into_bytes()
}

/// A time-stamp authority (OpenSSL's `ts`) stamping `input` into `reply` (and `token`).
fn time_stamp(kit: &std::path::Path, input: &str, reply: &str, token: &str) {
    if !kit.join("tsa.pem").exists() {
        openssl(
            kit,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "tsa.key",
                "-out",
                "tsa.pem",
                "-days",
                "365",
                "-subj",
                "/C=IT/O=Certificatore di prova S.p.A./CN=TSA di prova",
                "-addext",
                "extendedKeyUsage=critical,timeStamping",
            ],
        );
        std::fs::write(kit.join("tsaserial"), "01\n").unwrap();
        std::fs::write(
            kit.join("tsa.cnf"),
            "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\nserial = ./tsaserial\n\
             crypto_device = builtin\nsigner_cert = ./tsa.pem\nsigner_key = ./tsa.key\n\
             signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\n\
             accuracy = secs:1\nordering = yes\ntsa_name = yes\ness_cert_id_chain = no\n\
             ess_cert_id_alg = sha256\n",
        )
        .unwrap();
    }
    openssl(
        kit,
        &[
            "ts", "-query", "-data", input, "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    openssl(
        kit,
        &[
            "ts",
            "-reply",
            "-config",
            "tsa.cnf",
            "-queryfile",
            "q.tsq",
            "-out",
            reply,
        ],
    );
    openssl(
        kit,
        &["ts", "-reply", "-in", reply, "-token_out", "-out", token],
    );
}

/// Time-stamped envelopes (`.tsd`, `.m7m`) are unwrapped like a `.p7m`: the signed file
/// inside is read and found, its signer listed, and each time stamp described; a time stamp
/// made for other bytes is called invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openssl"]
async fn time_stamped_envelopes_are_unwrapped_and_their_time_stamps_checked() {
    let kit = signing_kit();
    let k = kit.path();
    let original = crate::helpers::sample_pdf("verbale marcato nespolo");
    std::fs::write(k.join("verbale.pdf"), &original).unwrap();
    sign(k, "verbale.pdf", "verbale.pdf.p7m", false);
    time_stamp(k, "verbale.pdf.p7m", "verbale.tsr", "verbale.tst");
    std::fs::write(k.join("altro.txt"), "altro").unwrap();
    time_stamp(k, "altro.txt", "altro.tsr", "altro.tst");
    let read = |name: &str| std::fs::read(k.join(name)).unwrap();
    let p7m = read("verbale.pdf.p7m");
    let files = [
        (
            "verbale.pdf.p7m.tsd",
            tsd(&p7m, &read("verbale.tst")),
            "tsd",
            true,
        ),
        ("verbale.m7m", m7m(&p7m, &read("verbale.tsr")), "m7m", true),
        // A time stamp for other bytes beside a valid signature.
        ("scambiato.m7m", m7m(&p7m, &read("altro.tsr")), "m7m", false),
    ];
    let app = spawn_app().await;
    let (staff, dossier) = staff_and_dossier(&app, 6080).await;
    for (name, bytes, format, valid) in files {
        let doc = upload_as(
            &app,
            &staff,
            &dossier,
            bytes,
            name,
            "application/octet-stream",
        )
        .await;
        let expected = if format == "tsd" {
            "application/timestamped-data"
        } else {
            "application/x-m7m"
        };
        assert_eq!(doc["media_type"], expected, "{name}: {doc}");
        let id = doc["id"].as_str().unwrap().to_owned();
        let doc = extracted(&app, &staff, &id).await;
        let extraction = &doc["extraction"];
        assert_eq!(extraction["status"], "done", "{name}: {doc}");
        assert_eq!(extraction["method"], "signed+timestamped", "{name}");
        let meta = &extraction["meta"];
        assert_eq!(
            meta["signers"][0]["codice_fiscale"], "RSSMRA80A01H501U",
            "{meta}"
        );
        assert_eq!(meta["signers"][0]["status"], "valid", "{meta}");
        let stamped = &meta["timestamped"];
        assert_eq!(stamped["format"], format);
        assert_eq!(stamped["chain_checked"], false);
        let stamp = &stamped["timestamps"][0];
        assert_eq!(stamp["authority"], "TSA di prova", "{stamp}");
        assert!(stamp["time"].as_str().unwrap().starts_with("20"), "{stamp}");
        if valid {
            assert_eq!(stamp["status"], "valid", "{name}: {stamp}");
        } else {
            assert_eq!(stamp["status"], "invalid", "{name}: {stamp}");
            assert!(
                stamp["reason"].as_str().unwrap().contains("other bytes"),
                "{stamp}"
            );
        }
        // The PDF signed inside is kept and served alone.
        let inner = app
            .get(&staff, &format!("/v1/documents/{id}/signed-content"))
            .await;
        assert_eq!(inner.status(), 200, "{name}");
        assert_eq!(inner.bytes().await.unwrap().as_ref(), original.as_slice());
    }
    let (found, _) = app
        .search_until(
            &staff,
            &[("q", "nespolo")],
            3,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["total"], 3, "{found}");
}
