//! Pure domain types: they parse their input and do no I/O.

mod catalogue;
mod codice_fiscale;
mod hash;
mod ids;
mod media;
pub mod query;
mod scope;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use catalogue::{Catalogue, CatalogueError, Office, Procedure};
pub use codice_fiscale::{CodiceFiscale, CodiceFiscaleError};
pub use hash::{ContentHash, ContentHashError};
pub use ids::{DocumentId, DossierId, TokenId, UserId};
pub use media::{judge_media_type, sanitize_filename, sniff_media_type};
pub use scope::Scope;

/// A value outside a closed set of names; the message lists the accepted ones.
#[derive(Debug, thiserror::Error)]
#[error("{what} must be one of: {allowed}; got {got:?}")]
pub struct UnknownName {
    what: &'static str,
    allowed: String,
    got: String,
}

/// Declares a closed set of names stored as text in the database and sent as text over HTTP.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        allowed: [$($text),+].join(", "),
                        got: s.chars().take(40).collect(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// What a user is to the system; it decides what they may read and do.
    Role, "role", {
        /// A resident following their own dossiers.
        Citizen => "citizen",
        /// An architect, surveyor or accountant acting for clients who delegated them.
        Professional => "professional",
        /// Back-office staff of one or more offices.
        Staff => "staff",
        /// Reads everything, changes nothing.
        Auditor => "auditor",
        /// Manages users and offices; reads no document content.
        Admin => "admin",
    }
);

named_enum!(
    /// Who may read a document besides the office handling the dossier.
    Visibility, "visibility", {
        /// The applicant and their delegates may read it.
        Public => "public",
        /// Only staff and auditors.
        Internal => "internal",
    }
);

named_enum!(
    /// The role a document plays in a dossier.
    DocumentKind, "kind", {
        /// The application form itself (*istanza*, *domanda*).
        Application => "application",
        /// Any attachment to the application.
        Attachment => "attachment",
        /// Drawings and technical plans.
        Plan => "plan",
        /// Receipts of payment (fees, stamp duty).
        Receipt => "receipt",
        /// An identity document of the applicant.
        IdentityDocument => "identity_document",
        /// Letters and notices exchanged with the applicant.
        Correspondence => "correspondence",
        /// Opinions of other offices or bodies.
        Opinion => "opinion",
        /// The final measure (*provvedimento*).
        Decision => "decision",
        /// Anything else.
        Other => "other",
    }
);

named_enum!(
    /// Where a dossier stands in its procedure.
    DossierStatus, "status", {
        /// Started online and not yet filed: its applicant alone sees it, the office does not,
        /// and no clock runs.
        Draft => "draft",
        /// Filed, not yet taken in charge by an officer.
        Submitted => "submitted",
        /// An officer took it in charge; the legal deadline runs.
        Started => "started",
        /// The office asked for missing documents; the deadline is suspended.
        AwaitingIntegration => "awaiting_integration",
        /// Closed with an outcome.
        Concluded => "concluded",
        /// Withdrawn by the applicant before it started.
        Withdrawn => "withdrawn",
        /// Kept for the record only.
        Archived => "archived",
    }
);

named_enum!(
    /// How a dossier reached the office.
    Channel, "channel", {
        /// Filed by the applicant through the portal.
        Online => "online",
        /// Brought to the desk on paper and filed by staff.
        Desk => "desk",
    }
);

named_enum!(
    /// Which side of a dossier uploaded a document: only that side adds its versions.
    Side, "side", {
        /// The applicant or a professional acting for them.
        Applicant => "applicant",
        /// The office (staff, or a tool run by an operator).
        Office => "office",
    }
);

named_enum!(
    /// How a document version arrived.
    UploadChannel, "channel", {
        /// Uploaded by the applicant or their professional.
        Online => "online",
        /// Uploaded by office staff.
        Desk => "desk",
        /// Loaded by the `import` command.
        Import => "import",
    }
);

impl Role {
    /// The side of a dossier a user of this role uploads for.
    pub fn side(self) -> Side {
        match self {
            Role::Citizen | Role::Professional => Side::Applicant,
            Role::Staff | Role::Auditor | Role::Admin => Side::Office,
        }
    }

    /// The channel an upload by this role arrives through, outside `import`.
    pub fn upload_channel(self) -> UploadChannel {
        match self.side() {
            Side::Applicant => UploadChannel::Online,
            Side::Office => UploadChannel::Desk,
        }
    }
}

/// The code of an office of the municipality, e.g. `edilizia`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OfficeCode(String);

/// The code of a procedure in the catalogue, e.g. `scia-edilizia`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProcedureCode(String);

/// A code that is not 1–48 characters of `a-z`, `0-9`, `-` and `_`.
#[derive(Debug, thiserror::Error)]
#[error("{0} must be 1-48 characters of a-z, 0-9, '-' and '_'")]
pub struct CodeError(&'static str);

fn parse_code(s: &str, what: &'static str) -> Result<String, CodeError> {
    let ok = !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then(|| s.to_owned()).ok_or(CodeError(what))
}

impl OfficeCode {
    /// Parses an office code.
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        parse_code(s, "an office code").map(Self)
    }
    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ProcedureCode {
    /// Parses a procedure code.
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        parse_code(s, "a procedure code").map(Self)
    }
    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OfficeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for OfficeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OfficeCode({})", self.0)
    }
}
impl fmt::Display for ProcedureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for ProcedureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcedureCode({})", self.0)
    }
}

/// A dossier's human number, `YYYY/NNNNNN`: the year it was opened and its place in that
/// year's sequence of the municipality.
pub fn dossier_number(year: i32, seq: i64) -> String {
    format!("{year}/{seq:06}")
}

/// Free text from a user (titles, subjects): trimmed, 1..=max characters, no control characters.
pub fn clean_text(input: &str, what: &'static str, max: usize) -> Result<String, TextError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(TextError::Empty(what));
    }
    if text.chars().count() > max {
        return Err(TextError::TooLong(what, max));
    }
    if text
        .chars()
        .any(|c| c.is_control() || media::is_bidi_control(c))
    {
        return Err(TextError::Control(what));
    }
    Ok(text.to_owned())
}

/// Free text that is empty, too long or holds control characters.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// Nothing but spaces.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Longer than allowed.
    #[error("{0} must be at most {1} characters")]
    TooLong(&'static str, usize),
    /// Holds control characters.
    #[error("{0} must not contain control characters")]
    Control(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_values_round_trip_and_reject_others_with_the_list() {
        for kind in DocumentKind::ALL {
            assert_eq!(kind.as_str().parse::<DocumentKind>().ok(), Some(*kind));
        }
        let err = "secret".parse::<Visibility>().expect_err("unknown");
        assert!(err.to_string().contains("public, internal"), "{err}");
    }

    #[test]
    fn dossier_numbers_are_zero_padded() {
        assert_eq!(dossier_number(2026, 123), "2026/000123");
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            clean_text("  SCIA  ", "title", 10).ok().as_deref(),
            Some("SCIA")
        );
        assert!(clean_text("   ", "title", 10).is_err());
        assert!(clean_text("a\u{0}b", "title", 10).is_err());
        assert!(clean_text("abcdefghijk", "title", 10).is_err());
    }
}
