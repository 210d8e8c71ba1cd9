//! `/v1/dossiers/{id}/delegations`: applicants (or staff on their behalf) grant and revoke a
//! professional's access to a dossier.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ClientAddress, DossierPath};
use crate::access::{Caller, DossierFacts};
use crate::app::Services;
use crate::audit::Actor;
use crate::db::delegations::{self, DelegationRecord};
use crate::db::dossiers::{self, DossierRecord};
use crate::db::now_ms;
use crate::domain::{CodiceFiscale, DossierId};

/// Routes of this resource.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/dossiers/{id}/delegations", get(list).post(grant))
        .route("/dossiers/{id}/delegations/{cf}", delete(revoke))
}

/// Body of a grant.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// The professional's codice fiscale.
    pub(crate) professional_cf: String,
    /// Last day (YYYY-MM-DD, inclusive) or instant (RFC 3339) of the delegation.
    pub(crate) until: Option<String>,
}

/// The delegations of a dossier.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DelegationList {
    /// By professional.
    pub(crate) items: Vec<DelegationRecord>,
}

async fn visible(
    services: &Services,
    caller: &Caller,
    id: DossierId,
) -> Result<DossierRecord, ApiError> {
    dossiers::get(&services.db, caller, id)
        .await?
        .ok_or(ApiError::NotFound)
}

fn facts(d: &DossierRecord) -> DossierFacts<'_> {
    d.facts()
}

/// `until` as ms: a date means the end of that day in the municipality's time zone.
fn parse_until(raw: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_body",
            "until must be a date (YYYY-MM-DD) or an RFC 3339 instant",
        )
    };
    let ms = if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        ts.as_millisecond()
    } else {
        let day: jiff::civil::Date = raw.parse().map_err(|_| bad())?;
        let next = day.tomorrow().map_err(|_| bad())?;
        let tz =
            jiff::tz::TimeZone::get("Europe/Rome").map_err(|e| ApiError::Internal(e.into()))?;
        next.to_zoned(tz)
            .map_err(|_| bad())?
            .timestamp()
            .as_millisecond()
    };
    if ms <= now_ms() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "until must be in the future",
        ));
    }
    Ok(ms)
}

#[utoipa::path(post, path = "/v1/dossiers/{id}/delegations", request_body = GrantBody,
    params(("id" = String, Path, description = "Dossier id")),
    responses(
        (status = 201, body = DelegationRecord, description = "Granted (or renewed)"),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
    ),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn grant(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    DossierPath(id): DossierPath,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<(StatusCode, Json<DelegationRecord>), ApiError> {
    let dossier = visible(&services, &caller, id).await?;
    caller.may_manage_delegations(&facts(&dossier))?;
    let professional = CodiceFiscale::parse(&body.professional_cf)
        .map_err(|e| ApiError::bad_request("invalid_codice_fiscale", e))?;
    if professional.as_str() == dossier.applicant_cf {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the applicant cannot be their own delegate",
        ));
    }
    let until = body.until.as_deref().map(parse_until).transpose()?;
    let record = delegations::grant(
        &services.db,
        caller.tenant(),
        id,
        &professional,
        until,
        caller.id(),
        &Actor::of(&caller, client),
        services.delivery(),
    )
    .await?;
    services.wake.notify_one();
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/v1/dossiers/{id}/delegations",
    params(("id" = String, Path, description = "Dossier id")),
    responses((status = 200, body = DelegationList), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn list(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Json<DelegationList>, ApiError> {
    let dossier = dossiers::get(&services.db, &caller, id).await?;
    let mut items = Vec::new();
    if let Some(dossier) = &dossier {
        items = delegations::list(&services.db, id).await?;
        // Those who manage the dossier's delegations see them all; a delegate sees their own.
        if caller.may_manage_delegations(&facts(dossier)).is_err() {
            let own = caller.codice_fiscale().map(|c| c.as_str());
            items.retain(|d| Some(d.professional_cf.as_str()) == own);
        }
    }
    super::audit_read(
        &services,
        &caller,
        &client,
        "delegations.list",
        format!("dossier:{id}"),
        dossier.as_ref().map(|_| id),
        dossier.is_some(),
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    dossier.ok_or(ApiError::NotFound)?;
    Ok(Json(DelegationList { items }))
}

#[utoipa::path(delete, path = "/v1/dossiers/{id}/delegations/{cf}",
    params(("id" = String, Path, description = "Dossier id"), ("cf" = String, Path, description = "The professional's codice fiscale")),
    responses(
        (status = 204, description = "Revoked; effective for every request that starts from now"),
        (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody, description = "No such dossier or no active delegation"),
    ),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn revoke(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path((raw_id, raw_cf)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = DossierId::parse(&raw_id).ok_or(ApiError::NotFound)?;
    let dossier = visible(&services, &caller, id).await?;
    caller.may_manage_delegations(&facts(&dossier))?;
    let professional = CodiceFiscale::parse(&raw_cf).map_err(|_| ApiError::NotFound)?;
    if delegations::revoke(
        &services.db,
        caller.tenant(),
        id,
        &professional,
        &Actor::of(&caller, client),
        services.delivery(),
    )
    .await?
    {
        services.wake.notify_one();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
