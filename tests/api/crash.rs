use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::cf;
use crate::process::{ServerProcess, cli};

async fn search(client: &reqwest::Client, base: &str, token: &str, q: &str) -> Value {
    client
        .get(format!("{base}/v1/search"))
        .bearer_auth(token)
        .query(&[("q", q), ("limit", "100")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_every_acknowledged_document_is_present_extracted_and_indexed_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let citizen = cli(
        dir.path(),
        &[
            "user",
            "add",
            "--role",
            "citizen",
            "--name",
            "C",
            "--cf",
            &cf(80),
        ],
    );
    let token = citizen["token"].as_str().unwrap().to_owned();
    let auditor = cli(
        dir.path(),
        &["user", "add", "--role", "auditor", "--name", "A"],
    );
    let auditor = auditor["token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let dossier: Value = client
        .post(format!("{}/v1/dossiers", server.base))
        .bearer_auth(&token)
        .json(&json!({"procedure": "cila", "applicant_cf": cf(80), "subject": "Carico"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/v1/dossiers/{}/documents",
        server.base,
        dossier["id"].as_str().unwrap()
    );

    // Four clients upload until the server dies under them; each keeps what was acknowledged.
    let mut tasks = Vec::new();
    for worker in 0..4u32 {
        let client = client.clone();
        let url = url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = BTreeMap::new();
            for n in 0..400u32 {
                let marker = format!("crashmark{worker}x{n}");
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(
                        format!("verbale di prova {marker}").into_bytes(),
                    )
                    .file_name("v.txt"),
                );
                match client
                    .post(&url)
                    .bearer_auth(&token)
                    .multipart(form)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap();
                        acknowledged.insert(marker, body["id"].as_str().unwrap().to_owned());
                    }
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    let mut acknowledged = BTreeMap::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert!(
        acknowledged.len() > 10,
        "only {} uploads were acknowledged",
        acknowledged.len()
    );

    let server = ServerProcess::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = acknowledged.len() as u64;
    loop {
        let all = search(&client, &server.base, &auditor, "verbale").await;
        if all["total"].as_u64() >= Some(expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} indexed after restart",
            all["total"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (marker, id) in &acknowledged {
        let found = search(&client, &server.base, &token, marker).await;
        assert_eq!(
            found["total"], 1,
            "{marker} must be indexed exactly once: {found}"
        );
        assert_eq!(&found["hits"][0]["document_id"], id);
        let doc: Value = client
            .get(format!("{}/v1/documents/{id}", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["extraction"]["status"], "done", "{doc}");
    }
    // Nothing indexed twice: the index holds exactly the stored documents.
    let listed: Value = client
        .get(format!(
            "{}/v1/dossiers/{}/documents",
            server.base,
            dossier["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = listed["items"].as_array().unwrap().len() as u64;
    assert!(stored >= expected);
    let all = search(&client, &server.base, &auditor, "verbale").await;
    assert_eq!(all["total"], stored, "index entries = stored documents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_the_same_answers_without_re_extracting() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let staff = cli(
        dir.path(),
        &[
            "user", "add", "--role", "staff", "--name", "S", "--office", "edilizia",
        ],
    );
    let token = staff["token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let words = [
        "tettoia",
        "recinzione",
        "facciata",
        "balcone",
        "tettoia facciata",
    ];
    let mut dossiers = Vec::new();
    for (i, text) in words.iter().enumerate() {
        let d: Value = client
            .post(format!("{}/v1/dossiers", server.base))
            .bearer_auth(&token)
            .json(&json!({"procedure": "cila", "applicant_cf": cf(81 + i as u32), "subject": "Lavori"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let form = reqwest::multipart::Form::new().text("kind", "plan").part(
            "file",
            reqwest::multipart::Part::bytes(format!("relazione: {text}").into_bytes())
                .file_name("r.txt"),
        );
        let r = client
            .post(format!(
                "{}/v1/dossiers/{}/documents",
                server.base,
                d["id"].as_str().unwrap()
            ))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        dossiers.push(d);
    }
    let queries = [
        "tettoia",
        "facciata",
        "relazione",
        "\"tettoia facciata\"",
        "recinzione OR balcone",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while search(&client, &server.base, &token, "relazione").await["total"] != 5 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut before = Vec::new();
    for q in queries {
        before.push(search(&client, &server.base, &token, q).await);
    }
    server.stop();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();

    // With no extractor available, a re-extraction would lose the texts: the cache must serve.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .arg("reindex")
        .env("FASCICOLO_DATA_DIR", dir.path())
        .env("FASCICOLO_EXTRACTOR", "/nonexistent/extractor")
        .env("RUST_LOG", "warn")
        .env_remove("FASCICOLO_DATABASE_URL")
        .env_remove("FASCICOLO_BLOB_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["documents"], 5);

    let server = ServerProcess::start(dir.path());
    for (q, expected) in queries.iter().zip(before) {
        let after = search(&client, &server.base, &token, q).await;
        assert_eq!(after["total"], expected["total"], "{q}");
        assert_eq!(after["facets"], expected["facets"], "{q}");
        let ids = |v: &Value| -> Vec<String> {
            let mut ids: Vec<String> = v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["document_id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&after), ids(&expected), "{q}");
    }
}

/// GETs `url` as `token` and checks it answered 200.
async fn get_ok(client: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    let r = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answered_before_a_sigkill_are_in_the_audit_trail_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let citizen = cli(
        dir.path(),
        &[
            "user",
            "add",
            "--role",
            "citizen",
            "--name",
            "C",
            "--cf",
            &cf(90),
        ],
    );
    let token = citizen["token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let dossier: Value = client
        .post(format!("{}/v1/dossiers", server.base))
        .bearer_auth(&token)
        .json(&json!({"procedure": "cila", "applicant_cf": cf(90), "subject": "Letture"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = dossier["id"].as_str().unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"verbale delle letture".to_vec()).file_name("v.txt"),
    );
    let document: Value = client
        .post(format!("{}/v1/dossiers/{id}/documents", server.base))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let document = document["id"].as_str().unwrap();
    let mut answered = 0;
    for _ in 0..60 {
        get_ok(
            &client,
            &format!("{}/v1/dossiers/{id}", server.base),
            &token,
        )
        .await;
        answered += 1;
    }
    // A search is journaled once it has run, with its hit count, before it is answered.
    let mut searched = 0;
    for q in ["letture", "pratica", "\"nessuna frase\"", "cila"] {
        for _ in 0..5 {
            let r = client
                .get(format!("{}/v1/search", server.base))
                .bearer_auth(&token)
                .query(&[("q", q)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            searched += 1;
        }
    }
    // A download is journaled once the document is looked up, with its outcome and dossier.
    let mut downloaded = 0;
    for _ in 0..20 {
        let url = format!("{}/v1/documents/{document}/content", server.base);
        let r = get_ok(&client, &url, &token).await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"verbale delle letture");
        downloaded += 1;
    }
    // Killed at once: the reads may still be only in the journal, not yet in the table.
    server.kill();
    let server = ServerProcess::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = cli(dir.path(), &["audit", "verify"]);
        assert!(report["first_broken"].is_null(), "{report}");
        let db = format!(
            "sqlite://{}?mode=ro",
            dir.path().join("fascicolo.db").display()
        );
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db).await.unwrap();
        let reads: i64 =
            sqlx::query_scalar("select count(*) from audit_event where action = 'dossier.read'")
                .fetch_one(&pool)
                .await
                .unwrap();
        let searches: Vec<(String, String)> =
            sqlx::query_as("select outcome, detail from audit_event where action = 'search'")
                .fetch_all(&pool)
                .await
                .unwrap();
        let downloads: Vec<(String, Option<String>)> = sqlx::query_as(
            "select outcome, dossier_id from audit_event where action = 'document.download'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        if reads == answered && searches.len() == searched && downloads.len() == downloaded {
            // Every answered read is there whole: its record was durable before its answer.
            for (outcome, dossier) in &downloads {
                assert_eq!(
                    (outcome.as_str(), dossier.as_deref()),
                    ("ok", Some(id)),
                    "a download's record"
                );
            }
            for (outcome, detail) in &searches {
                let detail: Value = serde_json::from_str(detail).unwrap();
                assert!(detail["query"].is_string(), "{detail}");
                assert_eq!(outcome, "ok", "{detail}");
                assert!(detail["total"].is_u64(), "a search's count: {detail}");
            }
            break;
        }
        assert!(searches.len() <= searched, "a search recorded twice");
        assert!(downloads.len() <= downloaded, "a download recorded twice");
        assert!(
            reads < answered,
            "a read recorded twice: {reads} of {answered}"
        );
        assert!(
            Instant::now() < deadline,
            "only {reads} of {answered} answered reads reached the trail"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
}
