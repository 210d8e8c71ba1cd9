//! Starts the real server on port 0 against the backends chosen by the environment:
//! - `FASCICOLO_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`): each
//!   app gets its own freshly created database, dropped afterwards;
//! - `FASCICOLO_TEST_BLOB_URL` (e.g. `s3://fascicolo-test`): each app gets its own prefix.
//!
//! Without them, SQLite and a local blob directory in a temporary data dir.

use std::path::PathBuf;

use fascicolo::app::{App, Services};
use fascicolo::config::Config;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub services: Services,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    postgres: Option<PostgresDatabase>,
}

/// A database created for one test app and dropped with it.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow: use a private runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                    let sql = format!("drop database if exists {name} with (force)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

fn random_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The environment's backends, or the embedded defaults.
async fn backends(config: &mut Config) -> Option<PostgresDatabase> {
    if let Ok(base) = std::env::var("FASCICOLO_TEST_BLOB_URL") {
        config.blob_url = Some(format!(
            "{}/{}",
            base.trim_end_matches('/'),
            random_suffix()
        ));
    }
    let admin_url = std::env::var("FASCICOLO_TEST_POSTGRES_URL").ok()?;
    sqlx::any::install_default_drivers();
    let name = format!("fascicolo_test_{}", random_suffix());
    let mut conn = sqlx::AnyConnection::connect(&admin_url)
        .await
        .expect("connecting to the PostgreSQL test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    let (prefix, _) = admin_url
        .rsplit_once('/')
        .expect("database URL with a path");
    config.database_url = Some(format!("{prefix}/{name}"));
    Some(PostgresDatabase { admin_url, name })
}

/// Another node over the same database and blob store as `first`, with its own data dir and
/// index, as a second `fascicolo serve` behind a load balancer would be.
pub async fn spawn_node_like(first: &TestApp) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = first.config.clone();
    config.data_dir = data_dir.path().to_owned();
    config.database_url = Some(first.config.database_url());
    config.blob_url = Some(
        first
            .config
            .blob_url
            .clone()
            .unwrap_or_else(|| first.data_dir.path().join("blobs").display().to_string()),
    );
    serve(config, data_dir, None).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded(data_dir.path());
    // The test binary is not the server binary: point the sandbox at the real one, with limits
    // low enough that hostile files end quickly.
    config.extractor = Some(env!("CARGO_BIN_EXE_fascicolo").into());
    config.extract_cpu_seconds = 5;
    config.extract_wall_seconds = 15;
    config.extract_memory_mib = 512;
    // OCR is switched on by the tests that need it (and Tesseract).
    config.ocr_workers = 0;
    // Tests upload and search in loops (and poll the index); the rate-limit tests set their
    // own limits.
    config.rate_search = 0;
    config.rate_upload = 0;
    config.rate_anonymous = 0;
    let postgres = backends(&mut config).await;
    adjust(&mut config);
    serve(config, data_dir, postgres).await
}

/// Builds the app from `config` and serves it on its own task until the `TestApp` drops.
async fn serve(
    config: Config,
    data_dir: tempfile::TempDir,
    postgres: Option<PostgresDatabase>,
) -> TestApp {
    let app = App::build(config.clone()).await.expect("building the app");
    let addr = app.local_addr().expect("bound address");
    let services = app.services().clone();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server");
    });
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        services,
        config,
        data_dir,
        shutdown: Some(tx),
        postgres,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // The database is dropped after the server was told to stop.
        let _ = self.postgres.take();
    }
}

/// A valid codice fiscale for test person number `n`: the same `n` gives the same code.
pub fn cf(n: u32) -> String {
    const LETTERS: &[u8] = b"BCDFGHLMNPRSTVZ";
    let mut code = String::new();
    let mut k = n;
    for _ in 0..6 {
        code.push(LETTERS[(k % LETTERS.len() as u32) as usize] as char);
        k /= LETTERS.len() as u32;
    }
    code.push_str(&format!("{:02}", 50 + n % 50));
    code.push(b"ABCDEHLMPRST"[(n % 12) as usize] as char);
    code.push_str(&format!("{:02}", 1 + n % 28));
    code.push_str("C722");
    code.push(check_character(&code));
    code
}

/// The check character, computed independently of the server's own code.
pub fn check_character(first15: &str) -> char {
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let sum: u32 = first15
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let v = c.to_digit(10).unwrap_or_else(|| c as u32 - 'A' as u32);
            if i % 2 == 0 { ODD[v as usize] } else { v }
        })
        .sum();
    (b'A' + (sum % 26) as u8) as char
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates a user through the same code path as `fascicolo user add`; returns the token.
    pub async fn user(&self, role: &str, cf: Option<&str>, offices: &[&str]) -> String {
        let offices: Vec<String> = offices.iter().map(|o| o.to_string()).collect();
        fascicolo::users::add_user(
            &self.services,
            role.parse().expect("role"),
            &format!("Test {role}"),
            cf,
            &offices,
        )
        .await
        .expect("creating a test user")
        .token
    }

    pub async fn citizen(&self, n: u32) -> String {
        self.user("citizen", Some(&cf(n)), &[]).await
    }

    pub async fn staff(&self, offices: &[&str]) -> String {
        self.user("staff", None, offices).await
    }

    pub async fn post_dossier(&self, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/dossiers"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Opens a dossier and returns its JSON, asserting success.
    pub async fn open_dossier(&self, token: &str, procedure: &str, applicant: &str) -> Value {
        let response = self
            .post_dossier(
                token,
                &json!({"procedure": procedure, "applicant_cf": applicant, "subject": "Pratica di prova"}),
            )
            .await;
        assert_eq!(response.status(), 201, "opening a dossier");
        response.json().await.expect("json")
    }

    /// Files a public decision in `dossier` as `staff` and returns its id.
    pub async fn decision(&self, staff: &str, dossier: &str) -> String {
        let r = self
            .upload(
                staff,
                &format!("/v1/dossiers/{dossier}/documents"),
                b"Provvedimento di accoglimento".to_vec(),
                "provvedimento.txt",
                &[("kind", "decision"), ("visibility", "public")],
            )
            .await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("document id")
            .to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn upload(
        &self,
        token: &str,
        path: &str,
        bytes: Vec<u8>,
        filename: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = Form::new().part(
            "file",
            Part::bytes(bytes)
                .file_name(filename.to_owned())
                // The server must ignore this and sniff the bytes.
                .mime_str("application/x-claimed-by-client")
                .expect("mime"),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// Uploads a document into a dossier and returns its JSON, asserting success.
    pub async fn add_document(
        &self,
        token: &str,
        dossier: &str,
        bytes: &[u8],
        visibility: &str,
    ) -> Value {
        let response = self
            .upload(
                token,
                &format!("/v1/dossiers/{dossier}/documents"),
                bytes.to_vec(),
                "allegato.pdf",
                &[
                    ("title", "Allegato"),
                    ("kind", "attachment"),
                    ("visibility", visibility),
                ],
            )
            .await;
        assert_eq!(response.status(), 201, "uploading a document");
        response.json().await.expect("json")
    }

    /// Number of blobs in this app's store.
    pub async fn blob_count(&self) -> usize {
        self.services
            .blobs
            .list()
            .await
            .expect("listing blobs")
            .len()
    }

    /// Files left in the spool directory.
    pub fn spool_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.services.blobs.spool_dir())
            .expect("spool dir")
            .map(|e| e.expect("entry").path())
            .collect()
    }

    /// Overwrites a blob in the store with other bytes, as disk corruption would.
    pub async fn corrupt_blob(&self, sha256: &str) {
        use object_store::ObjectStoreExt;
        let hash = fascicolo::domain::ContentHash::parse(sha256).expect("hash");
        let key = object_store::path::Path::from(hash.object_key());
        let store = self.services.blobs.object_store();
        let mut bytes = store
            .get(&key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")
            .to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        store.put(&key, bytes.into()).await.expect("put");
    }

    /// Runs the CLI against this app's data, with the same configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fascicolo"));
        command
            .env("FASCICOLO_DATA_DIR", self.data_dir.path())
            .env("RUST_LOG", "warn")
            .args(args);
        if let Some(url) = &self.config.database_url {
            command.env("FASCICOLO_DATABASE_URL", url);
        }
        if let Some(url) = &self.config.blob_url {
            command.env("FASCICOLO_BLOB_URL", url);
        }
        command.output().expect("running the CLI")
    }
}

/// A PDF from numbered object bodies (object i+1 = bodies[i]) with a correct xref table.
pub fn pdf(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", bodies.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            bodies.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A stream object: its dictionary entries and data.
pub fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\nendstream");
    body
}

/// A small but real PDF: one page of text.
pub fn sample_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    pdf(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        stream("", content.as_bytes()),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ])
}

impl TestApp {
    /// `GET /v1/search` with these query parameters.
    pub async fn search(&self, token: &str, params: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .get(self.url("/v1/search"))
            .bearer_auth(token)
            .query(params)
            .send()
            .await
            .expect("request")
    }

    /// Searches until `expected` total is reached (the index is near-real-time), at most
    /// `within`; returns the last answer and how long it took.
    pub async fn search_until(
        &self,
        token: &str,
        params: &[(&str, &str)],
        expected: u64,
        within: std::time::Duration,
    ) -> (Value, std::time::Duration) {
        let start = std::time::Instant::now();
        loop {
            let response = self.search(token, params).await;
            assert_eq!(response.status(), 200, "search {params:?}");
            let body: Value = response.json().await.expect("json");
            if body["total"] == expected || start.elapsed() > within {
                return (body, start.elapsed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Waits until the indexer has applied every change so far.
    pub async fn indexed(&self) {
        let index = self.services.index.clone().expect("index");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let last: i64 = sqlx::query_scalar("select coalesce(max(seq), 0) from change_log")
                .fetch_one(self.services.db.pool())
                .await
                .expect("log");
            if index.position() >= last {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "indexing did not catch up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Uploads a plain-text document and returns its JSON.
    pub async fn add_text(
        &self,
        token: &str,
        dossier: &str,
        text: &str,
        title: &str,
        visibility: &str,
    ) -> Value {
        let response = self
            .upload(
                token,
                &format!("/v1/dossiers/{dossier}/documents"),
                text.as_bytes().to_vec(),
                "testo.txt",
                &[
                    ("title", title),
                    ("kind", "attachment"),
                    ("visibility", visibility),
                ],
            )
            .await;
        assert_eq!(response.status(), 201, "uploading a text document");
        response.json().await.expect("json")
    }
}

/// Activates the newest activation queued for `recipient` in the outbox (what the notifier
/// would deliver to that address) and returns the token it gives.
pub async fn activate_from_outbox(app: &TestApp, recipient: &str) -> String {
    let payload: String = sqlx::query_scalar(
        "select payload from notification_outbox where recipient = $1 \
         and template in ('account_activation', 'registration_activation') order by id desc limit 1",
    )
    .bind(recipient)
    .fetch_one(app.services.db.pool())
    .await
    .expect("an activation message for the recipient");
    let message: Value = serde_json::from_str(&payload).expect("payload");
    let response = app
        .client
        .post(app.url("/v1/registrations/activate"))
        .json(&json!({"registration_id": message["registration_id"], "code": message["code"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201, "activating from the outbox");
    let credentials: Value = response.json().await.expect("json");
    credentials["token"].as_str().expect("token").to_owned()
}
