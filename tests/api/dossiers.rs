use serde_json::{Value, json};

use crate::helpers::{cf, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_opens_a_dossier_and_reads_it_back() {
    let app = spawn_app().await;
    let token = app.citizen(1).await;

    let response = app
        .post_dossier(
            &token,
            &json!({"procedure": "scia-edilizia", "applicant_cf": cf(1).to_lowercase(), "subject": "  Rifacimento facciata  "}),
        )
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["procedure"], "scia-edilizia");
    assert_eq!(
        created["office"], "edilizia",
        "the office comes from the catalogue"
    );
    assert_eq!(created["status"], "submitted");
    assert_eq!(created["channel"], "online");
    assert_eq!(
        created["applicant_cf"],
        cf(1),
        "the code is normalised to upper case"
    );
    assert_eq!(created["subject"], "Rifacimento facciata");
    let number = created["number"].as_str().unwrap();
    let year = jiff::Timestamp::now().in_tz("Europe/Rome").unwrap().year();
    assert!(
        number.starts_with(&format!("{year}/")) && number.len() == 11,
        "number {number}"
    );
    assert_eq!(
        location,
        format!("/v1/dossiers/{}", created["id"].as_str().unwrap())
    );

    let fetched: Value = app.get(&token, &location).await.json().await.unwrap();
    assert_eq!(fetched, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dossier_numbers_follow_one_sequence_per_year() {
    let app = spawn_app().await;
    let token = app.citizen(2).await;
    let mut numbers = Vec::new();
    for _ in 0..3 {
        let d = app.open_dossier(&token, "cambio-residenza", &cf(2)).await;
        numbers.push(d["number"].as_str().unwrap().to_owned());
    }
    let seqs: Vec<u32> = numbers
        .iter()
        .map(|n| n.split('/').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "numbers {numbers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_openings_get_distinct_numbers() {
    let app = spawn_app().await;
    let token = app.citizen(3).await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = app.client.clone();
        let url = app.url("/v1/dossiers");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"procedure": "passo-carraio", "applicant_cf": cf(3), "subject": "Passo carraio"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["number"].as_str().unwrap().to_owned()
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        12,
        "every dossier got its own number: {numbers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_codice_fiscale_is_a_clear_400() {
    let app = spawn_app().await;
    let token = app.staff(&["edilizia"]).await;
    let mut wrong_check = cf(4);
    let last = wrong_check.pop().unwrap();
    wrong_check.push(if last == 'A' { 'B' } else { 'A' });

    for (code, fragment) in [
        (wrong_check.as_str(), "check character"),
        ("RSSMRA85T10A56", "16 characters"),
        ("RSSMRA85Z10A562S", "month"),
        ("1234567890123456", "must be a letter"),
    ] {
        let response = app
            .post_dossier(
                &token,
                &json!({"procedure": "cila", "applicant_cf": code, "subject": "x"}),
            )
            .await;
        assert_eq!(response.status(), 400, "code {code}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_codice_fiscale");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{code}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400s_with_json_bodies() {
    let app = spawn_app().await;
    let token = app.citizen(5).await;
    let cases = [
        json!({"procedure": "no-such-procedure", "applicant_cf": cf(5), "subject": "x"}),
        json!({"procedure": "cila", "applicant_cf": cf(5), "subject": "   "}),
        json!({"procedure": "cila", "applicant_cf": cf(5)}),
        json!({"procedure": "cila", "applicant_cf": cf(5), "subject": "x", "extra": 1}),
        json!(["not", "an", "object"]),
    ];
    for body in cases {
        let response = app.post_dossier(&token, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    let response = app
        .client
        .post(app.url("/v1/dossiers"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_open_dossiers_at_the_desk_only_for_their_offices() {
    let app = spawn_app().await;
    let staff = app.staff(&["suap"]).await;

    let desk = app.open_dossier(&staff, "dehors", &cf(6)).await;
    assert_eq!(desk["channel"], "desk");
    assert_eq!(desk["applicant_cf"], cf(6));

    let response = app
        .post_dossier(
            &staff,
            &json!({"procedure": "cila", "applicant_cf": cf(6), "subject": "x"}),
        )
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");

    // The applicant sees the dossier staff opened for them.
    let citizen = app.citizen(6).await;
    let listed: Value = app
        .get(&citizen, "/v1/dossiers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], desk["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizens_open_dossiers_only_for_themselves_and_auditors_open_none() {
    let app = spawn_app().await;
    let citizen = app.citizen(7).await;
    let auditor = app.user("auditor", None, &[]).await;
    for token in [&citizen, &auditor] {
        let response = app
            .post_dossier(
                token,
                &json!({"procedure": "cila", "applicant_cf": cf(8), "subject": "x"}),
            )
            .await;
        assert_eq!(response.status(), 403);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_with_a_cursor_and_show_only_visible_dossiers() {
    let app = spawn_app().await;
    let mine = app.citizen(9).await;
    let other = app.citizen(10).await;
    let mut opened = Vec::new();
    for _ in 0..5 {
        opened.push(app.open_dossier(&mine, "riduzione-tari", &cf(9)).await["id"].clone());
    }
    app.open_dossier(&other, "riduzione-tari", &cf(10)).await;

    let first: Value = app
        .get(&mine, "/v1/dossiers?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&mine, &format!("/v1/dossiers?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let cursor = second["next_cursor"].as_str().unwrap();
    let third: Value = app
        .get(&mine, &format!("/v1/dossiers?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(third["next_cursor"].is_null());
    let seen: Vec<Value> = [first, second, third]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].clone())
        })
        .collect();
    opened.reverse();
    assert_eq!(
        seen, opened,
        "newest first, every own dossier once, none of others"
    );

    let staff = app.staff(&["tributi"]).await;
    let all: Value = app
        .get(&staff, "/v1/dossiers?limit=100&procedure=riduzione-tari")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 6);
    let response = app.get(&staff, "/v1/dossiers?limit=1000").await;
    assert_eq!(response.status(), 400);
    let response = app.get(&staff, "/v1/dossiers?status=lost").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_lists_procedures_with_offices_and_deadlines() {
    let app = spawn_app().await;
    let token = app.citizen(11).await;
    let body: Value = app
        .get(&token, "/v1/procedures")
        .await
        .json()
        .await
        .unwrap();
    let procedures = body["procedures"].as_array().unwrap();
    assert!(procedures.len() >= 150, "{} procedures", procedures.len());
    // Every procedure says what it is for, who may apply, what to attach and its regime.
    for p in procedures {
        for field in ["description", "who_may_apply", "regime"] {
            assert!(
                !p[field].as_str().unwrap().is_empty(),
                "{} lacks {field}",
                p["code"]
            );
        }
        assert!(p["required_documents"].is_array() && p["optional_documents"].is_array());
    }
    // Every office of a municipal desk has its services.
    let offices: std::collections::BTreeSet<&str> = procedures
        .iter()
        .map(|p| p["office"].as_str().unwrap())
        .collect();
    assert!(offices.len() >= 13, "{offices:?}");
    let scia = procedures
        .iter()
        .find(|p| p["code"] == "scia-edilizia")
        .unwrap();
    assert_eq!(scia["office"], "edilizia");
    assert!(scia["deadline_days"].as_u64().unwrap() > 0);
    assert!(body["offices"].as_array().unwrap().len() >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipality_replaces_the_catalogue_without_rebuilding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalogo.json");
    std::fs::write(
        &path,
        r#"{"offices": [{"code": "sportello", "name": "Sportello polifunzionale"}],
            "procedures": [{"code": "istanza-generica", "name": "Istanza generica", "office": "sportello",
              "deadline_days": 20, "regime": "istanza", "description": "Qualsiasi richiesta.",
              "who_may_apply": "Chiunque", "required_documents": ["Documento di identità"]}]}"#,
    )
    .unwrap();
    let app = crate::helpers::spawn_app_with(|c| c.catalogue = Some(path.clone())).await;
    let token = app.citizen(12).await;
    let body: Value = app
        .get(&token, "/v1/procedures")
        .await
        .json()
        .await
        .unwrap();
    let procedures = body["procedures"].as_array().unwrap();
    assert_eq!(procedures.len(), 1);
    assert_eq!(procedures[0]["deadline_days"], 20);
    assert_eq!(
        procedures[0]["required_documents"][0],
        "Documento di identità"
    );
    let page = app
        .client
        .get(app.url("/servizi/istanza-generica"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Qualsiasi richiesta."));
    // A catalogue that does not hold together stops the server from starting, with the reason.
    std::fs::write(&path, r#"{"offices": [], "procedures": [{"code": "x", "name": "X", "office": "nowhere", "deadline_days": 1}]}"#).unwrap();
    let mut config = fascicolo::config::Config::embedded(dir.path());
    config.catalogue = Some(path);
    let failed = fascicolo::app::Services::open(config).await;
    let error = format!("{:#}", failed.err().unwrap());
    assert!(error.contains("unknown office nowhere"), "{error}");
}

/// A draft: its applicant's alone until filed with its required documents ticked; then the
/// office sees it, its documents are searchable and its receipt goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_the_applicants_alone_until_filed_with_its_required_documents() {
    // Receipts need a channel: e-mail, to a server that need not answer for the outbox to
    // hold them.
    let app =
        crate::helpers::spawn_app_with(|c| c.smtp_url = Some("smtp://127.0.0.1:9".into())).await;
    let citizen = app.citizen(13).await;
    let staff = app.staff(&["edilizia"]).await;
    let auditor = app.user("auditor", None, &[]).await;
    crate::web::confirmed_email(&app, &citizen, "bozza@example.it").await;
    let r = app
        .post_dossier(
            &citizen,
            &json!({"procedure": "cila", "applicant_cf": crate::helpers::cf(13), "subject": "Bozza", "draft": true}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["status"], "draft");
    let id = d["id"].as_str().unwrap().to_owned();
    app.add_document(
        &citizen,
        &id,
        &crate::helpers::sample_pdf("Relazione tecnica lucernario"),
        "public",
    )
    .await;
    app.indexed().await;
    // The applicant sees it; the office and the auditor do not, anywhere.
    assert_eq!(
        app.get(&citizen, &format!("/v1/dossiers/{id}"))
            .await
            .status(),
        200
    );
    for token in [&staff, &auditor] {
        assert_eq!(
            app.get(token, &format!("/v1/dossiers/{id}")).await.status(),
            404
        );
        let list: Value = app.get(token, "/v1/dossiers").await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 0);
        let found: Value = app
            .search(token, &[("q", "lucernario")])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(found["total"], 0);
    }
    let receipts = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from notification_outbox where dossier_id = $1 and event = 'dossier_submitted'",
        )
        .bind(&id)
        .fetch_one(app.services.db.pool())
        .await
        .unwrap()
    };
    assert_eq!(receipts().await, 0, "no receipt for a draft");
    // Filing needs every required document ticked, and is the applicant's to do.
    let file = |token: &str, ticked: Vec<&str>| {
        let body = json!({"to": "submitted", "checked_documents": ticked});
        let url = app.url(&format!("/v1/dossiers/{id}/transitions"));
        let request = app
            .client
            .post(url)
            .bearer_auth(token.to_owned())
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let cila = fascicolo::domain::Catalogue::built_in().unwrap();
    let required: Vec<&str> = cila
        .procedure("cila")
        .unwrap()
        .required_documents
        .iter()
        .map(String::as_str)
        .collect();
    assert!(!required.is_empty());
    let partial = file(&citizen, required[..1].to_vec()).await;
    assert_eq!(partial.status(), 400);
    let body: Value = partial.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_documents");
    assert_eq!(file(&staff, required.clone()).await.status(), 404);
    let filed = file(&citizen, required.clone()).await;
    assert_eq!(filed.status(), 200);
    assert_eq!(filed.json::<Value>().await.unwrap()["status"], "submitted");
    assert_eq!(receipts().await, 1, "the receipt goes out when it is filed");
    // Now the office sees it and finds its documents.
    assert_eq!(
        app.get(&staff, &format!("/v1/dossiers/{id}"))
            .await
            .status(),
        200
    );
    let (found, _) = app
        .search_until(
            &staff,
            &[("q", "lucernario")],
            1,
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(found["total"], 1);
}
