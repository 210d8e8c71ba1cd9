//! `/v1/procedures`: the catalogue of procedures and offices.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use crate::access::Caller;
use crate::app::Services;
use crate::domain::{Office, Procedure};

/// Routes of this resource.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/procedures", get(list_procedures))
        .route("/me", get(me))
}

/// The catalogue.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogueBody {
    /// Procedures, by code.
    procedures: Vec<Procedure>,
    /// Offices, by code.
    offices: Vec<Office>,
}

#[utoipa::path(get, path = "/v1/procedures",
    responses((status = 200, body = CatalogueBody), (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "catalogue")]
async fn list_procedures(
    State(services): State<Services>,
    _caller: Caller,
) -> Result<Json<CatalogueBody>, ApiError> {
    Ok(Json(CatalogueBody {
        procedures: services.catalogue.procedures().cloned().collect(),
        offices: services.catalogue.offices().cloned().collect(),
    }))
}

/// Who the caller is.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    /// User id.
    id: String,
    /// Role.
    role: crate::domain::Role,
    /// Display name.
    name: String,
    /// Codice fiscale, if any.
    codice_fiscale: Option<String>,
    /// Offices (staff).
    offices: Vec<String>,
}

#[utoipa::path(get, path = "/v1/me",
    responses((status = 200, body = Me), (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "catalogue")]
async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        id: caller.id().to_string(),
        role: caller.role(),
        name: caller.name().to_owned(),
        codice_fiscale: caller.codice_fiscale().map(|c| c.to_string()),
        offices: caller.offices().iter().map(|o| o.to_string()).collect(),
    })
}
