//! A user's contacts, each used only once proven with a code sent there, and their choice of
//! channels per kind of event.

use serde::Serialize;
use sqlx::Row;

use super::{Db, DbError, now_ms};
use crate::domain::UserId;

/// Wrong codes after which a confirmation is void.
pub const MAX_ATTEMPTS: i32 = 5;

/// A user's contacts.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Contacts {
    /// E-mail address.
    pub email: Option<String>,
    /// Whether messages go there.
    pub email_confirmed: bool,
    /// Mobile number.
    pub phone: Option<String>,
    /// Whether messages go there.
    pub phone_confirmed: bool,
}

/// The user's contacts.
pub async fn get(db: &Db, user: UserId) -> Result<Contacts, DbError> {
    let r = sqlx::query(
        "select email, email_confirmed_at, phone, phone_confirmed_at from app_user where id = $1",
    )
    .bind(user.to_string())
    .fetch_one(db.pool())
    .await?;
    Ok(Contacts {
        email: r.try_get("email")?,
        email_confirmed: r.try_get::<Option<i64>, _>("email_confirmed_at")?.is_some(),
        phone: r.try_get("phone")?,
        phone_confirmed: r.try_get::<Option<i64>, _>("phone_confirmed_at")?.is_some(),
    })
}

/// A confirmation to start: its code goes to `address` through the outbox.
pub struct NewConfirmation<'a> {
    /// Its id.
    pub id: &'a str,
    /// The municipality.
    pub tenant: &'a str,
    /// Whose contact.
    pub user: UserId,
    /// `email` or `sms`.
    pub channel: &'a str,
    /// The address or number to prove.
    pub address: &'a str,
    /// The code's hash.
    pub code_hash: &'a str,
    /// When the code stops working (ms).
    pub expires_at: i64,
    /// The message's template values.
    pub payload: serde_json::Value,
}

/// Stores a confirmation and queues its code, in one transaction.
pub async fn start(
    db: &Db,
    c: NewConfirmation<'_>,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into contact_confirmation (id, user_id, channel, address, code_hash, created_at, \
         expires_at) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.id)
    .bind(c.user.to_string())
    .bind(c.channel)
    .bind(c.address)
    .bind(c.code_hash)
    .bind(now)
    .bind(c.expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into notification_outbox (id, tenant, channel, recipient, template, payload, \
         created_at, user_id) values ($1, $2, $3, $4, 'contact_confirmation', $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(c.tenant)
    .bind(c.channel)
    .bind(c.address)
    .bind(c.payload.to_string())
    .bind(now)
    .bind(c.user.to_string())
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.contact_confirmation",
            format!("user:{}", c.user),
            None,
            "ok",
            serde_json::json!({"channel": c.channel}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How a confirmation attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The contact is now in use.
    Yes(String),
    /// The code is wrong, used or expired.
    Wrong,
    /// Too many wrong codes: start again.
    TooMany,
}

/// Checks `code` against the newest confirmation of `channel` for `user` (`matches` compares
/// a confirmation id and code with the stored hash) and, if right, puts the contact in use.
pub async fn confirm(
    db: &Db,
    user: UserId,
    channel: &str,
    matches: impl Fn(&str, &str) -> bool,
    actor: &crate::audit::Actor,
) -> Result<Confirmed, DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let Some(row) = sqlx::query(
        "select id, address, code_hash, attempts, expires_at, used_at from contact_confirmation \
         where user_id = $1 and channel = $2 order by id desc limit 1",
    )
    .bind(user.to_string())
    .bind(channel)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Confirmed::Wrong);
    };
    let id: String = row.try_get("id")?;
    let attempts: i32 = row.try_get("attempts")?;
    if attempts >= MAX_ATTEMPTS {
        return Ok(Confirmed::TooMany);
    }
    sqlx::query("update contact_confirmation set attempts = attempts + 1 where id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let used: Option<i64> = row.try_get("used_at")?;
    let stored: String = row.try_get("code_hash")?;
    if used.is_some() || expires_at <= now || !matches(&id, &stored) {
        tx.commit().await?;
        return Ok(Confirmed::Wrong);
    }
    let address: String = row.try_get("address")?;
    sqlx::query("update contact_confirmation set used_at = $1 where id = $2")
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let sql = if channel == "email" {
        "update app_user set email = $1, email_confirmed_at = $2 where id = $3"
    } else {
        "update app_user set phone = $1, phone_confirmed_at = $2 where id = $3"
    };
    sqlx::query(sql)
        .bind(&address)
        .bind(now)
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.contact_confirmed",
            format!("user:{user}"),
            None,
            "ok",
            serde_json::json!({"channel": channel}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(Confirmed::Yes(address))
}

/// Marks `email` confirmed for `user` if it is the account's address: an activation code
/// sent there was used.
pub async fn email_proven(db: &Db, user: UserId, email: &str) -> Result<(), DbError> {
    sqlx::query(
        "update app_user set email_confirmed_at = coalesce(email_confirmed_at, $1) \
         where id = $2 and email = $3",
    )
    .bind(now_ms())
    .bind(user.to_string())
    .bind(email)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The channels a user turned off, as `(event, channel)`.
pub async fn disabled(db: &Db, user: UserId) -> Result<Vec<(String, String)>, DbError> {
    let rows = sqlx::query(
        "select event, channel from notification_preference where user_id = $1 and enabled = 0",
    )
    .bind(user.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("event")?, r.try_get("channel")?)))
        .collect()
}

/// Sets whether `user` gets `event` on `channel`.
pub async fn set_preference(
    db: &Db,
    user: UserId,
    choices: &[(String, String, bool)],
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    for (event, channel, enabled) in choices {
        sqlx::query(
            "insert into notification_preference (user_id, event, channel, enabled) \
             values ($1, $2, $3, $4) on conflict (user_id, event, channel) \
             do update set enabled = excluded.enabled",
        )
        .bind(user.to_string())
        .bind(event.clone())
        .bind(channel.clone())
        .bind(i32::from(*enabled))
        .execute(&mut *tx)
        .await?;
    }
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "user.notification_preferences",
            format!("user:{user}"),
            None,
            "ok",
            serde_json::json!({"choices": choices}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// When a confirmation code expires, as the message says it.
pub fn expiry_text(ms: i64) -> String {
    super::notices::italian_date(ms)
}
