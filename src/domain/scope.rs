//! What a caller may read, as a value: `access` decides it; `index` renders it as the search's
//! permission clause and names the clause by this value itself, so a scope and the key its
//! matches are kept under can never disagree; `db` renders it as the SQL filter of every
//! listing and look-up. One decision, two renderings.

use std::sync::Arc;

use super::DossierId;

/// The dossiers and documents a caller may read. Drafts are their applicant's alone: a scope
/// of the tenant or of offices leaves them out, and the index never holds them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// None (an administrator; an account with no dossier).
    Nothing,
    /// Every filed dossier of the tenant and all its documents (auditors, staff of every
    /// office).
    Tenant {
        /// The municipality.
        tenant: String,
    },
    /// The filed dossiers of some offices and all their documents (staff).
    Offices {
        /// The municipality.
        tenant: String,
        /// Office codes, sorted, without repeats.
        offices: Vec<String>,
    },
    /// Some dossiers and their public documents (citizens, professionals: the dossiers they
    /// applied for, and those delegated to them and filed).
    PublicOf {
        /// The municipality.
        tenant: String,
        /// Dossier ids, sorted, without repeats.
        dossiers: Arc<[DossierId]>,
    },
}

impl Scope {
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
        let a = Scope::offices("t", ["suap".to_owned(), "edilizia".to_owned()]);
        let b = Scope::offices(
            "t",
            ["edilizia".to_owned(), "suap".to_owned(), "suap".to_owned()],
        );
        assert_eq!(a.name(), b.name());
        assert_ne!(
            a.name(),
            Scope::offices("u", ["edilizia".to_owned()]).name()
        );
        let tenant = Scope::Tenant { tenant: "t".into() };
        assert_ne!(tenant.name(), a.name());
        let few = Scope::PublicOf {
            tenant: "t".into(),
            dossiers: vec![DossierId::numbered(1)].into(),
        };
        let other = Scope::PublicOf {
            tenant: "t".into(),
            dossiers: vec![DossierId::numbered(2)].into(),
        };
        assert_ne!(few.name(), other.name());
    }
}
