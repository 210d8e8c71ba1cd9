//! What the trust limits cost and what they hold, against the release server on 127.0.0.1:
//! - the public query grammar: parse time of ordinary and of the worst queries it accepts
//!   (the most words, the deepest groups), in process;
//! - the worst accepted query's search latency over HTTP beside a one-word query, as staff
//!   (the broadest permission) over a generated corpus;
//! - a flood: one client searching while rounds of concurrent anonymous 4 MiB bodies arrive;
//!   search and `/health` latency idle and under the flood, and the server's peak memory.
//!
//! `cargo bench --bench limits` (`FASCICOLO_BENCH_QUICK=1` for a smoke run). Every request
//! loop is bounded in count.

#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use fascicolo::domain::query::{MAX_DEPTH, MAX_TERMS, PublicQuery};
use serde_json::Value;

const WORDS: &[&str] = &[
    "permesso",
    "costruire",
    "relazione",
    "tecnica",
    "planimetria",
    "catastale",
    "ricevuta",
    "versamento",
    "istanza",
    "parere",
    "commissione",
    "paesaggio",
    "conformità",
    "urbanistica",
    "sopralluogo",
    "verbale",
    "scia",
    "cila",
    "dehors",
    "residenza",
    "tributi",
    "rimborso",
    "contributo",
    "asilo",
    "mensa",
    "trasporto",
    "cimitero",
    "concessione",
    "occupazione",
    "suolo",
    "pubblico",
    "ambiente",
];

fn median_and_p99(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        server::percentile(&values, 50.0),
        server::percentile(&values, 99.0),
    )
}

/// The worst queries the grammar accepts, and ordinary ones.
fn queries() -> Vec<(&'static str, String)> {
    let all_or = WORDS[..MAX_TERMS].join(" OR ");
    let nested = format!(
        "{}{}{}",
        "(".repeat(MAX_DEPTH),
        WORDS[..MAX_TERMS].join(" OR "),
        ")".repeat(MAX_DEPTH)
    );
    let phrases = WORDS[..MAX_TERMS]
        .chunks(4)
        .map(|c| format!("\"{}\"", c.join(" ")))
        .collect::<Vec<_>>()
        .join(" OR ");
    let noise: String = "body:[0 TO zzzz] field:* /re.*x/ a~2 b^9 "
        .repeat(30)
        .chars()
        .take(1000)
        .collect();
    vec![
        ("one word", "planimetria".to_owned()),
        ("three words", "relazione tecnica planimetria".to_owned()),
        ("phrase", "\"relazione tecnica\"".to_owned()),
        ("32 words OR", all_or),
        ("32 words OR, 4 deep", nested),
        ("8 phrases OR", phrases),
        ("engine syntax, 1000 chars", noise),
    ]
}

fn parse_costs(rounds: usize) {
    println!("\nparse time of the public grammar, µs (median / p99 of {rounds}):");
    println!("| query | words | median | p99 |");
    println!("|---|---|---|---|");
    for (name, q) in queries() {
        let mut times = Vec::with_capacity(rounds);
        let mut words = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let parsed = PublicQuery::parse(&q);
            let rendered = parsed.as_ref().map(PublicQuery::to_engine);
            times.push(t.elapsed().as_secs_f64() * 1e6);
            words = parsed.as_ref().map(|p| p.words().len()).unwrap_or(0);
            let _ = std::hint::black_box(rendered);
        }
        let (p50, p99) = median_and_p99(times);
        println!("| {name} | {words} | {p50:.1} | {p99:.1} |");
    }
}

/// A text of about 120 words drawn from `WORDS` and filler, deterministic in `seed`.
fn text(seed: u64) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    for i in 0..120 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = if i % 3 == 0 {
            WORDS[(x >> 33) as usize % WORDS.len()]
        } else {
            ["il", "della", "per", "con", "una", "sul", "nel", "che"][(x >> 40) as usize % 8]
        };
        out.push_str(w);
        out.push(' ');
    }
    out
}

async fn search(client: &reqwest::Client, base: &str, token: &str, q: &str) -> (f64, u16) {
    let t = Instant::now();
    let r = client
        .get(format!("{base}/v1/search"))
        .bearer_auth(token)
        .query(&[("q", q)])
        .send()
        .await
        .expect("search");
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (t.elapsed().as_secs_f64() * 1000.0, status)
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("FASCICOLO_BENCH_QUICK").is_ok();
    let (documents, rounds, floods) = if quick {
        (300, 50, 10)
    } else {
        (5_000, 400, 200)
    };
    parse_costs(if quick { 1_000 } else { 20_000 });

    let dir = tempfile::tempdir().expect("temp dir");
    let staff: Value = serde_json::from_str(&server::cli(
        dir.path(),
        &[
            "user", "add", "--role", "staff", "--name", "Bench", "--office", "edilizia",
        ],
    ))
    .expect("json");
    let token = staff["token"].as_str().expect("token").to_owned();
    let srv = server::Server::start(dir.path(), &[]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .expect("client");
    let started = Instant::now();
    let mut dossier = String::new();
    for i in 0..documents {
        if i % 20 == 0 {
            dossier = srv
                .open_dossier(&client, &token, "cila", "RSSMRA85T10A562S", "Bench")
                .await;
        }
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(text(i as u64).into_bytes()).file_name("t.txt"),
            )
            .text("visibility", "public");
        let r = client
            .post(format!("{}/v1/dossiers/{dossier}/documents", srv.base))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(r.status(), 201);
    }
    // Wait for the index: a phrase of the last text is found.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r: Value = client
            .get(format!("{}/v1/search", srv.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        if r["total"].as_u64() == Some(documents as u64) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "\n{documents} documents uploaded and indexed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!("\nsearch over HTTP as staff, ms ({rounds} rounds each, alternated):");
    println!("| query | status | median | p99 |");
    println!("|---|---|---|---|");
    let qs = queries();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); qs.len()];
    let mut statuses = vec![0u16; qs.len()];
    for _ in 0..rounds {
        for (i, (_, q)) in qs.iter().enumerate() {
            let (ms, status) = search(&client, &srv.base, &token, q).await;
            times[i].push(ms);
            statuses[i] = status;
        }
    }
    for (i, (name, _)) in qs.iter().enumerate() {
        let (p50, p99) = median_and_p99(std::mem::take(&mut times[i]));
        println!("| {name} | {} | {p50:.2} | {p99:.2} |", statuses[i]);
    }

    // The flood.
    let idle: Vec<f64> = {
        let mut v = Vec::new();
        for i in 0..rounds {
            v.push(
                search(&client, &srv.base, &token, WORDS[i % WORDS.len()])
                    .await
                    .0,
            );
        }
        v
    };
    server::reset_peak(srv.pid());
    let before = server::memory(srv.pid());
    let body = bytes::Bytes::from(vec![b' '; 4 * 1024 * 1024]);
    let flooding = Instant::now();
    // The flood's own client: connections it sees cut after a 413 are not reused by the
    // measuring client.
    let flooder = reqwest::Client::new();
    let flood = {
        let (client, base, body) = (flooder, srv.base.clone(), body.clone());
        tokio::spawn(async move {
            let mut refused = 0usize;
            for _ in 0..floods {
                let sends = (0..48).map(|_| {
                    let (client, body) = (client.clone(), body.clone());
                    let url = format!("{base}/v1/registrations");
                    async move {
                        client
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body)
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                    }
                });
                for s in futures_util::future::join_all(sends).await {
                    if !matches!(s, Ok(200..=299)) {
                        refused += 1;
                    }
                }
            }
            refused
        })
    };
    let (mut under, mut health, mut unanswered) = (Vec::new(), Vec::new(), 0);
    let mut i = 0;
    while !flood.is_finished() && i < 10 * rounds {
        under.push(
            search(&client, &srv.base, &token, WORDS[i % WORDS.len()])
                .await
                .0,
        );
        let t = Instant::now();
        match client
            .get(format!("{}/health", srv.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => health.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => unanswered += 1,
        }
        i += 1;
    }
    let refused = flood.await.expect("flood");
    let flood_secs = flooding.elapsed().as_secs_f64();
    let after = server::memory(srv.pid());
    let (idle50, idle99) = median_and_p99(idle);
    let (under50, under99) = median_and_p99(under.clone());
    let answered = health.len();
    let (health50, health99) = median_and_p99(health);
    println!(
        "\nflood: {floods} rounds of 48 concurrent 4 MiB anonymous bodies in {flood_secs:.1} s, \
         {refused} of {} refused",
        floods * 48
    );
    println!("| | median ms | p99 ms | n |");
    println!("|---|---|---|---|");
    println!("| one-word search, idle | {idle50:.2} | {idle99:.2} | {rounds} |");
    println!(
        "| one-word search, under the flood | {under50:.2} | {under99:.2} | {} |",
        under.len()
    );
    println!(
        "| /health, under the flood | {health50:.2} | {health99:.2} | {answered} ({unanswered} unanswered) |"
    );
    println!(
        "server memory: resident {:.0} MiB before, peak {:.0} MiB during the flood",
        before.rss, after.hwm
    );
}
