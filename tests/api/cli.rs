use serde_json::Value;

use crate::helpers::{cf, sample_pdf, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_beside_a_running_server_prints_a_working_token() {
    let app = spawn_app().await;
    let output = app.cli(&[
        "user",
        "add",
        "--role",
        "staff",
        "--name",
        "Giulia Neri",
        "--office",
        "anagrafe",
        "--office",
        "tributi",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let token = created["token"].as_str().unwrap();
    assert!(created["id"].as_str().is_some());

    let me: Value = app.get(token, "/v1/me").await.json().await.unwrap();
    assert_eq!(me["role"], "staff");
    assert_eq!(me["name"], "Giulia Neri");
    assert_eq!(me["offices"], serde_json::json!(["anagrafe", "tributi"]));

    // Only the hash is stored.
    let stored: i64 = sqlx::query_scalar("select count(*) from api_token where token_hash = $1")
        .bind(token)
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0, "the secret itself must not be stored");

    for bad in [
        vec!["user", "add", "--role", "citizen", "--name", "X"],
        vec![
            "user",
            "add",
            "--role",
            "citizen",
            "--name",
            "X",
            "--cf",
            "RSSMRA85T10A562T",
        ],
        vec![
            "user", "add", "--role", "staff", "--name", "X", "--office", "nowhere",
        ],
        vec!["user", "add", "--role", "wizard", "--name", "X"],
    ] {
        let output = app.cli(&bad);
        assert!(!output.status.success(), "{bad:?} should fail");
        assert!(!String::from_utf8_lossy(&output.stderr).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_corrupt_and_missing_blobs() {
    let app = spawn_app().await;
    let citizen = app.citizen(40).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(40)).await;
    let id = dossier["id"].as_str().unwrap();
    let a = app
        .add_document(&citizen, id, &sample_pdf("uno"), "public")
        .await;
    let b = app
        .add_document(&citizen, id, &sample_pdf("due"), "public")
        .await;

    let clean = app.cli(&["verify"]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let report: Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["checked"], 2);

    app.corrupt_blob(a["sha256"].as_str().unwrap()).await;
    app.services
        .blobs
        .delete(&fascicolo::domain::ContentHash::parse(b["sha256"].as_str().unwrap()).unwrap())
        .await
        .unwrap();

    let dirty = app.cli(&["verify"]);
    assert!(!dirty.status.success());
    let report: Value = serde_json::from_slice(&dirty.stdout).unwrap();
    assert_eq!(report["corrupt"], serde_json::json!([a["sha256"]]));
    assert_eq!(report["missing"], serde_json::json!([b["sha256"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_only_old_unreferenced_blobs() {
    let app = spawn_app().await;
    let citizen = app.citizen(41).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(41)).await;
    let kept = app
        .add_document(
            &citizen,
            dossier["id"].as_str().unwrap(),
            &sample_pdf("tenuto"),
            "public",
        )
        .await;
    // An orphan, as a crash between the blob write and the commit would leave.
    let mut spool = app.services.blobs.spool(1 << 20).await.unwrap();
    spool.write(b"orphan bytes").await.unwrap();
    let orphan = app
        .services
        .blobs
        .put(&spool.finish().await.unwrap(), false)
        .await
        .unwrap();
    assert_eq!(app.blob_count().await, 2);

    let young = app.cli(&["gc"]);
    assert!(
        young.status.success(),
        "{}",
        String::from_utf8_lossy(&young.stderr)
    );
    let report: Value = serde_json::from_slice(&young.stdout).unwrap();
    assert_eq!(
        report["deleted"], 0,
        "the default grace period keeps fresh orphans"
    );
    assert_eq!(report["kept_young"], 1);

    let now = app.cli(&["gc", "--grace-hours", "0"]);
    assert!(now.status.success());
    let report: Value = serde_json::from_slice(&now.stdout).unwrap();
    assert_eq!(report["deleted"], 1);
    let left = app.services.blobs.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].hash.to_hex(), kept["sha256"].as_str().unwrap());
    assert_ne!(left[0].hash, orphan.hash);
    let content = app
        .get(
            &citizen,
            &format!("/v1/documents/{}/content", kept["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(content.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_loads_a_folder_tree_that_becomes_searchable() {
    let app = spawn_app().await;
    let tree = tempfile::tempdir().unwrap();
    let first = tree.path().join("pratica-001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(
        first.join("manifest.json"),
        serde_json::json!({
            "procedure": "scia-edilizia",
            "applicant_cf": cf(42),
            "subject": "Veranda sul retro",
            "documents": [
                {"file": "istanza.pdf", "title": "Istanza", "kind": "application", "visibility": "public"},
                {"file": "nota.txt", "title": "Nota", "kind": "other"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        first.join("istanza.pdf"),
        sample_pdf("Istanza per la veranda importata"),
    )
    .unwrap();
    std::fs::write(first.join("nota.txt"), "nota interna importata").unwrap();
    let second = tree.path().join("pratica-002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("manifest.json"),
        serde_json::json!({"procedure": "riduzione-tari", "applicant_cf": cf(43), "subject": "Compostaggio"}).to_string(),
    )
    .unwrap();
    std::fs::write(
        second.join("ricevuta.txt"),
        "ricevuta importata del versamento",
    )
    .unwrap();

    let output = app.cli(&["import", tree.path().to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report, serde_json::json!({"dossiers": 2, "documents": 3}));

    let auditor = app.user("auditor", None, &[]).await;
    let (found, _) = app
        .search_until(
            &auditor,
            &[("q", "importata")],
            3,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["total"], 3, "{found}");
    let applicant = app.citizen(42).await;
    let mine: Value = app
        .search(&applicant, &[("q", "importata")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        mine["total"], 1,
        "the applicant sees the public document only (documents are internal unless the \
         manifest says public): {mine}"
    );
    let dossiers: Value = app
        .get(&applicant, "/v1/dossiers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dossiers["items"][0]["channel"], "desk");

    let bad = tempfile::tempdir().unwrap();
    std::fs::create_dir(bad.path().join("x")).unwrap();
    std::fs::write(
        bad.path().join("x/manifest.json"),
        r#"{"procedure":"nope","applicant_cf":"x","subject":"y"}"#,
    )
    .unwrap();
    let output = app.cli(&["import", bad.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown procedure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_link_prints_a_one_time_link_for_office_accounts_only() {
    let app = spawn_app().await;
    let created = app.cli(&[
        "user",
        "add",
        "--role",
        "auditor",
        "--name",
        "Nora Ispettrice",
    ]);
    assert!(created.status.success());
    let id = serde_json::from_slice::<Value>(&created.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let output = app.cli(&["user", "activation-link", "--user", &id]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let link = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with("http://localhost:8080/attivazione/"),
        "{link}"
    );
    // The link opens the activation page of the running server, once.
    let path = format!("/attivazione/{}", link.rsplit('/').next().unwrap());
    let page = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Nora Ispettrice"));
    // A newer link voids the older one.
    let again = app.cli(&["user", "activation-link", "--user", &id]);
    assert!(again.status.success());
    assert_eq!(
        app.client
            .get(app.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Citizens sign in with codes: no link for them; nor for an unknown id.
    let citizen = app.cli(&[
        "user",
        "add",
        "--role",
        "citizen",
        "--name",
        "C",
        "--cf",
        &cf(31),
    ]);
    let citizen_id = serde_json::from_slice::<Value>(&citizen.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for user in [citizen_id.as_str(), "not-an-id"] {
        let refused = app.cli(&["user", "activation-link", "--user", user]);
        assert!(!refused.status.success(), "{user}");
        assert!(!String::from_utf8_lossy(&refused.stderr).is_empty());
    }
}
