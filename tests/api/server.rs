use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_openapi_answer_without_a_token() {
    let app = spawn_app().await;
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], true);

    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/dossiers",
        "/v1/dossiers/{id}",
        "/v1/dossiers/{id}/documents",
        "/v1/documents/{id}/content",
        "/v1/documents/{id}/versions",
        "/v1/procedures",
        "/v1/search",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "missing {path} in the OpenAPI document"
        );
    }
    assert!(spec["components"]["schemas"].get("DossierRecord").is_some());
    assert!(
        spec["components"]["securitySchemes"]
            .get("bearer")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let response = app
        .client
        .delete(app.url("/v1/procedures"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    // Outside the API, the site answers with its own page.
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Pagina non trovata")
    );

    let response = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(response_has_request_id(&app).await);
}

async fn response_has_request_id(app: &crate::helpers::TestApp) -> bool {
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    response.headers().contains_key("x-request-id")
}

#[test]
fn the_binary_serves_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FASCICOLO_DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("FASCICOLO_DATABASE_URL")
        .env_remove("FASCICOLO_BLOB_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut address = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("fascicolo listening") {
            address = line
                .split("address=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let address = address.expect("the server logs its address");
    let health = std::process::Command::new("curl")
        .args(["-s", &format!("http://{address}/health")])
        .output();
    if let Ok(out) = health {
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\""));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.path().join("fascicolo.db").exists());
}

/// The two commands of the README's "Two commands": the server's (`cargo run --release --`
/// and the binary's arguments) and the tests'.
fn readme_commands() -> (Vec<String>, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Two commands")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Two commands section");
    let commands: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.lines().next())
        .map(str::trim)
        .collect();
    let server = commands
        .iter()
        .find_map(|c| c.strip_prefix("cargo run --release -- "))
        .expect("the server's command runs the release binary");
    let tests = commands
        .iter()
        .find(|c| c.starts_with("cargo test"))
        .expect("the tests' command");
    (
        server.split_whitespace().map(str::to_owned).collect(),
        (*tests).to_owned(),
    )
}

/// The README's server command, run as it is written (on port 0, so tests can run side by
/// side): the demo it starts prints working tokens and sign-ins for each role. The README's
/// test command is plain `cargo test`, the command that runs this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_working_tokens_and_sign_ins_for_each_role() {
    let (server, tests) = readme_commands();
    assert_eq!(server, ["serve", "--demo"], "the README's server command");
    assert_eq!(tests, "cargo test", "the README's test command");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .args(&server)
        .args(["--listen", "127.0.0.1:0"])
        .env("FASCICOLO_DATA_DIR", dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("FASCICOLO_DATABASE_URL")
        .env_remove("FASCICOLO_BLOB_URL")
        .env_remove("FASCICOLO_SMTP_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines arrive on a thread of their own, so every wait below has a deadline.
    let stdout = child.stdout.take().unwrap();
    let (sender, printed) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || printed.recv_timeout(Duration::from_secs(60)).ok();
    let mut base = None;
    let mut tokens = Vec::new();
    let mut sign_ins = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(line) = next_line() else { break };
        if let Some(rest) = line.split("ready at ").nth(1) {
            base = Some(rest.trim().to_owned());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [role, token] = words.as_slice()
            && token.starts_with("fsc_")
        {
            tokens.push((role.to_string(), token.to_string()));
        } else if line.contains("TOTP secret") || line.contains("sign-in code") {
            sign_ins.push(line.clone());
        }
        if line.starts_with("try:") {
            break;
        }
    }
    let base = base.expect("the demo prints its address");
    let roles: Vec<&str> = tokens.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["citizen", "professional", "staff", "auditor"]);
    assert_eq!(sign_ins.len(), 4, "{sign_ins:?}");
    let client = reqwest::Client::new();
    for (role, token) in &tokens {
        let me: Value = client
            .get(format!("{base}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["role"], role.as_str());
        let dossiers: Value = client
            .get(format!("{base}/v1/dossiers"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !dossiers["items"].as_array().unwrap().is_empty(),
            "{role} sees demo dossiers"
        );
    }
    // The pages: the staff member signs in with what the demo printed...
    let browser = |base: &str| crate::web::Browser {
        client: reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: base.to_owned(),
    };
    let staff_line = sign_ins
        .iter()
        .find(|l| l.trim_start().starts_with("staff"))
        .unwrap();
    let parts: Vec<&str> = staff_line.split(" / ").collect();
    let email = parts[0].rsplit(' ').next().unwrap();
    let password = parts[1];
    let secret = parts[2].split_whitespace().nth(2).unwrap();
    let office = browser(&base);
    let signed =
        crate::web::staff_sign_in(&office, email, password, &crate::web::totp_now(secret)).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(office.get("/ufficio/coda").await.status, 200);
    // ...and the citizen with the code the demo prints instead of mailing it.
    let citizen = browser(&base);
    let csrf = citizen.csrf("/accedi").await;
    let sent = citizen
        .post(
            "/accedi/codice",
            &[("csrf", &csrf), ("identifier", "BNCMRA78C55C722I")],
        )
        .await;
    let pending = citizen.get(&sent.location()).await.field("attesa");
    let mut code = None;
    while let Some(line) = next_line() {
        let digits: String = line.trim().chars().filter(char::is_ascii_digit).collect();
        if digits.len() == 8 && line.trim().len() == 8 {
            code = Some(digits);
            break;
        }
    }
    let code = code.expect("the sign-in code, printed");
    let signed = citizen
        .post(
            "/accedi/codice/verifica",
            &[("csrf", &csrf), ("attesa", &pending), ("code", &code)],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let list = citizen.get("/pratiche").await;
    assert!(
        list.body.contains("Rifacimento della facciata"),
        "{}",
        list.body
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_blob_store_round_trips() {
    let app = crate::helpers::spawn_app_with(|c| c.blob_url = Some("memory://".into())).await;
    let citizen = app.citizen(720).await;
    let d = app
        .open_dossier(&citizen, "cila", &crate::helpers::cf(720))
        .await;
    let doc = app
        .add_document(&citizen, d["id"].as_str().unwrap(), b"in memoria", "public")
        .await;
    let body = app
        .get(
            &citizen,
            &format!("/v1/documents/{}/content", doc["id"].as_str().unwrap()),
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), b"in memoria");
    assert_eq!(app.blob_count().await, 1);
}
