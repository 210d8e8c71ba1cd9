//! Exact phrases whose matches are kept per segment.
//!
//! A search over an office or the whole tenant (a broad permission) visits most of a phrase's
//! matches anyway. When it meets a phrase asked before and nothing is kept of it in a segment,
//! it finds all its matches there, each with how many times its document holds the phrase, and
//! keeps them ([`PhraseMatches`]); later searches, whoever makes them, read those like a word's
//! postings, and rank from them skipping blocks of matches whose best possible score cannot
//! reach the page. Other searches read what is kept, or run tantivy's `PhraseScorer`.
//!
//! Measured gain (BENCHMARKS.md, A/B at 1 M documents against `PhraseScorer`): a phrase
//! searched again is 4–10× faster at p50; a new phrase is no faster, so the matches are found
//! with tantivy's postings the way its phrase scorer finds them.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tantivy::fieldnorm::FieldNormReader;
use tantivy::index::SegmentReader;
use tantivy::postings::Postings;
use tantivy::query::{
    Bm25Weight, BooleanQuery, EnableScoring, Explanation, PhraseQuery, Query, Scorer, Weight,
};
use tantivy::schema::{Field, IndexRecordOption, Term};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocId, DocSet, Score, SeekDangerResult, TERMINATED};

use super::cache::{MATCH_BLOCK, PhraseMatches, SegmentCaches};

/// An exact phrase (no slop) of at least two words at known positions, its matches kept per
/// segment.
#[derive(Clone, Debug)]
pub struct KeptPhrase {
    /// The same phrase for tantivy: segments where nothing is kept, and explanations.
    phrase: PhraseQuery,
    /// Each word with its position in the phrase.
    terms: Vec<(usize, Term)>,
    caches: Arc<SegmentCaches>,
    /// Whether this search finds a segment's matches to keep them where none are kept.
    finds: bool,
}

impl KeptPhrase {
    /// The phrase of `terms`, each at its position (stop words leave gaps), all in one field,
    /// kept in `caches`; a search that `finds` finds and keeps the matches of the segments
    /// where none are kept (a search over a few dossiers' documents asks the phrase about
    /// those alone).
    ///
    /// # Panics
    /// With fewer than two terms, or terms of different fields (as [`PhraseQuery`]).
    pub fn new(terms: Vec<(usize, Term)>, caches: Arc<SegmentCaches>, finds: bool) -> Self {
        Self {
            phrase: PhraseQuery::new_with_offset(terms.clone()),
            terms,
            caches,
            finds,
        }
    }

    /// Whether its searches find a segment's matches where none are kept, so that its best
    /// matches can always be ranked from them skipping what cannot reach the page.
    pub fn finds(&self) -> bool {
        self.finds
    }

    /// What names the phrase's matches in a segment's kept ones: its words and where they
    /// stand.
    fn key(&self) -> [u8; 32] {
        Sha256::digest(format!("{:?}", self.terms).as_bytes()).into()
    }

    /// The phrase as tantivy's query.
    pub fn phrase(&self) -> &PhraseQuery {
        &self.phrase
    }

    fn kept_weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<KeptPhraseWeight> {
        let bm25 = match scoring {
            EnableScoring::Enabled {
                statistics_provider,
                ..
            } => {
                let terms: Vec<Term> = self.terms.iter().map(|(_, t)| t.clone()).collect();
                Some(Bm25Weight::for_terms(statistics_provider, &terms)?)
            }
            EnableScoring::Disabled { .. } => None,
        };
        Ok(KeptPhraseWeight {
            tantivy: self.phrase.weight(scoring)?,
            field: self.phrase.field(),
            terms: self.terms.clone(),
            bm25,
            caches: self.caches.clone(),
            key: self.key(),
            finds: self.finds,
        })
    }
}

impl Query for KeptPhrase {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.kept_weight(scoring)?))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.phrase.query_terms(visitor);
    }
}

struct KeptPhraseWeight {
    tantivy: Box<dyn Weight>,
    field: Field,
    terms: Vec<(usize, Term)>,
    bm25: Option<Bm25Weight>,
    caches: Arc<SegmentCaches>,
    key: [u8; 32],
    finds: bool,
}

impl KeptPhraseWeight {
    /// The phrase's matches in `reader`: kept, or found now and kept when this search finds
    /// them; `None` otherwise.
    fn matches(&self, reader: &SegmentReader) -> tantivy::Result<Option<Arc<PhraseMatches>>> {
        let segment = reader.segment_id();
        if let Some(matches) = self.caches.phrase(segment, &self.key) {
            return Ok(Some(matches));
        }
        if !self.finds {
            return Ok(None);
        }
        let mut matches = find_matches(reader, self.field, &self.terms)?;
        let norms = reader.get_fieldnorms_reader(self.field)?;
        matches.bounds = (matches.docs.chunks(MATCH_BLOCK))
            .zip(matches.counts.chunks(MATCH_BLOCK))
            .map(|(docs, counts)| {
                let most = counts.iter().copied().max().unwrap_or(0);
                let shortest = docs.iter().map(|&d| norms.fieldnorm_id(d)).min();
                (most, shortest.unwrap_or(0))
            })
            .collect();
        let matches = Arc::new(matches);
        self.caches.keep_phrase(segment, self.key, matches.clone());
        Ok(Some(matches))
    }

    /// The phrase's BM25 weight in `reader`, boosted.
    fn scoring(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<PhraseScoring> {
        let fieldnorms = match &self.bm25 {
            Some(_) => reader.get_fieldnorms_reader(self.field)?,
            None => FieldNormReader::constant(reader.max_doc(), 1),
        };
        Ok(PhraseScoring {
            bm25: self.bm25.as_ref().map(|w| w.boost_by(boost)),
            fieldnorms,
        })
    }
}

impl Weight for KeptPhraseWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.matches(reader)? {
            Some(matches) => Box::new(KeptPhraseScorer {
                matches,
                at: 0,
                scoring: self.scoring(reader, boost)?,
            }),
            None => self.tantivy.scorer(reader, boost)?,
        })
    }

    /// Where nothing is kept, tantivy's phrase scorer started at `target` without looking for
    /// its first match beyond it (which compares positions up to that match).
    fn scorer_danger(
        &self,
        reader: &SegmentReader,
        target: DocId,
        boost: Score,
    ) -> tantivy::Result<(SeekDangerResult, Box<dyn Scorer>)> {
        if self.caches.phrase(reader.segment_id(), &self.key).is_none() && !self.finds {
            return self.tantivy.scorer_danger(reader, target, boost);
        }
        let mut scorer = self.scorer(reader, boost)?;
        let found = match scorer.doc() {
            doc if doc < target => scorer.seek_danger(target),
            doc if doc == target => SeekDangerResult::Found,
            doc => SeekDangerResult::SeekLowerBound(doc),
        };
        Ok((found, scorer))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.tantivy.explain(reader, doc)
    }

    /// Over kept matches, a block of them whose best possible score (the most occurrences in
    /// the shortest field: BM25 grows with the one and falls with the other) cannot beat the
    /// page's worst is skipped unscored.
    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        let (Some(bm25), Some(matches)) = (&self.bm25, self.matches(reader)?) else {
            return self.tantivy.for_each_pruning(threshold, reader, callback);
        };
        let mut bar = threshold;
        let scoring = self.scoring(reader, 1.0)?;
        for (block, &(most, shortest)) in matches.bounds.iter().enumerate() {
            if bm25.score(shortest, most) <= bar {
                continue;
            }
            let start = block * MATCH_BLOCK;
            let end = (start + MATCH_BLOCK).min(matches.docs.len());
            for (&doc, &count) in matches.docs[start..end]
                .iter()
                .zip(&matches.counts[start..end])
            {
                let score = scoring.score(doc, count);
                if score > bar {
                    bar = callback(doc, score);
                }
            }
        }
        Ok(())
    }
}

/// Every document of `reader` holding the phrase of `terms` in `field` (each word at its
/// position), with how many times, in document order: the words' postings leapfrogged from the
/// rarest, and in a document holding them all their positions, each shifted by its word's place
/// in the phrase, intersected. tantivy's phrase scorer does the same; it is not public, and
/// its count of occurrences is what the kept matches are scored from.
fn find_matches(
    reader: &SegmentReader,
    field: Field,
    terms: &[(usize, Term)],
) -> tantivy::Result<PhraseMatches> {
    let inverted = reader.inverted_index(field)?;
    let last = terms.iter().map(|(o, _)| *o).max().unwrap_or(0);
    let mut words = Vec::with_capacity(terms.len());
    for (offset, term) in terms {
        match inverted.read_postings(term, IndexRecordOption::WithFreqsAndPositions)? {
            Some(postings) => words.push(((last - offset) as u32, postings)),
            None => return Ok(PhraseMatches::default()),
        }
    }
    words.sort_by_key(|(_, postings)| postings.doc_freq());
    let mut matches = PhraseMatches::default();
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let Some(((shift, lead), others)) = words.split_first_mut() else {
        return Ok(matches);
    };
    let mut doc = lead.doc();
    'docs: while doc != TERMINATED {
        for (_, postings) in others.iter_mut() {
            let at = match postings.doc() {
                behind if behind < doc => postings.seek(doc),
                at => at,
            };
            if at != doc {
                doc = if at == TERMINATED {
                    TERMINATED
                } else {
                    lead.seek(at)
                };
                continue 'docs;
            }
        }
        lead.positions_with_offset(*shift, &mut left);
        for (shift, postings) in others.iter_mut() {
            postings.positions_with_offset(*shift, &mut right);
            let mut j = 0;
            left.retain(|&p| {
                while right.get(j).is_some_and(|&q| q < p) {
                    j += 1;
                }
                right.get(j) == Some(&p)
            });
        }
        if !left.is_empty() {
            matches.docs.push(doc);
            matches.counts.push(left.len() as u32);
        }
        doc = lead.advance();
    }
    // Kept for as long as the segment lives: no spare capacity.
    matches.docs.shrink_to_fit();
    matches.counts.shrink_to_fit();
    Ok(matches)
}

/// The BM25 weight of a phrase in one segment.
struct PhraseScoring {
    bm25: Option<Bm25Weight>,
    fieldnorms: FieldNormReader,
}

impl PhraseScoring {
    /// The score of `doc`, which holds the phrase `count` times.
    fn score(&self, doc: DocId, count: u32) -> Score {
        match &self.bm25 {
            Some(bm25) => bm25.score(self.fieldnorms.fieldnorm_id(doc), count),
            None => 1.0,
        }
    }
}

/// A phrase's kept matches in one segment, read like a word's postings.
struct KeptPhraseScorer {
    matches: Arc<PhraseMatches>,
    at: usize,
    scoring: PhraseScoring,
}

impl DocSet for KeptPhraseScorer {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.matches.docs.len());
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        let rest = self.matches.docs.get(self.at..).unwrap_or_default();
        self.at += rest.partition_point(|&d| d < target);
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.matches
            .docs
            .get(self.at)
            .copied()
            .unwrap_or(TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        self.matches.docs.len() as u32
    }
}

impl Scorer for KeptPhraseScorer {
    fn score(&mut self) -> Score {
        let count = self.matches.counts.get(self.at).copied().unwrap_or(0);
        self.scoring.score(self.doc(), count)
    }
}

/// `query` with each exact phrase in `field` answered by a [`KeptPhrase`] kept in `caches`,
/// whose searches find the matches where none are kept when `finds`.
///
/// tantivy's parsed phrase does not tell where its words stand (stop words leave gaps), so the
/// user's query `text` is analysed whole, as the parser analyses each of its quoted phrases: a
/// phrase's words follow each other in that text's tokens with their gaps. A phrase is
/// replaced when its words follow each other there with one pattern of gaps only; anything
/// else stays as parsed (a phrase's own tokens are always among the runs found, so a single
/// pattern is its own). `analyzer` gives the field's analyzer, asked for only when the query
/// holds a phrase.
pub fn exact_phrases(
    query: Box<dyn Query>,
    text: &str,
    field: Field,
    analyzer: impl FnOnce() -> Option<TextAnalyzer>,
    kept: (&Arc<SegmentCaches>, bool),
) -> Box<dyn Query> {
    // Most searches hold no phrase: they are not analysed again. A phrase with slop (`~`,
    // which the public grammar refuses) is not exact: it stays tantivy's.
    if !has_phrase(query.as_ref()) || text.contains('~') {
        return query;
    }
    let Some(mut analyzer) = analyzer() else {
        return query;
    };
    let mut tokens = Vec::new();
    analyzer.token_stream(text).process(&mut |token| {
        tokens.push((token.position, Term::from_field_text(field, &token.text)));
    });
    rewrite(query, &tokens, kept)
}

/// Where `words` stand in a phrase: the gaps between them wherever they follow each other in
/// `tokens`, when that is one pattern only.
fn positions(tokens: &[(usize, Term)], words: &[Term]) -> Option<Vec<(usize, Term)>> {
    let mut found: Option<Vec<(usize, Term)>> = None;
    for run in tokens.windows(words.len().max(1)) {
        if run.iter().map(|(_, t)| t).eq(words) {
            let reading: Vec<_> = run.iter().map(|(p, t)| (p - run[0].0, t.clone())).collect();
            if found.as_ref().is_some_and(|f| *f != reading) {
                return None;
            }
            found = Some(reading);
        }
    }
    found
}

/// Whether `query` holds a phrase where [`rewrite`] looks for one.
fn has_phrase(query: &dyn Query) -> bool {
    query.is::<PhraseQuery>()
        || query.downcast_ref::<BooleanQuery>().is_some_and(|b| {
            b.clauses()
                .iter()
                .any(|(_, clause)| has_phrase(clause.as_ref()))
        })
}

fn rewrite(
    query: Box<dyn Query>,
    tokens: &[(usize, Term)],
    kept: (&Arc<SegmentCaches>, bool),
) -> Box<dyn Query> {
    if let Some(phrase) = query.downcast_ref::<PhraseQuery>() {
        if let Some(terms) = positions(tokens, &phrase.phrase_terms()) {
            let (caches, finds) = kept;
            let phrase = KeptPhrase::new(terms, caches.clone(), false);
            // A phrase's matches are found for keeping when it is asked again: the first
            // search of a phrase only asks it about what that search visits.
            let finds = finds && caches.seen_before(phrase.key());
            return Box::new(KeptPhrase { finds, ..phrase });
        }
        return query;
    }
    if let Some(boolean) = query.downcast_ref::<BooleanQuery>() {
        let clauses = boolean
            .clauses()
            .iter()
            .map(|(occur, clause)| (*occur, rewrite(clause.box_clone(), tokens, kept)))
            .collect();
        return Box::new(BooleanQuery::new(clauses));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{IndexedDoc, SearchIndex};
    use tantivy::collector::{Count, TopDocs};
    use tantivy::query::{Occur, TermQuery};
    use tantivy::{DocAddress, Searcher};

    /// Document `i` of the search tests, in one of three offices, with `text`.
    fn doc(i: usize, text: String) -> IndexedDoc {
        IndexedDoc {
            signed: false,
            signers: Vec::new(),
            text,
            ..crate::index::search::tests::doc(i, i as i64)
        }
    }

    fn body_term(index: &SearchIndex, word: &str) -> Term {
        Term::from_field_text(index.fields().body, word)
    }

    /// Every match with its score, and the count with scoring off.
    fn matches(searcher: &Searcher, query: &dyn Query) -> (Vec<(DocAddress, f32)>, usize) {
        let mut all: Vec<(DocAddress, f32)> = searcher
            .search(query, &TopDocs::with_limit(100_000).order_by_score())
            .expect("searched")
            .into_iter()
            .map(|(score, address)| (address, score))
            .collect();
        all.sort_by_key(|(a, _)| *a);
        let count = searcher.search(query, &Count).expect("counted");
        (all, count)
    }

    /// Kept matches must be exactly the documents tantivy's phrase scorer matches, with the
    /// same scores: frequent and rare words at every distance, repeated in a document, across
    /// blocks of postings and segments, with deletions, alone and under a filter that makes
    /// the search jump (seek) between documents.
    #[test]
    fn matches_and_scores_like_tantivys_phrase_scorer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        // Frequent words (each in most documents), one rare word, and stop words that leave
        // gaps in the positions.
        let vocabulary = [
            "permesso",
            "di",
            "costruire",
            "parere",
            "favorevole",
            "silenzio",
            "assenso",
            "del",
            "responsabile",
            "procedimento",
            "il",
            "comune",
        ];
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % n
        };
        for (segment, range) in [(1, 0..700), (2, 700..1000), (3, 1000..1300)] {
            for i in range {
                let words: Vec<&str> = (0..5 + next(40)).map(|_| vocabulary[next(12)]).collect();
                let mut text = words.join(" ");
                if i % 97 == 0 {
                    text.push_str(" tettoia abusiva");
                }
                // Some documents hold a phrase many times.
                if i % 89 == 0 {
                    text.push_str(&" silenzio assenso".repeat(1 + i % 7));
                }
                index.add(&doc(i, text)).expect("added");
            }
            index.commit(segment).expect("committed");
        }
        for i in (5..1300).step_by(11) {
            index.delete(crate::domain::DocumentId::numbered(i as u128));
        }
        index.commit(4).expect("committed");
        let searcher = index.searcher();

        let phrases: Vec<Vec<(usize, &str)>> = vec![
            vec![(0, "permess"), (2, "costru")],
            vec![(0, "parer"), (1, "favorevol")],
            vec![(0, "silenz"), (1, "assens")],
            vec![(0, "responsabil"), (2, "procediment")],
            vec![(0, "comun"), (1, "comun")],
            vec![(0, "parer"), (1, "parer"), (2, "parer")],
            vec![(0, "permess"), (1, "costru"), (2, "parer")],
            // A rare word.
            vec![(0, "tettoi"), (1, "abusiv")],
            // A word in no document.
            vec![(0, "permess"), (1, "sanatori")],
        ];
        let office = Term::from_field_text(index.fields().office, "b");
        let caches = Arc::new(SegmentCaches::default());
        let mut frequent_matches = 0;
        for phrase in &phrases {
            let terms: Vec<(usize, Term)> = phrase
                .iter()
                .map(|(o, w)| (*o, body_term(&index, w)))
                .collect();
            let theirs = PhraseQuery::new_with_offset(terms.clone());
            let expected = matches(&searcher, &theirs);
            // Found and kept the first time, read from what was kept the next.
            let kept = KeptPhrase::new(terms.clone(), caches.clone(), true);
            // A search that may not find them reads what was kept, or runs tantivy's scorer.
            let reader_only = KeptPhrase::new(terms, caches.clone(), false);
            assert_eq!(
                matches(&searcher, &reader_only),
                expected,
                "{phrase:?} not kept yet"
            );
            let key = reader_only.key();
            for reader in searcher.segment_readers() {
                let kept_now = caches.phrase(reader.segment_id(), &key);
                assert!(kept_now.is_none(), "{phrase:?}: not found yet");
            }
            assert_eq!(matches(&searcher, &kept), expected, "{phrase:?} kept");
            assert_eq!(matches(&searcher, &kept), expected, "{phrase:?} read back");
            // The best ten, ranked from the kept matches skipping blocks that cannot reach them.
            let top = |q: &dyn Query| {
                searcher
                    .search(q, &TopDocs::with_limit(10).order_by_score())
                    .expect("top ten")
            };
            assert_eq!(top(&kept), top(&theirs), "{phrase:?} top ten");
            assert_eq!(
                matches(&searcher, &reader_only),
                expected,
                "{phrase:?} read only"
            );
            if phrase[0].1 != "tettoi" {
                frequent_matches += expected.1;
            }
            // Under a filter, the phrase is sought document by document.
            let filtered = |q: Box<dyn Query>| {
                BooleanQuery::new(vec![
                    (Occur::Must, q),
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(office.clone(), IndexRecordOption::Basic)),
                    ),
                ])
            };
            let fresh = KeptPhrase::new(kept.terms.clone(), Arc::default(), false);
            assert_eq!(
                matches(&searcher, &filtered(Box::new(fresh))),
                matches(&searcher, &filtered(Box::new(theirs.clone()))),
                "{phrase:?} under a filter, nothing kept"
            );
            assert_eq!(
                matches(&searcher, &filtered(Box::new(kept))),
                matches(&searcher, &filtered(Box::new(theirs.clone()))),
                "{phrase:?} kept, under a filter"
            );
        }
        assert!(
            frequent_matches > 200,
            "the phrases match often: {frequent_matches}"
        );
        // Every phrase's matches were kept in every segment.
        for reader in searcher.segment_readers() {
            let kept = |phrase: &[(usize, &str)]| {
                let terms: Vec<(usize, Term)> = phrase
                    .iter()
                    .map(|(o, w)| (*o, body_term(&index, w)))
                    .collect();
                let key = KeptPhrase::new(terms, caches.clone(), true).key();
                caches.phrase(reader.segment_id(), &key).is_some()
            };
            assert!(phrases.iter().all(|p| kept(p)), "{phrases:?}");
        }
    }

    /// The best matches of a kept phrase are ranked from its blocks of matches, skipping those
    /// whose best possible score cannot reach the page: the same page as scoring every match.
    #[test]
    fn kept_matches_rank_the_best_skipping_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        for i in 0..5_000 {
            // Occurrences and lengths vary, and the best documents are spread over the segment.
            let times = 1 + usize::from(i % 37 == 0) * (i % 5);
            let text = format!(
                "{} {}",
                "silenzio assenso ".repeat(times),
                "comune ".repeat(i % 23)
            );
            index.add(&doc(i, text)).expect("added");
        }
        index.commit(1).expect("committed");
        let searcher = index.searcher();
        let terms = vec![
            (0, body_term(&index, "silenz")),
            (1, body_term(&index, "assens")),
        ];
        let caches = Arc::new(SegmentCaches::default());
        let kept = KeptPhrase::new(terms.clone(), caches.clone(), true);
        let theirs = PhraseQuery::new_with_offset(terms);
        // Counting finds the segment's matches and keeps them.
        assert_eq!(searcher.search(&kept, &Count).expect("count"), 5_000);
        let key = kept.key();
        let reader = &searcher.segment_readers()[0];
        let blocks = caches
            .phrase(reader.segment_id(), &key)
            .expect("kept")
            .bounds
            .len();
        assert_eq!(blocks, 5_000usize.div_ceil(MATCH_BLOCK));
        for limit in [1, 10, 100] {
            let top = |q: &dyn Query| {
                searcher
                    .search(q, &TopDocs::with_limit(limit).order_by_score())
                    .expect("top")
            };
            assert_eq!(top(&kept), top(&theirs), "the best {limit}");
        }
    }

    /// The phrases of a user's query become [`KeptPhrase`]s with the words' positions in
    /// the phrase, stop words counted, found for keeping once asked again; phrases with slop
    /// stay tantivy's.
    #[test]
    fn user_phrases_are_read_with_their_gaps() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        let body = index.fields().body;
        let caches = Arc::new(SegmentCaches::default());
        let mut parser = tantivy::query::QueryParser::for_index(index.index(), vec![body]);
        parser.set_conjunction_by_default();
        let rewritten = |q: &str| {
            let parsed = parser.parse_query(q).expect("parsed");
            exact_phrases(
                parsed,
                q,
                body,
                || Some(crate::index::italian_analyzer()),
                (&caches, true),
            )
        };
        let query = rewritten("\"permesso di costruire\"");
        let phrase = query.downcast_ref::<KeptPhrase>().expect("a phrase");
        assert_eq!(
            phrase.terms,
            vec![
                (0, body_term(&index, "permess")),
                (2, body_term(&index, "costru"))
            ]
        );
        // Inside a conjunction, beside a word.
        let query = rewritten("tettoia \"parere favorevole\"");
        let boolean = query.downcast_ref::<BooleanQuery>().expect("a conjunction");
        let phrases: Vec<&KeptPhrase> = boolean
            .clauses()
            .iter()
            .filter_map(|(_, q)| q.downcast_ref::<KeptPhrase>())
            .collect();
        assert_eq!(phrases.len(), 1);
        assert_eq!(phrases[0].terms[1], (1, body_term(&index, "favorevol")));
        // Its matches are found for keeping by a search that may, once it is asked again.
        assert!(!phrase.finds(), "asked once");
        let again = rewritten("\"permesso di costruire\"");
        assert!(
            again
                .downcast_ref::<KeptPhrase>()
                .expect("a phrase")
                .finds()
        );
        // Its words elsewhere in the query, not following each other, leave it kept.
        let query = rewritten("\"parere favorevole\" parere tecnico favorevole");
        let boolean = query.downcast_ref::<BooleanQuery>().expect("a conjunction");
        assert!(boolean.clauses().iter().any(|(_, q)| q.is::<KeptPhrase>()));
        // A phrase with slop is left to tantivy.
        let query = rewritten("\"parere favorevole\"~2");
        assert!(query.is::<PhraseQuery>());
        // The same words read two ways are left to tantivy too.
        let query = rewritten("\"parere favorevole\" OR \"parere di favorevole\"");
        let boolean = query.downcast_ref::<BooleanQuery>().expect("a disjunction");
        assert!(boolean.clauses().iter().all(|(_, q)| q.is::<PhraseQuery>()));
    }
}
