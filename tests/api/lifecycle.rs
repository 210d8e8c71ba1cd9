use serde_json::{Value, json};

use crate::helpers::{TestApp, cf, spawn_app};

async fn to(app: &TestApp, token: &str, dossier: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/dossiers/{dossier}/transitions")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

struct Cast {
    applicant: String,
    delegate: String,
    staff: String,
    other_staff: String,
    auditor: String,
    admin: String,
}

async fn cast(app: &TestApp, n: u32) -> Cast {
    Cast {
        applicant: app.citizen(n).await,
        delegate: app.user("professional", Some(&cf(n + 1)), &[]).await,
        staff: app.staff(&["edilizia"]).await,
        other_staff: app.staff(&["tributi"]).await,
        auditor: app.user("auditor", None, &[]).await,
        admin: app.user("admin", None, &[]).await,
    }
}

async fn dossier_with_delegate(app: &TestApp, c: &Cast, n: u32) -> String {
    let d = app.open_dossier(&c.applicant, "cila", &cf(n)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{id}/delegations")))
        .bearer_auth(&c.applicant)
        .json(&json!({"professional_cf": cf(n + 1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_is_checked_for_state_and_role() {
    let app = spawn_app().await;
    let c = cast(&app, 500).await;
    let d = dossier_with_delegate(&app, &c, 500).await;

    // submitted: only the office starts it; outsiders get 404, other roles 403.
    for (token, status) in [
        (&c.applicant, 403),
        (&c.delegate, 403),
        (&c.auditor, 403),
        (&c.other_staff, 404),
        (&c.admin, 404),
    ] {
        assert_eq!(
            to(&app, token, &d, json!({"to": "started"})).await.status(),
            status
        );
    }
    // An illegal transition lists what the caller may do.
    let r = to(&app, &c.applicant, &d, json!({"to": "concluded"})).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "illegal_transition");
    assert_eq!(body["error"]["allowed"], json!(["withdrawn"]));
    let r = to(&app, &c.staff, &d, json!({"to": "archived"})).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["allowed"],
        json!(["started"])
    );

    let r = to(
        &app,
        &c.staff,
        &d,
        json!({"to": "started", "note": "Presa in carico", "internal_note": "verificare vincoli"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "started");
    // Withdrawal is only possible before the start.
    assert_eq!(
        to(&app, &c.applicant, &d, json!({"to": "withdrawn"}))
            .await
            .status(),
        409
    );

    // Integration: staff ask with a list of items; the applicant answers.
    assert_eq!(
        to(&app, &c.staff, &d, json!({"to": "awaiting_integration"}))
            .await
            .status(),
        400
    );
    assert_eq!(
        to(
            &app,
            &c.applicant,
            &d,
            json!({"to": "awaiting_integration", "missing_items": ["x"]})
        )
        .await
        .status(),
        403
    );
    let r = to(&app, &c.staff, &d, json!({"to": "awaiting_integration", "missing_items": ["Planimetria aggiornata", "Ricevuta diritti di segreteria"], "note": "Mancano due documenti"})).await;
    assert_eq!(r.status(), 200);
    let requests: Value = app
        .get(
            &c.applicant,
            &format!("/v1/dossiers/{d}/integration-requests"),
        )
        .await
        .json()
        .await
        .unwrap();
    let request = &requests["items"][0];
    assert_eq!(request["open"], true);
    assert_eq!(
        request["items"][1]["description"],
        "Ricevuta diritti di segreteria"
    );
    assert_eq!(request["items"][0]["satisfied"], false);
    let item = format!("{}/1", request["id"].as_str().unwrap());
    let upload = app
        .upload(
            &c.delegate,
            &format!("/v1/dossiers/{d}/documents"),
            b"planimetria".to_vec(),
            "p.txt",
            &[("kind", "plan"), ("integration_item", &item)],
        )
        .await;
    assert_eq!(upload.status(), 201);
    let bad = app
        .upload(
            &c.delegate,
            &format!("/v1/dossiers/{d}/documents"),
            b"x".to_vec(),
            "p.txt",
            &[("integration_item", "nope/9")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    let requests: Value = app
        .get(
            &c.applicant,
            &format!("/v1/dossiers/{d}/integration-requests"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(requests["items"][0]["items"][0]["satisfied"], true);
    assert_eq!(requests["items"][0]["items"][1]["satisfied"], false);
    assert_eq!(
        to(
            &app,
            &c.delegate,
            &d,
            json!({"to": "started", "note": "Integrazione inviata"})
        )
        .await
        .status(),
        200
    );
    let requests: Value = app
        .get(
            &c.applicant,
            &format!("/v1/dossiers/{d}/integration-requests"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(requests["items"][0]["open"], false);

    // Conclusion needs an outcome and a decision document of the dossier.
    assert_eq!(
        to(
            &app,
            &c.staff,
            &d,
            json!({"to": "concluded", "outcome": "approved"})
        )
        .await
        .status(),
        400
    );
    let decision_id = app.decision(&c.staff, &d).await;
    assert_eq!(
        to(
            &app,
            &c.staff,
            &d,
            json!({"to": "concluded", "outcome": "maybe", "decision_document_id": decision_id})
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        to(
            &app,
            &c.applicant,
            &d,
            json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision_id})
        )
        .await
        .status(),
        403
    );
    let r = to(&app, &c.staff, &d, json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision_id, "note": "Pratica accolta"})).await;
    assert_eq!(r.status(), 200);

    // Rating: the applicant, once, after conclusion.
    let rate = |token: &str, score: i32| {
        let app = &app;
        let token = token.to_owned();
        let d = d.clone();
        async move {
            app.client
                .post(app.url(&format!("/v1/dossiers/{d}/rating")))
                .bearer_auth(token)
                .json(&json!({"score": score, "comment": "Rapidi e gentili"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(rate(&c.delegate, 5).await, 403);
    assert_eq!(rate(&c.applicant, 6).await, 400);
    assert_eq!(rate(&c.applicant, 5).await, 201);
    assert_eq!(rate(&c.applicant, 4).await, 409);

    // No more applicant uploads; archive.
    assert_eq!(
        app.upload(
            &c.applicant,
            &format!("/v1/dossiers/{d}/documents"),
            b"x".to_vec(),
            "x.txt",
            &[]
        )
        .await
        .status(),
        409
    );
    assert_eq!(
        to(&app, &c.applicant, &d, json!({"to": "archived"}))
            .await
            .status(),
        403
    );
    assert_eq!(
        to(&app, &c.staff, &d, json!({"to": "archived"}))
            .await
            .status(),
        200
    );
    let r = to(&app, &c.staff, &d, json!({"to": "started"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["allowed"],
        json!([])
    );

    // The timeline: every step; internal notes and staff names only for staff and auditors.
    let public: Value = app
        .get(&c.applicant, &format!("/v1/dossiers/{d}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    let staff: Value = app
        .get(&c.auditor, &format!("/v1/dossiers/{d}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    let steps: Vec<&str> = public["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "transition")
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "submitted",
            "started",
            "awaiting_integration",
            "started",
            "concluded",
            "archived"
        ]
    );
    assert!(!public.to_string().contains("verificare vincoli"));
    assert!(staff.to_string().contains("verificare vincoli"));
    assert!(public.to_string().contains("Presa in carico"));
    let concluded = public["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "concluded")
        .unwrap();
    assert_eq!(concluded["outcome"], "approved");
    assert_eq!(concluded["document_id"], decision_id.as_str());
    assert_eq!(concluded["actor_role"], "staff");
    assert!(concluded["actor_name"].is_string(), "staff are named");
    let submitted = &public["events"][0];
    assert!(
        submitted["actor_name"].is_null(),
        "citizens are not named to others: {submitted}"
    );

    // Withdrawal before the start, by the delegate.
    let d2 = dossier_with_delegate(&app, &c, 500).await;
    assert_eq!(
        to(&app, &c.delegate, &d2, json!({"to": "withdrawn"}))
            .await
            .status(),
        200
    );
    let proposal = app
        .client
        .post(app.url("/v1/proposals"))
        .bearer_auth(&c.applicant)
        .json(&json!({"kind": "complaint", "text": "Orari dello sportello troppo brevi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(proposal.status(), 201);
    let proposal = app
        .client
        .post(app.url("/v1/proposals"))
        .bearer_auth(&c.applicant)
        .json(&json!({"kind": "poem", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(proposal.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_clock_runs_only_while_the_office_works() {
    let app = spawn_app().await;
    let c = cast(&app, 510).await;
    let d = dossier_with_delegate(&app, &c, 510).await;
    assert_eq!(
        to(&app, &c.staff, &d, json!({"to": "started"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        to(
            &app,
            &c.staff,
            &d,
            json!({"to": "awaiting_integration", "missing_items": ["Relazione"]})
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        to(&app, &c.applicant, &d, json!({"to": "started"}))
            .await
            .status(),
        200
    );
    // Move the steps into the past: filed 21 days ago, started 20 days ago, suspended 15 days
    // ago, resumed 5 days ago (the filing moves too, or it would come last in time).
    let day = 86_400_000i64;
    let now = jiff::Timestamp::now().as_millisecond();
    for (status, days_ago, nth) in [
        ("submitted", 21, 0),
        ("started", 20, 0),
        ("awaiting_integration", 15, 0),
        ("started", 5, 1),
    ] {
        let ids: Vec<String> = sqlx::query_scalar(
            "select id from dossier_event where dossier_id = $1 and to_status = $2 order by id",
        )
        .bind(&d)
        .bind(status)
        .fetch_all(app.services.db.pool())
        .await
        .unwrap();
        sqlx::query("update dossier_event set at = $1 where id = $2")
            .bind(now - days_ago * day - 1000)
            .bind(&ids[nth])
            .execute(app.services.db.pool())
            .await
            .unwrap();
    }
    let t: Value = app
        .get(&c.applicant, &format!("/v1/dossiers/{d}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["deadline_days"], 30);
    assert_eq!(
        t["days_elapsed"], 10,
        "5 days before the suspension and 5 after: {t}"
    );
    assert_eq!(t["days_suspended"], 10);
    assert_eq!(t["days_left"], 20);
    assert_eq!(t["overdue"], false);

    // A second dossier started 40 days ago and never suspended is overdue.
    let d2 = dossier_with_delegate(&app, &c, 510).await;
    assert_eq!(
        to(&app, &c.staff, &d2, json!({"to": "started"}))
            .await
            .status(),
        200
    );
    sqlx::query("update dossier_event set at = $1 where dossier_id = $2 and to_status = 'started'")
        .bind(now - 40 * day)
        .bind(&d2)
        .execute(app.services.db.pool())
        .await
        .unwrap();
    let t: Value = app
        .get(&c.staff, &format!("/v1/dossiers/{d2}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["days_elapsed"], 40);
    assert_eq!(t["days_left"], -10);
    assert_eq!(t["overdue"], true);

    // Statistics see the same: staff of the office, restricted like every read.
    let stats: Value = app.get(&c.staff, "/v1/stats").await.json().await.unwrap();
    let cila = stats["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["procedure"] == "cila")
        .unwrap();
    assert_eq!(cila["total"], 2);
    assert_eq!(cila["overdue"], 1);
    assert_eq!(cila["by_status"]["started"], 2);
    assert_eq!(cila["online_share"], 1.0);
    let other: Value = app
        .get(&c.other_staff, "/v1/stats")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        other["items"].as_array().unwrap().is_empty(),
        "another office sees nothing: {other}"
    );
}
