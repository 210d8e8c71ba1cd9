//! What the web pages keep: browser sessions, sign-in codes, staff credentials and their
//! activation links, and the back-off of failed sign-ins.

use sqlx::Row;

use super::users::{self, UserRecord};
use super::{Db, DbError, now_ms};
use crate::domain::{Role, UserId};

/// A live session, with its owner.
#[derive(Clone, Debug)]
pub struct Session {
    /// The session's id (the hash of its secret).
    pub id_hash: String,
    /// Who is signed in.
    pub user: UserRecord,
    /// The token every form of the session carries.
    pub csrf: String,
    /// When activity was last recorded, ms.
    pub last_seen_at: i64,
}

/// A session to open.
pub struct NewSession<'a> {
    /// Hash of the cookie's secret.
    pub id_hash: &'a str,
    /// The municipality.
    pub tenant: &'a str,
    /// Who signed in.
    pub user: UserId,
    /// The form token.
    pub csrf: &'a str,
    /// `code` or `password_totp`.
    pub method: &'a str,
    /// The absolute end, ms.
    pub expires_at: i64,
    /// The browser's address.
    pub client: Option<&'a str>,
}

/// Opens a session and records the sign-in in the audit trail, in one transaction.
pub async fn open_session(
    db: &Db,
    s: NewSession<'_>,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into web_session (id_hash, tenant, user_id, csrf, method, created_at, \
         last_seen_at, expires_at, client_address) values ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
    )
    .bind(s.id_hash)
    .bind(s.tenant)
    .bind(s.user.to_string())
    .bind(s.csrf)
    .bind(s.method)
    .bind(now)
    .bind(s.expires_at)
    .bind(s.client)
    .execute(&mut *tx)
    .await?;
    commit_with_event(
        db,
        tx,
        actor,
        "session.open",
        s.user,
        serde_json::json!({"method": s.method}),
    )
    .await
}

/// The live session with this id: not ended, before its absolute end, active within
/// `idle_ms`, its owner's account enabled.
pub async fn session(
    db: &Db,
    tenant: &str,
    id_hash: &str,
    idle_ms: i64,
) -> Result<Option<Session>, DbError> {
    let now = now_ms();
    Ok(
        users::user_by_session_hash(db, tenant, id_hash, now, now - idle_ms)
            .await?
            .map(|(user, csrf, last_seen_at)| Session {
                id_hash: id_hash.to_owned(),
                user,
                csrf,
                last_seen_at,
            }),
    )
}

/// Records activity on a session (callers do it at most once a minute).
pub async fn touch(db: &Db, id_hash: &str) -> Result<(), DbError> {
    sqlx::query("update web_session set last_seen_at = $1 where id_hash = $2")
        .bind(now_ms())
        .bind(id_hash)
        .execute(db.write_pool())
        .await?;
    Ok(())
}

/// Records `action` on `user` in the audit trail inside `tx`, then commits.
async fn commit_with_event(
    db: &Db,
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    actor: &crate::audit::Actor,
    action: &str,
    user: impl std::fmt::Display,
    detail: serde_json::Value,
) -> Result<(), DbError> {
    let event = actor.event(action, format!("user:{user}"), None, "ok", detail);
    crate::audit::append_in_tx(db, &mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends a session (logout).
pub async fn end_session(
    db: &Db,
    id_hash: &str,
    actor: &crate::audit::Actor,
    user: UserId,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    sqlx::query("update web_session set ended_at = $1 where id_hash = $2 and ended_at is null")
        .bind(now_ms())
        .bind(id_hash)
        .execute(&mut *tx)
        .await?;
    commit_with_event(db, tx, actor, "session.close", user, serde_json::json!({})).await?;
    Ok(())
}

/// Who may sign in with an identifier typed on the sign-in page: a codice fiscale or an
/// e-mail address, matched within the municipality's enabled accounts.
#[derive(Clone, Debug)]
pub struct SignInAccount {
    /// The account.
    pub user: UserRecord,
    /// Its confirmed e-mail address, if any.
    pub email: Option<String>,
    /// Its confirmed mobile number, if any.
    pub phone: Option<String>,
}

/// The enabled account named by `identifier` (a codice fiscale, upper-cased, or an e-mail,
/// compared without case) among `roles`; none when no account or more than one matches.
pub async fn account_for_sign_in(
    db: &Db,
    tenant: &str,
    identifier: &str,
    roles: &[Role],
) -> Result<Option<SignInAccount>, DbError> {
    let identifier = identifier.trim();
    let rows = sqlx::query(
        "select id, role, email, email_confirmed_at, phone, phone_confirmed_at from app_user \
         where tenant = $1 and disabled_at is null \
         and (codice_fiscale = $2 or lower(email) = $3) limit 2",
    )
    .bind(tenant)
    .bind(identifier.to_uppercase())
    .bind(identifier.to_lowercase())
    .fetch_all(db.pool())
    .await?;
    let [row] = rows.as_slice() else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    let id = UserId::parse(&id).ok_or_else(|| DbError::Corrupt(format!("user id {id:?}")))?;
    let Some(user) = users::user_by_id(db, tenant, id).await? else {
        return Ok(None);
    };
    if !roles.contains(&user.role) {
        return Ok(None);
    }
    let confirmed = |value: &str, at: &str| -> Result<Option<String>, DbError> {
        let value: Option<String> = row.try_get(value)?;
        let at: Option<i64> = row.try_get(at)?;
        Ok(value.filter(|_| at.is_some()))
    };
    Ok(Some(SignInAccount {
        user,
        email: confirmed("email", "email_confirmed_at")?,
        phone: confirmed("phone", "phone_confirmed_at")?,
    }))
}

/// A sign-in code to store and send.
pub struct NewCode<'a> {
    /// Its id (the pending sign-in the browser carries).
    pub id: &'a str,
    /// The municipality.
    pub tenant: &'a str,
    /// Whose.
    pub user: UserId,
    /// Hash of the id and the code.
    pub code_hash: &'a str,
    /// When it stops working, ms.
    pub expires_at: i64,
    /// Where the request came from.
    pub client: Option<&'a str>,
    /// `email` or `sms`.
    pub channel: &'a str,
    /// The address or number it goes to.
    pub recipient: &'a str,
    /// The message's template values.
    pub payload: serde_json::Value,
}

/// Stores a sign-in code and queues its message, in one transaction.
pub async fn start_code(db: &Db, c: NewCode<'_>) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into sign_in_code (id, tenant, user_id, code_hash, created_at, expires_at, \
         client_address) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.id)
    .bind(c.tenant)
    .bind(c.user.to_string())
    .bind(c.code_hash)
    .bind(now)
    .bind(c.expires_at)
    .bind(c.client)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into notification_outbox (id, tenant, channel, recipient, template, payload, \
         created_at, user_id) values ($1, $2, $3, $4, 'sign_in_code', $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(c.tenant)
    .bind(c.channel)
    .bind(c.recipient)
    .bind(c.payload.to_string())
    .bind(now)
    .bind(c.user.to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How a code attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right: the code is used up and the user may sign in.
    Right(UserId),
    /// Wrong, used, expired or unknown.
    Wrong,
    /// Too many wrong codes: ask for a new one.
    TooMany,
}

/// Wrong codes after which a sign-in code is void.
pub const CODE_ATTEMPTS: i32 = 5;

/// Checks `code` for the pending sign-in `id`; `hash_of` gives the hash a code is stored as.
pub async fn check_code(
    db: &Db,
    tenant: &str,
    id: &str,
    hash_of: impl Fn(&str) -> String,
    code: &str,
) -> Result<CodeCheck, DbError> {
    let mut tx = db.begin_write().await?;
    let row = sqlx::query(
        "select user_id, code_hash, expires_at, attempts, used_at from sign_in_code \
         where id = $1 and tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(CodeCheck::Wrong);
    };
    let attempts: i32 = row.try_get("attempts")?;
    let used: Option<i64> = row.try_get("used_at")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    if used.is_some() || expires_at <= now_ms() {
        return Ok(CodeCheck::Wrong);
    }
    if attempts >= CODE_ATTEMPTS {
        return Ok(CodeCheck::TooMany);
    }
    let stored: String = row.try_get("code_hash")?;
    // Hashes are compared, not codes: timing tells nothing about the code.
    let outcome = if stored == hash_of(code) {
        sqlx::query("update sign_in_code set used_at = $1 where id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let user: String = row.try_get("user_id")?;
        CodeCheck::Right(
            UserId::parse(&user).ok_or_else(|| DbError::Corrupt(format!("user id {user:?}")))?,
        )
    } else {
        sqlx::query("update sign_in_code set attempts = attempts + 1 where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if attempts + 1 >= CODE_ATTEMPTS {
            CodeCheck::TooMany
        } else {
            CodeCheck::Wrong
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// A staff member's password and TOTP secret.
#[derive(Clone, Debug)]
pub struct Credential {
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// The last TOTP time step accepted.
    pub totp_last_step: i64,
}

/// The credential of `user`, if one was set.
pub async fn credential(db: &Db, user: UserId) -> Result<Option<Credential>, DbError> {
    let row = sqlx::query(
        "select password_hash, totp_secret, totp_last_step from user_credential where user_id = $1",
    )
    .bind(user.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(Credential {
            password_hash: r.try_get("password_hash")?,
            totp_secret: r.try_get("totp_secret")?,
            totp_last_step: r.try_get("totp_last_step")?,
        })
    })
    .transpose()
}

/// Marks TOTP time step `step` as used by `user`; false if it (or a later one) already was,
/// so a code is accepted once.
pub async fn use_totp_step(db: &Db, user: UserId, step: i64) -> Result<bool, DbError> {
    let done = sqlx::query(
        "update user_credential set totp_last_step = $1 where user_id = $2 and totp_last_step < $1",
    )
    .bind(step)
    .bind(user.to_string())
    .execute(db.write_pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets `user`'s password and TOTP secret and, when they come from an activation link,
/// uses the link up, in one transaction; false if the link was used meanwhile.
pub async fn set_credential(
    db: &Db,
    user: UserId,
    password_hash: &str,
    totp_secret: &str,
    link: Option<&str>,
    actor: &crate::audit::Actor,
) -> Result<bool, DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    if let Some(link) = link {
        let used = sqlx::query(
            "update activation_link set used_at = $1 where id = $2 and used_at is null \
             and expires_at > $1",
        )
        .bind(now)
        .bind(link)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(false);
        }
    }
    sqlx::query(
        "insert into user_credential (user_id, password_hash, totp_secret, totp_last_step, set_at) \
         values ($1, $2, $3, 0, $4) on conflict (user_id) do update set \
         password_hash = excluded.password_hash, totp_secret = excluded.totp_secret, \
         totp_last_step = 0, set_at = excluded.set_at",
    )
    .bind(user.to_string())
    .bind(password_hash)
    .bind(totp_secret)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // A new password ends every session opened with the old one.
    sqlx::query("update web_session set ended_at = $1 where user_id = $2 and ended_at is null")
        .bind(now)
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    commit_with_event(
        db,
        tx,
        actor,
        "user.credential",
        user,
        serde_json::json!({"activation_link": link}),
    )
    .await?;
    Ok(true)
}

/// Stores an activation link for `user`; older unused links of the user stop working.
pub async fn create_activation_link(
    db: &Db,
    id: &str,
    user: UserId,
    token_hash: &str,
    expires_at: i64,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query("update activation_link set used_at = $1 where user_id = $2 and used_at is null")
        .bind(now)
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into activation_link (id, user_id, token_hash, created_at, expires_at) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user.to_string())
    .bind(token_hash)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    commit_with_event(
        db,
        tx,
        actor,
        "user.activation_link",
        user,
        serde_json::json!({"expires_at": expires_at}),
    )
    .await?;
    Ok(())
}

/// The unused, unexpired activation link with this hash: its id and user.
pub async fn activation_link(
    db: &Db,
    tenant: &str,
    token_hash: &str,
) -> Result<Option<(String, UserRecord)>, DbError> {
    let row = sqlx::query(
        "select l.id, l.user_id from activation_link l join app_user u on u.id = l.user_id \
         where l.token_hash = $1 and l.used_at is null and l.expires_at > $2 \
         and u.disabled_at is null and u.tenant = $3",
    )
    .bind(token_hash)
    .bind(now_ms())
    .bind(tenant)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let user: String = row.try_get("user_id")?;
    let user = UserId::parse(&user).ok_or_else(|| DbError::Corrupt(format!("user id {user:?}")))?;
    let Some(record) = users::user_by_id(db, tenant, user).await? else {
        return Ok(None);
    };
    Ok(Some((row.try_get("id")?, record)))
}

/// Failures recorded under each of `keys`, and when the last one was (ms); keys with none
/// are left out.
pub async fn failures(db: &Db, keys: &[String]) -> Result<Vec<(String, i32, i64)>, DbError> {
    let mut found = Vec::new();
    for key in keys {
        let row = sqlx::query(
            "select failures, last_failure_at from sign_in_throttle where throttle_key = $1",
        )
        .bind(key)
        .fetch_optional(db.pool())
        .await?;
        if let Some(row) = row {
            found.push((
                key.clone(),
                row.try_get("failures")?,
                row.try_get("last_failure_at")?,
            ));
        }
    }
    Ok(found)
}

/// Counts a failure under each of `keys`; a count whose last failure is older than
/// `forget_ms` starts again from one.
pub async fn record_failure(db: &Db, keys: &[String], forget_ms: i64) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    for key in keys {
        sqlx::query(
            "insert into sign_in_throttle (throttle_key, failures, last_failure_at) \
             values ($1, 1, $2) on conflict (throttle_key) do update set \
             failures = case when sign_in_throttle.last_failure_at < $3 then 1 \
             else sign_in_throttle.failures + 1 end, last_failure_at = excluded.last_failure_at",
        )
        .bind(key)
        .bind(now)
        .bind(now - forget_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Forgets the failures under `key` (after a success).
pub async fn clear_failures(db: &Db, key: &str) -> Result<(), DbError> {
    sqlx::query("delete from sign_in_throttle where throttle_key = $1")
        .bind(key)
        .execute(db.write_pool())
        .await?;
    Ok(())
}
