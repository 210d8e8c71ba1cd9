//! The burst of issue 32: an office concludes many dossiers at once, and the outbox drains to
//! a local SMTP server while staff keep searching. Against the release server on 127.0.0.1:
//! - setup: citizens register and activate online (their e-mail is proven by the code), open
//!   dossiers, staff take each in charge and file its decision; the outbox is drained;
//! - idle: one staff client searches, 50 a second (bounded count), for the search latency
//!   without a drain;
//! - burst: staff conclude every dossier with four concurrent clients (each conclusion writes
//!   its notice in the same transaction); the notices drain to the SMTP listener inside this
//!   benchmark while the same search client runs. Reported: conclusions per second, messages
//!   per second from the first conclusion to the last message received, the search p50/p99
//!   idle and during the drain.
//!
//! `cargo bench --bench notify` (10 000 dossiers; `FASCICOLO_BENCH_QUICK=1`: 500). Every
//! request loop is bounded in count, every wait in time.

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/server.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// An SMTP listener that accepts every message and counts them.
async fn smtp_sink(count: Arc<AtomicUsize>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            count.fetch_add(1, Ordering::Relaxed);
                            if write.write_all(b"250 queued\r\n").await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper == "DATA" {
                        in_data = true;
                        b"354 go on\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Searches as `token`, one every `PACE` (a busy clerk, not a load test), until `stop` or
/// `max` searches; returns the latencies in ms.
async fn search_loop(
    client: reqwest::Client,
    base: String,
    token: String,
    stop: Arc<AtomicBool>,
    max: usize,
) -> Vec<f64> {
    const PACE: Duration = Duration::from_millis(20);
    let mut tick = tokio::time::interval(PACE);
    const QUERIES: &[&str] = &[
        "provvedimento",
        "accoglimento",
        "\"provvedimento di accoglimento\"",
        "pratica",
        "edilizia",
    ];
    let mut out = Vec::new();
    for i in 0..max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tick.tick().await;
        let started = Instant::now();
        let r = client
            .get(format!("{base}/v1/search"))
            .bearer_auth(&token)
            .query(&[("q", QUERIES[i % QUERIES.len()])])
            .send()
            .await
            .expect("search");
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn median_and_p99(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        server::percentile(&values, 50.0),
        server::percentile(&values, 99.0),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("FASCICOLO_BENCH_QUICK").is_some();
    let dossiers: usize = if quick { 500 } else { 10_000 };
    let citizens: usize = if quick { 10 } else { 100 };
    let dir = tempfile::tempdir().expect("temp dir");
    let received = Arc::new(AtomicUsize::new(0));
    let port = smtp_sink(received.clone()).await;
    let server = server::Server::start(
        dir.path(),
        &[
            ("FASCICOLO_SMTP_URL", format!("smtp://127.0.0.1:{port}")),
            ("FASCICOLO_RATE_ANONYMOUS", "0".to_owned()),
            ("FASCICOLO_TRUSTED_PROXIES", "127.0.0.1".to_owned()),
            // The digest is not part of this burst.
            ("FASCICOLO_DIGEST_HOUR", "23".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let staff: Value = serde_json::from_str(&server::cli(
        dir.path(),
        &[
            "user", "add", "--role", "staff", "--name", "Ufficio", "--office", "edilizia",
        ],
    ))
    .expect("staff");
    let staff = staff["token"].as_str().expect("token").to_owned();
    let db_url = format!("sqlite://{}", dir.path().join("fascicolo.db").display());
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&db_url)
        .await
        .expect("database");

    // Citizens register and activate: the activation proves their e-mail.
    let setup = Instant::now();
    let mut tokens = Vec::new();
    for n in 0..citizens {
        let cf = corpus::codice_fiscale(n as u32);
        let r = client
            .post(format!("{base}/v1/registrations"))
            // Each from an address of its own: registrations are limited per address.
            .header("x-forwarded-for", format!("10.0.{}.{}", n / 250, n % 250 + 1))
            .json(&json!({"codice_fiscale": cf, "name": format!("Cittadino {n}"), "email": format!("c{n}@example.it")}))
            .send()
            .await
            .expect("registration");
        assert_eq!(r.status(), 202);
        let payload: String = sqlx::query_scalar(
            "select payload from notification_outbox where recipient = $1 order by id desc limit 1",
        )
        .bind(format!("c{n}@example.it"))
        .fetch_one(&mut db)
        .await
        .expect("activation message");
        let message: Value = serde_json::from_str(&payload).expect("payload");
        let r: Value = client
            .post(format!("{base}/v1/registrations/activate"))
            .json(&json!({"registration_id": message["registration_id"], "code": message["code"]}))
            .send()
            .await
            .expect("activation")
            .json()
            .await
            .expect("json");
        tokens.push((cf, r["token"].as_str().expect("token").to_owned()));
    }
    // Dossiers opened online, taken in charge, each with its decision on file.
    let mut ids = Vec::new();
    for i in 0..dossiers {
        let (cf, token) = &tokens[i % citizens];
        let id =
            server::open_dossier(&client, &base, token, "cila", cf, "Lavori di manutenzione").await;
        let r = client
            .post(format!("{base}/v1/dossiers/{id}/transitions"))
            .bearer_auth(&staff)
            .json(&json!({"to": "started"}))
            .send()
            .await
            .expect("start");
        assert_eq!(r.status(), 200);
        let form = reqwest::multipart::Form::new()
            .text("kind", "decision")
            .text("visibility", "public")
            .part(
                "file",
                reqwest::multipart::Part::bytes(
                    format!("Provvedimento di accoglimento della pratica {i}").into_bytes(),
                )
                .file_name("provvedimento.txt"),
            );
        let doc: Value = client
            .post(format!("{base}/v1/dossiers/{id}/documents"))
            .bearer_auth(&staff)
            .multipart(form)
            .send()
            .await
            .expect("decision")
            .json()
            .await
            .expect("json");
        ids.push((id, doc["id"].as_str().expect("document id").to_owned()));
    }
    // Receipts, starts and activations drain before the burst.
    let before = 2 * dossiers + citizens;
    wait_until("the setup's messages", Duration::from_secs(600), || {
        received.load(Ordering::Relaxed) >= before
    })
    .await;
    println!(
        "setup: {citizens} citizens, {dossiers} dossiers started with a decision, {} messages, in {:.1} s",
        received.load(Ordering::Relaxed),
        setup.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let idle = search_loop(
        client.clone(),
        base.clone(),
        staff.clone(),
        stop.clone(),
        if quick { 300 } else { 2000 },
    )
    .await;

    // The burst: four clients conclude every dossier.
    let start_count = received.load(Ordering::Relaxed);
    let searching = tokio::spawn(search_loop(
        client.clone(),
        base.clone(),
        staff.clone(),
        stop.clone(),
        200_000,
    ));
    let burst = Instant::now();
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, base, staff, ids, next) = (
            client.clone(),
            base.clone(),
            staff.clone(),
            ids.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, decision)) = ids.get(i) else { break };
                let r = client
                    .post(format!("{base}/v1/dossiers/{id}/transitions"))
                    .bearer_auth(&staff)
                    .json(&json!({"to": "concluded", "outcome": "approved", "decision_document_id": decision}))
                    .send()
                    .await
                    .expect("conclusion");
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let concluded_in = burst.elapsed();
    wait_until("the burst's messages", Duration::from_secs(600), || {
        received.load(Ordering::Relaxed) >= start_count + dossiers
    })
    .await;
    let drained_in = burst.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = searching.await.expect("search client");
    let (idle_p50, idle_p99) = median_and_p99(idle);
    let searches = during.len();
    let (p50, p99) = median_and_p99(during);
    println!(
        "burst: {dossiers} conclusions in {:.2} s ({:.0}/s); {dossiers} notices delivered in {:.2} s from the first conclusion: {:.0} messages/s",
        concluded_in.as_secs_f64(),
        dossiers as f64 / concluded_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        dossiers as f64 / drained_in.as_secs_f64()
    );
    println!(
        "search as staff: idle p50 {idle_p50:.2} ms p99 {idle_p99:.2} ms; during the burst ({searches} searches) p50 {p50:.2} ms p99 {p99:.2} ms"
    );
    drop(server);
}
