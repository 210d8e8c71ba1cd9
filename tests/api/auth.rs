use serde_json::Value;

use crate::helpers::{cf, sample_pdf, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_call_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    let token = app.citizen(20).await;
    let dossier = app.open_dossier(&token, "cila", &cf(20)).await;
    let path = format!("/v1/dossiers/{}", dossier["id"].as_str().unwrap());

    for auth in [
        None,
        Some("Bearer fsc_0000"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
    ] {
        for p in ["/v1/dossiers", path.as_str(), "/v1/procedures", "/v1/me"] {
            let mut request = app.client.get(app.url(p));
            if let Some(a) = auth {
                request = request.header("authorization", a);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{p} with {auth:?}");
            assert!(response.headers().contains_key("www-authenticate"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_dossier_answers_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let owner = app.citizen(21).await;
    let stranger = app.citizen(22).await;
    let other_office = app.staff(&["tributi"]).await;
    let admin = app.user("admin", None, &[]).await;
    let dossier = app.open_dossier(&owner, "scia-edilizia", &cf(21)).await;
    let id = dossier["id"].as_str().unwrap();
    let document = app
        .add_document(&owner, id, &sample_pdf("Relazione tecnica"), "public")
        .await;
    let doc_id = document["id"].as_str().unwrap();

    let missing = app
        .get(&stranger, &format!("/v1/dossiers/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(missing.status(), 404);
    let missing_body = missing.text().await.unwrap();

    for token in [&stranger, &other_office, &admin] {
        for path in [
            format!("/v1/dossiers/{id}"),
            format!("/v1/dossiers/{id}/documents"),
            format!("/v1/documents/{doc_id}"),
            format!("/v1/documents/{doc_id}/content"),
            format!("/v1/documents/{doc_id}/versions"),
            format!("/v1/documents/{doc_id}/versions/1/content"),
        ] {
            let response = app.get(token, &path).await;
            assert_eq!(response.status(), 404, "{path}");
            assert_eq!(
                response.text().await.unwrap(),
                missing_body,
                "{path}: body must not differ"
            );
        }
        let upload = app
            .upload(
                token,
                &format!("/v1/dossiers/{id}/documents"),
                b"x".to_vec(),
                "a.txt",
                &[],
            )
            .await;
        assert_eq!(upload.status(), 404);
    }
    for malformed in ["1", "..%2F..%2Fetc", "01a21649-0A4D-75a0-824e-71c70ce3ecf3"] {
        let response = app.get(&owner, &format!("/v1/dossiers/{malformed}")).await;
        assert_eq!(response.status(), 404, "{malformed}");
        assert_eq!(response.text().await.unwrap(), missing_body);
    }
    // The auditor reads everything.
    let auditor = app.user("auditor", None, &[]).await;
    assert_eq!(
        app.get(&auditor, &format!("/v1/dossiers/{id}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get(&auditor, &format!("/v1/documents/{doc_id}/content"))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_documents_never_reach_the_applicant() {
    let app = spawn_app().await;
    let citizen = app.citizen(23).await;
    let staff = app.staff(&["edilizia"]).await;
    let dossier = app.open_dossier(&citizen, "cila", &cf(23)).await;
    let id = dossier["id"].as_str().unwrap();
    let public = app
        .add_document(&staff, id, b"Comunicazione al richiedente", "public")
        .await;
    let internal = app
        .add_document(&staff, id, b"Nota interna dell'istruttore", "internal")
        .await;
    // Staff uploads default to internal.
    let default = app
        .upload(
            &staff,
            &format!("/v1/dossiers/{id}/documents"),
            b"Bozza".to_vec(),
            "bozza.txt",
            &[],
        )
        .await;
    let default: Value = default.json().await.unwrap();
    assert_eq!(default["visibility"], "internal");

    let listed: Value = app
        .get(&citizen, &format!("/v1/dossiers/{id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![public["id"].as_str().unwrap()]);
    for doc in [&internal, &default] {
        let doc_id = doc["id"].as_str().unwrap();
        assert_eq!(
            app.get(&citizen, &format!("/v1/documents/{doc_id}"))
                .await
                .status(),
            404
        );
        assert_eq!(
            app.get(&citizen, &format!("/v1/documents/{doc_id}/content"))
                .await
                .status(),
            404
        );
    }
    let staff_list: Value = app
        .get(&staff, &format!("/v1/dossiers/{id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(staff_list["items"].as_array().unwrap().len(), 3);

    // Citizens cannot add internal documents.
    let response = app
        .upload(
            &citizen,
            &format!("/v1/dossiers/{id}/documents"),
            b"x".to_vec(),
            "a.txt",
            &[("visibility", "internal")],
        )
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_professional_sees_delegated_dossiers_until_the_delegation_is_revoked() {
    let app = spawn_app().await;
    let citizen = app.citizen(24).await;
    let professional = app.user("professional", Some(&cf(25)), &[]).await;
    let dossier = app
        .open_dossier(&citizen, "permesso-di-costruire", &cf(24))
        .await;
    let id = dossier["id"].as_str().unwrap();
    let path = format!("/v1/dossiers/{id}");
    assert_eq!(app.get(&professional, &path).await.status(), 404);

    let granted = app
        .client
        .post(app.url(&format!("/v1/dossiers/{id}/delegations")))
        .bearer_auth(&citizen)
        .json(&serde_json::json!({ "professional_cf": cf(25) }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201, "{:?}", granted.text().await);
    assert_eq!(app.get(&professional, &path).await.status(), 200);

    let revoked = app
        .client
        .delete(app.url(&format!("/v1/dossiers/{id}/delegations/{}", cf(25))))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(
        app.get(&professional, &path).await.status(),
        404,
        "revocation applies to the next request"
    );
}
