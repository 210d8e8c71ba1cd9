use serde_json::{Value, json};

use crate::helpers::{TestApp, cf, spawn_app};

async fn register(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/registrations"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn activate(app: &TestApp, id: &str, code: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/registrations/activate"))
        .json(&json!({"registration_id": id, "code": code}))
        .send()
        .await
        .unwrap()
}

/// The code the notifier would send, read from the outbox.
async fn outbox(app: &TestApp, registration: &str) -> (String, String) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select recipient, payload from notification_outbox order by id")
            .fetch_all(app.services.db.pool())
            .await
            .unwrap();
    rows.into_iter()
        .find_map(|(to, payload)| {
            let v: Value = serde_json::from_str(&payload).unwrap();
            (v["registration_id"] == registration)
                .then(|| (to, v["code"].as_str().unwrap().to_owned()))
        })
        .expect("an activation message in the outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_registers_with_the_codice_fiscale_and_activates_once() {
    let app = spawn_app().await;
    let response = register(&app, json!({"name": "Maria Rossi", "codice_fiscale": cf(100), "email": "Maria.Rossi@Example.it", "phone": "+39 011 1234567"})).await;
    assert_eq!(response.status(), 202);
    let pending: Value = response.json().await.unwrap();
    let id = pending["registration_id"].as_str().unwrap();
    let (recipient, code) = outbox(&app, id).await;
    assert_eq!(recipient, "maria.rossi@example.it");
    assert_eq!(code.len(), 8);

    let wrong = activate(&app, id, "00000000").await;
    assert_eq!(wrong.status(), 400);
    let ok = activate(&app, id, &code).await;
    assert_eq!(ok.status(), 201);
    let credentials: Value = ok.json().await.unwrap();
    let token = credentials["token"].as_str().unwrap();
    let me: Value = app.get(token, "/v1/me").await.json().await.unwrap();
    assert_eq!(me["role"], "citizen");
    assert_eq!(me["codice_fiscale"], cf(100));

    let again = activate(&app, id, &code).await;
    assert_eq!(again.status(), 400, "codes are single-use");
    // The new citizen can open their own dossier at once.
    app.open_dossier(token, "cambio-residenza", &cf(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_codes_die_after_five_wrong_attempts_and_when_expired() {
    let app = spawn_app().await;
    let r: Value = register(
        &app,
        json!({"name": "Maria Rossi", "codice_fiscale": cf(101), "email": "a@example.it"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = r["registration_id"].as_str().unwrap();
    let (_, code) = outbox(&app, id).await;
    for _ in 0..5 {
        assert_eq!(activate(&app, id, "11111111").await.status(), 400);
    }
    let locked = activate(&app, id, &code).await;
    assert_eq!(locked.status(), 429, "the right code no longer works");

    let r: Value = register(
        &app,
        json!({"name": "Maria Rossi", "codice_fiscale": cf(102), "email": "b@example.it"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = r["registration_id"].as_str().unwrap();
    let (_, code) = outbox(&app, id).await;
    sqlx::query("update registration set expires_at = 1 where id = $1")
        .bind(id)
        .execute(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(activate(&app, id, &code).await.status(), 400);
    assert_eq!(
        activate(&app, "no-such-registration", &code).await.status(),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_rate_limited_per_email_and_validated() {
    let app = spawn_app().await;
    for n in 0..3 {
        let r = register(
            &app,
            json!({"name": "Maria Rossi", "codice_fiscale": cf(110 + n), "email": "same@example.it"}),
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let limited = register(
        &app,
        json!({"name": "Maria Rossi", "codice_fiscale": cf(120), "email": "same@example.it"}),
    )
    .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    for (body, code) in [
        (
            json!({"name": "Maria Rossi", "codice_fiscale": "RSSMRA85T10A562T", "email": "x@example.it"}),
            "invalid_codice_fiscale",
        ),
        (
            json!({"name": "Maria Rossi", "codice_fiscale": cf(121), "email": "not-an-address"}),
            "invalid_email",
        ),
        (
            json!({"name": "Maria Rossi", "codice_fiscale": cf(121), "email": "x@example.it", "phone": "call me"}),
            "invalid_phone",
        ),
    ] {
        let r = register(&app, body).await;
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_an_existing_codice_fiscale_cannot_take_the_account_over() {
    let app = spawn_app().await;
    // A verified account: made by the operator at the command line.
    let created = app.cli(&[
        "user",
        "add",
        "--role",
        "citizen",
        "--name",
        "Owner",
        "--cf",
        &cf(122),
        "--email",
        "owner@example.it",
    ]);
    assert!(created.status.success());
    let r: Value = register(
        &app,
        json!({"name": "Maria Rossi", "codice_fiscale": cf(122), "email": "attacker@example.it"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let (recipient, _) = outbox(&app, r["registration_id"].as_str().unwrap()).await;
    assert_eq!(
        recipient, "owner@example.it",
        "the code goes to the address on file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_revoked_and_expire() {
    let app = spawn_app().await;
    let citizen = app.citizen(130).await;
    let other = app.citizen(131).await;
    let admin = app.user("admin", None, &[]).await;

    let r = app
        .client
        .post(app.url("/v1/tokens"))
        .bearer_auth(&citizen)
        .json(&json!({"label": "cellulare", "expires_in_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    let second_token = second["token"].as_str().unwrap();
    assert!(second["expires_at"].is_string());
    assert_eq!(app.get(second_token, "/v1/me").await.status(), 200);

    let listed: Value = app.get(&citizen, "/v1/tokens").await.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        !listed.to_string().contains(second_token),
        "secrets are never listed"
    );
    let second_id = items.iter().find(|t| t["label"] == "cellulare").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Someone else cannot see or revoke it; it answers like a token that does not exist.
    let foreign = app
        .client
        .delete(app.url(&format!("/v1/tokens/{second_id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    assert_eq!(app.get(&other, "/v1/tokens?user=x").await.status(), 403);

    let revoked = app
        .client
        .delete(app.url(&format!("/v1/tokens/{second_id}")))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(app.get(second_token, "/v1/me").await.status(), 401);
    assert_eq!(
        app.get(&citizen, "/v1/me").await.status(),
        200,
        "other tokens keep working"
    );

    // Expiry, set in the database behind the server's back (as another node would): the
    // server trusts what it read about a token for a second at most.
    sqlx::query("update api_token set expires_at = 1 where revoked_at is null and user_id = (select id from app_user where codice_fiscale = $1)")
        .bind(cf(130))
        .execute(app.services.db.pool())
        .await
        .unwrap();
    refused_within_a_second(&app, &citizen).await;

    // A token read with an expiry stops at that expiry, however recently it was read.
    let third = app.citizen(132).await;
    let r = app
        .client
        .post(app.url("/v1/tokens"))
        .bearer_auth(&third)
        .json(&json!({"label": "breve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let short: Value = r.json().await.unwrap();
    let short = short["token"].as_str().unwrap().to_owned();
    let ends = fascicolo::db::now_ms() + 1_500;
    sqlx::query("update api_token set expires_at = $1 where token_hash = $2")
        .bind(ends)
        .bind(fascicolo::access::hash_token(&short))
        .execute(app.services.db.pool())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    loop {
        // The server checks after the request is sent: a request sent at or after the expiry
        // must be refused.
        let sent = fascicolo::db::now_ms();
        let status = app.get(&short, "/v1/me").await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            sent < ends,
            "accepted a request sent at {sent}, at or after its expiry at {ends}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // An admin lists and revokes anyone's tokens.
    let me: Value = app.get(&other, "/v1/me").await.json().await.unwrap();
    let theirs: Value = app
        .get(
            &admin,
            &format!("/v1/tokens?user={}", me["id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = theirs["items"][0]["id"].as_str().unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/v1/tokens/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.get(&other, "/v1/me").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_issue_list_and_revoke() {
    let app = spawn_app().await;
    let out = app.cli(&["user", "add", "--role", "auditor", "--name", "Revisore"]);
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = user["id"].as_str().unwrap();
    let out = app.cli(&[
        "token",
        "add",
        "--user",
        id,
        "--label",
        "script notturno",
        "--expires-in-days",
        "7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = issued["token"].as_str().unwrap();
    assert_eq!(app.get(token, "/v1/me").await.status(), 200);
    let out = app.cli(&["token", "list", "--user", id]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let nightly = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "script notturno")
        .unwrap();
    let out = app.cli(&["token", "revoke", nightly["id"].as_str().unwrap()]);
    assert!(out.status.success());
    // The command is another process: the server sees the revocation within a second.
    refused_within_a_second(&app, token).await;
    assert!(!app.cli(&["token", "revoke", "nonsense"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_read_no_content() {
    let app = spawn_app().await;
    let admin = app.user("admin", None, &[]).await;
    let citizen = app.citizen(140).await;
    let d = app.open_dossier(&citizen, "cila", &cf(140)).await;
    app.add_text(
        &citizen,
        d["id"].as_str().unwrap(),
        "contenuto riservato",
        "Atto",
        "public",
    )
    .await;

    let create = |body: Value, token: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/users"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let staff = create(
        json!({"role": "staff", "name": "Neri", "offices": ["tributi"]}),
        admin.clone(),
    )
    .await;
    assert_eq!(
        staff.status(),
        400,
        "a user needs an e-mail address for the activation"
    );
    let staff = create(
        json!({"role": "staff", "name": "Neri", "offices": ["tributi"], "email": "neri@example.it"}),
        admin.clone(),
    )
    .await;
    assert_eq!(staff.status(), 201);
    let staff: Value = staff.json().await.unwrap();
    assert!(
        staff.get("token").is_none(),
        "no answer carries another user's credential: {staff}"
    );
    let staff_token = crate::helpers::activate_from_outbox(&app, "neri@example.it").await;
    let staff_token = staff_token.as_str();
    assert_eq!(
        create(
            json!({"role": "staff", "name": "X", "offices": ["tributi"], "email": "x@example.it"}),
            citizen.clone()
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        create(
            json!({"role": "staff", "name": "X", "offices": ["nowhere"], "email": "x@example.it"}),
            admin.clone()
        )
        .await
        .status(),
        400
    );

    // Moving staff between offices takes effect on the next request.
    let path = format!("/v1/dossiers/{}", d["id"].as_str().unwrap());
    assert_eq!(app.get(staff_token, &path).await.status(), 404);
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
    assert_eq!(app.get(staff_token, &path).await.status(), 200);
    app.indexed().await;
    let found: Value = app
        .search(staff_token, &[("q", "riservato")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);

    let users: Value = app.get(&admin, "/v1/users").await.json().await.unwrap();
    assert!(users["items"].as_array().unwrap().len() >= 3);
    assert_eq!(app.get(&citizen, "/v1/users").await.status(), 403);

    // Admins read no document content.
    assert_eq!(app.get(&admin, &path).await.status(), 404);
    let none: Value = app
        .search(&admin, &[("q", "riservato")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["total"], 0);

    let disabled = app
        .client
        .post(app.url(&format!(
            "/v1/users/{}/disable",
            staff["id"].as_str().unwrap()
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 204);
    assert_eq!(app.get(staff_token, "/v1/me").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_office_staff_handle_every_office() {
    let app = spawn_app().await;
    let out = app.cli(&[
        "user",
        "add",
        "--role",
        "staff",
        "--name",
        "Sportello",
        "--front-office",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let desk: Value = serde_json::from_slice(&out.stdout).unwrap();
    let desk = desk["token"].as_str().unwrap().to_owned();
    let citizen = app.citizen(150).await;
    let a = app.open_dossier(&citizen, "cila", &cf(150)).await;
    let b = app.open_dossier(&desk, "rimborso-imu", &cf(150)).await;
    assert_eq!(b["channel"], "desk");
    app.add_text(
        &desk,
        b["id"].as_str().unwrap(),
        "istruttoria sportello",
        "Nota",
        "internal",
    )
    .await;
    app.add_text(
        &citizen,
        a["id"].as_str().unwrap(),
        "istruttoria cittadino",
        "Nota",
        "public",
    )
    .await;
    let listed: Value = app.get(&desk, "/v1/dossiers").await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    app.indexed().await;
    let found: Value = app
        .search(&desk, &[("q", "istruttoria")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_rate_limited_per_network_address() {
    let app = spawn_app().await;
    for n in 0..20u32 {
        let r = register(
            &app,
            json!({"name": "Maria Rossi", "codice_fiscale": cf(800 + n), "email": format!("p{n}@example.it")}),
        )
        .await;
        assert_eq!(r.status(), 202, "registration {n}");
    }
    let limited = register(
        &app,
        json!({"name": "Maria Rossi", "codice_fiscale": cf(830), "email": "other@example.it"}),
    )
    .await;
    assert_eq!(
        limited.status(),
        429,
        "the 21st registration from one address in an hour"
    );
}

/// Waits until `token` is refused, which must happen within about a second of a change made
/// outside the server (the time it trusts what it read about a token), and not before it
/// was read again: it is accepted until then.
async fn refused_within_a_second(app: &TestApp, token: &str) {
    let started = std::time::Instant::now();
    loop {
        let status = app.get(token, "/v1/me").await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1_600),
            "still accepted {:?} after the change",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
