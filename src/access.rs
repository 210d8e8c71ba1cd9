//! The one place where permissions are computed (DESIGN.md §3).
//!
//! A request's bearer token becomes a [`Caller`] once; every read path then asks the caller
//! for the filter clause to AND into its query, and every write asks it for a decision.
//! Nothing outside this module looks at roles to decide what someone may see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::db::users::{self, UserRecord};
use crate::db::{Db, DbError, now_ms};
use crate::domain::{
    Channel, CodiceFiscale, DocumentKind, DossierId, DossierStatus, OfficeCode, Procedure, Role,
    Scope, Side, TokenId, UserId, Visibility,
};

/// Prefix of every token secret, so a leaked one is recognisable in logs and scanners.
const TOKEN_PREFIX: &str = "fsc_";

/// How long a node trusts what it has read about a token: its owner and their rights, and the
/// dossiers they take part in. A change committed through this node (a token revoked, an
/// account disabled, offices changed, a dossier opened, a delegation granted or revoked), and
/// a dossier change this node applies from the change log, drops everything kept at once; a
/// token revoked or an account changed through another node stops counting here within this
/// time.
const TRUSTED_FOR: Duration = Duration::from_secs(1);
/// Tokens kept before the stale ones are dropped (all of them, if none is stale). A busy
/// professional's entry holds a few hundred dossier ids (some 25 KB), so this bounds what is
/// kept to tens of MiB even if every entry were one.
const KEPT_TOKENS: usize = 2_048;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    user: UserRecord,
    /// What this node keeps about the caller's token, when it was authenticated by one.
    known: Option<Arc<Known>>,
}

/// Callers this node authenticated recently, by the hash of their token: a search need not
/// read the token, the account and the dossiers a citizen or professional takes part in from
/// the database again (two round trips, and for a busy professional hundreds of dossier ids
/// to sort and name).
#[derive(Debug, Default)]
pub struct KnownCallers {
    tokens: Mutex<HashMap<String, Arc<Known>>>,
}

/// What was read about one token.
#[derive(Debug)]
struct Known {
    user: UserRecord,
    /// The token.
    token_id: TokenId,
    /// When the token expires, ms since the epoch.
    token_expires_at: Option<i64>,
    read_at: Instant,
    /// The database's access generation before it was read.
    generation: u64,
    /// The dossiers the caller takes part in, read on their first search.
    members: tokio::sync::OnceCell<Arc<Members>>,
}

impl Known {
    fn trusted(&self, db: &Db, now_ms: i64) -> bool {
        self.read_at.elapsed() < TRUSTED_FOR
            && self.generation == db.access_generation()
            && self.token_expires_at.is_none_or(|at| at > now_ms)
    }
}

/// The dossiers a citizen or professional takes part in, as their search permission needs
/// them.
#[derive(Debug)]
struct Members {
    /// Sorted, without repeats.
    ids: Arc<[DossierId]>,
    /// The first end of validity among the delegations behind them.
    valid_until: Option<i64>,
}

/// Why a request could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// A token that is unknown, revoked or expired.
    #[error("invalid or expired token")]
    Invalid,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A write the caller may not make, on an object they may see. The message is for the caller.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub &'static str);

/// The facts about a dossier that write decisions depend on.
#[derive(Clone, Debug)]
pub struct DossierFacts<'a> {
    /// The office handling it.
    pub office: &'a str,
    /// Its applicant.
    pub applicant_cf: &'a str,
    /// Where it stands.
    pub status: DossierStatus,
}

/// A freshly generated token: the secret (shown once) and the hash that is stored.
pub struct NewToken {
    /// The bearer secret.
    pub secret: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
}

/// Generates a random token secret.
pub fn generate_token() -> NewToken {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not something a server can recover from sensibly.
    #[expect(clippy::expect_used, reason = "no entropy means no safe tokens at all")]
    getrandom::fill(&mut bytes).expect("operating-system random source");
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_token(&secret);
    NewToken { secret, hash }
}

/// The stored form of a token secret.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates a token for `user` and returns its secret. A token made with a token (`parent`)
/// ends when its parent is revoked.
pub async fn issue_token(
    db: &Db,
    user: UserId,
    label: &str,
    expires_at: Option<i64>,
    parent: Option<TokenId>,
    actor: &crate::audit::Actor,
) -> Result<String, DbError> {
    let token = generate_token();
    users::insert_token(
        db,
        users::NewTokenRow {
            user,
            hash: &token.hash,
            label,
            expires_at,
            parent,
        },
        actor,
    )
    .await?;
    Ok(token.secret)
}

/// Turns an `Authorization` header value into a caller, from what this node keeps about the
/// token while it is trusted (see [`TRUSTED_FOR`]), else from the database.
pub async fn authenticate(
    db: &Db,
    known: &KnownCallers,
    authorization: Option<&str>,
) -> Result<Caller, AuthError> {
    let header = authorization.ok_or(AuthError::Missing)?;
    let (scheme, secret) = header.split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let secret = secret.trim();
    // Reject obviously malformed secrets before touching the database.
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
        return Err(AuthError::Invalid);
    }
    let hash = hash_token(secret);
    if let Some(kept) = known.get(&hash)
        && kept.trusted(db, now_ms())
    {
        return Ok(Caller {
            user: kept.user.clone(),
            known: Some(kept),
        });
    }
    // Read before the look-up: a change committed while it runs makes what it reads stale.
    let generation = db.access_generation();
    let read_at = Instant::now();
    let (user, token) = users::user_by_token_hash(db, &hash)
        .await?
        .ok_or(AuthError::Invalid)?;
    let kept = Arc::new(Known {
        user: user.clone(),
        token_id: token.id,
        token_expires_at: token.expires_at,
        read_at,
        generation,
        members: tokio::sync::OnceCell::new(),
    });
    known.keep(hash, kept.clone());
    Ok(Caller {
        user,
        known: Some(kept),
    })
}

impl KnownCallers {
    fn get(&self, hash: &str) -> Option<Arc<Known>> {
        self.tokens.lock().ok()?.get(hash).cloned()
    }

    fn keep(&self, hash: String, kept: Arc<Known>) {
        let Ok(mut tokens) = self.tokens.lock() else {
            return;
        };
        if tokens.len() >= KEPT_TOKENS && !tokens.contains_key(&hash) {
            tokens.retain(|_, k| k.read_at.elapsed() < TRUSTED_FOR);
            if tokens.len() >= KEPT_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(hash, kept);
    }
}

impl Caller {
    /// Wraps a user record; only for callers authenticated by other means (the CLI).
    pub fn from_user(user: UserRecord) -> Self {
        Self { user, known: None }
    }

    /// The user's id.
    pub fn id(&self) -> UserId {
        self.user.id
    }

    /// The token the caller authenticated with, and when it expires (ms since the epoch).
    pub fn token(&self) -> Option<(TokenId, Option<i64>)> {
        self.known
            .as_ref()
            .map(|k| (k.token_id, k.token_expires_at))
    }

    /// Whether the caller's codice fiscale is proven (see [`UserRecord::verified`]).
    pub fn verified(&self) -> bool {
        self.user.verified
    }

    /// May this caller confirm another account's identity against a document they checked?
    /// Front-office staff only.
    pub fn may_verify_identities(&self) -> Result<(), Denied> {
        if self.front_office() {
            Ok(())
        } else {
            Err(Denied(
                "only front-office staff can verify an identity against a document",
            ))
        }
    }

    /// May this caller write anything at all? Auditors and admins read or administer; they
    /// file nothing about dossiers (proposals included).
    pub fn may_file(&self) -> Result<(), Denied> {
        match self.user.role {
            Role::Auditor => Err(Denied("auditors read; they write nothing")),
            Role::Admin => Err(Denied("administrators do not file dossier records")),
            Role::Citizen | Role::Professional | Role::Staff => Ok(()),
        }
    }

    /// Whether this caller sees who uploaded a document by name (staff and auditors), or only
    /// which side did (applicants).
    pub fn sees_uploaders(&self) -> bool {
        matches!(self.user.role, Role::Staff | Role::Auditor)
    }

    /// The user's role.
    pub fn role(&self) -> Role {
        self.user.role
    }

    /// The user's display name.
    pub fn name(&self) -> &str {
        &self.user.name
    }

    /// The user's municipality.
    pub fn tenant(&self) -> &str {
        &self.user.tenant
    }

    /// The user's codice fiscale, if any.
    pub fn codice_fiscale(&self) -> Option<&CodiceFiscale> {
        self.user.codice_fiscale.as_ref()
    }

    /// The user's offices (staff).
    pub fn offices(&self) -> &[OfficeCode] {
        &self.user.offices
    }

    /// Front-office staff handle every office's dossiers.
    pub fn front_office(&self) -> bool {
        self.user.role == Role::Staff && self.user.all_offices
    }

    /// True for staff who handle dossiers of `office`.
    fn handles_office(&self, office: &str) -> bool {
        self.user.role == Role::Staff
            && (self.user.all_offices || self.user.offices.iter().any(|o| o.as_str() == office))
    }

    /// May this caller grant and revoke delegations on a dossier they can see? The applicant
    /// may, and staff handling it on the applicant's behalf; a delegated professional may not
    /// delegate further.
    pub fn may_manage_delegations(&self, dossier: &DossierFacts<'_>) -> Result<(), Denied> {
        let is_applicant = matches!(self.user.role, Role::Citizen | Role::Professional)
            && self.user.codice_fiscale.as_ref().map(|c| c.as_str()) == Some(dossier.applicant_cf);
        if is_applicant || self.handles_office(dossier.office) {
            Ok(())
        } else {
            Err(Denied(
                "only the applicant or the office handling the dossier can manage its delegations",
            ))
        }
    }

    /// May this caller manage users and tokens of others?
    pub fn may_administer(&self) -> Result<(), Denied> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(Denied("only administrators can do this"))
        }
    }

    /// May this caller open a dossier of `procedure` for `applicant`? Returns the channel it
    /// arrives by: online for applicants filing themselves, desk for staff filing from paper.
    pub fn may_open_dossier(
        &self,
        procedure: &Procedure,
        applicant: &CodiceFiscale,
    ) -> Result<Channel, Denied> {
        match self.user.role {
            Role::Citizen | Role::Professional => {
                if self.user.codice_fiscale.as_ref() == Some(applicant) {
                    Ok(Channel::Online)
                } else {
                    Err(Denied(
                        "you can open dossiers only with yourself as the applicant",
                    ))
                }
            }
            Role::Staff => {
                if self.user.all_offices || self.user.offices.contains(&procedure.office) {
                    Ok(Channel::Desk)
                } else {
                    Err(Denied(
                        "this procedure belongs to an office you are not part of",
                    ))
                }
            }
            Role::Auditor | Role::Admin => Err(Denied("your role cannot open dossiers")),
        }
    }

    /// May this caller add a document of `kind` with `visibility` to a dossier they can see,
    /// in the state it is in? Applicants never add internal documents or decisions, and add
    /// nothing once the dossier is concluded; nobody adds to a withdrawn or archived one (a
    /// later act of the office on a concluded dossier is a new document).
    pub fn may_add_document(
        &self,
        dossier: &DossierFacts<'_>,
        kind: DocumentKind,
        visibility: Visibility,
    ) -> Result<(), Refused> {
        self.may_upload_to(dossier)?;
        if self.user.role.side() == Side::Applicant {
            if visibility == Visibility::Internal {
                return Err(Refused::Denied(Denied(
                    "only office staff can add internal documents",
                )));
            }
            if kind == DocumentKind::Decision {
                return Err(Refused::Denied(Denied(
                    "only office staff can upload decisions",
                )));
            }
        }
        match dossier.status {
            DossierStatus::Withdrawn | DossierStatus::Archived => Err(Refused::Closed),
            DossierStatus::Concluded if self.user.role.side() == Side::Applicant => {
                Err(Refused::Closed)
            }
            _ => Ok(()),
        }
    }

    /// May this caller add a version to a document uploaded by `side` in a dossier they can
    /// see? Only the side that uploaded it, and only while the dossier is open: the versions of
    /// a concluded, withdrawn or archived dossier are never rewritten.
    pub fn may_add_version(&self, dossier: &DossierFacts<'_>, side: Side) -> Result<(), Refused> {
        self.may_upload_to(dossier)?;
        if self.user.role.side() != side {
            return Err(Refused::Denied(Denied(
                "only the side that uploaded a document adds its versions",
            )));
        }
        match dossier.status {
            DossierStatus::Concluded | DossierStatus::Withdrawn | DossierStatus::Archived => {
                Err(Refused::Closed)
            }
            _ => Ok(()),
        }
    }

    /// Who may upload to a dossier at all: its applicants (those who can see it) and the staff
    /// of its office.
    fn may_upload_to(&self, dossier: &DossierFacts<'_>) -> Result<(), Refused> {
        match self.user.role {
            Role::Citizen | Role::Professional => Ok(()),
            Role::Staff if self.handles_office(dossier.office) => Ok(()),
            Role::Staff => Err(Refused::Denied(Denied(
                "this dossier belongs to an office you are not part of",
            ))),
            Role::Auditor | Role::Admin => {
                Err(Refused::Denied(Denied("your role cannot add documents")))
            }
        }
    }
}

/// Why an upload is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The caller's role or side may not make it.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The dossier's state does not take it.
    #[error("the dossier's state does not take this upload")]
    Closed,
}

impl Caller {
    /// What this caller may read: every filed dossier of the tenant for auditors and staff of
    /// every office, their offices' for other staff, the dossiers they take part in (public
    /// documents only) for citizens and professionals, nothing for admins. The search renders
    /// it as its permission clause, `db` as the SQL filter of listings and look-ups.
    pub async fn scope(&self, db: &Db) -> Result<Scope, DbError> {
        let tenant = self.user.tenant.as_str().to_owned();
        Ok(match self.user.role {
            Role::Auditor => Scope::Tenant { tenant },
            Role::Staff if self.user.all_offices => Scope::Tenant { tenant },
            Role::Admin => Scope::Nothing,
            Role::Staff => Scope::offices(
                &tenant,
                self.user.offices.iter().map(|o| o.as_str().to_owned()),
            ),
            Role::Citizen | Role::Professional => Scope::PublicOf {
                tenant,
                dossiers: self.members(db).await?.ids.clone(),
            },
        })
    }

    /// The search permission of this caller: its [`Self::scope`] as the index renders it.
    pub async fn search_permission(
        &self,
        db: &Db,
        fields: &crate::index::Fields,
    ) -> Result<crate::index::search::Permission, DbError> {
        let scope = self.scope(db).await?;
        Ok(crate::index::search::Permission::of(&scope, fields))
    }

    /// The dossiers this citizen or professional takes part in: kept with their token while
    /// it is trusted and no delegation behind them has ended, else read again.
    async fn members(&self, db: &Db) -> Result<Arc<Members>, DbError> {
        let now = now_ms();
        let Some(known) = self.known.as_ref().filter(|k| k.trusted(db, now)) else {
            return Ok(Arc::new(self.read_members(db).await?));
        };
        if let Some(members) = known.members.get() {
            if members.valid_until.is_none_or(|until| until > now) {
                return Ok(members.clone());
            }
            // A delegation ran out: read them afresh, until the token is read again.
            return Ok(Arc::new(self.read_members(db).await?));
        }
        let members = known
            .members
            .get_or_try_init(|| async { self.read_members(db).await.map(Arc::new) })
            .await?;
        Ok(members.clone())
    }

    /// The dossiers a citizen or professional takes part in: as applicant, or through a
    /// delegation in force to a filed dossier (a draft is its applicant's alone); written as a union
    /// so each half uses its index instead of scanning the tenant's dossiers; the tenant of
    /// delegated dossiers is left to the search's own tenant clause.
    async fn read_members(&self, db: &Db) -> Result<Members, DbError> {
        let Some(cf) = &self.user.codice_fiscale else {
            return Ok(Members {
                ids: Arc::new([]),
                valid_until: None,
            });
        };
        let tenant = self.user.tenant.clone();
        let (ids, valid_until) = crate::db::delegations::member_dossiers(
            db,
            &tenant,
            cf.as_str(),
            (!self.user.verified).then_some(self.user.id),
            self.user.verified && self.user.role == Role::Professional,
        )
        .await?;
        Ok(Members {
            ids: ids.into(),
            valid_until,
        })
    }
}
