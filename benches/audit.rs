//! What the audit trail costs per search and per download under concurrent load.
//!
//! The release server runs in-process on 127.0.0.1 twice over the same data: once as it always
//! runs (every read waits until its audit record is fsynced in the journal, with group commit),
//! once with an
//! auditor that records nothing. Eight clients replay the same bounded mix of searches and
//! downloads against each; the difference of the medians is the audit's cost.
//!
//! `cargo bench --bench audit` (`FASCICOLO_BENCH_QUICK=1` for a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fascicolo::app::{App, Services};
use fascicolo::config::Config;
use serde_json::{Value, json};

const CLIENTS: usize = 8;

struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(services: Services) -> Running {
    let app = App::with_services(services).await.expect("app");
    let base = format!("http://{}", app.local_addr().expect("addr"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server");
    });
    Running { base, stop, task }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::embedded(dir);
    c.extractor = Some(env!("CARGO_BIN_EXE_fascicolo").into());
    c
}

/// CPU time (user and system) of this process so far, ms.
fn cpu_ms() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
    ms(usage.user_time()) + ms(usage.system_time())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the mix; returns (search latencies, download latencies) in ms.
async fn load(base: &str, token: &str, docs: &[String], per_client: usize) -> (Vec<f64>, Vec<f64>) {
    let client = reqwest::Client::new();
    let docs = Arc::new(docs.to_vec());
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let base = base.to_owned();
        let token = token.to_owned();
        let docs = docs.clone();
        tasks.push(tokio::spawn(async move {
            let (mut searches, mut downloads) = (Vec::new(), Vec::new());
            let words = [
                "relazione",
                "sopralluogo",
                "planimetria",
                "\"parere favorevole\"",
                "ricevuta",
            ];
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..per_client {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/v1/search"))
                    .bearer_auth(&token)
                    .query(&[("q", words[(c + i) % words.len()])])
                    .send()
                    .await
                    .expect("search");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                searches.push(t.elapsed().as_secs_f64() * 1000.0);
                let t = Instant::now();
                let doc = &docs[(c * 31 + i) % docs.len()];
                let r = client
                    .get(format!("{base}/v1/documents/{doc}/content"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("download");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                downloads.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (searches, downloads)
        }));
    }
    let (mut s, mut d) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await.expect("client");
        s.extend(a);
        d.extend(b);
    }
    (s, d)
}

#[tokio::main]
async fn main() {
    let quick = std::env::var_os("FASCICOLO_BENCH_QUICK").is_some();
    let (dossiers, per_client) = if quick { (10, 50) } else { (40, 400) };
    let dir = tempfile::tempdir().expect("temp dir");

    // Load a corpus through the audited server.
    let services = Services::open(config(dir.path())).await.expect("services");
    let staff = fascicolo::users::add_user(
        &services,
        "staff".parse().expect("role"),
        "Bench",
        None,
        &["edilizia".to_owned()],
    )
    .await
    .expect("user")
    .token;
    let mut services = services;
    services.auditor =
        fascicolo::audit::Auditor::start_journaled(services.db.clone(), &dir.path().join("audit"))
            .expect("journal");
    let running = start(services).await;
    let client = reqwest::Client::new();
    let mut docs = Vec::new();
    let phrases = [
        "relazione tecnica del sopralluogo",
        "planimetria con parere favorevole",
        "ricevuta del versamento",
        "relazione paesaggistica",
    ];
    for n in 0..dossiers {
        let d: Value = client
            .post(format!("{}/v1/dossiers", running.base))
            .bearer_auth(&staff)
            .json(&json!({"procedure": "cila", "applicant_cf": "RSSMRA85T10A562S", "subject": format!("Pratica {n}")}))
            .send()
            .await
            .expect("dossier")
            .json()
            .await
            .expect("json");
        for (k, phrase) in phrases.iter().enumerate() {
            let text = format!("{phrase} numero {n} {k} ").repeat(40);
            let form = reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(text.into_bytes()).file_name("a.txt"),
            );
            let doc: Value = client
                .post(format!(
                    "{}/v1/dossiers/{}/documents",
                    running.base,
                    d["id"].as_str().expect("id")
                ))
                .bearer_auth(&staff)
                .multipart(form)
                .send()
                .await
                .expect("upload")
                .json()
                .await
                .expect("json");
            docs.push(doc["id"].as_str().expect("id").to_owned());
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Warm up, then measure with auditing.
    load(&running.base, &staff, &docs, 10).await;
    let cpu = cpu_ms();
    let wall = Instant::now();
    let (audited_s, audited_d) = load(&running.base, &staff, &docs, per_client).await;
    let audited_cpu = (cpu_ms() - cpu, wall.elapsed());
    let _ = running.stop.send(());
    let _ = running.task.await;

    // The same data, with an auditor that records nothing.
    let mut services = Services::open(config(dir.path())).await.expect("services");
    services.auditor = fascicolo::audit::Auditor::discarding_for_benchmarks();
    let running = start(services).await;
    load(&running.base, &staff, &docs, 10).await;
    let cpu = cpu_ms();
    let wall = Instant::now();
    let (plain_s, plain_d) = load(&running.base, &staff, &docs, per_client).await;
    let plain_cpu = (cpu_ms() - cpu, wall.elapsed());
    let _ = running.stop.send(());
    let _ = running.task.await;

    println!(
        "audit cost under {CLIENTS} concurrent clients, {} documents, {} requests of each kind per run",
        docs.len(),
        audited_s.len()
    );
    let pairs = audited_s.len() as f64;
    for (what, (cpu, wall)) in [("audited", audited_cpu), ("without audit", plain_cpu)] {
        println!(
            "  {what:<14} CPU (server and clients) {:.3} ms per search+download pair, {:.0}% of 2 cores; wall {:.2} s",
            cpu / pairs,
            cpu / wall.as_secs_f64() / 20.0,
            wall.as_secs_f64()
        );
    }
    for (what, with, without) in [
        ("search", audited_s, plain_s),
        ("download", audited_d, plain_d),
    ] {
        let (a, b) = (median(with), median(without));
        println!(
            "  {what:<9} median {a:>7.2} ms audited, {b:>7.2} ms without; audit share {:>5.1}% of the audited request",
            (a - b) / a * 100.0
        );
    }
}
