//! Which of the engine's own search paths run, and which are replaced by tantivy's own parts:
//! a switch read at start (`FASCICOLO_SEARCH_PLAIN`), so that one build measures both arms of
//! an A/B in one run. They answer alike (the differential test runs each path replaced alone
//! and all of them at once); only the time differs. By default every path of ours runs.

/// The paths replaced by tantivy's own parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plain {
    /// Permission filters are evaluated with each search as ordinary clauses, instead of kept
    /// per segment as bitsets (with their browsing and counting paths).
    pub filters: bool,
    /// Exact phrases run on tantivy's `PhraseScorer`, instead of their matches kept per
    /// segment.
    pub phrases: bool,
    /// Facets are counted value by value from the fast fields, instead of through the
    /// segments' tables of value combinations.
    pub facets: bool,
    /// Snippets come from tantivy's `SnippetGenerator`, instead of our passage finder.
    pub snippets: bool,
    /// Words are stemmed by tantivy's Italian stemmer, instead of ours, which remembers the
    /// stems it has computed (indexing and queries alike; the stems are the same).
    pub stems: bool,
    /// A single frequent word's admitted matches are counted through postings, instead of
    /// from the word's bitmap ([`super::filter`]'s `count_frequent_word`).
    pub bitmaps: bool,
}

impl Plain {
    /// The names [`Plain::parse`] takes.
    pub const NAMES: [&str; 6] = [
        "filters", "phrases", "facets", "snippets", "stems", "bitmaps",
    ];

    /// Parses a comma-separated list of [`Plain::NAMES`] (or `all`); empty is none.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut plain = Self::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "filters" => plain.filters = true,
                "phrases" => plain.phrases = true,
                "facets" => plain.facets = true,
                "snippets" => plain.snippets = true,
                "stems" => plain.stems = true,
                "bitmaps" => plain.bitmaps = true,
                "all" => plain = Self::all(),
                other => {
                    return Err(format!(
                        "{other:?} is not a search path; the paths are {} (or all)",
                        Self::NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(plain)
    }

    /// Every path replaced.
    pub fn all() -> Self {
        Self {
            filters: true,
            phrases: true,
            facets: true,
            snippets: true,
            stems: true,
            bitmaps: true,
        }
    }

    pub(super) fn bits(self) -> u8 {
        u8::from(self.filters)
            | u8::from(self.phrases) << 1
            | u8::from(self.facets) << 2
            | u8::from(self.snippets) << 3
            | u8::from(self.stems) << 4
            | u8::from(self.bitmaps) << 5
    }

    pub(super) fn from_bits(bits: u8) -> Self {
        Self {
            filters: bits & 1 != 0,
            phrases: bits & 2 != 0,
            facets: bits & 4 != 0,
            snippets: bits & 8 != 0,
            stems: bits & 16 != 0,
            bitmaps: bits & 32 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_paths_parse_and_round_trip() {
        assert_eq!(Plain::parse("").expect("empty"), Plain::default());
        let two = Plain::parse("phrases, snippets").expect("two");
        assert!(two.phrases && two.snippets && !two.filters && !two.facets);
        assert_eq!(Plain::parse("all").expect("all"), Plain::all());
        assert!(
            Plain::parse("phrase")
                .expect_err("not a path")
                .contains("not a search path")
        );
        for bits in 0..64 {
            assert_eq!(Plain::from_bits(bits).bits(), bits);
        }
    }
}
