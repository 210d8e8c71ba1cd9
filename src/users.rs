//! Creating users and their first token: shared by the CLI, the demo and the tests.

use serde::Serialize;

use crate::access;
use crate::app::Services;
use crate::db::users::{self, NewUser, NewUserError};
use crate::domain::{CodiceFiscale, CodiceFiscaleError, OfficeCode, Role, UserId, clean_text};

/// A created user and the secret of their first token (shown once, never stored).
#[derive(Debug, Serialize)]
pub struct CreatedUser {
    /// The user's id.
    pub id: UserId,
    /// Bearer token.
    pub token: String,
}

/// Why a user could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    /// Bad codice fiscale.
    #[error("invalid codice fiscale: {0}")]
    CodiceFiscale(#[from] CodiceFiscaleError),
    /// Missing or contradictory options for the role.
    #[error("{0}")]
    Invalid(String),
    /// Rejected by the store.
    #[error(transparent)]
    Store(#[from] NewUserError),
    /// Token could not be stored.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Validates and creates a user, then issues a token for them.
pub async fn add_user(
    services: &Services,
    role: Role,
    name: &str,
    codice_fiscale: Option<&str>,
    offices: &[String],
) -> Result<CreatedUser, AddUserError> {
    add_user_with(
        services,
        &UserSpec {
            role,
            name,
            codice_fiscale,
            offices,
            front_office: false,
            email: None,
            phone: None,
            by: None,
        },
    )
    .await
}

/// When a token made now ends: after `days`, or the configured default lifetime.
pub fn token_expiry(services: &Services, days: Option<u32>) -> i64 {
    let days = days
        .unwrap_or(services.config.token_lifetime_days)
        .clamp(1, 3650);
    crate::db::now_ms() + i64::from(days) * 86_400_000
}

/// Everything that describes a new user.
#[derive(Debug, Clone, Copy)]
pub struct UserSpec<'a> {
    /// Role.
    pub role: Role,
    /// Display name.
    pub name: &'a str,
    /// Codice fiscale (citizens and professionals).
    pub codice_fiscale: Option<&'a str>,
    /// Offices (staff).
    pub offices: &'a [String],
    /// Front-office staff, handling every office.
    pub front_office: bool,
    /// Contact e-mail.
    pub email: Option<&'a str>,
    /// Contact phone.
    pub phone: Option<&'a str>,
    /// Who creates the user (default: an administrator at the command line).
    pub by: Option<&'a crate::audit::Actor>,
}

/// Validates and creates a user from a full description, as the operator at the command line,
/// then issues their first token (with the default lifetime). The operator vouches for the
/// codice fiscale they type: such an account is verified (`operator`).
pub async fn add_user_with(
    services: &Services,
    spec: &UserSpec<'_>,
) -> Result<CreatedUser, AddUserError> {
    let id = create_account(services, spec, Some("operator")).await?;
    let cli = crate::audit::Actor::cli(&services.config.tenant);
    let actor = spec.by.unwrap_or(&cli);
    let token = access::issue_token(
        &services.db,
        id,
        "created with the user",
        Some(token_expiry(services, None)),
        None,
        actor,
    )
    .await?;
    Ok(CreatedUser { id, token })
}

/// Validates and creates a user from a full description, without any credential. `identity`
/// says how their codice fiscale was proven, if it was (citizens and professionals).
pub async fn create_account(
    services: &Services,
    spec: &UserSpec<'_>,
    identity: Option<&'static str>,
) -> Result<UserId, AddUserError> {
    let UserSpec {
        role,
        name,
        codice_fiscale,
        offices,
        front_office,
        ..
    } = *spec;
    let cli = crate::audit::Actor::cli(&services.config.tenant);
    let actor = spec.by.unwrap_or(&cli);
    if front_office && role != Role::Staff {
        return Err(AddUserError::Invalid(
            "only staff can be front-office".into(),
        ));
    }
    let name = clean_text(name, "name", 200).map_err(|e| AddUserError::Invalid(e.to_string()))?;
    let codice_fiscale = codice_fiscale.map(CodiceFiscale::parse).transpose()?;
    let codice_fiscale_given = codice_fiscale.is_some();
    if matches!(role, Role::Citizen | Role::Professional) && codice_fiscale.is_none() {
        return Err(AddUserError::Invalid(format!(
            "a {role} needs a codice fiscale (--cf)"
        )));
    }
    let offices = offices
        .iter()
        .map(|o| OfficeCode::parse(o).map_err(|e| AddUserError::Invalid(format!("{e}: {o:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    match role {
        Role::Staff if offices.is_empty() && !front_office => {
            return Err(AddUserError::Invalid(
                "staff need at least one --office".into(),
            ));
        }
        Role::Staff => {}
        _ if !offices.is_empty() => {
            return Err(AddUserError::Invalid(format!("a {role} has no offices")));
        }
        _ => {}
    }
    let id = users::create_user(
        &services.db,
        &NewUser {
            tenant: services.config.tenant.clone(),
            role,
            name,
            codice_fiscale,
            offices,
            all_offices: front_office,
            email: spec.email.map(str::to_owned),
            phone: spec.phone.map(str::to_owned),
            identity: identity.filter(|_| codice_fiscale_given),
        },
        actor,
    )
    .await?;
    Ok(id)
}

/// The id of a system user (role admin, no codice fiscale) that files changes made by tools,
/// created on first use.
pub async fn system_user(services: &Services, name: &str) -> Result<UserId, AddUserError> {
    let existing: Option<String> = sqlx::query_scalar(
        "select id from app_user where tenant = $1 and role = 'admin' and name = $2 \
         and codice_fiscale is null order by id limit 1",
    )
    .bind(&services.config.tenant)
    .bind(format!("system: {name}"))
    .fetch_optional(services.db.pool())
    .await
    .map_err(crate::db::DbError::from)?;
    if let Some(id) = existing.as_deref().and_then(UserId::parse) {
        return Ok(id);
    }
    let id = users::create_user(
        &services.db,
        &NewUser {
            tenant: services.config.tenant.clone(),
            role: Role::Admin,
            name: format!("system: {name}"),
            codice_fiscale: None,
            offices: Vec::new(),
            all_offices: false,
            email: None,
            phone: None,
            identity: None,
        },
        &crate::audit::Actor::cli(&services.config.tenant),
    )
    .await?;
    Ok(id)
}

/// How long an activation link works.
const ACTIVATION_LINK_HOURS: i64 = 72;

/// A one-time link (under the public address) where `user`, a staff member, auditor or
/// admin, sets their password and enrols their second factor; any older unused link of theirs
/// stops working. The secret is returned once and only its hash is kept.
pub async fn activation_link(
    services: &Services,
    user: UserId,
    actor: &crate::audit::Actor,
) -> anyhow::Result<String> {
    let record = users::user_by_id(&services.db, &services.config.tenant, user)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user {user}"))?;
    if matches!(record.role, Role::Citizen | Role::Professional) {
        anyhow::bail!(
            "citizens and professionals sign in with a code sent to their contact, not a password"
        );
    }
    let secret = crate::credentials::new_secret();
    crate::db::web::create_activation_link(
        &services.db,
        &uuid::Uuid::now_v7().to_string(),
        user,
        &access::hash_token(&secret),
        crate::db::now_ms() + ACTIVATION_LINK_HOURS * 3_600_000,
        actor,
    )
    .await?;
    Ok(format!(
        "{}/attivazione/{secret}",
        services.config.public_url.trim_end_matches('/')
    ))
}

/// Makes an activation link for `user` (see [`activation_link`]) and sends it through the
/// outbox to `email`: whoever created the account never sees it.
pub async fn send_activation_link(
    services: &Services,
    user: UserId,
    name: &str,
    email: &str,
    actor: &crate::audit::Actor,
) -> anyhow::Result<()> {
    let link = activation_link(services, user, actor).await?;
    let expires_at = crate::db::now_ms() + ACTIVATION_LINK_HOURS * 3_600_000;
    sqlx::query(
        "insert into notification_outbox (id, tenant, channel, recipient, template, payload, \
         created_at, user_id) values ($1, $2, 'email', $3, 'activation_link', $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&services.config.tenant)
    .bind(email)
    .bind(
        serde_json::json!({
            "name": name,
            "link": link,
            "expires_at": crate::db::contacts::expiry_text(expires_at),
        })
        .to_string(),
    )
    .bind(crate::db::now_ms())
    .bind(user.to_string())
    .execute(services.db.write_pool())
    .await?;
    services.wake.notify_one();
    Ok(())
}
