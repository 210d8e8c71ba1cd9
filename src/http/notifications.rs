//! Notifications as their people see them: a caller's own messages, contacts proven with a
//! code and channels chosen per kind of event; for staff and admins, failed messages to retry;
//! for staff, the notices to send by post.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, ClientAddress};
use crate::access::{self, Caller};
use crate::app::Services;
use crate::audit::Actor;
use crate::db::contacts::{self, Confirmed, Contacts, NewConfirmation};
use crate::db::messages::{self, MessageRecord, PostalTask};
use crate::db::notices::{CHANNELS, Event};
use crate::db::now_ms;
use crate::domain::Role;

/// How long a contact confirmation code works.
const CODE_LIFETIME_MS: i64 = 30 * 60 * 1000;

/// Routes of this resource.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/notifications", get(list_mine))
        .route("/notifications/failed", get(list_failed))
        .route("/notifications/{id}/retry", post(retry))
        .route("/me/contacts", get(get_contacts).post(add_contact))
        .route("/me/contacts/confirm", post(confirm_contact))
        .route(
            "/me/notification-preferences",
            get(get_preferences).put(put_preferences),
        )
        .route("/postal-tasks", get(list_postal))
        .route("/postal-tasks/{id}/done", post(postal_done))
}

/// A page of messages.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageList {
    /// Newest first.
    items: Vec<MessageRecord>,
}

/// Paging of a message list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Messages older than this id.
    before: Option<String>,
    /// At most this many (1–200, default 50).
    limit: Option<i64>,
}

fn page(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=200) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            "limit is between 1 and 200",
        )),
    }
}

#[utoipa::path(get, path = "/v1/notifications", params(MessagesQuery),
    responses((status = 200, body = MessageList)),
    security(("bearer" = [])), tag = "notifications")]
async fn list_mine(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let limit = page(query.limit)?;
    let items =
        messages::for_user(&services.db, caller.id(), query.before.as_deref(), limit).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "notification.list",
        format!("user:{}", caller.id()),
        None,
        true,
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    Ok(Json(MessageList { items }))
}

fn may_handle_failures(caller: &Caller) -> Result<(), ApiError> {
    match caller.role() {
        Role::Staff | Role::Admin => Ok(()),
        _ => Err(ApiError::Forbidden(
            "only office staff and administrators handle failed messages".into(),
        )),
    }
}

#[utoipa::path(get, path = "/v1/notifications/failed", params(MessagesQuery),
    responses((status = 200, body = MessageList), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "notifications")]
async fn list_failed(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessageList>, ApiError> {
    may_handle_failures(&caller)?;
    let limit = page(query.limit)?;
    let items = messages::failed(&services.db, &caller, limit).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "notification.list_failed",
        "notifications:failed".to_owned(),
        None,
        true,
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    Ok(Json(MessageList { items }))
}

#[utoipa::path(post, path = "/v1/notifications/{id}/retry",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = MessageRecord, description = "Back in the queue"),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "notifications")]
async fn retry(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<Json<MessageRecord>, ApiError> {
    may_handle_failures(&caller)?;
    let record = messages::retry_failed(&services.db, &caller, &id, &Actor::of(&caller, client))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(record))
}

#[utoipa::path(get, path = "/v1/me/contacts",
    responses((status = 200, body = Contacts)),
    security(("bearer" = [])), tag = "notifications")]
async fn get_contacts(
    State(services): State<Services>,
    caller: Caller,
) -> Result<Json<Contacts>, ApiError> {
    Ok(Json(contacts::get(&services.db, caller.id()).await?))
}

/// A contact to prove.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    /// `email` or `sms`.
    channel: String,
    /// The e-mail address or mobile number (`+39…`).
    address: String,
}

/// A confirmation on its way.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ContactPending {
    /// Where the code went.
    address: String,
    /// When it stops working (RFC 3339).
    expires_at: String,
}

/// A mobile number as gateways take it: `+` and 8–15 digits; Italian numbers may omit `+39`.
fn normalise_phone(raw: &str) -> Option<String> {
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let full = if let Some(rest) = digits.strip_prefix('+') {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if digits.starts_with('3') && (9..=10).contains(&digits.len()) {
        format!("39{digits}")
    } else {
        return None;
    };
    (full.chars().all(|c| c.is_ascii_digit()) && (8..=15).contains(&full.len()))
        .then(|| format!("+{full}"))
}

#[utoipa::path(post, path = "/v1/me/contacts", request_body = ContactBody,
    responses((status = 202, body = ContactPending, description = "A code was sent to the address")),
    security(("bearer" = [])), tag = "notifications")]
async fn add_contact(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<ContactBody>,
) -> Result<impl IntoResponse, ApiError> {
    let channels = services.delivery().channels;
    let address = match body.channel.as_str() {
        "email" if super::identities::valid_email(&body.address) => body.address.trim().to_owned(),
        "email" => {
            return Err(ApiError::bad_request(
                "invalid_address",
                "not an e-mail address",
            ));
        }
        "sms" => normalise_phone(&body.address).ok_or_else(|| {
            ApiError::bad_request("invalid_address", "not a mobile number (+39…)")
        })?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "channel is email or sms",
            ));
        }
    };
    let available = if body.channel == "email" {
        channels.email
    } else {
        channels.sms
    };
    if !available {
        return Err(ApiError::bad_request(
            "channel_unavailable",
            format!("this server sends no {} messages", body.channel),
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let code = super::identities::new_code();
    let expires_at = now_ms() + CODE_LIFETIME_MS;
    contacts::start(
        &services.db,
        NewConfirmation {
            id: &id,
            tenant: caller.tenant(),
            user: caller.id(),
            channel: &body.channel,
            address: &address,
            code_hash: &access::hash_token(&format!("{id}:{code}")),
            expires_at,
            payload: serde_json::json!({
                "name": caller.name(),
                "code": code,
                "expires_at": contacts::expiry_text(expires_at),
            }),
        },
        &Actor::of(&caller, client),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ContactPending {
            address,
            expires_at: crate::db::dossiers::rfc3339(expires_at),
        }),
    ))
}

/// A code received at a new contact.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// `email` or `sms`.
    channel: String,
    /// The code.
    code: String,
}

#[utoipa::path(post, path = "/v1/me/contacts/confirm", request_body = ConfirmBody,
    responses((status = 200, body = Contacts, description = "The contact is in use"),
        (status = 400, body = super::error::ErrorBody, description = "Wrong or expired code")),
    security(("bearer" = [])), tag = "notifications")]
async fn confirm_contact(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<ConfirmBody>,
) -> Result<axum::response::Response, ApiError> {
    if !matches!(body.channel.as_str(), "email" | "sms") {
        return Err(ApiError::bad_request(
            "invalid_channel",
            "channel is email or sms",
        ));
    }
    let code = body.code.trim().to_owned();
    let outcome = contacts::confirm(
        &services.db,
        caller.id(),
        &body.channel,
        |id, stored| access::hash_token(&format!("{id}:{code}")) == stored,
        &Actor::of(&caller, client),
    )
    .await?;
    match outcome {
        Confirmed::Yes(_) => {
            Ok(Json(contacts::get(&services.db, caller.id()).await?).into_response())
        }
        Confirmed::Wrong => Err(ApiError::bad_request(
            "invalid_code",
            "the code is wrong, used or expired",
        )),
        Confirmed::TooMany => Err(ApiError::bad_request(
            "too_many_attempts",
            "too many wrong codes: ask for a new one",
        )),
    }
}

/// One kind of event and the channels it goes out on.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Preference {
    /// The kind of event.
    event: Event,
    /// The law requires it: it goes out on at least one confirmed channel whatever is chosen.
    required: bool,
    /// `email`, `sms`, `app_io`: whether the caller wants it there.
    channels: std::collections::BTreeMap<String, bool>,
}

/// The caller's choices.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Preferences {
    /// Per kind of event.
    items: Vec<Preference>,
}

async fn preferences_of(services: &Services, caller: &Caller) -> Result<Preferences, ApiError> {
    let off = contacts::disabled(&services.db, caller.id()).await?;
    let staff = caller.role() == Role::Staff;
    let items = Event::ALL
        .into_iter()
        .filter(|e| (*e == Event::DeadlineDigest) == staff)
        .map(|event| Preference {
            event,
            required: event.required(),
            channels: CHANNELS
                .iter()
                .map(|c| {
                    let disabled = off.iter().any(|(e, ch)| e == event.as_str() && ch == c);
                    ((*c).to_owned(), !disabled)
                })
                .collect(),
        })
        .collect();
    Ok(Preferences { items })
}

#[utoipa::path(get, path = "/v1/me/notification-preferences",
    responses((status = 200, body = Preferences)),
    security(("bearer" = [])), tag = "notifications")]
async fn get_preferences(
    State(services): State<Services>,
    caller: Caller,
) -> Result<Json<Preferences>, ApiError> {
    Ok(Json(preferences_of(&services, &caller).await?))
}

/// One choice.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// The kind of event.
    event: String,
    /// `email`, `sms` or `app_io`.
    channel: String,
    /// Whether to get it there.
    enabled: bool,
}

/// Choices to apply.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    /// At most 64.
    items: Vec<Choice>,
}

#[utoipa::path(put, path = "/v1/me/notification-preferences", request_body = PreferencesBody,
    responses((status = 200, body = Preferences)),
    security(("bearer" = [])), tag = "notifications")]
async fn put_preferences(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<PreferencesBody>,
) -> Result<Json<Preferences>, ApiError> {
    if body.items.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid_body",
            "at most 64 choices at once",
        ));
    }
    let mut choices = Vec::new();
    for c in &body.items {
        let event = Event::parse(&c.event).ok_or_else(|| {
            ApiError::bad_request("invalid_event", format!("unknown event {:?}", c.event))
        })?;
        if !CHANNELS.contains(&c.channel.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "channel is email, sms or app_io",
            ));
        }
        choices.push((event.as_str().to_owned(), c.channel.clone(), c.enabled));
    }
    contacts::set_preference(
        &services.db,
        caller.id(),
        &choices,
        &Actor::of(&caller, client),
    )
    .await?;
    Ok(Json(preferences_of(&services, &caller).await?))
}

/// Postal tasks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PostalList {
    /// Oldest first.
    items: Vec<PostalTask>,
}

/// Which postal tasks.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PostalQuery {
    /// `true`: those done; default: those still to do.
    done: Option<bool>,
    /// At most this many (1–200, default 50).
    limit: Option<i64>,
}

fn may_see_postal(caller: &Caller) -> Result<(), ApiError> {
    match caller.role() {
        Role::Staff | Role::Auditor => Ok(()),
        _ => Err(ApiError::Forbidden("postal tasks are the office's".into())),
    }
}

#[utoipa::path(get, path = "/v1/postal-tasks", params(PostalQuery),
    responses((status = 200, body = PostalList), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "notifications")]
async fn list_postal(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    ApiQuery(query): ApiQuery<PostalQuery>,
) -> Result<Json<PostalList>, ApiError> {
    may_see_postal(&caller)?;
    let limit = page(query.limit)?;
    let items =
        messages::postal_tasks(&services.db, &caller, query.done.unwrap_or(false), limit).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "postal_task.list",
        "postal_tasks".to_owned(),
        None,
        true,
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    Ok(Json(PostalList { items }))
}

#[utoipa::path(post, path = "/v1/postal-tasks/{id}/done",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 204, description = "Marked done"),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "Done already")),
    security(("bearer" = [])), tag = "notifications")]
async fn postal_done(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if caller.role() != Role::Staff {
        may_see_postal(&caller)?;
        return Err(ApiError::Forbidden("auditors change nothing".into()));
    }
    match messages::postal_done(&services.db, &caller, &id, &Actor::of(&caller, client)).await? {
        None => Err(ApiError::NotFound),
        Some(false) => Err(ApiError::Conflict("the task is done already".into())),
        Some(true) => Ok(StatusCode::NO_CONTENT),
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_phone;

    #[test]
    fn mobile_numbers_are_normalised_or_refused() {
        assert_eq!(
            normalise_phone("333 123 4567").as_deref(),
            Some("+393331234567")
        );
        assert_eq!(
            normalise_phone("+39 333-1234567").as_deref(),
            Some("+393331234567")
        );
        assert_eq!(
            normalise_phone("0039 3331234567").as_deref(),
            Some("+393331234567")
        );
        assert_eq!(normalise_phone("011 123456"), None);
        assert_eq!(normalise_phone("+39 333 abc"), None);
        assert_eq!(normalise_phone(""), None);
    }
}
