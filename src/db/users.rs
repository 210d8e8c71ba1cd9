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
pub async fn create_user(db: &Db, user: &NewUser) -> Result<UserId, NewUserError> {
    let id = UserId::new();
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "insert into app_user (id, tenant, role, name, codice_fiscale, created_at) \
         values ($1, $2, $3, $4, $5, $6)",
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
    .execute(&mut *tx)
    .await
    .map_err(DbError::from);
    match inserted {
        Err(e) if e.is_unique_violation() => return Err(NewUserError::DuplicateCodiceFiscale),
        other => other?,
    };
    for office in &user.offices {
        let known: Option<i64> =
            sqlx::query_scalar("select 1 from office where tenant = $1 and code = $2")
                .bind(&user.tenant)
                .bind(office.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if known.is_none() {
            return Err(NewUserError::UnknownOffice(office.to_string()));
        }
        sqlx::query("insert into user_office (user_id, tenant, office_code) values ($1, $2, $3)")
            .bind(id.to_string())
            .bind(&user.tenant)
            .bind(office.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Stores a token's hash for a user.
pub async fn insert_token(
    db: &Db,
    user: UserId,
    token_hash: &str,
    label: &str,
    expires_at: Option<i64>,
) -> Result<TokenId, DbError> {
    let id = TokenId::new();
    sqlx::query(
        "insert into api_token (id, user_id, token_hash, label, created_at, expires_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(token_hash)
    .bind(label)
    .bind(now_ms())
    .bind(expires_at)
    .execute(db.pool())
    .await?;
    Ok(id)
}

/// The user holding a live token with this hash: not revoked, not expired, account enabled.
pub async fn user_by_token_hash(db: &Db, token_hash: &str) -> Result<Option<UserRecord>, DbError> {
    let row = sqlx::query(
        "select u.id, u.tenant, u.role, u.name, u.codice_fiscale from api_token t \
         join app_user u on u.id = t.user_id \
         where t.token_hash = $1 and t.revoked_at is null \
         and (t.expires_at is null or t.expires_at > $2) and u.disabled_at is null",
    )
    .bind(token_hash)
    .bind(now_ms())
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get("id")?;
    let id = UserId::parse(&id).ok_or_else(|| DbError::Corrupt(format!("user id {id:?}")))?;
    let role: String = row.try_get("role")?;
    let cf: Option<String> = row.try_get("codice_fiscale")?;
    let codice_fiscale = cf
        .map(|cf| CodiceFiscale::parse(&cf).map_err(|_| DbError::Corrupt("codice_fiscale".into())))
        .transpose()?;
    let offices: Vec<String> = sqlx::query_scalar(
        "select office_code from user_office where user_id = $1 order by office_code",
    )
    .bind(id.to_string())
    .fetch_all(db.pool())
    .await?;
    let offices = offices
        .iter()
        .map(|o| OfficeCode::parse(o).map_err(|_| DbError::Corrupt(format!("office {o:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(Some(UserRecord {
        id,
        tenant: row.try_get("tenant")?,
        role: parse_stored(&role, "role")?,
        name: row.try_get("name")?,
        codice_fiscale,
        offices,
    }))
}
