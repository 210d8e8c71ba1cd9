//! Snippets: the passage of a text with the best matches of the query's words, and where they
//! are in it.
//!
//! The passage is chosen as tantivy's snippet generator chooses it (passages of at most
//! `max_chars` bytes, cut at word starts; a passage scores the weights of the words of the
//! query it holds, every occurrence; the best one wins, the earlier one on a tie). Words are
//! compared as the analyzer leaves them (already lower-cased), against the few words of the
//! query in a list, with no allocation per word: highlighting the hits of a page costs a
//! tokenisation of their texts and little else.

use std::ops::Range;

use tantivy::tokenizer::{TextAnalyzer, TokenStream};

/// Finds the best passage of texts for one query.
pub struct Snippets {
    analyzer: TextAnalyzer,
    /// The query's analysed words and their weights.
    words: Vec<(String, f32)>,
    max_chars: usize,
}

/// A passage being read.
struct Passage {
    start: usize,
    end: usize,
    score: f32,
    marks: Vec<Range<usize>>,
}

impl Passage {
    fn at(start: usize) -> Self {
        Self {
            start,
            end: start,
            score: 0.0,
            marks: Vec::new(),
        }
    }
}

impl Snippets {
    /// Passages of at most `max_chars` bytes, scored by `words` as `analyzer` leaves them.
    pub fn new(analyzer: TextAnalyzer, words: Vec<(String, f32)>, max_chars: usize) -> Self {
        Self {
            analyzer,
            words,
            max_chars,
        }
    }

    /// The best passage of `text` and the byte ranges of the query's words in it (relative to
    /// the passage); `None` when no word of the query occurs.
    pub fn best<'t>(&mut self, text: &'t str) -> Option<(&'t str, Vec<Range<usize>>)> {
        let mut stream = self.analyzer.token_stream(text);
        let mut current = Passage::at(0);
        let mut best: Option<Passage> = None;
        let keep = |passage: Passage, best: &mut Option<Passage>| {
            if passage.score > 0.0 && best.as_ref().is_none_or(|b| passage.score > b.score) {
                *best = Some(passage);
            }
        };
        while stream.advance() {
            let token = stream.token();
            if token.offset_to - current.start > self.max_chars {
                keep(
                    std::mem::replace(&mut current, Passage::at(token.offset_from)),
                    &mut best,
                );
            }
            current.end = token.offset_to;
            if token.text.is_empty() {
                continue;
            }
            if let Some((_, weight)) = self.words.iter().find(|(w, _)| *w == token.text) {
                current.score += weight;
                current
                    .marks
                    .push(token.offset_from - current.start..token.offset_to - current.start);
            }
        }
        keep(current, &mut best);
        let best = best?;
        Some((text.get(best.start..best.end)?, best.marks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snippets(words: &[(&str, f32)], max_chars: usize) -> Snippets {
        let stems: Vec<String> = words.iter().map(|(w, _)| (*w).to_owned()).collect();
        Snippets::new(
            crate::index::snippet_analyzer(&stems),
            words.iter().map(|(w, s)| ((*w).to_owned(), *s)).collect(),
            max_chars,
        )
    }

    #[test]
    fn the_passage_with_the_most_weight_is_chosen_and_its_words_marked() {
        let text = "Premessa generale sulla pratica. Il permesso di costruire richiesto, \
                    permesso edilizio rilasciato dal comune per la costruzione.";
        // "permess" twice in the second passage beats one "costru" in the first.
        let mut s = snippets(&[("permess", 1.0), ("costru", 0.5)], 40);
        let (passage, marks) = s.best(text).expect("a passage");
        let marked: Vec<&str> = marks.iter().map(|r| &passage[r.clone()]).collect();
        assert!(marked.contains(&"permesso"), "{passage:?} {marked:?}");
        assert!(passage.len() <= 40, "{passage:?}");
        for r in &marks {
            assert!(
                passage[r.clone()].to_lowercase().starts_with("perm")
                    || passage[r.clone()].to_lowercase().starts_with("costru")
            );
        }
    }

    #[test]
    fn the_earlier_passage_wins_a_tie_and_no_match_is_none() {
        let text = "alfa permesso beta gamma delta epsilon zeta eta theta iota permesso kappa";
        let mut s = snippets(&[("permess", 1.0)], 30);
        let (passage, marks) = s.best(text).expect("a passage");
        assert!(passage.starts_with("alfa permesso"), "{passage:?}");
        assert_eq!(&passage[marks[0].clone()], "permesso");
        assert!(s.best("nessuna parola cercata qui").is_none());
        assert!(s.best("").is_none());
    }
}
