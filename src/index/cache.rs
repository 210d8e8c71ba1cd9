//! What searches compute from a segment's documents alone, kept per segment.
//!
//! A segment never changes once written: deletions are applied at collection time through its
//! alive bitset, and an updated document is a new document in a newer segment. So the facet
//! values of a segment's documents, their order by date, or the documents a permission admits,
//! stay true until the segment is merged away. They are built once (facets when a reader
//! reload brings a segment in, filters and the date order on first use), and dropped when
//! their segment leaves the index. What depends on deletions too (the facet counts of what a
//! filter admits) is kept with the number of deletions it was counted at, and counted again
//! when that number grows. The matches of a phrase are kept too, once found (see
//! [`PhraseMatches`]), within their own memory budget.
//!
//! This module is the store: the caches, their memory budgets and what they hold. The facet
//! table is built in [`super::facet_table`]; kept filters are evaluated and read in
//! [`super::filter`].

use crate::lock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use tantivy::index::SegmentId;
use tantivy::query::{EnableScoring, Query, Weight};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, DocSet, SegmentReader, TERMINATED, Term};

use super::facet_table::{FacetCounts, SegmentFacets};

/// Memory the permission filters may take, over all segments and callers.
const FILTER_BYTES: usize = 64 * 1024 * 1024;
/// Memory the matches of phrases may take, over all segments.
const PHRASE_BYTES: usize = 64 * 1024 * 1024;
/// Phrases remembered as searched for (32 bytes each).
const SEEN_PHRASES: usize = 65_536;
/// Memory the bitmaps of frequent words may take, over all segments: 128 words over a
/// million documents.
const WORD_BYTES: usize = 16 * 1024 * 1024;
/// A word in more than one document in this many of a segment is kept there as a bitmap of
/// its documents ([`SegmentCaches::word_docs`]).
const FREQUENT_WORD: u64 = 2;

/// The per-segment caches of one index.
pub struct SegmentCaches {
    facets: Mutex<HashMap<SegmentId, Arc<SegmentFacets>>>,
    filters: Mutex<Kept<DocBits>>,
    phrases: Mutex<Kept<PhraseMatches>>,
    words: Mutex<Kept<DocBits>>,
    /// The phrases searched for lately ([`SegmentCaches::seen_before`]).
    seen: Mutex<HashSet<[u8; 32]>>,
}

impl Default for SegmentCaches {
    fn default() -> Self {
        Self {
            facets: Mutex::default(),
            filters: Mutex::new(Kept::new(FILTER_BYTES)),
            phrases: Mutex::new(Kept::new(PHRASE_BYTES)),
            words: Mutex::new(Kept::new(WORD_BYTES)),
            seen: Mutex::default(),
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
    pub(super) fn filter(
        &self,
        segment: &SegmentReader,
        key: &[u8; 32],
        inner: &LazyWeight,
    ) -> tantivy::Result<Arc<DocBits>> {
        let id = segment.segment_id();
        if let Some(bits) = lock(&self.filters).get(id, key) {
            return Ok(bits);
        }
        let mut bits = DocBits::empty(segment.max_doc());
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

    /// The documents of `segment` holding `word` when it is in more than half of them, as a
    /// bitmap (like an index storing dense postings so), built the first time and kept;
    /// deleted documents are among them. `None` for a rarer word.
    pub(super) fn word_docs(
        &self,
        segment: &SegmentReader,
        word: &Term,
    ) -> tantivy::Result<Option<Arc<DocBits>>> {
        let index = segment.inverted_index(word.field())?;
        let Some(info) = index.get_term_info(word)? else {
            return Ok(None);
        };
        if u64::from(info.doc_freq).saturating_mul(FREQUENT_WORD) <= u64::from(segment.max_doc()) {
            return Ok(None);
        }
        let mut key = Sha256::new();
        key.update(word.field().field_id().to_le_bytes());
        key.update(word.serialized_value_bytes());
        let (id, key) = (segment.segment_id(), key.finalize().into());
        if let Some(docs) = lock(&self.words).get(id, &key) {
            return Ok(Some(docs));
        }
        let mut docs = DocBits::empty(segment.max_doc());
        let mut postings = index.read_postings_from_terminfo(&info, IndexRecordOption::Basic)?;
        while postings.doc() != TERMINATED {
            docs.insert(postings.doc());
            postings.advance();
        }
        let docs = Arc::new(docs);
        lock(&self.words).insert(id, key, docs.clone());
        Ok(Some(docs))
    }

    /// Whether the phrase named `key` was searched for lately, noting that it is now (the
    /// last [`SEEN_PHRASES`] or so).
    pub fn seen_before(&self, key: [u8; 32]) -> bool {
        let mut seen = lock(&self.seen);
        if seen.contains(&key) {
            return true;
        }
        if seen.len() >= SEEN_PHRASES {
            seen.clear();
        }
        seen.insert(key);
        false
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

/// The documents of a segment a filter admits.
pub struct DocBits {
    pub(super) words: Box<[u64]>,
    pub(super) len: u32,
    pub(super) max_doc: u32,
    /// What browsing counts, kept for the segment's deletions when they were counted.
    counts: Mutex<Option<Arc<AliveCounts>>>,
}

/// How many of the admitted documents are not deleted, and their facets.
pub(super) struct AliveCounts {
    /// The segment's deleted documents when counted. A segment's deletions only grow, so
    /// the same number means the same documents.
    deleted: u32,
    pub(super) total: u64,
    pub(super) facets: FacetCounts,
}

impl DocBits {
    pub(super) fn empty(max_doc: u32) -> Self {
        Self {
            words: vec![0; (max_doc as usize).div_ceil(64)].into_boxed_slice(),
            len: 0,
            max_doc,
            counts: Mutex::new(None),
        }
    }

    /// Whether the filter admits `doc`.
    pub(super) fn contains(&self, doc: DocId) -> bool {
        self.words
            .get((doc / 64) as usize)
            .is_some_and(|w| w & (1 << (doc % 64)) != 0)
    }

    /// The admitted documents in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = DocId> + '_ {
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

    /// How many of the admitted documents `segment` has not deleted, and their facets as
    /// `count` counts them (given them in order), counted once per state of its deletions.
    pub(super) fn alive_counts(
        &self,
        segment: &SegmentReader,
        count: impl FnOnce(&[DocId]) -> tantivy::Result<FacetCounts>,
    ) -> tantivy::Result<Arc<AliveCounts>> {
        let deleted = segment.num_deleted_docs();
        if let Some(counts) = lock(&self.counts).as_ref()
            && counts.deleted == deleted
        {
            return Ok(counts.clone());
        }
        let alive = segment.alive_bitset();
        let docs: Vec<DocId> = self
            .iter()
            .filter(|&doc| alive.is_none_or(|a| a.is_alive(doc)))
            .collect();
        let counts = Arc::new(AliveCounts {
            deleted,
            total: docs.len() as u64,
            facets: count(&docs)?,
        });
        *lock(&self.counts) = Some(counts.clone());
        Ok(counts)
    }

    pub(super) fn insert(&mut self, doc: DocId) {
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
/// what a pair index would store for the phrase, found once per segment.
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

/// The kept facet counts of a filter's documents in a segment, as weighed: a few hundred
/// values.
const COUNTS_BYTES: usize = 16 * 1024;

impl Weighed for DocBits {
    fn bytes(&self) -> usize {
        self.words.len() * 8 + COUNTS_BYTES
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

    pub(super) fn insert(&mut self, segment: SegmentId, key: [u8; 32], value: Arc<V>) {
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
pub(super) struct LazyWeight {
    query: Arc<dyn Query>,
    schema: tantivy::schema::Schema,
    weight: OnceLock<Box<dyn Weight>>,
}

impl LazyWeight {
    pub(super) fn new(query: Arc<dyn Query>, schema: tantivy::schema::Schema) -> Self {
        Self {
            query,
            schema,
            weight: OnceLock::new(),
        }
    }

    pub(super) fn get(&self) -> tantivy::Result<&dyn Weight> {
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
pub struct FilterKey(pub(super) [u8; 32]);

impl FilterKey {
    /// The key of the filter `name` describes.
    pub fn of(name: &str) -> Self {
        Self(Sha256::digest(name.as_bytes()).into())
    }
}

/// A segment's bitset admitting `docs` of `max_doc`, for tests.
#[cfg(test)]
pub(super) fn bits(docs: &[DocId], max_doc: u32) -> Arc<DocBits> {
    let mut b = DocBits::empty(max_doc);
    for &d in docs {
        b.insert(d);
    }
    Arc::new(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_evicted_least_recently_used_first_within_their_budget() {
        let mut filters = Kept::new(FILTER_BYTES);
        let segment = SegmentId::generate_random();
        let big = |n: usize| bits(&[], ((FILTER_BYTES / 2 - COUNTS_BYTES) * 8 - 64 * n) as u32);
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
