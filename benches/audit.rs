//! What the audit trail costs per search and per download under concurrent load.
//!
//! The release server runs in-process on 127.0.0.1 over the same data, started in turn as it
//! always runs (every read waits until its audit record is fsynced in the journal, with group
//! commit) and with an auditor that records nothing, for several rounds whose order alternates.
//! Eight clients replay the same bounded mix of searches and downloads against each; the
//! difference of the medians over all rounds is the audit's cost.
//!
//! Three workloads, from the smallest requests a server answers to the documents a desk keeps:
//! - 160 short texts (1.8 KB, five repeated words), searched and downloaded;
//! - the load benchmark's generated corpus (about 2 KB of Italian prose per document), searched
//!   with its query classes (common word, rare word, two words, phrase), its texts downloaded;
//! - the same searches, with downloads of scanned pages (512 KiB JPEG files, what a scanner
//!   makes of an A4 page at 200 dpi);
//! - with `FASCICOLO_BENCH_DIR` naming the data directory the load benchmark kept (a million
//!   documents by default), its staff member's searches of every query class over the whole
//!   corpus, each followed by the download of one of its hits.
//!
//! Every mix is measured with one client (the server otherwise idle: what a read waits for its
//! record) and with [`CLIENTS`] (both cores saturated: what the audit's work takes from the
//! throughput).
//!
//! `cargo bench --bench audit --features bench` (`FASCICOLO_BENCH_QUICK=1` for a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/server.rs"]
mod server;

use fascicolo::app::{App, Services};
use fascicolo::config::Config;
use serde_json::Value;

const CLIENTS: usize = 8;
/// The loads every mix is measured under: one client, then [`CLIENTS`].
const LEVELS: [usize; 2] = [1, CLIENTS];
const CATALOGUE: &str = include_str!("../schema/procedures.json");

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
    // Rate limits on, far above what the benchmark's few callers send.
    c.rate_search = 1_000_000_000;
    c.rate_upload = 1_000_000_000;
    c.upload_quota_mib = 100_000_000;
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

/// One measured mix: what is searched for and what is downloaded.
struct Mix {
    name: String,
    download: &'static str,
    /// Each search's query parameters.
    queries: Vec<Vec<(&'static str, String)>>,
    downloads: Vec<String>,
}

/// Searches for each of `queries`, with no other parameter.
fn plain_queries(queries: Vec<String>) -> Vec<Vec<(&'static str, String)>> {
    queries.into_iter().map(|q| vec![("q", q)]).collect()
}

/// Runs the mix with `clients` clients; returns (search latencies, download latencies) in ms.
async fn load(
    base: &str,
    token: &str,
    mix: &Mix,
    clients: usize,
    per_client: usize,
) -> (Vec<f64>, Vec<f64>) {
    let client = reqwest::Client::new();
    let queries = Arc::new(mix.queries.clone());
    let docs = Arc::new(mix.downloads.clone());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let base = base.to_owned();
        let token = token.to_owned();
        let (queries, docs) = (queries.clone(), docs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut searches, mut downloads) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..per_client {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/v1/search"))
                    .bearer_auth(&token)
                    .query(&queries[(c * 7 + i) % queries.len()])
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

/// What one run of a mix measured.
struct Measured {
    searches: Vec<f64>,
    downloads: Vec<f64>,
    /// CPU of the whole process (server and clients), ms.
    cpu: f64,
    wall: Duration,
}

/// Warms up, then runs each mix once under each of [`LEVELS`] against the server at `base`;
/// the results in that order (every level of the first mix, then of the next).
async fn measure(base: &str, token: &str, mixes: &[Mix], per_client: usize) -> Vec<Measured> {
    let mut out = Vec::new();
    for mix in mixes {
        load(base, token, mix, CLIENTS, 10).await;
        for clients in LEVELS {
            let cpu = cpu_ms();
            let wall = Instant::now();
            let (searches, downloads) = load(base, token, mix, clients, per_client).await;
            out.push(Measured {
                searches,
                downloads,
                cpu: cpu_ms() - cpu,
                wall: wall.elapsed(),
            });
        }
    }
    out
}

/// Uploads `files` over HTTP, five to a dossier, with [`CLIENTS`] uploaders; returns the
/// document ids in the order of `files`.
async fn upload(base: &str, token: &str, files: Vec<(String, Vec<u8>)>) -> Vec<String> {
    let client = reqwest::Client::new();
    let files = Arc::new(files);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, token, files) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            files.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut dossier = String::new();
            for (n, i) in (c..files.len()).step_by(CLIENTS).enumerate() {
                if n % 5 == 0 {
                    dossier = server::open_dossier(
                        &client,
                        &base,
                        &token,
                        "cila",
                        "RSSMRA85T10A562S",
                        &format!("Pratica {c} {n}"),
                    )
                    .await;
                }
                let (name, bytes) = &files[i];
                let doc =
                    server::upload_document(&client, &base, &token, &dossier, name, bytes).await;
                ids.push((i, doc["id"].as_str().expect("id").to_owned()));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("uploader"));
    }
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// The body of a search with `params` on the server at `base`.
async fn search_json(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    params: &[(&str, String)],
) -> Value {
    client
        .get(format!("{base}/v1/search"))
        .bearer_auth(token)
        .query(params)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json")
}

/// Waits (bounded) until `count` documents are searchable.
async fn wait_indexed(base: &str, token: &str, count: u64) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let r = search_json(&client, base, token, &[]).await;
        if r["total"].as_u64().unwrap_or(0) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{count} documents were not searchable within 300 s");
}

/// The short texts: `dossiers` × 4 documents of 1.8 KB, five query words.
fn short_texts(dossiers: usize) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let phrases = [
        "relazione tecnica del sopralluogo",
        "planimetria con parere favorevole",
        "ricevuta del versamento",
        "relazione paesaggistica",
    ];
    let files = (0..dossiers)
        .flat_map(|n| {
            phrases.iter().enumerate().map(move |(k, phrase)| {
                let text = format!("{phrase} numero {n} {k} ").repeat(40);
                (format!("{n}-{k}.txt"), text.into_bytes())
            })
        })
        .collect();
    let queries = [
        "relazione",
        "sopralluogo",
        "planimetria",
        "\"parere favorevole\"",
        "ricevuta",
    ]
    .map(str::to_owned)
    .to_vec();
    (files, queries)
}

/// The generated corpus's first `documents` texts and its query classes, 50 queries each.
fn generated(documents: usize) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    use rand::{Rng, SeedableRng};
    let corpus = corpus::Corpus::new(7, documents, CATALOGUE);
    let files = (0..documents)
        .map(|i| (format!("{i}.txt"), corpus.document(i).text.into_bytes()))
        .collect();
    let v = &corpus.vocabulary;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xA0D17);
    let mut queries = Vec::new();
    for i in 0..50 {
        queries.push(v[i % 30].clone());
        queries.push(v[rng.random_range(3_000..v.len())].clone());
        queries.push(format!(
            "{} {}",
            v[rng.random_range(30..600)],
            v[rng.random_range(30..600)]
        ));
        queries.push(format!(
            "\"{}\"",
            corpus::PHRASES[i % corpus::PHRASES.len()]
        ));
    }
    (files, queries)
}

/// `count` scanned pages: JPEG files of 512 KiB (the bytes after the header are noise, as
/// incompressible as a photograph's).
fn scans(count: usize) -> Vec<(String, Vec<u8>)> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5CA9);
    (0..count)
        .map(|i| {
            let mut bytes = vec![0u8; 512 * 1024];
            rng.fill_bytes(&mut bytes);
            bytes[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
            (format!("scan-{i}.jpg"), bytes)
        })
        .collect()
}

/// A server over the data in `dir`: audited as it always runs (every read waits for its
/// record in the fsynced journal), or with an auditor that records nothing.
async fn serve(dir: &std::path::Path, audited: bool) -> Running {
    // The index's writer lock is released once the last task of the server stopped before
    // has let go of it, which may be a moment after it stopped answering.
    let mut services = Services::open(config(dir)).await.expect("services");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = services.open_index() {
        assert!(
            Instant::now() < deadline,
            "the previous server still holds the index: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    services.auditor = if audited {
        fascicolo::audit::Auditor::start_journaled(services.db.clone(), &dir.join("audit"))
            .expect("journal")
    } else {
        fascicolo::audit::Auditor::recording_nothing()
    };
    start(services).await
}

async fn stop(running: Running) {
    let _ = running.stop.send(());
    let _ = running.task.await;
}

/// What the rounds of one mix measured, audited and without.
struct Rounds {
    audited: Vec<Measured>,
    plain: Vec<Measured>,
}

/// Loads `files` through an audited server on a new data directory, then measures `mixes`
/// (built from the uploaded ids) in `rounds` rounds, each with a server started audited and
/// one started without audit. The order alternates from round to round (audited first, then
/// last), so that whatever drifts on the machine during the run weighs on both sides alike.
async fn run(
    files: Vec<(String, Vec<u8>)>,
    mixes: impl FnOnce(&[String]) -> Vec<Mix>,
    per_client: usize,
    rounds: usize,
) -> (Vec<Mix>, Vec<Rounds>) {
    let dir = tempfile::tempdir().expect("temp dir");
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
    drop(services);
    let running = serve(dir.path(), true).await;
    let count = files.len() as u64;
    let ids = upload(&running.base, &staff, files).await;
    wait_indexed(&running.base, &staff, count).await;
    stop(running).await;
    let mixes = mixes(&ids);
    let measured = in_rounds(dir.path(), &staff, &mixes, per_client, rounds).await;
    (mixes, measured)
}

/// Measures `mixes` over the data in `dir` as `token` in `rounds` rounds, each with a server
/// started audited and one started without audit. The order alternates from round to round
/// (audited first, then last), so that whatever drifts on the machine during the run weighs
/// on both sides alike. One [`Rounds`] per mix and level, in [`measure`]'s order.
async fn in_rounds(
    dir: &std::path::Path,
    token: &str,
    mixes: &[Mix],
    per_client: usize,
    rounds: usize,
) -> Vec<Rounds> {
    let mut measured: Vec<Rounds> = (0..mixes.len() * LEVELS.len())
        .map(|_| Rounds {
            audited: Vec::new(),
            plain: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for audited in order {
            let running = serve(dir, audited).await;
            let results = measure(&running.base, token, mixes, per_client).await;
            stop(running).await;
            for (rounds, m) in measured.iter_mut().zip(results) {
                if audited {
                    rounds.audited.push(m);
                } else {
                    rounds.plain.push(m);
                }
            }
        }
    }
    measured
}

/// The mix at the load benchmark's scale, over the data directory it kept: its staff member
/// (of the busiest office) runs its queries of every class in turn, and downloads the hits
/// they return. `None` when `dir` holds no such data.
async fn at_scale(
    dir: &std::path::Path,
    per_client: usize,
    rounds: usize,
) -> Option<(Vec<Mix>, Vec<Rounds>)> {
    let roles: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench-roles.json")).ok()?).ok()?;
    let classes: std::collections::BTreeMap<String, Vec<Value>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench-queries.json")).ok()?)
            .ok()?;
    let token = roles["tokens"]["staff"].as_str()?.to_owned();
    let documents = std::fs::read_to_string(dir.join("bench-corpus.json"))
        .ok()
        .and_then(|m| serde_json::from_str::<Value>(&m).ok())
        .and_then(|m| m["documents"].as_u64());
    // Round-robin over the classes, so that every client meets all of them.
    let longest = classes.values().map(Vec::len).max().unwrap_or(0);
    let mut queries = Vec::new();
    for i in 0..longest {
        for set in classes.values() {
            let Some(q) = set.get(i) else { continue };
            let mut params = vec![("q", q["q"].as_str().unwrap_or_default().to_owned())];
            if let Some(p) = q["procedure"].as_str() {
                params.push(("procedure", p.to_owned()));
            }
            if let Some(y) = q["year"].as_i64() {
                params.push(("year", y.to_string()));
            }
            queries.push(params);
        }
    }
    // What the staff member opens: the first hits of each query.
    let running = serve(dir, false).await;
    let client = reqwest::Client::new();
    let mut downloads = Vec::new();
    for params in &queries {
        let r = search_json(&client, &running.base, &token, params).await;
        for hit in r["hits"].as_array().into_iter().flatten().take(3) {
            if let Some(id) = hit["document_id"].as_str() {
                downloads.push(id.to_owned());
            }
        }
    }
    stop(running).await;
    downloads.sort();
    downloads.dedup();
    assert!(
        !downloads.is_empty(),
        "the staff member's searches found nothing to download"
    );
    let mixes = vec![Mix {
        name: match documents {
            Some(n) => format!("{n} documents of the load benchmark"),
            None => "the load benchmark's documents".to_owned(),
        },
        download: "~2.5 KB text",
        queries,
        downloads,
    }];
    let measured = in_rounds(dir, &token, &mixes, per_client, rounds).await;
    Some((mixes, measured))
}

/// Medians of all the rounds' searches and downloads, CPU per pair and the cores' load.
struct Pooled {
    search: f64,
    download: f64,
    cpu_per_pair: f64,
    load: f64,
}

fn pooled(runs: &[Measured]) -> Pooled {
    let searches: Vec<f64> = runs.iter().flat_map(|m| m.searches.clone()).collect();
    let downloads: Vec<f64> = runs.iter().flat_map(|m| m.downloads.clone()).collect();
    let cpu: f64 = runs.iter().map(|m| m.cpu).sum();
    let wall: f64 = runs.iter().map(|m| m.wall.as_secs_f64()).sum();
    let pairs = searches.len() as f64;
    Pooled {
        search: median(searches),
        download: median(downloads),
        cpu_per_pair: cpu / pairs,
        load: cpu / wall / 20.0,
    }
}

/// The lowest and highest share over the rounds, of searches or of downloads.
fn share_range(rounds: &Rounds, pick: fn(&Measured) -> &Vec<f64>) -> (f64, f64) {
    let shares: Vec<f64> = rounds
        .audited
        .iter()
        .zip(&rounds.plain)
        .map(|(a, p)| {
            let (a, p) = (median(pick(a).clone()), median(pick(p).clone()));
            (a - p) / a * 100.0
        })
        .collect();
    (
        shares.iter().copied().fold(f64::INFINITY, f64::min),
        shares.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

#[tokio::main]
async fn main() {
    let quick = std::env::var_os("FASCICOLO_BENCH_QUICK").is_some();
    let (short, documents, scanned, per_client, rounds) = if quick {
        (10, 400, 8, 50, 1)
    } else {
        (40, 4_000, 40, 400, 4)
    };
    println!(
        "fsync of one 300-byte append on this disk: {:.3} ms median",
        fsync_median()
    );
    println!(
        "moving read events into the chained table (SQLite, 2 048 per transaction): {:.1} µs per event, median of 5",
        mover_cost().await
    );

    let (files, queries) = short_texts(short);
    let short_run = run(
        files,
        |ids| {
            vec![Mix {
                name: format!("{} short texts", short * 4),
                download: "1.8 KB text",
                queries: plain_queries(queries),
                downloads: ids.to_vec(),
            }]
        },
        per_client,
        rounds,
    )
    .await;

    let (mut files, queries) = generated(documents);
    let queries = plain_queries(queries);
    files.extend(scans(scanned));
    let generated_run = run(
        files,
        |ids| {
            let (texts, scans) = ids.split_at(documents);
            vec![
                Mix {
                    name: format!("{documents} generated documents"),
                    download: "~2 KB text",
                    queries: queries.clone(),
                    downloads: texts.to_vec(),
                },
                Mix {
                    name: format!("{documents} generated documents"),
                    download: "512 KiB scan",
                    queries,
                    downloads: scans.to_vec(),
                },
            ]
        },
        per_client,
        rounds,
    )
    .await;

    let scale_run = match std::env::var_os("FASCICOLO_BENCH_DIR") {
        Some(dir) => {
            let dir = std::path::PathBuf::from(dir);
            let run = at_scale(&dir, per_client, rounds).await;
            if run.is_none() {
                println!(
                    "\n{} holds no data kept by the load benchmark (bench-roles.json, bench-queries.json): no mix at its scale",
                    dir.display()
                );
            }
            run
        }
        None => None,
    };

    println!(
        "\naudit cost with 1 client and with {CLIENTS} concurrent clients, {rounds} rounds of {per_client} \
         searches and {per_client} downloads per client each way (medians over all rounds; the \
         share's range over the rounds)",
    );
    println!(
        "| documents | downloads | clients | search audited | without | share | rounds | download audited | without | share | rounds | CPU per pair audited | without |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (mixes, measured) in [short_run, generated_run].into_iter().chain(scale_run) {
        let levels = mixes
            .iter()
            .flat_map(|mix| LEVELS.map(|clients| (mix, clients)));
        for ((mix, clients), rounds) in levels.zip(measured) {
            let (a, p) = (pooled(&rounds.audited), pooled(&rounds.plain));
            let (s_lo, s_hi) = share_range(&rounds, |m| &m.searches);
            let (d_lo, d_hi) = share_range(&rounds, |m| &m.downloads);
            println!(
                "| {} | {} | {clients} | {:.2} ms | {:.2} ms | {:.1} % | {s_lo:.1}–{s_hi:.1} % | {:.2} ms | {:.2} ms | {:.1} % | {d_lo:.1}–{d_hi:.1} % | {:.3} ms ({:.0} % of 2 cores) | {:.3} ms ({:.0} %) |",
                mix.name,
                mix.download,
                a.search,
                p.search,
                (a.search - p.search) / a.search * 100.0,
                a.download,
                p.download,
                (a.download - p.download) / a.download * 100.0,
                a.cpu_per_pair,
                a.load,
                p.cpu_per_pair,
                p.load,
            );
        }
    }
}

/// Median time of appending 300 bytes to a preallocated file and `fdatasync`ing it, as the
/// journal does (200 times).
fn fsync_median() -> f64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = std::fs::File::create(dir.path().join("probe")).expect("probe");
    file.write_all_at(&vec![0u8; 1 << 20], 0).expect("write");
    file.sync_all().expect("sync");
    let line = [b'x'; 300];
    let times = (0..200u64)
        .map(|i| {
            let t = Instant::now();
            file.write_all_at(&line, i * 300).expect("write");
            file.sync_data().expect("sync");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    median(times)
}

/// What the journal's mover spends per event: chaining and inserting batches of search and
/// download events into the table of a new SQLite database, as it does every half second.
async fn mover_cost() -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let services = Services::open(config(dir.path())).await.expect("services");
    let db = services.db.clone();
    let actors: Vec<_> = (0..50).map(|_| fascicolo::domain::UserId::new()).collect();
    let dossiers: Vec<_> = (0..700)
        .map(|_| fascicolo::domain::DossierId::new())
        .collect();
    let events: Vec<fascicolo::audit::AuditEvent> = (0..20_000usize)
        .map(|i| fascicolo::audit::AuditEvent {
            at: Some(1_790_000_000_000 + i as i64),
            tenant: "comune".to_owned(),
            actor_id: Some(actors[i % 50]),
            actor_role: Some("staff".to_owned()),
            action: if i % 2 == 0 { "search" } else { "document.download" }.to_owned(),
            target: format!("document:0193f0c2-7b1a-7c3e-9d2f-{i:012}"),
            dossier_id: Some(dossiers[i % 700]),
            outcome: "ok".to_owned(),
            client_address: Some("127.0.0.1".to_owned()),
            detail: serde_json::json!({ "query": "permesso di costruire", "filters": ["office=edilizia"], "total": i }),
        })
        .collect();
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for batch in events.chunks(2048) {
            let mut tx = db.begin_write().await.expect("transaction");
            fascicolo::audit::append_in_tx(&db, &mut tx, batch)
                .await
                .expect("append");
            tx.commit().await.expect("commit");
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / events.len() as f64);
    }
    median(rounds)
}
