//! What searches compute from a segment's documents alone, kept per segment.
//!
//! A segment never changes once written: deletions are applied at collection time through its
//! alive bitset, and an updated document is a new document in a newer segment. So the facet
//! values of a segment's documents, their order by date, or the documents a permission admits,
//! stay true until the segment is merged away. They are built once (facets when a reader
//! reload brings a segment in, filters and the date order on first use), and dropped when
//! their segment leaves the index. What depends on deletions too (the facet counts of what a
//! filter admits) is kept with the number of deletions it was counted at, and counted again
//! when that number grows. The matches of a phrase of frequent words are kept too, once walked
//! (see [`PhraseMatches`]), and the documents of a word found in most of a segment, as a bitmap
//! (see [`WordDocs`]), each within their own memory budget.

use crate::lock;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::index::SegmentId;
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

use super::facets::{FACETS, FacetCounts, FacetSegment, STRING_FACETS};

/// Memory the permission filters may take, over all segments and callers.
const FILTER_BYTES: usize = 64 * 1024 * 1024;
/// Memory the matches of phrases may take, over all segments.
const PHRASE_BYTES: usize = 64 * 1024 * 1024;
/// Memory the bitmaps of frequent words may take, over all segments: 128 words over a
/// million documents.
const WORD_BYTES: usize = 16 * 1024 * 1024;
/// Documents whose facet values are read per column access while building a table.
const BUILD_BLOCK: u32 = 1024;

/// The per-segment caches of one index.
pub struct SegmentCaches {
    facets: Mutex<HashMap<SegmentId, Arc<SegmentFacets>>>,
    filters: Mutex<Kept<DocBits>>,
    phrases: Mutex<Kept<PhraseMatches>>,
    words: Mutex<Kept<WordDocs>>,
}

impl Default for SegmentCaches {
    fn default() -> Self {
        Self {
            facets: Mutex::default(),
            filters: Mutex::new(Kept::new(FILTER_BYTES)),
            phrases: Mutex::new(Kept::new(PHRASE_BYTES)),
            words: Mutex::new(Kept::new(WORD_BYTES)),
        }
    }
}

impl std::fmt::Debug for SegmentCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCaches").finish_non_exhaustive()
    }
}

impl SegmentCaches {
    /// The facet table of a segment, built now if it was not yet.
    pub fn facets(&self, segment: &SegmentReader) -> tantivy::Result<Arc<SegmentFacets>> {
        let id = segment.segment_id();
        if let Some(table) = lock(&self.facets).get(&id) {
            return Ok(table.clone());
        }
        let table = Arc::new(SegmentFacets::build(segment)?);
        lock(&self.facets).insert(id, table.clone());
        Ok(table)
    }

    /// The documents of `segment` the filter named `key` admits; evaluated with `inner` (built
    /// only then: a filter's query can have hundreds of terms) when not kept.
    fn filter(
        &self,
        segment: &SegmentReader,
        key: &[u8; 32],
        inner: &LazyWeight,
    ) -> tantivy::Result<Arc<DocBits>> {
        let id = segment.segment_id();
        if let Some(bits) = lock(&self.filters).get(id, key) {
            return Ok(bits);
        }
        let combinations = self.facets(segment)?.combinations();
        let mut bits = DocBits::empty(segment.max_doc(), combinations);
        inner.get()?.for_each_no_score(segment, &mut |docs| {
            for &doc in docs {
                bits.insert(doc);
            }
        })?;
        let bits = Arc::new(bits);
        lock(&self.filters).insert(id, *key, bits.clone());
        Ok(bits)
    }

    /// Forgets everything about segments no longer in `live`.
    fn retain(&self, live: &HashSet<SegmentId>) {
        lock(&self.facets).retain(|id, _| live.contains(id));
        lock(&self.filters).retain(live);
        lock(&self.phrases).retain(live);
        lock(&self.words).retain(live);
    }

    /// The documents of `segment` holding `word` (its key [`WordDocs::key`]) when it is in
    /// more than half of them; built now if not kept. `None` for a rarer word.
    fn word_docs(
        &self,
        segment: &SegmentReader,
        word: &Term,
        key: &[u8; 32],
    ) -> tantivy::Result<Option<Arc<WordDocs>>> {
        let index = segment.inverted_index(word.field())?;
        let Some(info) = index.get_term_info(word)? else {
            return Ok(None);
        };
        if u64::from(info.doc_freq).saturating_mul(FREQUENT_WORD) <= u64::from(segment.max_doc()) {
            return Ok(None);
        }
        let id = segment.segment_id();
        if let Some(docs) = lock(&self.words).get(id, key) {
            return Ok(Some(docs));
        }
        let postings = index.read_block_postings_from_terminfo(&info, IndexRecordOption::Basic)?;
        let docs = Arc::new(WordDocs::build(segment.max_doc(), postings));
        lock(&self.words).insert(id, *key, docs.clone());
        Ok(Some(docs))
    }

    /// The matches of the phrase named `key` in `segment`, if kept.
    pub fn phrase(&self, segment: SegmentId, key: &[u8; 32]) -> Option<Arc<PhraseMatches>> {
        lock(&self.phrases).get(segment, key)
    }

    /// Keeps the matches of the phrase named `key` in `segment`.
    pub fn keep_phrase(&self, segment: SegmentId, key: [u8; 32], matches: Arc<PhraseMatches>) {
        lock(&self.phrases).insert(segment, key, matches);
    }
}

impl tantivy::Warmer for SegmentCaches {
    fn warm(&self, searcher: &tantivy::Searcher) -> tantivy::Result<()> {
        for segment in searcher.segment_readers() {
            self.facets(segment)?;
        }
        Ok(())
    }

    fn garbage_collect(&self, live_generations: &[&tantivy::SearcherGeneration]) {
        let live: HashSet<SegmentId> = live_generations
            .iter()
            .flat_map(|g| g.segments().keys().copied())
            .collect();
        self.retain(&live);
    }
}

/// The facet values of every document of a segment, as one number per document: the index of
/// its combination of values. Counting a match is then one read and one increment, however
/// many facets there are.
pub struct SegmentFacets {
    /// Combination of each document.
    combo: Combos,
    /// Per combination: the slot of its value of each facet (string facets, then the year).
    slots: Vec<[u32; 4]>,
    /// Per slot: the facet (an index into [`FACETS`]) and the value; a last slot, of no facet,
    /// takes the combinations without a value.
    names: Vec<(usize, String)>,
    /// The documents newest first (see [`SegmentFacets::newest_first`]), sorted on first use.
    newest: OnceLock<Vec<DocId>>,
}

/// The combination of each document: in two bytes when a segment has at most 65 536
/// combinations, which halves what counting a broad search's matches reads; in four beyond.
pub enum Combos {
    /// Up to 65 536 combinations.
    Narrow(Vec<u16>),
    /// More.
    Wide(Vec<u32>),
}

/// A combination's number, as stored per document.
pub trait Combo: Copy {
    /// As an index.
    fn index(self) -> usize;
}

impl Combo for u16 {
    #[inline]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl Combo for u32 {
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

/// Segments with at most this many combinations keep them in two bytes a document.
const NARROW_COMBINATIONS: usize = 1 << 16;

impl SegmentFacets {
    fn build(segment: &SegmentReader) -> tantivy::Result<Self> {
        Self::build_narrow_up_to(segment, NARROW_COMBINATIONS)
    }

    /// [`SegmentFacets::build`], two bytes a document up to `narrow` combinations.
    pub(crate) fn build_narrow_up_to(
        segment: &SegmentReader,
        narrow: usize,
    ) -> tantivy::Result<Self> {
        let fast = segment.fast_fields();
        let mut columns: Vec<Option<Column<u64>>> = Vec::new();
        let mut terms = Vec::new();
        for name in STRING_FACETS {
            let column = fast.str(name)?;
            let mut names = Vec::new();
            if let Some(c) = &column {
                for ord in 0..c.num_terms() as u64 {
                    let mut name = String::new();
                    c.ord_to_str(ord, &mut name)?;
                    names.push(name);
                }
            }
            terms.push(names);
            columns.push(column.map(|c| c.ords().clone()));
        }
        columns.push(fast.u64("year").ok());
        let max_doc = segment.max_doc();
        let mut combo = Vec::with_capacity(max_doc as usize);
        let mut values: Vec<[u64; 4]> = Vec::new();
        let mut index: HashMap<[u64; 4], u32> = HashMap::new();
        let mut docs: Vec<DocId> = Vec::with_capacity(BUILD_BLOCK as usize);
        let mut read = vec![vec![None; BUILD_BLOCK as usize]; columns.len()];
        let mut start = 0;
        while start < max_doc {
            let end = (start + BUILD_BLOCK).min(max_doc);
            docs.clear();
            docs.extend(start..end);
            for (column, out) in columns.iter().zip(read.iter_mut()) {
                let out = &mut out[..docs.len()];
                match column {
                    Some(c) => c.first_vals(&docs, out),
                    None => out.fill(None),
                }
            }
            for (i, _) in docs.iter().enumerate() {
                let key = [0, 1, 2, 3].map(|c| read[c][i].unwrap_or(u64::MAX));
                let next = values.len() as u32;
                let n = *index.entry(key).or_insert_with(|| {
                    values.push(key);
                    next
                });
                combo.push(n);
            }
            start = end;
        }
        let combo = if values.len() <= narrow.min(NARROW_COMBINATIONS) {
            Combos::Narrow(combo.into_iter().map(|c| c as u16).collect())
        } else {
            Combos::Wide(combo)
        };
        // Slots: each string facet's terms in ordinal order, the years present, then the slot
        // of no value.
        let mut names = Vec::new();
        let mut first = Vec::new();
        for (facet, terms) in terms.into_iter().enumerate() {
            first.push(names.len());
            names.extend(terms.into_iter().map(|t| (facet, t)));
        }
        let mut years: Vec<u64> = values.iter().map(|v| v[STRING_FACETS.len()]).collect();
        years.sort_unstable();
        years.dedup();
        years.retain(|&y| y != u64::MAX);
        let first_year = names.len();
        names.extend(years.iter().map(|y| (STRING_FACETS.len(), y.to_string())));
        let none = names.len() as u32;
        names.push((FACETS.len(), String::new()));
        let slots = values
            .iter()
            .map(|v| {
                let mut slots = [none; 4];
                for (facet, &ord) in v[..STRING_FACETS.len()].iter().enumerate() {
                    let slot = usize::try_from(ord)
                        .ok()
                        .and_then(|ord| first[facet].checked_add(ord))
                        .filter(|&slot| slot < first_year && names[slot].0 == facet);
                    if let Some(slot) = slot {
                        slots[facet] = slot as u32;
                    }
                }
                if let Ok(at) = years.binary_search(&v[STRING_FACETS.len()]) {
                    slots[STRING_FACETS.len()] = (first_year + at) as u32;
                }
                slots
            })
            .collect();
        Ok(Self {
            combo,
            slots,
            names,
            newest: OnceLock::new(),
        })
    }

    /// The segment's documents by `date`, newest first, the earlier document first on a tie
    /// and documents without a date last: the order of a search sorted by date. Sorted the
    /// first time a segment is browsed (the first browse of a 1 M index, filter included,
    /// took 50–80 ms, the next ones 2 ms) and kept with the segment: 4 bytes a document.
    fn newest_first(&self, segment: &SegmentReader) -> tantivy::Result<&[DocId]> {
        if let Some(order) = self.newest.get() {
            return Ok(order);
        }
        let docs: Vec<DocId> = (0..segment.max_doc()).collect();
        let mut dates = vec![None; docs.len()];
        if let Some(column) = segment.fast_fields().column_opt::<i64>("date")? {
            column.first_vals(&docs, &mut dates);
        }
        let mut order = docs;
        // Stable: equal dates keep the documents' own order.
        order.sort_by_key(|&doc| Reverse(dates[doc as usize]));
        Ok(self.newest.get_or_init(|| order))
    }

    /// Number of distinct combinations.
    pub fn combinations(&self) -> usize {
        self.slots.len()
    }

    /// The combination of a document.
    #[inline]
    pub fn combo_of(&self, doc: DocId) -> Option<usize> {
        match &self.combo {
            Combos::Narrow(c) => c.get(doc as usize).map(|&c| c.index()),
            Combos::Wide(c) => c.get(doc as usize).map(|&c| c.index()),
        }
    }

    /// The combination of every document, by document.
    pub fn combos(&self) -> &Combos {
        &self.combo
    }

    /// Counts per slot, zero, for [`SegmentFacets::tally`] and [`SegmentFacets::named`].
    pub fn by_slot(&self) -> Vec<u64> {
        vec![0; self.names.len()]
    }

    /// Adds `n` matches of combination `combo` to the counts of its values.
    #[inline]
    pub fn tally(&self, combo: usize, n: u64, by_slot: &mut [u64]) {
        if let Some(slots) = self.slots.get(combo) {
            for &slot in slots {
                if let Some(c) = by_slot.get_mut(slot as usize) {
                    *c += n;
                }
            }
        }
    }

    /// Adds the matches of every combination, `counts` by combination, to the counts of their
    /// values. A combination with none adds zero: no branch to mispredict.
    pub fn tally_all(&self, counts: &[u32], by_slot: &mut [u64]) {
        for (slots, &n) in self.slots.iter().zip(counts) {
            for &slot in slots {
                if let Some(c) = by_slot.get_mut(slot as usize) {
                    *c += u64::from(n);
                }
            }
        }
    }

    /// The counts per slot by facet and value, every facet present.
    pub fn named(&self, by_slot: &[u64]) -> FacetCounts {
        let mut out: FacetCounts = FACETS
            .iter()
            .map(|name| ((*name).to_owned(), Default::default()))
            .collect();
        for ((facet, value), &n) in self.names.iter().zip(by_slot) {
            if n > 0
                && let Some(counts) = FACETS.get(*facet).and_then(|name| out.get_mut(*name))
            {
                *counts.entry(value.clone()).or_default() += n;
            }
        }
        out
    }
}

/// The documents of a segment a filter admits.
pub struct DocBits {
    words: Box<[u64]>,
    len: u32,
    max_doc: u32,
    /// Facet combinations of the segment: the size of [`DocBits::counts`].
    combinations: usize,
    /// What browsing counts, kept for the segment's deletions when they were counted.
    counts: Mutex<Option<Arc<AliveCounts>>>,
}

/// How many of the admitted documents not deleted have each facet combination.
struct AliveCounts {
    /// The segment's deleted documents when counted. A segment's deletions only grow, so
    /// the same number means the same documents.
    deleted: u32,
    counts: Vec<u32>,
}

impl DocBits {
    fn empty(max_doc: u32, combinations: usize) -> Self {
        Self {
            words: vec![0; (max_doc as usize).div_ceil(64)].into_boxed_slice(),
            len: 0,
            max_doc,
            combinations,
            counts: Mutex::new(None),
        }
    }

    /// Whether the filter admits `doc`.
    fn contains(&self, doc: DocId) -> bool {
        self.words
            .get((doc / 64) as usize)
            .is_some_and(|w| w & (1 << (doc % 64)) != 0)
    }

    /// The admission of the 64 documents from `first` on, the first in the lowest bit.
    fn word_at(&self, first: DocId) -> u64 {
        let word = |i: usize| self.words.get(i).copied().unwrap_or(0);
        let (i, shift) = ((first / 64) as usize, first % 64);
        if shift == 0 {
            word(i)
        } else {
            (word(i) >> shift) | (word(i + 1) << (64 - shift))
        }
    }

    /// The admitted documents in order.
    fn iter(&self) -> impl Iterator<Item = DocId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros();
                    rest &= rest - 1;
                    i as u32 * 64 + bit
                })
            })
        })
    }

    /// The facet combinations of the admitted documents `segment` has not deleted, counted
    /// once per state of its deletions.
    fn alive_counts(&self, segment: &SegmentReader, table: &SegmentFacets) -> Arc<AliveCounts> {
        let deleted = segment.num_deleted_docs();
        if let Some(counts) = lock(&self.counts).as_ref()
            && counts.deleted == deleted
        {
            return counts.clone();
        }
        let mut counts = vec![0u32; table.combinations()];
        let alive = segment.alive_bitset();
        for doc in self.iter() {
            if alive.is_none_or(|a| a.is_alive(doc))
                && let Some(c) = table.combo_of(doc).and_then(|c| counts.get_mut(c))
            {
                *c += 1;
            }
        }
        let counts = Arc::new(AliveCounts { deleted, counts });
        *lock(&self.counts) = Some(counts.clone());
        counts
    }

    fn insert(&mut self, doc: DocId) {
        if let Some(w) = self.words.get_mut((doc / 64) as usize) {
            let bit = 1u64 << (doc % 64);
            if *w & bit == 0 {
                *w |= bit;
                self.len += 1;
            }
        }
    }
}

/// Every document of a segment holding a phrase, in order, with how many times it holds it:
/// what a pair index would store for the phrase, found by walking the words' positions once.
/// A segment never changes, so they stay true until it is merged away; deleted documents are
/// among them, and are left out when matches are collected, as for any query.
#[derive(Debug, Default)]
pub struct PhraseMatches {
    /// The documents, in increasing order.
    pub docs: Vec<DocId>,
    /// The phrase's occurrences in each.
    pub counts: Vec<u32>,
    /// For each [`MATCH_BLOCK`] matches in turn: the most occurrences and the shortest field
    /// (its fieldnorm id), which bound the best score among them.
    pub bounds: Vec<(u32, u8)>,
}

/// The matches a bound of [`PhraseMatches::bounds`] covers.
pub const MATCH_BLOCK: usize = 128;

impl Weighed for PhraseMatches {
    fn bytes(&self) -> usize {
        (self.docs.len() + self.counts.len()) * 4 + self.bounds.len() * 8
    }
}

/// What a segment's entry of a [`Kept`] costs in memory.
pub trait Weighed {
    /// Bytes held.
    fn bytes(&self) -> usize;
}

impl Weighed for DocBits {
    fn bytes(&self) -> usize {
        self.words.len() * 8 + self.combinations * 4
    }
}

/// The documents of a segment holding a word found in more than half of them
/// ([`FREQUENT_WORD`]), a bit each: counting such a word under a broad filter reads 64
/// documents at a time from it instead of every document from the word's postings (see
/// [`AdmittedWeight::count_frequent_word`]). Like an index that stores dense postings as a
/// bitmap, built the first time the word is counted in the segment; deleted documents are
/// among them.
pub struct WordDocs {
    words: Box<[u64]>,
}

impl WordDocs {
    /// The key a word's bitmap is kept under.
    fn key(word: &Term) -> [u8; 32] {
        let mut key = Sha256::new();
        key.update(word.field().field_id().to_le_bytes());
        key.update(word.serialized_value_bytes());
        key.finalize().into()
    }

    /// The word's documents, from its postings.
    fn build(max_doc: DocId, mut postings: BlockSegmentPostings) -> Self {
        let mut words = vec![0u64; (max_doc as usize).div_ceil(64)].into_boxed_slice();
        // The documents of one 64-document word gathered in a register: postings are in order.
        let (mut at, mut held) = (0usize, 0u64);
        loop {
            let docs = postings.docs();
            if docs.is_empty() {
                break;
            }
            for &doc in docs {
                let here = (doc / 64) as usize;
                if here != at {
                    if let Some(w) = words.get_mut(at) {
                        *w = held;
                    }
                    (at, held) = (here, 0);
                }
                held |= 1 << (doc % 64);
            }
            postings.advance();
        }
        if let Some(w) = words.get_mut(at) {
            *w = held;
        }
        Self { words }
    }
}

impl Weighed for WordDocs {
    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// Entries by segment and key within a memory budget, least recently used first out.
struct Kept<V> {
    entries: HashMap<(SegmentId, [u8; 32]), (Arc<V>, u64)>,
    bytes: usize,
    budget: usize,
    clock: u64,
}

impl<V: Weighed> Kept<V> {
    fn new(budget: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
        }
    }

    fn get(&mut self, segment: SegmentId, key: &[u8; 32]) -> Option<Arc<V>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(&(segment, *key)).map(|(value, used)| {
            *used = clock;
            value.clone()
        })
    }

    fn insert(&mut self, segment: SegmentId, key: [u8; 32], value: Arc<V>) {
        let size = value.bytes();
        if size > self.budget {
            return;
        }
        while self.bytes + size > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.clock += 1;
        if let Some((old, _)) = self.entries.insert((segment, key), (value, self.clock)) {
            self.bytes -= old.bytes();
        }
        self.bytes += size;
    }

    fn remove(&mut self, key: &(SegmentId, [u8; 32])) {
        if let Some((value, _)) = self.entries.remove(key) {
            self.bytes -= value.bytes();
        }
    }

    /// Forgets the entries of segments not in `live`.
    fn retain(&mut self, live: &HashSet<SegmentId>) {
        let dead: Vec<(SegmentId, [u8; 32])> = self
            .entries
            .keys()
            .filter(|(id, _)| !live.contains(id))
            .copied()
            .collect();
        for key in dead {
            self.remove(&key);
        }
    }
}

/// A filter's query, made into a weight the first time a segment's documents must be
/// evaluated with it: a search whose filters are all kept builds none.
struct LazyWeight {
    query: Arc<dyn Query>,
    schema: tantivy::schema::Schema,
    weight: OnceLock<Box<dyn Weight>>,
}

impl LazyWeight {
    fn new(query: Arc<dyn Query>, schema: tantivy::schema::Schema) -> Self {
        Self {
            query,
            schema,
            weight: OnceLock::new(),
        }
    }

    fn get(&self) -> tantivy::Result<&dyn Weight> {
        if let Some(weight) = self.weight.get() {
            return Ok(weight.as_ref());
        }
        let weight = self
            .query
            .weight(EnableScoring::disabled_from_schema(&self.schema))?;
        Ok(self.weight.get_or_init(|| weight).as_ref())
    }
}

/// The name under which a filter's matches are kept: the SHA-256 of a text naming exactly
/// what the filter selects (for a permission: the role, the tenant and the offices or
/// dossiers). Made once per permission, not per search: a professional's names hundreds of
/// dossiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterKey([u8; 32]);

impl FilterKey {
    /// The key of the filter `name` describes.
    pub fn of(name: &str) -> Self {
        Self(Sha256::digest(name.as_bytes()).into())
    }
}

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

/// A word in more than one document in this many of a segment is kept there as a bitmap of its
/// documents ([`WordDocs`]).
const FREQUENT_WORD: u64 = 2;

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
    use super::*;

    fn bits(docs: &[DocId], max_doc: u32) -> Arc<DocBits> {
        let mut b = DocBits::empty(max_doc, 0);
        for &d in docs {
            b.insert(d);
        }
        Arc::new(b)
    }

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

    #[test]
    fn filters_are_evicted_least_recently_used_first_within_their_budget() {
        let mut filters = Kept::new(FILTER_BYTES);
        let segment = SegmentId::generate_random();
        let big = |n: usize| bits(&[], (FILTER_BYTES / 2 * 8 - 64 * n) as u32);
        filters.insert(segment, [1; 32], big(0));
        filters.insert(segment, [2; 32], big(1));
        assert!(filters.get(segment, &[1; 32]).is_some());
        filters.insert(segment, [3; 32], big(2));
        assert!(filters.get(segment, &[2; 32]).is_none(), "least recent");
        assert!(filters.get(segment, &[1; 32]).is_some());
        assert!(filters.get(segment, &[3; 32]).is_some());
        assert!(filters.bytes <= FILTER_BYTES);
    }
}
