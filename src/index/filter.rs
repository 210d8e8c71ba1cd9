//! Permission filters kept per segment ([`CachedFilter`]): what a filter admits, read off
//! its kept bitset; browsing what it admits newest first; counting and ranking the matches of
//! words among the admitted documents.
//!
//! Measured gain (BENCHMARKS.md, A/B at 1 M documents against the permission as an ordinary
//! clause, `FASCICOLO_SEARCH_PLAIN=filters`): 12 of 24 cells ≥ 10 % faster at p50 on repeated
//! queries and 11 on distinct ones (a professional's 2–4×), eight clients 1 709 against 534
//! searches/s.

use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::{
    AllScorer, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, TermQuery,
    Weight, intersect_scorers,
};
use tantivy::{
    COLLECT_BLOCK_BUFFER_LEN, DocAddress, DocId, DocSet, Score, Searcher, SeekDangerResult,
    SegmentOrdinal, SegmentReader, TERMINATED, Term,
};

use super::cache::{DocBits, FilterKey, LazyWeight, SegmentCaches};
use super::facets::{FacetCounts, Facets, FacetsSegment};

/// A filter whose matches are computed once per segment and kept under a [`FilterKey`]. It
/// never scores.
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

/// What browsing a filter finds: see [`CachedFilter::browse`].
pub struct Browsed {
    /// Admitted documents not deleted.
    pub total: u64,
    /// Their facets.
    pub facets: FacetCounts,
    /// The requested page of them, newest first.
    pub page: Vec<DocAddress>,
}

impl CachedFilter {
    /// Every document the filter admits and no deletion removed, newest first: the exact
    /// total, the facets and the page `skip..skip + take`, the answer of a search with no
    /// words and no other filter sorted by date. Nothing visits the documents one by one:
    /// the counts are kept with the filter (per state of the segment's deletions) and the
    /// page is read off the segments' newest-first orders, so browsing a million documents
    /// costs about what browsing a thousand does.
    pub fn browse(
        &self,
        searcher: &Searcher,
        skip: usize,
        take: usize,
        facets: &Facets<'_>,
    ) -> tantivy::Result<Browsed> {
        let inner = LazyWeight::new(self.inner.clone(), searcher.schema().clone());
        let want = skip.saturating_add(take);
        let mut total = 0;
        let mut fruits = Vec::new();
        let mut candidates: Vec<(Option<i64>, DocAddress)> = Vec::new();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let bits = self.caches.filter(segment, &self.key, &inner)?;
            if bits.len == 0 {
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
            .map(|(_, address)| address)
            .collect();
        Ok(Browsed {
            total,
            facets: super::facets::merge(fruits),
            page,
        })
    }
}

/// Counts and facets the matches of a query a [`CachedFilter`] admits, and ranks the best of
/// them, segment by segment: both passes over a segment run one after the other on the same
/// thread, while its postings are still in the processor's caches, and a search over every
/// core hands each segment to a thread once, not once per pass.
pub struct CountedTop<'a, T> {
    /// The admitted matches, unscored ([`CachedFilter::admit`]).
    counted: AdmittedWeight,
    counting: (tantivy::collector::Count, Facets<'a>),
    /// Whether a single frequent word is counted from its bitmap ([`super::Plain::bitmaps`]).
    bitmaps: bool,
    /// Ranks the admitted matches, scored: the weight the search runs with.
    top: T,
}

impl<'a, T> CountedTop<'a, T> {
    /// Counts and facets what `counted` matches in `searcher`; ranks with `top` (tantivy's
    /// top documents by score, which let the weight skip what cannot reach the page); counts a
    /// single frequent word from its bitmap when `bitmaps`.
    pub fn new(
        counted: &Admitted,
        searcher: &Searcher,
        facets: Facets<'a>,
        top: T,
        bitmaps: bool,
    ) -> tantivy::Result<Self> {
        Ok(Self {
            counted: counted.admitted_weight(EnableScoring::disabled_from_searcher(searcher))?,
            counting: (tantivy::collector::Count, facets),
            bitmaps,
            top,
        })
    }
}

type Ranked = Vec<(Score, DocAddress)>;

impl<T: Collector<Fruit = Ranked>> Collector for CountedTop<'_, T> {
    type Fruit = (usize, FacetCounts, Ranked);
    type Child = (
        <tantivy::collector::Count as Collector>::Child,
        FacetsSegment,
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
        let by_bitmap = if self.bitmaps {
            self.counted
                .count_frequent_word(segment, &self.counting.1)?
        } else {
            None
        };
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

impl Clone for CachedFilter {
    fn clone(&self) -> Self {
        Self {
            key: self.key,
            inner: self.inner.clone(),
            caches: self.caches.clone(),
        }
    }
}

impl std::fmt::Debug for CachedFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFilter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Query for CachedFilter {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(CachedFilterWeight::new(self, scoring.schema())))
    }
}

struct CachedFilterWeight {
    key: [u8; 32],
    inner: LazyWeight,
    caches: Arc<SegmentCaches>,
}

impl CachedFilterWeight {
    fn new(filter: &CachedFilter, schema: &tantivy::schema::Schema) -> Self {
        Self {
            key: filter.key,
            inner: LazyWeight::new(filter.inner.clone(), schema.clone()),
            caches: filter.caches.clone(),
        }
    }

    /// The documents of `reader` the filter admits.
    fn bits(&self, reader: &SegmentReader) -> tantivy::Result<Arc<DocBits>> {
        self.caches.filter(reader, &self.key, &self.inner)
    }
}

impl Weight for CachedFilterWeight {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let bits = self.bits(reader)?;
        // A boolean query drops clauses that select everything or nothing from its
        // intersection: an auditor's search is then just the user's query.
        Ok(if bits.len == 0 {
            Box::new(EmptyScorer)
        } else if bits.len == reader.max_doc() {
            Box::new(AllScorer::new(reader.max_doc()))
        } else {
            Box::new(ConstScorer::new(BitsDocSet::new(bits), 0.0))
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
            query,
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
#[derive(Debug)]
pub struct Admitted {
    filter: CachedFilter,
    query: Box<dyn Query>,
}

impl Clone for Admitted {
    fn clone(&self) -> Self {
        Self {
            filter: self.filter.clone(),
            query: self.query.box_clone(),
        }
    }
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
            filter: CachedFilterWeight::new(&self.filter, scoring.schema()),
            query: self.query.weight(scoring)?,
            word: (self.query.downcast_ref::<TermQuery>()).map(|t| t.term().clone()),
        })
    }
}

struct AdmittedWeight {
    filter: CachedFilterWeight,
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
    /// Measured gain (BENCHMARKS.md, A/B at 1 M documents, `FASCICOLO_SEARCH_PLAIN=bitmaps`,
    /// two runs): the auditor's and staff's most frequent words, asked again, 48 / 30 % and
    /// 61 / 68 % faster at p50; eight clients 2 731 against 2 350 and 2 710 against 2 265
    /// searches/s. The distinct stream's words are seldom in most of a segment: no cell ≥ 10 %
    /// faster there.
    fn count_frequent_word(
        &self,
        reader: &SegmentReader,
        facets: &Facets<'_>,
    ) -> tantivy::Result<Option<(usize, FacetCounts)>> {
        let Some(word) = &self.word else {
            return Ok(None);
        };
        let bits = self.filter.bits(reader)?;
        if bits.len.saturating_mul(BITMAP_COUNT_DENSITY) < reader.max_doc() {
            return Ok(None);
        }
        let Some(held) = self.filter.caches.word_docs(reader, word)? else {
            return Ok(None);
        };
        let pairs = || bits.words.iter().zip(held.words.iter());
        let matched: u32 = pairs().map(|(a, h)| (a & h).count_ones()).sum();
        // Matches, or admitted documents lacking the word: whichever are fewer are visited.
        let by_absence = bits.len - matched < matched;
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
    fn admission(
        &self,
        reader: &SegmentReader,
        bits: Arc<DocBits>,
        boost: Score,
    ) -> tantivy::Result<Admission> {
        if bits.len == reader.max_doc() {
            return Ok(Admission::All);
        }
        let mut admitted = BitsDocSet::new(bits.clone());
        if admitted.doc() == TERMINATED {
            return Ok(Admission::Sparse(Box::new(EmptyScorer)));
        }
        // The query's scorer starts at the first admitted document without looking further
        // (tantivy's `scorer_danger`): a phrase's scorer made the ordinary way would first
        // compare the positions of every document holding its words up to its first match,
        // the whole segment for a phrase found nowhere in it.
        let (mut found, mut query) = self.query.scorer_danger(reader, admitted.doc(), boost)?;
        // A phrase's cost counts the positions it compares, so a phrase over frequent words
        // is led by the admitted documents, whose candidates alone it then checks.
        let dense = query.cost() <= u64::from(bits.len).saturating_mul(VISIT_RATIO);
        // Brought to a document it matches: run alone, the first at or after the first
        // admitted one; led by the admitted documents, the first they have in common (as
        // tantivy's boolean query aligns its clauses).
        while let SeekDangerResult::SeekLowerBound(next) = found {
            let doc = if dense { next } else { admitted.seek(next) };
            if doc == TERMINATED {
                return Ok(Admission::Sparse(Box::new(EmptyScorer)));
            }
            found = query.seek_danger(doc);
        }
        if dense {
            return Ok(Admission::Dense(bits, query));
        }
        Ok(Admission::Sparse(intersect_scorers(
            vec![query, Box::new(ConstScorer::new(admitted, 0.0))],
            reader.num_docs(),
        )))
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
        self.filter.explain(reader, doc)?;
        self.query.explain(reader, doc)
    }

    fn for_each(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score),
    ) -> tantivy::Result<()> {
        let (bits, mut scorer) = match self.admission(reader, self.filter.bits(reader)?, 1.0)? {
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
        let (bits, mut scorer) = match self.admission(reader, self.filter.bits(reader)?, 1.0)? {
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
        match self.admission(reader, self.filter.bits(reader)?, 1.0)? {
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

/// Copies the documents of `docs` (a buffer's worth at most) that `bits` admits to the start
/// of `admitted`; returns how many. Each is written, and kept only if admitted: no branch to
/// mispredict, and no bounds check, the position being taken modulo the buffer's length.
fn keep_admitted(
    bits: &DocBits,
    docs: &[DocId],
    admitted: &mut [DocId; COLLECT_BLOCK_BUFFER_LEN],
) -> usize {
    let words = &bits.words[..];
    let mut kept = 0;
    for &doc in docs.iter().take(COLLECT_BLOCK_BUFFER_LEN) {
        admitted[kept % COLLECT_BLOCK_BUFFER_LEN] = doc;
        let word = words.get((doc / 64) as usize).copied().unwrap_or(0);
        kept += ((word >> (doc % 64)) & 1) as usize;
    }
    kept
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

/// Iterates the documents of a [`DocBits`].
struct BitsDocSet {
    bits: Arc<DocBits>,
    /// Index of the word being read.
    word: usize,
    /// Its bits not yet returned.
    rest: u64,
    doc: DocId,
}

impl BitsDocSet {
    fn new(bits: Arc<DocBits>) -> Self {
        let rest = bits.words.first().copied().unwrap_or(0);
        let mut set = Self {
            bits,
            word: 0,
            rest,
            doc: 0,
        };
        set.advance();
        set
    }
}

impl DocSet for BitsDocSet {
    #[inline]
    fn advance(&mut self) -> DocId {
        loop {
            if self.rest != 0 {
                let bit = self.rest.trailing_zeros();
                self.rest &= self.rest - 1;
                self.doc = self.word as u32 * 64 + bit;
                return self.doc;
            }
            self.word += 1;
            match self.bits.words.get(self.word) {
                Some(&w) => self.rest = w,
                None => {
                    self.word = self.bits.words.len();
                    self.doc = TERMINATED;
                    return TERMINATED;
                }
            }
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        if target >= self.bits.max_doc {
            self.word = self.bits.words.len();
            self.rest = 0;
            self.doc = TERMINATED;
            return TERMINATED;
        }
        let word = (target / 64) as usize;
        if word > self.word {
            self.word = word;
            self.rest = self.bits.words.get(word).copied().unwrap_or(0);
        }
        self.rest &= u64::MAX << (target % 64);
        self.advance()
    }

    /// Whether `target` is admitted is one bit: the set moves there if it is, and stays
    /// where it was (a valid state before `target`) if it is not.
    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        if target >= self.bits.max_doc {
            return SeekDangerResult::SeekLowerBound(TERMINATED);
        }
        if target <= self.doc {
            return if target == self.doc {
                SeekDangerResult::Found
            } else {
                SeekDangerResult::SeekLowerBound(self.doc)
            };
        }
        if !self.bits.contains(target) {
            return SeekDangerResult::SeekLowerBound(target + 1);
        }
        self.word = (target / 64) as usize;
        // The bits after `target` in its word are still to be returned.
        self.rest = self.bits.words.get(self.word).copied().unwrap_or(0)
            & (u64::MAX << (target % 64))
            & !(1 << (target % 64));
        self.doc = target;
        SeekDangerResult::Found
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.bits.len
    }

    /// Led by the set, an intersection seeks every other clause once per admitted document;
    /// led by a clause, it asks the set one bit per document of the clause. A set is cheaper
    /// to follow than to lead unless it admits far fewer documents than the clause holds.
    fn cost(&self) -> u64 {
        u64::from(self.bits.len).saturating_mul(LEAD_COST)
    }
}

/// How many times a clause's document costs as much as seeking every other clause once: the
/// factor by which an admitted document weighs more than a clause's in choosing which of them
/// leads an intersection (see [`BitsDocSet::cost`]).
const LEAD_COST: u64 = 2;

#[cfg(test)]
mod tests {
    use super::super::cache::bits;
    use super::*;

    #[test]
    fn the_bit_docset_advances_and_seeks_like_a_sorted_list() {
        let docs = [0, 1, 63, 64, 65, 200, 1000, 1023];
        let mut set = BitsDocSet::new(bits(&docs, 1024));
        let mut seen = vec![set.doc()];
        while set.advance() != TERMINATED {
            seen.push(set.doc());
        }
        assert_eq!(seen, docs);
        let mut set = BitsDocSet::new(bits(&docs, 1024));
        assert_eq!(set.seek(2), 63);
        assert_eq!(set.seek(63), 63);
        assert_eq!(set.seek(66), 200);
        assert_eq!(set.seek(999), 1000);
        assert_eq!(set.advance(), 1023);
        assert_eq!(set.seek(1024), TERMINATED);
        let empty = BitsDocSet::new(bits(&[], 100));
        assert_eq!(empty.doc(), TERMINATED);
        assert_eq!(BitsDocSet::new(bits(&[5], 100)).size_hint(), 1);
    }

    #[test]
    fn the_bit_docset_answers_a_dangerous_seek_with_one_bit() {
        let docs = [0, 1, 63, 64, 65, 200, 1000, 1023];
        let mut set = BitsDocSet::new(bits(&docs, 1024));
        assert_eq!(set.seek_danger(2), SeekDangerResult::SeekLowerBound(3));
        assert_eq!(set.seek_danger(30), SeekDangerResult::SeekLowerBound(31));
        assert_eq!(set.seek_danger(63), SeekDangerResult::Found);
        assert_eq!(set.doc(), 63);
        assert_eq!(set.advance(), 64);
        assert_eq!(set.seek_danger(64), SeekDangerResult::Found);
        assert_eq!(set.seek_danger(199), SeekDangerResult::SeekLowerBound(200));
        assert_eq!(set.seek_danger(200), SeekDangerResult::Found);
        assert_eq!(set.advance(), 1000);
        assert_eq!(
            set.seek_danger(1024),
            SeekDangerResult::SeekLowerBound(TERMINATED)
        );
    }

    #[test]
    fn intersections_with_bit_docsets_match_whichever_leads() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let max_doc = 5000;
        for (dense, sparse) in [(0.9, 0.01), (0.5, 0.2), (0.05, 0.6), (0.3, 0.3)] {
            let a: Vec<DocId> = (0..max_doc).filter(|_| rng.random_bool(dense)).collect();
            let b: Vec<DocId> = (0..max_doc).filter(|_| rng.random_bool(sparse)).collect();
            let expected: Vec<DocId> = a.iter().copied().filter(|d| b.contains(d)).collect();
            let scorer = |docs: &[DocId]| -> Box<dyn Scorer> {
                Box::new(ConstScorer::new(BitsDocSet::new(bits(docs, max_doc)), 0.0))
            };
            let mut both = intersect_scorers(vec![scorer(&a), scorer(&b)], max_doc);
            let mut seen = Vec::new();
            while both.doc() != TERMINATED {
                seen.push(both.doc());
                both.advance();
            }
            assert_eq!(seen, expected, "densities {dense} and {sparse}");
        }
    }
}
