//! The auditors' pages: the audit trail's head and its last verification, and a dossier's
//! full history (every step, document version, delegation and access, reads included),
//! filterable by who and what, with the export to download.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, italian_date, render, see_other, status_badge};
use crate::app::Services;
use crate::domain::{DossierId, Role};
use crate::http::extract::DossierPath;
use crate::http::{ApiError, ClientAddress, records};

/// Routes of the auditors' pages.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/audit", get(trail))
        .route("/audit/verifica", post(verify))
        .route("/audit/pratiche/{id}", get(history))
        .route("/audit/pratiche/{id}/esportazione", get(export))
}

#[derive(Template)]
#[template(path = "audit.html")]
struct TrailPage {
    page: Layout,
    head_seq: i64,
    head_hash: String,
    head_at: String,
    last: Option<crate::audit::Verification>,
    last_at: String,
}

async fn trail(State(services): State<Services>, visitor: Visitor) -> Result<Response, WebError> {
    let caller = visitor.caller("/audit")?;
    if caller.role() != Role::Auditor {
        return Err(ApiError::NotFound.into());
    }
    let Json(head) = records::audit_head(State(services.clone()), caller).await?;
    let last = crate::audit::last_verification(&services.db).await?;
    render(&TrailPage {
        page: Layout::new(&services, &visitor, "Registro degli accessi", "/audit"),
        head_seq: head.seq,
        head_hash: head.hash,
        head_at: head.at.as_deref().map(italian_date).unwrap_or_default(),
        last_at: last
            .as_ref()
            .map(|l| italian_date(&l.at))
            .unwrap_or_default(),
        last,
    })
}

#[derive(Deserialize)]
struct VerifyForm {
    csrf: String,
}

/// Re-computes the whole chain now, records what was found and who asked.
async fn verify(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<VerifyForm>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/audit")?;
    visitor.check_csrf(&form.csrf)?;
    if caller.role() != Role::Auditor {
        return Err(ApiError::NotFound.into());
    }
    let (report, head) = crate::audit::verify_and_record(&services.db, Some(caller.id())).await?;
    crate::http::audit_read(
        &services,
        &caller,
        &ClientAddress(visitor.client.clone()),
        "audit.verify",
        "audit".to_owned(),
        None,
        true,
        serde_json::json!({"rows": report.rows, "head": head.seq, "broken": report.first_broken}),
    )
    .await?;
    Ok(see_other("/audit"))
}

/// One access as the history table shows it.
struct AccessRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    address: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    page: Layout,
    id: String,
    number: String,
    subject: String,
    status: (&'static str, &'static str),
    steps: Vec<(String, String, Option<String>, Option<String>)>,
    documents: Vec<(String, String, Vec<String>)>,
    delegations: Vec<String>,
    accesses: Vec<AccessRow>,
    total: usize,
    actors: Vec<(String, bool)>,
    kinds: Vec<(String, bool)>,
}

#[derive(Deserialize)]
struct HistoryParams {
    attore: Option<String>,
    tipo: Option<String>,
}

/// The family of an action: `document.read` is a `document` access.
fn kind_of(action: &str) -> &str {
    action.split('.').next().unwrap_or(action)
}

async fn history(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/audit/pratiche/{raw}"))?;
    let id = DossierId::parse(&raw).ok_or(ApiError::NotFound)?;
    let Json(h) = records::history(
        State(services.clone()),
        caller,
        ClientAddress(visitor.client.clone()),
        DossierPath(id),
    )
    .await?;
    let actor_of = |a: &records::AccessRecord| {
        format!(
            "{} {}",
            a.actor_role.as_deref().unwrap_or("anonimo"),
            a.actor_id.as_deref().unwrap_or("")
        )
        .trim()
        .to_owned()
    };
    let attore = params.attore.filter(|a| !a.is_empty());
    let tipo = params.tipo.filter(|t| !t.is_empty());
    let actors: BTreeSet<String> = h.accesses.iter().map(actor_of).collect();
    let kinds: BTreeSet<String> = h
        .accesses
        .iter()
        .map(|a| kind_of(&a.action).to_owned())
        .collect();
    let accesses: Vec<AccessRow> = h
        .accesses
        .iter()
        .filter(|a| attore.as_ref().is_none_or(|want| actor_of(a) == *want))
        .filter(|a| {
            tipo.as_deref()
                .is_none_or(|want| kind_of(&a.action) == want)
        })
        .map(|a| AccessRow {
            seq: a.seq,
            at: italian_date(&a.at),
            actor: actor_of(a),
            action: a.action.clone(),
            target: a.target.clone(),
            outcome: a.outcome.clone(),
            address: a.client_address.clone().unwrap_or_default(),
        })
        .collect();
    let steps = h
        .events
        .iter()
        .map(|e| {
            let what = match (e.kind.as_str(), e.to.as_deref()) {
                ("transition", Some(to)) => format!("{} → {to}", e.from.as_deref().unwrap_or("")),
                (kind, _) => format!("{kind} {}", e.document_id.as_deref().unwrap_or_default()),
            };
            let who = format!(
                "{}{}",
                e.actor_role,
                e.actor_name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            (
                italian_date(&e.at),
                format!("{what}, {who}"),
                e.note.clone(),
                e.internal_note.clone(),
            )
        })
        .collect();
    let documents = h
        .documents
        .iter()
        .map(|d| {
            (
                d.title.clone(),
                format!("{}, {}", d.kind, d.visibility),
                d.versions
                    .iter()
                    .map(|v| {
                        format!(
                            "v{} {} ({} byte, {}) SHA-256 {}",
                            v.version,
                            italian_date(&v.created_at),
                            v.size,
                            v.filename,
                            v.sha256
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let delegations = h
        .delegations
        .iter()
        .map(|g| {
            format!(
                "{} dal {}{}{}",
                g.professional_cf,
                italian_date(&g.created_at),
                g.until
                    .as_deref()
                    .map(|u| format!(" al {}", italian_date(u)))
                    .unwrap_or_default(),
                g.revoked_at
                    .as_deref()
                    .map(|r| format!(", revocata il {}", italian_date(r)))
                    .unwrap_or_default()
            )
        })
        .collect();
    render(&HistoryPage {
        page: Layout::new(
            &services,
            &visitor,
            format!("Storia della pratica {}", h.dossier.number),
            "/audit",
        )
        .under("Registro degli accessi", "/audit"),
        id: id.to_string(),
        number: h.dossier.number.clone(),
        subject: h.dossier.subject.clone(),
        status: status_badge(h.dossier.status),
        steps,
        documents,
        delegations,
        total: h.accesses.len(),
        accesses,
        actors: actors
            .into_iter()
            .map(|a| {
                let on = attore.as_deref() == Some(a.as_str());
                (a, on)
            })
            .collect(),
        kinds: kinds
            .into_iter()
            .map(|k| {
                let on = tipo.as_deref() == Some(k.as_str());
                (k, on)
            })
            .collect(),
    })
}

/// The dossier's export (ZIP), through the API's own handler.
async fn export(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/audit/pratiche/{raw}"))?;
    let id = DossierId::parse(&raw).ok_or(ApiError::NotFound)?;
    Ok(records::export(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DossierPath(id),
    )
    .await?
    .into_response())
}
