use std::time::Duration;

use serde_json::Value;

use crate::helpers::{cf, sample_pdf, spawn_app};

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn id(doc: &Value) -> String {
    doc["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_searchable_within_two_seconds_of_its_upload() {
    let app = spawn_app().await;
    let citizen = app.citizen(50).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(50)).await;
    let doc = app
        .add_document(
            &citizen,
            dossier["id"].as_str().unwrap(),
            &sample_pdf("Relazione zanzibarica"),
            "public",
        )
        .await;
    let (body, took) = app
        .search_until(&citizen, &[("q", "zanzibarica")], 1, Duration::from_secs(2))
        .await;
    assert_eq!(body["total"], 1, "not found within 2 s: {body}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(body["hits"][0]["document_id"], doc["id"]);
    assert_eq!(body["hits"][0]["dossier_number"], dossier["number"]);
    assert_eq!(body["hits"][0]["dossier_id"], dossier["id"]);
    assert!(
        body["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("<mark>zanzibarica</mark>")
    );

    let metadata: Value = app
        .get(&citizen, &format!("/v1/documents/{}", id(&doc)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["extraction"]["status"], "done", "{metadata}");
    assert_eq!(metadata["extraction"]["pages"], 1);
    assert!(metadata["extraction"]["chars"].as_u64().unwrap() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn italian_text_is_matched_across_accents_elisions_and_inflections() {
    let app = spawn_app().await;
    let staff = app.staff(&["edilizia"]).await;
    let dossier = app
        .open_dossier(&staff, "permesso-di-costruire", &cf(51))
        .await;
    let d = dossier["id"].as_str().unwrap();
    let accent = app
        .add_text(
            &staff,
            d,
            "Sopralluogo nella città vecchia",
            "Verbale",
            "public",
        )
        .await;
    let plain = app
        .add_text(&staff, d, "Mappa della citta alta", "Mappa", "public")
        .await;
    let elision = app
        .add_text(
            &staff,
            d,
            "Copia dell'atto di proprietà e l’istanza firmata",
            "Atti",
            "public",
        )
        .await;
    let plural = app
        .add_text(
            &staff,
            d,
            "Sono state rilasciate le autorizzazioni richieste",
            "Esito",
            "public",
        )
        .await;
    let stop = app
        .add_text(
            &staff,
            d,
            "Domanda residenza anagrafica",
            "Domanda",
            "public",
        )
        .await;
    app.indexed().await;

    let cases: Vec<(&str, Vec<String>)> = vec![
        ("città", vec![id(&accent), id(&plain)]),
        ("CITTA", vec![id(&accent), id(&plain)]),
        ("atto", vec![id(&elision)]),
        ("dell'atto", vec![id(&elision)]),
        ("istanza", vec![id(&elision)]),
        ("l'istanza", vec![id(&elision)]),
        ("l’istanza", vec![id(&elision)]),
        ("autorizzazione", vec![id(&plural)]),
        ("domanda di residenza", vec![id(&stop)]),
        ("proprieta", vec![id(&elision)]),
    ];
    for (q, mut expected) in cases {
        expected.sort();
        let body: Value = app.search(&staff, &[("q", q)]).await.json().await.unwrap();
        assert_eq!(ids(&body), expected, "query {q:?}: {body}");
        assert_eq!(body["total"], expected.len() as u64, "query {q:?}");
    }
}

async fn check(
    app: &crate::helpers::TestApp,
    token: &str,
    params: Vec<(&str, String)>,
    expected: &[&Value],
) {
    let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body: Value = app.search(token, &p).await.json().await.unwrap();
    let mut want: Vec<String> = expected.iter().map(|d| id(d)).collect();
    want.sort();
    assert_eq!(ids(&body), want, "{params:?}: {body}");
    assert_eq!(body["total"], want.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phrases_exclusions_or_and_filters_narrow_the_hits() {
    let app = spawn_app().await;
    let staff = app.staff(&["edilizia", "suap"]).await;
    let building = app.open_dossier(&staff, "scia-edilizia", &cf(52)).await;
    let shop = app.open_dossier(&staff, "dehors", &cf(53)).await;
    let b = building["id"].as_str().unwrap();
    let s = shop["id"].as_str().unwrap();
    let a1 = app
        .add_text(
            &staff,
            b,
            "parere favorevole della commissione paesaggio",
            "Parere",
            "public",
        )
        .await;
    let a2 = app
        .add_text(
            &staff,
            b,
            "parere contrario, commissione edilizia favorevole",
            "Parere 2",
            "internal",
        )
        .await;
    let a3 = app
        .add_text(
            &staff,
            s,
            "planimetria del dehors con parere favorevole",
            "Dehors",
            "public",
        )
        .await;
    app.indexed().await;

    check(
        &app,
        &staff,
        vec![("q", "parere favorevole".into())],
        &[&a1, &a2, &a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "\"parere favorevole\"".into())],
        &[&a1, &a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere -dehors".into())],
        &[&a1, &a2],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "paesaggio OR planimetria".into())],
        &[&a1, &a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("procedure", "dehors".into())],
        &[&a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("office", "edilizia".into())],
        &[&a1, &a2],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("dossier", b.into())],
        &[&a1, &a2],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("kind", "attachment".into())],
        &[&a1, &a2, &a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("kind", "decision".into())],
        &[],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("status", "submitted".into())],
        &[&a1, &a2, &a3],
    )
    .await;
    let year = building["number"].as_str().unwrap()[..4].to_owned();
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("year", year.clone())],
        &[&a1, &a2, &a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![("q", "parere".into()), ("year", "1999".into())],
        &[],
    )
    .await;
    let today = jiff::Timestamp::now().in_tz("Europe/Rome").unwrap().date();
    check(
        &app,
        &staff,
        vec![
            ("q", "parere".into()),
            ("from", today.to_string()),
            ("to", today.to_string()),
        ],
        &[&a1, &a2, &a3],
    )
    .await;
    check(
        &app,
        &staff,
        vec![
            ("q", "parere".into()),
            ("to", today.yesterday().unwrap().to_string()),
        ],
        &[],
    )
    .await;

    // Paging and date order without a query.
    let body: Value = app
        .search(&staff, &[("limit", "2"), ("sort", "date")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["total"], 3);
    assert_eq!(body["hits"].as_array().unwrap().len(), 2);
    assert_eq!(body["hits"][0]["document_id"], a3["id"], "newest first");
    let page2: Value = app
        .search(&staff, &[("limit", "2"), ("offset", "2"), ("sort", "date")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["hits"][0]["document_id"], a1["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facets_add_up_to_the_total() {
    let app = spawn_app().await;
    let staff = app.staff(&["edilizia", "suap"]).await;
    let kinds = ["plan", "receipt", "application", "plan", "decision"];
    for (i, procedure) in ["cila", "scia-edilizia", "dehors"].iter().enumerate() {
        let d = app
            .open_dossier(&staff, procedure, &cf(60 + i as u32))
            .await;
        for (j, kind) in kinds.iter().enumerate().take(i + 2) {
            let response = app
                .upload(
                    &staff,
                    &format!("/v1/dossiers/{}/documents", d["id"].as_str().unwrap()),
                    format!("relazione numero {j} della pratica").into_bytes(),
                    "r.txt",
                    &[("kind", kind)],
                )
                .await;
            assert_eq!(response.status(), 201);
        }
    }
    app.indexed().await;
    let body: Value = app
        .search(&staff, &[("q", "relazione")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["total"], 9);
    for facet in ["procedure", "kind", "year", "status"] {
        let sum: u64 = body["facets"][facet]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(sum, 9, "facet {facet}: {}", body["facets"][facet]);
    }
    assert_eq!(body["facets"]["procedure"]["cila"], 2);
    assert_eq!(body["facets"]["procedure"]["dehors"], 4);
    assert_eq!(body["facets"]["kind"]["plan"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippets_escape_html_from_the_document() {
    let app = spawn_app().await;
    let citizen = app.citizen(70).await;
    let d = app.open_dossier(&citizen, "cila", &cf(70)).await;
    app.add_text(
        &citizen,
        d["id"].as_str().unwrap(),
        "Nota <script>alert('x')</script> con il codice <b>quarzite</b> & altro",
        "Nota",
        "public",
    )
    .await;
    let (body, _) = app
        .search_until(&citizen, &[("q", "quarzite")], 1, Duration::from_secs(10))
        .await;
    let snippet = body["hits"][0]["snippet"].as_str().unwrap();
    assert!(
        snippet.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"),
        "{snippet}"
    );
    assert!(
        snippet.contains("&lt;b&gt;<mark>quarzite</mark>&lt;/b"),
        "{snippet}"
    );
    assert!(!snippet.contains("<script>") && !snippet.contains("<b>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_searches_are_400s() {
    let app = spawn_app().await;
    let citizen = app.citizen(71).await;
    for params in [
        vec![("q", "\"unclosed phrase")],
        vec![("q", "(parere")],
        vec![("q", "parere OR")],
        vec![("q", "parere"), ("limit", "0")],
        vec![("q", "parere"), ("limit", "1000")],
        vec![("q", "parere"), ("sort", "size")],
        vec![("q", "parere"), ("kind", "poem")],
        vec![("q", "parere"), ("from", "26/11/2026")],
        vec![("q", "parere"), ("dossier", "1")],
        vec![("q", "parere"), ("year", "duemila")],
        vec![("q", "parere"), ("color", "red")],
    ] {
        let response = app.search(&citizen, &params).await;
        assert_eq!(response.status(), 400, "{params:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{params:?}: {body}");
    }
    assert_eq!(
        app.client
            .get(app.url("/v1/search?q=x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_old_text_in_the_index() {
    let app = spawn_app().await;
    let citizen = app.citizen(72).await;
    let d = app.open_dossier(&citizen, "cila", &cf(72)).await;
    let doc = app
        .add_text(
            &citizen,
            d["id"].as_str().unwrap(),
            "prima stesura ornitorinco",
            "Bozza",
            "public",
        )
        .await;
    app.indexed().await;
    let response = app
        .upload(
            &citizen,
            &format!("/v1/documents/{}/versions", id(&doc)),
            b"seconda stesura lemure".to_vec(),
            "v2.txt",
            &[],
        )
        .await;
    assert_eq!(response.status(), 201);
    app.indexed().await;
    let old: Value = app
        .search(&citizen, &[("q", "ornitorinco")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["total"], 0);
    let new: Value = app
        .search(&citizen, &[("q", "lemure")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(new["total"], 1);
    let all: Value = app.search(&citizen, &[]).await.json().await.unwrap();
    assert_eq!(
        all["total"], 1,
        "one index entry per document, not per version"
    );
}

/// Broad permissions (offices, a tenant, a professional in many dossiers) are kept per index
/// segment under a key naming exactly what they select: repeated searches answer the same, a
/// revocation or a new delegation changes the key and applies to the very next search, and
/// callers with other scopes never share an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_permissions_follow_delegations_and_never_mix_callers() {
    let app = spawn_app().await;
    let citizen = app.citizen(170).await;
    let staff = app.staff(&["edilizia"]).await;
    let other_staff = app.staff(&["anagrafe"]).await;
    let professional = app.user("professional", Some(&cf(171)), &[]).await;
    let mut dossiers = Vec::new();
    for _ in 0..41 {
        let d = app
            .open_dossier(&citizen, "permesso-di-costruire", &cf(170))
            .await;
        let id = id(&d);
        app.add_text(&citizen, &id, "perizia ippocastano", "Perizia", "public")
            .await;
        app.add_text(&staff, &id, "nota ippocastano", "Nota", "internal")
            .await;
        dossiers.push(id);
    }
    let delegate = |dossier: String| {
        let pool = app.services.db.pool().clone();
        async move {
            sqlx::query("insert into delegation (dossier_id, professional_cf, granted_by, created_at) select id, $1, created_by, 0 from dossier where id = $2")
                .bind(cf(171))
                .bind(dossier)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    for d in &dossiers[..40] {
        delegate(d.clone()).await;
    }
    app.indexed().await;
    let total = |token: String| {
        let app = &app;
        async move {
            let r = app.search(&token, &[("q", "ippocastano")]).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["total"].as_u64().unwrap()
        }
    };
    for _ in 0..2 {
        assert_eq!(
            total(professional.clone()).await,
            40,
            "public documents only"
        );
        assert_eq!(total(staff.clone()).await, 82, "the office sees both kinds");
        assert_eq!(total(other_staff.clone()).await, 0, "another office");
    }
    let r = app
        .client
        .delete(app.url(&format!(
            "/v1/dossiers/{}/delegations/{}",
            dossiers[0],
            cf(171)
        )))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(total(professional.clone()).await, 39, "revoked at once");
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{}/delegations", dossiers[40])))
        .bearer_auth(&citizen)
        .json(&serde_json::json!({"professional_cf": cf(171)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(total(professional.clone()).await, 40, "granted at once");
    // New documents land in a new segment, which gets its own entry.
    app.add_text(&citizen, &dossiers[1], "ippocastano bis", "Bis", "public")
        .await;
    app.indexed().await;
    assert_eq!(total(professional.clone()).await, 41);
    assert_eq!(total(staff.clone()).await, 83);
}

/// A change to many dossiers at once can bring the indexer more documents than one SQL
/// statement may bind (32 766 on SQLite, 65 535 on PostgreSQL): it reads them in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_rereads_more_documents_than_a_statement_can_bind() {
    let app = spawn_app().await;
    let citizen = app.citizen(61).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(61)).await;
    let doc = app
        .add_text(
            &citizen,
            dossier["id"].as_str().unwrap(),
            "relazione quadrilobata sul sopralluogo",
            "Relazione",
            "public",
        )
        .await;
    app.indexed().await;
    let mut many: Vec<String> = (0..70_000).map(|n| format!("gone-{n}")).collect();
    many.push(id(&doc));
    app.services
        .pipeline()
        .unwrap()
        .index_documents(many)
        .await
        .expect("70 001 documents re-read");
    let index = app.services.index.clone().unwrap();
    index.commit(index.position()).unwrap();
    let body: Value = app
        .search(&citizen, &[("q", "quadrilobata")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["hits"][0]["document_id"], doc["id"]);
}

/// A professional's dossiers are kept with their token between searches, but a delegation
/// that reaches its end date is out of the very next search, before what is kept about the
/// token is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_ends_on_time_even_while_the_callers_dossiers_are_kept() {
    let app = spawn_app().await;
    let citizen = app.citizen(180).await;
    let professional = app.user("professional", Some(&cf(181)), &[]).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(180)).await;
    let dossier = dossier["id"].as_str().unwrap().to_owned();
    app.add_text(
        &citizen,
        &dossier,
        "relazione gelsomino",
        "Relazione",
        "public",
    )
    .await;
    app.indexed().await;
    let ends = fascicolo::db::now_ms() + 600;
    sqlx::query(
        "insert into delegation (dossier_id, professional_cf, granted_by, created_at, valid_until) \
         select id, $1, created_by, 0, $2 from dossier where id = $3",
    )
    .bind(cf(181))
    .bind(ends)
    .bind(&dossier)
    .execute(app.services.db.pool())
    .await
    .unwrap();
    let total = || async {
        let r = app.search(&professional, &[("q", "gelsomino")]).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["total"].as_u64().unwrap()
    };
    // The first search reads the token and the dossiers (not before `read`); the next ones
    // reuse them.
    let read = std::time::Instant::now();
    assert_eq!(total().await, 1);
    assert_eq!(total().await, 1);
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(ends - fascicolo::db::now_ms()).unwrap_or(0) + 100,
    ))
    .await;
    assert!(
        read.elapsed() < Duration::from_millis(1_000),
        "the check must run while the token is still trusted"
    );
    assert_eq!(total().await, 0, "the delegation ended");
}
