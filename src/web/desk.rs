//! The front office ("sportello"): verifying an account's identity against a document shown
//! at the desk, and a dossier's receipt, to print or to send by e-mail. Filing a dossier for
//! someone at the desk is the dossier form, which asks staff for the applicant's name.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, italian_date, render, see_other, status_badge};
use crate::app::Services;
use crate::domain::{DossierId, Role};
use crate::http::extract::{ApiJson, DossierPath};
use crate::http::{ApiError, ClientAddress, dossiers, users};

/// Routes of the front office.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/sportello/identita", get(identity_page).post(verify))
        .route("/pratiche/{id}/ricevuta", get(receipt).post(send_receipt))
}

#[derive(Template)]
#[template(path = "identity.html")]
struct IdentityPage {
    page: Layout,
    cf: String,
    found: Option<Found>,
    searched: bool,
    done: bool,
}

/// The account the desk looked up.
struct Found {
    id: String,
    name: String,
    role: &'static str,
    verified: bool,
}

#[derive(Deserialize)]
struct IdentityParams {
    cf: Option<String>,
    verificato: Option<String>,
}

async fn identity_page(
    State(services): State<Services>,
    visitor: Visitor,
    Query(params): Query<IdentityParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/sportello/identita")?;
    caller.may_verify_identities()?;
    let cf = params.cf.unwrap_or_default().trim().to_uppercase();
    let found = if cf.is_empty() {
        None
    } else {
        crate::db::web::account_for_sign_in(
            &services.db,
            &services.config.tenant,
            &cf,
            &[Role::Citizen, Role::Professional],
        )
        .await?
        .map(|a| Found {
            id: a.user.id.to_string(),
            name: a.user.name.clone(),
            role: if a.user.role == Role::Professional {
                "Professionista"
            } else {
                "Cittadino"
            },
            verified: a.user.verified,
        })
    };
    render(&IdentityPage {
        page: Layout::new(
            &services,
            &visitor,
            "Verifica dell'identità",
            "/sportello/identita",
        ),
        searched: !cf.is_empty(),
        cf,
        found,
        done: params.verificato.is_some(),
    })
}

#[derive(Deserialize)]
struct VerifyForm {
    csrf: String,
    user: String,
    cf: String,
    document_kind: String,
    document_number: String,
    name: Option<String>,
}

/// Records that the desk checked the account holder's identity document: the account then
/// opens every dossier filed under its codice fiscale.
async fn verify(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<VerifyForm>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/sportello/identita")?;
    visitor.check_csrf(&form.csrf)?;
    users::verify_identity(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        axum::extract::Path(form.user),
        ApiJson(users::VerifyIdentityBody {
            document_kind: form.document_kind,
            document_number: form.document_number,
            name: form.name.filter(|n| !n.trim().is_empty()),
        }),
    )
    .await?;
    Ok(see_other(&format!(
        "/sportello/identita?cf={}&verificato=1",
        percent_encoding::utf8_percent_encode(&form.cf, percent_encoding::NON_ALPHANUMERIC)
    )))
}

#[derive(Template)]
#[template(path = "receipt.html")]
struct ReceiptPage {
    page: Layout,
    d: crate::db::dossiers::DossierRecord,
    procedure: String,
    office: String,
    deadline_days: u32,
    filed: String,
    status: (&'static str, &'static str),
    documents: Vec<(String, String)>,
    may_send: bool,
    sent: bool,
}

#[derive(Deserialize)]
struct ReceiptParams {
    inviata: Option<String>,
}

/// A dossier's receipt, laid out to print (the browser's print prints the receipt alone).
async fn receipt(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Query(params): Query<ReceiptParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}/ricevuta"))?;
    let id = DossierId::parse(&raw).ok_or(ApiError::NotFound)?;
    let client = || ClientAddress(visitor.client.clone());
    let Json(d) = dossiers::get_dossier(
        State(services.clone()),
        caller.clone(),
        client(),
        DossierPath(id),
    )
    .await?;
    let Json(docs) = dossiers::list_documents(
        State(services.clone()),
        caller.clone(),
        client(),
        DossierPath(id),
    )
    .await?;
    let Json(timeline) = crate::http::lifecycle::timeline(
        State(services.clone()),
        caller.clone(),
        client(),
        DossierPath(id),
    )
    .await?;
    // Filed when it went to `submitted` (a draft is filed after it was started).
    let filed = timeline
        .events
        .iter()
        .find(|e| e.to.as_deref() == Some("submitted"))
        .map_or_else(|| d.created_at.clone(), |e| e.at.clone());
    let procedure = services.catalogue.procedure(&d.procedure);
    render(&ReceiptPage {
        page: Layout::new(
            &services,
            &visitor,
            format!("Ricevuta della pratica {}", d.number),
            "",
        )
        .under(format!("Pratica {}", d.number), format!("/pratiche/{id}")),
        procedure: procedure.map_or_else(|| d.procedure.clone(), |p| p.name.clone()),
        office: services
            .catalogue
            .office(&d.office)
            .map_or_else(|| d.office.clone(), |o| o.name.clone()),
        deadline_days: procedure.map_or(0, |p| p.deadline_days),
        filed: italian_date(&filed),
        status: status_badge(d.status),
        documents: docs
            .items
            .iter()
            .map(|doc| (doc.title.clone(), doc.sha256.clone()))
            .collect(),
        may_send: caller.role() == Role::Staff,
        sent: params.inviata.is_some(),
        d,
    })
}

#[derive(Deserialize)]
struct SendForm {
    csrf: String,
    email: String,
}

/// Sends the receipt to an e-mail address the applicant gives at the desk.
async fn send_receipt(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<SendForm>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}/ricevuta"))?;
    visitor.check_csrf(&form.csrf)?;
    let id = DossierId::parse(&raw).ok_or(ApiError::NotFound)?;
    let d = crate::db::dossiers::get(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if caller.role() != Role::Staff {
        return Err(
            ApiError::Forbidden("only the desk sends receipts to an address".into()).into(),
        );
    }
    let email = form.email.trim();
    if !crate::http::valid_email(email) {
        return Err(
            ApiError::bad_request("invalid_email", "l'indirizzo e-mail non è valido").into(),
        );
    }
    crate::db::notices::receipt_to_address(
        &services.db,
        &crate::db::notices::Notice {
            tenant: caller.tenant(),
            dossier: id,
            step: None,
            event: crate::db::notices::Event::DossierSubmitted,
            values: serde_json::json!({"channel": d.channel.as_str()}),
            professional_cf: None,
            delivery: services.delivery(),
        },
        email,
        d.applicant_name.as_deref().unwrap_or_default(),
        &crate::audit::Actor::of(&caller, visitor.client.clone()),
    )
    .await?;
    services.wake.notify_one();
    Ok(see_other(&format!("/pratiche/{id}/ricevuta?inviata=1")))
}
