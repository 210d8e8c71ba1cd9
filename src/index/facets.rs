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
        // Sum the combinations per value first, in arrays indexed by term ordinal: a segment
        // has thousands of combinations of a few dozen values.
        let mut by_term: Vec<Vec<u64>> = (0..STRING_FACETS.len())
            .map(|facet| vec![0; self.table.term_count(facet)])
            .collect();
        // Years: a handful, looked up in a short list.
        let mut by_year: Vec<(u64, u64)> = Vec::new();
        for (combo, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let values = self.table.values(combo);
            for (counts, &ord) in by_term.iter_mut().zip(&values) {
                if let Some(c) = usize::try_from(ord).ok().and_then(|o| counts.get_mut(o)) {
                    *c += n;
                }
            }
            let year = values[STRING_FACETS.len()];
            if year != u64::MAX {
                match by_year.iter_mut().find(|(y, _)| *y == year) {
                    Some((_, c)) => *c += n,
                    None => by_year.push((year, n)),
                }
            }
        }
        let mut out = FacetCounts::new();
        for (facet, name) in STRING_FACETS.iter().enumerate() {
            let counts = out.entry((*name).to_owned()).or_default();
            for (ord, &n) in by_term[facet].iter().enumerate() {
                if n > 0
                    && let Some(term) = self.table.term(facet, ord as u64)
                {
                    *counts.entry(term.to_owned()).or_default() += n;
                }
            }
        }
        let years = out.entry("year".to_owned()).or_default();
        for (year, n) in by_year {
            *years.entry(year.to_string()).or_default() += n;
        }
        out
    }
}
