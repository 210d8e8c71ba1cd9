//! The journeys of the issue, in real Chromium (Debian's `chromium` through `chromedriver`,
//! driven over WebDriver), against the real server: every page visited is saved as a
//! screenshot (`screenshots/`, or `FASCICOLO_SCREENSHOTS`) and checked with axe-core for
//! WCAG 2.1 AA (zero violations), and forms are filled and sent with the keyboard alone.
//!
//! Needs `chromium`, `chromium-driver` and `npm ci` in `tests/browser` (axe-core); `.ci/run`
//! installs them and runs these with `--ignored`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{TestApp, cf, sample_pdf, spawn_app_with};
use crate::notify::Sink;
use crate::web::{
    Browser, code_sent_to, confirmed_email, sign_in_with_code, staff_member, staff_sign_in,
    totp_now, with_password,
};

/// Starts chromedriver on a port it picks itself, and says which.
///
/// A port chosen here and closed again could be given to another test before chromedriver
/// binds it. Given `--port=0`, chromedriver takes a free port on `::1` and then binds the same
/// number on 127.0.0.1, where one of the other tests' servers may already listen: it then
/// says "IPv4 port not available" and exits. So it is started again, a few times at most.
fn start_chromedriver() -> (Child, u16) {
    let mut last = Vec::new();
    for _ in 0..5 {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) on the PATH");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        last.clear();
        let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
            let port = line
                .split_once("started successfully on port ")
                .and_then(|(_, port)| port.trim_end_matches('.').parse::<u16>().ok());
            last.push(line);
            port
        });
        match port {
            Some(port) => {
                // Whatever else it prints is read, so that it never waits on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return (driver, port);
            }
            None => {
                let _ = driver.kill();
                let _ = driver.wait();
            }
        }
    }
    panic!("chromedriver did not start; it said: {last:?}")
}

/// Chromium under WebDriver, with the checks every page gets.
struct Chrome {
    client: Client,
    driver: Child,
    /// Chromium's profile: every process of this browser names it on its command line.
    profile: tempfile::TempDir,
    shots: PathBuf,
    journey: &'static str,
    visited: usize,
    axe: String,
}

impl Chrome {
    async fn start(journey: &'static str) -> Self {
        let (driver, port) = start_chromedriver();
        let axe_path = std::env::var("FASCICOLO_AXE_JS").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/browser/node_modules/axe-core/axe.min.js"
            )
            .to_owned()
        });
        let axe = std::fs::read_to_string(&axe_path)
            .unwrap_or_else(|e| panic!("axe-core at {axe_path} (npm ci in tests/browser): {e}"));
        let shots = std::env::var("FASCICOLO_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/screenshots")));
        std::fs::create_dir_all(&shots).unwrap();
        // This journey's screenshots from an earlier run go.
        for entry in std::fs::read_dir(&shots).unwrap().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{journey}-"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1024", "--lang=it-IT",
                         format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let mut client = None;
        for _ in 0..50 {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Chrome {
            client: client.expect("a WebDriver session with chromedriver"),
            driver,
            profile,
            shots,
            journey,
            visited: 0,
            axe,
        }
    }

    /// Opens `url` and checks the page.
    async fn visit(&mut self, url: &str) {
        self.client.goto(url).await.unwrap();
        self.check().await;
    }

    /// Saves a screenshot of the page and runs axe-core on it: no WCAG 2.1 A/AA violation.
    async fn check(&mut self) {
        self.visited += 1;
        let url = self.client.current_url().await.unwrap();
        let png = self.client.screenshot().await.unwrap();
        let name = format!(
            "{}-{:02}-{}.png",
            self.journey,
            self.visited,
            url.path().trim_matches('/').replace('/', "_")
        );
        std::fs::write(self.shots.join(name), png).unwrap();
        assert_eq!(self.violations().await, json!([]), "accessibility of {url}");
    }

    /// What axe-core finds against WCAG 2.0 and 2.1, levels A and AA, on the page.
    async fn violations(&self) -> Value {
        self.client.execute(&self.axe, vec![]).await.unwrap();
        self

            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                    .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' at ' +
                        v.nodes.map(n => n.target.join(' ')).join(' | '))))
                    .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap()
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let url = self.client.current_url().await;
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on {url:?}: {e}"))
    }

    /// Moves the focus to `css` (scrolled into view), as Tab or a click would.
    async fn focus(&self, css: &str) -> fantoccini::elements::Element {
        let field = self.find(css).await;
        self.client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();",
                vec![serde_json::to_value(&field).unwrap()],
            )
            .await
            .unwrap();
        field
    }

    /// Presses a key on whatever has the focus.
    async fn press(&self, key: Key) {
        let key = char::from(key);
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(actions).await.unwrap();
    }

    /// Presses `key` where it leads to another page, waits for that page, and checks it.
    async fn follow(&mut self, key: Key) {
        self.client
            .execute("window.__left = true;", vec![])
            .await
            .unwrap();
        self.press(key).await;
        for _ in 0..200 {
            let arrived = self
                .client
                .execute(
                    "return window.__left !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .unwrap_or(json!(false));
            if arrived == json!(true) {
                self.check().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no page followed {:?}", self.client.current_url().await);
    }

    /// Types `text` into the field `css` with the keyboard.
    async fn type_into(&self, css: &str, text: &str) {
        let field = self.focus(css).await;
        field.send_keys(text).await.unwrap();
    }

    /// Sends the form of the field `css` by tabbing from it to its submit button and pressing
    /// Enter: the keyboard alone.
    async fn submit_from(&mut self, css: &str) {
        self.focus(css).await;
        for _ in 0..30 {
            self.press(Key::Tab).await;
            let on_submit = self
                .client
                .execute(
                    "const e = document.activeElement; return e.tagName === 'BUTTON' && e.type === 'submit';",
                    vec![],
                )
                .await
                .unwrap();
            if on_submit == json!(true) {
                self.follow(Key::Enter).await;
                return;
            }
        }
        panic!("no submit button reached with Tab from {css}");
    }

    /// Checks that Tab reaches every control of every form on the page (a group of radio
    /// buttons is one stop: arrows move within it).
    async fn every_control_reachable_by_keyboard(&self) {
        let key = "e => e.type === 'radio' ? 'radio:' + e.name : e";
        let controls = self
            .client
            .execute(
                &format!(
                    "return new Set(Array.from(document.querySelectorAll('main form input:not([type=hidden]), main form select, main form textarea, main form button'))
                       .filter(e => !e.disabled && e.offsetParent !== null).map({key})).size;"
                ),
                vec![],
            )
            .await
            .unwrap()
            .as_u64()
            .unwrap();
        self.client
            .execute(
                "document.activeElement && document.activeElement.blur(); window.__reached = new Set();",
                vec![],
            )
            .await
            .unwrap();
        for _ in 0..400 {
            self.press(Key::Tab).await;
            let reached = self
                .client
                .execute(
                    &format!(
                        "const e = document.activeElement;
                         if (e && e.closest('main form') && e.matches('input,select,textarea,button')) window.__reached.add(({key})(e));
                         return window.__reached.size;"
                    ),
                    vec![],
                )
                .await
                .unwrap()
                .as_u64()
                .unwrap();
            if reached >= controls {
                return;
            }
        }
        panic!(
            "Tab did not reach all {controls} form controls of {:?}",
            self.client.current_url().await
        );
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }
}

impl Drop for Chrome {
    /// Ends chromedriver and every Chromium process of this browser: killed, chromedriver
    /// leaves them behind, and they would go on using the processor after the tests.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self.profile.path())
            .status();
    }
}

async fn app_mailing_to(port: u16) -> TestApp {
    spawn_app_with(|c| c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"))).await
}

/// Signs a citizen in through the sign-in pages, with the code the sink receives.
async fn citizen_signs_in(chrome: &mut Chrome, app: &TestApp, sink: &Sink, cf: &str, email: &str) {
    let before = crate::web::codes_to(sink, email).len();
    chrome.visit(&app.url("/")).await;
    chrome.focus("main a[href='/accedi']").await;
    chrome.follow(Key::Enter).await;
    chrome.every_control_reachable_by_keyboard().await;
    chrome.type_into("#identifier", cf).await;
    chrome.submit_from("#identifier").await;
    let code = code_sent_to(sink, email, before).await;
    chrome.type_into("#code", &code).await;
    chrome.submit_from("#code").await;
    assert_eq!(chrome.path().await, "/pratiche");
}

/// Signs a staff member in with password and TOTP.
async fn staff_signs_in(
    chrome: &mut Chrome,
    app: &TestApp,
    email: &str,
    password: &str,
    secret: &str,
) {
    chrome.visit(&app.url("/accedi")).await;
    chrome.type_into("#email", email).await;
    chrome.type_into("#password", password).await;
    chrome.type_into("#totp", &totp_now(secret)).await;
    chrome.submit_from("#totp").await;
    assert_eq!(chrome.path().await, "/ufficio/coda");
}

/// A PDF file on disk, for a file field.
fn pdf_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, sample_pdf(text)).unwrap();
    path.display().to_string()
}

/// Uploads `file` through the dossier page's form.
async fn upload(chrome: &mut Chrome, title: &str, kind: &str, file: &str) {
    chrome.type_into("#doc-title", title).await;
    let select = chrome.find("#doc-kind").await;
    select.select_by_value(kind).await.unwrap();
    if kind == "decision" {
        // The office's documents are internal unless published: a decision is for the applicant.
        chrome
            .find("#doc-visibility")
            .await
            .select_by_value("public")
            .await
            .unwrap();
    }
    // A file field takes the path from the WebDriver (no dialog opens headless).
    chrome
        .find("#doc-file")
        .await
        .send_keys(file)
        .await
        .unwrap();
    chrome.submit_from("#doc-file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn journey_1_a_citizen_signs_in_starts_a_dossier_with_an_attachment_and_sees_it_listed() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let token = app.citizen(8101).await;
    confirmed_email(&app, &token, "marta.gallo@example.it").await;
    let files = tempfile::tempdir().unwrap();
    let mut chrome = Chrome::start("journey1").await;

    citizen_signs_in(
        &mut chrome,
        &app,
        &sink,
        &cf(8101),
        "marta.gallo@example.it",
    )
    .await;
    // The catalogue, a procedure's page, and "Avvia online".
    chrome.visit(&app.url("/servizi")).await;
    chrome.type_into("#q", "facciata").await;
    chrome.submit_from("#q").await;
    chrome.visit(&app.url("/servizi/cila")).await;
    chrome
        .focus("a[href='/pratiche/nuova?servizio=cila']")
        .await;
    chrome.follow(Key::Enter).await;
    chrome.every_control_reachable_by_keyboard().await;
    chrome
        .type_into("#subject", "Rifacimento del bagno, via Torino 8")
        .await;
    chrome.submit_from("#subject").await;
    assert!(chrome.path().await.starts_with("/pratiche/"));
    chrome.every_control_reachable_by_keyboard().await;
    let attachment = pdf_file(
        files.path(),
        "relazione.pdf",
        "Relazione tecnica: piastrelle in gres porcellanato",
    );
    upload(&mut chrome, "Relazione tecnica", "attachment", &attachment).await;
    let page = chrome.source().await;
    assert!(page.contains("Relazione tecnica"), "the document is listed");
    assert!(
        page.contains("Bozza"),
        "a dossier started online is a draft"
    );
    // File it: tick each required document (Space on each box), then send.
    let boxes = chrome
        .client
        .find_all(Locator::Css("input[name^=required_]"))
        .await
        .unwrap();
    assert!(
        !boxes.is_empty(),
        "the procedure's required documents are listed"
    );
    for i in 1..=boxes.len() {
        chrome.focus(&format!("#required-{i}")).await;
        chrome.press(Key::Space).await;
    }
    chrome.submit_from("#note-submitted").await;
    assert!(chrome.source().await.contains("Presentata"));
    let number: String = sqlx::query_scalar("select number from dossier")
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    // "Le mie pratiche" lists it.
    chrome.visit(&app.url("/pratiche")).await;
    let list = chrome.source().await;
    assert!(
        list.contains(&number) && list.contains("Rifacimento del bagno"),
        "{list}"
    );
    assert!(list.contains("Presentata"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn journey_2_staff_find_the_dossier_by_a_word_in_the_attachment_start_it_and_ask_for_more() {
    let (_sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let citizen = app.citizen(8201).await;
    let d = app.open_dossier(&citizen, "cila", &cf(8201)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let r = app
        .upload(
            &citizen,
            &format!("/v1/dossiers/{id}/documents"),
            sample_pdf("Impianto fotovoltaico sul tetto del capannone"),
            "relazione.pdf",
            &[("title", "Relazione tecnica")],
        )
        .await;
    assert_eq!(r.status(), 201);
    let password = "una lunga frase segreta";
    let (_, secret) = staff_member(
        &app,
        &["edilizia"],
        "rita.bosco@comune.example.it",
        password,
    )
    .await;
    let mut chrome = Chrome::start("journey2").await;

    staff_signs_in(
        &mut chrome,
        &app,
        "rita.bosco@comune.example.it",
        password,
        &secret,
    )
    .await;
    assert!(
        chrome
            .source()
            .await
            .contains(d["number"].as_str().unwrap()),
        "the queue lists it"
    );
    // Search for a word inside the attachment (once the index has it).
    let (found, _) = app
        .search_until(
            &citizen,
            &[("q", "fotovoltaico")],
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(found["total"], 1, "indexed");
    chrome.visit(&app.url("/ufficio/cerca")).await;
    chrome.every_control_reachable_by_keyboard().await;
    chrome.type_into("#q", "fotovoltaico").await;
    chrome.submit_from("#q").await;
    let results = chrome.source().await;
    assert!(
        results.contains("<mark>fotovoltaico</mark>")
            || results.contains("<mark>Fotovoltaico</mark>"),
        "{results}"
    );
    // The same hits as the API gives for the same query.
    let api: Value = app
        .search(&citizen, &[("q", "fotovoltaico")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(api["total"], 1);
    chrome.focus(&format!("a[href='/pratiche/{id}']")).await;
    chrome.follow(Key::Enter).await;
    // Start it: exactly the transitions allowed now are offered.
    let page = chrome.source().await;
    assert!(page.contains("Avvia la lavorazione") && !page.contains("Concludi la pratica"));
    chrome.submit_from("#note-started").await;
    let page = chrome.source().await;
    assert!(page.contains("In lavorazione"));
    assert!(
        page.contains("Chiedi un&#x27;integrazione") || page.contains("Chiedi un'integrazione")
    );
    chrome
        .type_into(
            "#missing-awaiting_integration",
            "Planimetria catastale aggiornata",
        )
        .await;
    chrome.submit_from("#note-awaiting_integration").await;
    let page = chrome.source().await;
    assert!(page.contains("In attesa di integrazione"), "{page}");
    assert!(page.contains("Planimetria catastale aggiornata"));
    let status: String = sqlx::query_scalar("select status from dossier where id = $1")
        .bind(&id)
        .fetch_one(app.services.db.pool())
        .await
        .unwrap();
    assert_eq!(status, "awaiting_integration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn the_accessibility_check_finds_what_a_page_gets_wrong() {
    let chrome = Chrome::start("axe-self-check").await;
    chrome
        .client
        .goto("data:text/html,<html><body><main><form><input name=x></form><img src=y.png></main></body></html>")
        .await
        .unwrap();
    let found = chrome.violations().await.to_string();
    for rule in ["html-has-lang", "image-alt", "label"] {
        assert!(found.contains(rule), "axe missed {rule}: {found}");
    }
}

/// A citizen's dossier, started by the office, waiting for `item`; returns the dossier's id.
async fn awaiting_integration(
    app: &TestApp,
    citizen: &str,
    n: u32,
    staff: &str,
    item: &str,
) -> String {
    let d = app.open_dossier(citizen, "cila", &cf(n)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    for body in [
        json!({"to": "started"}),
        json!({"to": "awaiting_integration", "missing_items": [item]}),
    ] {
        let r = app
            .client
            .post(app.url(&format!("/v1/dossiers/{id}/transitions")))
            .bearer_auth(staff)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    id
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("select status from dossier where id = $1")
        .bind(id)
        .fetch_one(app.services.db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn journey_3_the_citizen_answers_the_integration_request_and_staff_conclude_with_a_decision()
{
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let citizen = app.citizen(8301).await;
    confirmed_email(&app, &citizen, "piero.neri@example.it").await;
    let password = "una lunga frase segreta";
    let (staff, secret) =
        staff_member(&app, &["edilizia"], "ada.fiore@comune.example.it", password).await;
    let id = awaiting_integration(
        &app,
        &citizen,
        8301,
        &staff,
        "Planimetria catastale aggiornata",
    )
    .await;
    let files = tempfile::tempdir().unwrap();

    let mut chrome = Chrome::start("journey3-citizen").await;
    citizen_signs_in(&mut chrome, &app, &sink, &cf(8301), "piero.neri@example.it").await;
    chrome.focus(&format!("a[href='/pratiche/{id}']")).await;
    chrome.follow(Key::Enter).await;
    let page = chrome.source().await;
    assert!(
        page.contains("Integrazione richiesta")
            && page.contains("Planimetria catastale aggiornata")
    );
    let plan = pdf_file(
        files.path(),
        "planimetria.pdf",
        "Planimetria catastale del piano terreno",
    );
    chrome
        .find("#item-file-1")
        .await
        .send_keys(&plan)
        .await
        .unwrap();
    chrome.submit_from("#item-file-1").await;
    assert!(
        chrome.source().await.contains("Caricato"),
        "the item is satisfied"
    );
    // The citizen hands the dossier back to the office.
    chrome.submit_from("#note-started").await;
    assert_eq!(status_of(&app, &id).await, "started");
    drop(chrome);

    let mut chrome = Chrome::start("journey3-staff").await;
    staff_signs_in(
        &mut chrome,
        &app,
        "ada.fiore@comune.example.it",
        password,
        &secret,
    )
    .await;
    chrome.visit(&app.url(&format!("/pratiche/{id}"))).await;
    assert!(
        chrome.source().await.contains("planimetria.pdf"),
        "the integration is listed"
    );
    let decision = pdf_file(files.path(), "provvedimento.pdf", "Si autorizzano i lavori");
    upload(
        &mut chrome,
        "Provvedimento di assenso",
        "decision",
        &decision,
    )
    .await;
    let decision_id: String =
        sqlx::query_scalar("select id from document where dossier_id = $1 and kind = 'decision'")
            .bind(&id)
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    chrome
        .find("#decision-concluded")
        .await
        .select_by_value(&decision_id)
        .await
        .unwrap();
    chrome
        .type_into("#note-concluded", "Lavori assentiti.")
        .await;
    chrome.submit_from("#note-concluded").await;
    let page = chrome.source().await;
    assert!(
        page.contains("Conclusa") && page.contains("con esito favorevole"),
        "{page}"
    );
    assert_eq!(status_of(&app, &id).await, "concluded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn journey_4_the_citizen_reads_the_decision_in_the_browser_and_rates_the_service() {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let citizen = app.citizen(8401).await;
    confirmed_email(&app, &citizen, "nina.costa@example.it").await;
    let staff = app.staff(&["edilizia"]).await;
    let d = app.open_dossier(&citizen, "cila", &cf(8401)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let r = app
        .upload(
            &staff,
            &format!("/v1/dossiers/{id}/documents"),
            sample_pdf("Provvedimento: si autorizzano i lavori di manutenzione"),
            "provvedimento.pdf",
            &[
                ("kind", "decision"),
                ("visibility", "public"),
                ("title", "Provvedimento finale"),
            ],
        )
        .await;
    assert_eq!(r.status(), 201);
    let decision = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for body in [
        json!({"to": "started"}),
        json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision}),
    ] {
        let r = app
            .client
            .post(app.url(&format!("/v1/dossiers/{id}/transitions")))
            .bearer_auth(&staff)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    app.indexed().await;

    let mut chrome = Chrome::start("journey4").await;
    citizen_signs_in(&mut chrome, &app, &sink, &cf(8401), "nina.costa@example.it").await;
    chrome.visit(&app.url(&format!("/pratiche/{id}"))).await;
    chrome
        .focus(&format!("a[href='/documenti/{decision}']"))
        .await;
    chrome.follow(Key::Enter).await;
    let page = chrome.source().await;
    assert!(
        page.contains("si autorizzano i lavori di manutenzione"),
        "the decision's text, on the page"
    );
    // Opened in the browser, not downloaded, and unable to run anything on this site.
    let content = format!("/documenti/{decision}/contenuto");
    chrome.client.goto(&app.url(&content)).await.unwrap();
    assert_eq!(chrome.path().await, content);
    let shown = chrome
        .client
        .execute("return document.contentType;", vec![])
        .await
        .unwrap();
    assert_eq!(shown, json!("application/pdf"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(
        chrome.shots.join("journey4-pdf.png"),
        chrome.client.screenshot().await.unwrap(),
    )
    .unwrap();
    // Back to the dossier: rate it, with the keyboard.
    chrome.visit(&app.url(&format!("/pratiche/{id}"))).await;
    chrome.every_control_reachable_by_keyboard().await;
    chrome.focus("#score-1").await;
    for _ in 0..4 {
        chrome.press(Key::Right).await;
    }
    chrome.type_into("#comment", "Tempi rapidi, grazie.").await;
    chrome.submit_from("#comment").await;
    assert!(
        chrome
            .source()
            .await
            .contains("valutazione è stata registrata")
    );
    let (score, comment): (i32, String) =
        sqlx::query_as("select score, comment from rating where dossier_id = $1")
            .bind(&id)
            .fetch_one(app.services.db.pool())
            .await
            .unwrap();
    assert_eq!((score, comment.as_str()), (5, "Tempi rapidi, grazie."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn journey_5_a_delegated_professional_sees_the_clients_dossier_until_the_delegation_is_revoked()
 {
    let (sink, port) = Sink::start(&[]).await;
    let app = app_mailing_to(port).await;
    let citizen = app.citizen(8501).await;
    confirmed_email(&app, &citizen, "carla.riva@example.it").await;
    let professional = app.user("professional", Some(&cf(8502)), &[]).await;
    confirmed_email(&app, &professional, "studio.bruno@example.it").await;
    let d = app.open_dossier(&citizen, "cila", &cf(8501)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let number = d["number"].as_str().unwrap().to_owned();

    let mut client = Chrome::start("journey5-citizen").await;
    citizen_signs_in(&mut client, &app, &sink, &cf(8501), "carla.riva@example.it").await;
    client.visit(&app.url(&format!("/pratiche/{id}"))).await;
    client.type_into("#professional_cf", &cf(8502)).await;
    client.submit_from("#until").await;
    assert!(
        client
            .source()
            .await
            .contains(&format!("Revoca la delega a {}", cf(8502)))
    );

    let mut pro = Chrome::start("journey5-professional").await;
    citizen_signs_in(&mut pro, &app, &sink, &cf(8502), "studio.bruno@example.it").await;
    let list = pro.source().await;
    assert!(
        list.contains(&format!("Pratiche del cliente {}", cf(8501))) && list.contains(&number),
        "{list}"
    );
    pro.visit(&app.url(&format!("/pratiche/{id}"))).await;
    assert!(pro.source().await.contains(&number));

    // The client revokes; the professional's very next request no longer sees it.
    client.visit(&app.url(&format!("/pratiche/{id}"))).await;
    let revoke = format!("form[action='/pratiche/{id}/deleghe/revoca'] button");
    client.focus(&revoke).await;
    client.follow(Key::Enter).await;
    assert!(client.source().await.contains("non più attiva"));
    pro.client
        .goto(&app.url(&format!("/pratiche/{id}")))
        .await
        .unwrap();
    let gone = pro.source().await;
    assert!(gone.contains("Pagina non trovata") && !gone.contains(&number));
    pro.visit(&app.url("/pratiche")).await;
    assert!(!pro.source().await.contains(&number));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, chromium-driver and axe-core (npm ci in tests/browser)"]
async fn journey_6_an_auditor_reads_the_history_with_every_read_and_downloads_the_export() {
    let (sink, port) = Sink::start(&[]).await;
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let citizen = app.citizen(8601).await;
    confirmed_email(&app, &citizen, "elena.moro@example.it").await;
    let password = "una lunga frase segreta";
    let (_, staff_secret) =
        staff_member(&app, &["edilizia"], "gino.sala@comune.example.it", password).await;
    let (_, auditor_secret) = with_password(
        &app,
        fascicolo::domain::Role::Auditor,
        &[],
        "ispettrice@comune.example.it",
        password,
    )
    .await;
    let d = app.open_dossier(&citizen, "cila", &cf(8601)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let doc = app
        .add_document(
            &citizen,
            &id,
            &sample_pdf("Computo metrico estimativo"),
            "public",
        )
        .await;
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    app.indexed().await;

    // The reads the history must show: the citizen's pages from one address, the office's
    // search and pages from another.
    let person = Browser::with_address(&app, Some("192.0.2.10"));
    sign_in_with_code(&person, &sink, &cf(8601), "elena.moro@example.it").await;
    assert_eq!(person.get(&format!("/pratiche/{id}")).await.status, 200);
    assert_eq!(
        person.get(&format!("/documenti/{doc_id}")).await.status,
        200
    );
    let office = Browser::with_address(&app, Some("192.0.2.20"));
    let signed = staff_sign_in(
        &office,
        "gino.sala@comune.example.it",
        password,
        &totp_now(&staff_secret),
    )
    .await;
    assert_eq!(signed.status, 303);
    assert_eq!(office.get("/ufficio/cerca?q=computo").await.status, 200);
    assert_eq!(office.get(&format!("/pratiche/{id}")).await.status, 200);

    let mut chrome = Chrome::start("journey6").await;
    chrome.visit(&app.url("/accedi")).await;
    chrome
        .type_into("#email", "ispettrice@comune.example.it")
        .await;
    chrome.type_into("#password", password).await;
    chrome.type_into("#totp", &totp_now(&auditor_secret)).await;
    chrome.submit_from("#totp").await;
    assert_eq!(chrome.path().await, "/audit");
    chrome.focus("form[action='/audit/verifica'] button").await;
    chrome.follow(Key::Enter).await;
    assert!(chrome.source().await.contains("la catena è integra"));
    chrome.visit(&app.url(&format!("/pratiche/{id}"))).await;
    chrome
        .focus(&format!("a[href='/audit/pratiche/{id}']"))
        .await;
    chrome.follow(Key::Enter).await;
    let page = chrome.source().await;
    for (action, address) in [
        ("dossier.read", "192.0.2.10"),
        ("document.read", "192.0.2.10"),
        ("document.text", "192.0.2.10"),
        ("search", "192.0.2.20"),
        ("dossier.read", "192.0.2.20"),
    ] {
        assert!(
            page.lines()
                .any(|l| l.contains(&format!("<td>{action}</td>")) && l.contains(address)),
            "the history lists {action} from {address}"
        );
    }
    // Filtered to the citizen's reads of documents.
    chrome
        .find("#tipo")
        .await
        .select_by_value("document")
        .await
        .unwrap();
    chrome.submit_from("#tipo").await;
    let filtered = chrome.source().await;
    assert!(filtered.contains("document.read") && !filtered.contains("<td>search</td>"));
    // The export, downloaded with the auditor's session.
    let cookies = chrome.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "fascicolo_session")
        .unwrap();
    let zip = app
        .client
        .get(app.url(&format!("/audit/pratiche/{id}/esportazione")))
        .header("cookie", format!("fascicolo_session={}", session.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    assert_eq!(zip.headers()["content-type"], "application/zip");
    let bytes = zip.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.unwrap().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "manifest.json") && names.iter().any(|n| n == "history.json"),
        "{names:?}"
    );
    let mut history = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("history.json").unwrap(), &mut history)
        .unwrap();
    assert!(history.contains("192.0.2.10") && history.contains("document.read"));
}
