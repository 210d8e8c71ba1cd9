//! The Italian stemmer with a memory of the words it has stemmed.
//!
//! Stemming is a third of the CPU of a full rebuild, and prose repeats its words (a few
//! thousand forms make up most of any text), so each analyzer instance remembers the stems it
//! has computed, up to [`MAX_WORDS`] words, and starts over when full.
//!
//! Measured gain (BENCHMARKS.md, A/B at 1 M documents against tantivy's Italian stemmer,
//! 57707a6 and 7768aa1): `reindex` in 110.6 s against 139.9 s, and 127.4 s against 150.0 s.

use std::collections::HashMap;
use std::sync::Arc;

use frostem::Algorithm;
use tantivy::tokenizer::{Token, TokenFilter, TokenStream, Tokenizer};

/// Words remembered per analyzer instance (a few MiB).
const MAX_WORDS: usize = 65_536;

/// A token filter replacing each token by its Italian stem, or, when it stems only the words
/// starting with some prefixes, blanking the others.
#[derive(Clone, Debug, Default)]
pub struct ItalianStemmer {
    only: Option<Arc<[String]>>,
}

impl ItalianStemmer {
    /// Stems the tokens starting with one of `prefixes`, and blanks the others.
    pub fn only_starting_with(prefixes: Vec<String>) -> Self {
        Self {
            only: Some(prefixes.into()),
        }
    }
}

impl TokenFilter for ItalianStemmer {
    type Tokenizer<T: Tokenizer> = StemmerFilter<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> StemmerFilter<T> {
        StemmerFilter {
            inner,
            only: self.only,
            stems: HashMap::new(),
        }
    }
}

/// The filter over a tokenizer, with its memory of stems.
#[derive(Clone)]
pub struct StemmerFilter<T> {
    inner: T,
    only: Option<Arc<[String]>>,
    stems: HashMap<String, String>,
}

impl<T: Tokenizer> Tokenizer for StemmerFilter<T> {
    type TokenStream<'a> = StemmerStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        StemmerStream {
            tail: self.inner.token_stream(text),
            stemmer: frostem::Stemmer::new(Algorithm::Italian),
            only: self.only.as_deref(),
            stems: &mut self.stems,
        }
    }
}

/// The stream of stemmed tokens.
pub struct StemmerStream<'a, S> {
    tail: S,
    stemmer: frostem::Stemmer,
    only: Option<&'a [String]>,
    stems: &'a mut HashMap<String, String>,
}

impl<S: TokenStream> TokenStream for StemmerStream<'_, S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Some(only) = self.only
            && !only.iter().any(|p| token.text.starts_with(p.as_str()))
        {
            token.text.clear();
            return true;
        }
        if let Some(stem) = self.stems.get(token.text.as_str()) {
            token.text.clear();
            token.text.push_str(stem);
            return true;
        }
        let stem = self.stemmer.stem(&token.text).into_owned();
        if self.stems.len() >= MAX_WORDS {
            self.stems.clear();
        }
        let word = std::mem::replace(&mut token.text, stem.clone());
        self.stems.insert(word, stem);
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use tantivy::tokenizer::{Language, SimpleTokenizer, Stemmer, TextAnalyzer};

    use super::*;
    use crate::index::tests::analyse as stems;

    #[test]
    fn remembered_stems_equal_the_stemmer_s_own() {
        let text = "costruzioni costruire costruzione permessi permesso autorizzazioni \
                    costruzioni permessi residenza residenze";
        let mut plain = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(Stemmer::new(Language::Italian))
            .build();
        let mut cached = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(ItalianStemmer::default())
            .build();
        let expected = stems(&mut plain, text);
        // Twice: the second pass is answered from memory.
        assert_eq!(stems(&mut cached, text), expected);
        assert_eq!(stems(&mut cached, text), expected);
        assert_eq!(expected[0], expected[6], "the same word, the same stem");
    }
}
