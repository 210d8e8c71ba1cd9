//! The public search grammar: what callers may write in `q`, and nothing of the engine's.
//!
//! ```text
//! query   := group*                 all groups are required
//! group   := unary ("OR" unary)*    any one of them
//! unary   := "-"? primary           "-" excludes
//! primary := WORD | "\"" WORD* "\"" | "(" query ")"
//! ```
//!
//! A word is a run of letters, digits and the joiners `-` `.` `_` `/` `@` `&` `+`; every other
//! character (field colons, range brackets, wildcards, boosts, regex slashes, apostrophes)
//! separates words and means nothing. The parsed query is rendered back as a query string of
//! the engine in which every word and phrase is quoted and carries no field, so no field,
//! range, wildcard, regex or fuzzy operator can be reached from `q`, whatever it holds.

use std::fmt::Write as _;

/// Words a query may hold, phrases' words included.
pub const MAX_TERMS: usize = 32;
/// Parentheses a query may nest.
pub const MAX_DEPTH: usize = 4;
/// Characters of a query.
pub const MAX_CHARS: usize = 1000;
/// Characters of one word.
const MAX_WORD_CHARS: usize = 64;

/// A query the grammar cannot take; the message is for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A `"` without its closing one.
    #[error("a phrase is not closed: add the closing \"")]
    UnclosedPhrase,
    /// Parentheses that do not pair up.
    #[error("parentheses do not pair up")]
    Unbalanced,
    /// `OR` with nothing on one side.
    #[error("OR needs a word, phrase or group on each side")]
    DanglingOr,
    /// Too many words.
    #[error("a query holds at most {MAX_TERMS} words")]
    TooManyTerms,
    /// Too deep.
    #[error("parentheses nest at most {MAX_DEPTH} deep")]
    TooDeep,
    /// Too long.
    #[error("a query is at most {MAX_CHARS} characters")]
    TooLong,
}

/// A parsed query: groups that must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicQuery {
    groups: Vec<Group>,
}

/// Alternatives, any of which matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group(Vec<Unary>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Unary {
    excluded: bool,
    primary: Primary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Primary {
    Word(String),
    Phrase(Vec<String>),
    Nested(PublicQuery),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Phrase(Vec<String>),
    Open,
    Close,
    Or,
    Minus,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '&' | '+')
}

/// A run of word characters as a word: joiners at its ends dropped, `None` if no letter or
/// digit is left.
fn word(run: &str) -> Option<String> {
    let trimmed = run.trim_matches(|c: char| !c.is_alphanumeric());
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.chars().take(MAX_WORD_CHARS).collect())
}

fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            '"' => {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(QueryError::UnclosedPhrase);
                }
                let words: Vec<String> = inner
                    .split(|c: char| !is_word_char(c))
                    .filter_map(word)
                    .collect();
                if !words.is_empty() {
                    tokens.push(Token::Phrase(words));
                }
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            // An exclusion: a minus that starts a term, not one inside a word.
            '-' if tokens_start_here(text, start) => {
                chars.next();
                tokens.push(Token::Minus);
            }
            c if is_word_char(c) => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                let run = &text[start..end];
                if run == "OR" {
                    tokens.push(Token::Or);
                } else if run == "AND" {
                    // Words are required anyway.
                } else if let Some(w) = word(run) {
                    tokens.push(Token::Word(w));
                }
            }
            _ => {
                chars.next();
            }
        }
    }
    Ok(tokens)
}

/// Whether a `-` at `at` begins an exclusion: at the start, or after a separator, and
/// followed by a word, a phrase or a group.
fn tokens_start_here(text: &str, at: usize) -> bool {
    let before = text[..at].chars().next_back();
    let after = text[at + 1..].chars().next();
    before.is_none_or(|c| !is_word_char(c))
        && after.is_some_and(|c| c.is_alphanumeric() || c == '"' || c == '(')
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn query(&mut self, depth: usize) -> Result<PublicQuery, QueryError> {
        let mut groups = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some(Token::Close) if depth > 0 => break,
                Some(Token::Close) => return Err(QueryError::Unbalanced),
                Some(Token::Or) => return Err(QueryError::DanglingOr),
                Some(_) => {}
            }
            let mut alternatives = vec![self.unary(depth)?];
            while self.peek() == Some(&Token::Or) {
                self.at += 1;
                match self.peek() {
                    None | Some(Token::Close | Token::Or) => return Err(QueryError::DanglingOr),
                    Some(_) => alternatives.push(self.unary(depth)?),
                }
            }
            groups.push(Group(alternatives));
        }
        Ok(PublicQuery { groups })
    }

    fn unary(&mut self, depth: usize) -> Result<Unary, QueryError> {
        let excluded = self.peek() == Some(&Token::Minus);
        if excluded {
            self.at += 1;
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        let primary = match token {
            Some(Token::Word(w)) => {
                self.count(1)?;
                Primary::Word(w)
            }
            Some(Token::Phrase(words)) => {
                self.count(words.len())?;
                Primary::Phrase(words)
            }
            Some(Token::Open) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(QueryError::TooDeep);
                }
                let inner = self.query(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(QueryError::Unbalanced);
                }
                self.at += 1;
                Primary::Nested(inner)
            }
            Some(Token::Close) => return Err(QueryError::Unbalanced),
            // `tokens_start_here` puts a word, phrase or group after every minus, and `query`
            // never calls this at an OR or at the end.
            Some(Token::Or | Token::Minus) | None => return Err(QueryError::DanglingOr),
        };
        Ok(Unary { excluded, primary })
    }

    fn count(&mut self, words: usize) -> Result<(), QueryError> {
        self.terms += words;
        if self.terms > MAX_TERMS {
            Err(QueryError::TooManyTerms)
        } else {
            Ok(())
        }
    }
}

impl PublicQuery {
    /// Parses what a caller wrote.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        if text.chars().count() > MAX_CHARS {
            return Err(QueryError::TooLong);
        }
        // Apostrophes split elisions ("dell'atto", "l’istanza").
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            terms: 0,
        };
        let query = parser.query(0)?;
        Ok(query.pruned())
    }

    /// Whether nothing is left to search for.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The words and phrases' words, in order: what snippets and the trail name.
    pub fn words(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_words(&mut out);
        out
    }

    fn collect_words<'a>(&'a self, out: &mut Vec<&'a str>) {
        for Group(alternatives) in &self.groups {
            for u in alternatives {
                match &u.primary {
                    Primary::Word(w) => out.push(w),
                    Primary::Phrase(ws) => out.extend(ws.iter().map(String::as_str)),
                    Primary::Nested(q) => q.collect_words(out),
                }
            }
        }
    }

    /// Empty groups `()` removed, so nothing renders as an empty clause.
    fn pruned(self) -> Self {
        let groups = self
            .groups
            .into_iter()
            .filter_map(|Group(alternatives)| {
                let kept: Vec<Unary> = alternatives
                    .into_iter()
                    .filter_map(|u| match u.primary {
                        Primary::Nested(q) => {
                            let q = q.pruned();
                            (!q.is_empty()).then_some(Unary {
                                excluded: u.excluded,
                                primary: Primary::Nested(q),
                            })
                        }
                        _ => Some(u),
                    })
                    .collect();
                (!kept.is_empty()).then_some(Group(kept))
            })
            .collect();
        Self { groups }
    }

    /// The query in the engine's grammar: every word and phrase quoted, without a field;
    /// alternatives and groups in parentheses. Words are required by the engine's
    /// conjunction-by-default setting.
    pub fn to_engine(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }

    fn render(&self, out: &mut String) {
        for (i, Group(alternatives)) in self.groups.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            if alternatives.len() == 1 {
                render_unary(&alternatives[0], out);
                continue;
            }
            out.push('(');
            for (j, u) in alternatives.iter().enumerate() {
                if j > 0 {
                    out.push_str(" OR ");
                }
                render_unary(u, out);
            }
            out.push(')');
        }
    }
}

fn render_unary(u: &Unary, out: &mut String) {
    if u.excluded {
        out.push('-');
    }
    match &u.primary {
        // Words hold no quote or backslash (see `is_word_char`).
        Primary::Word(w) => {
            let _ = write!(out, "\"{w}\"");
        }
        Primary::Phrase(ws) => {
            let _ = write!(out, "\"{}\"", ws.join(" "));
        }
        // A group of one alternative set needs no parentheses of its own: it brings them.
        Primary::Nested(q) if q.groups.len() == 1 && q.groups[0].0.len() > 1 => q.render(out),
        Primary::Nested(q) => {
            out.push('(');
            q.render(out);
            out.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(q: &str) -> String {
        PublicQuery::parse(q).expect("parses").to_engine()
    }

    #[test]
    fn words_phrases_exclusions_and_alternatives() {
        assert_eq!(engine("permesso costruire"), r#""permesso" "costruire""#);
        assert_eq!(
            engine(r#""permesso di costruire""#),
            r#""permesso di costruire""#
        );
        assert_eq!(engine("scia -cila"), r#""scia" -"cila""#);
        assert_eq!(
            engine("scia OR cila dehors"),
            r#"("scia" OR "cila") "dehors""#
        );
        assert_eq!(engine("(a OR b) -(c d)"), r#"("a" OR "b") -("c" "d")"#);
        assert_eq!(engine("dell'atto"), r#""dell" "atto""#);
        assert_eq!(
            engine("e-mail 12.5 via/roma"),
            r#""e-mail" "12.5" "via/roma""#
        );
        assert_eq!(engine("a AND b"), r#""a" "b""#);
        assert_eq!(engine("()"), "");
    }

    #[test]
    fn the_engines_syntax_is_only_words() {
        assert_eq!(engine("body:[0 TO zzzz]"), r#""body" "0" "TO" "zzzz""#);
        assert_eq!(engine("body:*"), r#""body""#);
        assert_eq!(
            engine("title:foo^10 ba*r~2"),
            r#""title" "foo" "10" "ba" "r" "2""#
        );
        assert_eq!(engine("/a.*b/"), r#""a" "b""#);
        assert_eq!(engine("doc_id:IN [x y]"), r#""doc_id" "IN" "x" "y""#);
        assert_eq!(engine(r#""a\" b"#), r#""a" "b""#);
    }

    #[test]
    fn malformed_and_oversized_queries_are_errors() {
        assert_eq!(
            PublicQuery::parse("\"open"),
            Err(QueryError::UnclosedPhrase)
        );
        assert_eq!(PublicQuery::parse("(a"), Err(QueryError::Unbalanced));
        assert_eq!(PublicQuery::parse("a)"), Err(QueryError::Unbalanced));
        assert_eq!(PublicQuery::parse("OR a"), Err(QueryError::DanglingOr));
        assert_eq!(PublicQuery::parse("a OR"), Err(QueryError::DanglingOr));
        let many = vec!["w"; MAX_TERMS + 1].join(" ");
        assert_eq!(PublicQuery::parse(&many), Err(QueryError::TooManyTerms));
        let deep = "(".repeat(MAX_DEPTH + 1) + "a" + &")".repeat(MAX_DEPTH + 1);
        assert_eq!(PublicQuery::parse(&deep), Err(QueryError::TooDeep));
        let shallow = "(".repeat(MAX_DEPTH) + "a" + &")".repeat(MAX_DEPTH);
        assert!(PublicQuery::parse(&shallow).is_ok());
        assert_eq!(
            PublicQuery::parse(&"a".repeat(MAX_CHARS + 1)),
            Err(QueryError::TooLong)
        );
    }

    /// Checks that the engine reads `text` as quoted literals of the default field only.
    fn only_plain_literals(ast: &tantivy::query_grammar::UserInputAst) -> Result<(), String> {
        use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
        match ast {
            UserInputAst::Clause(clauses) => {
                clauses.iter().try_for_each(|(_, c)| only_plain_literals(c))
            }
            UserInputAst::Boost(..) => Err("a boost".into()),
            UserInputAst::Leaf(leaf) => match leaf.as_ref() {
                UserInputLeaf::Literal(l) => {
                    if l.field_name.is_some() {
                        Err(format!("a field: {:?}", l.field_name))
                    } else if l.prefix || l.slop != 0 {
                        Err("a prefix or slop".into())
                    } else {
                        Ok(())
                    }
                }
                other => Err(format!("not a literal: {other:?}")),
            },
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever a caller writes: no panic, and what reaches the engine is words and
        /// phrases of the default field, within the bounds.
        #[test]
        fn no_string_reaches_a_field_a_range_or_a_wildcard(
            text in "(\\PC|[-\"()*:?~^\\/\\[\\]{}<>=!+ ]|OR |AND |TO |body:|title:|IN ){0,80}"
        ) {
            if let Ok(q) = PublicQuery::parse(&text) {
                proptest::prop_assert!(q.words().len() <= MAX_TERMS);
                let rendered = q.to_engine();
                if !q.is_empty() {
                    let ast = tantivy::query_grammar::parse_query(&rendered)
                        .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{rendered:?}: {e:?}")))?;
                    only_plain_literals(&ast)
                        .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{text:?} -> {rendered:?}: {e}")))?;
                }
            }
        }
    }
}
