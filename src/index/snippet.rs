//! Snippets: the passage of a text with the best matches of the query's words, and where they
//! are in it.
//!
//! The passage is chosen as tantivy's snippet generator chooses it (passages of at most
//! `max_chars` bytes, cut at the starts of tokens, stop words being none; a passage scores the
//! weights of the words of the query it holds, every occurrence; the best one wins, the earlier
//! one on a tie). Words are compared as the analyzer leaves them (already lower-cased), against
//! the few words of the query in a list, with no allocation per word: highlighting the hits of
//! a page costs a tokenisation of their texts and little else.
//!
//! Measured gain (BENCHMARKS.md, A/B at 1 M documents against tantivy's `SnippetGenerator`,
//! 57707a6): 17 of 24 cells ≥ 10 % faster at p50 on repeated queries and 16 on distinct ones,
//! eight clients 1 722 against 971 searches/s.

use std::ops::Range;

use tantivy::query::Query;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, TokenStream,
};

use super::IndexError;

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

/// The byte range of the last word of `text`, as [`words`] cuts them.
fn last_word(text: &str) -> Option<Range<usize>> {
    let mut chars = text.char_indices().rev();
    let (last, c) = chars.find(|(_, c)| c.is_alphanumeric())?;
    let start = chars
        .find(|(_, c)| !c.is_alphanumeric())
        .map_or(0, |(at, c)| at + c.len_utf8());
    Some(start..last + c.len_utf8())
}

impl Snippets {
    /// Passages of at most `max_chars` bytes, scored by `words` as `analyzer` leaves them.
    /// `analyzer` must analyse a word alone as it does in its text (its filters look at one
    /// token at a time), lower-case and fold it, drop stop words as the indexed field does, and
    /// blank the words that cannot match.
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
                // A stop word is no token: it neither cuts a passage nor starts one.
                if !self.is_token(&text[word.clone()]) {
                    continue;
                }
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
        let mut best = best?;
        best.end = self.last_token_end(&text[..best.end]);
        Some((text.get(best.start..best.end)?, best.marks))
    }

    /// Whether `word` is a token, not a stop word the analyzer drops.
    fn is_token(&mut self, word: &str) -> bool {
        self.analyzer.token_stream(word).advance()
    }

    /// Where the last token of `text` ends: a passage ends at its last token, as its stop
    /// words are none.
    fn last_token_end(&mut self, text: &str) -> usize {
        let mut end = text.len();
        while let Some(word) = last_word(&text[..end]) {
            if word.len() < LONGEST && self.is_token(&text[word.clone()]) {
                return word.end;
            }
            end = word.start;
        }
        text.len()
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

/// The longest passage a snippet shows, in bytes.
const SNIPPET_CHARS: usize = 240;

/// The snippet finder for the terms of `query` in the `searched` field, each weighted by its
/// rarity, with the analyzer that stems only the words that could match (see
/// [`snippet_analyzer`]).
pub(super) fn snippets_for(
    searcher: &tantivy::Searcher,
    query: &dyn Query,
    searched: tantivy::schema::Field,
) -> Result<Snippets, IndexError> {
    let mut terms = std::collections::BTreeSet::new();
    query.query_terms(&mut |term, _| {
        if term.field() == searched {
            terms.insert(term.clone());
        }
    });
    let mut words = Vec::new();
    for term in terms {
        let Some(text) = term.value().as_str().map(str::to_owned) else {
            continue;
        };
        let doc_freq = searcher.doc_freq(&term)?;
        if doc_freq > 0 {
            words.push((text, 1.0 / (1.0 + doc_freq as f32)));
        }
    }
    let stems: Vec<String> = words.iter().map(|(w, _)| w.clone()).collect();
    Ok(Snippets::new(
        snippet_analyzer(&stems),
        words,
        SNIPPET_CHARS,
    ))
}

/// The start of a text, escaped, when no passage matched (a title-only hit).
pub(super) fn lead(text: &str) -> String {
    let cut: String = text.chars().take(240).collect();
    htmlescape::encode_minimal(cut.trim())
}

/// Escapes `fragment` and wraps the highlighted byte ranges in `<mark>`.
pub(super) fn highlight(fragment: &str, ranges: &[std::ops::Range<usize>]) -> String {
    let mut out = String::with_capacity(fragment.len() + ranges.len() * 13);
    let mut at = 0;
    for r in ranges {
        if r.start < at || r.end > fragment.len() {
            continue;
        }
        out.push_str(&htmlescape::encode_minimal(&fragment[at..r.start]));
        out.push_str("<mark>");
        out.push_str(&htmlescape::encode_minimal(&fragment[r.start..r.end]));
        out.push_str("</mark>");
        at = r.end;
    }
    out.push_str(&htmlescape::encode_minimal(&fragment[at..]));
    out
}

/// The analyzer snippets are highlighted with: the Italian analyzer (stop words dropped),
/// except that only words that could stem to one of the query's terms are stemmed (the
/// others are blanked, and never match). The Italian stemmer only removes or rewrites endings, and a rewrite changes at most
/// the stem's last letter (*-enza* becomes *-ente*), so a word that does not begin with a
/// query term's stem minus its last letter (at least three letters) cannot match; skipping
/// the stemmer for those makes highlighting several times cheaper.
pub fn snippet_analyzer(query_terms: &[String]) -> TextAnalyzer {
    let prefixes: Vec<String> = query_terms
        .iter()
        .map(|t| {
            let letters = t.chars().count();
            t.chars()
                .take(letters.saturating_sub(1).max(3).min(letters))
                .collect()
        })
        .collect();
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(super::stop_words())
        .filter(super::stem::ItalianStemmer::only_starting_with(prefixes))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snippets(words: &[(&str, f32)], max_chars: usize) -> Snippets {
        let stems: Vec<String> = words.iter().map(|(w, _)| (*w).to_owned()).collect();
        Snippets::new(
            snippet_analyzer(&stems),
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
    fn passages_are_those_of_tantivys_snippet_generator() {
        // Stop words ("il", "della", "e", "di", "per", "la", "del") at every place a passage
        // could begin or end: they are no tokens, so they neither cut a passage nor end one.
        let texts = [
            "Il comune della città e la pratica del comune, con il parere della commissione \
             e del comune di Roma per la città di Roma e per il comune della pratica.",
            "comune comune città di la per il comune comune città della pratica e il per la",
            "di per la pratica della città e del comune, di per la, comune comune città e di",
        ];
        let queries: [&[&str]; 3] = [
            &["comune", "città", "pratica"],
            &["città"],
            &["pratica", "roma"],
        ];
        let mut compared = 0;
        for query in queries {
            let mut words = Vec::new();
            let mut analyzer = crate::index::italian_analyzer();
            for (i, word) in query.iter().enumerate() {
                let mut stream = analyzer.token_stream(word);
                assert!(stream.advance(), "{word}");
                words.push((stream.token().text.clone(), 1.0 / (2.0 + i as f32)));
            }
            for max_chars in [12, 20, 27, 33, 40, 60, 240] {
                let mut s = snippets(
                    &words
                        .iter()
                        .map(|(w, f)| (w.as_str(), *f))
                        .collect::<Vec<_>>(),
                    max_chars,
                );
                let generator = tantivy::snippet::SnippetGenerator::new(
                    words.iter().cloned().collect(),
                    crate::index::italian_analyzer(),
                    tantivy::schema::Field::from_field_id(0),
                    max_chars,
                );
                for text in texts {
                    let theirs = generator.snippet(text);
                    let ours = s.best(text);
                    if theirs.is_empty() {
                        assert_eq!(ours, None, "{query:?} {max_chars} {text:?}");
                        continue;
                    }
                    let (passage, marks) = ours.expect("a passage");
                    assert_eq!(
                        (passage, marks.as_slice()),
                        (&text[theirs.fragment_range()], theirs.highlighted()),
                        "{query:?} {max_chars} {text:?}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 40, "{compared}");
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
