//! Searching: the user's query ANDed with the caller's permission clause and the filters,
//! returning exact totals, facets and escaped snippets, all computed over the same query.

use std::ops::Bound;

use tantivy::collector::{Collector, Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, QueryParser, RangeQuery,
    TermQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, Executor, Order, Searcher, Term};

use super::facets::{FacetCollector, FacetCounts};
use super::filter::{CachedFilter, CountedTop};
use super::phrase::exact_phrases;
use super::request::Stoppable;
pub use super::request::{
    Deferred, Filters, Hit, Permission, SearchRequest, SearchResult, SortBy, Stop, stopped,
};
use super::shape::{fewest, most_matches, phrase_led, prunable, unwrapped};
use super::snippet::{Snippets, highlight, lead, snippets_for};
use super::{IndexError, SearchIndex};

/// Searches over at least this many documents run on every core, unless the query can match
/// fewer than a tenth of that many (a setting: tests lower both with
/// [`SearchIndex::set_parallel_from_docs`]).
pub(super) const PARALLEL_FROM_DOCS: u64 = 100_000;
/// A page of at least this many hits is read on every core, on an index of
/// [`PARALLEL_FROM_DOCS`] or more.
const PARALLEL_PAGE_FROM: usize = 4;

impl SearchIndex {
    /// Runs a search restricted by `permission` (from `access`), calling `disclose` with the
    /// total and the page's hits (their snippets not yet made) as soon as they are read: the
    /// audit record of what the search discloses is written while the snippets are made. Once
    /// it is called, the search answers.
    pub fn search_disclosing(
        &self,
        request: &SearchRequest,
        permission: Permission,
        disclose: &mut dyn FnMut(u64, &[Hit]),
    ) -> Result<SearchResult, IndexError> {
        let f = self.fields;
        let searcher = self.searcher();
        let user_query: Option<Box<dyn Query>> = if request.q.trim().is_empty() {
            None
        } else {
            let mut parser = QueryParser::for_index(self.index(), vec![f.body]);
            parser.set_conjunction_by_default();
            // Apostrophes split elisions ("dell'atto", "l’istanza"); the query grammar would
            // read them as quotes.
            let q = request.q.replace(['\'', '’', '‘'], " ");
            let parsed = unwrapped(
                parser
                    .parse_query(&q)
                    .map_err(|e| IndexError::Query(format!("malformed query: {e}")))?,
            );
            // Exact phrases' matches are kept per segment: not over the few documents of a
            // narrow permission, which the phrase is only asked about.
            Some(if permission.narrow {
                parsed
            } else {
                exact_phrases(
                    parsed,
                    &q,
                    f.body,
                    || self.index().tokenizers().get(super::ITALIAN),
                    (&self.caches, permission.broad),
                )
            })
        };
        let filter_terms = request.filters.terms(searcher.schema())?;
        let sort = request.sort.unwrap_or(if user_query.is_some() {
            SortBy::Relevance
        } else {
            SortBy::Date
        });
        let (narrow, broad) = (permission.narrow, permission.broad);
        let permission = match permission.cache_key {
            Some(key) => Scope::Kept(CachedFilter::new(
                key,
                permission.query,
                self.caches.clone(),
            )),
            None => Scope::Query(permission.query),
        };
        let (total, facets, page) = match permission {
            // Browsing everything a kept permission admits, newest first, is read off what is
            // kept with it instead of visiting every document.
            Scope::Kept(filter)
                if user_query.is_none()
                    && filter_terms.is_empty()
                    && request.from_ms.is_none()
                    && request.to_ms.is_none()
                    && sort == SortBy::Date =>
            {
                let (offset, limit) = (request.offset, request.limit.max(1));
                filter.browse(&searcher, offset, limit, &self.facets())?
            }
            permission => {
                let matches = Matches {
                    user_query: user_query.as_deref(),
                    filter_terms,
                    permission,
                    narrow,
                    broad,
                    sort,
                };
                self.collect(&searcher, request, matches)?
            }
        };
        let snippets = match &user_query {
            Some(q) => Some(snippets_for(&searcher, q.as_ref(), f.body)?),
            None => None,
        };
        // On a large index each hit is a block of the document store to decompress (rarely
        // one another hit of the page has already brought in): a full page is read, and its
        // snippets made, on every core.
        let parallel =
            searcher.num_docs() >= self.parallel_from_docs() && page.len() >= PARALLEL_PAGE_FROM;
        let mut hits = self.read_page(&searcher, &page, snippets, parallel, &mut |hits| {
            disclose(total, hits);
        })?;
        for (i, hit) in hits.iter_mut().enumerate() {
            hit.rank = request.offset + i + 1;
        }
        Ok(SearchResult {
            total,
            hits,
            facets,
        })
    }
}

/// The caller's permission, as built for this search.
enum Scope {
    /// Kept per segment.
    Kept(CachedFilter),
    /// Evaluated with the search.
    Query(Box<dyn Query>),
}

/// A search's clauses, before they are assembled into one query.
struct Matches<'a> {
    user_query: Option<&'a dyn Query>,
    filter_terms: Vec<Term>,
    permission: Scope,
    narrow: bool,
    broad: bool,
    sort: SortBy,
}

type Page = Vec<(f32, DocAddress)>;

/// A page of hits that are not ranked by score: each scores 0.
fn unscored<T>(hits: Vec<(T, DocAddress)>) -> Page {
    hits.into_iter().map(|(_, a)| (0.0, a)).collect()
}

impl SearchIndex {
    /// The page's documents as hits, handed to `disclose` once read, then each given its
    /// snippet; on every core when `parallel`, each thread taking a run of consecutive hits.
    fn read_page(
        &self,
        searcher: &Searcher,
        page: &[(f32, DocAddress)],
        snippets: Option<Snippets>,
        parallel: bool,
        disclose: &mut dyn FnMut(&[Hit]),
    ) -> tantivy::Result<Vec<Hit>> {
        let read = self.on_cores(parallel, page, |part| {
            part.iter()
                .map(|&(score, address)| self.hit(searcher, score, address))
                .collect()
        })?;
        let (mut hits, texts): (Vec<Hit>, Vec<String>) = read.into_iter().unzip();
        disclose(&hits);
        let snippets = self.on_cores(parallel, &texts, |part| {
            let mut snippets = snippets.clone();
            Ok(part
                .iter()
                .map(|text| match snippets.as_mut().and_then(|s| s.best(text)) {
                    Some((passage, marks)) => highlight(passage, &marks),
                    None => lead(text),
                })
                .collect())
        })?;
        for (hit, snippet) in hits.iter_mut().zip(snippets) {
            hit.snippet = snippet;
        }
        Ok(hits)
    }

    /// `part` over `items` cut in runs of consecutive items, joined in order: on every core
    /// when `parallel`, a run per thread.
    fn on_cores<T: Sync, U: Send>(
        &self,
        parallel: bool,
        items: &[T],
        part: impl Fn(&[T]) -> tantivy::Result<Vec<U>> + Sync,
    ) -> tantivy::Result<Vec<U>> {
        if !parallel || self.cores < 2 || items.len() < 2 {
            return part(items);
        }
        let per_part = items.len().div_ceil(self.cores);
        Ok(self
            .parallel
            .map(part, items.chunks(per_part))?
            .into_iter()
            .flatten()
            .collect())
    }

    /// One document of a page, its snippet not yet made, and its text.
    fn hit(
        &self,
        searcher: &Searcher,
        score: f32,
        address: DocAddress,
    ) -> tantivy::Result<(Hit, String)> {
        let f = self.fields;
        let stored: tantivy::TantivyDocument = searcher.doc(address)?;
        let text_of = |field| {
            stored
                .get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let corrupt = |what: &str| {
            tantivy::TantivyError::InternalError(format!("a stored {what} id that is not an id"))
        };
        let hit = Hit {
            document_id: crate::domain::DocumentId::parse(&text_of(f.doc_id))
                .ok_or_else(|| corrupt("document"))?,
            dossier_id: crate::domain::DossierId::parse(&text_of(f.dossier_id))
                .ok_or_else(|| corrupt("dossier"))?,
            dossier_number: text_of(f.dossier_number),
            title: text_of(f.title),
            kind: text_of(f.kind),
            rank: 0,
            score,
            snippet: String::new(),
        };
        Ok((hit, text_of(f.text)))
    }
}

impl SearchIndex {
    /// Counts facets through the segments' tables.
    fn facets(&self) -> FacetCollector<'_> {
        FacetCollector {
            caches: &self.caches,
        }
    }

    /// Counts, facets and ranks the matches of the user's query, the permission and the
    /// filters, visiting every match.
    fn collect(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        m: Matches<'_>,
    ) -> Result<(u64, FacetCounts, Page), IndexError> {
        let f = self.fields;
        // The permission and the filters select; only the user's words score.
        let filter =
            |q: Box<dyn Query>| -> Box<dyn Query> { Box::new(ConstScoreQuery::new(q, 0.0)) };
        // A large index is searched on every core, unless the permission or the rarest term
        // every match must hold (a word or a filter) leaves few documents to look at.
        let parallel = !m.narrow
            && searcher.num_docs() >= self.parallel_from_docs()
            && !{
                let mut least = match m.user_query {
                    Some(q) => most_matches(searcher, q)?,
                    None => None,
                };
                for term in &m.filter_terms {
                    least = fewest(least, searcher.doc_freq(term)?);
                }
                least.is_some_and(|n| n < self.parallel_from_docs() / 10)
            };
        // Words alone, ranked, for a caller whose permission is kept: the count and facets
        // visit every match without scoring, and the page is ranked apart, where tantivy
        // skips the blocks of postings that cannot reach it (block-max WAND; see
        // `Admitted`). Two passes cost less than one that scores every match; they
        // run one after the other over each segment (`CountedTop`).
        if let (Scope::Kept(cached), Some(q), SortBy::Relevance) =
            (&m.permission, m.user_query, m.sort)
            && m.filter_terms.is_empty()
            && request.from_ms.is_none()
            && request.to_ms.is_none()
            && prunable(q)
        {
            let facets = self.facets();
            let counted = cached.admit(q.box_clone());
            let top = TopDocs::with_limit(request.limit.max(1))
                .and_offset(request.offset)
                .order_by_score();
            let (total, facets, page) = self.run(
                searcher,
                &counted,
                &CountedTop::new(&counted, searcher, facets, top)?,
                parallel,
                request.stop.as_ref(),
            )?;
            return Ok((total as u64, facets, page));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let kept = match m.permission {
            Scope::Kept(cached) => Some(cached),
            Scope::Query(query) => {
                clauses.push((Occur::Must, filter(query)));
                None
            }
        };
        match m.user_query {
            Some(q) => clauses.push((Occur::Must, q.box_clone())),
            None => clauses.push((Occur::Must, Box::new(AllQuery))),
        }
        for term in m.filter_terms {
            clauses.push((
                Occur::Must,
                filter(Box::new(TermQuery::new(term, IndexRecordOption::Basic))),
            ));
        }
        if request.from_ms.is_some() || request.to_ms.is_some() {
            let lower = request.from_ms.map_or(Bound::Unbounded, |ms| {
                Bound::Included(Term::from_field_i64(f.date, ms))
            });
            let upper = request.to_ms.map_or(Bound::Unbounded, |ms| {
                Bound::Excluded(Term::from_field_i64(f.date, ms))
            });
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        // A lone clause goes without its boolean query, which would align it by itself first:
        // a phrase would then compare positions up to its first match in each segment, not
        // starting where the kept permission admits documents (see `Admitted`).
        let only = |mut clauses: Vec<(Occur, Box<dyn Query>)>| -> Box<dyn Query> {
            match clauses.len() {
                1 => clauses.remove(0).1,
                _ => Box::new(BooleanQuery::new(clauses)),
            }
        };
        let query: Box<dyn Query> = match kept {
            // A phrase beside other clauses, under a kept permission that is not broad: the
            // permission as the boolean query's first clause (see `phrase_led`). Under
            // `Admitted` the boolean query, which has no `scorer_danger`, would align its
            // clauses from the segment's start; a broad permission admits most documents
            // anyway, and `Admitted` reads it a bit at a time.
            Some(cached) => match (!m.broad)
                .then(|| {
                    let permission = (Occur::Must, filter(Box::new(cached.clone())));
                    let clauses = clauses.iter().map(|(o, q)| (*o, q.box_clone()));
                    phrase_led(
                        &std::iter::once(permission)
                            .chain(clauses)
                            .collect::<Vec<_>>(),
                    )
                })
                .flatten()
            {
                Some(led) if led.len() > 2 => Box::new(BooleanQuery::new(led)),
                _ => Box::new(cached.admit(only(clauses))),
            },
            None => Box::new(BooleanQuery::new(phrase_led(&clauses).unwrap_or(clauses))),
        };
        let query = query.as_ref();
        let top = TopDocs::with_limit(request.limit.max(1)).and_offset(request.offset);
        let (facets, stop) = (self.facets(), request.stop.as_ref());
        let (total, facets, page) = match m.sort {
            SortBy::Relevance => {
                let counted = (Count, facets, top.order_by_score());
                let (total, facets, hits) = self.run(searcher, query, &counted, parallel, stop)?;
                // Without words nothing is more relevant than anything else: every match
                // scores 0, however the permission was applied (a filter admitting a whole
                // segment leaves tantivy's match-all score of 1).
                let hits = match m.user_query {
                    Some(_) => hits,
                    None => unscored(hits),
                };
                (total, facets, hits)
            }
            SortBy::Date => {
                let newest = top.order_by_fast_field::<i64>("date", Order::Desc);
                let counted = (Count, facets, newest);
                let (total, facets, hits) = self.run(searcher, query, &counted, parallel, stop)?;
                (total, facets, unscored(hits))
            }
        };
        Ok((total as u64, facets, page))
    }
}

impl SearchIndex {
    /// Runs `collector` over `query`: on every core when `parallel` (a large index and a broad
    /// permission), otherwise segment by segment on the calling thread, where handing work to
    /// other threads costs more than it saves. Scoring is on only if the collector needs it.
    fn run<C: Collector>(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        collector: &C,
        parallel: bool,
        stop: Option<&Stop>,
    ) -> tantivy::Result<C::Fruit> {
        let executor = if parallel {
            &self.parallel
        } else {
            &Executor::SingleThread
        };
        // Scores are computed only for a collector that ranks by them.
        let scoring = if collector.requires_scoring() {
            EnableScoring::enabled_from_searcher(searcher)
        } else {
            EnableScoring::disabled_from_searcher(searcher)
        };
        // Checked before the first segment too: an index of none still answers in time.
        if let Some(stop) = stop {
            stop.check()?;
        }
        let stoppable = Stoppable {
            inner: collector,
            stop,
        };
        searcher.search_with_executor(query, &stoppable, executor, scoring)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::index::IndexedDoc;
    use crate::index::cache::FilterKey;
    use tantivy::query::BooleanQuery;

    impl SearchIndex {
        /// A search whose disclosure nobody records.
        pub(crate) fn search(
            &self,
            request: &SearchRequest,
            permission: Permission,
        ) -> Result<SearchResult, IndexError> {
            self.search_disclosing(request, permission, &mut |_, _| {})
        }
    }

    /// The documents of any of the dossiers numbered `ids`, as a permission query.
    fn any_dossier(index: &SearchIndex, ids: &[u128]) -> Box<dyn Query> {
        let field = index.fields().dossier_id;
        Box::new(BooleanQuery::new(
            ids.iter()
                .map(|&p| {
                    let id = crate::domain::DossierId::numbered(p).to_string();
                    let term =
                        TermQuery::new(Term::from_field_text(field, &id), IndexRecordOption::Basic);
                    (Occur::Should, Box::new(term) as Box<dyn Query>)
                })
                .collect(),
        ))
    }

    pub(crate) fn doc(i: usize, date_ms: i64) -> IndexedDoc {
        IndexedDoc {
            signed: false,
            signers: Vec::new(),
            doc_id: crate::domain::DocumentId::numbered(i as u128),
            dossier_id: crate::domain::DossierId::numbered((i / 3) as u128),
            dossier_number: format!("{i}"),
            tenant: "t".into(),
            office: ["a", "b", "c"][i % 3].into(),
            procedure: format!("proc{}", i % 7),
            kind: ["plan", "application", "receipt"][i % 5 % 3].into(),
            status: "submitted".into(),
            visibility: "public".into(),
            year: 2020 + (i % 4) as u64,
            date_ms,
            title: format!("documento {i}"),
            text: "facciata".into(),
        }
    }

    /// A kept permission (a filter per segment, admitting whole segments, parts of them or a
    /// few documents) must find and score exactly like the same permission evaluated inside
    /// the query, for every kind of query. Words alone are counted and ranked in two passes
    /// (the ranking pruned over a dense filter, leapfrogged over a sparse one); many
    /// documents here tie in score.
    #[test]
    fn kept_permissions_find_and_score_like_the_permission_inside_the_query() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        let words = [
            "facciata",
            "tettoia",
            "silenzio assenso",
            "parere favorevole",
        ];
        // Segments of thousands of documents, their words in many blocks.
        for (segment, range) in [(1, 0..2600), (2, 2600..3300)] {
            for i in range {
                let mut d = doc(i, (i % 50) as i64 * 1000);
                // Varied term frequencies and lengths, so scores differ.
                d.text = (0..1 + i % 6)
                    .map(|k| words[(i + k) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ");
                index.add(&d).expect("added");
            }
            index.commit(segment).expect("committed");
        }
        index.delete(crate::domain::DocumentId::numbered(7));
        index.commit(3).expect("committed");
        let term = |field: &str, value: &str| -> Box<dyn Query> {
            let field = index.index().schema().get_field(field).expect("field");
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let dossiers = || any_dossier(&index, &[5, 77, 150, 201]);
        let requests = [
            ("facciata", None, None),
            ("tettoia", None, Some(SortBy::Date)),
            ("facciata tettoia", None, None),
            ("\"silenzio assenso\"", None, None),
            ("tettoia", Some(2021), None),
            ("", Some(2022), None),
            ("", None, Some(SortBy::Relevance)),
            ("nessuna", None, None),
        ];
        for (name, permission) in [
            (
                "tenant",
                &(|| term("tenant", "t")) as &dyn Fn() -> Box<dyn Query>,
            ),
            ("office b", &|| term("office", "b")),
            ("four dossiers", &dossiers),
        ] {
            for ((q, year, sort), offset) in requests.iter().copied().flat_map(|r| [(r, 0), (r, 9)])
            {
                let request = SearchRequest {
                    q: q.to_owned(),
                    filters: Filters {
                        year,
                        ..Filters::default()
                    },
                    sort,
                    limit: 15,
                    offset,
                    ..SearchRequest::default()
                };
                let run = |cache_key: Option<FilterKey>| {
                    let found = index
                        .search(
                            &request,
                            Permission {
                                query: permission(),
                                cache_key,
                                narrow: false,
                                broad: true,
                            },
                        )
                        .expect("searched");
                    let hits: Vec<(crate::domain::DocumentId, f32)> = found
                        .hits
                        .into_iter()
                        .map(|h| (h.document_id, h.score))
                        .collect();
                    (found.total, found.facets, hits)
                };
                let kept = run(Some(FilterKey::of(name)));
                let inside = run(None);
                assert_eq!(
                    kept, inside,
                    "{name}: {q:?} {year:?} {sort:?} from {offset}"
                );
                if q != "nessuna" {
                    assert!(kept.0 > 0, "{name}: {q:?} finds something");
                }
            }
        }
    }

    /// Browsing (no words, no filter, newest first) with a kept permission is answered from
    /// what is kept with the permission; the same search with a date bound that admits
    /// everything visits every document. Both must give the same total, facets and pages,
    /// ties in date included, across segments and deletions.
    #[test]
    fn browsing_a_kept_permission_answers_like_visiting_every_document() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        // Three segments; dates repeat (every 97th document shares one) and some are absent
        // from later segments because they were replaced or deleted.
        for (segment, range) in [(1, 0..300), (2, 300..500), (3, 500..640)] {
            for i in range {
                index.add(&doc(i, (i % 97) as i64 * 1000)).expect("added");
            }
            index.commit(segment).expect("committed");
        }
        let term = |field: &str, value: &str| -> Box<dyn Query> {
            let field = index.index().schema().get_field(field).expect("field");
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        type Build<'a> = Box<dyn Fn() -> Box<dyn Query> + 'a>;
        let permissions: Vec<(&str, Build)> = vec![
            ("tenant", Box::new(|| term("tenant", "t"))),
            ("office a", Box::new(|| term("office", "a"))),
            (
                "three dossiers",
                Box::new(|| any_dossier(&index, &[5, 77, 150])),
            ),
        ];
        let search = |key: &str, query: Box<dyn Query>, offset, limit, visit: bool| {
            let request = SearchRequest {
                offset,
                limit,
                from_ms: visit.then_some(i64::MIN),
                ..SearchRequest::default()
            };
            let permission = Permission {
                query,
                cache_key: Some(FilterKey::of(key)),
                narrow: false,
                broad: true,
            };
            let found = index.search(&request, permission).expect("searched");
            let ids: Vec<crate::domain::DocumentId> =
                found.hits.into_iter().map(|h| h.document_id).collect();
            (found.total, found.facets, ids)
        };
        let check = |round: &str, expected_totals: [u64; 3]| {
            for ((key, query), expected) in permissions.iter().zip(expected_totals) {
                for (offset, limit) in [(0, 10), (5, 7), (0, 1000), (200, 20), (700, 5)] {
                    let browsed = search(key, query(), offset, limit, false);
                    let visited = search(key, query(), offset, limit, true);
                    assert_eq!(browsed, visited, "{round}, {key}, {offset}+{limit}");
                    assert_eq!(browsed.0, expected, "{round}, {key}");
                }
            }
        };
        check("three segments", [640, 214, 9]);
        // A replaced document moves to the newest segment with a new date; a deleted one
        // leaves. The kept counts follow the segments' deletions.
        index.upsert(&doc(3, 500_000)).expect("replaced");
        index.upsert(&doc(15, 96_000)).expect("replaced");
        index.delete(crate::domain::DocumentId::numbered(0));
        index.delete(crate::domain::DocumentId::numbered(301));
        index.delete(crate::domain::DocumentId::numbered(600));
        index.commit(4).expect("committed");
        check("after deletions", [637, 212, 9]);
        let newest = search("office a", term("office", "a"), 0, 1, false);
        assert_eq!(newest.2, [crate::domain::DocumentId::numbered(3)]);
    }

    /// A page read on every core holds the same hits, snippets and scores, in the page's
    /// order, as one read on the calling thread, for pages of every length and with or
    /// without a snippet finder.
    #[test]
    fn a_page_read_on_every_core_is_the_page_read_on_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        for i in 0..300 {
            let mut d = doc(i, i as i64 * 1000);
            d.text = format!(
                "premessa {i} {} il parere della commissione {} chiude",
                "testo ".repeat(i % 40),
                ["favorevole", "contrario", "sospeso"][i % 3]
            );
            index.add(&d).expect("added");
        }
        index.commit(1).expect("committed");
        let searcher = index.searcher();
        let query = QueryParser::for_index(index.index(), vec![index.fields.body])
            .parse_query("parere favorevole")
            .expect("query");
        let finder = || snippets_for(&searcher, query.as_ref(), index.fields.body).expect("finder");
        // Addresses out of order and across the store's blocks, as a ranking leaves them.
        let every: Page = (0..300u32)
            .rev()
            .step_by(7)
            .map(|doc| (doc as f32 / 10.0, DocAddress::new(0, doc)))
            .collect();
        assert!(index.cores >= 1);
        for len in [0, 1, 2, 3, 10, every.len()] {
            let page: Page = every[..len].to_vec();
            for snippets in [Some(finder()), None] {
                let mut disclosed = Vec::new();
                let one = index
                    .read_page(&searcher, &page, snippets.clone(), false, &mut |_| {})
                    .expect("one core");
                let all = index
                    .read_page(&searcher, &page, snippets, true, &mut |hits| {
                        disclosed = hits.iter().map(|h| h.document_id).collect();
                    })
                    .expect("every core");
                assert_eq!(one.len(), len);
                let ids: Vec<crate::domain::DocumentId> =
                    all.iter().map(|h| h.document_id).collect();
                let expected: Vec<crate::domain::DocumentId> = page
                    .iter()
                    .map(|(_, a)| crate::domain::DocumentId::numbered(u128::from(a.doc_id)))
                    .collect();
                assert_eq!(ids, expected, "page of {len}");
                assert_eq!(disclosed, expected, "disclosed, page of {len}");
                assert_eq!(
                    serde_json::to_value(&one).expect("json"),
                    serde_json::to_value(&all).expect("json"),
                    "page of {len}"
                );
            }
        }
    }

    #[test]
    fn highlights_are_marked_and_the_rest_escaped() {
        assert_eq!(
            highlight("<b>permesso</b> & altro", &[3..11, 30..31]),
            "&lt;b&gt;<mark>permesso</mark>&lt;/b&gt; &amp; altro"
        );
    }
}
