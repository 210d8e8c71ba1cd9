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

/// Words of this many bytes or more are not tokens (the analyzers' `RemoveLongFilter`).
const LONGEST: usize = 48;

/// Finds the best passage of texts for one query.
#[derive(Clone)]
pub struct Snippets {
    analyzer: TextAnalyzer,
    /// The query's analysed words and their weights.
    words: Vec<(String, f32)>,
    /// The ASCII letters and digits a word of the query begins with, as bits.
    initials: u128,
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

    /// Counts a word of the query at `word` (bytes of the text) with its weight.
    fn mark(&mut self, word: Range<usize>, weight: f32) {
        self.score += weight;
        self.marks
            .push(word.start - self.start..word.end - self.start);
    }

    /// Becomes `best` if it holds a word of the query and scores more (the earlier passage
    /// wins a tie).
    fn offer(self, best: &mut Option<Passage>) {
        if self.score > 0.0 && best.as_ref().is_none_or(|b| self.score > b.score) {
            *best = Some(self);
        }
    }
}

/// The byte ranges of the words of `text` as the analyzers' `SimpleTokenizer` cuts them: runs
/// of alphanumeric characters.
fn words(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut chars = text.char_indices();
    std::iter::from_fn(move || {
        let start = chars.find(|(_, c)| c.is_alphanumeric())?.0;
        let end = chars
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(text.len(), |(at, _)| at);
        Some(start..end)
    })
}

impl Snippets {
    /// Passages of at most `max_chars` bytes, scored by `words` as `analyzer` leaves them.
    /// `analyzer` must analyse a word alone as it does in its text (its filters look at one
    /// token at a time), lower-case and fold it, and blank the words that cannot match.
    pub fn new(analyzer: TextAnalyzer, words: Vec<(String, f32)>, max_chars: usize) -> Self {
        let initials = words
            .iter()
            .filter_map(|(w, _)| w.bytes().next())
            .filter(u8::is_ascii)
            .fold(0u128, |bits, b| bits | 1u128 << b);
        Self {
            analyzer,
            words,
            initials,
            max_chars,
        }
    }

    /// The best passage of `text` and the byte ranges of the query's words in it (relative to
    /// the passage); `None` when no word of the query occurs.
    ///
    /// Passages are cut as the analyzer's tokens would cut them, but only the words that begin
    /// with the initial of a query word, or with a letter beyond ASCII (which folding could
    /// turn into one), go through the analyzer: in a page of hits, most words of most texts
    /// are rejected by their first byte.
    pub fn best<'t>(&mut self, text: &'t str) -> Option<(&'t str, Vec<Range<usize>>)> {
        let mut current = Passage::at(0);
        let mut best: Option<Passage> = None;
        for word in words(text) {
            if word.len() >= LONGEST {
                continue;
            }
            if word.end - current.start > self.max_chars {
                std::mem::replace(&mut current, Passage::at(word.start)).offer(&mut best);
            }
            current.end = word.end;
            let first = text.as_bytes()[word.start];
            if first.is_ascii() && self.initials & (1u128 << first.to_ascii_lowercase()) == 0 {
                continue;
            }
            if let Some(weight) = self.weight(&text[word.clone()]) {
                current.mark(word, weight);
            }
        }
        current.offer(&mut best);
        let best = best?;
        Some((text.get(best.start..best.end)?, best.marks))
    }

    /// The weight of the query word `word` analyses to, if any.
    fn weight(&mut self, word: &str) -> Option<f32> {
        let mut stream = self.analyzer.token_stream(word);
        if !stream.advance() || stream.token().text.is_empty() {
            return None;
        }
        let analysed = &stream.token().text;
        self.words
            .iter()
            .find(|(w, _)| w == analysed)
            .map(|(_, weight)| *weight)
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

    /// The passage and marks found by running the analyzer over the whole text, every word
    /// through every filter: what [`Snippets::best`] must find.
    fn by_whole_analysis(s: &mut Snippets, text: &str) -> Option<(String, Vec<Range<usize>>)> {
        let mut stream = s.analyzer.token_stream(text);
        let mut current = Passage::at(0);
        let mut best: Option<Passage> = None;
        while stream.advance() {
            let token = stream.token();
            if token.offset_to - current.start > s.max_chars {
                std::mem::replace(&mut current, Passage::at(token.offset_from)).offer(&mut best);
            }
            current.end = token.offset_to;
            if let Some((_, weight)) = s.words.iter().find(|(w, _)| *w == token.text) {
                current.mark(token.offset_from..token.offset_to, *weight);
            }
        }
        current.offer(&mut best);
        let best = best?;
        Some((text[best.start..best.end].to_owned(), best.marks))
    }

    #[test]
    fn words_rejected_by_their_initial_change_nothing() {
        let long = "a".repeat(47) + "ttività";
        let texts = [
            "L'ATTIVITÀ edilizia: Attività, attivita e attività; Permessi rilasciati.".to_owned(),
            "È stata presentata la SCIA n. 2024/17 per l’attività di ristorazione.".to_owned(),
            "Ébène ÀTTIVITÀ àttività 3attività attività3 Ωmega ωattività attivitàattività"
                .to_owned(),
            format!("{long} attività {long}attività attività"),
            "Costruzione, costruire, costruito; COSTRUZIONI e ricostruzione del permesso 12."
                .repeat(5),
            "permesso".to_owned(),
            String::new(),
            "   ... !!! ".to_owned(),
        ];
        let queries: [&[(&str, f32)]; 4] = [
            &[("attiv", 1.0)],
            &[("permess", 1.0), ("costru", 0.5), ("12", 0.25)],
            &[("ebene", 0.7), ("omega", 0.2)],
            &[("scia", 1.0), ("ristor", 2.0)],
        ];
        for words in queries {
            for max_chars in [20, 40, 240] {
                let mut s = snippets(words, max_chars);
                for text in &texts {
                    let fast = s
                        .best(text)
                        .map(|(passage, marks)| (passage.to_owned(), marks));
                    assert_eq!(
                        fast,
                        by_whole_analysis(&mut s, text),
                        "{words:?} {max_chars} {text:?}"
                    );
                }
            }
        }
        // The cases above must find something: a check of nothing would prove nothing.
        let mut s = snippets(&[("attiv", 1.0)], 240);
        let (passage, marks) = s.best(&texts[0]).expect("a passage");
        assert_eq!(marks.len(), 4, "{passage:?} {marks:?}");
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
