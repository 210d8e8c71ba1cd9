//! A [`Scope`] rendered as a search's permission clause: the tantivy query selecting its
//! documents, and, when its matches are worth keeping per segment, the key they are kept under,
//! made from the scope itself ([`Scope::name`]).

use tantivy::Term;
use tantivy::query::{BooleanQuery, EmptyQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{Field, IndexRecordOption};

use super::Fields;
use super::cache::FilterKey;
use super::search::{Deferred, Permission};
use crate::domain::{Scope, Visibility};

/// Scopes of more dossiers than this have their matches kept per index segment; fewer are a
/// few term look-ups, cheaper than a filter per segment, and their documents too few to be
/// worth spreading over the cores.
pub const KEPT_FROM_DOSSIERS: usize = 32;

impl Permission {
    /// The permission clause of `scope`.
    pub fn of(scope: &Scope, fields: &Fields) -> Self {
        let kept = |query: Box<dyn Query>, broad| Self {
            query,
            cache_key: Some(FilterKey::of(&scope.name())),
            narrow: false,
            broad,
        };
        match scope {
            Scope::Nothing => nothing(),
            Scope::Tenant { tenant } => kept(term(fields.tenant, tenant), true),
            Scope::Offices { tenant, offices } => kept(
                both(
                    term(fields.tenant, tenant),
                    any_of(fields.office, offices.iter().cloned()),
                ),
                true,
            ),
            Scope::PublicOf { dossiers, .. } if dossiers.is_empty() => nothing(),
            Scope::PublicOf { tenant, dossiers } => {
                let (tenant_field, dossier, visibility) =
                    (fields.tenant, fields.dossier_id, fields.visibility);
                let tenant = tenant.clone();
                let ids = dossiers.clone();
                let build = move || -> Box<dyn Query> {
                    both(
                        term(tenant_field, &tenant),
                        both(
                            any_of(dossier, ids.iter().map(ToString::to_string)),
                            term(visibility, Visibility::Public.as_str()),
                        ),
                    )
                };
                if dossiers.len() > KEPT_FROM_DOSSIERS {
                    // Kept per segment: built only for a segment whose filter is not.
                    kept(Box::new(Deferred::new(build)), false)
                } else {
                    Self {
                        query: build(),
                        cache_key: None,
                        narrow: true,
                        broad: false,
                    }
                }
            }
        }
    }
}

fn nothing() -> Permission {
    Permission {
        query: Box::new(EmptyQuery),
        cache_key: None,
        narrow: true,
        broad: false,
    }
}

fn term(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

fn both(a: Box<dyn Query>, b: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(vec![(Occur::Must, a), (Occur::Must, b)]))
}

/// Documents whose `field` is any of `values`. A handful of terms is a union of term queries;
/// only large sets pay for building the automaton of a term-set query.
fn any_of(field: Field, values: impl IntoIterator<Item = String>) -> Box<dyn Query> {
    let terms: Vec<Term> = values
        .into_iter()
        .map(|v| Term::from_field_text(field, &v))
        .collect();
    if terms.len() > 2048 {
        return Box::new(TermSetQuery::new(terms));
    }
    let mut clauses: Vec<Box<dyn Query>> = terms
        .into_iter()
        .map(|t| Box::new(TermQuery::new(t, IndexRecordOption::Basic)) as Box<dyn Query>)
        .collect();
    if clauses.len() == 1 {
        return clauses.remove(0);
    }
    Box::new(BooleanQuery::union(clauses))
}
