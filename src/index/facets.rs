//! Exact facet counts over the matching documents, read from fast fields.

use std::collections::BTreeMap;
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::cache::{SegmentCaches, SegmentFacets};

/// String fields counted by term, and the numeric year.
pub const STRING_FACETS: [&str; 3] = ["procedure", "kind", "status"];

/// Counts per value, per facet.
pub type FacetCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// Counts `procedure`, `kind`, `status` and `year` of every matching document, through the
/// segments' facet tables ([`SegmentCaches::facets`]).
pub struct FacetCollector<'a> {
    /// Where the tables are.
    pub caches: &'a SegmentCaches,
}

pub struct FacetSegment {
    table: Arc<SegmentFacets>,
    /// Matches per combination of values.
    counts: Vec<u64>,
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
            counts: vec![0; table.combinations()],
            table,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<FacetCounts>) -> tantivy::Result<FacetCounts> {
        let mut merged = FacetCounts::new();
        for fruit in fruits {
            for (facet, counts) in fruit {
                let into = merged.entry(facet).or_default();
                for (value, n) in counts {
                    *into.entry(value).or_default() += n;
                }
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for FacetSegment {
    type Fruit = FacetCounts;

    #[inline]
    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(c) = self
            .table
            .combo_of(doc)
            .and_then(|combo| self.counts.get_mut(combo))
        {
            *c += 1;
        }
    }

    fn harvest(self) -> FacetCounts {
        // Sum the combinations per value first: a segment has thousands of combinations of a
        // few dozen values.
        let mut by_value: [BTreeMap<u64, u64>; 4] = Default::default();
        for (combo, n) in self.counts.into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            for (facet, value) in self.table.values(combo).into_iter().enumerate() {
                if value != u64::MAX {
                    *by_value[facet].entry(value).or_default() += n;
                }
            }
        }
        let mut out = FacetCounts::new();
        for (facet, name) in STRING_FACETS.iter().enumerate() {
            let counts = out.entry((*name).to_owned()).or_default();
            for (&ord, &n) in &by_value[facet] {
                if let Some(term) = self.table.term(facet, ord) {
                    *counts.entry(term.to_owned()).or_default() += n;
                }
            }
        }
        let years = out.entry("year".to_owned()).or_default();
        for (&year, &n) in &by_value[3] {
            *years.entry(year.to_string()).or_default() += n;
        }
        out
    }
}
