//! The release server as a child process, and what the benchmarks read of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Opens a dossier at the desk of the server at `base` as `token` (staff) and returns its id.
pub async fn open_dossier(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    procedure: &str,
    applicant_cf: &str,
    subject: &str,
) -> String {
    let dossier: serde_json::Value = client
        .post(format!("{base}/v1/dossiers"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "procedure": procedure,
            "applicant_cf": applicant_cf,
            "subject": subject
        }))
        .send()
        .await
        .expect("dossier")
        .json()
        .await
        .expect("json");
    dossier["id"].as_str().expect("dossier id").to_owned()
}

/// Uploads `bytes` as `name` into `dossier` on the server at `base`; returns the document.
pub async fn upload_document(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    dossier: &str,
    name: &str,
    bytes: &[u8],
) -> serde_json::Value {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
    );
    let r = client
        .post(format!("{base}/v1/dossiers/{dossier}/documents"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    r.json().await.expect("json")
}

/// A running `fascicolo serve`; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// From spawning to the logged listening address.
    pub started_in: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Opens a dossier at the desk as `token` (staff) and returns its id.
    pub async fn open_dossier(
        &self,
        client: &reqwest::Client,
        token: &str,
        procedure: &str,
        applicant_cf: &str,
        subject: &str,
    ) -> String {
        open_dossier(client, &self.base, token, procedure, applicant_cf, subject).await
    }

    /// Starts the server over `data_dir` on a free port, with extra environment `env`, and
    /// waits until it logs its address. The per-caller rate limits are on but set far above
    /// what a benchmark's few callers send (a load test is one caller sending thousands of
    /// searches a second); the connection, body and search limits are the defaults.
    /// `FASCICOLO_BENCH_BINARY` runs another build of the server (an A/B against a baseline).
    pub fn start(data_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_binary(&binary(), data_dir, env)
    }

    /// [`Server::start`] with the server binary at `binary`.
    pub fn start_binary(binary: &Path, data_dir: &Path, env: &[(&str, String)]) -> Self {
        let started = Instant::now();
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("FASCICOLO_DATA_DIR", data_dir)
            .env("RUST_LOG", "warn,fascicolo::cli=info")
            .env("NO_COLOR", "1")
            .env("FASCICOLO_RATE_SEARCH", "1000000000")
            .env("FASCICOLO_RATE_UPLOAD", "1000000000")
            .env("FASCICOLO_UPLOAD_QUOTA_MIB", "100000000")
            .env_remove("FASCICOLO_DATABASE_URL")
            .env_remove("FASCICOLO_BLOB_URL")
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starting the server");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut base = None;
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(address) = line.split("address=").nth(1) {
                base = Some(format!(
                    "http://{}",
                    address.split_whitespace().next().unwrap_or_default()
                ));
                break;
            }
        }
        let started_in = started.elapsed();
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base: base.expect("the server logged its address"),
            started_in,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Memory of a process, from `/proc/<pid>/status`, in MiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident set, file-backed pages (the mapped index) included.
    pub rss: f64,
    /// Peak resident set since start or the last [`reset_peak`].
    pub hwm: f64,
    /// Resident anonymous memory: the heap and stacks, without mapped files.
    pub anon: f64,
}

/// Reads the memory of `pid`.
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
    }
}

/// Resets the peak-RSS counter so VmHWM measures from now on (Linux ≥ 4.0).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Samples a process's memory every 50 ms on a thread until the handle is finished.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Memory>>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push(memory(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Self { stop, thread }
    }

    /// Stops; returns (peak, median) of the anonymous resident memory and the peak RSS.
    pub fn finish(self) -> (f64, f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.join().expect("sampler");
        let mut anon: Vec<f64> = samples.iter().map(|m| m.anon).collect();
        anon.sort_by(f64::total_cmp);
        let peak = anon.last().copied().unwrap_or(0.0);
        let median = anon.get(anon.len() / 2).copied().unwrap_or(0.0);
        let rss = samples.iter().map(|m| m.rss).fold(0.0, f64::max);
        (peak, median, rss)
    }
}

/// The server binary: this build's, or `FASCICOLO_BENCH_BINARY`.
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("FASCICOLO_BENCH_BINARY")
        .map_or_else(|| env!("CARGO_BIN_EXE_fascicolo").into(), Into::into)
}

/// Runs a CLI command of the release binary over `data_dir`; returns its stdout.
pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .env("FASCICOLO_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("FASCICOLO_DATABASE_URL")
        .env_remove("FASCICOLO_BLOB_URL")
        .output()
        .expect("running the CLI");
    assert!(
        out.status.success(),
        "fascicolo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
