//! Upload benchmark: streams uploads of several sizes to the release server over HTTP on
//! 127.0.0.1 and reports throughput beside the raw SHA-256 rate, and the server's resident
//! memory before and at peak (VmHWM) around a 1 GiB upload.
//!
//! `cargo bench --bench upload` (set `FASCICOLO_BENCH_QUICK=1` for a short smoke run).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FASCICOLO_DATA_DIR", dir.path())
        .env("FASCICOLO_MAX_UPLOAD_BYTES", (2048 * MIB).to_string())
        .env("RUST_LOG", "warn,fascicolo::cli=info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
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
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let base = base.expect("the server logged its address");
    Server {
        child,
        base,
        _dir: dir,
    }
}

fn user_token(server: &Server, dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .args([
            "user",
            "add",
            "--role",
            "citizen",
            "--name",
            "Bench",
            "--cf",
            "RSSMRA85T10A562S",
        ])
        .env("FASCICOLO_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let _ = server;
    v["token"].as_str().expect("token").to_owned()
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
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
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak-RSS counter so VmHWM measures from now on (Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// A deterministic stream of `size` bytes in 1 MiB chunks, never held whole in memory.
fn body_stream(size: u64, seed: u8) -> reqwest::Body {
    let chunk: Vec<u8> = (0..MIB as usize)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let chunk = Bytes::from(chunk);
    let count = size / MIB;
    let stream = futures_util::stream::iter((0..count).map(move |i| {
        let mut c = chunk.to_vec();
        c[0] = i as u8;
        c[1] = (i >> 8) as u8;
        Ok::<_, std::io::Error>(Bytes::from(c))
    }));
    reqwest::Body::wrap_stream(stream)
}

async fn upload(client: &reqwest::Client, url: &str, token: &str, size: u64, seed: u8) -> Duration {
    let part = reqwest::multipart::Part::stream_with_length(body_stream(size, seed), size)
        .file_name("bench.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let start = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(
        response.status(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn hashing_rate_mib_s(total: u64) -> f64 {
    let chunk = vec![0x5au8; MIB as usize];
    let start = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..(total / MIB) {
        h.update(&chunk);
    }
    std::hint::black_box(h.finalize());
    total as f64 / MIB as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let quick = std::env::var_os("FASCICOLO_BENCH_QUICK").is_some();
    let big = if quick { 128 * MIB } else { 1024 * MIB };
    let server = start_server();
    let pid = server.child.id();
    let token = user_token(&server, server._dir.path());
    let client = reqwest::Client::new();
    let dossier: Value = client
        .post(format!("{}/v1/dossiers", server.base))
        .bearer_auth(&token)
        .json(&json!({"procedure": "permesso-di-costruire", "applicant_cf": "RSSMRA85T10A562S", "subject": "Benchmark"}))
        .send()
        .await
        .expect("dossier")
        .json()
        .await
        .expect("json");
    let url = format!(
        "{}/v1/dossiers/{}/documents",
        server.base,
        dossier["id"].as_str().expect("id")
    );

    println!("fascicolo upload benchmark (release server on 127.0.0.1, local blob store)");
    println!(
        "SHA-256 in-process: {:.0} MiB/s",
        hashing_rate_mib_s(1024 * MIB)
    );
    println!(
        "{:>10} {:>6} {:>14} {:>10}",
        "size", "runs", "median MiB/s", "median ms"
    );
    let mut seed = 0u8;
    for (size, runs) in [(MIB, 30), (16 * MIB, 8), (128 * MIB, 3)] {
        let mut rates = Vec::new();
        let mut times = Vec::new();
        for _ in 0..runs {
            seed = seed.wrapping_add(1);
            let t = upload(&client, &url, &token, size, seed).await;
            rates.push(size as f64 / MIB as f64 / t.as_secs_f64());
            times.push(t.as_secs_f64() * 1000.0);
        }
        println!(
            "{:>7} MiB {:>6} {:>14.0} {:>10.1}",
            size / MIB,
            runs,
            median(rates),
            median(times)
        );
    }

    let (rss_before, _) = memory_mib(pid);
    reset_peak(pid);
    seed = seed.wrapping_add(1);
    let t = upload(&client, &url, &token, big, seed).await;
    let (rss_after, peak) = memory_mib(pid);
    println!(
        "{} MiB upload: {:.0} MiB/s; server RSS before {:.1} MiB, peak during {:.1} MiB, after {:.1} MiB",
        big / MIB,
        big as f64 / MIB as f64 / t.as_secs_f64(),
        rss_before,
        peak,
        rss_after
    );
}
