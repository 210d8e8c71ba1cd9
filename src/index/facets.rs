//! Exact facet counts over the matching documents, read from fast fields.

use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::cache::SegmentCaches;
pub use super::facet_table::FacetCounts;
use super::facet_table::SegmentFacets;

/// Counts `procedure`, `kind`, `status` and `year` of every matching document, through the
/// segments' facet tables ([`SegmentCaches::facets`]).
#[derive(Clone, Copy)]
pub struct FacetCollector<'a> {
    /// Where the tables are.
    pub caches: &'a SegmentCaches,
}

pub struct FacetSegment {
    table: Arc<SegmentFacets>,
    /// Matches per combination of values, in [`LANES`] arrays one after the other, summed at
    /// the harvest (all zero when taken from [`SPARE`], and again when given back by the
    /// harvest).
    counts: Vec<u32>,
    /// The combinations of the first [`FEW`] matches, repeats included: a search with no
    /// more matches than that sums these instead of every combination of the segment.
    few: Vec<u32>,
}

/// Sums the facets of several segments or searches.
pub fn merge(fruits: Vec<FacetCounts>) -> FacetCounts {
    let mut merged = FacetCounts::new();
    for fruit in fruits {
        for (facet, counts) in fruit {
            let into = merged.entry(facet).or_default();
            for (value, n) in counts {
                *into.entry(value).or_default() += n;
            }
        }
    }
    merged
}

/// `all` without `some`, the counts of some of the same documents.
pub fn without(mut all: FacetCounts, some: &FacetCounts) -> FacetCounts {
    for (facet, counts) in some {
        let Some(into) = all.get_mut(facet) else {
            continue;
        };
        for (value, n) in counts {
            if let Some(m) = into.get_mut(value) {
                *m = m.saturating_sub(*n);
                if *m == 0 {
                    into.remove(value);
                }
            }
        }
    }
    all
}

/// Matches up to which a segment's facets are summed from the matches' own combinations.
const FEW: usize = 1024;

/// Count arrays a block of matches is spread over, match by match: documents of one dossier
/// sit together and share a combination, and incrementing one counter again and again waits
/// each time for the increment before it.
const LANES: usize = 4;

/// Spare count arrays of earlier searches on this thread, all zero. A segment has thousands
/// of combinations: allocating and zeroing an array for each segment of each search cost
/// more than a narrow search's counting.
const SPARE_ARRAYS: usize = 16;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn zeroed(len: usize) -> Vec<u32> {
    let mut counts = SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default();
    counts.resize(len, 0);
    counts
}

/// Keeps `counts`, all zero again, for a later search on this thread.
fn give_back(counts: Vec<u32>) {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_ARRAYS {
            spare.push(counts);
        }
    });
}

/// Counts the combinations of `docs`, read from `combos` (a slice held in registers: read
/// through the table, its length would be loaded again after every increment), a match in each
/// of the [`LANES`] count arrays in turn.
#[inline]
fn count_block<'a>(combos: &[u32], mut lanes: impl Iterator<Item = &'a mut [u32]>, docs: &[DocId]) {
    let (Some(a), Some(b), Some(c), Some(d)) =
        (lanes.next(), lanes.next(), lanes.next(), lanes.next())
    else {
        return;
    };
    let count = |lane: &mut [u32], doc: DocId| {
        if let Some(n) = combos
            .get(doc as usize)
            .and_then(|&combo| lane.get_mut(combo as usize))
        {
            *n += 1;
        }
    };
    let mut quads = docs.chunks_exact(LANES);
    for quad in &mut quads {
        count(a, quad[0]);
        count(b, quad[1]);
        count(c, quad[2]);
        count(d, quad[3]);
    }
    for &doc in quads.remainder() {
        count(a, doc);
    }
}

impl Collector for FacetCollector<'_> {
    type Fruit = FacetCounts;
    type Child = FacetSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<FacetSegment> {
        let table = self.caches.facets(segment)?;
        Ok(FacetSegment {
            counts: zeroed(table.combinations() * LANES),
            few: Vec::new(),
            table,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<FacetCounts>) -> tantivy::Result<FacetCounts> {
        Ok(merge(fruits))
    }
}

impl SegmentCollector for FacetSegment {
    type Fruit = FacetCounts;

    #[inline]
    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(&combo) = self.table.combo.get(doc as usize)
            && let Some(c) = self.counts.get_mut(combo as usize)
        {
            *c += 1;
            if self.few.len() < FEW {
                self.few.push(combo);
            }
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        if self.few.len() < FEW {
            for &doc in docs {
                self.collect(doc, 0.0);
            }
            return;
        }
        // One array per lane (a segment always has a combination; `max` keeps a table without
        // one from asking for arrays of no length, which would panic).
        let lanes = self
            .counts
            .chunks_exact_mut(self.table.combinations().max(1));
        count_block(&self.table.combo, lanes, docs)
    }

    fn harvest(self) -> FacetCounts {
        // Sum per value first, in one array of the segment's values (its slots): a segment
        // has thousands of combinations of a few hundred values.
        let table = &self.table;
        let mut by_slot = table.by_slot();
        // A narrow search sums the combinations of its few matches (zeroing each once summed,
        // which skips repeats and leaves the array as it was found); a broad one reads every
        // combination in order, which the caches follow.
        let mut counts = self.counts;
        let combinations = table.combinations();
        if self.few.len() < FEW {
            for &combo in &self.few {
                let c = &mut counts[combo as usize];
                if *c > 0 {
                    table.tally(combo as usize, u64::from(*c), &mut by_slot);
                    *c = 0;
                }
            }
        } else {
            let split = combinations.min(counts.len());
            let (first, others) = counts.split_at_mut(split);
            for lane in others.chunks_exact(combinations.max(1)) {
                for (n, &m) in first.iter_mut().zip(lane) {
                    *n += m;
                }
            }
            table.tally_all(first, &mut by_slot);
            counts.fill(0);
        }
        give_back(counts);
        table.named(&by_slot)
    }
}

impl FacetCollector<'_> {
    /// The facets of `docs`, in order, of `segment`.
    pub fn of_docs(&self, segment: &SegmentReader, docs: &[DocId]) -> tantivy::Result<FacetCounts> {
        let mut counting = self.for_segment(0, segment)?;
        for block in docs.chunks(tantivy::COLLECT_BLOCK_BUFFER_LEN) {
            counting.collect_block(block);
        }
        Ok(counting.harvest())
    }
}

#[cfg(test)]
mod tests {
    use tantivy::Term;
    use tantivy::query::{AllQuery, TermQuery};
    use tantivy::schema::IndexRecordOption;

    use crate::index::cache::FilterKey;
    use crate::index::search::{Permission, SearchRequest};
    use crate::index::{IndexedDoc, SearchIndex};

    fn doc(i: usize) -> IndexedDoc {
        IndexedDoc {
            signed: false,
            signers: Vec::new(),
            doc_id: crate::domain::DocumentId::numbered(i as u128),
            dossier_id: crate::domain::DossierId::numbered(i as u128),
            dossier_number: format!("{i}"),
            tenant: "t".into(),
            office: "o".into(),
            procedure: format!("proc{}", i % 3),
            kind: if i.is_multiple_of(2) {
                "plan"
            } else {
                "application"
            }
            .into(),
            status: "submitted".into(),
            visibility: "public".into(),
            year: 2020 + (i % 4) as u64,
            date_ms: i as i64,
            title: format!("documento {i}"),
            text: if i.is_multiple_of(5) {
                "tettoia facciata"
            } else {
                "facciata"
            }
            .into(),
        }
    }

    /// Every document (`which` 0: evaluated with the search; 1: kept per segment), or those of
    /// procedure `procedure` (2: kept).
    fn permission(index: &SearchIndex, which: usize, procedure: &str) -> Permission {
        let field = index
            .index()
            .schema()
            .get_field("procedure")
            .expect("field");
        Permission {
            query: match which {
                0 | 1 => Box::new(AllQuery),
                _ => Box::new(TermQuery::new(
                    Term::from_field_text(field, procedure),
                    IndexRecordOption::Basic,
                )),
            },
            cache_key: (which > 0).then(|| FilterKey::of(&format!("permission {which}"))),
            narrow: false,
            broad: true,
        }
    }

    /// An index of `docs`, committed, in a directory of its own (kept with it).
    fn indexed(docs: &[IndexedDoc]) -> (tempfile::TempDir, SearchIndex) {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        for d in docs {
            index.add(d).expect("added");
        }
        index.commit(1).expect("committed");
        (dir, index)
    }

    /// The facets of `docs`, counted by hand.
    fn counted_by_hand<'a>(docs: impl Iterator<Item = &'a IndexedDoc>) -> super::FacetCounts {
        let mut out = super::FacetCounts::new();
        for d in docs {
            for (facet, value) in [
                ("procedure", d.procedure.clone()),
                ("kind", d.kind.clone()),
                ("status", d.status.clone()),
                ("year", d.year.to_string()),
            ] {
                *out.entry(facet.to_owned())
                    .or_default()
                    .entry(value)
                    .or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn counts_are_exact_search_after_search_on_one_thread() {
        // Many blocks of postings, and more matches than are counted one by one.
        let docs: Vec<IndexedDoc> = (0..4500).map(doc).collect();
        let (_dir, index) = indexed(&docs);
        // Every document, evaluated with the search or kept per segment; a third of them, kept
        // (their matches then counted a block of postings at a time, tested against the kept
        // bits).
        let facets = |q: &str, which: usize| {
            let request = SearchRequest {
                q: q.to_owned(),
                limit: 10,
                ..SearchRequest::default()
            };
            index
                .search(&request, permission(&index, which, "proc0"))
                .expect("searched")
                .facets
        };
        let expected =
            |pick: &dyn Fn(&IndexedDoc) -> bool| counted_by_hand(docs.iter().filter(|d| pick(d)));
        // Each search reuses the count arrays the one before gave back: 4 500 or 1 500 matches
        // are summed from every combination, 900 or 300 from their own, none from nothing.
        // Both words, under a kept permission.
        for which in [0, 1, 2] {
            let admitted = |d: &IndexedDoc| which < 2 || d.procedure == "proc0";
            let all = expected(&|d| admitted(d));
            let some = expected(&|d| admitted(d) && d.text.contains("tettoia"));
            for _ in 0..3 {
                assert_eq!(facets("facciata", which), all, "permission {which}");
                assert_eq!(facets("tettoia", which), some, "permission {which}");
                assert_eq!(
                    facets("facciata tettoia", which),
                    some,
                    "permission {which}"
                );
                assert!(
                    facets("nessuna", which)
                        .values()
                        .all(|counts| counts.is_empty())
                );
            }
        }
    }

    /// A word in most documents of a segment ("facciata", lacking from scattered documents,
    /// whole runs of them and the segment's last ones) and one in few documents of `proc1`
    /// ("muro") are counted exactly, some documents deleted: the totals and facets equal those
    /// counted by hand, under a permission evaluated with the search and two kept ones, and
    /// again once the filters are kept.
    #[test]
    fn frequent_and_rare_words_are_counted_exactly_under_every_permission() {
        let lacks = |i: usize| i % 7 == 3 || (i / 100) % 9 == 4 || i >= 4_930;
        let wall = |i: usize| i % 3 != 1 || i.is_multiple_of(10);
        let docs: Vec<IndexedDoc> = (0..5_000)
            .map(|i| IndexedDoc {
                signed: false,
                signers: Vec::new(),
                text: format!(
                    "{} {}",
                    if lacks(i) { "tettoia" } else { "facciata" },
                    if wall(i) { "muro" } else { "" }
                ),
                ..doc(i)
            })
            .collect();
        let (_dir, index) = indexed(&docs);
        let deleted = |i: usize| i % 13 == 6;
        for (i, d) in docs.iter().enumerate() {
            if deleted(i) {
                index.delete(d.doc_id);
            }
        }
        index.commit(2).expect("committed");
        let holds = |word: &str, i: usize| match word {
            "facciata" => !lacks(i),
            _ => wall(i),
        };
        for word in ["facciata", "muro"] {
            for which in [0, 1, 2] {
                let found_by_hand: Vec<&IndexedDoc> = docs
                    .iter()
                    .enumerate()
                    .filter(|&(i, d)| {
                        holds(word, i) && !deleted(i) && (which < 2 || d.procedure == "proc1")
                    })
                    .map(|(_, d)| d)
                    .collect();
                let total = found_by_hand.len() as u64;
                let expected = counted_by_hand(found_by_hand.into_iter());
                let request = SearchRequest {
                    q: word.to_owned(),
                    limit: 10,
                    ..SearchRequest::default()
                };
                for _ in 0..2 {
                    let found = index
                        .search(&request, permission(&index, which, "proc1"))
                        .expect("searched");
                    assert_eq!(found.total, total, "{word}, permission {which}");
                    assert_eq!(found.facets, expected, "{word}, permission {which}");
                }
            }
        }
    }

    /// A segment's matches counted block by block (spread over the lanes) and document by
    /// document count alike.
    #[test]
    fn blocks_and_single_documents_count_alike() {
        use super::super::facet_table::SegmentFacets;
        use super::{FacetSegment, LANES, zeroed};
        use tantivy::collector::SegmentCollector;

        let docs: Vec<IndexedDoc> = (0..6000).map(doc).collect();
        let (_dir, index) = indexed(&docs);
        let searcher = index.searcher();
        let segment = &searcher.segment_readers()[0];
        let facets = |whole_blocks: bool| {
            let table = std::sync::Arc::new(SegmentFacets::build(segment).expect("table"));
            let mut collector = FacetSegment {
                counts: zeroed(table.combinations() * LANES),
                few: Vec::new(),
                table,
            };
            // Every third document: 2 000, more than are summed from their own combinations.
            let matches: Vec<u32> = (0..segment.max_doc()).step_by(3).collect();
            for block in matches.chunks(64) {
                if whole_blocks {
                    collector.collect_block(block);
                } else {
                    for &doc in block {
                        collector.collect(doc, 0.0);
                    }
                }
            }
            collector.harvest()
        };
        let by_blocks = facets(true);
        assert_eq!(by_blocks, facets(false));
        let kinds: u64 = by_blocks["kind"].values().sum();
        assert_eq!(kinds, 2000);
    }
}
