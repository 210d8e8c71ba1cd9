//! Permission filters kept per segment ([`CachedFilter`]): what a filter admits, read off
//! its kept bitset; browsing what it admits newest first; counting and ranking the matches of
//! words among the admitted documents.
//!
//! Measured gain (BENCHMARKS.md, A/B at 1 M documents against the permission as an ordinary
//! clause, 57707a6): 12 of 24 cells ≥ 10 % faster at p50 on repeated queries and 11 on
//! distinct ones (a professional's 2–4×), eight clients 1 709 against 534 searches/s.

use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::{
    AllScorer, BitSetDocSet, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer,
    TermQuery, Weight, intersect_scorers,
};
use tantivy::{
    COLLECT_BLOCK_BUFFER_LEN, DocAddress, DocId, DocSet, Score, Searcher, SeekDangerResult,
    SegmentOrdinal, SegmentReader, TERMINATED, Term,
};

use super::bits::{DocBits, keep_admitted};
use super::cache::{FilterKey, SegmentCaches};
use super::facets::{FacetCollector, FacetCounts, FacetSegment};

/// A filter whose matches are computed once per segment and kept under a [`FilterKey`]. It
/// never scores.
#[derive(Clone, Debug)]
pub struct CachedFilter {
    key: [u8; 32],
    inner: Arc<dyn Query>,
    caches: Arc<SegmentCaches>,
}

impl CachedFilter {
    /// `inner`, cached under `key`.
    pub fn new(key: FilterKey, inner: Box<dyn Query>, caches: Arc<SegmentCaches>) -> Self {
        Self {
            key: key.0,
            inner: Arc::from(inner),
            caches,
        }
    }
}

impl CachedFilter {
    /// Every document the filter admits and no deletion removed, newest first: the exact
    /// total, the facets and the page `skip..skip + take` (each hit scoring 0), the answer of
    /// a search with no words and no other filter sorted by date. Nothing visits the documents
    /// one by one: the counts are kept with the filter (per state of the segment's deletions)
    /// and the page is read off the segments' newest-first orders, so browsing a million documents
    /// costs about what browsing a thousand does.
    pub fn browse(
        &self,
        searcher: &Searcher,
        skip: usize,
        take: usize,
        facets: &FacetCollector<'_>,
    ) -> tantivy::Result<(u64, FacetCounts, Ranked)> {
        let want = skip.saturating_add(take);
        let mut total = 0;
        let mut fruits = Vec::new();
        let mut candidates: Vec<(Option<i64>, DocAddress)> = Vec::new();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let bits = self.bits(segment)?;
            if bits.len() == 0 {
                continue;
            }
            let counts = bits.alive_counts(segment, |docs| facets.of_docs(segment, docs))?;
            let here = counts.total;
            if here == 0 {
                continue;
            }
            total += here;
            fruits.push(counts.facets.clone());
            if want == 0 {
                continue;
            }
            let alive = segment.alive_bitset();
            let admitted = |doc: DocId| bits.contains(doc) && alive.is_none_or(|a| a.is_alive(doc));
            let dates = segment.fast_fields().column_opt::<i64>("date")?;
            let dated = |doc: DocId| {
                (
                    dates.as_ref().and_then(|c| c.first(doc)),
                    DocAddress::new(ord as u32, doc),
                )
            };
            // The newest-first order yields `want` admitted documents after about
            // want × max_doc / admitted steps; a sparser filter is cheaper read whole.
            let steps = (want as u64).saturating_mul(u64::from(segment.max_doc())) / here;
            if steps <= here {
                let table = self.caches.facets(segment)?;
                let order = table.newest_first(segment)?;
                candidates.extend(
                    order
                        .iter()
                        .copied()
                        .filter(|&doc| admitted(doc))
                        .take(want)
                        .map(dated),
                );
            } else {
                let mut found: Vec<_> = bits
                    .iter()
                    .filter(|&doc| admitted(doc))
                    .map(dated)
                    .collect();
                found.sort_by(by_newest);
                found.truncate(want);
                candidates.extend(found);
            }
        }
        candidates.sort_by(by_newest);
        let page = candidates
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|(_, address)| (0.0, address))
            .collect();
        Ok((total, super::facets::merge(fruits), page))
    }
}

/// Counts and facets the matches of a query a [`CachedFilter`] admits, and ranks the best of
/// them, segment by segment: both passes over a segment run one after the other on the same
/// thread, while its postings are still in the processor's caches, and a search over every
/// core hands each segment to a thread once, not once per pass.
pub struct CountedTop<'a, T> {
    /// The admitted matches, unscored ([`CachedFilter::admit`]).
    counted: AdmittedWeight,
    counting: (tantivy::collector::Count, FacetCollector<'a>),
    /// Ranks the admitted matches, scored: the weight the search runs with.
    top: T,
}

impl<'a, T> CountedTop<'a, T> {
    /// Counts and facets what `counted` matches in `searcher`; ranks with `top` (tantivy's
    /// top documents by score, which let the weight skip what cannot reach the page); counts a
    /// single frequent word from its bitmap.
    pub fn new(
        counted: &Admitted,
        searcher: &Searcher,
        facets: FacetCollector<'a>,
        top: T,
    ) -> tantivy::Result<Self> {
        Ok(Self {
            counted: counted.admitted_weight(EnableScoring::disabled_from_searcher(searcher))?,
            counting: (tantivy::collector::Count, facets),
            top,
        })
    }
}

type Ranked = Vec<(Score, DocAddress)>;

impl<T: Collector<Fruit = Ranked>> Collector for CountedTop<'_, T> {
    type Fruit = (usize, FacetCounts, Ranked);
    type Child = (
        <tantivy::collector::Count as Collector>::Child,
        FacetSegment,
        T::Child,
    );

    fn for_segment(
        &self,
        segment_ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        let (count, facets) = self.counting.for_segment(segment_ord, segment)?;
        Ok((count, facets, self.top.for_segment(segment_ord, segment)?))
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Self::Fruit> {
        let mut counted = Vec::with_capacity(fruits.len());
        let mut pages = Vec::with_capacity(fruits.len());
        for (count, facets, page) in fruits {
            counted.push((count, facets));
            pages.push(page);
        }
        let (total, facets) = self.counting.merge_fruits(counted)?;
        Ok((total, facets, self.top.merge_fruits(pages)?))
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        let by_bitmap = self
            .counted
            .count_frequent_word(segment, &self.counting.1)?;
        let (count, facets) = match by_bitmap {
            Some(counted) => counted,
            None => self
                .counting
                .collect_segment(&self.counted, segment_ord, segment)?,
        };
        let page = self.top.collect_segment(weight, segment_ord, segment)?;
        Ok((count, facets, page))
    }
}

/// Newest first; undated last; the earlier address first on a tie (tantivy's order).
fn by_newest(a: &(Option<i64>, DocAddress), b: &(Option<i64>, DocAddress)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

impl Query for CachedFilter {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl CachedFilter {
    /// The documents of `reader` the filter admits.
    fn bits(&self, reader: &SegmentReader) -> tantivy::Result<Arc<DocBits>> {
        self.caches.filter(reader, &self.key, self.inner.as_ref())
    }
}

/// The filter is its own weight: what it admits is kept, or evaluated, per segment.
impl Weight for CachedFilter {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let bits = self.bits(reader)?;
        // A boolean query drops clauses that select everything or nothing from its
        // intersection: an auditor's search is then just the user's query.
        Ok(if bits.len() == 0 {
            Box::new(EmptyScorer)
        } else if bits.len() == reader.max_doc() {
            Box::new(AllScorer::new(reader.max_doc()))
        } else {
            Box::new(ConstScorer::new(BitSetDocSet::from(bits.set.clone()), 0.0))
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let bits = self.bits(reader)?;
        if !bits.contains(doc) {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not pass the filter"
            )));
        }
        Ok(Explanation::new("cached filter", 0.0))
    }
}

impl CachedFilter {
    /// The matches of `query` the filter admits, scored as `query` scores them.
    pub fn admit(&self, query: Box<dyn Query>) -> Admitted {
        Admitted {
            filter: self.clone(),
            query: Arc::from(query),
        }
    }
}

/// The matches of a query that a [`CachedFilter`] admits (see [`CachedFilter::admit`]).
///
/// Where the filter admits a good part of a segment, the query runs alone and each of its
/// matches is tested against the filter's bits: an intersection would instead seek the query's
/// postings once per admitted document, or test each match behind a branch that a filter
/// admitting about half the documents makes the processor mispredict half the time. Counting
/// and faceting take the query's matches a block at a time and keep the admitted ones without a
/// branch. Over a sparse filter the admitted documents lead an intersection with the query.
#[derive(Clone, Debug)]
pub struct Admitted {
    filter: CachedFilter,
    query: Arc<dyn Query>,
}

impl Query for Admitted {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.admitted_weight(scoring)?))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a tantivy::Term, bool)) {
        self.query.query_terms(visitor);
    }
}

impl Admitted {
    fn admitted_weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<AdmittedWeight> {
        Ok(AdmittedWeight {
            filter: self.filter.clone(),
            query: self.query.weight(scoring)?,
            word: (self.query.downcast_ref::<TermQuery>()).map(|t| t.term().clone()),
        })
    }
}

struct AdmittedWeight {
    filter: CachedFilter,
    query: Box<dyn Weight>,
    /// When the query is a single word: the word.
    word: Option<Term>,
}

/// A filter admitting fewer than one document in this many of a segment leaves counting a
/// frequent word to the intersection of the filter with the word's postings.
const BITMAP_COUNT_DENSITY: u32 = 8;

impl AdmittedWeight {
    /// Counts and facets the admitted documents holding a word found in most of the segment
    /// from the word's bitmap ([`SegmentCaches::word_docs`]), 64 documents at a time: the
    /// matches themselves when they are fewer than the admitted documents lacking the word,
    /// otherwise those, taken off the admitted documents' own counts, which the filter keeps
    /// ([`DocBits::alive_counts`]). `None` when the query is not a single word, the word is
    /// not that frequent here, or the filter admits few documents.
    ///
    /// Measured gain (BENCHMARKS.md, A/B at 1 M documents against the word's postings, 822d2e3,
    /// two runs): the auditor's and staff's most frequent words, asked again, 48 / 30 % and
    /// 61 / 68 % faster at p50; eight clients 2 731 against 2 350 and 2 710 against 2 265
    /// searches/s. The distinct stream's words are seldom in most of a segment: no cell ≥ 10 %
    /// faster there.
    fn count_frequent_word(
        &self,
        reader: &SegmentReader,
        facets: &FacetCollector<'_>,
    ) -> tantivy::Result<Option<(usize, FacetCounts)>> {
        let Some(word) = &self.word else {
            return Ok(None);
        };
        let bits = self.filter.bits(reader)?;
        if bits.len().saturating_mul(BITMAP_COUNT_DENSITY) < reader.max_doc() {
            return Ok(None);
        }
        let Some(held) = self.filter.caches.word_docs(reader, word)? else {
            return Ok(None);
        };
        let pairs = || (0..bits.words()).map(|at| (bits.word(at), held.word(at)));
        let matched: u32 = pairs().map(|(a, h)| (a & h).count_ones()).sum();
        // Matches, or admitted documents lacking the word: whichever are fewer are visited.
        let by_absence = bits.len() - matched < matched;
        let lacking = if by_absence { !0 } else { 0 };
        let alive = reader.alive_bitset();
        let mut docs = Vec::new();
        for (at, (admitted, holds)) in pairs().enumerate() {
            let mut rest = admitted & (holds ^ lacking);
            while rest != 0 {
                let doc = at as DocId * 64 + rest.trailing_zeros();
                rest &= rest - 1;
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    docs.push(doc);
                }
            }
        }
        let visited = facets.of_docs(reader, &docs)?;
        if !by_absence {
            return Ok(Some((docs.len(), visited)));
        }
        let all = bits.alive_counts(reader, |docs| facets.of_docs(reader, docs))?;
        Ok(Some((
            (all.total as usize).saturating_sub(docs.len()),
            super::facets::without(all.facets.clone(), &visited),
        )))
    }
}

/// How an [`AdmittedWeight`] runs in one segment.
enum Admission {
    /// The filter admits every document: the query runs alone.
    All,
    /// The query's scorer runs alone and its matches are tested against the bits.
    Dense(Arc<DocBits>, Box<dyn Scorer>),
    /// The query intersected with the filter.
    Sparse(Box<dyn Scorer>),
}

/// How many of the query's documents may be visited per admitted document before leading
/// with the admitted documents (seeking the query at each) costs less: a visited document
/// costs a bit test, a seek about this many.
const VISIT_RATIO: u64 = 4;

impl AdmittedWeight {
    fn admission(&self, reader: &SegmentReader) -> tantivy::Result<Admission> {
        let bits = self.filter.bits(reader)?;
        if bits.len() == reader.max_doc() {
            return Ok(Admission::All);
        }
        let Some(first) = bits.iter().next() else {
            return Ok(Admission::Sparse(Box::new(EmptyScorer)));
        };
        // The query's scorer starts at the first admitted document without looking further
        // (tantivy's `scorer_danger`): a phrase's scorer made the ordinary way would first
        // compare the positions of every document holding its words up to its first match,
        // the whole segment for a phrase found nowhere in it.
        let (mut found, mut query) = self.query.scorer_danger(reader, first, 1.0)?;
        // A phrase's cost counts the positions it compares, so a phrase over frequent words
        // is led by the admitted documents, whose candidates alone it then checks.
        let dense = query.cost() <= u64::from(bits.len()).saturating_mul(VISIT_RATIO);
        // Led by the admitted documents: tantivy's walk over a copy of their bitset.
        let mut admitted = (!dense).then(|| BitSetDocSet::from(bits.set.clone()));
        // Brought to a document it matches: run alone, the first at or after the first
        // admitted one; led by the admitted documents, the first they have in common (as
        // tantivy's boolean query aligns its clauses).
        while let SeekDangerResult::SeekLowerBound(next) = found {
            let doc = admitted.as_mut().map_or(next, |a| a.seek(next));
            if doc == TERMINATED {
                return Ok(Admission::Sparse(Box::new(EmptyScorer)));
            }
            found = query.seek_danger(doc);
        }
        Ok(match admitted {
            None => Admission::Dense(bits, query),
            Some(admitted) => Admission::Sparse(intersect_scorers(
                vec![query, Box::new(ConstScorer::new(admitted, 0.0))],
                reader.num_docs(),
            )),
        })
    }
}

impl Weight for AdmittedWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(intersect_scorers(
            vec![
                self.query.scorer(reader, boost)?,
                self.filter.scorer(reader, boost)?,
            ],
            reader.num_docs(),
        ))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        Weight::explain(&self.filter, reader, doc)?;
        self.query.explain(reader, doc)
    }

    fn for_each(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score),
    ) -> tantivy::Result<()> {
        let (bits, mut scorer) = match self.admission(reader)? {
            Admission::All => return self.query.for_each(reader, callback),
            Admission::Dense(bits, scorer) => (Some(bits), scorer),
            Admission::Sparse(scorer) => (None, scorer),
        };
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if bits.as_ref().is_none_or(|b| b.contains(doc)) {
                callback(doc, scorer.score());
            }
            doc = scorer.advance();
        }
        Ok(())
    }

    fn for_each_no_score(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(&[DocId]),
    ) -> tantivy::Result<()> {
        let (bits, mut scorer) = match self.admission(reader)? {
            Admission::All => return self.query.for_each_no_score(reader, callback),
            Admission::Dense(bits, scorer) => (Some(bits), scorer),
            Admission::Sparse(scorer) => (None, scorer),
        };
        let mut buffer = [0; COLLECT_BLOCK_BUFFER_LEN];
        let mut admitted = [0; COLLECT_BLOCK_BUFFER_LEN];
        loop {
            let n = scorer.fill_buffer(&mut buffer);
            let docs = match &bits {
                None => &buffer[..n],
                Some(bits) => {
                    let kept = keep_admitted(bits, &buffer[..n], &mut admitted);
                    &admitted[..kept]
                }
            };
            if !docs.is_empty() {
                callback(docs);
            }
            if n < buffer.len() {
                return Ok(());
            }
        }
    }

    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        match self.admission(reader)? {
            Admission::All => self.query.for_each_pruning(threshold, reader, callback),
            // The query's own pruning (block-max WAND) skips what cannot reach the page; a
            // document the filter refuses leaves the bar where it was.
            Admission::Dense(bits, _) => {
                let mut bar = threshold;
                self.query
                    .for_each_pruning(threshold, reader, &mut |doc, score| {
                        if bits.contains(doc) {
                            bar = callback(doc, score);
                        }
                        bar
                    })
            }
            Admission::Sparse(mut scorer) => {
                prune_scorer(scorer.as_mut(), threshold, callback);
                Ok(())
            }
        }
    }
}

/// Offers `callback` every match of `scorer` scoring above the bar, which starts at `threshold`
/// and is what `callback` last returned: a weight's `for_each_pruning` where nothing can be
/// skipped.
fn prune_scorer(
    scorer: &mut dyn Scorer,
    threshold: Score,
    callback: &mut dyn FnMut(DocId, Score) -> Score,
) {
    let mut bar = threshold;
    let mut doc = scorer.doc();
    while doc != TERMINATED {
        let score = scorer.score();
        if score > bar {
            bar = callback(doc, score);
        }
        doc = scorer.advance();
    }
}
