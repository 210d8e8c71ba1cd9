use serde_json::{Value, json};

use crate::helpers::{TestApp, cf, spawn_app};

async fn grant(app: &TestApp, token: &str, dossier: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/dossiers/{dossier}/delegations")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn revoke(
    app: &TestApp,
    token: &str,
    dossier: &str,
    professional: &str,
) -> reqwest::Response {
    app.client
        .delete(app.url(&format!(
            "/v1/dossiers/{dossier}/delegations/{professional}"
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_opens_a_dossier_to_a_professional_until_revoked() {
    let app = spawn_app().await;
    let citizen = app.citizen(160).await;
    let professional = app.user("professional", Some(&cf(161)), &[]).await;
    let d = app
        .open_dossier(&citizen, "permesso-di-costruire", &cf(160))
        .await;
    let id = d["id"].as_str().unwrap();
    let doc = app
        .add_text(
            &citizen,
            id,
            "relazione geologica ippocastano",
            "Relazione",
            "public",
        )
        .await;
    let internal = app
        .add_text(
            &app.staff(&["edilizia"]).await,
            id,
            "nota ippocastano interna",
            "Nota",
            "internal",
        )
        .await;
    app.indexed().await;
    let path = format!("/v1/dossiers/{id}");
    assert_eq!(app.get(&professional, &path).await.status(), 404);

    let r = grant(&app, &citizen, id, json!({"professional_cf": cf(161)})).await;
    assert_eq!(r.status(), 201);
    let granted: Value = r.json().await.unwrap();
    assert_eq!(granted["professional_cf"], cf(161));
    assert_eq!(app.get(&professional, &path).await.status(), 200);
    let content = app
        .get(
            &professional,
            &format!("/v1/documents/{}/content", doc["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(content.status(), 200);
    assert_eq!(
        app.get(
            &professional,
            &format!("/v1/documents/{}", internal["id"].as_str().unwrap())
        )
        .await
        .status(),
        404
    );
    let found: Value = app
        .search(&professional, &[("q", "ippocastano")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1, "public documents only: {found}");

    // The professional may add documents but not delegate further.
    let upload = app
        .add_text(
            &professional,
            id,
            "integrazione del tecnico",
            "Integrazione",
            "public",
        )
        .await;
    assert_eq!(upload["dossier_id"], id);
    assert_eq!(
        grant(&app, &professional, id, json!({"professional_cf": cf(162)}))
            .await
            .status(),
        403
    );

    let r = revoke(&app, &citizen, id, &cf(161)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(app.get(&professional, &path).await.status(), 404);
    let found: Value = app
        .search(&professional, &[("q", "ippocastano")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 0);
    assert_eq!(
        revoke(&app, &citizen, id, &cf(161)).await.status(),
        404,
        "already revoked"
    );
    let listed: Value = app
        .get(&citizen, &format!("/v1/dossiers/{id}/delegations"))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"][0]["revoked_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_expire_and_only_the_applicant_or_the_office_grant_them() {
    let app = spawn_app().await;
    let citizen = app.citizen(170).await;
    let stranger = app.citizen(171).await;
    let staff = app.staff(&["edilizia"]).await;
    let auditor = app.user("auditor", None, &[]).await;
    let professional = app.user("professional", Some(&cf(172)), &[]).await;
    let d = app.open_dossier(&citizen, "cila", &cf(170)).await;
    let id = d["id"].as_str().unwrap();

    assert_eq!(
        grant(&app, &stranger, id, json!({"professional_cf": cf(172)}))
            .await
            .status(),
        404
    );
    assert_eq!(
        grant(&app, &auditor, id, json!({"professional_cf": cf(172)}))
            .await
            .status(),
        403
    );
    assert_eq!(
        grant(
            &app,
            &citizen,
            id,
            json!({"professional_cf": "RSSMRA85T10A562T"})
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        grant(
            &app,
            &citizen,
            id,
            json!({"professional_cf": cf(172), "until": "2001-01-01"})
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        grant(&app, &citizen, id, json!({"professional_cf": cf(170)}))
            .await
            .status(),
        400
    );

    // Staff grant on the applicant's behalf, with an end date.
    let next_year = jiff::Timestamp::now().in_tz("Europe/Rome").unwrap().year() + 1;
    let r = grant(
        &app,
        &staff,
        id,
        json!({"professional_cf": cf(172), "until": format!("{next_year}-12-31")}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let path = format!("/v1/dossiers/{id}");
    assert_eq!(app.get(&professional, &path).await.status(), 200);
    // Its end date passes: the row is moved back in time. The server learns of rights changed
    // by its own writes; one made behind its back is announced as those are.
    sqlx::query("update delegation set valid_until = 1 where dossier_id = $1")
        .bind(id)
        .execute(app.services.db.pool())
        .await
        .unwrap();
    app.services.db.access_changed();
    assert_eq!(
        app.get(&professional, &path).await.status(),
        404,
        "an expired delegation grants nothing"
    );
}
