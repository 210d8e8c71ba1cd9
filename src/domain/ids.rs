//! Typed identifiers. Ids are UUIDv7: unguessable, and ordered by creation time, so
//! listings can page by id.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id, ordered after every id made before it.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the hyphenated form; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                // Only the canonical lower-case hyphenated form, so that one id has one spelling.
                if s.len() != 36 {
                    return None;
                }
                let id = Uuid::try_parse(s).ok()?;
                (id.hyphenated().to_string() == s).then_some(Self(id))
            }
        }

        #[cfg(test)]
        #[allow(dead_code, reason = "tests number the ids of some types only")]
        impl $name {
            /// The id whose 128 bits are `n`: distinct, ordered ids for tests.
            pub(crate) fn numbered(n: u128) -> Self {
                Self(Uuid::from_u128(n))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

typed_id!(
    /// A dossier (*pratica*).
    DossierId
);
typed_id!(
    /// A document inside a dossier; its versions share the id.
    DocumentId
);
typed_id!(
    /// A user account.
    UserId
);
typed_id!(
    /// An API token (not the secret itself).
    TokenId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_their_canonical_form() {
        let id = DossierId::new();
        assert_eq!(DossierId::parse(&id.to_string()), Some(id));
        assert_eq!(DossierId::parse(&id.to_string().to_uppercase()), None);
        assert_eq!(DossierId::parse("1"), None);
        assert_eq!(DossierId::parse("../../etc/passwd"), None);
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let a = DocumentId::new();
        let b = DocumentId::new();
        assert!(a.to_string() < b.to_string());
    }
}
