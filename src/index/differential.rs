//! The whole search against plain tantivy: random queries of the public grammar (words,
//! phrases, exclusions, OR, groups), filters, sorts and pages, for callers of every shape of
//! permission (the tenant, an office, a professional's many dossiers, a citizen's few), over
//! an index of several segments with deletions and replacements. The reference runs the same
//! parsed query with the permission and the filters as ordinary clauses, `Count`, a
//! `DocSetCollector` for the facets, `TopDocs` for the page and `SnippetGenerator` for the
//! snippets. Both must give the same total, the same facet counts, the same hits in the same
//! order (ties in score or date broken by tantivy's order, the document's address) and the same
//! words marked in each snippet. The multi-core threshold is lowered so that the parallel path
//! is taken too.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Order, Term};

use super::cache::FilterKey;
use super::facets::FacetCounts;
use super::search::{Permission, SearchRequest, SortBy};
use super::{IndexedDoc, SearchIndex};

/// Words of the corpus, most frequent first (drawn with a skew, so some words are in most
/// documents and some in few).
const WORDS: &[&str] = &[
    "comune",
    "pratica",
    "domanda",
    "permesso",
    "costruire",
    "tettoia",
    "facciata",
    "parere",
    "favorevole",
    "silenzio",
    "assenso",
    "ufficio",
    "tecnico",
    "relazione",
    "planimetria",
    "catasto",
    "foglio",
    "mappale",
    "sanatoria",
    "abuso",
    "sopralluogo",
    "verbale",
    "ricevuta",
    "integrazione",
    "istanza",
    "autorizzazione",
    "paesaggio",
    "vincolo",
    "cantiere",
    "impresa",
    "sicurezza",
    "collaudo",
    "agibilità",
    "città",
    "dell'atto",
    "proroga",
    "termine",
    "ricorso",
    // A stop word: alone beside a phrase, the parser leaves a boolean query of one clause.
    "che",
];

/// See [`document`].
const LOPSIDED: &str = "edificio";

fn word(rng: &mut ChaCha8Rng) -> &'static str {
    // Squaring a uniform number skews it towards the start of the list.
    let u: f64 = rng.random();
    WORDS[((u * u) * WORDS.len() as f64) as usize % WORDS.len()]
}

fn document(rng: &mut ChaCha8Rng, i: usize) -> IndexedDoc {
    let length = rng.random_range(3..60);
    let mut text: Vec<&str> = (0..length).map(|_| word(rng)).collect();
    let office = ["edilizia", "suap", "tributi"][rng.random_range(0..3)];
    // A word in most documents but in few of one office's: counted from its bitmap, the
    // office's matches are fewer than its documents lacking it.
    if office != "suap" || rng.random_bool(0.2) {
        text.push(LOPSIDED);
    }
    IndexedDoc {
        doc_id: crate::domain::DocumentId::numbered(i as u128),
        dossier_id: crate::domain::DossierId::numbered((i / 4) as u128),
        dossier_number: format!("2026/{:06}", i / 4),
        tenant: "t".into(),
        office: office.into(),
        procedure: format!("proc{}", rng.random_range(0..6)),
        kind: ["plan", "application", "receipt", "decision"][rng.random_range(0..4)].into(),
        status: ["submitted", "started", "concluded"][rng.random_range(0..3)].into(),
        visibility: "public".into(),
        year: 2023 + rng.random_range(0..4),
        // Dates repeat, so date order has ties.
        date_ms: 1_700_000_000_000 + rng.random_range(0..500) * 86_400_000,
        title: format!("{} {}", word(rng), word(rng)),
        text: text.join(" "),
        signed: false,
        signers: Vec::new(),
    }
}

/// A query of the public grammar, rendered for the engine as the HTTP handler renders it.
fn query(rng: &mut ChaCha8Rng) -> String {
    let typed = match rng.random_range(0..8) {
        0 => String::new(),
        1 if rng.random_bool(0.2) => LOPSIDED.to_owned(),
        1 => word(rng).to_owned(),
        2 => format!("{} {}", word(rng), word(rng)),
        3 => format!("\"{} {}\"", word(rng), word(rng)),
        4 => format!("{} -{}", word(rng), word(rng)),
        5 => format!("{} OR {}", word(rng), word(rng)),
        6 => format!("({} OR {}) {}", word(rng), word(rng), word(rng)),
        _ => format!(
            "\"{} {} {}\" {}",
            word(rng),
            word(rng),
            word(rng),
            word(rng)
        ),
    };
    engine(&typed)
}

/// `typed` rendered for the engine as the HTTP handler renders it.
fn engine(typed: &str) -> String {
    match crate::domain::query::PublicQuery::parse(typed) {
        Ok(parsed) => parsed.to_engine(),
        Err(_) => String::new(),
    }
}

fn term(index: &SearchIndex, field: &str, value: &str) -> Box<dyn Query> {
    let field = index.index().schema().get_field(field).expect("field");
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

/// The callers: a name, the permission query, whether it is kept, narrow and broad.
fn permission(index: &SearchIndex, who: usize) -> (String, Box<dyn Query>, bool, bool, bool) {
    let dossiers = |ids: &mut dyn Iterator<Item = usize>| -> Box<dyn Query> {
        Box::new(BooleanQuery::new(
            ids.map(|p| {
                (
                    Occur::Should,
                    term(
                        index,
                        "dossier_id",
                        &crate::domain::DossierId::numbered(p as u128).to_string(),
                    ),
                )
            })
            .collect(),
        ))
    };
    match who {
        0 => (
            "tenant".into(),
            term(index, "tenant", "t"),
            true,
            false,
            true,
        ),
        1 => (
            "office".into(),
            term(index, "office", "suap"),
            true,
            false,
            true,
        ),
        2 => (
            "professional".into(),
            dossiers(&mut (0..1500).step_by(7)),
            true,
            false,
            false,
        ),
        _ => (
            "citizen".into(),
            dossiers(&mut [3, 150, 151, 900].into_iter()),
            false,
            true,
            false,
        ),
    }
}

/// What a search answers, as [`reference`] compares it: the total, the facets, the page's
/// document ids and the words each hit's snippet marks.
type Answer = (u64, FacetCounts, Vec<String>, Vec<String>);

/// Total, facets, page and snippets of plain tantivy, the permission and filters as ordinary
/// clauses; `None` when its parser refuses the query.
fn reference(
    index: &SearchIndex,
    request: &SearchRequest,
    permission: Box<dyn Query>,
) -> Option<Answer> {
    let searcher = index.searcher();
    let body = index.fields().body;
    let user: Option<Box<dyn Query>> = if request.q.trim().is_empty() {
        None
    } else {
        let mut parser = QueryParser::for_index(index.index(), vec![body]);
        parser.set_conjunction_by_default();
        let q = request.q.replace(['\'', '’', '‘'], " ");
        // The parser refuses a query of only stop words beside an exclusion.
        Some(parser.parse_query(&q).ok()?)
    };
    let constant = |q: Box<dyn Query>| -> Box<dyn Query> { Box::new(ConstScoreQuery::new(q, 0.0)) };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, constant(permission))];
    clauses.push((
        Occur::Must,
        user.as_ref()
            .map_or_else(|| Box::new(AllQuery) as Box<dyn Query>, |q| q.box_clone()),
    ));
    for (name, value) in request.filters.named() {
        if name != "year" {
            clauses.push((Occur::Must, constant(term(index, name, &value))));
        }
    }
    if let Some(year) = request.filters.year {
        let field = index.fields().year;
        clauses.push((
            Occur::Must,
            constant(Box::new(TermQuery::new(
                Term::from_field_u64(field, year),
                IndexRecordOption::Basic,
            ))),
        ));
    }
    let query = BooleanQuery::new(clauses);
    let total = searcher.search(&query, &Count).expect("count") as u64;
    let matched = searcher.search(&query, &DocSetCollector).expect("docs");
    let mut facets = FacetCounts::new();
    for address in &matched {
        let reader = searcher.segment_reader(address.segment_ord);
        let fast = reader.fast_fields();
        for name in ["procedure", "kind", "status"] {
            let column = fast.str(name).expect("column").expect("a string column");
            let mut value = String::new();
            for ord in column.term_ords(address.doc_id) {
                column.ord_to_str(ord, &mut value).expect("term");
                *facets
                    .entry(name.to_owned())
                    .or_default()
                    .entry(value.clone())
                    .or_default() += 1;
            }
        }
        let year = fast.u64("year").expect("year").first(address.doc_id);
        if let Some(year) = year {
            *facets
                .entry("year".to_owned())
                .or_default()
                .entry(year.to_string())
                .or_default() += 1;
        }
    }
    let sort = request.sort.unwrap_or(if user.is_some() {
        SortBy::Relevance
    } else {
        SortBy::Date
    });
    let top = TopDocs::with_limit(request.limit).and_offset(request.offset);
    let page: Vec<DocAddress> = match sort {
        SortBy::Relevance => searcher
            .search(&query, &top.order_by_score())
            .expect("top")
            .into_iter()
            .map(|(_, a)| a)
            .collect(),
        SortBy::Date => searcher
            .search(&query, &top.order_by_fast_field::<i64>("date", Order::Desc))
            .expect("top")
            .into_iter()
            .map(|(_, a)| a)
            .collect(),
    };
    let snippets = user.as_ref().map(|q| {
        let mut generator =
            SnippetGenerator::create(&searcher, q.as_ref(), body).expect("snippets");
        generator.set_max_num_chars(240);
        generator
    });
    let (mut ids, mut marks) = (Vec::new(), Vec::new());
    for address in page {
        let stored: tantivy::TantivyDocument = searcher.doc(address).expect("stored");
        let text = |field| {
            stored
                .get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        ids.push(text(index.fields().doc_id).to_owned());
        let snippet = snippets
            .as_ref()
            .map(|s| s.snippet(text(index.fields().text)));
        marks.push(snippet.map_or_else(String::new, |s| {
            let words = s.highlighted().iter().map(|r| &s.fragment()[r.clone()]);
            words.collect::<Vec<_>>().join(" ")
        }));
    }
    Some((total, facets, ids, marks))
}

/// The words a snippet marks, in order.
fn marked(snippet: &str) -> String {
    snippet
        .split("<mark>")
        .skip(1)
        .filter_map(|piece| piece.split_once("</mark>").map(|(word, _)| word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Facet counts without the values counted zero times.
fn nonzero(facets: FacetCounts) -> FacetCounts {
    facets
        .into_iter()
        .map(|(name, values)| {
            let values: BTreeMap<String, u64> =
                values.into_iter().filter(|(_, n)| *n > 0).collect();
            (name, values)
        })
        .filter(|(_, values)| !values.is_empty())
        .collect()
}

/// A number from the environment, for a longer run (`.ci/run`), or `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn the_whole_search_answers_like_plain_tantivy() {
    // `FASCICOLO_DIFFERENTIAL_SEED` and `_ROUNDS` make a longer run (`.ci/run`).
    let seed = setting("FASCICOLO_DIFFERENTIAL_SEED", 20261207);
    let rounds = setting("FASCICOLO_DIFFERENTIAL_ROUNDS", 120);
    println!("differential search test: seed {seed}, {rounds} rounds");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let index = SearchIndex::open(dir.path()).expect("index");
    // Three segments, with more matches than facets count one by one (1 024); replacements
    // and deletions.
    let mut next = 0;
    for (segment, size) in [(1, 2600), (2, 1400), (3, 300)] {
        for _ in 0..size {
            index.upsert(&document(&mut rng, next)).expect("added");
            next += 1;
        }
        for _ in 0..40 {
            let old = rng.random_range(0..next);
            if rng.random_bool(0.5) {
                index.upsert(&document(&mut rng, old)).expect("replaced");
            } else {
                index.delete(crate::domain::DocumentId::numbered(old as u128));
            }
        }
        index.commit(segment).expect("committed");
    }
    let mut compared = 0;
    let mut matched_something = 0;
    for round in 0..rounds {
        {
            // The first rounds ask every caller for the most frequent word and the lopsided
            // one, whose counts come from their bitmaps both ways (matches, or documents
            // lacking the word).
            let q = match round {
                0..4 => engine(WORDS[0]),
                4..8 => engine(LOPSIDED),
                _ => query(&mut rng),
            };
            let mut request = SearchRequest {
                q,
                limit: rng.random_range(1..25),
                offset: if rng.random_bool(0.3) {
                    rng.random_range(0..40)
                } else {
                    0
                },
                sort: match rng.random_range(0..3) {
                    0 => None,
                    1 => Some(SortBy::Relevance),
                    _ => Some(SortBy::Date),
                },
                ..SearchRequest::default()
            };
            if round < 8 {
                // Ranked and unfiltered: the searches that count a word from its bitmap.
                request.sort = None;
            } else {
                if rng.random_bool(0.25) {
                    request.filters.procedure = Some(format!("proc{}", rng.random_range(0..6)));
                }
                if rng.random_bool(0.15) {
                    request.filters.kind = Some("plan".parse().expect("a kind"));
                }
                if rng.random_bool(0.15) {
                    request.filters.year = Some(2023 + rng.random_range(0..4));
                }
            }
            let who = (round % 4) as usize;
            let (_, reference_query, ..) = permission(&index, who);
            let expected = reference(&index, &request, reference_query);
            for parallel in [false, true] {
                // The multi-core path from 1 document, or never.
                index.set_parallel_from_docs(if parallel { 1 } else { u64::MAX });
                let (name, query, kept, narrow, broad) = permission(&index, who);
                let ours = index.search(
                    &request,
                    Permission {
                        query,
                        cache_key: kept.then(|| FilterKey::of(&name)),
                        narrow,
                        broad,
                    },
                );
                let Some((total, facets, ids, marks)) = &expected else {
                    assert!(
                        matches!(ours, Err(super::IndexError::Query(_))),
                        "refused by the parser, but not by the search: {:?}",
                        request.q
                    );
                    compared += 1;
                    continue;
                };
                let ours = ours.expect("searched");
                let our_ids: Vec<String> = ours
                    .hits
                    .iter()
                    .map(|h| h.document_id.to_string())
                    .collect();
                let context = format!(
                    "{name}, parallel {parallel}: q {:?} filters {:?} sort {:?} limit {} offset {}",
                    request.q, request.filters, request.sort, request.limit, request.offset
                );
                assert_eq!(ours.total, *total, "total, {context}");
                assert_eq!(
                    nonzero(ours.facets),
                    nonzero(facets.clone()),
                    "facets, {context}"
                );
                assert_eq!(&our_ids, ids, "hits, {context}");
                // Our passage finder chooses the passage as tantivy's generator does: the same
                // words marked, in the same order (a passage may start one elision earlier:
                // ours keeps "dell'" before "atto", tantivy cuts at "atto").
                let snippets: Vec<String> = ours.hits.iter().map(|h| marked(&h.snippet)).collect();
                assert_eq!(&snippets, marks, "snippets, {context}");
                compared += 1;
            }
            if expected.is_some_and(|(total, ..)| total > 0) {
                matched_something += 1;
            }
        }
    }
    assert_eq!(compared, rounds as usize * 2);
    // The queries are not all empty answers.
    assert!(
        matched_something > rounds / 2,
        "{matched_something} of {rounds} matched"
    );
}
