use std::io::Read;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, cf, sample_pdf, spawn_app, spawn_app_with};

/// A dossier with documents, reads and a search, so the trail has content.
async fn activity(app: &TestApp, n: u32) -> (String, String, String) {
    let citizen = app.citizen(n).await;
    let d = app.open_dossier(&citizen, "cila", &cf(n)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let doc = app
        .add_document(
            &citizen,
            &id,
            &sample_pdf("verbale di sopralluogo"),
            "public",
        )
        .await;
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get(&citizen, &format!("/v1/dossiers/{id}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get(&citizen, &format!("/v1/documents/{doc_id}/content"))
            .await
            .status(),
        200
    );
    app.indexed().await;
    assert_eq!(
        app.search(&citizen, &[("q", "sopralluogo")]).await.status(),
        200
    );
    app.services.auditor.flush().await;
    (citizen, id, doc_id)
}

fn verify(app: &TestApp) -> (bool, Value) {
    let out = app.cli(&["audit", "verify"]);
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).expect("JSON report"),
    )
}

async fn unguard(app: &TestApp) {
    let pool = app.services.db.pool();
    match app.services.db.backend() {
        fascicolo::db::Backend::Sqlite => {
            sqlx::raw_sql(
                "drop trigger audit_event_no_update; drop trigger audit_event_no_delete;",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        fascicolo::db::Backend::Postgres => {
            sqlx::raw_sql("alter table audit_event disable trigger user")
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_are_in_the_trail_and_the_rows_cannot_change() {
    let app = spawn_app().await;
    let (_, id, doc_id) = activity(&app, 600).await;
    let stranger = app.citizen(601).await;
    assert_eq!(
        app.get(&stranger, &format!("/v1/dossiers/{id}"))
            .await
            .status(),
        404
    );
    // A document read is journaled before the document is looked up; its outcome and dossier
    // follow once it is.
    assert_eq!(
        app.get(&stranger, &format!("/v1/documents/{doc_id}/content"))
            .await
            .status(),
        404
    );

    app.services.auditor.flush().await;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("select action, target, outcome, detail from audit_event order by seq")
            .fetch_all(app.services.db.pool())
            .await
            .unwrap();
    let downloads: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "select outcome, dossier_id, detail from audit_event \
         where action = 'document.download' order by seq",
    )
    .fetch_all(app.services.db.pool())
    .await
    .unwrap();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    assert_eq!(downloads[0].0, "ok");
    assert_eq!(downloads[0].1.as_deref(), Some(id.as_str()));
    let detail: Value = serde_json::from_str(&downloads[0].2).unwrap();
    assert_eq!(detail["version"], 1);
    assert_eq!(downloads[1].0, "not_found");
    assert_eq!(downloads[1].1, None, "a miss names no dossier");
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for expected in [
        "dossier.create",
        "document.create",
        "dossier.read",
        "document.download",
        "search",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let download = rows.iter().find(|r| r.0 == "document.download").unwrap();
    assert_eq!(download.1, format!("document:{doc_id}"));
    let search = rows.iter().find(|r| r.0 == "search").unwrap();
    let detail: Value = serde_json::from_str(&search.3).unwrap();
    assert_eq!(detail["query"], "sopralluogo");
    assert_eq!(detail["total"], 1);
    assert!(
        rows.iter()
            .any(|r| r.0 == "dossier.read" && r.2 == "not_found"),
        "a denied read is recorded too"
    );

    // The database itself refuses changes.
    let pool = app.services.db.pool();
    assert!(
        sqlx::query("update audit_event set action = 'x' where seq = 1")
            .execute(pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("delete from audit_event where seq = 1")
            .execute(pool)
            .await
            .is_err()
    );

    let (ok, report) = verify(&app);
    assert!(ok, "{report}");
    assert_eq!(report["rows"], rows.len() as u64);

    let auditor = app.user("auditor", None, &[]).await;
    let head: Value = app
        .get(&auditor, "/v1/audit/head")
        .await
        .json()
        .await
        .unwrap();
    let last: (i64, String) =
        sqlx::query_as("select seq, hash from audit_event order by seq desc limit 1")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(head["seq"], last.0);
    assert_eq!(head["hash"], last.1);
    assert_eq!(app.get(&stranger, "/v1/audit/head").await.status(), 403);

    // The auditor's history shows every access, the stranger's attempt included.
    let history: Value = app
        .get(&auditor, &format!("/v1/dossiers/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    let accesses = history["accesses"].as_array().unwrap();
    assert!(accesses.iter().any(|a| a["action"] == "document.download"));
    assert!(history["documents"][0]["versions"][0]["sha256"].is_string());
    assert_eq!(
        app.get(&stranger, &format!("/v1/dossiers/{id}/history"))
            .await
            .status(),
        404
    );
    let owner_history = app
        .get(
            &app.citizen(602).await,
            &format!("/v1/dossiers/{id}/history"),
        )
        .await;
    assert_eq!(owner_history.status(), 404, "histories are for auditors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_row_is_named_by_audit_verify() {
    let app = spawn_app().await;
    activity(&app, 610).await;
    unguard(&app).await;
    sqlx::query("update audit_event set action = 'document.read' where seq = 3")
        .execute(app.services.db.pool())
        .await
        .unwrap();
    let (ok, report) = verify(&app);
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_named_by_audit_verify() {
    let app = spawn_app().await;
    activity(&app, 620).await;
    unguard(&app).await;
    sqlx::query("delete from audit_event where seq = 2")
        .execute(app.services.db.pool())
        .await
        .unwrap();
    let (ok, report) = verify(&app);
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_rows_are_named_by_audit_verify() {
    let app = spawn_app().await;
    activity(&app, 630).await;
    unguard(&app).await;
    let pool = app.services.db.pool();
    // Swap rows 3 and 4, hashes and all.
    sqlx::query("update audit_event set seq = -1 where seq = 3")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("update audit_event set seq = 3 where seq = 4")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("update audit_event set seq = 4 where seq = -1")
        .execute(pool)
        .await
        .unwrap();
    let (ok, report) = verify(&app);
    assert!(!ok);
    assert_eq!(report["first_broken"]["seq"], 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_and_writers_make_one_unbroken_chain() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (citizen, id, doc_id) = activity(&app, 640).await;
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let app = app.clone();
        let citizen = citizen.clone();
        let id = id.clone();
        let doc_id = doc_id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15u32 {
                match (worker + i) % 3 {
                    0 => assert_eq!(
                        app.get(&citizen, &format!("/v1/documents/{doc_id}/content"))
                            .await
                            .status(),
                        200
                    ),
                    1 => assert_eq!(
                        app.search(&citizen, &[("q", "verbale")]).await.status(),
                        200
                    ),
                    _ => {
                        let doc = app
                            .add_text(
                                &citizen,
                                &id,
                                &format!("nota {worker} {i}"),
                                "Nota",
                                "public",
                            )
                            .await;
                        assert!(doc["id"].is_string());
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    app.services.auditor.flush().await;
    let (ok, report) = verify(&app);
    assert!(ok, "{report}");
    let (count, max): (i64, i64) = sqlx::query_as("select count(*), max(seq) from audit_event")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(count, max, "no gaps");
    assert!(count > 120, "{count} rows");
}

fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        out.push((file.name().unwrap().into_owned(), content));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_self_verifying_and_reproducible() {
    let app = spawn_app().await;
    let citizen = app.citizen(650).await;
    let staff = app.staff(&["edilizia"]).await;
    let d = app.open_dossier(&citizen, "scia-edilizia", &cf(650)).await;
    let id = d["id"].as_str().unwrap();
    let doc = app
        .add_document(&citizen, id, &sample_pdf("prima versione"), "public")
        .await;
    let doc_id = doc["id"].as_str().unwrap();
    let r = app
        .upload(
            &citizen,
            &format!("/v1/documents/{doc_id}/versions"),
            sample_pdf("seconda versione"),
            "relazione v2.pdf",
            &[],
        )
        .await;
    assert_eq!(r.status(), 201);
    app.add_text(&staff, id, "nota interna", "Nota", "internal")
        .await;

    let first = app.get(&staff, &format!("/v1/dossiers/{id}/export")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/zip");
    let first = first.bytes().await.unwrap();
    let second = app
        .get(&staff, &format!("/v1/dossiers/{id}/export"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(first, second, "the same dossier state gives the same bytes");

    let files = unzip(&first);
    let sums = files
        .iter()
        .find(|(n, _)| n == "manifest-sha256.txt")
        .unwrap();
    let sums = String::from_utf8(sums.1.clone()).unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let (hash, path) = line.split_once("  ").unwrap();
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| n == path)
            .unwrap_or_else(|| panic!("{path} listed but missing"));
        assert_eq!(hex::encode(Sha256::digest(bytes)), hash, "{path}");
        checked += 1;
    }
    assert_eq!(
        checked,
        files.len() - 1,
        "every file but the checksum list is listed"
    );

    let manifest: Value =
        serde_json::from_slice(&files.iter().find(|(n, _)| n == "manifest.json").unwrap().1)
            .unwrap();
    assert_eq!(manifest["dossier"]["number"], d["number"]);
    assert_eq!(manifest["dossier"]["procedure"], "scia-edilizia");
    assert_eq!(manifest["dossier"]["office"], "edilizia");
    assert!(manifest["dossier"]["opened_at"].is_string());
    let versions: Value = app
        .get(&staff, &format!("/v1/documents/{doc_id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    let exported = manifest["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == doc_id)
        .unwrap();
    for (api, zip) in versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(exported["versions"].as_array().unwrap())
    {
        assert_eq!(api["sha256"], zip["sha256"]);
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| n.as_str() == zip["path"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(bytes)),
            api["sha256"].as_str().unwrap()
        );
    }
    assert_eq!(
        manifest["documents"].as_array().unwrap().len(),
        2,
        "staff export holds the internal note too"
    );
    assert!(files.iter().any(|(n, _)| n == "history.json"));

    // The applicant's export leaves internal documents out; exports are audited.
    let own = unzip(
        &app.get(&citizen, &format!("/v1/dossiers/{id}/export"))
            .await
            .bytes()
            .await
            .unwrap(),
    );
    let manifest: Value =
        serde_json::from_slice(&own.iter().find(|(n, _)| n == "manifest.json").unwrap().1).unwrap();
    assert_eq!(manifest["documents"].as_array().unwrap().len(), 1);
    app.services.auditor.flush().await;
    let exports: i64 =
        sqlx::query_scalar("select count(*) from audit_event where action = 'dossier.export'")
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!(exports, 3);
}

/// A SQLite trail and an empty journal directory, in a temporary directory.
async fn journal_and_trail() -> (tempfile::TempDir, fascicolo::db::Db, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = fascicolo::db::Db::open(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("trail.db").display()
    ))
    .await
    .unwrap();
    let journal = dir.path().join("audit");
    std::fs::create_dir_all(&journal).unwrap();
    (dir, db, journal)
}

fn journal_event(i: usize) -> fascicolo::audit::AuditEvent {
    fascicolo::audit::AuditEvent {
        tenant: "comune".to_owned(),
        action: "document.read".to_owned(),
        target: format!("document:{i}"),
        outcome: "ok".to_owned(),
        detail: serde_json::json!({ "i": i }),
        ..Default::default()
    }
}

/// The journal segment files in `dir`, the position the newest one starts at, and whether
/// the single file of earlier versions is still there.
fn journal_files(dir: &std::path::Path) -> (usize, u64, bool) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let bases: Vec<u64> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("journal-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .collect();
    (
        bases.len(),
        bases.iter().copied().max().unwrap_or(0),
        names.iter().any(|n| n == "journal.jsonl"),
    )
}

async fn trail_rows(db: &fascicolo::db::Db) -> (i64, i64) {
    sqlx::query_as::<_, (i64, i64)>(
        "select count(*), count(distinct target) from audit_event where action = 'document.read'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// The node's journal rolls over into new segments as it grows and deletes the ones moved
/// into the table; every event reaches the chain exactly once, across segments, restarts and
/// a journal of one file as earlier versions kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_journal_rolls_over_and_deletes_what_was_moved() {
    use fascicolo::audit::Auditor;
    let (_dir, db, journal) = journal_and_trail().await;
    // Two events an earlier version journaled and never moved.
    let earlier: String = (0..2)
        .map(|i| serde_json::to_string(&journal_event(i)).unwrap() + "\n")
        .collect();
    std::fs::write(journal.join("journal.jsonl"), earlier).unwrap();

    // Segments of 4 KiB: about a dozen events each.
    let auditor = Auditor::start_journaled_in_segments(db.clone(), &journal, 4096).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let auditor = auditor.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                auditor.record(journal_event(2 + t * 50 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, newest, single) = journal_files(&journal);
    assert!(!single, "the single journal file was taken over");
    // About 200 bytes an event: the journal rolled over a dozen times or more.
    assert!(
        newest >= 12 * 4096,
        "402 events, newest segment starts at byte {newest}"
    );
    auditor.flush().await;
    assert_eq!(trail_rows(&db).await, (402, 402));
    // The mover deletes a segment once it has moved all of it: what is left is the segment
    // being written, and at most the one before it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while journal_files(&journal).0 > 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "moved segments were not deleted: {} left",
            journal_files(&journal).0
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(auditor);

    // A restart on the same journal moves nothing twice and goes on where it stopped.
    let auditor = Auditor::start_journaled_in_segments(db.clone(), &journal, 4096).unwrap();
    for i in 402..500 {
        auditor.record(journal_event(i)).await.unwrap();
    }
    auditor.flush().await;
    assert_eq!(trail_rows(&db).await, (500, 500));
    let report = fascicolo::audit::verify(&db).await.unwrap();
    assert!(report.first_broken.is_none(), "{:?}", report.first_broken);
    assert_eq!(report.rows, 500);
}

/// An export is streamed as it is made, writing nothing to disk: a large document arrives
/// whole and intact, and a document whose stored bytes are corrupt fails the export with a
/// JSON integrity error before any archive byte is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_streams_large_documents_and_refuses_corrupt_ones() {
    let app = spawn_app().await;
    let citizen = app.citizen(651).await;
    let staff = app.staff(&["edilizia"]).await;
    let d = app.open_dossier(&citizen, "cila", &cf(651)).await;
    let id = d["id"].as_str().unwrap();
    let large: Vec<u8> = (0..(12 * 1024 * 1024u32))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let doc = app.add_document(&citizen, id, &large, "public").await;
    app.add_document(&citizen, id, &sample_pdf("allegato"), "public")
        .await;

    let r = app.get(&staff, &format!("/v1/dossiers/{id}/export")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed, not spooled first"
    );
    let spooled: Vec<_> = std::fs::read_dir(app.services.blobs.spool_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        spooled.is_empty(),
        "nothing written to the data disk: {spooled:?}"
    );
    let archive = r.bytes().await.unwrap();
    let files = unzip(&archive);
    let (_, exported) = files
        .iter()
        .find(|(n, _)| n.starts_with(&format!("documents/{}/", doc["id"].as_str().unwrap())))
        .unwrap();
    assert_eq!(exported.len(), large.len());
    assert_eq!(
        hex::encode(Sha256::digest(exported)),
        doc["sha256"].as_str().unwrap()
    );

    app.corrupt_blob(doc["sha256"].as_str().unwrap()).await;
    let r = app.get(&staff, &format!("/v1/dossiers/{id}/export")).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "integrity_error");
    let spool = app.services.blobs.spool_dir();
    let left: Vec<_> = std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the spool: {left:?}");
}

/// Behind a trusted reverse proxy the trail records the client the proxies name in
/// `X-Forwarded-For` (the last address that is not a trusted proxy, so a client cannot forge
/// an earlier one); from a peer that is not trusted the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_records_the_client_behind_trusted_proxies_only() {
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["127.0.0.1/32"],
            "198.51.100.1, 203.0.113.7",
            "203.0.113.7",
        ),
        (
            &["127.0.0.1/32", "10.0.0.0/8"],
            "198.51.100.1, 203.0.113.7, 10.1.2.3",
            "203.0.113.7",
        ),
        (&[], "203.0.113.7", "127.0.0.1"),
    ];
    for (n, (trusted, header, expected)) in cases.into_iter().enumerate() {
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let app = spawn_app_with(|c| c.trusted_proxies = trusted).await;
        let n = 660 + n as u32;
        let citizen = app.citizen(n).await;
        let d = app.open_dossier(&citizen, "cila", &cf(n)).await;
        let r = app
            .client
            .get(app.url(&format!("/v1/dossiers/{}", d["id"].as_str().unwrap())))
            .bearer_auth(&citizen)
            .header("x-forwarded-for", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        app.services.auditor.flush().await;
        let recorded: Vec<Option<String>> = sqlx::query_scalar(
            "select client_address from audit_event where action = 'dossier.read'",
        )
        .fetch_all(app.services.db.pool())
        .await
        .unwrap();
        assert_eq!(recorded, vec![Some(expected.to_owned())], "{header}");
    }
}

/// Each read is one line of the journal, on disk before the read is acknowledged (a process
/// killed right after an answer leaves its read in the journal, and the next one moves it). A
/// line torn by a crash, never acknowledged, is dropped and written over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_read_is_one_journal_line_written_before_it_is_acknowledged() {
    use fascicolo::audit::Auditor;
    let (_dir, db, journal) = journal_and_trail().await;
    let segment = journal.join("journal-00000000000000000000.jsonl");
    // What a process journaled before it was killed: two whole lines and a torn one.
    let mut earlier = Vec::new();
    for i in 0..2 {
        serde_json::to_writer(&mut earlier, &journal_event(i)).unwrap();
        earlier.push(b'\n');
    }
    let torn = serde_json::to_vec(&journal_event(99)).unwrap();
    earlier.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&segment, &earlier).unwrap();

    let auditor = Auditor::start_journaled(db.clone(), &journal).unwrap();
    let lines = || -> Vec<fascicolo::audit::AuditEvent> {
        let bytes = std::fs::read(&segment).unwrap();
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        bytes[..end]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("every line is one whole event"))
            .collect()
    };
    for i in 2..10 {
        auditor.record(journal_event(i)).await.unwrap();
        // Acknowledged: its line is in the file, after the lines before it.
        let targets: Vec<String> = lines().into_iter().map(|e| e.target).collect();
        let expected: Vec<String> = (0..=i).map(|j| format!("document:{j}")).collect();
        assert_eq!(targets, expected);
    }
    auditor.flush().await;
    assert_eq!(trail_rows(&db).await, (10, 10));
    let report = fascicolo::audit::verify(&db).await.unwrap();
    assert!(report.first_broken.is_none(), "{:?}", report.first_broken);
}

/// A journal line the mover cannot read (a damaged disk, a hand-edited file) does not hold the
/// trail back: it becomes a row of its own in its place in the chain, saying where it was, how
/// long it was and its SHA-256, and is kept verbatim in the quarantine folder; every readable
/// line around it is moved as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_journal_line_is_quarantined_and_the_rest_is_moved() {
    use fascicolo::audit::{ACTION_JOURNAL_CORRUPT, Auditor, QUARANTINE_DIR};
    use sha2::Digest;
    let (_dir, db, journal) = journal_and_trail().await;
    let line = |i: usize| serde_json::to_vec(&journal_event(i)).unwrap();
    let cut_short = {
        let mut l = line(1);
        l.truncate(l.len() / 2);
        l
    };
    let not_utf8 = b"{\"tenant\":\"comune\",\"action\":\"\xff\xfe\"}".to_vec();
    let begun_broken = b"{\"read\":9,\"event\":{\"tenant\":".to_vec();
    let bad = [cut_short, not_utf8, begun_broken];
    let mut bytes = Vec::new();
    let mut positions = Vec::new();
    for piece in [
        line(0),
        bad[0].clone(),
        line(2),
        bad[1].clone(),
        bad[2].clone(),
        line(3),
    ] {
        positions.push(bytes.len() as u64);
        bytes.extend_from_slice(&piece);
        bytes.push(b'\n');
    }
    std::fs::write(journal.join("journal-00000000000000000000.jsonl"), &bytes).unwrap();

    let auditor = Auditor::start_journaled_in_segments(db.clone(), &journal, 4096).unwrap();
    auditor.record(journal_event(4)).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), auditor.flush())
        .await
        .expect("the mover moved past the unreadable lines");

    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "select tenant, action, target, outcome, detail from audit_event order by seq",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let order: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let expected = [
        "document:0".to_owned(),
        format!("journal:{}", positions[1]),
        "document:2".to_owned(),
        format!("journal:{}", positions[3]),
        format!("journal:{}", positions[4]),
        "document:3".to_owned(),
        "document:4".to_owned(),
    ];
    assert_eq!(order, expected, "rows in journal order");
    for (k, (index, bad)) in [(1, &bad[0]), (3, &bad[1]), (4, &bad[2])]
        .into_iter()
        .enumerate()
    {
        let (tenant, action, _, outcome, detail) = &rows[index];
        assert_eq!(
            (tenant.as_str(), action.as_str(), outcome.as_str()),
            ("comune", ACTION_JOURNAL_CORRUPT, "corrupt"),
            "row {index}"
        );
        let detail: serde_json::Value = serde_json::from_str(detail).unwrap();
        let position = positions[[1, 3, 4][k]];
        assert_eq!(detail["position"], position, "{detail}");
        assert_eq!(detail["bytes"], bad.len(), "{detail}");
        assert_eq!(
            detail["sha256"],
            hex::encode(sha2::Sha256::digest(bad)),
            "{detail}"
        );
        let kept = journal
            .join(QUARANTINE_DIR)
            .join(detail["quarantine"].as_str().unwrap());
        assert_eq!(&std::fs::read(&kept).unwrap(), bad, "{}", kept.display());
    }
    let report = fascicolo::audit::verify(&db).await.unwrap();
    assert!(report.first_broken.is_none(), "{:?}", report.first_broken);
}
