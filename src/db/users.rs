//! Users, their offices, and API tokens.

use sqlx::Row;

use super::{Db, DbError, now_ms, parse_stored};
use crate::domain::{CodiceFiscale, OfficeCode, Role, TokenId, UserId};

/// A user as the rest of the system sees them.
#[derive(Clone, Debug)]
pub struct UserRecord {
    /// The user's id.
    pub id: UserId,
    /// The municipality the user belongs to.
    pub tenant: String,
    /// What they are.
    pub role: Role,
    /// Display name.
    pub name: String,
    /// Codice fiscale, for citizens and professionals (optional for others).
    pub codice_fiscale: Option<CodiceFiscale>,
    /// Offices of a staff member.
    pub offices: Vec<OfficeCode>,
    /// Front-office staff handle every office's dossiers.
    pub all_offices: bool,
    /// Whether the codice fiscale was proven (identity document at the desk, an operator, an
    /// identity provider): only then does it open the dossiers filed under it.
    pub verified: bool,
}

/// What is needed to create a user.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The municipality.
    pub tenant: String,
    /// The role.
    pub role: Role,
    /// Display name.
    pub name: String,
    /// Codice fiscale.
    pub codice_fiscale: Option<CodiceFiscale>,
    /// Offices (staff only).
    pub offices: Vec<OfficeCode>,
    /// Front-office staff (every office).
    pub all_offices: bool,
    /// Contact e-mail.
    pub email: Option<String>,
    /// Contact phone.
    pub phone: Option<String>,
    /// How the identity was proven at creation (`operator`), if it was.
    pub identity: Option<&'static str>,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NewUserError {
    /// Another user of the tenant has the same codice fiscale.
    #[error("a user with this codice fiscale already exists")]
    DuplicateCodiceFiscale,
    /// An office code that the catalogue does not hold.
    #[error("unknown office {0}")]
    UnknownOffice(String),
    /// Anything else.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for NewUserError {
    fn from(e: sqlx::Error) -> Self {
        NewUserError::Db(e.into())
    }
}

/// Creates a user with their offices, in one transaction.
pub async fn create_user(
    db: &Db,
    user: &NewUser,
    actor: &crate::audit::Actor,
) -> Result<UserId, NewUserError> {
    let id = UserId::new();
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "insert into app_user (id, tenant, role, name, codice_fiscale, created_at, all_offices, \
         email, phone, identity_verified_at, identity_method) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.to_string())
    .bind(&user.tenant)
    .bind(user.role.as_str())
    .bind(&user.name)
    .bind(
        user.codice_fiscale
            .as_ref()
            .map(|cf| cf.as_str().to_owned()),
    )
    .bind(now)
    .bind(i32::from(user.all_offices))
    .bind(user.email.clone())
    .bind(user.phone.clone())
    .bind(user.identity.map(|_| now))
    .bind(user.identity)
    .execute(&mut *tx)
    .await
    .map_err(DbError::from);
    match inserted {
        Err(e) if e.is_unique_violation() => return Err(NewUserError::DuplicateCodiceFiscale),
        other => other?,
    };
    insert_offices(&mut tx, &user.tenant, id, &user.offices).await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.create",
            format!("user:{id}"),
            None,
            "ok",
            serde_json::json!({
                "role": user.role.as_str(),
                "front_office": user.all_offices,
                "offices": user.offices.iter().map(OfficeCode::as_str).collect::<Vec<_>>(),
                "identity_verified": user.identity,
            }),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Adds offices to a user inside a transaction, refusing codes the tenant does not have.
async fn insert_offices(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    user: UserId,
    offices: &[OfficeCode],
) -> Result<(), NewUserError> {
    for office in offices {
        let known: Option<i64> =
            sqlx::query_scalar("select 1 from office where tenant = $1 and code = $2")
                .bind(tenant.to_owned())
                .bind(office.as_str().to_owned())
                .fetch_optional(&mut **tx)
                .await?;
        if known.is_none() {
            return Err(NewUserError::UnknownOffice(office.to_string()));
        }
        sqlx::query("insert into user_office (user_id, tenant, office_code) values ($1, $2, $3)")
            .bind(user.to_string())
            .bind(tenant.to_owned())
            .bind(office.as_str().to_owned())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A token to store: its hash, what it is for, when it ends, and the token it was made with.
#[derive(Clone, Copy, Debug)]
pub struct NewTokenRow<'a> {
    /// Its owner.
    pub user: UserId,
    /// Hex SHA-256 of the secret.
    pub hash: &'a str,
    /// What it is for.
    pub label: &'a str,
    /// When it ends (ms since the epoch).
    pub expires_at: Option<i64>,
    /// The token that made it: revoking that one revokes this one.
    pub parent: Option<TokenId>,
}

/// Stores a token's hash for a user.
pub async fn insert_token(
    db: &Db,
    token: NewTokenRow<'_>,
    actor: &crate::audit::Actor,
) -> Result<TokenId, DbError> {
    let id = TokenId::new();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into api_token (id, user_id, token_hash, label, created_at, expires_at, parent_id) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.to_string())
    .bind(token.user.to_string())
    .bind(token.hash)
    .bind(token.label)
    .bind(now_ms())
    .bind(token.expires_at)
    .bind(token.parent.map(|p| p.to_string()))
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "token.create",
            format!("token:{id}"),
            None,
            "ok",
            serde_json::json!({
                "user": token.user.to_string(),
                "label": token.label,
                "expires_at": token.expires_at,
                "parent": token.parent.map(|p| p.to_string()),
            }),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// `select` of a user (`u`) with their offices joined into one column by `$join` (office codes
/// never hold a comma), then `$rest`: a request authenticates with one round trip to the
/// database, not two. The text is constant, so it is prepared once per connection.
macro_rules! select_user {
    ($join:literal, $rest:literal) => {
        concat!(
            "select u.id, u.tenant, u.role, u.name, u.codice_fiscale, u.all_offices, \
             u.identity_verified_at, (select ",
            $join,
            " from user_office o where o.user_id = u.id) as offices ",
            $rest
        )
    };
}

/// `select_user!` for each backend's aggregate.
macro_rules! select_user_on {
    ($db:expr, $rest:literal) => {
        match $db.backend() {
            super::Backend::Sqlite => select_user!("group_concat(o.office_code, ',')", $rest),
            super::Backend::Postgres => select_user!("string_agg(o.office_code, ',')", $rest),
        }
    };
}

/// A live token: its id and when it expires (ms since the epoch), if it does.
#[derive(Clone, Copy, Debug)]
pub struct LiveToken {
    /// The token's id.
    pub id: TokenId,
    /// When it expires.
    pub expires_at: Option<i64>,
}

/// The user holding a live token with this hash (not revoked, not expired, account enabled),
/// and the token. A token made with a token is revoked with it (see [`revoke_token`]).
pub async fn user_by_token_hash(
    db: &Db,
    token_hash: &str,
) -> Result<Option<(UserRecord, LiveToken)>, DbError> {
    let row = sqlx::query(select_user_on!(
        db,
        ", t.id as token_id, t.expires_at as token_expires_at from api_token t \
         join app_user u on u.id = t.user_id \
         where t.token_hash = $1 and t.revoked_at is null \
         and (t.expires_at is null or t.expires_at > $2) and u.disabled_at is null"
    ))
    .bind(token_hash)
    .bind(now_ms())
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let token_id: String = row.try_get("token_id")?;
    let token = LiveToken {
        id: TokenId::parse(&token_id)
            .ok_or_else(|| DbError::Corrupt(format!("token id {token_id:?}")))?,
        expires_at: row.try_get("token_expires_at")?,
    };
    Ok(Some((user_from_row(&row)?, token)))
}

/// The enabled account behind a live browser session (not ended, before `now`'s absolute end,
/// active since `active_since`), with the session's form token and last activity: one round
/// trip, as a request authenticated by a token takes.
pub async fn user_by_session_hash(
    db: &Db,
    tenant: &str,
    id_hash: &str,
    now: i64,
    active_since: i64,
) -> Result<Option<(UserRecord, String, i64)>, DbError> {
    let row = sqlx::query(select_user_on!(
        db,
        ", s.csrf, s.last_seen_at from web_session s join app_user u on u.id = s.user_id \
         where s.id_hash = $1 and s.tenant = $2 and s.ended_at is null and s.expires_at > $3 \
         and s.last_seen_at > $4 and u.disabled_at is null"
    ))
    .bind(id_hash)
    .bind(tenant)
    .bind(now)
    .bind(active_since)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok((
            user_from_row(&r)?,
            r.try_get("csrf")?,
            r.try_get("last_seen_at")?,
        ))
    })
    .transpose()
}

/// A user by id, whatever their state.
pub async fn user_by_id(db: &Db, tenant: &str, id: UserId) -> Result<Option<UserRecord>, DbError> {
    let row = sqlx::query(select_user_on!(
        db,
        "from app_user u where u.id = $1 and u.tenant = $2"
    ))
    .bind(id.to_string())
    .bind(tenant)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// A user from a row of `select_user!`.
fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRecord, DbError> {
    let id: String = row.try_get("id")?;
    let id = UserId::parse(&id).ok_or_else(|| DbError::Corrupt(format!("user id {id:?}")))?;
    let role: String = row.try_get("role")?;
    let cf: Option<String> = row.try_get("codice_fiscale")?;
    let codice_fiscale = cf
        .map(|cf| CodiceFiscale::parse(&cf).map_err(|_| DbError::Corrupt("codice_fiscale".into())))
        .transpose()?;
    let joined: Option<String> = row.try_get("offices")?;
    let mut offices = joined
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|o| !o.is_empty())
        .map(|o| OfficeCode::parse(o).map_err(|_| DbError::Corrupt(format!("office {o:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // The aggregate's order is unspecified; callers see the offices sorted.
    offices.sort();
    let all_offices: i32 = row.try_get("all_offices")?;
    let verified: Option<i64> = row.try_get("identity_verified_at")?;
    Ok(UserRecord {
        id,
        tenant: row.try_get("tenant")?,
        role: parse_stored(&role, "role")?,
        name: row.try_get("name")?,
        codice_fiscale,
        offices,
        all_offices: all_offices != 0,
        verified: verified.is_some(),
    })
}

/// A token as its owner or an admin sees it (never the secret).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Token id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// What it is for.
    pub label: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Expires (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// Revoked (RFC 3339), if so.
    pub revoked_at: Option<String>,
}

/// Tokens of a user, newest first.
pub async fn list_tokens(db: &Db, user: UserId) -> Result<Vec<TokenInfo>, DbError> {
    let rows = sqlx::query(
        "select id, user_id, label, created_at, expires_at, revoked_at from api_token \
         where user_id = $1 order by id desc",
    )
    .bind(user.to_string())
    .fetch_all(db.pool())
    .await?;
    let render = crate::db::dossiers::rfc3339;
    rows.iter()
        .map(|r| {
            Ok(TokenInfo {
                id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                label: r.try_get("label")?,
                created_at: render(r.try_get("created_at")?),
                expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(render),
                revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(render),
            })
        })
        .collect()
}

/// The owner of a token, if the token exists in the tenant.
pub async fn token_owner(db: &Db, tenant: &str, token: TokenId) -> Result<Option<UserId>, DbError> {
    let owner: Option<String> = sqlx::query_scalar(
        "select t.user_id from api_token t join app_user u on u.id = t.user_id \
         where t.id = $1 and u.tenant = $2",
    )
    .bind(token.to_string())
    .bind(tenant)
    .fetch_optional(db.pool())
    .await?;
    Ok(owner.as_deref().and_then(UserId::parse))
}

/// Revokes a token and every token made with it (and with those, at any depth); they stop
/// working on the next request.
pub async fn revoke_token(
    db: &Db,
    token: TokenId,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "with recursive made(id) as (select id from api_token where id = $2 \
         union select t.id from api_token t join made on t.parent_id = made.id) \
         update api_token set revoked_at = $1 where id in (select id from made) \
         and revoked_at is null",
    )
    .bind(now_ms())
    .bind(token.to_string())
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "token.revoke",
            format!("token:{token}"),
            None,
            "ok",
            serde_json::json!({}),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(())
}

/// Replaces a staff member's offices (moving them between offices).
pub async fn set_offices(
    db: &Db,
    tenant: &str,
    user: UserId,
    offices: &[OfficeCode],
    actor: &crate::audit::Actor,
) -> Result<(), NewUserError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("delete from user_office where user_id = $1")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    insert_offices(&mut tx, tenant, user, offices).await?;
    let codes: Vec<&str> = offices.iter().map(|o| o.as_str()).collect();
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.offices",
            format!("user:{user}"),
            None,
            "ok",
            serde_json::json!({"offices": codes}),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(())
}

/// Disables an account: its tokens stop working at once.
pub async fn disable_user(
    db: &Db,
    user: UserId,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("update app_user set disabled_at = $1 where id = $2 and disabled_at is null")
        .bind(now_ms())
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.disable",
            format!("user:{user}"),
            None,
            "ok",
            serde_json::json!({}),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(())
}

/// A user as admins see them.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    /// Id.
    pub id: String,
    /// Role.
    pub role: String,
    /// Name.
    pub name: String,
    /// Codice fiscale.
    pub codice_fiscale: Option<String>,
    /// Front-office staff.
    pub front_office: bool,
    /// Disabled (RFC 3339), if so.
    pub disabled_at: Option<String>,
    /// When the codice fiscale was verified (RFC 3339), if it was.
    pub identity_verified_at: Option<String>,
    /// How: `identity_document`, `operator`, `before_identity_proofing`.
    pub identity_method: Option<String>,
}

/// Users of a tenant, by id; only those with `codice_fiscale` when it is given.
pub async fn list_users(
    db: &Db,
    tenant: &str,
    codice_fiscale: Option<&CodiceFiscale>,
) -> Result<Vec<UserInfo>, DbError> {
    let rows = sqlx::query(
        "select id, role, name, codice_fiscale, all_offices, disabled_at, identity_verified_at, \
         identity_method from app_user \
         where tenant = $1 and ($2 is null or codice_fiscale = $2) order by id",
    )
    .bind(tenant)
    .bind(codice_fiscale.map(|c| c.as_str().to_owned()))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UserInfo {
                id: r.try_get("id")?,
                role: r.try_get("role")?,
                name: r.try_get("name")?,
                codice_fiscale: r.try_get("codice_fiscale")?,
                front_office: r.try_get::<i32, _>("all_offices")? != 0,
                disabled_at: r
                    .try_get::<Option<i64>, _>("disabled_at")?
                    .map(crate::db::dossiers::rfc3339),
                identity_verified_at: r
                    .try_get::<Option<i64>, _>("identity_verified_at")?
                    .map(crate::db::dossiers::rfc3339),
                identity_method: r.try_get("identity_method")?,
            })
        })
        .collect()
}

/// How an identity was proven.
#[derive(Clone, Copy, Debug)]
pub struct IdentityProof<'a> {
    /// Who checked it.
    pub by: UserId,
    /// `identity_document` (later `spid`, `cie`).
    pub method: &'a str,
    /// The document's kind.
    pub document_kind: &'a str,
    /// Its number.
    pub document_number: &'a str,
    /// The name on the document, if it replaces the one typed.
    pub name: Option<&'a str>,
}

/// Marks an account's codice fiscale as verified, with who did it and how, in the audit
/// trail. Refused when another account is verified with the same codice fiscale.
pub async fn verify_identity(
    db: &Db,
    user: UserId,
    proof: IdentityProof<'_>,
    actor: &crate::audit::Actor,
) -> Result<(), NewUserError> {
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "update app_user set identity_verified_at = $1, identity_verified_by = $2, \
         identity_method = $3, name = coalesce($4, name) where id = $5",
    )
    .bind(now_ms())
    .bind(proof.by.to_string())
    .bind(proof.method)
    .bind(proof.name)
    .bind(user.to_string())
    .execute(&mut *tx)
    .await
    .map_err(DbError::from);
    match updated {
        Err(e) if e.is_unique_violation() => return Err(NewUserError::DuplicateCodiceFiscale),
        other => other?,
    };
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.verify_identity",
            format!("user:{user}"),
            None,
            "ok",
            serde_json::json!({
                "method": proof.method,
                "document_kind": proof.document_kind,
                "document_number": proof.document_number,
                "name": proof.name,
            }),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(())
}

/// Counts a failed sign-in or activation from `client` in this hour. The first of each hour,
/// address and kind is also an `auth.failure` event of the audit trail; the rest only raise
/// the count, so a flood of failures is a handful of rows, not one each.
pub async fn record_auth_failure(
    db: &Db,
    tenant: &str,
    client: Option<&str>,
    kind: &str,
) -> Result<(), DbError> {
    let now = now_ms();
    let hour = now / 3_600_000;
    let client = client.unwrap_or("unknown");
    let mut tx = db.begin_write().await?;
    let attempts: i64 = sqlx::query_scalar(
        "insert into auth_failure (tenant, client_address, hour, kind, attempts, first_at, \
         last_at) values ($1, $2, $3, $4, 1, $5, $5) \
         on conflict (tenant, client_address, hour, kind) \
         do update set attempts = auth_failure.attempts + 1, last_at = excluded.last_at \
         returning attempts",
    )
    .bind(tenant)
    .bind(client)
    .bind(hour)
    .bind(kind)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if attempts == 1 {
        let actor = crate::audit::Actor::anonymous(tenant, Some(client.to_owned()));
        crate::audit::append_in_tx(
            db,
            &mut tx,
            &[actor.event(
                "auth.failure",
                format!("client:{client}"),
                None,
                "denied",
                serde_json::json!({"kind": kind, "hour": hour}),
            )],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Failed sign-ins and activations per client address and hour, newest first.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuthFailures {
    /// The client address.
    pub client_address: String,
    /// `activation` or `token`.
    pub kind: String,
    /// Failures in the hour.
    pub attempts: i64,
    /// First failure (RFC 3339).
    pub first_at: String,
    /// Last failure (RFC 3339).
    pub last_at: String,
}

/// The counted failures of a tenant, newest hour first (at most `limit` rows).
pub async fn auth_failures(
    db: &Db,
    tenant: &str,
    limit: i64,
) -> Result<Vec<AuthFailures>, DbError> {
    let rows = sqlx::query(
        "select client_address, kind, attempts, first_at, last_at from auth_failure \
         where tenant = $1 order by hour desc, attempts desc limit $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let render = crate::db::dossiers::rfc3339;
    rows.iter()
        .map(|r| {
            Ok(AuthFailures {
                client_address: r.try_get("client_address")?,
                kind: r.try_get("kind")?,
                attempts: r.try_get("attempts")?,
                first_at: render(r.try_get("first_at")?),
                last_at: render(r.try_get("last_at")?),
            })
        })
        .collect()
}
