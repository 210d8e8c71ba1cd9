//! The pages against the API on the load benchmark's corpus: the search page's time beside
//! `GET /v1/search` for the same queries (requests alternated, same server, same caller), and
//! the weight of each kind of page (HTML, with the CSS and JavaScript it loads; fonts apart).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use fascicolo::domain::UserId;

use super::server::percentile;

/// A browser session for the user of `token`, opened in the server's database as signing in
/// would open it (the sign-in itself is not what is measured); returns the cookie.
pub async fn session_for(client: &reqwest::Client, base: &str, dir: &Path, token: &str) -> String {
    let me: serde_json::Value = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("me json");
    let user = UserId::parse(me["id"].as_str().expect("id")).expect("user id");
    let config = fascicolo::config::Config::embedded(dir);
    let db = fascicolo::db::Db::open(&config.database_url())
        .await
        .expect("database");
    let secret = fascicolo::credentials::new_secret();
    fascicolo::db::web::open_session(
        &db,
        fascicolo::db::web::NewSession {
            id_hash: &fascicolo::access::hash_token(&secret),
            tenant: &config.tenant,
            user,
            csrf: &fascicolo::credentials::new_secret(),
            method: "benchmark",
            expires_at: fascicolo::db::now_ms() + 3_600_000,
            client: None,
        },
        &fascicolo::audit::Actor::cli(&config.tenant),
    )
    .await
    .expect("session");
    format!("fascicolo_session={secret}")
}

/// One query's parameters, as both the API and the search page take them.
pub type Params = Vec<(&'static str, String)>;

/// Times each query through the search page and through the API, alternating which goes
/// first; prints p50 and p90 of both per class and the ratio of the medians.
pub async fn search_page_against_api(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    cookie: &str,
    classes: &BTreeMap<&str, Vec<Params>>,
    rounds: usize,
) {
    println!(
        "\nthe search page against GET /v1/search, same queries as staff, one client, ms (requests alternated):"
    );
    println!("| class | n | API p50 | page p50 | API p90 | page p90 | page/API (p50) |");
    println!("|---|---|---|---|---|---|---|");
    let (mut all_api, mut all_page) = (Vec::new(), Vec::new());
    for (class, queries) in classes {
        let (mut api, mut page) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for (i, params) in queries.iter().enumerate() {
                let api_first = (round + i) % 2 == 0;
                for which in [api_first, !api_first] {
                    let started = Instant::now();
                    if which {
                        let r = client
                            .get(format!("{base}/v1/search"))
                            .bearer_auth(token)
                            .query(params)
                            .send()
                            .await
                            .expect("search");
                        assert!(r.status().is_success(), "API search {params:?}");
                        let _ = r.bytes().await.expect("body");
                        api.push(started.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        let r = client
                            .get(format!("{base}/ufficio/cerca"))
                            .header("cookie", cookie)
                            .query(params)
                            .send()
                            .await
                            .expect("page");
                        assert!(r.status().is_success(), "search page {params:?}");
                        let _ = r.bytes().await.expect("body");
                        page.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
        }
        api.sort_by(f64::total_cmp);
        page.sort_by(f64::total_cmp);
        println!(
            "| {class} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            api.len(),
            percentile(&api, 50.0),
            percentile(&page, 50.0),
            percentile(&api, 90.0),
            percentile(&page, 90.0),
            percentile(&page, 50.0) / percentile(&api, 50.0).max(f64::MIN_POSITIVE)
        );
        all_api.extend(api);
        all_page.extend(page);
    }
    all_api.sort_by(f64::total_cmp);
    all_page.sort_by(f64::total_cmp);
    println!(
        "all classes: API p50 {:.2} ms, page p50 {:.2} ms, ratio {:.2} (target: within 2)",
        percentile(&all_api, 50.0),
        percentile(&all_page, 50.0),
        percentile(&all_page, 50.0) / percentile(&all_api, 50.0).max(f64::MIN_POSITIVE)
    );
}

/// The values of `attribute` in the tags named `tag` whose text contains `marker`.
fn linked(html: &str, tag: &str, marker: &str, attribute: &str) -> Vec<String> {
    html.split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find('>')?;
            let tag_text = &rest[..end];
            if !tag_text.contains(marker) {
                return None;
            }
            let at = tag_text.find(&format!("{attribute}=\""))? + attribute.len() + 2;
            let value = &tag_text[at..];
            Some(value[..value.find('"')?].to_owned())
        })
        .collect()
}

/// Prints the weight of each page: its HTML, and the stylesheets and scripts it loads.
pub async fn page_weights(client: &reqwest::Client, base: &str, pages: &[(&str, String, String)]) {
    println!(
        "\nweight of each kind of page, KiB (HTML, and the CSS and JavaScript it loads; fonts apart; \
         gzip: as sent to a browser that accepts it, the CSS and JavaScript compressed):"
    );
    println!("| page | path | HTML | CSS | JS | total | total, gzip |");
    println!("|---|---|---|---|---|---|---|");
    // Each asset's size, and its size as sent gzip-compressed.
    let mut sizes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (name, path, cookie) in pages {
        let response = client
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let html = response.text().await.expect("html");
        let styles = linked(&html, "link", "stylesheet", "href");
        let scripts = linked(&html, "script", "src", "src");
        let mut weigh = async |urls: &[String]| {
            let (mut plain, mut gzip) = (0, 0);
            let distinct: BTreeSet<&String> = urls.iter().collect();
            for url in distinct {
                if !sizes.contains_key(url) {
                    let fetch = async |encoding: &str| {
                        client
                            .get(format!("{base}{url}"))
                            .header("accept-encoding", encoding)
                            .send()
                            .await
                            .expect("asset")
                            .bytes()
                            .await
                            .expect("asset body")
                            .len()
                    };
                    let sent = (fetch("identity").await, fetch("gzip").await);
                    sizes.insert(url.clone(), sent);
                }
                plain += sizes[url].0;
                gzip += sizes[url].1;
            }
            (plain, gzip)
        };
        let (css, css_gzip) = weigh(&styles).await;
        let (js, js_gzip) = weigh(&scripts).await;
        let kib = |b: usize| b as f64 / 1024.0;
        println!(
            "| {name} | `{}` | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            path.split('?').next().unwrap_or(path),
            kib(html.len()),
            kib(css),
            kib(js),
            kib(html.len() + css + js),
            kib(html.len() + css_gzip + js_gzip)
        );
    }
}
