//! Online registration of citizens: pending registrations, activation codes and the
//! notification outbox.

use sqlx::Row;

use super::{Db, DbError, now_ms};
use crate::domain::UserId;

/// A pending registration to store.
pub struct NewRegistration<'a> {
    /// Its id.
    pub id: &'a str,
    /// Municipality.
    pub tenant: &'a str,
    /// Codice fiscale (validated).
    pub codice_fiscale: &'a str,
    /// E-mail the code is sent to.
    pub email: &'a str,
    /// Optional phone.
    pub phone: Option<&'a str>,
    /// Hash of the activation code.
    pub code_hash: &'a str,
    /// Expiry (ms).
    pub expires_at: i64,
    /// Client network address.
    pub client_address: &'a str,
    /// The name the applicant gave (for a new account).
    pub name: Option<&'a str>,
    /// The existing account the code activates; `None` for a registration whose activation
    /// creates its own new account.
    pub user_id: Option<UserId>,
    /// The outbox template: `registration_activation`, or `account_activation` for an account
    /// an administrator created.
    pub template: &'static str,
    /// The activation message for the outbox (JSON payload).
    pub message: serde_json::Value,
}

/// Registrations in the last `window_ms` from this e-mail and from this address.
pub async fn recent_counts(
    db: &Db,
    tenant: &str,
    email: &str,
    client_address: &str,
    window_ms: i64,
) -> Result<(i64, i64), DbError> {
    let since = now_ms() - window_ms;
    let by_email: i64 = sqlx::query_scalar(
        "select count(*) from registration where tenant = $1 and email = $2 and created_at > $3",
    )
    .bind(tenant)
    .bind(email)
    .bind(since)
    .fetch_one(db.pool())
    .await?;
    let by_address: i64 = sqlx::query_scalar(
        "select count(*) from registration where client_address = $1 and created_at > $2",
    )
    .bind(client_address)
    .bind(since)
    .fetch_one(db.pool())
    .await?;
    Ok((by_email, by_address))
}

/// Stores a registration and queues its activation message, in one transaction.
pub async fn create(
    db: &Db,
    r: NewRegistration<'_>,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into registration (id, tenant, codice_fiscale, email, phone, code_hash, \
         created_at, expires_at, client_address, name, user_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(r.id)
    .bind(r.tenant)
    .bind(r.codice_fiscale)
    .bind(r.email)
    .bind(r.phone.map(str::to_owned))
    .bind(r.code_hash)
    .bind(now)
    .bind(r.expires_at)
    .bind(r.client_address)
    .bind(r.name)
    .bind(r.user_id.map(|u| u.to_string()))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into notification_outbox (id, tenant, channel, recipient, template, payload, \
         created_at) values ($1, $2, 'email', $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(r.tenant)
    .bind(r.email)
    .bind(r.template)
    .bind(r.message.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "registration.create",
            format!("registration:{}", r.id),
            None,
            "ok",
            serde_json::json!({
                "codice_fiscale": r.codice_fiscale,
                "email": r.email,
                "user": r.user_id.map(|u| u.to_string()),
            }),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A registration being activated.
pub struct Pending {
    /// Codice fiscale.
    pub codice_fiscale: String,
    /// E-mail.
    pub email: String,
    /// Phone.
    pub phone: Option<String>,
    /// Hash of the code.
    pub code_hash: String,
    /// Expiry (ms).
    pub expires_at: i64,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Already used.
    pub used: bool,
    /// The name given (for a new account).
    pub name: Option<String>,
    /// The account it activates, if it was set when registering.
    pub user_id: Option<UserId>,
}

/// Counts one activation attempt and returns the registration as it was before it, inside
/// the caller's transaction (so two attempts cannot both pass the limit).
pub async fn attempt(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    id: &str,
) -> Result<Option<Pending>, DbError> {
    let row = sqlx::query(
        "select codice_fiscale, email, phone, code_hash, expires_at, attempts, used_at, name, \
         user_id from registration where id = $1 and tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    sqlx::query("update registration set attempts = attempts + 1 where id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(Some(Pending {
        codice_fiscale: row.try_get("codice_fiscale")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        code_hash: row.try_get("code_hash")?,
        expires_at: row.try_get("expires_at")?,
        attempts: row.try_get("attempts")?,
        used: row.try_get::<Option<i64>, _>("used_at")?.is_some(),
        name: row.try_get("name")?,
        user_id: row
            .try_get::<Option<String>, _>("user_id")?
            .as_deref()
            .and_then(UserId::parse),
    }))
}

/// Marks a registration used.
pub async fn mark_used(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> Result<(), DbError> {
    sqlx::query("update registration set used_at = $1 where id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records the account a registration's activation created: that one, and no other, is
/// the registration's.
pub async fn set_user(db: &Db, id: &str, user: UserId) -> Result<(), DbError> {
    sqlx::query("update registration set user_id = $1 where id = $2")
        .bind(user.to_string())
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The verified account holding a codice fiscale, with its contact address, if there is one.
pub async fn verified_account(
    db: &Db,
    tenant: &str,
    codice_fiscale: &str,
) -> Result<Option<(UserId, Option<String>)>, DbError> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "select id, email from app_user where tenant = $1 and codice_fiscale = $2 \
         and identity_verified_at is not null and disabled_at is null",
    )
    .bind(tenant)
    .bind(codice_fiscale)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.and_then(|(id, email)| Some((UserId::parse(&id)?, email))))
}
