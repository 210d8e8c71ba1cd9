use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{cf, sample_pdf, spawn_app, spawn_app_with};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_round_trips_with_sniffed_type_and_safe_name() {
    let app = spawn_app().await;
    let token = app.citizen(30).await;
    let dossier = app.open_dossier(&token, "scia-edilizia", &cf(30)).await;
    let id = dossier["id"].as_str().unwrap();
    let pdf = sample_pdf("Relazione tecnica asseverata");

    let response = app
        .upload(
            &token,
            &format!("/v1/dossiers/{id}/documents"),
            pdf.clone(),
            "../../Relazione \"tecnica\"; città.pdf",
            &[
                ("title", "Relazione tecnica"),
                ("kind", "plan"),
                ("visibility", "public"),
            ],
        )
        .await;

    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["sha256"], sha256_hex(&pdf));
    assert_eq!(created["size"], pdf.len());
    assert_eq!(
        created["media_type"], "application/pdf",
        "sniffed, not the client's claim"
    );
    assert_eq!(created["filename"], "Relazione \"tecnica\"; città.pdf");
    assert_eq!(created["kind"], "plan");
    assert_eq!(created["version"], 1);
    assert_eq!(created["dossier_id"], id);
    let doc = created["id"].as_str().unwrap();

    let mut metadata: Value = app
        .get(&token, &format!("/v1/documents/{doc}"))
        .await
        .json()
        .await
        .unwrap();
    let mut expected = created.clone();
    // Extraction runs in the background: it may have finished between the two calls.
    metadata.as_object_mut().unwrap().remove("extraction");
    expected.as_object_mut().unwrap().remove("extraction");
    assert_eq!(metadata, expected);

    let content = app
        .get(&token, &format!("/v1/documents/{doc}/content"))
        .await;
    assert_eq!(content.status(), 200);
    let headers = content.headers().clone();
    assert_eq!(headers["etag"], format!("\"{}\"", sha256_hex(&pdf)));
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"Relazione _tecnica__ citt_.pdf\""),
        "{disposition}"
    );
    assert!(!disposition.contains('\r') && !disposition.contains('\n'));
    assert_eq!(content.bytes().await.unwrap().as_ref(), pdf.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_supports_conditional_and_range_requests() {
    let app = spawn_app().await;
    let token = app.citizen(31).await;
    let dossier = app.open_dossier(&token, "cila", &cf(31)).await;
    let bytes: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let doc = app
        .add_document(&token, dossier["id"].as_str().unwrap(), &bytes, "public")
        .await;
    let path = app.url(&format!(
        "/v1/documents/{}/content",
        doc["id"].as_str().unwrap()
    ));
    let etag = format!("\"{}\"", sha256_hex(&bytes));

    let not_modified = app
        .client
        .get(&path)
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);

    let partial = app
        .client
        .get(&path)
        .bearer_auth(&token)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(partial.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &bytes[100..200]);

    let suffix = app
        .client
        .get(&path)
        .bearer_auth(&token)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.bytes().await.unwrap().as_ref(), &bytes[9990..]);

    let beyond = app
        .client
        .get(&path)
        .bearer_auth(&token)
        .header("range", "bytes=20000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */10000");

    let stale = app
        .client
        .get(&path)
        .bearer_auth(&token)
        .header("range", "bytes=0-9")
        .header("if-range", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        200,
        "an If-Range that does not match gets the whole content"
    );
    assert_eq!(stale.bytes().await.unwrap().len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_stays_retrievable() {
    let app = spawn_app().await;
    let citizen = app.citizen(32).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(32)).await;
    let first = sample_pdf("Prima stesura");
    let doc = app
        .add_document(&citizen, dossier["id"].as_str().unwrap(), &first, "public")
        .await;
    let doc_id = doc["id"].as_str().unwrap();
    let second = sample_pdf("Seconda stesura, corretta");

    let response = app
        .upload(
            &citizen,
            &format!("/v1/documents/{doc_id}/versions"),
            second.clone(),
            "v2.pdf",
            &[],
        )
        .await;
    assert_eq!(response.status(), 201);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["sha256"], sha256_hex(&second));
    assert_eq!(updated["filename"], "v2.pdf");
    assert_eq!(updated["title"], doc["title"]);

    let versions: Value = app
        .get(&citizen, &format!("/v1/documents/{doc_id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    let hashes: Vec<&str> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(hashes, vec![sha256_hex(&first), sha256_hex(&second)]);
    for (n, expected) in [(1, &first), (2, &second)] {
        let body = app
            .get(
                &citizen,
                &format!("/v1/documents/{doc_id}/versions/{n}/content"),
            )
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.as_ref(), expected.as_slice(), "version {n}");
    }
    let latest = app
        .get(&citizen, &format!("/v1/documents/{doc_id}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(latest.as_ref(), second.as_slice());
    assert_eq!(
        app.get(
            &citizen,
            &format!("/v1/documents/{doc_id}/versions/3/content")
        )
        .await
        .status(),
        404
    );

    // A version form takes only the file.
    let response = app
        .upload(
            &citizen,
            &format!("/v1/documents/{doc_id}/versions"),
            b"x".to_vec(),
            "v3.txt",
            &[("visibility", "internal")],
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_uploaded_twice_are_stored_once() {
    let app = spawn_app().await;
    let citizen = app.citizen(33).await;
    let d1 = app.open_dossier(&citizen, "cila", &cf(33)).await;
    let d2 = app.open_dossier(&citizen, "scia-edilizia", &cf(33)).await;
    let bytes = sample_pdf("Documento di identità");

    let a = app
        .add_document(&citizen, d1["id"].as_str().unwrap(), &bytes, "public")
        .await;
    let b = app
        .add_document(&citizen, d2["id"].as_str().unwrap(), &bytes, "public")
        .await;

    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["sha256"], b["sha256"]);
    assert_eq!(app.blob_count().await, 1, "one object for identical bytes");
    assert!(
        app.spool_files().is_empty(),
        "no spool files left: {:?}",
        app.spool_files()
    );
    let other = app
        .add_document(&citizen, d2["id"].as_str().unwrap(), b"altro", "public")
        .await;
    assert_ne!(other["sha256"], a["sha256"]);
    assert_eq!(app.blob_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_is_refused_on_read() {
    let app = spawn_app().await;
    let citizen = app.citizen(34).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(34)).await;
    let bytes = sample_pdf("Planimetria catastale");
    let doc = app
        .add_document(&citizen, dossier["id"].as_str().unwrap(), &bytes, "public")
        .await;
    let path = format!("/v1/documents/{}/content", doc["id"].as_str().unwrap());
    assert_eq!(app.get(&citizen, &path).await.status(), 200);

    app.corrupt_blob(doc["sha256"].as_str().unwrap()).await;

    let response = app.get(&citizen, &path).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "integrity_error");
    let ranged = app
        .client
        .get(app.url(&path))
        .bearer_auth(&citizen)
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ranged.status(),
        500,
        "a range of a corrupt blob is refused too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_corrupt_blob_never_arrives_whole() {
    let app = spawn_app().await;
    let citizen = app.citizen(35).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(35)).await;
    // Past the verify-before-send limit, so it is verified while streaming.
    let bytes: Vec<u8> = (0..(9 * 1024 * 1024u32))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let doc = app
        .add_document(&citizen, dossier["id"].as_str().unwrap(), &bytes, "public")
        .await;
    let path = format!("/v1/documents/{}/content", doc["id"].as_str().unwrap());
    let intact = app.get(&citizen, &path).await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&intact), sha256_hex(&bytes));

    app.corrupt_blob(doc["sha256"].as_str().unwrap()).await;

    let response = app.get(&citizen, &path).await;
    let body = response.bytes().await;
    assert!(
        body.is_err(),
        "the transfer must fail, got {} bytes",
        body.map(|b| b.len()).unwrap_or(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_upload_is_413_and_leaves_nothing_behind() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 1024 * 1024).await;
    let citizen = app.citizen(36).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(36)).await;
    let id = dossier["id"].as_str().unwrap();

    // Announced size past the limit.
    let response = app
        .upload(
            &citizen,
            &format!("/v1/dossiers/{id}/documents"),
            vec![7u8; 2 * 1024 * 1024],
            "big.bin",
            &[],
        )
        .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Streamed without a length: refused as the bytes pass the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![9u8; 64 * 1024])).collect();
    let stream = futures_util::stream::iter(chunks);
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
        .file_name("stream.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let response = app
        .client
        .post(app.url(&format!("/v1/dossiers/{id}/documents")))
        .bearer_auth(&citizen)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    assert_eq!(app.blob_count().await, 0, "nothing stored");
    // The refused upload's handler may still be unwinding when its 413 arrives (the
    // connection answers once the body stops); its spool file goes when it ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.spool_files().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        app.spool_files().is_empty(),
        "spool files left: {:?}",
        app.spool_files()
    );
    let listed: Value = app
        .get(&citizen, &format!("/v1/dossiers/{id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());

    // Just under the limit is fine.
    app.add_document(&citizen, id, &vec![1u8; 1024 * 1024], "public")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upload_forms_are_400s() {
    let app = spawn_app().await;
    let citizen = app.citizen(37).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(37)).await;
    let path = format!("/v1/dossiers/{}/documents", dossier["id"].as_str().unwrap());
    for fields in [
        vec![("kind", "poem")],
        vec![("visibility", "secret")],
        vec![("unexpected", "x")],
        vec![("title", "   ")],
    ] {
        let response = app
            .upload(&citizen, &path, b"x".to_vec(), "a.txt", &fields)
            .await;
        assert_eq!(response.status(), 400, "{fields:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_upload");
    }
    let no_file = reqwest::multipart::Form::new().text("title", "x");
    let response = app
        .client
        .post(app.url(&path))
        .bearer_auth(&citizen)
        .multipart(no_file)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let not_multipart = app
        .client
        .post(app.url(&path))
        .bearer_auth(&citizen)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(not_multipart.status(), 400);
    assert!(app.spool_files().is_empty());
}

/// Uploads waiting at the same time share one transaction, and each is still whole: its
/// document, timeline event, change-log entry and audit record. When one of them is refused,
/// the others commit and the refused one is answered with its own error.
///
/// A single-threaded runtime: every `create` below is queued before the task that writes the
/// queue first runs, so all eight meet in the same transaction.
#[tokio::test]
async fn documents_created_together_commit_together_and_are_refused_alone() {
    use fascicolo::blobs::StoredBlob;
    use fascicolo::db::documents::{NewContent, NewDocument, create};
    use fascicolo::domain::{ContentHash, DocumentKind, DossierId, Visibility};

    let app = spawn_app().await;
    let user = fascicolo::users::add_user(
        &app.services,
        "citizen".parse().unwrap(),
        "Maria Rossi",
        Some(&cf(41)),
        &[],
    )
    .await
    .unwrap();
    let dossier = app
        .open_dossier(&user.token, "scia-edilizia", &cf(41))
        .await;
    let dossier_id = DossierId::parse(dossier["id"].as_str().unwrap()).unwrap();
    let first = app
        .add_document(
            &user.token,
            dossier["id"].as_str().unwrap(),
            &sample_pdf("Planimetria"),
            "public",
        )
        .await;
    let stored = StoredBlob {
        hash: ContentHash::parse(first["sha256"].as_str().unwrap()).unwrap(),
        size: first["size"].as_u64().unwrap(),
        deduplicated: true,
        chunks: Default::default(),
    };
    // Deduplicated against bytes that are not in the store (collected meanwhile, say).
    let vanished = StoredBlob {
        hash: ContentHash::parse(&sha256_hex(b"never stored")).unwrap(),
        size: 12,
        deduplicated: true,
        chunks: Default::default(),
    };
    let actor = fascicolo::audit::Actor {
        tenant: app.config.tenant.clone(),
        id: Some(user.id),
        role: Some("citizen".to_owned()),
        client: None,
    };
    let titles: Vec<String> = (0..8).map(|i| format!("Allegato {i}")).collect();
    let creates = titles.iter().enumerate().map(|(i, title)| {
        let (dossier, blob) = match i {
            // A dossier that does not exist: the shared transaction fails on it.
            3 => (DossierId::new(), stored.clone()),
            5 => (dossier_id, vanished.clone()),
            _ => (dossier_id, stored.clone()),
        };
        create(
            &app.services.db,
            NewDocument {
                tenant: &app.config.tenant,
                dossier,
                title,
                kind: DocumentKind::Attachment,
                visibility: Visibility::Public,
                content: NewContent {
                    blob,
                    media_type: "application/pdf",
                    filename: "allegato.pdf",
                    created_by: user.id,
                    created_role: fascicolo::domain::Role::Citizen,
                    channel: fascicolo::domain::UploadChannel::Online,
                    blobs: &app.services.blobs,
                },
            },
            &actor,
        )
    });
    let outcomes = futures_util::future::join_all(creates).await;

    assert!(outcomes[3].is_err(), "unknown dossier: {:?}", outcomes[3]);
    assert!(
        matches!(outcomes[5], Err(fascicolo::db::DbError::BlobVanished)),
        "{:?}",
        outcomes[5]
    );
    let created: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 5].contains(i))
        .map(|(i, o)| match o {
            Ok(id) => id.to_string(),
            Err(e) => panic!("document {i} was refused with the others': {e}"),
        })
        .collect();
    assert_eq!(created.len(), 6);

    let timeline = app
        .get(&user.token, &format!("/v1/dossiers/{dossier_id}/timeline"))
        .await
        .text()
        .await
        .unwrap();
    let listed: Value = app
        .get(&user.token, &format!("/v1/dossiers/{dossier_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    for (i, id) in created.iter().enumerate() {
        let response = app.get(&user.token, &format!("/v1/documents/{id}")).await;
        assert_eq!(response.status(), 200, "document {i}");
        let record: Value = response.json().await.unwrap();
        assert_eq!(record["sha256"], first["sha256"]);
        assert_eq!(record["version"], 1);
        assert!(
            timeline.contains(id.as_str()),
            "document {i} on the timeline"
        );
        assert!(listed.to_string().contains(id.as_str()));
    }
    // The dossier holds the first upload and the six, nothing of the refused two.
    assert!(!listed.to_string().contains("Allegato 3"));
    assert!(!listed.to_string().contains("Allegato 5"));

    let pool = app.services.db.pool();
    for id in &created {
        let target = format!("document:{id}");
        let audited: i64 = sqlx::query_scalar(
            "select count(*) from audit_event where action = 'document.create' and target = $1",
        )
        .bind(&target)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(audited, 1, "{target} audited once");
        let logged: i64 = sqlx::query_scalar(
            "select count(*) from change_log where entity_id = $1 and op = 'create'",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(logged, 1, "{id} in the change log");
    }
    let creations: i64 =
        sqlx::query_scalar("select count(*) from audit_event where action = 'document.create'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(creations, 7, "the first upload and the six");
    let report = fascicolo::audit::verify(&app.services.db).await.unwrap();
    assert!(report.first_broken.is_none(), "{:?}", report.first_broken);

    // All of them are found by search once indexed.
    app.indexed().await;
    let search: Value = app
        .search(&user.token, &[("dossier", &dossier_id.to_string())])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(search["total"], 7, "{search}");
}
