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
use std::sync::{Arc, Mutex};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use sha2::{Digest, Sha256};
use tantivy::index::SegmentId;
use tantivy::query::{EnableScoring, Query};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, DocSet, SegmentReader, TERMINATED, Term};

use super::bits::DocBits;
use super::facet_table::SegmentFacets;

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
    filters: Kept<DocBits>,
    phrases: Kept<PhraseMatches>,
    words: Kept<DocBits>,
    /// The phrases searched for lately ([`SegmentCaches::seen_before`]).
    seen: Cache<[u8; 32], ()>,
}

impl Default for SegmentCaches {
    fn default() -> Self {
        Self {
            facets: Mutex::default(),
            filters: kept(FILTER_BYTES),
            phrases: kept(PHRASE_BYTES),
            words: kept(WORD_BYTES),
            seen: Cache::new(SEEN_PHRASES),
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

    /// The documents of `segment` the filter named `key` admits; evaluated with `inner` (its
    /// weight built only then: a filter's query can have hundreds of terms) when not kept.
    pub(super) fn filter(
        &self,
        segment: &SegmentReader,
        key: &[u8; 32],
        inner: &dyn Query,
    ) -> tantivy::Result<Arc<DocBits>> {
        let id = segment.segment_id();
        if let Some(bits) = self.filters.get(&(id, *key)) {
            return Ok(bits);
        }
        let mut bits = DocBits::empty(segment.max_doc());
        let weight = inner.weight(EnableScoring::disabled_from_schema(segment.schema()))?;
        weight.for_each_no_score(segment, &mut |docs| {
            for &doc in docs {
                bits.insert(doc);
            }
        })?;
        let bits = Arc::new(bits);
        self.filters.insert((id, *key), bits.clone());
        Ok(bits)
    }

    /// Forgets everything about segments no longer in `live`.
    fn retain(&self, live: &HashSet<SegmentId>) {
        lock(&self.facets).retain(|id, _| live.contains(id));
        self.filters.retain(|(id, _), _| live.contains(id));
        self.phrases.retain(|(id, _), _| live.contains(id));
        self.words.retain(|(id, _), _| live.contains(id));
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
        if let Some(docs) = self.words.get(&(id, key)) {
            return Ok(Some(docs));
        }
        let mut docs = DocBits::empty(segment.max_doc());
        let mut postings = index.read_postings_from_terminfo(&info, IndexRecordOption::Basic)?;
        while postings.doc() != TERMINATED {
            docs.insert(postings.doc());
            postings.advance();
        }
        let docs = Arc::new(docs);
        self.words.insert((id, key), docs.clone());
        Ok(Some(docs))
    }

    /// Whether the phrase named `key` was searched for lately (among the last
    /// [`SEEN_PHRASES`] or so), noting that it is now.
    pub fn seen_before(&self, key: [u8; 32]) -> bool {
        let seen = self.seen.get(&key).is_some();
        if !seen {
            self.seen.insert(key, ());
        }
        seen
    }

    /// The matches of the phrase named `key` in `segment`, if kept.
    pub fn phrase(&self, segment: SegmentId, key: &[u8; 32]) -> Option<Arc<PhraseMatches>> {
        self.phrases.get(&(segment, *key))
    }

    /// Keeps the matches of the phrase named `key` in `segment`.
    pub fn keep_phrase(&self, segment: SegmentId, key: [u8; 32], matches: Arc<PhraseMatches>) {
        self.phrases.insert((segment, key), matches);
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

/// The kept facet counts of a filter's documents in a segment, as weighed: a few hundred
/// values.
const COUNTS_BYTES: usize = 16 * 1024;

/// Entries by segment and name within a memory budget: quick_cache's, which evicts first
/// what was asked for once and not again.
type Kept<V> = Cache<(SegmentId, [u8; 32]), Arc<V>, ByBytes>;

/// Weighs a [`Kept`] entry by the memory it holds.
#[derive(Clone)]
struct ByBytes;

impl Weighter<(SegmentId, [u8; 32]), Arc<PhraseMatches>> for ByBytes {
    fn weight(&self, _: &(SegmentId, [u8; 32]), m: &Arc<PhraseMatches>) -> u64 {
        ((m.docs.len() + m.counts.len()) * 4 + m.bounds.len() * 8) as u64
    }
}

impl Weighter<(SegmentId, [u8; 32]), Arc<DocBits>> for ByBytes {
    fn weight(&self, _: &(SegmentId, [u8; 32]), bits: &Arc<DocBits>) -> u64 {
        (bits.words() * 8 + COUNTS_BYTES) as u64
    }
}

/// An empty [`Kept`] of `budget` bytes (entries of a few KiB expected).
fn kept<V>(budget: usize) -> Kept<V>
where
    ByBytes: Weighter<(SegmentId, [u8; 32]), Arc<V>>,
{
    Cache::with_weighter(budget / 4096, budget as u64, ByBytes)
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

#[cfg(test)]
mod tests {
    use super::super::bits::bits;
    use super::*;

    #[test]
    fn kept_filters_stay_within_their_budget_and_the_ones_asked_for_again_stay() {
        let filters: Kept<DocBits> = kept(FILTER_BYTES);
        let segment = SegmentId::generate_random();
        // A filter over a segment of a million documents: 141 KiB with its counts.
        let filter = || bits(&[1, 5, 999_999], 1_000_000);
        filters.insert((segment, [0; 32]), filter());
        for _ in 0..3 {
            assert!(filters.get(&(segment, [0; 32])).is_some());
        }
        for n in 1..=2000u16 {
            let mut key = [0; 32];
            key[..2].copy_from_slice(&n.to_le_bytes());
            filters.insert((segment, key), filter());
            assert!(filters.get(&(segment, key)).is_some(), "just kept");
            assert!(filters.weight() <= FILTER_BYTES as u64);
            // One caller's filter, asked for by each of its searches, among filters asked
            // for once.
            if n % 50 == 0 {
                assert!(
                    filters.get(&(segment, [0; 32])).is_some(),
                    "asked for again"
                );
            }
        }
        let fit = FILTER_BYTES / (1_000_000 / 8 + COUNTS_BYTES);
        assert!(
            (200..=fit).contains(&filters.len()),
            "{} kept",
            filters.len()
        );
        let gone = SegmentId::generate_random();
        filters.insert((gone, [0; 32]), filter());
        let caches = SegmentCaches {
            filters,
            ..SegmentCaches::default()
        };
        caches.retain(&HashSet::from([segment]));
        assert!(caches.filters.get(&(gone, [0; 32])).is_none());
        assert!(caches.filters.get(&(segment, [0; 32])).is_some());
    }
}
