//! Permission filters kept per segment ([`CachedFilter`]): what a filter admits, read off
//! its kept bitset; browsing what it admits newest first; counting and ranking the matches of
//! words among the admitted documents, a window of documents at a time; the top of a page.

use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::postings::BlockSegmentPostings;
use tantivy::query::{
    AllScorer, BooleanQuery, ConstScorer, EmptyScorer, EnableScoring, Explanation, Occur, Query,
    Scorer, TermQuery, Weight, intersect_scorers,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{
    COLLECT_BLOCK_BUFFER_LEN, DocAddress, DocId, DocSet, Score, Searcher, SeekDangerResult,
    SegmentOrdinal, SegmentReader, TERMINATED, Term,
};
use tantivy_common::TinySet;

use super::cache::{DocBits, FilterKey, LazyWeight, SegmentCaches, WordDocs};
use super::facets::{FacetCounts, FacetSegment};

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
            let table = self.caches.facets(segment)?;
            let counts = bits.alive_counts(segment, &table);
            let here: u64 = counts.counts.iter().map(|&n| u64::from(n)).sum();
            if here == 0 {
                continue;
            }
            total += here;
            fruits.push(super::facets::of_counts(&table, &counts.counts));
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

/// The best matches of a query, by score, among the documents a kept filter admits, from
/// `skip` on: see [`CachedFilter::top`].
pub struct AdmittedTop {
    filter: CachedFilter,
    /// The filter's query, made into a weight once for all segments if one must be evaluated.
    inner: LazyWeight,
    skip: usize,
    take: usize,
}

impl CachedFilter {
    /// A collector of the `skip..skip + take` best-scoring matches the filter admits. Run
    /// over the user's query alone, it lets tantivy skip the blocks of postings whose best
    /// score cannot enter the page (block-max WAND), testing the filter's bit only for the
    /// documents that could: exact, since a skipped document scores no more than the worst
    /// admitted one kept so far. Over a sparse filter the admitted documents are few and are
    /// leapfrogged with the query instead.
    pub fn top(&self, searcher: &Searcher, skip: usize, take: usize) -> AdmittedTop {
        AdmittedTop {
            filter: self.clone(),
            inner: LazyWeight::new(self.inner.clone(), searcher.schema().clone()),
            skip,
            take,
        }
    }
}

/// A filter admitting fewer than one document in this many of a segment is leapfrogged with
/// the query: the best scores among so few rarely prune anything.
const PRUNE_DENSITY: u32 = 4;

impl Collector for AdmittedTop {
    type Fruit = Vec<(Score, DocAddress)>;
    type Child = AdmittedSegment;

    fn for_segment(
        &self,
        segment_ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<AdmittedSegment> {
        Ok(AdmittedSegment {
            bits: self
                .filter
                .caches
                .filter(segment, &self.filter.key, &self.inner)?,
            alive: segment.alive_bitset().cloned(),
            best: Best::new(self.skip.saturating_add(self.take)),
            segment_ord,
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let mut all: Vec<(Score, DocAddress)> = fruits.into_iter().flatten().collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(all.into_iter().skip(self.skip).take(self.take).collect())
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Fruit> {
        let mut child = self.for_segment(segment_ord, segment)?;
        if child.bits.len == 0 {
            return Ok(Vec::new());
        }
        if child.bits.len.saturating_mul(PRUNE_DENSITY) >= segment.max_doc() {
            weight.for_each_pruning(Score::MIN, segment, &mut |doc, score| {
                child.collect(doc, score);
                child.best.threshold()
            })?;
        } else {
            let mut scorer = intersect_scorers(
                vec![
                    weight.scorer(segment, 1.0)?,
                    Box::new(ConstScorer::new(BitsDocSet::new(child.bits.clone()), 0.0)),
                ],
                segment.num_docs(),
            );
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                child.collect(doc, scorer.score());
                doc = scorer.advance();
            }
        }
        Ok(child.harvest())
    }
}

/// Counts and facets the matches of a query a [`CachedFilter`] admits, and ranks the best of
/// them, segment by segment: both passes over a segment run one after the other on the same
/// thread, while its postings are still in the processor's caches, and a search over every
/// core hands each segment to a thread once, not once per pass.
pub struct CountedTop<'a> {
    /// The admitted matches, unscored ([`CachedFilter::admit`]).
    counted: AdmittedWeight,
    counting: (tantivy::collector::Count, super::facets::FacetCollector<'a>),
    top: AdmittedTop,
}

impl<'a> CountedTop<'a> {
    /// Counts and facets what `counted` matches in `searcher`; ranks with `top` (over the
    /// words alone, the weight the search is run with).
    pub fn new(
        counted: &Admitted,
        searcher: &Searcher,
        facets: super::facets::FacetCollector<'a>,
        top: AdmittedTop,
    ) -> tantivy::Result<Self> {
        Ok(Self {
            counted: counted.admitted_weight(EnableScoring::disabled_from_searcher(searcher))?,
            counting: (tantivy::collector::Count, facets),
            top,
        })
    }
}

impl Collector for CountedTop<'_> {
    type Fruit = (usize, FacetCounts, Vec<(Score, DocAddress)>);
    type Child = (
        <tantivy::collector::Count as Collector>::Child,
        FacetSegment,
        AdmittedSegment,
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
        let (count, facets) = match self.counted.count_frequent_word(segment)? {
            Some(counted) => counted,
            None => self
                .counting
                .collect_segment(&self.counted, segment_ord, segment)?,
        };
        let page = self.top.collect_segment(weight, segment_ord, segment)?;
        Ok((count, facets, page))
    }
}

/// [`AdmittedTop`] in one segment.
pub struct AdmittedSegment {
    bits: Arc<DocBits>,
    alive: Option<tantivy::fastfield::AliveBitSet>,
    best: Best,
    segment_ord: SegmentOrdinal,
}

impl SegmentCollector for AdmittedSegment {
    type Fruit = Vec<(Score, DocAddress)>;

    fn collect(&mut self, doc: DocId, score: Score) {
        if self.bits.contains(doc) && self.alive.as_ref().is_none_or(|a| a.is_alive(doc)) {
            self.best.offer(score, doc);
        }
    }

    fn harvest(self) -> Self::Fruit {
        let ord = self.segment_ord;
        self.best
            .into_sorted()
            .into_iter()
            .map(|(score, doc)| (score, DocAddress::new(ord, doc)))
            .collect()
    }
}

/// The `k` best (score, document) pairs offered: the higher score first, the earlier
/// document on a tie (tantivy's order).
struct Best {
    k: usize,
    /// Worst on top.
    heap: std::collections::BinaryHeap<Ranked>,
}

/// A pair ordered worst-last: a lower score, or on a tie a later document, is greater.
struct Ranked(Score, DocId);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Ranked {}

impl Best {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k.min(1024)),
        }
    }

    fn offer(&mut self, score: Score, doc: DocId) {
        let ranked = Ranked(score, doc);
        if self.heap.len() < self.k {
            self.heap.push(ranked);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && ranked < *worst
        {
            *worst = ranked;
        }
    }

    /// The score a document must beat to enter: the worst kept, once there are `k`.
    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => worst.0,
            _ => Score::MIN,
        }
    }

    fn into_sorted(self) -> Vec<(Score, DocId)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Ranked(score, doc)| (score, doc))
            .collect()
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
        let mut terms = Vec::new();
        let of_terms = conjunction_of_terms(self.query.as_ref(), &mut terms);
        let word = match terms.as_slice() {
            [term] if of_terms => Some((term.term().clone(), WordDocs::key(term.term()))),
            _ => None,
        };
        let conjunction = if of_terms && terms.len() > 1 {
            terms.iter().map(|t| t.term().clone()).collect()
        } else {
            Vec::new()
        };
        Ok(AdmittedWeight {
            filter: CachedFilterWeight::new(&self.filter, scoring.schema()),
            query: self.query.weight(scoring)?,
            conjunction,
            word,
        })
    }
}

/// Whether `query` matches the documents holding every one of some words (a word, or words
/// all required), which it adds to `terms`.
fn conjunction_of_terms<'a>(query: &'a dyn Query, terms: &mut Vec<&'a TermQuery>) -> bool {
    if let Some(term) = query.downcast_ref::<TermQuery>() {
        terms.push(term);
        return true;
    }
    query.downcast_ref::<BooleanQuery>().is_some_and(|b| {
        b.clauses()
            .iter()
            .all(|(occur, q)| *occur == Occur::Must && conjunction_of_terms(q.as_ref(), terms))
    })
}

struct AdmittedWeight {
    filter: CachedFilterWeight,
    query: Box<dyn Weight>,
    /// When the query requires two words or more: each word.
    conjunction: Vec<Term>,
    /// When the query is a single word: the word, and the key its bitmap is kept under in a
    /// segment where it is frequent ([`WordDocs`]).
    word: Option<(Term, [u8; 32])>,
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
        let query = self.query.scorer(reader, boost)?;
        // A phrase's cost counts the positions it compares, so a phrase over frequent words
        // is led by the admitted documents, whose candidates alone it then checks.
        Ok(
            if query.cost() <= u64::from(bits.len).saturating_mul(VISIT_RATIO) {
                Admission::Dense(bits, query)
            } else {
                Admission::Sparse(intersect_scorers(
                    vec![
                        query,
                        Box::new(ConstScorer::new(BitsDocSet::new(bits), 0.0)),
                    ],
                    reader.num_docs(),
                ))
            },
        )
    }
}

/// A conjunction is matched window by window when its rarest word is in at least one document
/// in this many of the segment (eight per window on average): below that, most windows hold
/// none of its documents. Words are decoded a block at a time, so a window costs little more
/// than its documents; at 1 in 32 the benchmark's two-word searches were 0.1–0.3 ms slower.
const WINDOW_DENSITY: u64 = 128;

/// The 64-document words of a window.
const WINDOW_WORDS: usize = 16;
/// The documents of a window.
const WINDOW_DOCS: DocId = 64 * WINDOW_WORDS as DocId;

/// A word's postings in a segment, documents only, read a decoded block at a time; `None` when
/// no document of the segment holds it.
fn word_postings(
    reader: &SegmentReader,
    word: &Term,
) -> tantivy::Result<Option<BlockSegmentPostings>> {
    Ok(reader
        .inverted_index(word.field())?
        .read_block_postings(word, IndexRecordOption::Basic)?)
}

/// A word's postings, read a decoded block at a time to mark windows of documents.
struct WordWindows(BlockSegmentPostings);

impl WordWindows {
    /// Marks the word's documents from `base` (on or after every document marked before) to
    /// the end of its window; returns the word's first document after the window.
    fn mark(&mut self, base: DocId, window: &mut [TinySet; WINDOW_WORDS]) -> DocId {
        let end = base.saturating_add(WINDOW_DOCS);
        let mut from = self.0.seek(base);
        loop {
            let docs = self.0.docs();
            if docs.is_empty() {
                return TERMINATED;
            }
            for &doc in docs.get(from..).unwrap_or_default() {
                if doc >= end {
                    return doc;
                }
                let at = doc - base;
                if let Some(word) = window.get_mut((at / 64) as usize) {
                    word.insert_mut(at % 64);
                }
            }
            self.0.advance();
            from = 0;
        }
    }
}

impl AdmittedWeight {
    /// Matches a conjunction of frequent words under a broad filter a window of 1 024 documents
    /// at a time: each word marks its documents of the window in a bitmap, the bitmaps and the
    /// filter's bits are ANDed, and the documents left are handed on. Leapfrogging the words'
    /// postings instead costs a seek per candidate, and each seek branches unpredictably.
    /// Returns whether it ran (a single word is left to [`AdmittedWeight::word_blocks`], a
    /// sparse filter or a rare word to [`AdmittedWeight::admission`]).
    fn windowed(
        &self,
        reader: &SegmentReader,
        bits: &Arc<DocBits>,
        callback: &mut dyn FnMut(&[DocId]),
    ) -> tantivy::Result<bool> {
        if self.conjunction.len() < 2 {
            return Ok(false);
        }
        let max_doc = reader.max_doc();
        if bits.len.saturating_mul(PRUNE_DENSITY) < max_doc {
            return Ok(false);
        }
        let mut words = Vec::with_capacity(self.conjunction.len());
        for term in &self.conjunction {
            let Some(postings) = word_postings(reader, term)? else {
                // A word in no document of the segment: nothing matches.
                return Ok(true);
            };
            words.push(WordWindows(postings));
        }
        let rarest = words.iter().map(|w| w.0.doc_freq()).min().unwrap_or(0);
        if u64::from(rarest).saturating_mul(WINDOW_DENSITY) < u64::from(max_doc) {
            return Ok(false);
        }
        let bits = (bits.len < max_doc).then_some(bits);
        let mut found = [0; COLLECT_BLOCK_BUFFER_LEN];
        let mut n = 0;
        // Every word is at or before `base` when a window starts: a word is only sought forward.
        let mut base = words.iter().map(|w| w.0.doc(0)).max().unwrap_or(TERMINATED);
        while base < max_doc {
            let mut window = [TinySet::empty(); WINDOW_WORDS];
            let mut next = words[0].mark(base, &mut window);
            for word in &mut words[1..] {
                let mut marked = [TinySet::empty(); WINDOW_WORDS];
                next = next.max(word.mark(base, &mut marked));
                for (w, m) in window.iter_mut().zip(marked) {
                    *w = w.intersect(m);
                }
            }
            for (i, w) in window.iter_mut().enumerate() {
                let start = base + i as u32 * 64;
                if let Some(bits) = &bits {
                    *w = w.intersect(TinySet::deserialize(bits.word_at(start).to_le_bytes()));
                }
                while let Some(bit) = w.pop_lowest() {
                    found[n] = start + bit;
                    n += 1;
                    if n == found.len() {
                        callback(&found);
                        n = 0;
                    }
                }
            }
            base = next;
        }
        if n > 0 {
            callback(&found[..n]);
        }
        Ok(true)
    }

    /// Matches a single word a decoded block of its postings at a time, keeping the
    /// documents the filter admits without a branch: a document costs a bit test instead of
    /// an advance of the word's scorer. Returns whether it ran (a sparse filter leads an
    /// intersection instead, see [`AdmittedWeight::admission`]).
    fn word_blocks(
        &self,
        reader: &SegmentReader,
        bits: &Arc<DocBits>,
        callback: &mut dyn FnMut(&[DocId]),
    ) -> tantivy::Result<bool> {
        let Some((word, _)) = &self.word else {
            return Ok(false);
        };
        let Some(mut blocks) = word_postings(reader, word)? else {
            return Ok(true);
        };
        let all = bits.len == reader.max_doc();
        if !all && u64::from(blocks.doc_freq()) > u64::from(bits.len).saturating_mul(VISIT_RATIO) {
            return Ok(false);
        }
        let mut admitted = [0; COLLECT_BLOCK_BUFFER_LEN];
        loop {
            let docs = blocks.docs();
            if docs.is_empty() {
                return Ok(true);
            }
            if all {
                callback(docs);
            } else {
                for docs in docs.chunks(COLLECT_BLOCK_BUFFER_LEN) {
                    let kept = keep_admitted(bits, docs, &mut admitted);
                    if kept > 0 {
                        callback(&admitted[..kept]);
                    }
                }
            }
            blocks.advance();
        }
    }
}

/// A filter admitting fewer than one document in this many of a segment leaves counting a
/// frequent word to the intersection of the filter with the word's postings.
const BITMAP_COUNT_DENSITY: u32 = 8;

impl AdmittedWeight {
    /// Counts and facets the admitted documents holding a word found in most of the segment
    /// from the word's bitmap ([`WordDocs`]), 64 documents at a time: matches are counted one
    /// by one when they are fewer than the admitted documents lacking the word, otherwise
    /// those are taken off the admitted documents' counts per combination, which the filter
    /// keeps ([`DocBits::alive_counts`]). `None` when the query is not a single word, the
    /// word is not that frequent here, or the filter admits few documents.
    fn count_frequent_word(
        &self,
        reader: &SegmentReader,
    ) -> tantivy::Result<Option<(usize, FacetCounts)>> {
        let Some((word, key)) = &self.word else {
            return Ok(None);
        };
        let bits = self.filter.bits(reader)?;
        if bits.len.saturating_mul(BITMAP_COUNT_DENSITY) < reader.max_doc() {
            return Ok(None);
        }
        let caches = &self.filter.caches;
        let Some(held) = caches.word_docs(reader, word, key)? else {
            return Ok(None);
        };
        let table = caches.facets(reader)?;
        let matched: u32 = bits
            .words
            .iter()
            .zip(held.words.iter())
            .map(|(admitted, holds)| (admitted & holds).count_ones())
            .sum();
        let alive = reader.alive_bitset();
        // Matches, or admitted documents lacking the word: whichever are fewer are visited.
        let by_absence = bits.len - matched < matched;
        let kept = by_absence.then(|| bits.alive_counts(reader, &table));
        let mut counts = match &kept {
            Some(kept) => kept.counts.clone(),
            None => vec![0; table.combinations()],
        };
        let lacking = if by_absence { !0 } else { 0 };
        let mut visited = 0usize;
        for (at, (admitted, holds)) in bits.words.iter().zip(held.words.iter()).enumerate() {
            let mut rest = admitted & (holds ^ lacking);
            while rest != 0 {
                let doc = at as DocId * 64 + rest.trailing_zeros();
                rest &= rest - 1;
                if alive.is_none_or(|a| a.is_alive(doc))
                    && let Some(n) = table.combo_of(doc).and_then(|c| counts.get_mut(c))
                {
                    *n = if by_absence {
                        n.saturating_sub(1)
                    } else {
                        *n + 1
                    };
                    visited += 1;
                }
            }
        }
        let total = match &kept {
            Some(kept) => {
                let admitted: usize = kept.counts.iter().map(|&n| n as usize).sum();
                admitted.saturating_sub(visited)
            }
            None => visited,
        };
        Ok(Some((total, super::facets::of_counts(&table, &counts))))
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
        let bits = self.filter.bits(reader)?;
        if self.windowed(reader, &bits, callback)? || self.word_blocks(reader, &bits, callback)? {
            return Ok(());
        }
        let (bits, mut scorer) = match self.admission(reader, bits, 1.0)? {
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
pub(super) fn prune_scorer(
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
    fn a_word_of_admissions_starts_at_any_document() {
        let docs = [3, 64, 100, 127, 128, 190];
        let b = bits(&docs, 200);
        for first in 0..200 {
            let expected = (0..64u32)
                .filter(|i| docs.contains(&(first + i)))
                .fold(0u64, |w, i| w | 1 << i);
            assert_eq!(b.word_at(first), expected, "from {first}");
        }
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
