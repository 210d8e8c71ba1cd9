//! Accounts and their credentials: API tokens (their owner or an admin) and user
//! administration (admins), including the front office's identity checks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, ClientAddress};
use super::identities::{Activation, queue_activation, valid_email};
use crate::access::{self, Caller};
use crate::app::Services;
use crate::audit::Actor;
use crate::db::users::{self, NewUserError, TokenInfo, UserInfo};
use crate::domain::{CodiceFiscale, OfficeCode, Role, TokenId, UserId};
use crate::users::{AddUserError, UserSpec};

/// Routes (a token needed).
pub fn router() -> Router<Services> {
    Router::new()
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}/offices", put(set_offices))
        .route("/users/{id}/disable", post(disable_user))
        .route("/users/{id}/verify-identity", post(verify_identity))
}

/// Query of `GET /v1/tokens`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokensQuery {
    /// Another user's id (admins only).
    pub(crate) user: Option<String>,
}

/// Tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub(crate) items: Vec<TokenInfo>,
}

#[utoipa::path(get, path = "/v1/tokens", params(TokensQuery),
    responses((status = 200, body = TokenList), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn list_tokens(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    ApiQuery(query): ApiQuery<TokensQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let user = match query.user {
        None => caller.id(),
        Some(raw) => {
            caller.may_administer()?;
            let id = UserId::parse(&raw).ok_or(ApiError::NotFound)?;
            users::user_by_id(&services.db, caller.tenant(), id)
                .await?
                .ok_or(ApiError::NotFound)?
                .id
        }
    };
    let items = users::list_tokens(&services.db, user).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "tokens.list",
        format!("user:{user}"),
        None,
        true,
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    Ok(Json(TokenList { items }))
}

/// Body of `POST /v1/tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// What the token is for.
    label: String,
    /// Days until it expires (default: the server's token lifetime, 90 days unless
    /// configured); never past the token that makes it.
    expires_in_days: Option<u32>,
}

/// A new token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewTokenReply {
    /// The secret, shown once.
    token: String,
    /// When it expires (RFC 3339).
    expires_at: String,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = NewTokenBody,
    responses((status = 201, body = NewTokenReply)), security(("bearer" = [])), tag = "identities")]
async fn create_token(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<NewTokenBody>,
) -> Result<Response, ApiError> {
    let label = crate::domain::clean_text(&body.label, "label", 100)
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let mut expires_at = crate::users::token_expiry(&services, body.expires_in_days);
    // A token made with a token ends no later than it, and with its revocation.
    let parent = caller.token();
    if let Some((_, Some(parent_ends))) = parent {
        expires_at = expires_at.min(parent_ends);
    }
    let token = access::issue_token(
        &services.db,
        caller.id(),
        &label,
        Some(expires_at),
        parent.map(|(id, _)| id),
        &Actor::of(&caller, client),
    )
    .await?;
    let reply = NewTokenReply {
        token,
        expires_at: crate::db::dossiers::rfc3339(expires_at),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

#[utoipa::path(delete, path = "/v1/tokens/{id}",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn revoke_token(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = TokenId::parse(&raw).ok_or(ApiError::NotFound)?;
    let owner = users::token_owner(&services.db, caller.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Someone else's token is not even acknowledged to exist.
    if owner != caller.id() && caller.may_administer().is_err() {
        return Err(ApiError::NotFound);
    }
    users::revoke_token(&services.db, id, &Actor::of(&caller, client)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Users.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// By id.
    pub(crate) items: Vec<UserInfo>,
}

/// Query of `GET /v1/users`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// Only accounts with this codice fiscale (required for front-office staff, who look up
    /// the account of the person in front of them).
    pub(crate) codice_fiscale: Option<String>,
}

#[utoipa::path(get, path = "/v1/users", params(UsersQuery),
    responses((status = 200, body = UserList), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn list_users(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<Json<UserList>, ApiError> {
    let cf = query
        .codice_fiscale
        .as_deref()
        .map(|c| {
            CodiceFiscale::parse(c).map_err(|e| ApiError::bad_request("invalid_codice_fiscale", e))
        })
        .transpose()?;
    if caller.may_administer().is_err() {
        caller.may_verify_identities()?;
        if cf.is_none() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "front-office staff look accounts up by codice_fiscale",
            ));
        }
    }
    let items = users::list_users(&services.db, caller.tenant(), cf.as_ref()).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "users.list",
        "users".to_owned(),
        None,
        true,
        serde_json::json!({
            "codice_fiscale": cf.as_ref().map(|c| c.as_str()),
            "count": items.len(),
        }),
    )
    .await?;
    Ok(Json(UserList { items }))
}

/// Body of `POST /v1/users/{id}/verify-identity`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyIdentityBody {
    /// The identity document checked: `carta_identita`, `cie`, `passaporto`, `patente`.
    pub(crate) document_kind: String,
    /// Its number.
    pub(crate) document_number: String,
    /// The name as on the document, replacing the one the applicant typed.
    pub(crate) name: Option<String>,
}

/// Identity document kinds the desk accepts.
const IDENTITY_DOCUMENTS: &[&str] = &["carta_identita", "cie", "passaporto", "patente"];

#[utoipa::path(post, path = "/v1/users/{id}/verify-identity", request_body = VerifyIdentityBody,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Verified: the account now sees the dossiers filed under its codice fiscale"),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "Another account is verified with this codice fiscale"),
    ),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn verify_identity(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<VerifyIdentityBody>,
) -> Result<StatusCode, ApiError> {
    caller.may_verify_identities()?;
    let id = UserId::parse(&raw).ok_or(ApiError::NotFound)?;
    let user = users::user_by_id(&services.db, caller.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !matches!(user.role, Role::Citizen | Role::Professional) || user.codice_fiscale.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "only citizens' and professionals' accounts carry a codice fiscale to verify",
        ));
    }
    let kind = body.document_kind.trim().to_lowercase();
    if !IDENTITY_DOCUMENTS.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("document_kind is one of {}", IDENTITY_DOCUMENTS.join(", ")),
        ));
    }
    let number = crate::domain::clean_text(&body.document_number, "document_number", 40)
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let name = body
        .name
        .as_deref()
        .map(|n| crate::domain::clean_text(n, "name", 200))
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    users::verify_identity(
        &services.db,
        id,
        users::IdentityProof {
            by: caller.id(),
            method: "identity_document",
            document_kind: &kind,
            document_number: &number,
            name: name.as_deref(),
        },
        &Actor::of(&caller, client),
    )
    .await
    .map_err(|e| match e {
        NewUserError::DuplicateCodiceFiscale => ApiError::Conflict(
            "another account is already verified with this codice fiscale".into(),
        ),
        other => user_error(AddUserError::Store(other)),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    /// citizen, professional, staff, auditor or admin.
    pub(crate) role: String,
    /// Display name.
    pub(crate) name: String,
    /// Codice fiscale (citizens and professionals).
    pub(crate) codice_fiscale: Option<String>,
    /// Offices (staff).
    #[serde(default)]
    pub(crate) offices: Vec<String>,
    /// Front-office staff, handling every office.
    #[serde(default)]
    pub(crate) front_office: bool,
    /// Contact e-mail, where the activation code goes (required).
    pub(crate) email: String,
}

/// A created user. Their first credential is not here: it reaches them alone, as an
/// activation code sent to their e-mail address through the notification outbox.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedUserReply {
    /// Id.
    id: String,
    /// Where the activation was sent.
    activation_sent_to: String,
}

fn user_error(e: AddUserError) -> ApiError {
    match e {
        AddUserError::CodiceFiscale(e) => ApiError::bad_request("invalid_codice_fiscale", e),
        AddUserError::Invalid(m) => ApiError::bad_request("invalid_body", m),
        AddUserError::Store(NewUserError::UnknownOffice(o)) => {
            ApiError::bad_request("unknown_office", format!("unknown office {o}"))
        }
        AddUserError::Store(NewUserError::DuplicateCodiceFiscale) => {
            ApiError::Conflict("a user with this codice fiscale already exists".into())
        }
        other => ApiError::Internal(other.into()),
    }
}

#[utoipa::path(post, path = "/v1/users", request_body = CreateUserBody,
    responses(
        (status = 201, body = CreatedUserReply),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody),
    ),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn create_user(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> Result<Response, ApiError> {
    caller.may_administer()?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let email = body.email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(ApiError::bad_request(
            "invalid_email",
            "email is not an e-mail address: the activation code goes there",
        ));
    }
    let actor = Actor::of(&caller, client.clone());
    // An account an administrator makes is not verified: the administrator saw no identity
    // document. Front-office staff verify it; the operator's CLI makes verified accounts.
    let id = crate::users::create_account(
        &services,
        &UserSpec {
            role,
            name: &body.name,
            codice_fiscale: body.codice_fiscale.as_deref(),
            offices: &body.offices,
            front_office: body.front_office,
            email: Some(&email),
            phone: None,
            by: Some(&actor),
        },
        None,
    )
    .await
    .map_err(user_error)?;
    let cf = body
        .codice_fiscale
        .as_deref()
        .and_then(|c| CodiceFiscale::parse(c).ok());
    queue_activation(
        &services,
        Activation {
            // Registrations always name a codice fiscale; staff have none.
            codice_fiscale: cf.as_ref().map_or("", |c| c.as_str()),
            email: &email,
            phone: None,
            name: None,
            user: Some(id),
            template: "account_activation",
            address: client.as_deref().unwrap_or("unknown"),
        },
        &actor,
    )
    .await?;
    // Office accounts sign in to the pages with a password and a second factor, which their
    // owner sets through a one-time link sent to them (never shown to the administrator).
    if matches!(role, Role::Staff | Role::Auditor | Role::Admin) {
        crate::users::send_activation_link(&services, id, &body.name, &email, &actor)
            .await
            .map_err(ApiError::Internal)?;
    }
    let reply = CreatedUserReply {
        id: id.to_string(),
        activation_sent_to: email,
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

/// Body of `PUT /v1/users/{id}/offices`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfficesBody {
    /// The staff member's offices from now on.
    pub(crate) offices: Vec<String>,
}

#[utoipa::path(put, path = "/v1/users/{id}/offices", request_body = OfficesBody,
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Moved; effective on the next request"), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn set_offices(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<OfficesBody>,
) -> Result<StatusCode, ApiError> {
    caller.may_administer()?;
    let id = UserId::parse(&raw).ok_or(ApiError::NotFound)?;
    let user = users::user_by_id(&services.db, caller.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if user.role != Role::Staff {
        return Err(ApiError::bad_request(
            "invalid_body",
            "only staff have offices",
        ));
    }
    let offices = body
        .offices
        .iter()
        .map(|o| OfficeCode::parse(o).map_err(|e| ApiError::bad_request("unknown_office", e)))
        .collect::<Result<Vec<_>, _>>()?;
    users::set_offices(
        &services.db,
        caller.tenant(),
        id,
        &offices,
        &Actor::of(&caller, client),
    )
    .await
    .map_err(|e| user_error(AddUserError::Store(e)))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/users/{id}/disable",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Disabled; its tokens stop working at once"), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "identities")]
pub(crate) async fn disable_user(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.may_administer()?;
    let id = UserId::parse(&raw).ok_or(ApiError::NotFound)?;
    users::user_by_id(&services.db, caller.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    users::disable_user(&services.db, id, &Actor::of(&caller, client)).await?;
    Ok(StatusCode::NO_CONTENT)
}
