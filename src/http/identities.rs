//! Online registration of citizens with the codice fiscale (public routes): a registration,
//! its activation code through the outbox, and the unverified account it makes.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ClientAddress};
use crate::access;
use crate::app::Services;
use crate::audit::Actor;
use crate::db::registrations::{self, NewRegistration};
use crate::db::users;
use crate::db::{DbError, now_ms};
use crate::domain::{CodiceFiscale, Role, UserId};
use crate::users::UserSpec;

/// How long an activation code lives.
const CODE_LIFETIME_MS: i64 = 30 * 60 * 1000;
/// Wrong codes before a registration is dead.
const MAX_ATTEMPTS: i32 = 5;
/// Registrations per e-mail address, and per network address, in an hour.
const PER_EMAIL_PER_HOUR: i64 = 3;
const PER_ADDRESS_PER_HOUR: i64 = 20;

/// Public routes (no token).
pub fn public_router() -> Router<Services> {
    Router::new()
        .route("/registrations", post(register))
        .route("/registrations/activate", post(activate))
}

/// Body of `POST /v1/registrations`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The citizen's codice fiscale.
    codice_fiscale: String,
    /// The citizen's name, as the account will show it.
    name: String,
    /// Where the activation code is sent (for a codice fiscale with no verified account).
    email: String,
    /// Optional phone number.
    phone: Option<String>,
}

/// A pending registration.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// Pass it with the code to `POST /v1/registrations/activate`.
    registration_id: String,
    /// When the code expires (RFC 3339).
    expires_at: String,
}

fn too_many(message: &str, retry_after_s: u64) -> Response {
    let mut r = super::error::error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        message.to_owned(),
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub(crate) fn valid_email(email: &str) -> bool {
    let email = email.trim();
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A fresh eight-digit code.
pub(crate) fn new_code() -> String {
    let mut digits = [0u8; 8];
    #[expect(clippy::expect_used, reason = "no entropy means no safe codes at all")]
    getrandom::fill(&mut digits).expect("operating-system random source");
    // 256 is not a multiple of 10: draw again past the last whole decade, so every digit is
    // equally likely.
    digits
        .iter()
        .map(|b| {
            let mut b = *b;
            while b >= 250 {
                let mut one = [0u8; 1];
                #[expect(clippy::expect_used, reason = "no entropy means no safe codes at all")]
                getrandom::fill(&mut one).expect("operating-system random source");
                b = one[0];
            }
            char::from(b'0' + b % 10)
        })
        .collect()
}

fn code_hash(registration: &str, code: &str) -> String {
    access::hash_token(&format!("{registration}:{code}"))
}

/// An activation to queue: its code goes through the outbox to `email` and activates `user`
/// (an existing account) or, without one, the new account its activation creates.
pub(super) struct Activation<'a> {
    pub(super) codice_fiscale: &'a str,
    pub(super) email: &'a str,
    pub(super) phone: Option<&'a str>,
    pub(super) name: Option<&'a str>,
    pub(super) user: Option<UserId>,
    pub(super) template: &'static str,
    pub(super) address: &'a str,
}

/// Stores an activation with a fresh code and queues its message; returns the registration's
/// id and when its code expires.
pub(super) async fn queue_activation(
    services: &Services,
    activation: Activation<'_>,
    actor: &Actor,
) -> Result<(String, i64), ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let code = new_code();
    let expires_at = now_ms() + CODE_LIFETIME_MS;
    registrations::create(
        &services.db,
        NewRegistration {
            id: &id,
            tenant: &services.config.tenant,
            codice_fiscale: activation.codice_fiscale,
            email: activation.email,
            phone: activation.phone,
            code_hash: &code_hash(&id, &code),
            expires_at,
            client_address: activation.address,
            name: activation.name,
            user_id: activation.user,
            template: activation.template,
            message: serde_json::json!({
                "registration_id": id,
                "code": code,
                "expires_at": crate::db::dossiers::rfc3339(expires_at),
            }),
        },
        actor,
    )
    .await?;
    Ok((id, expires_at))
}

#[utoipa::path(post, path = "/v1/registrations", request_body = RegisterBody,
    responses(
        (status = 202, body = Registered, description = "An activation code was queued: to the typed address for a new account, to the address on file when the codice fiscale already has a verified account (the answer is the same)"),
        (status = 400, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody, description = "Too many registrations from this e-mail or network address"),
    ),
    tag = "identities")]
async fn register(
    State(services): State<Services>,
    client: super::extract::ClientAddress,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    services.limits.check(
        super::limits::Kind::Anonymous,
        client.0.as_deref().unwrap_or("unknown"),
    )?;
    let cf = CodiceFiscale::parse(&body.codice_fiscale)
        .map_err(|e| ApiError::bad_request("invalid_codice_fiscale", e))?;
    let name = crate::domain::clean_text(&body.name, "name", 200)
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let email = body.email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(ApiError::bad_request(
            "invalid_email",
            "email is not an e-mail address",
        ));
    }
    let phone = body
        .phone
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    if let Some(p) = phone
        && (p.len() > 20
            || !p
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-')))
    {
        return Err(ApiError::bad_request(
            "invalid_phone",
            "phone must be digits, spaces, '+' or '-'",
        ));
    }
    let tenant = services.config.tenant.clone();
    let address = client.0.unwrap_or_else(|| "unknown".to_owned());
    let (by_email, by_address) =
        registrations::recent_counts(&services.db, &tenant, &email, &address, 3_600_000).await?;
    if by_email >= PER_EMAIL_PER_HOUR || by_address >= PER_ADDRESS_PER_HOUR {
        return Ok(too_many("too many registrations; try again later", 3600));
    }
    let actor = Actor::anonymous(&tenant, Some(address.clone()));
    // A codice fiscale with a verified account: the code goes to the address on file and
    // signs in to that account, never to the typed address. Otherwise the registration makes a
    // new, unverified account of its own on activation, which sees only what it starts itself.
    // The answer is the same either way. A verified account without an address gets no code.
    let activation =
        match registrations::verified_account(&services.db, &tenant, cf.as_str()).await? {
            Some((user, on_file)) => on_file.map(|recipient| (recipient, Some(user))),
            None => Some((email.clone(), None)),
        };
    let (id, expires_at) = match activation {
        Some((recipient, user)) => {
            queue_activation(
                &services,
                Activation {
                    codice_fiscale: cf.as_str(),
                    email: &recipient,
                    phone: if user.is_some() { None } else { phone },
                    name: Some(&name),
                    user,
                    template: "registration_activation",
                    address: &address,
                },
                &actor,
            )
            .await?
        }
        None => (
            uuid::Uuid::now_v7().to_string(),
            now_ms() + CODE_LIFETIME_MS,
        ),
    };
    let body = Registered {
        registration_id: id,
        expires_at: crate::db::dossiers::rfc3339(expires_at),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Body of `POST /v1/registrations/activate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// From `POST /v1/registrations`, or from the activation message of an account an
    /// administrator created.
    registration_id: String,
    /// The code received by e-mail.
    code: String,
}

/// Credentials of an activated account.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Credentials {
    /// The account.
    user_id: String,
    /// Bearer token, shown once.
    token: String,
    /// When the token expires (RFC 3339).
    expires_at: String,
}

#[utoipa::path(post, path = "/v1/registrations/activate", request_body = ActivateBody,
    responses(
        (status = 201, body = Credentials),
        (status = 400, body = super::error::ErrorBody, description = "Invalid, used or expired code"),
        (status = 429, body = super::error::ErrorBody, description = "Too many wrong codes: register again"),
    ),
    tag = "identities")]
async fn activate(
    State(services): State<Services>,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Response, ApiError> {
    services.limits.check(
        super::limits::Kind::Anonymous,
        client.as_deref().unwrap_or("unknown"),
    )?;
    let invalid = || ApiError::bad_request("invalid_code", "invalid or expired activation code");
    let tenant = services.config.tenant.clone();
    let failed = |services: &Services| {
        let (db, tenant, client) = (services.db.clone(), tenant.clone(), client.clone());
        async move { users::record_auth_failure(&db, &tenant, client.as_deref(), "activation").await }
    };
    let mut tx = services.db.begin_write().await?;
    let Some(pending) = registrations::attempt(&mut tx, &tenant, &body.registration_id).await?
    else {
        drop(tx);
        failed(&services).await?;
        return Err(invalid());
    };
    if pending.attempts >= MAX_ATTEMPTS {
        tx.commit().await.map_err(DbError::from)?;
        failed(&services).await?;
        return Ok(too_many("too many wrong codes; register again", 0));
    }
    if pending.used
        || pending.expires_at <= now_ms()
        || code_hash(&body.registration_id, body.code.trim()) != pending.code_hash
    {
        tx.commit().await.map_err(DbError::from)?;
        failed(&services).await?;
        return Err(invalid());
    }
    registrations::mark_used(&mut tx, &body.registration_id).await?;
    let anonymous = Actor::anonymous(&tenant, client.clone());
    crate::audit::append_in_tx(
        &services.db,
        &mut tx,
        &[anonymous.event(
            "registration.activate",
            format!("registration:{}", body.registration_id),
            None,
            "ok",
            serde_json::json!({"user": pending.user_id.map(|u| u.to_string())}),
        )],
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    // The account this registration names, and no other: an activation never reaches an
    // account made after it by someone else's registration.
    let user_id = match pending.user_id {
        Some(id) => id,
        None => {
            let name = pending
                .name
                .clone()
                .unwrap_or_else(|| "Cittadino".to_owned());
            let id = crate::users::create_account(
                &services,
                &UserSpec {
                    role: Role::Citizen,
                    name: &name,
                    codice_fiscale: Some(&pending.codice_fiscale),
                    offices: &[],
                    front_office: false,
                    email: Some(&pending.email),
                    phone: pending.phone.as_deref(),
                    by: Some(&anonymous),
                },
                None,
            )
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
            registrations::set_user(&services.db, &body.registration_id, id).await?;
            id
        }
    };
    // The code reached this address: messages may go there.
    crate::db::contacts::email_proven(&services.db, user_id, &pending.email).await?;
    let expires_at = crate::users::token_expiry(&services, None);
    let token = access::issue_token(
        &services.db,
        user_id,
        "activated online",
        Some(expires_at),
        None,
        &anonymous,
    )
    .await?;
    let body = Credentials {
        user_id: user_id.to_string(),
        token,
        expires_at: crate::db::dossiers::rfc3339(expires_at),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
