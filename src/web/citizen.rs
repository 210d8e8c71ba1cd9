//! The pages of a dossier, for everyone who may see it: the applicant and their delegated
//! professionals ("Le mie pratiche", start a dossier, follow it, answer an integration
//! request, withdraw, rate) and the office at work on it (the transitions it may make).

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Json};
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, italian_date, render, see_other, status_badge};
use crate::access::Caller;
use crate::app::Services;
use crate::db::documents::DocumentRecord;
use crate::db::dossiers::DossierRecord;
use crate::db::lifecycle::{EventRecord, IntegrationRequest};
use crate::domain::{DossierId, DossierStatus, Role};
use crate::http::extract::{ApiJson, ApiQuery, DossierPath};
use crate::http::{ApiError, ClientAddress, delegations, dossiers, lifecycle, uploads};

/// Routes of the dossier pages; uploads take bodies of up to `upload_limit` bytes.
pub fn router(upload_limit: usize) -> Router<Services> {
    Router::new()
        .route("/pratiche", get(my_dossiers))
        .route("/pratiche/nuova", get(new_dossier_page).post(new_dossier))
        .route("/pratiche/{id}", get(dossier_page))
        .route(
            "/pratiche/{id}/documenti",
            post(upload).layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/pratiche/{id}/stato", post(change_state))
        .route("/pratiche/{id}/valutazione", post(rate))
        .route("/pratiche/{id}/deleghe", post(grant))
        .route("/pratiche/{id}/deleghe/revoca", post(revoke))
}

fn parse_dossier(raw: &str) -> Result<DossierId, WebError> {
    DossierId::parse(raw).ok_or_else(|| ApiError::NotFound.into())
}

/// A dossier as a list shows it.
struct Row {
    id: String,
    number: String,
    procedure: String,
    subject: String,
    status: (&'static str, &'static str),
    updated: String,
    days_left: Option<i64>,
}

/// The dossiers of one applicant, for a professional's list.
struct Group {
    label: String,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "my_dossiers.html")]
struct MyDossiers {
    page: Layout,
    groups: Vec<Group>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct ListParams {
    dopo: Option<String>,
}

fn procedure_name(services: &Services, code: &str) -> String {
    services
        .catalogue
        .procedure(code)
        .map_or_else(|| code.to_owned(), |p| p.name.clone())
}

/// Days left on the legal clock of an open dossier, from the API's timeline.
pub(super) async fn days_left(
    services: &Services,
    caller: &Caller,
    client: &ClientAddress,
    dossier: &DossierRecord,
) -> Result<Option<i64>, WebError> {
    if !matches!(
        dossier.status,
        DossierStatus::Submitted | DossierStatus::Started | DossierStatus::AwaitingIntegration
    ) {
        return Ok(None);
    }
    let Json(timeline) = lifecycle::timeline(
        State(services.clone()),
        caller.clone(),
        ClientAddress(client.0.clone()),
        DossierPath(dossier.id),
    )
    .await?;
    Ok(Some(timeline.days_left))
}

async fn rows_of(
    services: &Services,
    caller: &Caller,
    client: &ClientAddress,
    items: Vec<DossierRecord>,
) -> Result<Vec<(String, Row)>, WebError> {
    let mut rows = Vec::with_capacity(items.len());
    for d in items {
        let left = days_left(services, caller, client, &d).await?;
        rows.push((
            d.applicant_cf.clone(),
            Row {
                id: d.id.to_string(),
                number: d.number.clone(),
                procedure: procedure_name(services, &d.procedure),
                subject: d.subject.clone(),
                status: status_badge(d.status),
                updated: italian_date(&d.updated_at),
                days_left: left,
            },
        ));
    }
    Ok(rows)
}

async fn my_dossiers(
    State(services): State<Services>,
    visitor: Visitor,
    Query(params): Query<ListParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/pratiche")?;
    let client = ClientAddress(visitor.client.clone());
    let Json(page) = dossiers::list_dossiers(
        State(services.clone()),
        caller.clone(),
        ClientAddress(visitor.client.clone()),
        ApiQuery(dossiers::ListQuery {
            limit: Some(20),
            cursor: params.dopo,
            ..Default::default()
        }),
    )
    .await?;
    let own = caller.codice_fiscale().map(|c| c.as_str().to_owned());
    let mut grouped: BTreeMap<(bool, String), Vec<Row>> = BTreeMap::new();
    for (applicant, row) in rows_of(&services, &caller, &client, page.items).await? {
        // One's own dossiers first, then each client's.
        let mine = Some(&applicant) == own.as_ref();
        grouped.entry((!mine, applicant)).or_default().push(row);
    }
    let professional = caller.role() == Role::Professional;
    let groups = grouped
        .into_iter()
        .map(|((not_mine, applicant), rows)| Group {
            label: if !professional {
                String::new()
            } else if not_mine {
                format!("Pratiche del cliente {applicant}")
            } else {
                "Le tue pratiche".to_owned()
            },
            rows,
        })
        .collect();
    render(&MyDossiers {
        page: Layout::new(&services, &visitor, "Le mie pratiche", "/pratiche"),
        groups,
        next: page.next_cursor,
    })
}

/// An office and its procedures, for the procedure choice.
struct Choice {
    office: String,
    procedures: Vec<(String, String, bool)>,
}

#[derive(Template)]
#[template(path = "new_dossier.html")]
struct NewDossierPage {
    page: Layout,
    choices: Vec<Choice>,
    /// Whether the form asks for the applicant (professionals, front office).
    ask_applicant: bool,
    /// Whether the form also asks the applicant's name (staff filing at the desk).
    ask_name: bool,
    applicant: String,
    subject: String,
}

#[derive(Deserialize)]
struct NewParams {
    servizio: Option<String>,
}

fn choices(services: &Services, selected: &str) -> Vec<Choice> {
    services
        .catalogue
        .offices()
        .map(|office| Choice {
            office: office.name.clone(),
            procedures: services
                .catalogue
                .procedures()
                .filter(|p| p.office == office.code)
                .map(|p| {
                    (
                        p.code.as_str().to_owned(),
                        p.name.clone(),
                        p.code.as_str() == selected,
                    )
                })
                .collect(),
        })
        .collect()
}

async fn new_dossier_page(
    State(services): State<Services>,
    visitor: Visitor,
    Query(params): Query<NewParams>,
) -> Result<Response, WebError> {
    let selected = params.servizio.unwrap_or_default();
    let caller = visitor.caller(&format!(
        "/pratiche/nuova?servizio={}",
        percent_encoding::utf8_percent_encode(&selected, percent_encoding::NON_ALPHANUMERIC)
    ))?;
    caller.may_file()?;
    render(&NewDossierPage {
        page: Layout::new(&services, &visitor, "Avvia una pratica", "/pratiche")
            .under("Le mie pratiche", "/pratiche"),
        choices: choices(&services, &selected),
        ask_applicant: caller.role() != Role::Citizen,
        ask_name: caller.role() == Role::Staff,
        applicant: String::new(),
        subject: String::new(),
    })
}

#[derive(Deserialize)]
struct NewDossier {
    csrf: String,
    procedure: String,
    subject: String,
    applicant_cf: Option<String>,
    applicant_name: Option<String>,
}

async fn new_dossier(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<NewDossier>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/pratiche/nuova")?;
    visitor.check_csrf(&form.csrf)?;
    // A citizen files for themself; others name the applicant (their own code by default).
    let applicant = form
        .applicant_cf
        .filter(|a| !a.trim().is_empty() && caller.role() != Role::Citizen)
        .or_else(|| caller.codice_fiscale().map(|c| c.as_str().to_owned()))
        .unwrap_or_default();
    // Online, a dossier starts as a draft its applicant files when its documents are in; at
    // the desk, staff file it at once.
    let draft = matches!(caller.role(), Role::Citizen | Role::Professional);
    let (_, _, Json(record)) = dossiers::open_dossier(
        State(services.clone()),
        caller,
        ClientAddress(visitor.client.clone()),
        ApiJson(dossiers::OpenDossier {
            procedure: form.procedure,
            applicant_cf: applicant.trim().to_uppercase(),
            subject: form.subject,
            draft,
            applicant_name: if draft {
                None
            } else {
                non_empty(form.applicant_name)
            },
        }),
    )
    .await?;
    Ok(see_other(&format!("/pratiche/{}", record.id)))
}

/// A document as the dossier page lists it.
struct DocRow {
    id: String,
    title: String,
    kind: &'static str,
    date: String,
    internal: bool,
}

pub(super) fn kind_label(kind: crate::domain::DocumentKind) -> &'static str {
    use crate::domain::DocumentKind::*;
    match kind {
        Application => "Domanda",
        Attachment => "Allegato",
        Plan => "Elaborato tecnico",
        Receipt => "Ricevuta di pagamento",
        IdentityDocument => "Documento di identità",
        Correspondence => "Comunicazione",
        Opinion => "Parere",
        Decision => "Provvedimento",
        Other => "Altro",
    }
}

fn doc_row(d: &DocumentRecord) -> DocRow {
    DocRow {
        id: d.id.to_string(),
        title: d.title.clone(),
        kind: kind_label(d.kind),
        date: italian_date(&d.updated_at),
        internal: d.visibility == crate::domain::Visibility::Internal,
    }
}

/// A step of the timeline as the page shows it.
struct Step {
    date: String,
    text: String,
    note: Option<String>,
    internal_note: Option<String>,
}

fn step(e: &EventRecord, docs: &[DocumentRecord]) -> Step {
    let text = match e.kind.as_str() {
        "transition" => {
            let to =
                e.to.as_deref()
                    .and_then(|t| t.parse::<DossierStatus>().ok())
                    .map_or("", |s| status_badge(s).0);
            let outcome = match e.outcome.as_deref() {
                Some("approved") => " con esito favorevole",
                Some("rejected") => " con esito sfavorevole",
                _ => "",
            };
            format!("Stato: {to}{outcome}")
        }
        "document" | "version" => {
            let title = e
                .document_id
                .as_deref()
                .and_then(|id| docs.iter().find(|d| d.id.to_string() == id))
                .map_or_else(|| "un documento".to_owned(), |d| format!("«{}»", d.title));
            if e.kind == "document" {
                format!("Aggiunto {title}")
            } else {
                format!("Nuova versione di {title}")
            }
        }
        other => other.to_owned(),
    };
    let who = e
        .actor_name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    Step {
        date: italian_date(&e.at),
        text: format!("{text}{who}"),
        note: e.note.clone(),
        internal_note: e.internal_note.clone(),
    }
}

/// An open integration item, with its upload form's value.
struct OpenItem {
    text: String,
    item: String,
    done: bool,
}

#[derive(Template)]
#[template(path = "dossier.html")]
struct DossierPage {
    page: Layout,
    d: DossierRecord,
    procedure: String,
    office: String,
    status: (&'static str, &'static str),
    created: String,
    days_elapsed: i64,
    days_left: i64,
    days_suspended: i64,
    deadline_days: i64,
    overdue: bool,
    open: bool,
    steps: Vec<Step>,
    docs: Vec<DocRow>,
    items: Vec<OpenItem>,
    office_view: bool,
    applicant_view: bool,
    may_upload: bool,
    allowed: Vec<(String, &'static str)>,
    decisions: Vec<(String, String)>,
    may_rate: bool,
    upload_action: String,
    /// The applicant's own delegations (shown to whoever may manage them).
    delegations: Vec<DelegationRow>,
    may_delegate: bool,
    /// What the last form did, to say so at the top of the page.
    notice: Option<&'static str>,
    auditor_view: bool,
    /// The procedure's required documents (ticked when a draft is filed).
    required: Vec<String>,
    optional: Vec<String>,
}

/// A delegation as the dossier page shows it.
struct DelegationRow {
    professional: String,
    since: String,
    until: Option<String>,
    active: bool,
}

#[derive(Deserialize)]
struct DossierParams {
    valutata: Option<String>,
}

async fn dossier_page(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Query(params): Query<DossierParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}"))?;
    let id = parse_dossier(&raw)?;
    let state = || State(services.clone());
    let client = || ClientAddress(visitor.client.clone());
    let Json(d) = dossiers::get_dossier(state(), caller.clone(), client(), DossierPath(id)).await?;
    let Json(timeline) =
        lifecycle::timeline(state(), caller.clone(), client(), DossierPath(id)).await?;
    let Json(docs) =
        dossiers::list_documents(state(), caller.clone(), client(), DossierPath(id)).await?;
    let Json(requests) =
        lifecycle::integration_requests(state(), caller.clone(), client(), DossierPath(id)).await?;
    let may_delegate = caller.may_manage_delegations(&d.facts()).is_ok();
    let delegations = if may_delegate {
        let Json(list) =
            delegations::list(state(), caller.clone(), client(), DossierPath(id)).await?;
        list.items
            .iter()
            .map(|r| DelegationRow {
                professional: r.professional_cf.clone(),
                since: italian_date(&r.created_at),
                until: r.until.as_deref().map(italian_date),
                active: r.revoked_at.is_none()
                    && r.until
                        .as_deref()
                        .and_then(|u| u.parse::<jiff::Timestamp>().ok())
                        .is_none_or(|u| u > jiff::Timestamp::now()),
            })
            .collect()
    } else {
        Vec::new()
    };
    let office_view = caller.role() == Role::Staff;
    let applicant_view = matches!(caller.role(), Role::Citizen | Role::Professional);
    let items = open_items(&requests.items);
    let allowed: Vec<(String, &'static str)> = lifecycle::allowed_transitions(&caller, &d)
        .into_iter()
        .map(|s| (s.as_str().to_owned(), transition_label(d.status, s)))
        .collect();
    let open = matches!(
        d.status,
        DossierStatus::Draft
            | DossierStatus::Submitted
            | DossierStatus::Started
            | DossierStatus::AwaitingIntegration
    );
    let decisions = docs
        .items
        .iter()
        .filter(|doc| doc.kind == crate::domain::DocumentKind::Decision)
        .map(|doc| (doc.id.to_string(), doc.title.clone()))
        .collect();
    let procedure = procedure_name(&services, &d.procedure);
    let office = services
        .catalogue
        .office(&d.office)
        .map_or_else(|| d.office.clone(), |o| o.name.clone());
    let page = DossierPage {
        page: Layout::new(
            &services,
            &visitor,
            format!("Pratica {}", d.number),
            if office_view {
                "/ufficio/coda"
            } else {
                "/pratiche"
            },
        )
        .under(
            if office_view {
                "Pratiche dell'ufficio"
            } else {
                "Le mie pratiche"
            },
            if office_view {
                "/ufficio/coda"
            } else {
                "/pratiche"
            },
        ),
        procedure,
        office,
        status: status_badge(d.status),
        created: italian_date(&d.created_at),
        days_elapsed: timeline.days_elapsed,
        days_left: timeline.days_left,
        days_suspended: timeline.days_suspended,
        deadline_days: timeline.deadline_days,
        overdue: timeline.overdue,
        open,
        steps: timeline
            .events
            .iter()
            .map(|e| step(e, &docs.items))
            .rev()
            .collect(),
        docs: docs.items.iter().map(doc_row).collect(),
        items,
        office_view,
        applicant_view,
        may_upload: open && (office_view || applicant_view),
        allowed,
        decisions,
        may_rate: applicant_view && d.status == DossierStatus::Concluded,
        upload_action: format!("/pratiche/{id}/documenti?csrf={}", visitor.csrf),
        delegations,
        may_delegate,
        auditor_view: caller.role() == Role::Auditor,
        required: services
            .catalogue
            .procedure(&d.procedure)
            .map(|p| p.required_documents.clone())
            .unwrap_or_default(),
        optional: services
            .catalogue
            .procedure(&d.procedure)
            .map(|p| p.optional_documents.clone())
            .unwrap_or_default(),
        notice: params
            .valutata
            .map(|_| "Grazie: la tua valutazione è stata registrata."),
        d,
    };
    render(&page)
}

fn open_items(requests: &[IntegrationRequest]) -> Vec<OpenItem> {
    requests
        .iter()
        .filter(|r| r.open)
        .flat_map(|r| {
            r.items.iter().map(|i| OpenItem {
                text: i.description.clone(),
                item: format!("{}/{}", r.id, i.position),
                done: i.satisfied,
            })
        })
        .collect()
}

fn transition_label(from: DossierStatus, to: DossierStatus) -> &'static str {
    match to {
        DossierStatus::Started if from == DossierStatus::AwaitingIntegration => {
            "Riprendi la lavorazione: l'integrazione è completa"
        }
        DossierStatus::Started => "Avvia la lavorazione",
        DossierStatus::AwaitingIntegration => "Chiedi un'integrazione",
        DossierStatus::Concluded => "Concludi la pratica",
        DossierStatus::Withdrawn if from == DossierStatus::Draft => "Elimina la bozza",
        DossierStatus::Withdrawn => "Ritira la pratica",
        DossierStatus::Archived => "Archivia",
        DossierStatus::Draft => "Riporta in bozza",
        DossierStatus::Submitted => "Presenta la pratica all'ufficio",
    }
}

#[derive(Deserialize)]
struct UploadParams {
    csrf: Option<String>,
}

/// Adds a document through the API's own upload. The form's token travels in the address:
/// the body is the file, read once, by the API handler.
async fn upload(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}"))?;
    visitor.check_csrf(params.csrf.as_deref().unwrap_or_default())?;
    let id = parse_dossier(&raw)?;
    uploads::add_document(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DossierPath(id),
        headers,
        crate::http::extract::ApiMultipart(multipart),
    )
    .await?;
    Ok(see_other(&format!("/pratiche/{id}#documenti")))
}

#[derive(Deserialize)]
struct ChangeState {
    csrf: String,
    to: String,
    note: Option<String>,
    internal_note: Option<String>,
    outcome: Option<String>,
    decision: Option<String>,
    /// One missing item per line.
    missing: Option<String>,
    /// The ticked required documents, as `required_N` fields (a form's repeated names do not
    /// survive URL-encoded decoding).
    #[serde(flatten)]
    ticked: std::collections::HashMap<String, String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

async fn change_state(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<ChangeState>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}"))?;
    visitor.check_csrf(&form.csrf)?;
    let id = parse_dossier(&raw)?;
    let missing_items = form
        .missing
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lifecycle::transition(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DossierPath(id),
        ApiJson(lifecycle::TransitionBody {
            to: form.to,
            note: non_empty(form.note),
            internal_note: non_empty(form.internal_note),
            outcome: non_empty(form.outcome),
            decision_document_id: non_empty(form.decision),
            missing_items,
            checked_documents: form
                .ticked
                .into_iter()
                .filter(|(k, _)| k.starts_with("required_"))
                .map(|(_, v)| v)
                .collect(),
        }),
    )
    .await?;
    Ok(see_other(&format!("/pratiche/{id}")))
}

#[derive(Deserialize)]
struct Rate {
    csrf: String,
    score: i32,
    comment: Option<String>,
}

async fn rate(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<Rate>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}"))?;
    visitor.check_csrf(&form.csrf)?;
    let id = parse_dossier(&raw)?;
    lifecycle::rate(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DossierPath(id),
        ApiJson(lifecycle::RatingBody {
            score: form.score,
            comment: non_empty(form.comment),
        }),
    )
    .await?;
    Ok(see_other(&format!("/pratiche/{id}?valutata=1")))
}

#[derive(Deserialize)]
struct Grant {
    csrf: String,
    professional_cf: String,
    until: Option<String>,
}

async fn grant(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<Grant>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}"))?;
    visitor.check_csrf(&form.csrf)?;
    let id = parse_dossier(&raw)?;
    let _created = delegations::grant(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        DossierPath(id),
        ApiJson(delegations::GrantBody {
            professional_cf: form.professional_cf.trim().to_uppercase(),
            until: non_empty(form.until),
        }),
    )
    .await?;
    Ok(see_other(&format!("/pratiche/{id}#deleghe")))
}

#[derive(Deserialize)]
struct Revoke {
    csrf: String,
    professional_cf: String,
}

async fn revoke(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<Revoke>,
) -> Result<Response, WebError> {
    let caller = visitor.caller(&format!("/pratiche/{raw}"))?;
    visitor.check_csrf(&form.csrf)?;
    let id = parse_dossier(&raw)?;
    delegations::revoke(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        Path((id.to_string(), form.professional_cf)),
    )
    .await?;
    Ok(see_other(&format!("/pratiche/{id}#deleghe")))
}
