//! The documents a kept filter admits in a segment (or that hold a frequent word): tantivy's
//! `BitSet`, what browsing counts of them, and our walk over them as a doc set.

use std::sync::{Arc, Mutex};

use tantivy::{BitSet, COLLECT_BLOCK_BUFFER_LEN, DocId, DocSet, SegmentReader, TERMINATED};

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

/// Iterates the documents of a [`DocBits`].
pub(super) struct BitsDocSet {
    bits: Arc<DocBits>,
    /// Index of the word being read.
    word: usize,
    /// Its bits not yet returned.
    rest: u64,
    doc: DocId,
}

impl BitsDocSet {
    pub(super) fn new(bits: Arc<DocBits>) -> Self {
        let rest = bits.word(0);
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
            if self.word >= self.bits.words() {
                self.word = self.bits.words();
                self.doc = TERMINATED;
                return TERMINATED;
            }
            self.rest = self.bits.word(self.word);
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        if target >= self.bits.max_doc() {
            self.word = self.bits.words();
            self.rest = 0;
            self.doc = TERMINATED;
            return TERMINATED;
        }
        let word = (target / 64) as usize;
        if word > self.word {
            self.word = word;
            self.rest = self.bits.word(word);
        }
        self.rest &= u64::MAX << (target % 64);
        self.advance()
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.bits.len()
    }

    /// Led by the set, an intersection seeks every other clause once per admitted document;
    /// led by a clause, it asks the set one bit per document of the clause. A set is cheaper
    /// to follow than to lead unless it admits far fewer documents than the clause holds.
    fn cost(&self) -> u64 {
        u64::from(self.bits.len()).saturating_mul(LEAD_COST)
    }
}

/// How many times a clause's document costs as much as seeking every other clause once: the
/// factor by which an admitted document weighs more than a clause's in choosing which of them
/// leads an intersection (see [`BitsDocSet::cost`]).
const LEAD_COST: u64 = 2;

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
    use tantivy::query::{BitSetDocSet, ConstScorer, Scorer, intersect_scorers};

    #[test]
    fn the_bit_docset_advances_and_seeks_like_tantivys_bitset_docset() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for density in [0.0, 0.001, 0.05, 0.5, 0.97] {
            let max_doc = rng.random_range(1..3000);
            let docs: Vec<DocId> = (0..max_doc).filter(|_| rng.random_bool(density)).collect();
            let kept = bits(&docs, max_doc);
            let mut ours = BitsDocSet::new(kept.clone());
            let mut theirs = BitSetDocSet::from(kept.set.clone());
            assert_eq!(ours.size_hint(), theirs.size_hint());
            while theirs.doc() != TERMINATED {
                assert_eq!(ours.doc(), theirs.doc(), "{density}");
                if rng.random_bool(0.5) {
                    assert_eq!(ours.advance(), theirs.advance(), "{density}");
                } else {
                    let target = theirs.doc() + rng.random_range(0..200);
                    assert_eq!(ours.seek(target), theirs.seek(target), "{density}");
                }
            }
            assert_eq!(ours.doc(), TERMINATED);
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
