//! What a query's shape tells a search: how many documents it can match at most, whether its
//! top hits can be ranked skipping what cannot reach them, and how its clauses are arranged so
//! that a phrase is asked only about the documents the rest admits.

use tantivy::Searcher;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, PhraseQuery, Query, TermQuery};

use super::phrase::KeptPhrase;

/// `clauses`, the first of them the caller's permission, with the user's conjunction flattened
/// into them, when a phrase is among them: tantivy's boolean query starts each of its clauses
/// where the one before it stands (`scorer_danger`), so the phrase is asked only about the
/// permitted documents holding the other words. A boolean query has no `scorer_danger` of its
/// own: the user's conjunction as one clause would align its own clauses from the segment's
/// start, comparing the phrase's positions up to its first match there. Only where at most two
/// clauses score, so that the scores add up as they do with the conjunction whole. A kept
/// permission leads so too: its bitset's `seek` (tantivy's default `seek_danger`) names the
/// next admitted document, so the clauses are aligned on admitted documents only.
pub(super) fn phrase_led(
    clauses: &[(Occur, Box<dyn Query>)],
) -> Option<Vec<(Occur, Box<dyn Query>)>> {
    let mut flat: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (occur, clause) in clauses {
        match clause.downcast_ref::<BooleanQuery>() {
            Some(b)
                if *occur == Occur::Must && b.clauses().iter().all(|(o, _)| *o == Occur::Must) =>
            {
                flat.extend(b.clauses().iter().map(|(o, q)| (*o, q.box_clone())));
            }
            _ => flat.push((*occur, clause.box_clone())),
        }
    }
    let phrase = |q: &dyn Query| q.is::<PhraseQuery>() || q.is::<KeptPhrase>();
    let scoring = flat
        .iter()
        .filter(|(_, q)| !q.is::<ConstScoreQuery>())
        .count();
    (scoring <= 2 && flat.iter().any(|(_, q)| phrase(q.as_ref()))).then_some(flat)
}

/// `query` with each boolean query of one required clause replaced by that clause, which
/// matches and scores the same: the parser leaves one where the user's other words were all
/// stop words (`"permesso di costruire" che`), and a boolean query, which has no
/// `scorer_danger`, would compare a phrase's positions from each segment's start up to its
/// first match instead of starting where the permission admits documents.
pub(super) fn unwrapped(query: Box<dyn Query>) -> Box<dyn Query> {
    match query.downcast_ref::<BooleanQuery>() {
        Some(boolean) if boolean.clauses().len() == 1 && boolean.clauses()[0].0 == Occur::Must => {
            unwrapped(boolean.clauses()[0].1.box_clone())
        }
        Some(boolean) => Box::new(BooleanQuery::new(
            boolean
                .clauses()
                .iter()
                .map(|(occur, clause)| (*occur, unwrapped(clause.box_clone())))
                .collect(),
        )),
        None => query,
    }
}

/// At most how many documents `query` matches, when the rarest term every match must hold
/// says so (no bound through an OR).
pub(super) fn most_matches(searcher: &Searcher, query: &dyn Query) -> tantivy::Result<Option<u64>> {
    let mut least = None;
    if let Some(term) = query.downcast_ref::<TermQuery>() {
        least = Some(searcher.doc_freq(term.term())?);
    } else if let Some(phrase) = query
        .downcast_ref::<PhraseQuery>()
        .or_else(|| query.downcast_ref::<KeptPhrase>().map(KeptPhrase::phrase))
    {
        for term in phrase.phrase_terms() {
            least = fewest(least, searcher.doc_freq(&term)?);
        }
    } else if let Some(boolean) = query.downcast_ref::<BooleanQuery>() {
        for (occur, clause) in boolean.clauses() {
            match occur {
                Occur::Should => return Ok(None),
                Occur::Must => {
                    if let Some(n) = most_matches(searcher, clause.as_ref())? {
                        least = fewest(least, n);
                    }
                }
                Occur::MustNot => {}
            }
        }
    }
    Ok(least)
}

/// Whether the top hits of `query` are ranked skipping what cannot reach them: one term, terms
/// all required or all optional (tantivy's block-max WAND), or a phrase whose matches are kept
/// (the count's pass keeps them, the ranking's skips their blocks).
pub(super) fn prunable(query: &dyn Query) -> bool {
    if query.is::<TermQuery>()
        || query
            .downcast_ref::<KeptPhrase>()
            .is_some_and(KeptPhrase::finds)
    {
        return true;
    }
    let Some(boolean) = query.downcast_ref::<BooleanQuery>() else {
        return false;
    };
    let clauses = boolean.clauses();
    clauses.iter().all(|(_, q)| q.is::<TermQuery>())
        && (clauses.iter().all(|(o, _)| *o == Occur::Must)
            || clauses.iter().all(|(o, _)| *o == Occur::Should))
}

/// The smaller of a bound, if any, and `n`.
pub(super) fn fewest(least: Option<u64>, n: u64) -> Option<u64> {
    Some(least.map_or(n, |l| l.min(n)))
}
