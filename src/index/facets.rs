//! Exact facet counts over the matching documents, read from fast fields.

use std::collections::BTreeMap;
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
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
    columns: Vec<Option<StrColumn>>,
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
        let mut columns = Vec::new();
        for name in STRING_FACETS {
            columns.push(segment.fast_fields().str(name)?);
        }
        Ok(FacetSegment {
            counts: vec![0; table.combinations()],
            table,
            columns,
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
        let mut out = FacetCounts::new();
        for name in STRING_FACETS.iter().chain(["year"].iter()) {
            out.entry((*name).to_owned()).or_default();
        }
        let mut value = String::new();
        for (combo, n) in self.counts.into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            let values = self.table.values(combo);
            for (i, name) in STRING_FACETS.iter().enumerate() {
                let ord = values[i];
                let Some(column) = self.columns.get(i).and_then(Option::as_ref) else {
                    continue;
                };
                value.clear();
                if ord != u64::MAX && column.ord_to_str(ord, &mut value).unwrap_or(false) {
                    *out.entry((*name).to_owned())
                        .or_default()
                        .entry(value.clone())
                        .or_default() += n;
                }
            }
            if values[3] != u64::MAX {
                *out.entry("year".to_owned())
                    .or_default()
                    .entry(values[3].to_string())
                    .or_default() += n;
            }
        }
        out
    }
}
