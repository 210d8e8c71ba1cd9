//! Exact facet counts over the matching documents, read from fast fields.

use std::collections::BTreeMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

/// String fields counted by term, and the numeric year.
pub const STRING_FACETS: [&str; 3] = ["procedure", "kind", "status"];

/// Counts per value, per facet.
pub type FacetCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// Counts `procedure`, `kind`, `status` and `year` of every matching document.
pub struct FacetCollector;

pub struct FacetSegment {
    columns: Vec<(&'static str, Option<StrColumn>, Vec<u64>)>,
    year: Option<Column<u64>>,
    years: BTreeMap<u64, u64>,
}

impl Collector for FacetCollector {
    type Fruit = FacetCounts;
    type Child = FacetSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<FacetSegment> {
        let fast = segment.fast_fields();
        let mut columns = Vec::new();
        for name in STRING_FACETS {
            let column = fast.str(name)?;
            let terms = column.as_ref().map(|c| c.num_terms()).unwrap_or(0);
            columns.push((name, column, vec![0u64; terms]));
        }
        Ok(FacetSegment {
            columns,
            year: fast.u64("year").ok(),
            years: BTreeMap::new(),
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

    fn collect(&mut self, doc: DocId, _: Score) {
        for (_, column, counts) in &mut self.columns {
            if let Some(column) = column {
                for ord in column.term_ords(doc) {
                    if let Some(c) = counts.get_mut(ord as usize) {
                        *c += 1;
                    }
                }
            }
        }
        if let Some(year) = self.year.as_ref().and_then(|c| c.first(doc)) {
            *self.years.entry(year).or_default() += 1;
        }
    }

    fn harvest(self) -> FacetCounts {
        let mut out = FacetCounts::new();
        for (name, column, counts) in self.columns {
            let entry = out.entry(name.to_owned()).or_default();
            let Some(column) = column else { continue };
            let mut value = String::new();
            for (ord, n) in counts.into_iter().enumerate() {
                if n == 0 {
                    continue;
                }
                value.clear();
                if column.ord_to_str(ord as u64, &mut value).unwrap_or(false) {
                    *entry.entry(value.clone()).or_default() += n;
                }
            }
        }
        let years = out.entry("year".to_owned()).or_default();
        for (year, n) in self.years {
            *years.entry(year.to_string()).or_default() += n;
        }
        out
    }
}
