//! The documents a kept filter admits in a segment (or that hold a frequent word): tantivy's
//! `BitSet` (walked by its `BitSetDocSet`), and what browsing counts of them.

use std::sync::{Arc, Mutex};

use tantivy::{BitSet, COLLECT_BLOCK_BUFFER_LEN, DocId, SegmentReader};

use super::facet_table::FacetCounts;
use crate::lock;

/// The documents of a segment a filter admits (or holding a frequent word): tantivy's
/// `BitSet`, with what browsing counts of them.
pub struct DocBits {
    pub(super) set: BitSet,
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
            set: BitSet::with_max_value(max_doc),
            counts: Mutex::new(None),
        }
    }

    /// How many documents it holds.
    pub(super) fn len(&self) -> u32 {
        self.set.len() as u32
    }

    /// The segment's size.
    pub(super) fn max_doc(&self) -> u32 {
        self.set.max_value()
    }

    /// How many words of 64 documents the set has.
    pub(super) fn words(&self) -> usize {
        self.set.max_value().div_ceil(64) as usize
    }

    /// Documents `64 * at..64 * at + 64`, one bit each; none past the end.
    pub(super) fn word(&self, at: usize) -> u64 {
        if at < self.words() {
            u64::from_le_bytes(self.set.tinyset(at as u32).into_bytes())
        } else {
            0
        }
    }

    /// Whether the filter admits `doc`.
    pub(super) fn contains(&self, doc: DocId) -> bool {
        doc < self.max_doc() && self.set.contains(doc)
    }

    /// The admitted documents in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = DocId> + '_ {
        (0..self.words() as u32).flat_map(|at| {
            let word = self.set.tinyset(at);
            word.into_iter().map(move |bit| at * 64 + bit)
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
        if doc < self.max_doc() {
            self.set.insert(doc);
        }
    }
}

/// Copies the documents of `docs` (a buffer's worth at most) that `bits` admits to the start
/// of `admitted`; returns how many. Each is written, and kept only if admitted: no branch to
/// mispredict, and no bounds check, the position being taken modulo the buffer's length.
pub(super) fn keep_admitted(
    bits: &DocBits,
    docs: &[DocId],
    admitted: &mut [DocId; COLLECT_BLOCK_BUFFER_LEN],
) -> usize {
    let mut kept = 0;
    for &doc in docs.iter().take(COLLECT_BLOCK_BUFFER_LEN) {
        admitted[kept % COLLECT_BLOCK_BUFFER_LEN] = doc;
        let word = bits.word((doc / 64) as usize);
        kept += ((word >> (doc % 64)) & 1) as usize;
    }
    kept
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
    fn a_sets_words_and_documents_are_those_inserted() {
        let docs = [0, 1, 63, 64, 65, 200, 1000, 1023, 1029];
        let set = bits(&docs, 1030);
        assert_eq!(set.iter().collect::<Vec<_>>(), docs);
        assert_eq!((set.len(), set.words()), (9, 17));
        assert_eq!(set.word(0), 1 | 2 | 1 << 63);
        assert_eq!(set.word(16), 1 << 5);
        assert_eq!(set.word(17), 0, "past the end");
        assert!(set.contains(1029) && !set.contains(1030) && !set.contains(u32::MAX));
        let mut admitted = [0; COLLECT_BLOCK_BUFFER_LEN];
        let kept = keep_admitted(&set, &[0, 2, 63, 64, 66, 1029], &mut admitted);
        assert_eq!(admitted[..kept], [0, 63, 64, 1029]);
    }
}
