//! Upload benchmark: streams uploads of several sizes to the release server over HTTP on
//! 127.0.0.1 and reports throughput beside the raw SHA-256 rate, and the server's resident
//! memory before and at peak (VmHWM) around a 1 GiB upload, then around the export of the
//! whole dossier as a ZIP.
//!
//! `cargo bench --bench upload` (set `FASCICOLO_BENCH_QUICK=1` for a short smoke run).

#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

fn user_token(dir: &std::path::Path) -> String {
    let out = server::cli(
        dir,
        &[
            "user",
            "add",
            "--role",
            "citizen",
            "--name",
            "Bench",
            "--cf",
            "RSSMRA85T10A562S",
        ],
    );
    let v: Value = serde_json::from_str(&out).expect("json");
    v["token"].as_str().expect("token").to_owned()
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
    let dir = tempfile::tempdir().expect("temp dir");
    let server = server::Server::start(
        dir.path(),
        &[("FASCICOLO_MAX_UPLOAD_BYTES", (2048 * MIB).to_string())],
    );
    let pid = server.pid();
    let token = user_token(dir.path());
    let client = reqwest::Client::new();
    let dossier = server
        .open_dossier(
            &client,
            &token,
            "permesso-di-costruire",
            "RSSMRA85T10A562S",
            "Benchmark",
        )
        .await;
    let url = format!("{}/v1/dossiers/{dossier}/documents", server.base);

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

    let rss_before = server::memory(pid).rss;
    server::reset_peak(pid);
    seed = seed.wrapping_add(1);
    let t = upload(&client, &url, &token, big, seed).await;
    let after = server::memory(pid);
    let (rss_after, peak) = (after.rss, after.hwm);
    println!(
        "{} MiB upload: {:.0} MiB/s; server RSS before {:.1} MiB, peak during {:.1} MiB, after {:.1} MiB",
        big / MIB,
        big as f64 / MIB as f64 / t.as_secs_f64(),
        rss_before,
        peak,
        rss_after
    );

    // The whole dossier as one archive, read by the client as it arrives.
    server::reset_peak(pid);
    let documents: u64 = 30 * MIB + 8 * 16 * MIB + 3 * 128 * MIB + big;
    let start = Instant::now();
    let mut response = client
        .get(format!("{}/v1/dossiers/{dossier}/export", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    let mut archive = 0u64;
    while let Some(chunk) = response.chunk().await.expect("archive") {
        archive += chunk.len() as u64;
    }
    let peak = server::memory(pid).hwm;
    println!(
        "export of the dossier ({} MiB of documents, {:.0} MiB archive): {:.1} s; server RSS peak {:.1} MiB",
        documents / MIB,
        archive as f64 / MIB as f64,
        start.elapsed().as_secs_f64(),
        peak
    );
}
