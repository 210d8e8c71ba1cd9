//! The trust issue's holes, each reproduced as an attacker would try it: identities, records,
//! separated duties, search grammar, disclosures and the smaller holes. Resource limits are in
//! `limits.rs`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, activate_from_outbox, cf, spawn_app};

async fn post_json(
    app: &TestApp,
    token: Option<&str>,
    path: &str,
    body: Value,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap()
}

/// Registers online and activates from the outbox; returns the new account's token.
async fn self_register(app: &TestApp, codice_fiscale: &str, name: &str, email: &str) -> String {
    let r = post_json(
        app,
        None,
        "/v1/registrations",
        json!({"codice_fiscale": codice_fiscale, "name": name, "email": email}),
    )
    .await;
    assert_eq!(r.status(), 202);
    activate_from_outbox(app, email).await
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.get(token, "/v1/me").await.json().await.unwrap()
}

async fn list_total(app: &TestApp, token: &str) -> usize {
    let list: Value = app.get(token, "/v1/dossiers").await.json().await.unwrap();
    list["items"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_a_codice_fiscale_opens_no_dossier_until_the_desk_verifies_it() {
    let app = spawn_app().await;
    let victim = cf(2000);
    // The office files a dossier for the citizen at the desk, with a document.
    let staff = app.staff(&["edilizia"]).await;
    let filed = app.open_dossier(&staff, "cila", &victim).await;
    let filed_id = filed["id"].as_str().unwrap();
    app.add_text(
        &staff,
        filed_id,
        "planimetria della villetta",
        "Pianta",
        "public",
    )
    .await;

    // Anyone can register with that codice fiscale: it proves only an e-mail address.
    let squatter = self_register(&app, &victim, "Mario Bianchi", "squatter@example.it").await;
    let account = me(&app, &squatter).await;
    assert_eq!(
        account["name"], "Mario Bianchi",
        "the name given, not the codice fiscale"
    );
    assert_eq!(list_total(&app, &squatter).await, 0);
    assert_eq!(
        app.get(&squatter, &format!("/v1/dossiers/{filed_id}"))
            .await
            .status(),
        404
    );
    app.indexed().await;
    let found: Value = app
        .search(&squatter, &[("q", "villetta")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 0, "{found}");

    // It can start a dossier of its own, and sees that one alone.
    let own = app
        .open_dossier(&squatter, "cambio-residenza", &victim)
        .await;
    assert_eq!(own["channel"], "online");
    assert_eq!(list_total(&app, &squatter).await, 1);

    // The real citizen registers too: a second, separate unverified account.
    let real = self_register(&app, &victim, "Luigi Verdi", "luigi@example.it").await;
    assert_eq!(
        list_total(&app, &real).await,
        0,
        "not even the squatter's dossier"
    );
    let real_id = me(&app, &real).await["id"].as_str().unwrap().to_owned();

    // Only front-office staff verify an identity, against a document.
    let verify = |token: String, user: String, body: Value| {
        let app = &app;
        async move {
            post_json(
                app,
                Some(&token),
                &format!("/v1/users/{user}/verify-identity"),
                body,
            )
            .await
        }
    };
    let document = json!({"document_kind": "carta_identita", "document_number": "CA12345AA"});
    assert_eq!(
        verify(staff.clone(), real_id.clone(), document.clone())
            .await
            .status(),
        403
    );
    assert_eq!(
        verify(real.clone(), real_id.clone(), document.clone())
            .await
            .status(),
        403
    );
    let desk = {
        // `user add --front-office` through the CLI: staff of every office.
        let out = app.cli(&[
            "user",
            "add",
            "--role",
            "staff",
            "--name",
            "Sportello",
            "--front-office",
        ]);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };
    // The front office finds the account by codice fiscale: both accounts, neither verified.
    let accounts: Value = app
        .get(&desk, &format!("/v1/users?codice_fiscale={victim}"))
        .await
        .json()
        .await
        .unwrap();
    let accounts = accounts["items"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    assert!(accounts.iter().all(|a| a["identity_verified_at"].is_null()));
    assert_eq!(
        verify(
            desk.clone(),
            real_id.clone(),
            json!({"document_kind": "tessera", "document_number": "1"})
        )
        .await
        .status(),
        400
    );
    let verified = verify(
        desk.clone(),
        real_id.clone(),
        json!({"document_kind": "carta_identita", "document_number": "CA12345AA", "name": "Luigi Verdi"}),
    )
    .await;
    assert_eq!(verified.status(), 204);
    // Now the dossiers filed under it open to the verified account, at once.
    assert_eq!(list_total(&app, &real).await, 2);
    assert_eq!(
        app.get(&real, &format!("/v1/dossiers/{filed_id}"))
            .await
            .status(),
        200
    );
    let found: Value = app
        .search(&real, &[("q", "villetta")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    // The squatter still sees only its own.
    assert_eq!(list_total(&app, &squatter).await, 1);
    // A codice fiscale is unique among verified accounts: the squatter cannot be verified too.
    let squatter_id = me(&app, &squatter).await["id"].as_str().unwrap().to_owned();
    assert_eq!(
        verify(desk.clone(), squatter_id, document.clone())
            .await
            .status(),
        409
    );
    // The verification is in the trail with who did it and how.
    let (actor, detail): (String, String) = sqlx::query_as(
        "select actor_id, detail from audit_event where action = 'user.verify_identity' \
         and outcome = 'ok'",
    )
    .fetch_one(app.services.db.pool())
    .await
    .unwrap();
    assert_eq!(actor, me(&app, &desk).await["id"].as_str().unwrap());
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["method"], "identity_document");
    assert_eq!(detail["document_kind"], "carta_identita");
    assert_eq!(detail["document_number"], "CA12345AA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_code_activates_only_its_own_registrations_account() {
    let app = spawn_app().await;
    let codice = cf(2010);
    let register = |email: &'static str| {
        let app = &app;
        let codice = codice.clone();
        async move {
            let r = post_json(
                app,
                None,
                "/v1/registrations",
                json!({"codice_fiscale": codice, "name": "Anna", "email": email}),
            )
            .await;
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()
        }
    };
    let first = register("old@example.it").await;
    let second = register("new@example.it").await;
    // Both answers look alike: nothing tells whether the codice fiscale has an account.
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        second.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    let new_token = activate_from_outbox(&app, "new@example.it").await;
    let new_account = me(&app, &new_token).await["id"].clone();
    app.open_dossier(&new_token, "cila", &codice).await;
    // Activating the older registration afterwards makes its own account, not the new one.
    let old_token = activate_from_outbox(&app, "old@example.it").await;
    let old_account = me(&app, &old_token).await["id"].clone();
    assert_ne!(old_account, new_account);
    assert_eq!(list_total(&app, &old_token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_verified_codice_fiscale_sends_the_code_to_the_account_on_file() {
    let app = spawn_app().await;
    let out = app.cli(&[
        "user",
        "add",
        "--role",
        "citizen",
        "--name",
        "Titolare",
        "--cf",
        &cf(2020),
        "--email",
        "titolare@example.it",
    ]);
    assert!(out.status.success());
    let owner: Value = serde_json::from_slice(&out.stdout).unwrap();
    let owner_token = owner["token"].as_str().unwrap();
    app.open_dossier(owner_token, "cila", &cf(2020)).await;

    let r = post_json(
        &app,
        None,
        "/v1/registrations",
        json!({"codice_fiscale": cf(2020), "name": "Intruso", "email": "intruso@example.it"}),
    )
    .await;
    assert_eq!(r.status(), 202, "the same answer as any registration");
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from notification_outbox where recipient = 'intruso@example.it'",
    )
    .fetch_one(app.services.db.pool())
    .await
    .unwrap();
    assert_eq!(queued, 0, "nothing goes to the typed address");
    // The owner, who receives it, signs in to their own account with it.
    let again = activate_from_outbox(&app, "titolare@example.it").await;
    assert_eq!(me(&app, &again).await["id"], owner["id"]);
    assert_eq!(list_total(&app, &again).await, 1);
}

/// A dossier of `applicant` with a public decision of the office and a public attachment of
/// the applicant, taken to `concluded`.
async fn concluded_dossier(
    app: &TestApp,
    applicant: &str,
    staff: &str,
    n: u32,
) -> (String, String, String) {
    let d = app.open_dossier(applicant, "cila", &cf(n)).await;
    let d = d["id"].as_str().unwrap().to_owned();
    let mine = app
        .add_text(
            applicant,
            &d,
            "relazione del richiedente",
            "Relazione",
            "public",
        )
        .await;
    let decision = app
        .upload(
            staff,
            &format!("/v1/dossiers/{d}/documents"),
            b"Provvedimento: accolto".to_vec(),
            "provvedimento.txt",
            &[("kind", "decision"), ("visibility", "public")],
        )
        .await;
    assert_eq!(decision.status(), 201);
    let decision: Value = decision.json().await.unwrap();
    (
        d,
        mine["id"].as_str().unwrap().to_owned(),
        decision["id"].as_str().unwrap().to_owned(),
    )
}

async fn transition(app: &TestApp, token: &str, dossier: &str, body: Value) -> reqwest::Response {
    post_json(
        app,
        Some(token),
        &format!("/v1/dossiers/{dossier}/transitions"),
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applicant_cannot_rewrite_the_offices_decision() {
    let app = spawn_app().await;
    let applicant = app.citizen(2030).await;
    let staff = app.staff(&["edilizia"]).await;
    let (d, mine, decision) = concluded_dossier(&app, &applicant, &staff, 2030).await;
    let version = |token: String, document: String, bytes: &'static [u8]| {
        let app = &app;
        async move {
            app.upload(
                &token,
                &format!("/v1/documents/{document}/versions"),
                bytes.to_vec(),
                "falso.txt",
                &[],
            )
            .await
            .status()
        }
    };
    // Applicants upload no decisions, and add no version to the office's documents.
    let forged = app
        .upload(
            &applicant,
            &format!("/v1/dossiers/{d}/documents"),
            b"Provvedimento falso".to_vec(),
            "falso.txt",
            &[("kind", "decision")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        version(applicant.clone(), decision.clone(), b"forged").await,
        403
    );
    // Nor does the office add versions to the applicant's documents.
    assert_eq!(version(staff.clone(), mine.clone(), b"edited").await, 403);
    // Each side versions its own while the dossier is open.
    assert_eq!(version(applicant.clone(), mine.clone(), b"v2").await, 201);

    // Concluded: the applicant adds nothing; nobody adds a version; the office adds new acts.
    assert_eq!(
        transition(&app, &staff, &d, json!({"to": "started"}))
            .await
            .status(),
        200
    );
    let concluded = transition(
        &app,
        &staff,
        &d,
        json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision}),
    )
    .await;
    assert_eq!(concluded.status(), 200);
    assert_eq!(version(applicant.clone(), mine.clone(), b"v3").await, 409);
    assert_eq!(
        version(applicant.clone(), decision.clone(), b"forged").await,
        403
    );
    assert_eq!(
        version(staff.clone(), decision.clone(), b"amended").await,
        409
    );
    let late = app
        .upload(
            &applicant,
            &format!("/v1/dossiers/{d}/documents"),
            b"altro".to_vec(),
            "altro.txt",
            &[],
        )
        .await;
    assert_eq!(late.status(), 409);
    let rectification = app
        .upload(
            &staff,
            &format!("/v1/dossiers/{d}/documents"),
            b"Rettifica del provvedimento".to_vec(),
            "rettifica.txt",
            &[("kind", "decision"), ("visibility", "public")],
        )
        .await;
    assert_eq!(rectification.status(), 201, "a later act is a new document");
    // The decision's bytes are those the office uploaded.
    let content = app
        .get(&applicant, &format!("/v1/documents/{decision}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&content[..], b"Provvedimento: accolto");
    let versions: Value = app
        .get(&applicant, &format!("/v1/documents/{decision}/versions"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions["items"].as_array().map_or(0, Vec::len),
        1,
        "{versions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_records_its_uploader_shown_by_role() {
    let app = spawn_app().await;
    let applicant = app.citizen(2040).await;
    let staff = app.staff(&["edilizia"]).await;
    let auditor = app.user("auditor", None, &[]).await;
    let (_, mine, decision) = concluded_dossier(&app, &applicant, &staff, 2040).await;
    let staff_id = me(&app, &staff).await["id"].clone();
    let applicant_id = me(&app, &applicant).await["id"].clone();

    for viewer in [&staff, &auditor] {
        let doc: Value = app
            .get(viewer, &format!("/v1/documents/{decision}"))
            .await
            .json()
            .await
            .unwrap();
        let by = &doc["uploaded_by"];
        assert_eq!(by["side"], "office");
        assert_eq!(by["user_id"], staff_id);
        assert_eq!(by["role"], "staff");
        assert_eq!(by["channel"], "desk");
        assert_eq!(by["name"], "Test staff");
        let doc: Value = app
            .get(viewer, &format!("/v1/documents/{mine}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(doc["uploaded_by"]["user_id"], applicant_id);
        assert_eq!(doc["uploaded_by"]["channel"], "online");
    }
    // Applicants learn the side, never the officer.
    let doc: Value = app
        .get(&applicant, &format!("/v1/documents/{decision}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["uploaded_by"], json!({"side": "office"}));
    let versions: Value = app
        .get(&applicant, &format!("/v1/documents/{decision}/versions"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions["items"][0]["uploaded_by"],
        json!({"side": "office"})
    );
    let doc: Value = app
        .get(&applicant, &format!("/v1/documents/{mine}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["uploaded_by"], json!({"side": "applicant"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_end_with_their_parent_and_have_a_default_lifetime() {
    let app = spawn_app().await;
    let parent = app.citizen(2050).await;
    let made = post_json(
        &app,
        Some(&parent),
        "/v1/tokens",
        json!({"label": "script"}),
    )
    .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let child = made["token"].as_str().unwrap().to_owned();
    // 90 days by default, and never past the parent's own end (also 90 days here).
    let expires: jiff::Timestamp = made["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires - jiff::Timestamp::now()).get_seconds() as f64 / 86_400.0;
    assert!((89.0..=90.01).contains(&days), "{days}");
    let grandchild: Value = post_json(
        &app,
        Some(&child),
        "/v1/tokens",
        json!({"label": "nested", "expires_in_days": 3650}),
    )
    .await
    .json()
    .await
    .unwrap();
    let grand_expires: jiff::Timestamp =
        grandchild["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        grand_expires <= expires,
        "a child never outlives its parent"
    );
    let grandchild = grandchild["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&grandchild, "/v1/me").await.status(), 200);

    // Revoking the parent's token ends every token made with it.
    let tokens: Value = app.get(&parent, "/v1/tokens").await.json().await.unwrap();
    let first = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "created with the user")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/tokens/{first}")))
        .bearer_auth(&parent)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    for token in [&parent, &child, &grandchild] {
        assert_eq!(app.get(token, "/v1/me").await.status(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_users_and_moving_offices_are_audited_and_admins_get_no_credentials() {
    let app = spawn_app().await;
    let admin = app.user("admin", None, &[]).await;
    let created = post_json(
        &app,
        Some(&admin),
        "/v1/users",
        json!({"role": "auditor", "name": "Revisore", "email": "revisore@example.it"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let body = created.text().await.unwrap();
    assert!(
        !body.contains("fsc_"),
        "no credential in the answer: {body}"
    );
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The admin cannot mint one for the auditor either.
    let tokens: Value = app
        .get(&admin, &format!("/v1/tokens?user={id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["items"].as_array().unwrap().len(), 0);
    // The auditor's own activation is the only way in.
    let auditor = activate_from_outbox(&app, "revisore@example.it").await;
    assert_eq!(me(&app, &auditor).await["role"], "auditor");

    let staff = post_json(
        &app,
        Some(&admin),
        "/v1/users",
        json!({"role": "staff", "name": "Neri", "offices": ["tributi"], "email": "neri@example.it"}),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    let moved = app
        .client
        .put(app.url(&format!(
            "/v1/users/{}/offices",
            staff["id"].as_str().unwrap()
        )))
        .bearer_auth(&admin)
        .json(&json!({"offices": ["edilizia"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 204);
    let actions: Vec<(String, String)> = sqlx::query_as(
        "select action, detail from audit_event where action in ('user.create', 'user.offices') \
         order by seq",
    )
    .fetch_all(app.services.db.pool())
    .await
    .unwrap();
    let details: Vec<Value> = actions
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(details.iter().any(|d| d["role"] == "auditor"));
    assert!(details.iter().any(|d| d["offices"] == json!(["tributi"])));
    assert!(details.iter().any(|d| d["offices"] == json!(["edilizia"])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_query_syntax_is_only_words_and_hits_carry_ranks() {
    let app = spawn_app().await;
    let staff = app.staff(&["edilizia"]).await;
    let applicant = app.citizen(2060).await;
    let d = app.open_dossier(&applicant, "cila", &cf(2060)).await;
    let d = d["id"].as_str().unwrap();
    app.add_text(
        &applicant,
        d,
        "relazione tecnica sul solaio",
        "Relazione",
        "public",
    )
    .await;
    app.add_text(
        &applicant,
        d,
        "ricevuta del versamento",
        "Ricevuta",
        "public",
    )
    .await;
    app.indexed().await;
    for q in [
        "body:[0 TO zzzz]",
        "body:*",
        "field:*",
        "title:relazione^100",
        "/rel.*/",
        "solaio~2",
        "doc_id:IN [a b]",
        "relazione OR",
        "((((((a))))))",
        "\"",
        "*",
        "-",
        "a:b:c",
        "\u{0}\u{202e}",
    ] {
        let r = app.search(&staff, &[("q", q)]).await;
        assert!(
            r.status() == 200 || r.status() == 400,
            "{q:?}: {}",
            r.status()
        );
        let body: Value = r.json().await.unwrap();
        if let Some(total) = body["total"].as_u64() {
            assert_eq!(
                total, 0,
                "{q:?} reached something through the engine's syntax: {body}"
            );
        } else {
            assert_eq!(body["error"]["code"], "invalid_query", "{q:?}");
        }
    }
    // Words keep working, and OR, exclusion and phrases.
    for (q, total) in [
        ("relazione", 1),
        ("relazione OR ricevuta", 2),
        ("-ricevuta relazione", 1),
        ("\"relazione tecnica\"", 1),
        ("(relazione OR ricevuta) -solaio", 1),
    ] {
        let body: Value = app.search(&staff, &[("q", q)]).await.json().await.unwrap();
        assert_eq!(body["total"], total, "{q:?}: {body}");
    }
    let too_many = vec!["parola"; 40].join(" ");
    let r = app.search(&staff, &[("q", too_many.as_str())]).await;
    assert_eq!(r.status(), 400);
    // Ranks, never the raw score.
    let body: Value = app
        .search(
            &staff,
            &[
                ("q", "relazione OR ricevuta"),
                ("limit", "1"),
                ("offset", "1"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    let hit = &body["hits"][0];
    assert_eq!(hit["rank"], 2);
    assert!(hit.get("score").is_none(), "{hit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossiers_history_lists_the_searches_and_listings_that_disclosed_it() {
    let app = spawn_app().await;
    let applicant = app.citizen(2070).await;
    let delegate = app.user("professional", Some(&cf(2071)), &[]).await;
    let other = app.user("professional", Some(&cf(2072)), &[]).await;
    let staff = app.staff(&["edilizia"]).await;
    let auditor = app.user("auditor", None, &[]).await;
    let d = app.open_dossier(&applicant, "cila", &cf(2070)).await;
    let d = d["id"].as_str().unwrap().to_owned();
    app.add_text(
        &applicant,
        &d,
        "computo metrico estimativo",
        "Computo",
        "public",
    )
    .await;
    for pro in [2071, 2072] {
        let r = post_json(
            &app,
            Some(&applicant),
            &format!("/v1/dossiers/{d}/delegations"),
            json!({"professional_cf": cf(pro)}),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    // A delegate sees only their own delegation; the applicant sees both.
    let listed: Value = app
        .get(&delegate, &format!("/v1/dossiers/{d}/delegations"))
        .await
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["professional_cf"], cf(2071));
    let _ = other;
    let listed: Value = app
        .get(&applicant, &format!("/v1/dossiers/{d}/delegations"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    assert_eq!(list_total(&app, &delegate).await, 1);
    assert_eq!(app.get(&staff, "/v1/stats").await.status(), 200);
    assert_eq!(app.get(&delegate, "/v1/tokens").await.status(), 200);
    app.indexed().await;
    let found: Value = app
        .search(&staff, &[("q", "computo")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    let history: Value = app
        .get(&auditor, &format!("/v1/dossiers/{d}/history"))
        .await
        .json()
        .await
        .unwrap();
    let accesses = history["accesses"].as_array().unwrap();
    let staff_id = me(&app, &staff).await["id"].clone();
    assert!(
        accesses
            .iter()
            .any(|a| a["action"] == "search" && a["actor_id"] == staff_id),
        "the search that returned the dossier's text is in its history: {accesses:?}"
    );
    assert!(
        accesses
            .iter()
            .filter(|a| a["action"] == "delegations.list")
            .count()
            >= 2
    );
    let delegate_id = me(&app, &delegate).await["id"].clone();
    assert!(
        accesses
            .iter()
            .any(|a| a["action"] == "dossiers.list" && a["actor_id"] == delegate_id),
        "the listing that showed the dossier is in its history"
    );
    // The index of disclosures catches up in the background; the history reads the same
    // events from it as from the trail's tail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let indexed: i64 =
            sqlx::query_scalar("select count(*) from audit_disclosure where dossier_id = $1")
                .bind(&d)
                .fetch_one(app.services.db.pool())
                .await
                .unwrap();
        let position = fascicolo::db::disclosures::position(&app.services.db)
            .await
            .unwrap();
        let newest: i64 = sqlx::query_scalar("select max(seq) from audit_event")
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
        if indexed >= 2 && position >= newest - 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "disclosures not indexed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again: Value = app
        .get(&auditor, &format!("/v1/dossiers/{d}/history"))
        .await
        .json()
        .await
        .unwrap();
    let searches = |h: &Value| {
        h["accesses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "search" || a["action"] == "dossiers.list")
            .count()
    };
    assert_eq!(
        searches(&again),
        searches(&history),
        "the same disclosures, indexed"
    );
    // Statistics and token listings are reads of the trail too.
    app.services.auditor.flush().await;
    for action in ["stats.read", "tokens.list"] {
        let n: i64 = sqlx::query_scalar("select count(*) from audit_event where action = $1")
            .bind(action)
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1, "{action}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_counted_per_address_not_one_row_each() {
    let app = spawn_app().await;
    for _ in 0..25 {
        let r = app
            .get("fsc_0000000000000000000000000000000000", "/v1/me")
            .await;
        assert_eq!(r.status(), 401);
    }
    for _ in 0..5 {
        let r = post_json(
            &app,
            None,
            "/v1/registrations/activate",
            json!({"registration_id": "nope", "code": "12345678"}),
        )
        .await;
        assert_eq!(r.status(), 400);
    }
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("select client_address, kind, attempts from auth_failure order by kind")
            .fetch_all(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("127.0.0.1".to_owned(), "activation".to_owned(), 5),
            ("127.0.0.1".to_owned(), "token".to_owned(), 25)
        ]
    );
    let events: i64 = sqlx::query_scalar(
        "select count(*) from audit_event where action = 'auth.failure' and client_address = '127.0.0.1'",
    )
    .fetch_one(app.services.db.pool())
    .await
    .unwrap();
    assert_eq!(events, 2, "one trail row per address, kind and hour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_holes_stay_closed() {
    let app = spawn_app().await;
    let applicant = app.citizen(2080).await;
    let staff = app.staff(&["edilizia"]).await;
    let auditor = app.user("auditor", None, &[]).await;

    // Auditors write nothing, proposals included.
    let proposal = post_json(
        &app,
        Some(&auditor),
        "/v1/proposals",
        json!({"kind": "proposal", "text": "Più sportelli"}),
    )
    .await;
    assert_eq!(proposal.status(), 403);

    // An item satisfied by an internal document: the applicant sees it satisfied, not its id.
    let d = app.open_dossier(&applicant, "cila", &cf(2080)).await;
    let d = d["id"].as_str().unwrap().to_owned();
    assert_eq!(
        transition(&app, &staff, &d, json!({"to": "started"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        transition(
            &app,
            &staff,
            &d,
            json!({"to": "awaiting_integration", "missing_items": ["Verbale"]})
        )
        .await
        .status(),
        200
    );
    let requests: Value = app
        .get(&staff, &format!("/v1/dossiers/{d}/integration-requests"))
        .await
        .json()
        .await
        .unwrap();
    let item = format!("{}/1", requests["items"][0]["id"].as_str().unwrap());
    let internal = app
        .upload(
            &staff,
            &format!("/v1/dossiers/{d}/documents"),
            b"verbale di sopralluogo".to_vec(),
            "verbale.txt",
            &[("visibility", "internal"), ("integration_item", &item)],
        )
        .await;
    assert_eq!(internal.status(), 201);
    let internal: Value = internal.json().await.unwrap();
    let seen_by = |token: String| {
        let app = &app;
        let d = d.clone();
        async move {
            let v: Value = app
                .get(&token, &format!("/v1/dossiers/{d}/integration-requests"))
                .await
                .json()
                .await
                .unwrap();
            v["items"][0]["items"][0].clone()
        }
    };
    let for_applicant = seen_by(applicant.clone()).await;
    assert_eq!(for_applicant["satisfied"], true);
    assert!(for_applicant["document_id"].is_null(), "{for_applicant}");
    assert_eq!(seen_by(staff.clone()).await["document_id"], internal["id"]);

    // File names lose bidirectional controls that disguise their extension.
    let sneaky = app
        .upload(
            &applicant,
            &format!("/v1/dossiers/{d}/documents"),
            b"testo".to_vec(),
            "fattura\u{202e}fdp.exe",
            &[("title", "Fattura")],
        )
        .await;
    assert_eq!(sneaky.status(), 201);
    let sneaky: Value = sneaky.json().await.unwrap();
    assert_eq!(sneaky["filename"], "fatturafdp.exe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_nothing_outside_its_folder() {
    let app = spawn_app().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("segreto.txt"), "password di root").unwrap();
    let tree = tempfile::tempdir().unwrap();
    let folder = tree.path().join("pratica-001");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("manifest.json"),
        json!({"procedure": "cila", "applicant_cf": cf(2090), "subject": "Link"}).to_string(),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("segreto.txt"),
        folder.join("allegato.txt"),
    )
    .unwrap();
    let output = app.cli(&["import", tree.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("symbolic link"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from document")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    // A linked dossier folder is refused the same way.
    let tree = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.path().join("pratica-002")).unwrap();
    assert!(
        !app.cli(&["import", tree.path().to_str().unwrap()])
            .status
            .success()
    );
}
