//! Notices of every step of a dossier, from the API call that makes the step to the message
//! received: by e-mail to a real SMTP listener, by SMS to an HTTP gateway and to an App IO
//! server, each started by the test; preferences, confirmed contacts, postal tasks, failed
//! messages and their retry, and the staff's daily digest.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::helpers::{TestApp, cf, spawn_app_with};
use crate::notify::{Received, Sink, wait_for};

const PUBLIC: &str = "https://sportello.comune.example.it";

async fn app_with(adjust: impl FnOnce(&mut fascicolo::config::Config)) -> TestApp {
    spawn_app_with(|c| {
        c.smtp_from = "Comune di Ciriè <sportello@comune.cirie.to.it>".to_owned();
        c.public_url = PUBLIC.to_owned();
        adjust(c);
    })
    .await
}

async fn app_mailing_to(port: u16) -> TestApp {
    app_with(|c| c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"))).await
}

fn to(sink: &Sink, address: &str) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == address))
        .collect()
}

/// The first run of eight digits in `text`.
fn code_in(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    for w in chars.windows(8) {
        if w.iter().all(char::is_ascii_digit) {
            return w.iter().collect();
        }
    }
    panic!("no code in {text}");
}

/// Proves `address` as the caller's e-mail with the code the sink receives.
async fn confirm_email(app: &TestApp, token: &str, address: &str, sink: &Sink) {
    let r = app
        .client
        .post(app.url("/v1/me/contacts"))
        .bearer_auth(token)
        .json(&json!({"channel": "email", "address": address}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for("the confirmation code", Duration::from_secs(10), || {
        !to(sink, address).is_empty()
    })
    .await;
    let message = to(sink, address).remove(0);
    assert_eq!(message.subject(), "Conferma il tuo indirizzo e-mail");
    let code = code_in(&message.text());
    // A wrong code is refused and does not confirm.
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let r = app
        .client
        .post(app.url("/v1/me/contacts/confirm"))
        .bearer_auth(token)
        .json(&json!({"channel": "email", "code": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url("/v1/me/contacts/confirm"))
        .bearer_auth(token)
        .json(&json!({"channel": "email", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let contacts: Value = r.json().await.unwrap();
    assert_eq!(contacts["email"], address);
    assert_eq!(contacts["email_confirmed"], true);
}

async fn transition(app: &TestApp, token: &str, dossier: &str, body: Value) {
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{dossier}/transitions")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{body}: {}", r.text().await.unwrap());
}

async fn delegate(app: &TestApp, token: &str, dossier: &str, professional: &str) {
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{dossier}/delegations")))
        .bearer_auth(token)
        .json(&json!({"professional_cf": professional}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Waits until no message of the outbox is pending.
async fn drained(app: &TestApp) {
    let db = app.services.db.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending: i64 =
            sqlx::query_scalar("select count(*) from notification_outbox where status = 'pending'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        if pending == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} messages still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn subjects(messages: &[Received]) -> Vec<String> {
    let mut s: Vec<String> = messages.iter().map(Received::subject).collect();
    s.sort();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_reaches_the_applicant_and_their_professional_once() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let citizen = app.citizen(5100).await;
    let professional = app.user("professional", Some(&cf(5101)), &[]).await;
    let staff = app.staff(&["edilizia"]).await;
    confirm_email(&app, &citizen, "giulia.neri@example.it", &sink).await;
    confirm_email(&app, &professional, "studio.rossi@example.it", &sink).await;

    let d = app.open_dossier(&citizen, "cila", &cf(5100)).await;
    let (id, number) = (
        d["id"].as_str().unwrap().to_owned(),
        d["number"].as_str().unwrap().to_owned(),
    );
    delegate(&app, &citizen, &id, &cf(5101)).await;
    transition(&app, &staff, &id, json!({"to": "started"})).await;
    transition(
        &app,
        &staff,
        &id,
        json!({"to": "awaiting_integration", "missing_items": ["Planimetria catastale", "Ricevuta dei diritti"],
               "internal_note": "nota riservata dell'ufficio"}),
    )
    .await;
    transition(&app, &professional, &id, json!({"to": "started"})).await;
    let r = app
        .client
        .delete(app.url(&format!("/v1/dossiers/{id}/delegations/{}", cf(5101))))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let decision_id = app.decision(&staff, &id).await;
    transition(
        &app,
        &staff,
        &id,
        json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision_id,
               "note": "Lavori assentiti"}),
    )
    .await;
    drained(&app).await;
    // Nothing more arrives later: each message once.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let citizen_mail = to(&sink, "giulia.neri@example.it");
    let mut expected = vec![
        "Conferma il tuo indirizzo e-mail".to_owned(),
        format!("Ricevuta: pratica {number} presentata"),
        format!("Delega conferita: pratica {number}"),
        format!("Pratica {number}: avvio del procedimento"),
        format!("Pratica {number}: richiesta di integrazione"),
        format!("Pratica {number}: integrazione ricevuta"),
        format!("Delega revocata: pratica {number}"),
        format!("Pratica {number}: procedimento concluso"),
    ];
    expected.sort();
    assert_eq!(subjects(&citizen_mail), expected);
    // The professional hears of the steps while delegated, and of nothing after.
    let mut expected = vec![
        "Conferma il tuo indirizzo e-mail".to_owned(),
        format!("Delega ricevuta: pratica {number}"),
        format!("Pratica {number}: avvio del procedimento"),
        format!("Pratica {number}: richiesta di integrazione"),
        format!("Pratica {number}: integrazione ricevuta"),
        format!("Delega revocata: pratica {number}"),
    ];
    expected.sort();
    assert_eq!(subjects(&to(&sink, "studio.rossi@example.it")), expected);
    assert_eq!(sink.messages().len(), 14, "no message to anyone else");

    // Each message carries the Message-ID of its outbox row, and no two share one.
    let ids: Vec<String> = sqlx::query_scalar("select id from notification_outbox")
        .fetch_all(app.services.db.pool())
        .await
        .unwrap();
    let mut seen: Vec<String> = sink.messages().iter().map(Received::message_id).collect();
    for m in &seen {
        let (local, domain) = m.split_once('@').unwrap();
        assert_eq!(domain, "comune.cirie.to.it");
        assert!(ids.iter().any(|i| i == local), "{m} is not an outbox id");
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 14);

    // What each says.
    let body = |subject: &str| -> (String, String) {
        let m = citizen_mail
            .iter()
            .find(|m| m.subject() == subject)
            .unwrap();
        (m.text(), m.html())
    };
    let (receipt, _) = body(&format!("Ricevuta: pratica {number} presentata"));
    assert!(receipt.contains("Gentile Test citizen"), "{receipt}");
    assert!(receipt.contains("Comunicazione inizio lavori asseverata (CILA)"));
    assert!(receipt.contains(&format!("{PUBLIC}/pratiche/{id}")));
    let (started, _) = body(&format!("Pratica {number}: avvio del procedimento"));
    assert!(started.contains("entro 30 giorni"), "{started}");
    let (request, request_html) = body(&format!("Pratica {number}: richiesta di integrazione"));
    assert!(
        request.contains("1. Planimetria catastale") && request.contains("2. Ricevuta dei diritti")
    );
    assert!(request.contains("sospeso"));
    assert!(!request.contains("riservata") && !request_html.contains("riservata"));
    let (concluded, html) = body(&format!("Pratica {number}: procedimento concluso"));
    assert!(concluded.contains("con esito: accolta"), "{concluded}");
    assert!(concluded.contains("Lavori assentiti"));
    assert!(concluded.contains("prima che arrivi per posta"));
    // HTML escapes every value, `/` included; the link is an anchor.
    assert!(
        html.replace("&#x2f;", "/")
            .contains(&format!("<a href=\"{PUBLIC}/pratiche/{id}\">")),
        "{html}"
    );
    let (granted, _) = body(&format!("Delega conferita: pratica {number}"));
    assert!(granted.contains(&cf(5101)));

    // The timeline says how each step was told; the applicant's own list has every message.
    let timeline: Value = app
        .get(&citizen, &format!("/v1/dossiers/{id}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    let steps: Vec<&Value> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "transition")
        .collect();
    assert_eq!(steps.len(), 5);
    for step in &steps {
        let notices = step["notifications"].as_array().unwrap();
        assert!(!notices.is_empty(), "{step}");
        assert!(
            notices.iter().all(|n| n["channel"] == "email"
                && n["status"] == "sent"
                && n["sent_at"].is_string())
        );
    }
    let mine: Value = app
        .get(&citizen, "/v1/notifications")
        .await
        .json()
        .await
        .unwrap();
    let mine = mine["items"].as_array().unwrap();
    assert_eq!(mine.len(), 8);
    assert!(
        mine.iter()
            .all(|m| m["recipient"] == "giulia.neri@example.it" && m["status"] == "sent")
    );
    assert!(mine.iter().all(|m| m.get("last_error").is_none()));

    // Withdrawn, on a dossier of its own.
    let d = app.open_dossier(&citizen, "cila", &cf(5100)).await;
    let other = d["number"].as_str().unwrap().to_owned();
    transition(
        &app,
        &citizen,
        d["id"].as_str().unwrap(),
        json!({"to": "withdrawn"}),
    )
    .await;
    drained(&app).await;
    let subjects = subjects(&to(&sink, "giulia.neri@example.it"));
    assert!(
        subjects.contains(&format!("Pratica {other} ritirata")),
        "{subjects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_notice_nobody_can_receive_becomes_a_postal_task() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let staff = app.staff(&["edilizia"]).await;
    let other_office = app.staff(&["tributi"]).await;
    // Someone registers the applicant's codice fiscale online: an unproven account, with a
    // confirmed e-mail. It must hear nothing of a dossier filed at the desk.
    let r = app
        .client
        .post(app.url("/v1/registrations"))
        .json(&json!({"codice_fiscale": cf(5200), "name": "Impostore", "email": "impostore@example.it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    crate::helpers::activate_from_outbox(&app, "impostore@example.it").await;

    let d = app.open_dossier(&staff, "cila", &cf(5200)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    transition(&app, &staff, &id, json!({"to": "started"})).await;
    drained(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_squatter: Vec<String> = subjects(&to(&sink, "impostore@example.it"));
    assert_eq!(
        to_squatter.len(),
        1,
        "only the activation code: {to_squatter:?}"
    );

    let list = |token: String| {
        let app = &app;
        async move {
            app.get(&token, "/v1/postal-tasks")
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let tasks = list(staff.clone()).await;
    let tasks = tasks["items"].as_array().unwrap();
    // The start must be told (law 241/1990); the receipt is not a required notice.
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["event"], "dossier_started");
    assert_eq!(tasks[0]["dossier_id"], id.as_str());
    assert_eq!(tasks[0]["applicant_cf"], cf(5200).as_str());
    let task = tasks[0]["id"].as_str().unwrap().to_owned();
    // Another office neither sees nor closes it; a citizen may not list tasks.
    assert!(
        list(other_office.clone()).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let done = |token: String| {
        let (app, task) = (&app, task.clone());
        async move {
            app.client
                .post(app.url(&format!("/v1/postal-tasks/{task}/done")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(done(other_office).await, 404);
    let citizen = app.citizen(5201).await;
    assert_eq!(app.get(&citizen, "/v1/postal-tasks").await.status(), 403);
    assert_eq!(done(staff.clone()).await, 204);
    assert_eq!(done(staff.clone()).await, 409);
    assert!(
        list(staff.clone()).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let closed: Value = app
        .get(&staff, "/v1/postal-tasks?done=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(closed["items"][0]["id"], task.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_turn_channels_off_but_a_required_notice_still_goes_out() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let citizen = app.citizen(5300).await;
    let staff = app.staff(&["edilizia"]).await;
    confirm_email(&app, &citizen, "preferenze@example.it", &sink).await;
    let r = app
        .client
        .put(app.url("/v1/me/notification-preferences"))
        .bearer_auth(&citizen)
        .json(&json!({"items": [
            {"event": "dossier_submitted", "channel": "email", "enabled": false},
            {"event": "dossier_started", "channel": "email", "enabled": false},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prefs: Value = r.json().await.unwrap();
    let started = prefs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["event"] == "dossier_started")
        .unwrap();
    assert_eq!(started["required"], true);
    assert_eq!(started["channels"]["email"], false);
    // Unknown events and channels are refused.
    let r = app
        .client
        .put(app.url("/v1/me/notification-preferences"))
        .bearer_auth(&citizen)
        .json(&json!({"items": [{"event": "nope", "channel": "email", "enabled": false}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let d = app.open_dossier(&citizen, "cila", &cf(5300)).await;
    let number = d["number"].as_str().unwrap().to_owned();
    transition(
        &app,
        &staff,
        d["id"].as_str().unwrap(),
        json!({"to": "started"}),
    )
    .await;
    drained(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        subjects(&to(&sink, "preferenze@example.it")),
        vec![
            "Conferma il tuo indirizzo e-mail".to_owned(),
            format!("Pratica {number}: avvio del procedimento"),
        ],
        "the receipt was turned off; the start is required"
    );
}

/// A scripted HTTP server: answers each request with the next status of `script` (the last
/// one repeats), and keeps what it received.
/// One scripted answer: status, `Retry-After` seconds, body.
type Answer = (u16, Option<u64>, Value);

#[derive(Clone, Default)]
struct Gateway {
    script: Arc<Mutex<Vec<Answer>>>,
    received: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
}

impl Gateway {
    async fn start(script: Vec<Answer>) -> (Self, String) {
        let gateway = Self {
            script: Arc::new(Mutex::new(script)),
            received: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(Self::answer)
            .with_state(gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (gateway, url)
    }

    async fn answer(
        State(g): State<Gateway>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        g.received
            .lock()
            .unwrap()
            .push((uri.path().to_owned(), headers, body));
        let (status, retry, answer) = {
            let mut script = g.script.lock().unwrap();
            if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            }
        };
        let mut response =
            (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response();
        if let Some(s) = retry {
            response
                .headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        response
    }

    fn received(&self) -> Vec<(String, HeaderMap, Value)> {
        self.received.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_go_through_the_gateway_retrying_500_and_429_with_the_same_reference() {
    let (gateway, url) = Gateway::start(vec![
        (500, None, json!({"error": "down"})),
        (429, Some(1), json!({"error": "slow down"})),
        (201, None, json!({"id": "accepted"})),
    ])
    .await;
    let app = app_with(|c| {
        c.sms_url = Some(format!("{url}/send"));
        c.sms_auth_header = Some("Authorization: Bearer segreto".into());
    })
    .await;
    let citizen = app.citizen(5400).await;
    let r = app
        .client
        .post(app.url("/v1/me/contacts"))
        .bearer_auth(&citizen)
        .json(&json!({"channel": "sms", "address": "333 123 4567"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["address"], "+393331234567");
    wait_for("three attempts", Duration::from_secs(20), || {
        gateway.received().len() >= 3
    })
    .await;
    drained(&app).await;
    let received = gateway.received();
    assert_eq!(received.len(), 3, "sent once it was accepted");
    let references: Vec<&Value> = received.iter().map(|(_, _, b)| &b["reference"]).collect();
    assert!(
        references.iter().all(|r| *r == references[0]),
        "one idempotency key"
    );
    let (path, headers, body) = &received[2];
    assert_eq!(path, "/send");
    assert_eq!(headers["authorization"], "Bearer segreto");
    assert_eq!(body["to"], "+393331234567");
    let text = body["text"].as_str().unwrap();
    let code = code_in(text);
    let status: (String, i32) =
        sqlx::query_as("select status, attempts from notification_outbox where channel = 'sms'")
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!(status, ("sent".to_owned(), 3));
    // The code confirms the number; step notices then go by SMS, without notes.
    let r = app
        .client
        .post(app.url("/v1/me/contacts/confirm"))
        .bearer_auth(&citizen)
        .json(&json!({"channel": "sms", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let staff = app.staff(&["edilizia"]).await;
    let d = app.open_dossier(&citizen, "cila", &cf(5400)).await;
    let id = d["id"].as_str().unwrap();
    transition(
        &app,
        &staff,
        id,
        json!({"to": "started", "note": "Nota per il cittadino"}),
    )
    .await;
    drained(&app).await;
    let texts: Vec<String> = gateway
        .received()
        .iter()
        .skip(3)
        .map(|(_, _, b)| b["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("presentata")));
    assert!(texts.iter().any(|t| t.contains("presa in carico")));
    assert!(
        texts
            .iter()
            .all(|t| t.contains(&format!("{PUBLIC}/pratiche/{id}")) && !t.contains("Nota"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_io_checks_the_profile_then_sends_retrying_until_accepted() {
    let (gateway, url) = Gateway::start(vec![
        (
            200,
            None,
            json!({"sender_allowed": true, "preferred_languages": ["it_IT"]}),
        ),
        (500, None, json!({"title": "error"})),
        (200, None, json!({"sender_allowed": true})),
        (429, Some(1), json!({"title": "throttled"})),
        (200, None, json!({"sender_allowed": true})),
        (201, None, json!({"id": "01IOMESSAGE"})),
    ])
    .await;
    let app = app_with(|c| {
        c.app_io_url = url.clone();
        c.app_io_key = Some("chiave-del-servizio".into());
    })
    .await;
    // A verified citizen (CLI-made) is reached on App IO by codice fiscale, no contact needed.
    let citizen = app.citizen(5500).await;
    let d = app.open_dossier(&citizen, "cila", &cf(5500)).await;
    let number = d["number"].as_str().unwrap().to_owned();
    drained(&app).await;
    let received = gateway.received();
    let paths: Vec<&str> = received.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/api/v1/profiles",
            "/api/v1/messages",
            "/api/v1/profiles",
            "/api/v1/messages",
            "/api/v1/profiles",
            "/api/v1/messages"
        ]
    );
    for (_, headers, body) in &received {
        assert_eq!(headers["ocp-apim-subscription-key"], "chiave-del-servizio");
        assert_eq!(body["fiscal_code"], cf(5500).as_str());
    }
    let message = &received[5].2;
    let subject = message["content"]["subject"].as_str().unwrap();
    let markdown = message["content"]["markdown"].as_str().unwrap();
    assert_eq!(subject, format!("Pratica {number} presentata"));
    assert!((10..=120).contains(&subject.chars().count()));
    assert!(
        (80..=10_000).contains(&markdown.chars().count()),
        "{markdown}"
    );
    let status: (String, i32) =
        sqlx::query_as("select status, attempts from notification_outbox where channel = 'app_io'")
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!(status, ("sent".to_owned(), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_io_refusal_fails_and_staff_see_it_and_retry_it() {
    let (gateway, url) = Gateway::start(vec![
        (200, None, json!({"sender_allowed": false})),
        (200, None, json!({"sender_allowed": true})),
        (201, None, json!({"id": "01IOMESSAGE"})),
    ])
    .await;
    let app = app_with(|c| {
        c.app_io_url = url.clone();
        c.app_io_key = Some("chiave".into());
    })
    .await;
    let citizen = app.citizen(5600).await;
    let staff = app.staff(&["edilizia"]).await;
    let other = app.staff(&["tributi"]).await;
    let admin = app.user("admin", None, &[]).await;
    app.open_dossier(&citizen, "cila", &cf(5600)).await;
    drained(&app).await;
    let failed: Value = app
        .get(&staff, "/v1/notifications/failed")
        .await
        .json()
        .await
        .unwrap();
    let items = failed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{failed}");
    assert!(
        items[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("does not accept")
    );
    let id = items[0]["id"].as_str().unwrap().to_owned();
    // The failure is on the timeline for staff, not for the applicant.
    let dossier = items[0]["dossier_id"].as_str().unwrap().to_owned();
    let staff_timeline: Value = app
        .get(&staff, &format!("/v1/dossiers/{dossier}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        staff_timeline["events"][0]["notifications"][0]["status"],
        "failed"
    );
    let citizen_timeline: Value = app
        .get(&citizen, &format!("/v1/dossiers/{dossier}/timeline"))
        .await
        .json()
        .await
        .unwrap();
    assert!(citizen_timeline["events"][0].get("notifications").is_none());
    // Another office does not see it; a citizen may not list failures.
    let theirs: Value = app
        .get(&other, "/v1/notifications/failed")
        .await
        .json()
        .await
        .unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    assert_eq!(
        app.get(&citizen, "/v1/notifications/failed").await.status(),
        403
    );
    let admins: Value = app
        .get(&admin, "/v1/notifications/failed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admins["items"].as_array().unwrap().len(), 1);
    let retry = |token: String| {
        let (app, id) = (&app, id.clone());
        async move {
            app.client
                .post(app.url(&format!("/v1/notifications/{id}/retry")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(retry(other.clone()).await, 404);
    assert_eq!(retry(staff.clone()).await, 200);
    drained(&app).await;
    let status: String = sqlx::query_scalar("select status from notification_outbox where id = $1")
        .bind(&id)
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(status, "sent");
    assert_eq!(gateway.received().len(), 3);
    // Sent now: nothing to retry.
    assert_eq!(retry(staff).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_get_one_daily_digest_of_dossiers_near_their_deadline() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        // Due from midnight, and every running dossier counts as close.
        c.digest_hour = 0;
        c.digest_within_days = 10_000;
    })
    .await;
    let staff = app.staff(&["edilizia"]).await;
    let other = app.staff(&["tributi"]).await;
    confirm_email(&app, &staff, "edilizia@comune.example.it", &sink).await;
    confirm_email(&app, &other, "tributi@comune.example.it", &sink).await;
    let citizen = app.citizen(5700).await;
    let d = app.open_dossier(&citizen, "cila", &cf(5700)).await;
    transition(
        &app,
        &staff,
        d["id"].as_str().unwrap(),
        json!({"to": "started"}),
    )
    .await;
    // The node wrote today's digest at start, before the dossier ran; write the next day's
    // as a second node would, twice: only one is written.
    let day = "2999-01-01";
    let first = fascicolo::db::notices::enqueue_digest(
        &app.services.db,
        &app.config.tenant,
        day,
        10_000,
        PUBLIC,
    )
    .await
    .unwrap();
    let again = fascicolo::db::notices::enqueue_digest(
        &app.services.db,
        &app.config.tenant,
        day,
        10_000,
        PUBLIC,
    )
    .await
    .unwrap();
    assert_eq!(
        (first, again),
        (1, 0),
        "one message, for the office with a running dossier"
    );
    drained(&app).await;
    let digests: Vec<Received> = to(&sink, "edilizia@comune.example.it")
        .into_iter()
        .filter(|m| m.subject().starts_with("Pratiche in scadenza"))
        .collect();
    assert_eq!(digests.len(), 1);
    let text = digests[0].text();
    assert!(text.contains(d["number"].as_str().unwrap()), "{text}");
    assert!(text.contains("30 giorni rimasti"), "{text}");
    assert!(
        to(&sink, "tributi@comune.example.it")
            .iter()
            .all(|m| !m.subject().starts_with("Pratiche"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_batch_loses_nothing_and_repeats_only_with_the_same_message_id() {
    let (sink, port) = Sink::start(&[]).await;
    // The SMTP server answers the first five messages, then receives the others' data but
    // answers only after a minute: node A dies with those unanswered.
    const ANSWERED: usize = 5;
    sink.set_delay(Duration::from_secs(60), ANSWERED);
    let dir_a = tempfile::tempdir().unwrap();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let mut node_a = crate::process::ServerProcess::start_with(
        dir_a.path(),
        &[
            ("FASCICOLO_SMTP_URL", &smtp),
            (
                "FASCICOLO_SMTP_FROM",
                "Comune <sportello@comune.cirie.to.it>",
            ),
            ("FASCICOLO_NOTIFY_LEASE_SECONDS", "2"),
        ],
    );
    let client = reqwest::Client::new();
    // Registrations are limited to 20 an hour per client address.
    const MESSAGES: u32 = 20;
    for n in 0..MESSAGES {
        let r = client
            .post(format!("{}/v1/registrations", node_a.base))
            .json(&json!({"codice_fiscale": cf(5800 + n), "name": "Persona", "email": format!("p{n}@example.it")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let database = format!(
        "sqlite://{}?mode=rwc",
        dir_a.path().join("fascicolo.db").display()
    );
    let sent_by_a = || {
        let database = database.clone();
        async move {
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&database)
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar(
                "select count(*) from notification_outbox where status = 'sent'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            n as usize
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sent_by_a().await < ANSWERED || sink.messages().len() <= ANSWERED {
        assert!(std::time::Instant::now() < deadline, "node A did not send");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node_a.kill();
    let in_flight = sink.messages().len() - ANSWERED;
    assert_eq!(
        sent_by_a().await,
        ANSWERED,
        "mid-batch: some recorded, some not"
    );
    assert!(in_flight > 0);
    // Node B shares the database and goes on; the server answers at once now.
    sink.set_delay(Duration::ZERO, 0);
    let node_b = app_with(|c| {
        c.database_url = Some(database);
        c.smtp_url = Some(smtp.clone());
        c.smtp_from = "Comune <sportello@comune.cirie.to.it>".to_owned();
        c.notify_lease_seconds = 2;
    })
    .await;
    drained(&node_b).await;
    let rows: Vec<(String, String)> = sqlx::query_as("select id, status from notification_outbox")
        .fetch_all(node_b.services.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), MESSAGES as usize);
    assert!(rows.iter().all(|(_, s)| s == "sent"), "{rows:?}");
    let received: Vec<String> = sink
        .messages()
        .iter()
        .map(|m| m.message_id().split('@').next().unwrap().to_owned())
        .collect();
    // Every message arrived; every arrival is one of them; a repeat carries the same id.
    for (id, _) in &rows {
        assert!(received.contains(id), "{id} never arrived");
    }
    for id in &received {
        assert!(rows.iter().any(|(r, _)| r == id), "unknown message {id}");
    }
    // Only what was in flight when node A died arrives twice.
    let repeats = received.len() - MESSAGES as usize;
    assert_eq!(repeats, in_flight, "repeats are the unanswered messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_outbox_and_send_each_message_once() {
    let (sink, port) = Sink::start(&[]).await;
    // A slow server: while one node waits on its sends, the other claims what is left.
    sink.set_delay(Duration::from_millis(100), 0);
    let first = app_mailing_to(port).await;
    let second = crate::helpers::spawn_node_like(&first).await;
    const MESSAGES: u32 = 20;
    for n in 0..MESSAGES {
        // Alternate the node that writes each message.
        let node = if n % 2 == 0 { &first } else { &second };
        let r = node
            .client
            .post(node.url("/v1/registrations"))
            .json(&json!({"codice_fiscale": cf(5900 + n), "name": "Persona", "email": format!("n{n}@example.it")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    drained(&first).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut ids: Vec<String> = sink.messages().iter().map(Received::message_id).collect();
    assert_eq!(ids.len(), MESSAGES as usize, "each message once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES as usize);
    let attempts: Vec<i32> = sqlx::query_scalar("select attempts from notification_outbox")
        .fetch_all(first.services.db.pool())
        .await
        .unwrap();
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipality_replaces_a_template_without_rebuilding() {
    let (sink, port) = Sink::start(&[]).await;
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("dossier_submitted.subject.txt"),
        "{{ municipality }} - protocollo pratica {{ number }}\n",
    )
    .unwrap();
    let app = app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.templates_dir = Some(templates.path().to_owned());
        c.municipality = "Comune di Lanzo Torinese".to_owned();
    })
    .await;
    let citizen = app.citizen(5950).await;
    confirm_email(&app, &citizen, "lanzo@example.it", &sink).await;
    let d = app.open_dossier(&citizen, "cila", &cf(5950)).await;
    drained(&app).await;
    let number = d["number"].as_str().unwrap();
    let subjects = subjects(&to(&sink, "lanzo@example.it"));
    assert!(
        subjects.contains(&format!(
            "Comune di Lanzo Torinese - protocollo pratica {number}"
        )),
        "{subjects:?}"
    );
    // The other parts stay the built-in ones, with the configured name.
    let receipt = to(&sink, "lanzo@example.it")
        .into_iter()
        .find(|m| m.subject().contains("protocollo"))
        .unwrap();
    assert!(
        receipt
            .text()
            .contains("Comune di Lanzo Torinese - Sportello unico")
    );
}
