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
    /// Counts per year, offset from the column's smallest year.
    years: Vec<u64>,
    /// Matching documents not counted yet: columns are read a block at a time.
    pending: Vec<DocId>,
    values: Vec<Option<u64>>,
}

/// Documents counted per block read of the columns.
const BLOCK: usize = 128;
/// A year column spanning more years than this is counted through a map.
const MAX_YEAR_SPAN: u64 = 512;

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
        let year = fast.u64("year").ok();
        let span = year
            .as_ref()
            .map_or(0, |c| c.max_value().saturating_sub(c.min_value()) + 1);
        Ok(FacetSegment {
            columns,
            years: vec![0; usize::try_from(span.min(MAX_YEAR_SPAN)).unwrap_or(0)],
            year,
            pending: Vec::with_capacity(BLOCK),
            values: vec![None; BLOCK],
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
        self.pending.push(doc);
        if self.pending.len() == BLOCK {
            self.count_pending();
        }
    }

    fn harvest(mut self) -> FacetCounts {
        self.count_pending();
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
        let first = self.year.as_ref().map_or(0, |c| c.min_value());
        for (offset, n) in self.years.into_iter().enumerate() {
            if n > 0 {
                *years
                    .entry((first + offset as u64).to_string())
                    .or_default() += n;
            }
        }
        out
    }
}

impl FacetSegment {
    /// Reads the facet values of the pending documents, one column at a time, and counts them.
    /// Every facet holds one value per document, so its first value is its value.
    fn count_pending(&mut self) {
        let docs = &self.pending;
        let values = &mut self.values[..docs.len()];
        for (_, column, counts) in &mut self.columns {
            let Some(column) = column else { continue };
            column.ords().first_vals(docs, values);
            for ord in values.iter().flatten() {
                if let Some(c) = counts.get_mut(*ord as usize) {
                    *c += 1;
                }
            }
        }
        if let Some(year) = &self.year {
            year.first_vals(docs, values);
            let first = year.min_value();
            for y in values.iter().flatten() {
                if let Some(c) = self.years.get_mut((y - first) as usize) {
                    *c += 1;
                }
            }
        }
        self.pending.clear();
    }
}
