//! What searches compute from a segment's documents alone, kept per segment.
//!
//! A segment never changes once written: deletions are applied at collection time through its
//! alive bitset, and an updated document is a new document in a newer segment. So the facet
//! values of a segment's documents, or the documents a permission admits, stay true until the
//! segment is merged away. They are built once (facets when a reader reload brings a segment
//! in, filters on first use), and dropped when their segment leaves the index.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use tantivy::columnar::Column;
use tantivy::index::SegmentId;
use tantivy::query::{
    AllScorer, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED};

use super::facets::STRING_FACETS;

/// Memory the permission filters may take, over all segments and callers.
const FILTER_BYTES: usize = 64 * 1024 * 1024;
/// Documents whose facet values are read per column access while building a table.
const BUILD_BLOCK: u32 = 1024;

/// The per-segment caches of one index.
#[derive(Default)]
pub struct SegmentCaches {
    facets: Mutex<HashMap<SegmentId, Arc<SegmentFacets>>>,
    filters: Mutex<Filters>,
}

impl std::fmt::Debug for SegmentCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCaches").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold only complete entries; a panic elsewhere cannot leave one half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    fn filter(
        &self,
        segment: &SegmentReader,
        key: &[u8; 32],
        inner: &dyn Weight,
    ) -> tantivy::Result<Arc<DocBits>> {
        let id = segment.segment_id();
        if let Some(bits) = lock(&self.filters).get(id, key) {
            return Ok(bits);
        }
        let mut bits = DocBits::empty(segment.max_doc());
        inner.for_each_no_score(segment, &mut |docs| {
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
        let mut filters = lock(&self.filters);
        let dead: Vec<(SegmentId, [u8; 32])> = filters
            .entries
            .keys()
            .filter(|(id, _)| !live.contains(id))
            .copied()
            .collect();
        for key in dead {
            filters.remove(&key);
        }
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
    combo: Vec<u32>,
    /// Per combination: the term ordinal of each string facet and the year (`u64::MAX`: none).
    values: Vec<[u64; 4]>,
    /// Per string facet: its terms, by ordinal.
    terms: Vec<Vec<String>>,
}

impl SegmentFacets {
    fn build(segment: &SegmentReader) -> tantivy::Result<Self> {
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
        Ok(Self {
            combo,
            values,
            terms,
        })
    }

    /// Number of distinct combinations.
    pub fn combinations(&self) -> usize {
        self.values.len()
    }

    /// The combination of a document.
    #[inline]
    pub fn combo_of(&self, doc: DocId) -> Option<usize> {
        self.combo.get(doc as usize).map(|&c| c as usize)
    }

    /// The values of a combination: string facet ordinals, then the year.
    pub fn values(&self, combo: usize) -> [u64; 4] {
        self.values.get(combo).copied().unwrap_or([u64::MAX; 4])
    }

    /// How many terms string facet `facet` (an index into [`STRING_FACETS`]) has.
    pub fn term_count(&self, facet: usize) -> usize {
        self.terms.get(facet).map_or(0, Vec::len)
    }

    /// The term of string facet `facet` (an index into [`STRING_FACETS`]) with ordinal `ord`.
    pub fn term(&self, facet: usize, ord: u64) -> Option<&str> {
        self.terms
            .get(facet)
            .and_then(|t| t.get(usize::try_from(ord).ok()?))
            .map(String::as_str)
    }
}

/// The documents of a segment a filter admits.
pub struct DocBits {
    words: Box<[u64]>,
    len: u32,
    max_doc: u32,
}

impl DocBits {
    fn empty(max_doc: u32) -> Self {
        Self {
            words: vec![0; (max_doc as usize).div_ceil(64)].into_boxed_slice(),
            len: 0,
            max_doc,
        }
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

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// Permission filters by segment and key, least recently used first out.
#[derive(Default)]
struct Filters {
    entries: HashMap<(SegmentId, [u8; 32]), (Arc<DocBits>, u64)>,
    bytes: usize,
    clock: u64,
}

impl Filters {
    fn get(&mut self, segment: SegmentId, key: &[u8; 32]) -> Option<Arc<DocBits>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(&(segment, *key)).map(|(bits, used)| {
            *used = clock;
            bits.clone()
        })
    }

    fn insert(&mut self, segment: SegmentId, key: [u8; 32], bits: Arc<DocBits>) {
        let size = bits.bytes();
        if size > FILTER_BYTES {
            return;
        }
        while self.bytes + size > FILTER_BYTES {
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
        if let Some((old, _)) = self.entries.insert((segment, key), (bits, self.clock)) {
            self.bytes -= old.bytes();
        }
        self.bytes += size;
    }

    fn remove(&mut self, key: &(SegmentId, [u8; 32])) {
        if let Some((bits, _)) = self.entries.remove(key) {
            self.bytes -= bits.bytes();
        }
    }
}

/// A filter whose matches are computed once per segment and kept, under a key that names
/// exactly what it selects (for a permission: the role, the tenant and the offices or
/// dossiers). It never scores.
pub struct CachedFilter {
    key: [u8; 32],
    inner: Box<dyn Query>,
    caches: Arc<SegmentCaches>,
}

impl CachedFilter {
    /// `inner`, cached under the SHA-256 of `key`.
    pub fn new(key: &str, inner: Box<dyn Query>, caches: Arc<SegmentCaches>) -> Self {
        Self {
            key: Sha256::digest(key.as_bytes()).into(),
            inner,
            caches,
        }
    }
}

impl Clone for CachedFilter {
    fn clone(&self) -> Self {
        Self {
            key: self.key,
            inner: self.inner.box_clone(),
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
        let inner = self
            .inner
            .weight(EnableScoring::disabled_from_schema(scoring.schema()))?;
        Ok(Box::new(CachedFilterWeight {
            key: self.key,
            inner,
            caches: self.caches.clone(),
        }))
    }
}

struct CachedFilterWeight {
    key: [u8; 32],
    inner: Box<dyn Weight>,
    caches: Arc<SegmentCaches>,
}

impl Weight for CachedFilterWeight {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let bits = self.caches.filter(reader, &self.key, self.inner.as_ref())?;
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
        let bits = self.caches.filter(reader, &self.key, self.inner.as_ref())?;
        let word = bits.words.get((doc / 64) as usize).copied().unwrap_or(0);
        if word & (1 << (doc % 64)) == 0 {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not pass the filter"
            )));
        }
        Ok(Explanation::new("cached filter", 0.0))
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

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.bits.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(docs: &[DocId], max_doc: u32) -> Arc<DocBits> {
        let mut b = DocBits::empty(max_doc);
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
    fn filters_are_evicted_least_recently_used_first_within_their_budget() {
        let mut filters = Filters::default();
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
