//! The pages over real HTTP, as a browser without JavaScript uses them: signing in with a
//! code from the outbox and with password and TOTP, sessions and their expiry, form tokens,
//! security headers, and the same permission checks as the API.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::helpers::{TestApp, cf, spawn_app_with};
use crate::notify::{Sink, wait_for};

/// A browser: keeps cookies, does not follow redirects (tests look at them).
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

/// What a page request gave.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The value of the first form field named `name` in the page.
    pub fn field(&self, name: &str) -> String {
        field_in(&self.body, name)
    }
}

/// The `value` of the first `<input>` named `name` in `html`.
pub fn field_in(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no field {name} in the page"));
    let tag_start = html[..at].rfind('<').unwrap();
    let tag_end = at + html[at..].find('>').unwrap();
    let tag = &html[tag_start..tag_end];
    let v = tag
        .find("value=\"")
        .unwrap_or_else(|| panic!("field {name} has no value"))
        + 7;
    let end = v + tag[v..].find('"').unwrap();
    tag[v..end].replace("&#x2f;", "/").replace("&#47;", "/")
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self::with_address(app, None)
    }

    /// A browser whose requests come (through the trusted proxy) from `address`.
    pub fn with_address(app: &TestApp, address: Option<&str>) -> Self {
        let mut headers = HeaderMap::new();
        if let Some(a) = address {
            headers.insert("x-forwarded-for", a.parse().unwrap());
        }
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .default_headers(headers)
                .build()
                .unwrap(),
            base: app.base.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        Self::page(r).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        Self::page(r).await
    }

    async fn page(r: reqwest::Response) -> Page {
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// The form token of the page at `path`.
    pub async fn csrf(&self, path: &str) -> String {
        self.get(path).await.field("csrf")
    }
}

async fn app_mailing_to(port: u16) -> TestApp {
    spawn_app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
}

/// Gives the user of `token` a confirmed e-mail address.
pub async fn confirmed_email(app: &TestApp, token: &str, email: &str) {
    let me: serde_json::Value = app.get(token, "/v1/me").await.json().await.unwrap();
    sqlx::query("update app_user set email = $1, email_confirmed_at = $2 where id = $3")
        .bind(email)
        .bind(1_i64)
        .bind(me["id"].as_str().unwrap())
        .execute(app.services.db.write_pool())
        .await
        .unwrap();
}

/// The sign-in codes `address` received so far.
pub fn codes_to(sink: &Sink, address: &str) -> Vec<String> {
    sink.messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == address) && m.subject() == "Il tuo codice di accesso")
        .map(|m| {
            let text = m.text();
            let chars: Vec<char> = text.chars().collect();
            chars
                .windows(8)
                .find(|w| w.iter().all(char::is_ascii_digit))
                .map(|w| w.iter().collect())
                .unwrap_or_else(|| panic!("no code in {text}"))
        })
        .collect()
}

/// The sign-in code `address` receives after the first `before`.
pub async fn code_sent_to(sink: &Sink, address: &str, before: usize) -> String {
    wait_for("the sign-in code", Duration::from_secs(15), || {
        codes_to(sink, address).len() > before
    })
    .await;
    codes_to(sink, address).pop().unwrap()
}

/// Signs `browser` in as the citizen or professional with `identifier`, through the code
/// the sink receives at `email`.
pub async fn sign_in_with_code(browser: &Browser, sink: &Sink, identifier: &str, email: &str) {
    let before = codes_to(sink, email).len();
    let csrf = browser.csrf("/accedi").await;
    let sent = browser
        .post(
            "/accedi/codice",
            &[
                ("csrf", &csrf),
                ("identifier", identifier),
                ("next", "/pratiche"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let code_page = browser.get(&sent.location()).await;
    assert_eq!(code_page.status, StatusCode::OK);
    let pending = code_page.field("attesa");
    let code = code_sent_to(sink, email, before).await;
    let signed = browser
        .post(
            "/accedi/codice/verifica",
            &[
                ("csrf", &csrf),
                ("attesa", &pending),
                ("code", &code),
                ("next", "/pratiche"),
            ],
        )
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(signed.location(), "/pratiche");
}

/// Activates a staff member through a CLI-made activation link: sets `password` and enrols
/// TOTP; returns the TOTP secret.
pub async fn activate_staff(app: &TestApp, user_id: &str, password: &str) -> String {
    let link = fascicolo::users::activation_link(
        &app.services,
        fascicolo::domain::UserId::parse(user_id).unwrap(),
        &fascicolo::audit::Actor::cli(&app.services.config.tenant),
    )
    .await
    .unwrap();
    let path = link
        .split_once("/attivazione/")
        .map(|(_, s)| format!("/attivazione/{s}"))
        .unwrap();
    let browser = Browser::new(app);
    let page = browser.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    let secret = page.field("totp_secret");
    let csrf = page.field("csrf");
    let code = totp_now(&secret);
    let done = browser
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("password", password),
                ("password_again", password),
                ("totp_secret", &secret),
                ("totp", &code),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/accedi?attivato=1");
    // The link works once.
    assert_eq!(browser.get(&path).await.status, StatusCode::NOT_FOUND);
    secret
}

/// The TOTP code of a base32 secret now (`offset` steps away).
pub fn totp_at(secret: &str, offset: i64) -> String {
    let totp = fascicolo::credentials::totp(secret, "Comune", "test").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp.generate((now + offset * 30) as u64).to_string()
}

pub fn totp_now(secret: &str) -> String {
    totp_at(secret, 0)
}

/// A staff member of `offices` with an e-mail, activated; returns their API token and TOTP
/// secret.
pub async fn staff_member(
    app: &TestApp,
    offices: &[&str],
    email: &str,
    password: &str,
) -> (String, String) {
    with_password(
        app,
        fascicolo::domain::Role::Staff,
        offices,
        email,
        password,
    )
    .await
}

/// An account of `role` (staff, auditor, admin) with an e-mail, activated through its
/// activation link with `password` and a TOTP; returns its API token and TOTP secret.
pub async fn with_password(
    app: &TestApp,
    role: fascicolo::domain::Role,
    offices: &[&str],
    email: &str,
    password: &str,
) -> (String, String) {
    let offices: Vec<String> = offices.iter().map(|o| o.to_string()).collect();
    let created = fascicolo::users::add_user_with(
        &app.services,
        &fascicolo::users::UserSpec {
            role,
            name: "Paola Verdi",
            codice_fiscale: None,
            offices: &offices,
            front_office: false,
            email: Some(email),
            phone: None,
            by: None,
        },
    )
    .await
    .unwrap();
    let secret = activate_staff(app, &created.id.to_string(), password).await;
    (created.token, secret)
}

pub async fn staff_sign_in(browser: &Browser, email: &str, password: &str, totp: &str) -> Page {
    let csrf = browser.csrf("/accedi").await;
    browser
        .post(
            "/accedi/personale",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("totp", totp),
                ("next", "/ufficio/coda"),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_carries_the_security_headers_and_loads_nothing_from_elsewhere() {
    let app = spawn_app_with(|_| {}).await;
    let browser = Browser::new(&app);
    for path in [
        "/",
        "/servizi",
        "/servizi/scia-edilizia",
        "/accedi",
        "/privacy",
        "/no-such-page",
    ] {
        let page = browser.get(path).await;
        let expected = if path == "/no-such-page" { 404 } else { 200 };
        assert_eq!(page.status.as_u16(), expected, "{path}");
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert_eq!(page.headers["referrer-policy"], "same-origin");
        assert!(
            page.body.starts_with("<!doctype html>\n<html lang=\"it\">"),
            "{path}"
        );
        // Every script and stylesheet is this site's own, and no script is inline.
        for attr in ["src=\"", "href=\""] {
            for part in page.body.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                assert!(
                    !target.starts_with("http") && !target.starts_with("//"),
                    "{path} loads {target}"
                );
            }
        }
        assert!(
            !page.body.contains("<script>"),
            "{path} has an inline script"
        );
        assert!(page.body.contains("Comune di Ciriè"), "{path}");
    }
    // The design system's files are served from the binary, with their types.
    let page = browser.get("/").await;
    for asset in [
        "/static/bootstrap-italia-2.18.3/css/bootstrap-italia.min.css",
        "/static/bootstrap-italia-2.18.3/js/bootstrap-italia.bundle.min.js",
        "/static/bootstrap-italia-2.18.3/svg/sprites.svg",
        "/static/bootstrap-italia-2.18.3/fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-regular.woff2",
        "/static/bootstrap-italia-2.18.3/LICENSE",
    ] {
        let r = browser
            .client
            .get(format!("{}{asset}", browser.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    assert!(
        page.body
            .contains("/static/bootstrap-italia-2.18.3/css/bootstrap-italia.min.css")
    );
    // Sent compressed to browsers that accept it.
    let css = format!(
        "{}/static/bootstrap-italia-2.18.3/css/bootstrap-italia.min.css",
        browser.base
    );
    let plain = browser
        .client
        .get(&css)
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    let plain_len = plain.bytes().await.unwrap().len();
    let gzip = browser
        .client
        .get(&css)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let gzip_len = gzip.bytes().await.unwrap().len();
    assert!(gzip_len * 4 < plain_len, "{gzip_len} of {plain_len} bytes");
    // The API keeps answering JSON, its 404 included.
    let r = app.client.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_signs_in_with_a_code_from_the_outbox_and_out_again() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let token = app.citizen(7001).await;
    confirmed_email(&app, &token, "lucia.sala@example.it").await;
    app.open_dossier(&token, "cila", &cf(7001)).await;

    let browser = Browser::new(&app);
    // Not signed in: the personal pages send to the sign-in page, and come back after.
    let page = browser.get("/pratiche").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/accedi?next=%2Fpratiche");

    sign_in_with_code(&browser, &sink, &cf(7001), "lucia.sala@example.it").await;
    let list = browser.get("/pratiche").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains("Comunicazione inizio lavori asseverata"),
        "{}",
        list.body
    );
    assert!(list.body.contains("Area personale di Test citizen"));

    // A used code does not work again; a wrong code is refused.
    let other = Browser::new(&app);
    let csrf = other.csrf("/accedi").await;
    let sent = other
        .post(
            "/accedi/codice",
            &[("csrf", &csrf), ("identifier", "lucia.sala@example.it")],
        )
        .await;
    let pending = other.get(&sent.location()).await.field("attesa");
    let wrong = other
        .post(
            "/accedi/codice/verifica",
            &[("csrf", &csrf), ("attesa", &pending), ("code", "00000000")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.body.contains("non è corretto"));
    assert_eq!(other.get("/pratiche").await.status, StatusCode::SEE_OTHER);

    // Logging out ends the session on the server, not only in the browser.
    let csrf = browser.csrf("/pratiche").await;
    let out = browser.post("/esci", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let ended: Option<i64> = sqlx::query_scalar("select max(ended_at) from web_session")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert!(ended.is_some());
    assert_eq!(browser.get("/pratiche").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_asked_for_an_unknown_account_looks_the_same_and_sends_nothing() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let browser = Browser::new(&app);
    let csrf = browser.csrf("/accedi").await;
    let sent = browser
        .post(
            "/accedi/codice",
            &[("csrf", &csrf), ("identifier", "nobody@example.it")],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let page = browser.get(&sent.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Se il codice fiscale o l'indirizzo che hai scritto appartiene a un account")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_token_or_from_another_site_are_refused() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let token = app.citizen(7002).await;
    confirmed_email(&app, &token, "ugo.riva@example.it").await;
    let browser = Browser::new(&app);
    sign_in_with_code(
        &browser,
        &sink,
        "ugo.riva@example.it",
        "ugo.riva@example.it",
    )
    .await;
    let form = [("procedure", "cila"), ("subject", "Bagno nuovo")];
    // No token, a wrong one, another visitor's: 403, nothing opened.
    let none = browser.post("/pratiche/nuova", &form).await;
    assert_eq!(
        none.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing field"
    );
    let wrong = browser
        .post("/pratiche/nuova", &[form[0], form[1], ("csrf", "0000")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(wrong.body.contains("Modulo scaduto"));
    let stranger = Browser::new(&app).csrf("/accedi").await;
    let other = browser
        .post("/pratiche/nuova", &[form[0], form[1], ("csrf", &stranger)])
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    // The right token, but posted from another site's page.
    let csrf = browser.csrf("/pratiche/nuova").await;
    let cross = browser
        .client
        .post(format!("{}/pratiche/nuova", browser.base))
        .header("origin", "https://evil.example")
        .form(&[form[0], form[1], ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let count: i64 = sqlx::query_scalar("select count(*) from dossier")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
    // With its token, from this site: opened, and shown.
    let done = browser
        .post("/pratiche/nuova", &[form[0], form[1], ("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = browser.get(&done.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Bagno nuovo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_the_visitor_may_not_see_is_the_same_page_as_a_missing_one() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let owner = app.citizen(7003).await;
    let stranger = app.citizen(7004).await;
    confirmed_email(&app, &stranger, "estraneo@example.it").await;
    let d = app.open_dossier(&owner, "cila", &cf(7003)).await;
    let id = d["id"].as_str().unwrap();
    let browser = Browser::new(&app);
    sign_in_with_code(&browser, &sink, &cf(7004), "estraneo@example.it").await;
    let hidden = browser.get(&format!("/pratiche/{id}")).await;
    let missing = browser
        .get("/pratiche/01900000-0000-7000-8000-000000000000")
        .await;
    let garbage = browser.get("/pratiche/not-an-id").await;
    for page in [&hidden, &missing, &garbage] {
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        assert!(page.body.contains("Pagina non trovata"));
    }
    // The same page, but for the form token every page carries.
    let strip = |b: &str| b.replace(&field_in(b, "csrf"), "");
    assert_eq!(strip(&hidden.body), strip(&missing.body));
    assert!(!hidden.body.contains(d["number"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_and_at_their_absolute_end() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let token = app.citizen(7005).await;
    confirmed_email(&app, &token, "idle@example.it").await;
    for column in ["last_seen_at", "expires_at"] {
        let browser = Browser::new(&app);
        sign_in_with_code(&browser, &sink, "idle@example.it", "idle@example.it").await;
        assert_eq!(browser.get("/pratiche").await.status, StatusCode::OK);
        // The session idle past FASCICOLO_SIGN_IN_IDLE_MINUTES, or past its absolute end.
        let past =
            fascicolo::db::now_ms() - i64::from(app.config.sign_in_idle_minutes) * 60_000 - 1_000;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "update web_session set {column} = $1 where ended_at is null"
        )))
        .bind(past)
        .execute(app.services.db.write_pool())
        .await
        .unwrap();
        let page = browser.get("/pratiche").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{column}");
        assert!(page.location().starts_with("/accedi"), "{column}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_httponly_samesite_and_secure_behind_tls() {
    let (sink, port) = Sink::start(&[]).await;
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.public_url = "https://sportello.comune.example.it".to_owned();
    })
    .await;
    let token = app.citizen(7006).await;
    confirmed_email(&app, &token, "tls@example.it").await;
    let browser = Browser::new(&app);
    let csrf_cookie = browser.get("/accedi").await;
    let set = csrf_cookie.headers[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("Secure"), "{set}");
    // reqwest keeps Secure cookies only for https: post the token by hand.
    let csrf = csrf_cookie.field("csrf");
    let cookie = set.split(';').next().unwrap().to_owned();
    let sent = browser
        .client
        .post(format!("{}/accedi/codice", browser.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("identifier", "tls@example.it")])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    let location = sent.headers()[LOCATION].to_str().unwrap().to_owned();
    let pending = location
        .split("attesa=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let code = code_sent_to(&sink, "tls@example.it", 0).await;
    let signed = browser
        .client
        .post(format!("{}/accedi/codice/verifica", browser.base))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("attesa", &pending),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let session = signed.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(session.starts_with("fascicolo_session="), "{session}");
    for flag in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_sign_in_with_password_and_totp_and_failures_slow_down_without_locking_out() {
    let (_sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let password = "tre tigri contro tre tigri";
    let (_, secret) = staff_member(
        &app,
        &["edilizia"],
        "paola.verdi@comune.example.it",
        password,
    )
    .await;
    let email = "paola.verdi@comune.example.it";

    // Right password, wrong TOTP; wrong password, right TOTP: both refused alike.
    let clerk = Browser::with_address(&app, Some("198.51.100.7"));
    let a = staff_sign_in(&clerk, email, password, "000000").await;
    let b = staff_sign_in(&clerk, email, "wrong password!", &totp_now(&secret)).await;
    for r in [&a, &b] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("non corretti"));
    }
    // Both right: signed in.
    let code = totp_now(&secret);
    let ok = staff_sign_in(&clerk, email, password, &code).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/ufficio/coda");
    assert_eq!(clerk.get("/ufficio/coda").await.status, StatusCode::OK);
    // The same TOTP code does not open a second session.
    let replay = Browser::with_address(&app, Some("198.51.100.7"));
    assert_eq!(
        staff_sign_in(&replay, email, password, &code).await.status,
        StatusCode::UNAUTHORIZED
    );

    // An attacker guessing from elsewhere: after three failures, each try waits.
    let attacker = Browser::with_address(&app, Some("203.0.113.9"));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            staff_sign_in(&attacker, email, "guess guess guess", "123456")
                .await
                .status,
        );
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 3]);
    // A long attack (as the throttle would have counted it over time): the attacker's
    // address waits a quarter of an hour...
    sqlx::query(
        "update sign_in_throttle set failures = 60 \
         where throttle_key like '%203.0.113.9' or throttle_key not like '%addr:%'",
    )
    .execute(app.services.db.write_pool())
    .await
    .unwrap();
    let last = staff_sign_in(&attacker, email, "guess guess guess", "123456").await;
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = last.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 800, "the attacker waits {retry} s");
    // ...while the clerk, from her own address, waits at most half a minute, then gets in.
    let fresh = Browser::with_address(&app, Some("198.51.100.7"));
    let meanwhile = staff_sign_in(&fresh, email, password, &totp_at(&secret, 1)).await;
    assert_eq!(meanwhile.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = meanwhile.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "the clerk waits {wait} s");
    sqlx::query("update sign_in_throttle set last_failure_at = last_failure_at - 31000")
        .execute(app.services.db.write_pool())
        .await
        .unwrap();
    let later = staff_sign_in(&fresh, email, password, &totp_at(&secret, 1)).await;
    assert_eq!(later.status, StatusCode::SEE_OTHER, "{}", later.body);
    let still = staff_sign_in(&attacker, email, "guess guess guess", "123456").await;
    assert_eq!(still.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_link_refuses_weak_passwords_and_wrong_codes() {
    let app = spawn_app_with(|_| {}).await;
    let created = fascicolo::users::add_user_with(
        &app.services,
        &fascicolo::users::UserSpec {
            role: fascicolo::domain::Role::Auditor,
            name: "Ivo Ispettore",
            codice_fiscale: None,
            offices: &[],
            front_office: false,
            email: Some("ivo@comune.example.it"),
            phone: None,
            by: None,
        },
    )
    .await
    .unwrap();
    let link = fascicolo::users::activation_link(
        &app.services,
        created.id,
        &fascicolo::audit::Actor::cli(&app.services.config.tenant),
    )
    .await
    .unwrap();
    assert!(
        link.starts_with("http://localhost:8080/attivazione/"),
        "{link}"
    );
    let path = format!("/attivazione/{}", link.rsplit('/').next().unwrap());
    let browser = Browser::new(&app);
    let page = browser.get(&path).await;
    assert!(page.body.contains("<svg role=\"img\""), "a QR code");
    let (csrf, secret) = (page.field("csrf"), page.field("totp_secret"));
    let attempt = |password: &'static str, again: &'static str, code: String| {
        let (csrf, secret, path) = (csrf.clone(), secret.clone(), path.clone());
        let browser = &browser;
        async move {
            browser
                .post(
                    &path,
                    &[
                        ("csrf", csrf.as_str()),
                        ("password", password),
                        ("password_again", again),
                        ("totp_secret", secret.as_str()),
                        ("totp", code.as_str()),
                    ],
                )
                .await
        }
    };
    let short = attempt("corta", "corta", totp_now(&secret)).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains("almeno 12 caratteri"));
    let mismatch = attempt("una password lunga", "un'altra password", totp_now(&secret)).await;
    assert!(mismatch.body.contains("non coincidono"));
    let wrong = attempt("una password lunga", "una password lunga", "000000".into()).await;
    assert!(wrong.body.contains("app non è corretto"), "{}", wrong.body);
    // Nothing was set by the failures; the link still works.
    assert_eq!(browser.get(&path).await.status, StatusCode::OK);
    let ok = attempt(
        "una password lunga",
        "una password lunga",
        totp_now(&secret),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    // Citizens get no activation link: they sign in with codes.
    let citizen = app.citizen(7007).await;
    let me: serde_json::Value = app.get(&citizen, "/v1/me").await.json().await.unwrap();
    let refused = fascicolo::users::activation_link(
        &app.services,
        fascicolo::domain::UserId::parse(me["id"].as_str().unwrap()).unwrap(),
        &fascicolo::audit::Actor::cli(&app.services.config.tenant),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_files_for_a_person_verifies_an_identity_and_sends_the_receipt() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let password = "una lunga frase segreta";
    let offices: Vec<String> = Vec::new();
    let desk = fascicolo::users::add_user_with(
        &app.services,
        &fascicolo::users::UserSpec {
            role: fascicolo::domain::Role::Staff,
            name: "Sportello polifunzionale",
            codice_fiscale: None,
            offices: &offices,
            front_office: true,
            email: Some("sportello@comune.example.it"),
            phone: None,
            by: None,
        },
    )
    .await
    .unwrap();
    let secret = activate_staff(&app, &desk.id.to_string(), password).await;
    let clerk = Browser::new(&app);
    assert_eq!(
        staff_sign_in(
            &clerk,
            "sportello@comune.example.it",
            password,
            &totp_now(&secret)
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    // Filed at the desk with the applicant's name: at once, not a draft.
    let csrf = clerk.csrf("/pratiche/nuova").await;
    let filed = clerk
        .post(
            "/pratiche/nuova",
            &[
                ("csrf", &csrf),
                ("procedure", "cambio-residenza"),
                ("applicant_cf", &cf(7101)),
                ("applicant_name", "Giovanna Serra"),
                ("subject", "Trasferimento in via Lanzo 3"),
            ],
        )
        .await;
    assert_eq!(filed.status, StatusCode::SEE_OTHER, "{}", filed.body);
    let dossier = filed.location();
    let id = dossier.trim_start_matches("/pratiche/").to_owned();
    let (status, channel, name): (String, String, Option<String>) =
        sqlx::query_as("select status, channel, applicant_name from dossier where id = $1")
            .bind(&id)
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), channel.as_str(), name.as_deref()),
        ("submitted", "desk", Some("Giovanna Serra"))
    );
    // The receipt, to print, and sent to the address the applicant gives.
    let receipt = clerk.get(&format!("{dossier}/ricevuta")).await;
    assert_eq!(receipt.status, StatusCode::OK);
    assert!(receipt.body.contains("Giovanna Serra") && receipt.body.contains(&cf(7101)));
    let number: String = sqlx::query_scalar("select number from dossier where id = $1")
        .bind(&id)
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert!(receipt.body.contains(&number));
    let sent = clerk
        .post(
            &format!("{dossier}/ricevuta"),
            &[
                ("csrf", &receipt.field("csrf")),
                ("email", "giovanna.serra@example.it"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    wait_for("the receipt", Duration::from_secs(15), || {
        sink.messages()
            .iter()
            .any(|m| m.to.iter().any(|t| t == "giovanna.serra@example.it"))
    })
    .await;
    let mail = sink
        .messages()
        .into_iter()
        .find(|m| m.to.iter().any(|t| t == "giovanna.serra@example.it"))
        .unwrap();
    assert_eq!(
        mail.subject(),
        format!("Ricevuta: pratica {number} presentata")
    );

    // The applicant registers online later: an unproven codice fiscale does not open the
    // dossier the desk filed; the desk checks her identity card, and then it does.
    let citizen = app.citizen(7101).await;
    sqlx::query("update app_user set identity_verified_at = null where codice_fiscale = $1")
        .bind(cf(7101))
        .execute(app.services.db.write_pool())
        .await
        .unwrap();
    confirmed_email(&app, &citizen, "giovanna.serra@example.it").await;
    let person = Browser::new(&app);
    sign_in_with_code(&person, &sink, &cf(7101), "giovanna.serra@example.it").await;
    assert_eq!(person.get(&dossier).await.status, StatusCode::NOT_FOUND);
    let lookup = clerk
        .get(&format!("/sportello/identita?cf={}", cf(7101)))
        .await;
    assert!(
        lookup.body.contains("non ancora verificata"),
        "{}",
        lookup.body
    );
    let verified = clerk
        .post(
            "/sportello/identita",
            &[
                ("csrf", &lookup.field("csrf")),
                ("user", &lookup.field("user")),
                ("cf", &cf(7101)),
                ("document_kind", "cie"),
                ("document_number", "CA12345AB"),
                ("name", ""),
            ],
        )
        .await;
    assert_eq!(verified.status, StatusCode::SEE_OTHER, "{}", verified.body);
    assert!(
        clerk
            .get(&verified.location())
            .await
            .body
            .contains("Identità verificata")
    );
    assert_eq!(person.get(&dossier).await.status, StatusCode::OK);
    // Citizens cannot reach the desk's pages.
    assert_eq!(
        person.get("/sportello/identita").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_accounts_without_seeing_credentials_or_documents() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let password = "una lunga frase segreta";
    let (_, secret) = with_password(
        &app,
        fascicolo::domain::Role::Admin,
        &[],
        "admin@comune.example.it",
        password,
    )
    .await;
    let admin = Browser::new(&app);
    let signed = staff_sign_in(
        &admin,
        "admin@comune.example.it",
        password,
        &totp_now(&secret),
    )
    .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    let page = admin.get("/amministrazione").await;
    assert_eq!(page.status, StatusCode::OK);
    // A new clerk: the activation link goes to her, not to the administrator's page.
    let created = admin
        .post(
            "/amministrazione/utenti",
            &[
                ("csrf", &page.field("csrf")),
                ("role", "staff"),
                ("name", "Irene Balma"),
                ("email", "irene.balma@comune.example.it"),
                ("codice_fiscale", ""),
                ("office_tributi", "1"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let after = admin.get(&created.location()).await;
    assert!(after.body.contains("irene.balma@comune.example.it"));
    assert!(!after.body.contains("/attivazione/"));
    wait_for("the activation link", Duration::from_secs(15), || {
        sink.messages().iter().any(|m| {
            m.to.iter().any(|t| t == "irene.balma@comune.example.it")
                && m.subject().starts_with("Attiva")
        })
    })
    .await;
    let mail = sink
        .messages()
        .into_iter()
        .find(|m| m.subject().starts_with("Attiva il tuo account"))
        .unwrap();
    let text = mail.text();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/attivazione/"))
        .unwrap()
        .to_owned();
    let path = format!("/attivazione/{}", link.rsplit('/').next().unwrap());
    let clerk = Browser::new(&app);
    let activation = clerk.get(&path).await;
    assert_eq!(activation.status, StatusCode::OK);
    let clerk_secret = activation.field("totp_secret");
    let done = clerk
        .post(
            &path,
            &[
                ("csrf", &activation.field("csrf")),
                ("password", "la mia password del comune"),
                ("password_again", "la mia password del comune"),
                ("totp_secret", &clerk_secret),
                ("totp", &totp_now(&clerk_secret)),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let signed = staff_sign_in(
        &clerk,
        "irene.balma@comune.example.it",
        "la mia password del comune",
        &totp_now(&clerk_secret),
    )
    .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(clerk.get("/ufficio/coda").await.status, StatusCode::OK);

    // Offices: the clerk moves from taxes to building, seen on her next request.
    let id: String = sqlx::query_scalar("select id from app_user where email = $1")
        .bind("irene.balma@comune.example.it")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    let detail = admin.get(&format!("/amministrazione/utenti/{id}")).await;
    assert!(detail.body.contains("checked"), "her office is ticked");
    let moved = admin
        .post(
            &format!("/amministrazione/utenti/{id}/uffici"),
            &[("csrf", &detail.field("csrf")), ("office_edilizia", "1")],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    let offices: Vec<String> =
        sqlx::query_scalar("select office_code from user_office where user_id = $1")
            .bind(&id)
            .fetch_all(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!(offices, vec!["edilizia".to_owned()]);

    // No document content for administrators: a dossier is "not found".
    let citizen = app.citizen(7201).await;
    let d = app.open_dossier(&citizen, "cila", &cf(7201)).await;
    let doc = app
        .add_document(&citizen, d["id"].as_str().unwrap(), b"riservato", "public")
        .await;
    assert_eq!(
        admin
            .get(&format!("/pratiche/{}", d["id"].as_str().unwrap()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .get(&format!("/documenti/{}", doc["id"].as_str().unwrap()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Disabled: her session ends at once.
    let detail = admin.get(&format!("/amministrazione/utenti/{id}")).await;
    let disabled = admin
        .post(
            &format!("/amministrazione/utenti/{id}/disattiva"),
            &[("csrf", &detail.field("csrf"))],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER, "{}", disabled.body);
    assert_eq!(
        clerk.get("/ufficio/coda").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_page_shows_what_the_api_answers() {
    let app = spawn_app_with(|_| {}).await;
    let password = "una lunga frase segreta";
    let (token, secret) = with_password(
        &app,
        fascicolo::domain::Role::Staff,
        &["edilizia", "suap"],
        "cerca@comune.example.it",
        password,
    )
    .await;
    for (i, procedure) in ["cila", "scia-edilizia", "dehors", "scia-esercizio-vicinato"]
        .iter()
        .enumerate()
    {
        let d = app.open_dossier(&token, procedure, &cf(7301)).await;
        for n in 0..3 {
            let text = format!("Verbale di sopralluogo {i}{n}: cantiere e vetrina");
            app.add_text(
                &token,
                d["id"].as_str().unwrap(),
                &text,
                "Verbale",
                "internal",
            )
            .await;
        }
    }
    app.indexed().await;
    let browser = Browser::new(&app);
    assert_eq!(
        staff_sign_in(
            &browser,
            "cerca@comune.example.it",
            password,
            &totp_now(&secret)
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    for params in [
        vec![("q", "sopralluogo")],
        vec![("q", "cantiere"), ("procedure", "cila")],
        vec![("q", "vetrina"), ("office", "suap"), ("sort", "date")],
        vec![("q", "sopralluogo"), ("pagina", "2")],
    ] {
        let mut api_params: Vec<(&str, String)> = params
            .iter()
            .filter(|(k, _)| *k != "pagina")
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        if params.iter().any(|(k, _)| *k == "pagina") {
            api_params.push(("offset", "10".into()));
        }
        let api: serde_json::Value = app
            .client
            .get(app.url("/v1/search"))
            .bearer_auth(&token)
            .query(&api_params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let query: String = params.iter().map(|(k, v)| format!("{k}={v}&")).collect();
        let page = browser.get(&format!("/ufficio/cerca?{query}")).await;
        assert_eq!(page.status, StatusCode::OK);
        // The same documents, in the same order.
        let on_page: Vec<&str> = page
            .body
            .split("href=\"/documenti/")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        let from_api: Vec<&str> = api["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["document_id"].as_str().unwrap())
            .collect();
        assert_eq!(on_page, from_api, "{params:?}");
        assert!(
            page.body.contains(&format!("di {}.", api["total"])) || api["total"] == 0,
            "{params:?}"
        );
        // Every facet count the API gives is on the page.
        for (value, count) in api["facets"]["procedure"].as_object().unwrap() {
            let name = fascicolo::domain::Catalogue::built_in()
                .unwrap()
                .procedure(value)
                .unwrap()
                .name
                .clone();
            let escaped = name.replace('\'', "&#39;");
            assert!(
                page.body.contains(&format!(
                    "{escaped}</a> <span class=\"badge bg-light text-dark\">{count}</span>"
                )),
                "{value} {count} on the page for {params:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistics_page_draws_what_the_api_counts() {
    let app = spawn_app_with(|_| {}).await;
    let password = "una lunga frase segreta";
    let (token, secret) = with_password(
        &app,
        fascicolo::domain::Role::Staff,
        &["edilizia"],
        "statistiche@comune.example.it",
        password,
    )
    .await;
    let citizen = app.citizen(7401).await;
    for n in 0..3 {
        let d = app.open_dossier(&citizen, "cila", &cf(7401)).await;
        let id = d["id"].as_str().unwrap().to_owned();
        let decision = app.decision(&token, &id).await;
        let mut steps = vec![json!({"to": "started"})];
        if n < 2 {
            steps.push(
                json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision}),
            );
        }
        for body in steps {
            let r = app
                .client
                .post(app.url(&format!("/v1/dossiers/{id}/transitions")))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let api: serde_json::Value = app.get(&token, "/v1/stats").await.json().await.unwrap();
    let cila = api["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["procedure"] == "cila")
        .unwrap()
        .clone();
    assert_eq!(cila["total"], 3);
    let browser = Browser::new(&app);
    assert_eq!(
        staff_sign_in(
            &browser,
            "statistiche@comune.example.it",
            password,
            &totp_now(&secret)
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    let page = browser.get("/ufficio/statistiche").await;
    assert_eq!(page.status, StatusCode::OK);
    // The chart: an accessible SVG with a bar for the procedure, labelled with its median.
    assert!(
        page.body.contains("<svg class=\"chart\" role=\"img\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("<rect class=\"chart-bar\""));
    assert!(
        page.body
            .contains("Comunicazione inizio lavori asseverata (CILA)</text>")
    );
    // The table: the API's figures for the procedure, one open dossier of three.
    let row = page
        .body
        .split("<tr><th scope=\"row\">Comunicazione inizio lavori asseverata (CILA)</th>")
        .nth(1)
        .unwrap();
    let row = &row[..row.find("</tr>").unwrap()];
    let median = cila["median_days"].as_i64().unwrap().to_string();
    assert!(
        row.starts_with(&format!("<td>3</td><td>1</td><td>{median}</td>")),
        "{row}"
    );
}

/// A signed file's page lists its signers with their verdict and opens the file signed inside
/// the envelope in the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openssl"]
async fn a_signed_file_shows_its_signers_and_opens_what_was_signed() {
    let kit = crate::formats::signing_kit();
    let original = crate::helpers::sample_pdf("relazione firmata digitalmente");
    std::fs::write(kit.path().join("relazione.pdf"), &original).unwrap();
    crate::formats::sign(kit.path(), "relazione.pdf", "relazione.pdf.p7m", false);
    let signed = std::fs::read(kit.path().join("relazione.pdf.p7m")).unwrap();
    let app = spawn_app_with(|_| {}).await;
    let password = "una lunga frase segreta";
    let (token, secret) =
        staff_member(&app, &["edilizia"], "firme@comune.example.it", password).await;
    let d = app.open_dossier(&token, "cila", &cf(7310)).await;
    let r = app
        .upload(
            &token,
            &format!("/v1/dossiers/{}/documents", d["id"].as_str().unwrap()),
            signed,
            "relazione.pdf.p7m",
            &[("title", "Relazione firmata")],
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.indexed().await;
    let browser = Browser::new(&app);
    staff_sign_in(
        &browser,
        "firme@comune.example.it",
        password,
        &totp_now(&secret),
    )
    .await;
    let page = browser.get(&format!("/documenti/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Firme digitali"), "{}", page.body);
    assert!(page.body.contains("ROSSI MARIO"), "{}", page.body);
    assert!(page.body.contains("RSSMRA80A01H501U"), "{}", page.body);
    assert!(page.body.contains("Valida"), "{}", page.body);
    let link = format!("/documenti/{id}/contenuto-firmato");
    assert!(page.body.contains(&link), "{}", page.body);
    let inner = browser
        .client
        .get(format!("{}{link}", browser.base))
        .send()
        .await
        .unwrap();
    assert_eq!(inner.status(), StatusCode::OK);
    assert_eq!(inner.headers()["content-type"], "application/pdf");
    let disposition = inner.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("inline"), "{disposition}");
    assert!(disposition.contains("relazione.pdf"), "{disposition}");
    assert_eq!(inner.bytes().await.unwrap().as_ref(), original.as_slice());
}
