//! Search under load, at up to a million documents, beside PostgreSQL full-text search.
//!
//! 1. Generates the corpus (`common/corpus.rs`, deterministic from the seed) and loads it
//!    into a data directory on the embedded defaults: rows in SQLite, texts as blobs, and the
//!    extracted texts in the text cache, exactly as the pipeline would have left them.
//! 2. Times `fascicolo reindex` (the release binary) over it, and measures the index on disk
//!    against the size of the text.
//! 3. Times the start of `fascicolo serve` over the full index, then replays searches over HTTP
//!    by role (citizen, professional, staff, auditor) and query class (common term, rare term,
//!    two-term AND, phrase, a phrase and a word, filtered, faceted): one client for latencies,
//!    then several concurrent clients for throughput, sampling the server's memory throughout.
//! 4. Loads the same corpus into PostgreSQL (`tsvector` with the `italian` configuration, GIN
//!    index) and runs the same queries with the same permission semantics: ranked top 10 with
//!    the exact count, plus the four facets for the faceted class. Prints both and the ratios.
//! 5. Times the search page against `GET /v1/search` for the same queries as staff, and
//!    weighs each kind of page (`common/pages.rs`).
//! 6. Measures ingest over HTTP, upload to searchable: text documents, single-page PDFs and
//!    multi-page PDFs, with the server's peak memory.
//!
//! `cargo bench --bench load`. Environment:
//! - `FASCICOLO_BENCH_DOCS` (default 1 000 000), `FASCICOLO_BENCH_SEED` (default 7);
//! - `FASCICOLO_BENCH_QUICK=1`: 10 000 documents and short phases (the CI smoke run);
//! - `FASCICOLO_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); the
//!   peer runs in a database of its own, dropped afterwards; `none` skips it;
//! - `FASCICOLO_BENCH_DIR`: keep the loaded data directory there and reuse it (and a kept
//!   PostgreSQL database) when it holds the same corpus. The roles' tokens
//!   (`bench-roles.json`) and each class's queries (`bench-queries.json`) are written into it,
//!   so a cell can be replayed by hand against a server started on it;
//! - `FASCICOLO_BENCH_AB=<arms>` (`FASCICOLO_BENCH_AB_ROUNDS`, default 4): an A/B per arm, a
//!   server per arm and round, the order alternating: this build against another
//!   (`binary:<path to its fascicolo>`, which must read the same index; `binary:<path>@<data
//!   dir>` when it cannot: the other build serves the same corpus loaded by its own benchmark
//!   into that directory, with that directory's tokens), or the server with its limits
//!   (`limits`: the connection, header, body, rate and search concurrency limits at their
//!   defaults, the rate limits counting but set above what the benchmark sends) against the
//!   same server with every one of them set to 0, which turns it off.

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/pages.rs"]
mod pages;
#[path = "common/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corpus::{Corpus, Delegation};
use fascicolo::app::Services;
use fascicolo::config::Config;
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use server::{Sampler, Server, percentile};

const CATALOGUE: &str = include_str!("../schema/procedures.json");
const TENANT: &str = "c_c722";
const ROLES: [&str; 4] = ["citizen", "professional", "staff", "auditor"];
const CLASSES: [&str; 7] = [
    "common",
    "rare",
    "and",
    "phrase",
    "phrase+word",
    "filtered",
    "faceted",
];

struct Settings {
    documents: usize,
    seed: u64,
    quick: bool,
    clients: usize,
    /// Queries per role and class with one client.
    per_class: usize,
    concurrent_for: Duration,
    /// `FASCICOLO_BENCH_AB`: the other arms to measure this build against, one A/B each:
    /// `binary:<path>` (another build of the server) or `limits` (its limits turned off).
    ab: Vec<String>,
    /// `FASCICOLO_BENCH_AB_ROUNDS`: rounds of each A/B, the arms' order alternating.
    ab_rounds: usize,
    postgres: Option<String>,
    pg_per_class: usize,
    pg_budget: Duration,
    keep: Option<PathBuf>,
    ingest_text: usize,
    ingest_pdf: usize,
    ingest_multi: usize,
    multi_pages: usize,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var_os("FASCICOLO_BENCH_QUICK").is_some();
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or(default)
        };
        let postgres = match std::env::var("FASCICOLO_BENCH_POSTGRES_URL") {
            Ok(v) if v == "none" => None,
            Ok(v) => Some(v),
            Err(_) => Some("postgres://postgres@127.0.0.1:5432/test".to_owned()),
        };
        Self {
            documents: number(
                "FASCICOLO_BENCH_DOCS",
                if quick { 10_000 } else { 1_000_000 },
            ),
            seed: number("FASCICOLO_BENCH_SEED", 7) as u64,
            quick,
            clients: 8,
            per_class: if quick { 20 } else { 200 },
            concurrent_for: Duration::from_secs(if quick { 3 } else { 20 }),
            ab: std::env::var("FASCICOLO_BENCH_AB")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|arm| {
                    assert!(
                        arm == "limits" || arm.starts_with("binary:"),
                        "FASCICOLO_BENCH_AB: {arm:?} is neither binary:<path> nor limits"
                    );
                    arm.to_owned()
                })
                .collect(),
            ab_rounds: number("FASCICOLO_BENCH_AB_ROUNDS", 4),
            postgres,
            pg_per_class: if quick { 5 } else { 10 },
            pg_budget: Duration::from_secs(if quick { 10 } else { 15 }),
            keep: std::env::var_os("FASCICOLO_BENCH_DIR").map(PathBuf::from),
            ingest_text: if quick { 200 } else { 5_000 },
            ingest_pdf: if quick { 50 } else { 1_000 },
            ingest_multi: if quick { 5 } else { 60 },
            multi_pages: 20,
        }
    }
}

/// The people the queries run as.
#[derive(Clone)]
struct Roles {
    tokens: BTreeMap<&'static str, String>,
    citizen: u32,
    professional: u32,
    office: String,
}

/// One query, as HTTP parameters and as the peer's inputs.
#[derive(Clone, Debug)]
struct Query {
    q: String,
    procedure: Option<String>,
    year: Option<i32>,
}

/// The procedures `office` handles.
fn procedures_of<'c>(corpus: &'c Corpus, office: &str) -> Vec<&'c corpus::Procedure> {
    corpus
        .procedures
        .iter()
        .filter(|p| p.office == office)
        .collect()
}

fn queries(corpus: &Corpus, class: &str, office: &str, count: usize) -> Vec<Query> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xC1A55 ^ class.len() as u64);
    let v = &corpus.vocabulary;
    let office_procedures = procedures_of(corpus, office);
    (0..count)
        .map(|i| {
            let plain = |q: String| Query {
                q,
                procedure: None,
                year: None,
            };
            match class {
                "common" => plain(v[i % 30].clone()),
                "rare" => plain(v[rng.random_range(3_000..v.len())].clone()),
                "and" => plain(format!(
                    "{} {}",
                    v[rng.random_range(30..600)],
                    v[rng.random_range(30..600)]
                )),
                "phrase" => plain(format!(
                    "\"{}\"",
                    corpus::PHRASES[i % corpus::PHRASES.len()]
                )),
                "phrase+word" => plain(format!(
                    "\"{}\" {}",
                    corpus::PHRASES[i % corpus::PHRASES.len()],
                    v[rng.random_range(30..600)]
                )),
                "filtered" => Query {
                    q: v[rng.random_range(0..100)].clone(),
                    procedure: Some(office_procedures[i % office_procedures.len()].code.clone()),
                    year: Some(2019 + (i % 8) as i32),
                },
                _ => plain(String::new()),
            }
        })
        .collect()
}

/// `count` queries of `class`, none the same as another nor as any of `queries` (which draws
/// from a few frequent words and the fixed phrases): what users send, mostly distinct, so that
/// nothing kept for an earlier query (a phrase's matches, a filter) serves it. Phrases are two
/// or three consecutive words of a random document, so each is found somewhere.
fn distinct_queries(
    corpus: &Corpus,
    class: &str,
    office: &str,
    count: usize,
    seed: u64,
) -> Vec<Query> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xD157 ^ class.len() as u64);
    let v = &corpus.vocabulary;
    let office_procedures = procedures_of(corpus, office);
    let asked: std::collections::HashSet<(String, Option<String>, Option<i32>)> =
        queries(corpus, class, office, 50)
            .into_iter()
            .map(|q| (q.q, q.procedure, q.year))
            .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    let plain = |q: String| Query {
        q,
        procedure: None,
        year: None,
    };
    // Bounded: a class with fewer distinct queries than asked for gives what it has.
    for _ in 0..count * 50 {
        if out.len() == count {
            break;
        }
        let q = match class {
            // Frequent words: the 600 most frequent, one by one.
            "common" => plain(v[rng.random_range(0..600.min(v.len()))].clone()),
            "rare" => plain(v[rng.random_range(3_000.min(v.len() - 1)..v.len())].clone()),
            "and" => plain(format!(
                "{} {}",
                v[rng.random_range(30..600)],
                v[rng.random_range(30..600)]
            )),
            // A phrase and, for `phrase+word`, another word of the same document.
            "phrase" | "phrase+word" => {
                let text = corpus.document(rng.random_range(0..corpus.documents)).text;
                let words: Vec<&str> = text
                    .split(|c: char| !c.is_alphabetic())
                    .filter(|w| w.chars().count() >= 3)
                    .collect();
                if words.len() < 4 {
                    continue;
                }
                let length = rng.random_range(2..=3);
                let at = rng.random_range(0..words.len() - length);
                let phrase = words[at..at + length].join(" ");
                if class == "phrase" {
                    plain(format!("\"{phrase}\""))
                } else {
                    let other = words[rng.random_range(0..words.len())];
                    plain(format!("\"{phrase}\" {other}"))
                }
            }
            "filtered" => Query {
                q: v[rng.random_range(0..600)].clone(),
                procedure: Some(
                    office_procedures[rng.random_range(0..office_procedures.len())]
                        .code
                        .clone(),
                ),
                year: Some(2019 + rng.random_range(0..8)),
            },
            // Browsing without words: a procedure and a year, or a procedure alone.
            _ => Query {
                q: String::new(),
                procedure: Some(
                    office_procedures[rng.random_range(0..office_procedures.len())]
                        .code
                        .clone(),
                ),
                year: rng.random_bool(0.8).then(|| 2019 + rng.random_range(0..8)),
            },
        };
        let key = (q.q.clone(), q.procedure.clone(), q.year);
        if !asked.contains(&key) && seen.insert(key) {
            out.push(q);
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    let corpus = Arc::new(Corpus::new(settings.seed, settings.documents, CATALOGUE));
    println!(
        "corpus: seed {}, {} documents in {} dossiers, {} citizens, {} professionals, {} words of vocabulary",
        settings.seed,
        corpus.documents,
        corpus.dossiers.len(),
        corpus.citizens,
        corpus.professionals,
        corpus.vocabulary.len()
    );
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = settings
        .keep
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let marker = dir.join("bench-corpus.json");
    let signature = format!(
        "{{\"seed\":{},\"documents\":{}}}",
        settings.seed, settings.documents
    );
    let reuse = std::fs::read_to_string(&marker).is_ok_and(|m| m == signature);

    let (roles, text_bytes) = if reuse {
        println!("reusing the corpus loaded in {}", dir.display());
        let saved: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("bench-roles.json")).expect("roles"),
        )
        .expect("roles json");
        (
            roles_from(&saved),
            saved["text_bytes"].as_u64().unwrap_or(0),
        )
    } else {
        if dir.exists() && settings.keep.is_some() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let started = Instant::now();
        let (roles, text_bytes) = load_corpus(&corpus, &dir).await;
        println!(
            "loaded into the data directory in {:.1} s ({:.1} MiB of text)",
            started.elapsed().as_secs_f64(),
            text_bytes as f64 / 1048576.0
        );
        std::fs::write(
            dir.join("bench-roles.json"),
            roles_json(&roles, text_bytes).to_string(),
        )
        .expect("roles");
        (roles, text_bytes)
    };

    // Rebuild the index with the release binary.
    let started = Instant::now();
    let out = server::cli(&dir, &["reindex"]);
    let reindex = started.elapsed();
    std::fs::write(&marker, &signature).expect("marker");
    let index_bytes = dir_size(&dir.join("index"));
    // A kept corpus grows by the documents earlier runs' ingest phases added: their text is
    // counted at the corpus's average size.
    let indexed = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["documents"].as_u64())
        .unwrap_or(corpus.documents as u64);
    let indexed_text = text_bytes as f64 * indexed as f64 / corpus.documents.max(1) as f64;
    println!(
        "reindex: {indexed} documents in {:.1} s ({:.0} docs/s); index {:.1} MiB = {:.1}% of the text ({out})",
        reindex.as_secs_f64(),
        indexed as f64 / reindex.as_secs_f64(),
        index_bytes as f64 / 1048576.0,
        index_bytes as f64 / indexed_text.max(1.0) * 100.0,
    );

    // Start the server over the full index.
    let server = Server::start(&dir, &[]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let ready = wait_ready(&client, &server.base).await;
    println!(
        "server start: listening after {:.0} ms, first search answered after {:.0} ms",
        server.started_in.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0
    );

    let mut sets = BTreeMap::new();
    for class in CLASSES {
        sets.insert(class, queries(&corpus, class, &roles.office, 50));
    }
    // Beside the tokens, so that any cell can be replayed by hand against the same server.
    let replay: BTreeMap<&str, Vec<Value>> = sets
        .iter()
        .map(|(class, set)| {
            let set = set
                .iter()
                .map(|q| serde_json::json!({ "q": q.q, "procedure": q.procedure, "year": q.year }))
                .collect();
            (*class, set)
        })
        .collect();
    std::fs::write(
        dir.join("bench-queries.json"),
        serde_json::to_string_pretty(&replay).expect("queries"),
    )
    .expect("queries");

    // One client: latency per role and class, each cell's queries asked once first.
    println!("\nfascicolo, one client over HTTP (top 10, exact total, 4 facets, snippets), ms:");
    println!("| role | class | n | hits (median) | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|");
    let sampler = Sampler::start(server.pid());
    let mut ours: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for ((role, class), (times, totals)) in
        warm_cells(&client, &server.base, &roles, &sets, &settings).await
    {
        row(role, class, &times, totals, 2);
        ours.insert((role, class), times);
    }
    let all: Vec<f64> = sorted(ours.values().flatten().copied().collect());
    println!(
        "all roles and classes: n {}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );

    // The stream of distinct queries: per role and class, queries nobody asked before (each
    // role its own), so nothing kept serves them; beside the warm cells.
    println!(
        "\nfascicolo, one client, warm cells (a set of queries replayed) beside a stream of distinct queries, ms:"
    );
    println!(
        "| role | class | warm p50 | warm p99 | distinct n | hits (median) | distinct p50 | distinct p99 | distinct max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let streams = distinct_cells(&client, &server.base, &roles, &corpus, &settings, 0).await;
    let mut distinct_all = Vec::new();
    for ((role, class), (times, totals)) in &streams {
        let warm = &ours[&(*role, *class)];
        println!(
            "| {role} | {class} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            percentile(warm, 50.0),
            percentile(warm, 99.0),
            times.len(),
            percentile(totals, 50.0),
            percentile(times, 50.0),
            percentile(times, 99.0),
            percentile(times, 100.0)
        );
        distinct_all.extend(times.iter().copied());
    }
    let distinct_all = sorted(distinct_all);
    println!(
        "distinct stream, all roles and classes: {}",
        spread(&distinct_all)
    );

    phrase_floor(&dir, &corpus, &roles, &settings);

    // Concurrent clients: throughput over the whole mix.
    let (count, elapsed, latencies) =
        concurrent(&client, &server.base, &roles, &sets, &settings).await;
    let latencies = sorted(latencies);
    let (peak_anon, steady_anon, peak_rss) = sampler.finish();
    println!(
        "\n{} concurrent clients: {count} searches in {:.1} s = {:.0} searches/s (p50 {:.2} ms, p99 {:.2} ms)",
        settings.clients,
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    println!(
        "server memory under search load: anonymous resident {steady_anon:.0} MiB steady, {peak_anon:.0} MiB peak; \
         RSS with the mapped index {peak_rss:.0} MiB peak"
    );

    // The peer.
    if let Some(url) = &settings.postgres {
        match peer::run(url, &corpus, &roles, &sets, &settings).await {
            Ok(theirs) => compare(&ours, &theirs),
            Err(e) => println!("\nPostgreSQL peer skipped: {e}"),
        }
    }

    // The pages, beside the API.
    let staff = &roles.tokens["staff"];
    let staff_cookie = pages::session_for(&client, &server.base, &dir, staff).await;
    let citizen_cookie =
        pages::session_for(&client, &server.base, &dir, &roles.tokens["citizen"]).await;
    let classes: BTreeMap<&str, Vec<pages::Params>> = sets
        .iter()
        .map(|(class, set)| (*class, set.iter().map(params_of).collect()))
        .collect();
    pages::search_page_against_api(
        &client,
        &server.base,
        staff,
        &staff_cookie,
        &classes,
        if settings.quick { 1 } else { 4 },
    )
    .await;
    let first: Value = client
        .get(format!("{}/v1/search", server.base))
        .bearer_auth(staff)
        .query(&params_of(&sets["common"][0]))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let (dossier, document) = (
        first["hits"][0]["dossier_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        first["hits"][0]["document_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let common = &sets["common"][0].q;
    let anonymous = String::new();
    pages::page_weights(
        &client,
        &server.base,
        &[
            ("home", "/".to_owned(), anonymous.clone()),
            ("catalogue", "/servizi".to_owned(), anonymous.clone()),
            (
                "procedure",
                "/servizi/permesso-di-costruire".to_owned(),
                anonymous.clone(),
            ),
            ("sign-in", "/accedi".to_owned(), anonymous),
            (
                "my dossiers (citizen)",
                "/pratiche".to_owned(),
                citizen_cookie,
            ),
            (
                "office queue",
                "/ufficio/coda".to_owned(),
                staff_cookie.clone(),
            ),
            (
                "search, 10 hits",
                format!("/ufficio/cerca?q={common}"),
                staff_cookie.clone(),
            ),
            (
                "dossier (office)",
                format!("/pratiche/{dossier}"),
                staff_cookie.clone(),
            ),
            (
                "document",
                format!("/documenti/{document}"),
                staff_cookie.clone(),
            ),
            (
                "statistics",
                "/ufficio/statistiche".to_owned(),
                staff_cookie,
            ),
        ],
    )
    .await;

    // This build against each other arm, one server per arm and round.
    let server = if settings.ab.is_empty() {
        server
    } else {
        drop(server);
        for path in &settings.ab {
            ab(&client, &dir, &roles, &sets, &corpus, &settings, path).await;
        }
        let server = Server::start(&dir, &[]);
        wait_ready(&client, &server.base).await;
        server
    };

    // Ingest last: it adds documents to the corpus.
    ingest(&client, &server, &roles, &corpus, &settings).await;
}

/// What tantivy alone costs for the broad callers' new phrases, the cells whose p99 is over
/// its target: the same stream of distinct phrases staff and the auditor were just asked,
/// answered in-process by tantivy's own parts over the same index, on every core, the exact
/// count and the ten best by relevance, with staff's office as an ordinary clause (a lower
/// bound of staff's permission). No HTTP, facets, snippets, audit or kept permission: the
/// floor of those cells with tantivy's phrase scorer, p50 / p99 / max.
fn phrase_floor(dir: &Path, corpus: &Corpus, roles: &Roles, settings: &Settings) {
    use tantivy::collector::{Count, TopDocs};
    use tantivy::query::TermQuery;
    use tantivy::query::{BooleanQuery, ConstScoreQuery, EnableScoring, Occur, QueryParser};
    let index = tantivy::Index::open_in_dir(dir.join("index")).expect("the index");
    index.tokenizers().register(
        fascicolo::index::ITALIAN,
        fascicolo::index::italian_analyzer(),
    );
    let reader = index
        .reader_builder()
        .reload_policy(tantivy::ReloadPolicy::Manual)
        .try_into()
        .expect("a reader");
    let searcher: tantivy::Searcher = reader.searcher();
    let field = |name| index.schema().get_field(name).expect("a field");
    let (body, office) = (field("body"), field("office"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let executor = tantivy::Executor::multi_thread(cores, "floor-").expect("threads");
    let mut parser = QueryParser::for_index(&index, vec![body]);
    parser.set_conjunction_by_default();
    println!(
        "\ntantivy alone, in-process, the same new phrases (count + top 10 by relevance), ms:"
    );
    for (r, role) in ROLES
        .iter()
        .enumerate()
        .filter(|(_, r)| ["staff", "auditor"].contains(r))
    {
        // The stream `distinct_cells` asked this role in round 0.
        let stream = distinct_queries(
            corpus,
            "phrase",
            &roles.office,
            settings.per_class,
            stream_seed(settings.seed, 0, r),
        );
        let mut times = Vec::new();
        for q in &stream {
            let phrase = parser
                .parse_query(&q.q.replace(['\'', '’', '‘'], " "))
                .expect("a phrase");
            let query: Box<dyn tantivy::query::Query> = if *role == "staff" {
                let term = tantivy::Term::from_field_text(office, &roles.office);
                let office = TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, phrase),
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(Box::new(office), 0.0)),
                    ),
                ]))
            } else {
                phrase
            };
            let t = Instant::now();
            searcher
                .search_with_executor(
                    query.as_ref(),
                    &(Count, TopDocs::with_limit(10).order_by_score()),
                    &executor,
                    EnableScoring::enabled_from_searcher(&searcher),
                )
                .expect("a search");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let times = sorted(times);
        println!("{role} phrase: {}", spread(&times));
    }
}

/// Latencies (sorted) and totals (sorted) of a cell.
type Cell = (Vec<f64>, Vec<f64>);

/// How many, p50, p99 and the slowest of sorted latencies (ms).
fn spread(times: &[f64]) -> String {
    format!(
        "n {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        percentile(times, 50.0),
        percentile(times, 99.0),
        percentile(times, 100.0)
    )
}

/// The seed of the distinct stream of round `round` for the role numbered `role`.
fn stream_seed(seed: u64, round: u64, role: usize) -> u64 {
    seed.wrapping_add(round * 104_729 + role as u64 * 7_919)
}

/// One client, per role and class: `per_class` queries of a stream where none repeats (each
/// role its own, `round` choosing another stream), timed.
async fn distinct_cells(
    client: &reqwest::Client,
    base: &str,
    roles: &Roles,
    corpus: &Corpus,
    settings: &Settings,
    round: u64,
) -> BTreeMap<(&'static str, &'static str), Cell> {
    let mut cells = BTreeMap::new();
    for (r, role) in ROLES.iter().enumerate() {
        for class in CLASSES {
            let stream = distinct_queries(
                corpus,
                class,
                &roles.office,
                settings.per_class,
                stream_seed(settings.seed, round, r),
            );
            cells.insert(
                (*role, class),
                timed(client, base, &roles.tokens[*role], stream.iter()).await,
            );
        }
    }
    cells
}

/// One client, per role and class: the cell's queries asked once, then replayed `per_class`
/// times, timed.
async fn warm_cells(
    client: &reqwest::Client,
    base: &str,
    roles: &Roles,
    sets: &BTreeMap<&'static str, Vec<Query>>,
    settings: &Settings,
) -> BTreeMap<(&'static str, &'static str), Cell> {
    let mut cells = BTreeMap::new();
    for role in ROLES {
        for class in CLASSES {
            for q in &sets[class] {
                search(client, base, &roles.tokens[role], q).await;
            }
            let queries = (0..settings.per_class).map(|i| &sets[class][i % sets[class].len()]);
            cells.insert(
                (role, class),
                timed(client, base, &roles.tokens[role], queries).await,
            );
        }
    }
    cells
}

/// Asks `queries` one after the other as `token`, for at most a minute: the latencies and the
/// totals, each sorted.
async fn timed(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    queries: impl Iterator<Item = &Query>,
) -> Cell {
    let (mut times, mut totals) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    for q in queries {
        if Instant::now() > deadline {
            break;
        }
        let t = Instant::now();
        let total = search(client, base, token, q).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        totals.push(total as f64);
    }
    (sorted(times), sorted(totals))
}

/// The server's limits, each set to 0, which turns it off: the other arm of the `limits` A/B.
const LIMITS_OFF: [(&str, &str); 8] = [
    ("FASCICOLO_MAX_CONNECTIONS", "0"),
    ("FASCICOLO_HEADER_TIMEOUT_SECONDS", "0"),
    ("FASCICOLO_BODY_IDLE_SECONDS", "0"),
    ("FASCICOLO_BODY_MIN_RATE", "0"),
    ("FASCICOLO_RATE_ANONYMOUS", "0"),
    ("FASCICOLO_RATE_SEARCH", "0"),
    ("FASCICOLO_RATE_UPLOAD", "0"),
    ("FASCICOLO_SEARCH_CONCURRENCY", "0"),
];

/// An A/B of another build of the server (`binary:<path>`), or of the server's limits turned
/// off (`limits`; the search time budget stays, a clock read between segments), against the
/// engine as built: each round
/// starts a server for each arm in turn, the order alternating, and measures the warm cells, a
/// stream of distinct queries (the same for both arms of a round, a new one each round) and the
/// throughput of eight clients. Prints, per cell, both arms' p50 and p99 over
/// all rounds and what this build gains (the other arm's time over ours, minus one).
async fn ab(
    client: &reqwest::Client,
    dir: &Path,
    roles: &Roles,
    sets: &BTreeMap<&'static str, Vec<Query>>,
    corpus: &Corpus,
    settings: &Settings,
    path: &str,
) {
    type Pooled = BTreeMap<(&'static str, &'static str), Vec<f64>>;
    // `binary:<path>@<data dir>`: the other build on its own copy of the corpus, with its tokens.
    let other = path
        .strip_prefix("binary:")
        .map(|other| match other.split_once('@') {
            Some((binary, dir)) => {
                let dir = PathBuf::from(dir);
                let saved: Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.join("bench-roles.json"))
                        .expect("the other roles"),
                )
                .expect("roles json");
                (PathBuf::from(binary), dir, roles_from(&saved))
            }
            None => (PathBuf::from(other), dir.to_owned(), roles.clone()),
        });
    // [ours, other]
    let mut warm: [Pooled; 2] = Default::default();
    let mut distinct: [Pooled; 2] = Default::default();
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut loaded: [Vec<f64>; 2] = Default::default();
    for round in 0..settings.ab_rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for arm in order {
            // `binary:<path>`: the other arm is another build of the server, as it runs.
            let (server, roles) = match (arm, &other) {
                (0, _) => (Server::start(dir, &[]), roles),
                (_, Some((binary, dir, roles))) => (Server::start_binary(binary, dir, &[]), roles),
                (_, None) => (
                    Server::start(dir, &LIMITS_OFF.map(|(k, v)| (k, v.to_owned()))),
                    roles,
                ),
            };
            wait_ready(client, &server.base).await;
            for (cell, (times, _)) in warm_cells(client, &server.base, roles, sets, settings).await
            {
                warm[arm].entry(cell).or_default().extend(times);
            }
            let streams = distinct_cells(
                client,
                &server.base,
                roles,
                corpus,
                settings,
                round as u64 + 1,
            )
            .await;
            for (cell, (times, _)) in streams {
                distinct[arm].entry(cell).or_default().extend(times);
            }
            let (count, elapsed, latencies) =
                concurrent(client, &server.base, roles, sets, settings).await;
            rates[arm].push(count as f64 / elapsed.as_secs_f64());
            loaded[arm].extend(latencies);
        }
    }
    println!(
        "\nA/B of {path:?} (ours) against the other arm, {} rounds alternated, one client, \
         ms (gain: the other arm's time over ours, minus one):",
        settings.ab_rounds
    );
    println!(
        "| role | class | warm p50 ours / other | gain | warm p99 ours / other | distinct p50 ours / other | gain | distinct p99 ours / other | gain |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let gain = |ours: f64, other: f64| (other / ours - 1.0) * 100.0;
    for cell in warm[0].keys() {
        let at = |pooled: &Pooled, p: f64| percentile(&sorted(pooled[cell].clone()), p);
        let (w50, p50) = (at(&warm[0], 50.0), at(&warm[1], 50.0));
        let (w99, p99) = (at(&warm[0], 99.0), at(&warm[1], 99.0));
        let (d50, q50) = (at(&distinct[0], 50.0), at(&distinct[1], 50.0));
        let (d99, q99) = (at(&distinct[0], 99.0), at(&distinct[1], 99.0));
        println!(
            "| {} | {} | {w50:.2} / {p50:.2} | {:+.0} % | {w99:.2} / {p99:.2} | {d50:.2} / {q50:.2} | {:+.0} % | {d99:.2} / {q99:.2} | {:+.0} % |",
            cell.0,
            cell.1,
            gain(w50, p50),
            gain(d50, q50),
            gain(d99, q99)
        );
    }
    // All cells pooled: the p50 and p99 of every search each arm answered one client at a time.
    for (name, pooled) in [("warm", &warm), ("distinct", &distinct)] {
        let [ours, other] =
            [0, 1].map(|arm| sorted(pooled[arm].values().flatten().copied().collect()));
        println!(
            "all cells, {name}: p50 {:.2} / {:.2} ms, p99 {:.2} / {:.2} ms",
            percentile(&ours, 50.0),
            percentile(&other, 50.0),
            percentile(&ours, 99.0),
            percentile(&other, 99.0)
        );
    }
    let (ours, other) = (sorted(rates[0].clone()), sorted(rates[1].clone()));
    let [ours_loaded, other_loaded] = loaded.map(sorted);
    println!(
        "{} clients, searches/s per round: ours {:?}, other {:?}; medians {:.0} / {:.0}; \
         p50 {:.2} / {:.2} ms, p99 {:.2} / {:.2} ms",
        settings.clients,
        ours.iter().map(|r| r.round()).collect::<Vec<_>>(),
        other.iter().map(|r| r.round()).collect::<Vec<_>>(),
        percentile(&ours, 50.0),
        percentile(&other, 50.0),
        percentile(&ours_loaded, 50.0),
        percentile(&other_loaded, 50.0),
        percentile(&ours_loaded, 99.0),
        percentile(&other_loaded, 99.0)
    );
}

/// One line of a latency table: queries, median hits, p50, p90, p99 and max of `times`
/// (sorted), with `decimals` digits.
fn row(role: &str, class: &str, times: &[f64], totals: Vec<f64>, decimals: usize) {
    let totals = sorted(totals);
    let p = |q| percentile(times, q);
    println!(
        "| {role} | {class} | {} | {:.0} | {:.d$} | {:.d$} | {:.d$} | {:.d$} |",
        times.len(),
        percentile(&totals, 50.0),
        p(50.0),
        p(90.0),
        p(99.0),
        p(100.0),
        d = decimals
    );
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Runs one search; returns the total.
/// A query's HTTP parameters.
fn params_of(q: &Query) -> Vec<(&'static str, String)> {
    let mut params: Vec<(&str, String)> = vec![("q", q.q.clone())];
    if let Some(p) = &q.procedure {
        params.push(("procedure", p.clone()));
    }
    if let Some(y) = q.year {
        params.push(("year", y.to_string()));
    }
    params
}

async fn search(client: &reqwest::Client, base: &str, token: &str, q: &Query) -> u64 {
    let params = params_of(q);
    let r = client
        .get(format!("{base}/v1/search"))
        .bearer_auth(token)
        .query(&params)
        .send()
        .await
        .expect("search");
    let status = r.status();
    let body: Value = r.json().await.expect("search json");
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().expect("total")
}

async fn concurrent(
    client: &reqwest::Client,
    base: &str,
    roles: &Roles,
    sets: &BTreeMap<&'static str, Vec<Query>>,
    settings: &Settings,
) -> (usize, Duration, Vec<f64>) {
    let mix: Arc<Vec<(String, Query)>> = Arc::new(
        ROLES
            .iter()
            .flat_map(|role| {
                CLASSES.iter().flat_map(move |class| {
                    sets[class]
                        .iter()
                        .take(10)
                        .map(move |q| (roles.tokens[role].clone(), q.clone()))
                })
            })
            .collect(),
    );
    let started = Instant::now();
    let until = started + settings.concurrent_for;
    let mut tasks = Vec::new();
    for c in 0..settings.clients {
        let (client, base, mix) = (client.clone(), base.to_owned(), mix.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut i = c * 7;
            while Instant::now() < until && times.len() < 200_000 {
                let (token, q) = &mix[i % mix.len()];
                let t = Instant::now();
                search(&client, &base, token, q).await;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    (all.len(), started.elapsed(), all)
}

fn compare(
    ours: &BTreeMap<(&str, &str), Vec<f64>>,
    theirs: &BTreeMap<(&'static str, &'static str), Vec<f64>>,
) {
    println!(
        "\nfascicolo over HTTP against PostgreSQL full-text search, per role (all classes), ms:"
    );
    println!(
        "| role | fascicolo p50 | fascicolo p99 | PostgreSQL p50 | PostgreSQL p99 | ratio p50 | ratio p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut all_ours = Vec::new();
    let mut all_theirs = Vec::new();
    for role in ROLES {
        let o = sorted(
            ours.iter()
                .filter(|((r, _), _)| *r == role)
                .flat_map(|(_, v)| v.iter().copied())
                .collect(),
        );
        let t = sorted(
            theirs
                .iter()
                .filter(|((r, _), _)| *r == role)
                .flat_map(|(_, v)| v.iter().copied())
                .collect(),
        );
        all_ours.extend(o.iter().copied());
        all_theirs.extend(t.iter().copied());
        ratio_row(role, &o, &t);
    }
    ratio_row("all roles", &sorted(all_ours), &sorted(all_theirs));
}

/// One row of the side-by-side table: p50 and p99 of ours and theirs (sorted), and the ratios.
fn ratio_row(label: &str, ours: &[f64], theirs: &[f64]) {
    let (o50, o99) = (percentile(ours, 50.0), percentile(ours, 99.0));
    let (t50, t99) = (percentile(theirs, 50.0), percentile(theirs, 99.0));
    println!(
        "| {label} | {o50:.2} | {o99:.2} | {t50:.1} | {t99:.1} | {:.0}x | {:.0}x |",
        t50 / o50,
        t99 / o99
    );
}

fn roles_json(roles: &Roles, text_bytes: u64) -> Value {
    serde_json::json!({
        "tokens": roles.tokens,
        "citizen": roles.citizen,
        "professional": roles.professional,
        "office": roles.office,
        "text_bytes": text_bytes,
    })
}

fn roles_from(v: &Value) -> Roles {
    let mut tokens = BTreeMap::new();
    for role in ROLES {
        tokens.insert(role, v["tokens"][role].as_str().expect("token").to_owned());
    }
    Roles {
        tokens,
        citizen: v["citizen"].as_u64().expect("citizen") as u32,
        professional: v["professional"].as_u64().expect("professional") as u32,
        office: v["office"].as_str().expect("office").to_owned(),
    }
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Deterministic UUIDv7 text for entity `n` of kind `kind`, at `ms`.
fn uuid_v7(ms: i64, kind: u8, n: usize) -> String {
    let mut random = [0u8; 10];
    random[0] = kind;
    random[2..10].copy_from_slice(&(n as u64).to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(ms as u64, &random)
        .into_uuid()
        .to_string()
}

fn dossier_id(corpus: &Corpus, d: usize) -> String {
    uuid_v7(corpus.dossiers[d].created_ms, 1, d)
}

fn document_id(doc: &corpus::Document) -> String {
    uuid_v7(doc.created_ms, 2, doc.index)
}

/// Loads the corpus into `dir` on the embedded defaults; returns the roles and the bytes of
/// text stored.
async fn load_corpus(corpus: &Arc<Corpus>, dir: &Path) -> (Roles, u64) {
    let mut config = Config::embedded(dir);
    config.extractor = Some(env!("CARGO_BIN_EXE_fascicolo").into());
    let services = Services::open(config).await.expect("services");
    let db = services.db.clone();
    let loader = fascicolo::users::system_user(&services, "bench-loader")
        .await
        .expect("system user")
        .to_string();

    // Who the queries run as: a citizen with a few dossiers, the busiest professional, the
    // staff of the busiest office, an auditor.
    let applicants = corpus.applicants();
    let citizen = applicants
        .iter()
        .find(|(_, n)| **n >= 3)
        .or_else(|| applicants.iter().next())
        .map(|(c, _)| *c)
        .expect("an applicant");
    let professional = corpus
        .delegations_per_professional()
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| *p)
        .unwrap_or(0);
    let mut per_office = BTreeMap::<&str, usize>::new();
    for d in &corpus.dossiers {
        *per_office
            .entry(corpus.procedures[d.procedure].office.as_str())
            .or_default() += d.documents.len();
    }
    let office = per_office
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(o, _)| (*o).to_owned())
        .expect("an office");
    let mut tokens = BTreeMap::new();
    for role in ROLES {
        let cf = match role {
            "citizen" => Some(corpus::codice_fiscale(citizen)),
            "professional" => Some(corpus::professional_cf(professional)),
            _ => None,
        };
        let offices = if role == "staff" {
            vec![office.clone()]
        } else {
            vec![]
        };
        let user = fascicolo::users::add_user(
            &services,
            role.parse().expect("role"),
            &format!("Bench {role}"),
            cf.as_deref(),
            &offices,
        )
        .await
        .expect("user");
        tokens.insert(role, user.token);
    }

    // Dossiers, delegations, and the numbering after them.
    for chunk in corpus.dossiers.chunks(1000) {
        let mut tx = db.begin_write().await.expect("tx");
        let mut sql = fascicolo::db::Sql::new(
            "insert into dossier (id, tenant, year, seq, number, procedure_code, office_code, \
             applicant_cf, subject, status, channel, created_by, created_at, updated_at) values ",
        );
        for (i, d) in chunk.iter().enumerate() {
            let p = &corpus.procedures[d.procedure];
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind(dossier_id(corpus, d.index)).push(", ");
            sql.bind(TENANT.to_owned()).push(", ");
            sql.bind(d.year).push(", ");
            sql.bind(d.seq).push(", ");
            sql.bind(corpus.number(d.index)).push(", ");
            sql.bind(p.code.clone()).push(", ");
            sql.bind(p.office.clone()).push(", ");
            sql.bind(corpus::codice_fiscale(d.applicant)).push(", ");
            sql.bind(d.subject.clone()).push(", ");
            sql.bind(d.status.to_owned()).push(", ");
            sql.bind(d.channel.to_owned()).push(", ");
            sql.bind(loader.clone()).push(", ");
            sql.bind(d.created_ms).push(", ");
            sql.bind(d.created_ms).push(")");
        }
        sql.query().execute(&mut *tx).await.expect("dossiers");
        let delegated: Vec<&corpus::Dossier> =
            chunk.iter().filter(|d| !d.delegates.is_empty()).collect();
        if !delegated.is_empty() {
            let mut sql = fascicolo::db::Sql::new(
                "insert into delegation (dossier_id, professional_cf, granted_by, created_at, \
                 valid_until, revoked_at) values ",
            );
            let mut first = true;
            for d in delegated {
                for (p, state) in &d.delegates {
                    sql.push(if first { "(" } else { ", (" });
                    first = false;
                    sql.bind(dossier_id(corpus, d.index)).push(", ");
                    sql.bind(corpus::professional_cf(*p)).push(", ");
                    sql.bind(loader.clone()).push(", ");
                    sql.bind(d.created_ms).push(", ");
                    sql.bind(match state {
                        Delegation::Expired => Some(d.created_ms + 86_400_000),
                        _ => None,
                    })
                    .push(", ");
                    sql.bind(match state {
                        Delegation::Revoked => Some(d.created_ms + 86_400_000),
                        _ => None,
                    })
                    .push(")");
                }
            }
            sql.query().execute(&mut *tx).await.expect("delegations");
        }
        tx.commit().await.expect("commit");
    }
    let mut last = BTreeMap::<i32, i64>::new();
    for d in &corpus.dossiers {
        let e = last.entry(d.year).or_default();
        *e = (*e).max(d.seq);
    }
    for (year, seq) in last {
        sqlx::query(
            "insert into dossier_sequence (tenant, year, last_value) values ($1, $2, $3) \
             on conflict (tenant, year) do update set last_value = excluded.last_value",
        )
        .bind(TENANT)
        .bind(year)
        .bind(seq)
        .execute(db.pool())
        .await
        .expect("sequence");
    }

    // Documents: rows, blobs and cached texts, generated on two threads.
    let text_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx_docs, mut rx_docs) = tokio::sync::mpsc::channel::<Vec<corpus::Document>>(8);
    let batch = 500;
    let producers: Vec<_> = (0..2)
        .map(|w| {
            let tx_docs = tx_docs.clone();
            let corpus_ref = corpus.clone();
            std::thread::spawn(move || {
                let mut start = w * batch;
                while start < corpus_ref.documents {
                    let end = (start + batch).min(corpus_ref.documents);
                    let docs: Vec<corpus::Document> =
                        (start..end).map(|i| corpus_ref.document(i)).collect();
                    if tx_docs.blocking_send(docs).is_err() {
                        return;
                    }
                    start += 2 * batch;
                }
            })
        })
        .collect();
    drop(tx_docs);
    let store = services.blobs.object_store().clone();
    let mut loaded = 0usize;
    while let Some(docs) = rx_docs.recv().await {
        let mut tx = db.begin_write().await.expect("tx");
        let mut writes = Vec::with_capacity(docs.len() * 2);
        // Statements of 50 rows: SQLite names parameters in time growing with their square.
        for part in docs.chunks(50) {
            let mut blobs = fascicolo::db::Sql::new(
                "insert into blob (sha256, size, media_type, created_at) values ",
            );
            let mut rows = fascicolo::db::Sql::new(
                "insert into document (id, dossier_id, title, kind, visibility, current_version, \
             created_by, created_at, updated_at, side) values ",
            );
            let mut versions = fascicolo::db::Sql::new(
                "insert into document_version (document_id, version, sha256, size, media_type, \
             filename, created_by, created_at, extraction_status, extraction_chars, created_role, \
             channel) values ",
            );
            for (i, doc) in part.iter().enumerate() {
                let sep = if i == 0 { "(" } else { ", (" };
                let bytes = Bytes::from(doc.text.clone().into_bytes());
                let hash = fascicolo::domain::ContentHash::of(&bytes);
                let hex = hash.to_hex();
                let size = bytes.len() as i64;
                text_bytes.fetch_add(size as u64, std::sync::atomic::Ordering::Relaxed);
                let id = document_id(doc);
                blobs.push(sep);
                blobs.bind(hex.clone()).push(", ");
                blobs.bind(size).push(", ");
                blobs.bind("text/plain".to_owned()).push(", ");
                blobs.bind(doc.created_ms).push(")");
                rows.push(sep);
                rows.bind(id.clone()).push(", ");
                rows.bind(dossier_id(corpus, doc.dossier)).push(", ");
                rows.bind(doc.title.clone()).push(", ");
                rows.bind(doc.kind.to_owned()).push(", ");
                rows.bind(doc.visibility.to_owned()).push(", ");
                rows.bind(1).push(", ");
                rows.bind(loader.clone()).push(", ");
                rows.bind(doc.created_ms).push(", ");
                rows.bind(doc.created_ms).push(", ");
                // Loaded as the `import` command loads: the office's, by the import channel.
                rows.bind("office".to_owned()).push(")");
                versions.push(sep);
                versions.bind(id).push(", ");
                versions.bind(1).push(", ");
                versions.bind(hex.clone()).push(", ");
                versions.bind(size).push(", ");
                versions.bind("text/plain".to_owned()).push(", ");
                versions
                    .bind(format!("documento-{}.txt", doc.index))
                    .push(", ");
                versions.bind(loader.clone()).push(", ");
                versions.bind(doc.created_ms).push(", ");
                versions.bind("done".to_owned()).push(", ");
                versions.bind(doc.text.chars().count() as i64).push(", ");
                versions.bind("admin".to_owned()).push(", ");
                versions.bind("import".to_owned()).push(")");
                let cached = serde_json::to_string(&fascicolo::extract::sandbox::Outcome::Done(
                    fascicolo::extract::Extracted {
                        pages: None,
                        text: doc.text.clone(),
                        truncated: false,
                        encoding: Some("UTF-8".to_owned()),
                        method: Some("text".to_owned()),
                        meta: None,
                        ocr_pages: Vec::new(),
                        content: None,
                    },
                ))
                .expect("cached text");
                writes.push((
                    object_store::path::Path::from(fascicolo::pipeline::text_cache_key(&hex)),
                    Bytes::from(cached),
                ));
                writes.push((object_store::path::Path::from(hash.object_key()), bytes));
            }
            blobs.push(" on conflict (sha256) do nothing");
            blobs.query().execute(&mut *tx).await.expect("blobs");
            rows.query().execute(&mut *tx).await.expect("documents");
            versions.query().execute(&mut *tx).await.expect("versions");
        }
        futures_util::stream::iter(writes)
            .map(|(path, bytes)| {
                let store = store.clone();
                async move { store.put(&path, bytes.into()).await.expect("blob") }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        tx.commit().await.expect("commit");
        loaded += docs.len();
        if loaded % 100_000 < batch {
            eprintln!("  loaded {loaded} documents");
        }
    }
    for p in producers {
        p.join().expect("generator");
    }
    let text_bytes = text_bytes.load(std::sync::atomic::Ordering::Relaxed);
    // Close the database so the reindex that follows has it to itself, checkpointed.
    services.db.pool().close().await;
    (
        Roles {
            tokens,
            citizen,
            professional,
            office,
        },
        text_bytes,
    )
}

/// Uploads documents over HTTP and waits until every one is searchable.
async fn ingest(
    client: &reqwest::Client,
    server: &Server,
    roles: &Roles,
    corpus: &Corpus,
    settings: &Settings,
) {
    let token = &roles.tokens["staff"];
    let procedure = corpus
        .procedures
        .iter()
        .find(|p| p.office == roles.office)
        .expect("a procedure of the office")
        .code
        .clone();
    println!(
        "\ningest over HTTP, upload to searchable ({} clients):",
        settings.clients
    );
    let sampler = Sampler::start(server.pid());
    let run = format!("{:x}", std::process::id());
    for (what, count, pages) in [
        ("text documents", settings.ingest_text, 0),
        ("single-page PDFs", settings.ingest_pdf, 1),
        (
            "multi-page PDFs",
            settings.ingest_multi,
            settings.multi_pages,
        ),
    ] {
        // One dossier per five documents, opened at the desk for someone outside the
        // population, so a rerun on a kept corpus measures the same roles.
        let marker = format!("zqmark{run}{pages}x");
        let mut dossiers = Vec::new();
        for _ in 0..count.div_ceil(5) {
            let applicant = corpus::codice_fiscale(corpus.citizens + 1);
            dossiers.push(
                server
                    .open_dossier(
                        client,
                        token,
                        &procedure,
                        &applicant,
                        "Pratica di prova del carico",
                    )
                    .await,
            );
        }
        let files: Vec<(String, Vec<u8>)> = (0..count)
            .map(|i| {
                let doc = corpus.document(i % corpus.documents);
                let text = format!("{marker} {}", doc.text);
                if pages == 0 {
                    (format!("{i}.txt"), text.into_bytes())
                } else {
                    let text = if pages > 1 { text.repeat(2) } else { text };
                    (format!("{i}.pdf"), corpus::pdf(&text, pages))
                }
            })
            .collect();
        let files = Arc::new(files);
        let dossiers = Arc::new(dossiers);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..settings.clients {
            let (client, base, token) = (client.clone(), server.base.clone(), token.clone());
            let (files, dossiers) = (files.clone(), dossiers.clone());
            let clients = settings.clients;
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while i < files.len() {
                    let (name, bytes) = &files[i];
                    server::upload_document(&client, &base, &token, &dossiers[i / 5], name, bytes)
                        .await;
                    i += clients;
                }
            }));
        }
        for t in tasks {
            t.await.expect("uploader");
        }
        let uploaded = started.elapsed();
        let query = Query {
            q: marker.clone(),
            procedure: None,
            year: None,
        };
        let deadline = Instant::now() + Duration::from_secs(if settings.quick { 120 } else { 600 });
        let mut found = 0;
        while Instant::now() < deadline {
            found = search(client, &server.base, token, &query).await;
            if found as usize >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let searchable = started.elapsed();
        let rate = count as f64 / searchable.as_secs_f64();
        let unit = if pages > 1 {
            format!("{:.0} pages/s ({} pages each)", rate * pages as f64, pages)
        } else {
            format!("{rate:.0} documents/s")
        };
        println!(
            "  {count} {what}: uploaded in {:.1} s, all {found} searchable after {:.1} s: {unit}",
            uploaded.as_secs_f64(),
            searchable.as_secs_f64()
        );
    }
    let (peak_anon, steady_anon, peak_rss) = sampler.finish();
    println!(
        "  server memory during ingest: anonymous resident {peak_anon:.0} MiB peak ({steady_anon:.0} median), RSS {peak_rss:.0} MiB peak"
    );
}

mod peer {
    //! PostgreSQL full-text search over the same corpus, with the same permission semantics.

    use super::*;
    use sqlx::postgres::{PgPool, PgPoolOptions};
    use sqlx::{Executor, Row};

    pub async fn run(
        url: &str,
        corpus: &Corpus,
        roles: &Roles,
        sets: &BTreeMap<&'static str, Vec<Query>>,
        settings: &Settings,
    ) -> Result<BTreeMap<(&'static str, &'static str), Vec<f64>>, String> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let kept = settings.keep.is_some();
        let name = if kept {
            format!("fascicolo_bench_{}_{}", settings.documents, settings.seed)
        } else {
            format!("fascicolo_bench_{}", uuid::Uuid::now_v7().simple())
        };
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&admin)
                .await
                .map_err(|e| e.to_string())?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&admin)
                .await
                .map_err(|e| e.to_string())?;
        }
        let peer_url = match url.rfind('/') {
            Some(i) => format!("{}/{name}", &url[..i]),
            None => return Err("unexpected PostgreSQL URL".into()),
        };
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&peer_url)
            .await
            .map_err(|e| e.to_string())?;
        let loaded: i64 = sqlx::query_scalar(
            "select count(*) from information_schema.tables where table_name = 'bench_ready'",
        )
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
        if loaded == 0 {
            let started = Instant::now();
            load(&pool, corpus).await.map_err(|e| e.to_string())?;
            println!(
                "\nPostgreSQL peer: loaded {} documents with tsvector and GIN index in {:.1} s",
                corpus.documents,
                started.elapsed().as_secs_f64()
            );
        } else {
            println!("\nPostgreSQL peer: reusing database {name}");
        }
        let size: i64 = sqlx::query_scalar(
            "select pg_total_relation_size('bench_document') + pg_total_relation_size('bench_dossier')",
        )
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
        println!(
            "PostgreSQL peer: tables and indexes {:.1} MiB",
            size as f64 / 1048576.0
        );
        // Warm the cache the way the first pass warmed ours.
        for class in CLASSES {
            if let Some(q) = sets[class].first() {
                let _ = query(&pool, roles, "staff", class, q).await;
            }
        }
        println!(
            "PostgreSQL, one client (top 10 by ts_rank_cd, exact count; faceted adds the 4 facets), ms:"
        );
        println!("| role | class | n | hits (median) | p50 | p90 | p99 | max |");
        println!("|---|---|---|---|---|---|---|---|");
        let mut out = BTreeMap::new();
        for role in ROLES {
            for class in CLASSES {
                let mut times = Vec::new();
                let mut totals = Vec::new();
                let deadline = Instant::now() + settings.pg_budget;
                for q in sets[class].iter().take(settings.pg_per_class) {
                    if Instant::now() > deadline && times.len() >= 3 {
                        break;
                    }
                    let t = Instant::now();
                    let total = query(&pool, roles, role, class, q)
                        .await
                        .map_err(|e| e.to_string())?;
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    totals.push(total as f64);
                }
                let times = sorted(times);
                row(role, class, &times, totals, 1);
                out.insert((role, class), times);
            }
        }
        pool.close().await;
        if !kept {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database {name} with (force)"
            )))
            .execute(&admin)
            .await;
        }
        Ok(out)
    }

    async fn load(pool: &PgPool, corpus: &Corpus) -> Result<(), sqlx::Error> {
        pool.execute(
            "create table bench_dossier (id uuid primary key, tenant text not null, \
             office text not null, procedure text not null, applicant_cf text not null, \
             year int not null, status text not null);
             create table bench_delegation (dossier_id uuid not null, professional_cf text not null, \
             valid_until bigint, revoked_at bigint);
             create table bench_document (id uuid primary key, dossier_id uuid not null, \
             title text not null, kind text not null, visibility text not null, \
             created_ms bigint not null, body text not null, \
             tsv tsvector generated always as \
             (setweight(to_tsvector('italian', title), 'A') || to_tsvector('italian', body)) stored);",
        )
        .await?;
        let mut conn = pool.acquire().await?;
        let mut copy = conn.copy_in_raw("copy bench_dossier from stdin").await?;
        let mut buf = String::new();
        for d in &corpus.dossiers {
            let p = &corpus.procedures[d.procedure];
            buf.push_str(&format!(
                "{}\t{TENANT}\t{}\t{}\t{}\t{}\t{}\n",
                dossier_id(corpus, d.index),
                p.office,
                p.code,
                corpus::codice_fiscale(d.applicant),
                d.year,
                d.status
            ));
            if buf.len() > 1 << 20 {
                copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            }
        }
        copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        copy.finish().await?;
        let mut copy = conn.copy_in_raw("copy bench_delegation from stdin").await?;
        for d in &corpus.dossiers {
            for (p, state) in &d.delegates {
                let lapse = (d.created_ms + 86_400_000).to_string();
                buf.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    dossier_id(corpus, d.index),
                    corpus::professional_cf(*p),
                    if *state == Delegation::Expired {
                        lapse.as_str()
                    } else {
                        "\\N"
                    },
                    if *state == Delegation::Revoked {
                        lapse.as_str()
                    } else {
                        "\\N"
                    },
                ));
            }
        }
        copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        copy.finish().await?;
        let mut copy = conn
            .copy_in_raw("copy bench_document (id, dossier_id, title, kind, visibility, created_ms, body) from stdin")
            .await?;
        for i in 0..corpus.documents {
            let doc = corpus.document(i);
            buf.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                document_id(&doc),
                dossier_id(corpus, doc.dossier),
                escape(&doc.title),
                doc.kind,
                doc.visibility,
                doc.created_ms,
                escape(&doc.text)
            ));
            if buf.len() > 4 << 20 {
                copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            }
        }
        copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        copy.finish().await?;
        drop(conn);
        pool.execute(
            "set maintenance_work_mem = '1GB';
             create index bench_document_tsv on bench_document using gin (tsv);
             create index bench_document_dossier on bench_document (dossier_id);
             create index bench_document_created on bench_document (created_ms);
             create index bench_dossier_applicant on bench_dossier (applicant_cf);
             create index bench_dossier_office on bench_dossier (office);
             create index bench_delegation_professional on bench_delegation (professional_cf);
             analyze;
             create table bench_ready ();",
        )
        .await?;
        Ok(())
    }

    fn escape(s: &str) -> String {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    }

    /// The same query as the server's: the caller's scope, the words, the filters; the top 10
    /// with the exact total, and for the faceted class the four facets.
    async fn query(
        pool: &PgPool,
        roles: &Roles,
        role: &str,
        class: &str,
        q: &Query,
    ) -> Result<i64, sqlx::Error> {
        let now = fascicolo::db::now_ms();
        let citizen = corpus::codice_fiscale(roles.citizen);
        let professional = corpus::professional_cf(roles.professional);
        let scope = match role {
            "citizen" => format!("s.applicant_cf = '{citizen}' and doc.visibility = 'public'"),
            "professional" => format!(
                "(s.applicant_cf = '{professional}' or exists (select 1 from bench_delegation g \
                 where g.dossier_id = s.id and g.professional_cf = '{professional}' \
                 and g.revoked_at is null and (g.valid_until is null or g.valid_until > {now}))) \
                 and doc.visibility = 'public'"
            ),
            "staff" => format!("s.office = '{}'", roles.office),
            _ => "true".to_owned(),
        };
        let mut filter = format!("s.tenant = '{TENANT}' and {scope}");
        if let Some(p) = &q.procedure {
            filter.push_str(&format!(" and s.procedure = '{p}'"));
        }
        if let Some(y) = q.year {
            filter.push_str(&format!(" and s.year = {y}"));
        }
        let from = "from bench_document doc join bench_dossier s on s.id = doc.dossier_id";
        let top = if q.q.is_empty() {
            format!(
                "select doc.id, count(*) over () as total {from} where {filter} \
                 order by doc.created_ms desc limit 10"
            )
        } else {
            format!(
                "select doc.id, count(*) over () as total {from}, \
                 websearch_to_tsquery('italian', $1) q where doc.tsv @@ q and {filter} \
                 order by ts_rank_cd(doc.tsv, q) desc limit 10"
            )
        };
        let mut top = sqlx::query(sqlx::AssertSqlSafe(top));
        if !q.q.is_empty() {
            top = top.bind(&q.q);
        }
        let rows = top.fetch_all(pool).await?;
        let total: i64 = rows.first().map_or(Ok(0), |r| r.try_get("total"))?;
        if class == "faceted" {
            let words = if q.q.is_empty() {
                String::new()
            } else {
                " and doc.tsv @@ websearch_to_tsquery('italian', $1)".to_owned()
            };
            let facets = format!(
                "select s.procedure, doc.kind, s.year, s.status, count(*) {from} \
                 where {filter}{words} \
                 group by grouping sets ((s.procedure), (doc.kind), (s.year), (s.status))"
            );
            let mut facets = sqlx::query(sqlx::AssertSqlSafe(facets));
            if !q.q.is_empty() {
                facets = facets.bind(&q.q);
            }
            facets.fetch_all(pool).await?;
        }
        Ok(total)
    }
}
