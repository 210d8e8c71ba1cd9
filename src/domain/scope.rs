//! What a caller may find, as a value: `access` decides it, `index` renders it as the search's
//! permission clause and names the clause by this value itself, so a scope and the key its
//! matches are kept under can never disagree.

use std::sync::Arc;

/// The documents a caller's searches may find.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SearchScope {
    /// None (an administrator; an account with no dossier).
    Nothing,
    /// Every document of the tenant (auditors, staff of every office).
    Tenant {
        /// The municipality.
        tenant: String,
    },
    /// The documents of some offices (staff).
    Offices {
        /// The municipality.
        tenant: String,
        /// Office codes, sorted, without repeats.
        offices: Vec<String>,
    },
    /// The public documents of some dossiers (citizens, professionals).
    PublicOf {
        /// The municipality.
        tenant: String,
        /// Dossier ids, sorted, without repeats.
        dossiers: Arc<[String]>,
    },
}

impl SearchScope {
    /// The scope of some offices, in a canonical order.
    pub fn offices(tenant: &str, offices: impl IntoIterator<Item = String>) -> Self {
        let mut offices: Vec<String> = offices.into_iter().collect();
        offices.sort();
        offices.dedup();
        Self::Offices {
            tenant: tenant.to_owned(),
            offices,
        }
    }

    /// A text naming exactly what the scope selects: equal texts, equal documents.
    pub fn name(&self) -> String {
        format!("{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scopes_have_equal_names_and_different_ones_differ() {
        let a = SearchScope::offices("t", ["suap".to_owned(), "edilizia".to_owned()]);
        let b = SearchScope::offices(
            "t",
            ["edilizia".to_owned(), "suap".to_owned(), "suap".to_owned()],
        );
        assert_eq!(a.name(), b.name());
        assert_ne!(
            a.name(),
            SearchScope::offices("u", ["edilizia".to_owned()]).name()
        );
        let tenant = SearchScope::Tenant { tenant: "t".into() };
        assert_ne!(tenant.name(), a.name());
        let few = SearchScope::PublicOf {
            tenant: "t".into(),
            dossiers: vec!["p1".to_owned()].into(),
        };
        let other = SearchScope::PublicOf {
            tenant: "t".into(),
            dossiers: vec!["p2".to_owned()].into(),
        };
        assert_ne!(few.name(), other.name());
    }
}
