//! Dossier lifecycle: transitions, timeline, integration requests, ratings and proposals.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ClientAddress, DossierPath};
use crate::access::Caller;
use crate::app::Services;
use crate::audit::Actor;
use crate::db::dossiers::{self, DossierRecord};
use crate::db::lifecycle::{self, EventRecord, IntegrationRequest, Transition};
use crate::db::{documents, now_ms};
use crate::domain::{DocumentId, DocumentKind, DossierStatus, Role, clean_text};

/// Routes of this resource.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/dossiers/{id}/transitions", post(transition))
        .route("/dossiers/{id}/timeline", get(timeline))
        .route(
            "/dossiers/{id}/integration-requests",
            get(integration_requests),
        )
        .route("/dossiers/{id}/rating", post(rate))
        .route("/proposals", post(propose))
}

/// How the caller stands to a dossier, for transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    Applicant,
    Delegate,
    Office,
    None,
}

fn relation(caller: &Caller, dossier: &DossierRecord) -> Relation {
    match caller.role() {
        Role::Citizen | Role::Professional => {
            if caller.codice_fiscale().map(|c| c.as_str()) == Some(dossier.applicant_cf.as_str()) {
                Relation::Applicant
            } else {
                // They can see it and are not the applicant: a delegated professional.
                Relation::Delegate
            }
        }
        Role::Staff => Relation::Office,
        Role::Auditor | Role::Admin => Relation::None,
    }
}

/// The states `caller` may move `dossier` to now, in the order the rules list them.
pub(crate) fn allowed_transitions(caller: &Caller, dossier: &DossierRecord) -> Vec<DossierStatus> {
    let who = relation(caller, dossier);
    rules(dossier.status)
        .iter()
        .filter(|(_, by)| by.contains(&who))
        .map(|(s, _)| *s)
        .collect()
}

/// The transitions from `from`, each with who may make it.
fn rules(from: DossierStatus) -> &'static [(DossierStatus, &'static [Relation])] {
    use DossierStatus::*;
    use Relation::*;
    match from {
        Draft => &[(Submitted, &[Applicant]), (Withdrawn, &[Applicant])],
        Submitted => &[(Started, &[Office]), (Withdrawn, &[Applicant, Delegate])],
        Started => &[(AwaitingIntegration, &[Office]), (Concluded, &[Office])],
        AwaitingIntegration => &[(Started, &[Applicant, Delegate, Office])],
        Concluded | Withdrawn => &[(Archived, &[Office])],
        Archived => &[],
    }
}

/// Body of a transition.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// The new state.
    pub(crate) to: String,
    /// Note shown to the applicant.
    pub(crate) note: Option<String>,
    /// Note for staff and auditors only.
    pub(crate) internal_note: Option<String>,
    /// `approved` or `rejected` (to `concluded`).
    pub(crate) outcome: Option<String>,
    /// The decision document, of kind `decision` (to `concluded`).
    pub(crate) decision_document_id: Option<String>,
    /// What the applicant must provide (to `awaiting_integration`).
    #[serde(default)]
    pub(crate) missing_items: Vec<String>,
    /// Filing a draft (to `submitted`): the procedure's required documents the applicant
    /// ticks as attached, each exactly as `GET /v1/procedures` names it; all are needed.
    #[serde(default)]
    pub(crate) checked_documents: Vec<String>,
}

fn optional_text(text: Option<&str>, what: &'static str) -> Result<Option<String>, ApiError> {
    text.map(|t| clean_text(t, what, 4000).map_err(|e| ApiError::bad_request("invalid_body", e)))
        .transpose()
}

#[utoipa::path(post, path = "/v1/dossiers/{id}/transitions", request_body = TransitionBody,
    params(("id" = String, Path, description = "Dossier id")),
    responses(
        (status = 200, body = DossierRecord, description = "The dossier in its new state"),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody, description = "A legal transition the caller may not make"),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "Not a transition from the current state; `allowed` lists the caller's"),
    ),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn transition(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    DossierPath(id): DossierPath,
    ApiJson(body): ApiJson<TransitionBody>,
) -> Result<Response, ApiError> {
    let dossier = dossiers::get(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let to: DossierStatus = body
        .to
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let who = relation(&caller, &dossier);
    let mine: Vec<String> = rules(dossier.status)
        .iter()
        .filter(|(_, by)| by.contains(&who))
        .map(|(s, _)| s.to_string())
        .collect();
    let Some((_, by)) = rules(dossier.status).iter().find(|(s, _)| *s == to) else {
        return Err(ApiError::IllegalTransition {
            message: format!("a dossier in state {} cannot go to {to}", dossier.status),
            allowed: mine,
        });
    };
    if !by.contains(&who) {
        return Err(ApiError::Forbidden(format!(
            "your role cannot move this dossier to {to}"
        )));
    }
    let note = optional_text(body.note.as_deref(), "note")?;
    let internal_note = optional_text(body.internal_note.as_deref(), "internal_note")?;
    if internal_note.is_some() && who != Relation::Office {
        return Err(ApiError::bad_request(
            "invalid_body",
            "only office staff write internal notes",
        ));
    }
    let mut outcome = None;
    let mut decision = None;
    if to == DossierStatus::Concluded {
        outcome = match body.outcome.as_deref() {
            Some(o @ ("approved" | "rejected")) => Some(o),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "concluding needs outcome: approved or rejected",
                ));
            }
        };
        let doc_id = body
            .decision_document_id
            .as_deref()
            .and_then(DocumentId::parse)
            .ok_or_else(|| {
                ApiError::bad_request("invalid_body", "concluding needs decision_document_id")
            })?;
        let doc = documents::get(&services.db, &caller, doc_id).await?;
        match doc {
            Some(d) if d.dossier_id == id && d.kind == DocumentKind::Decision => {
                decision = Some(doc_id.to_string())
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "decision_document_id must be a document of kind decision in this dossier",
                ));
            }
        }
    } else if body.outcome.is_some() || body.decision_document_id.is_some() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "outcome and decision only go with concluded",
        ));
    }
    if to == DossierStatus::Submitted {
        let procedure = services
            .catalogue
            .procedure(&dossier.procedure)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unknown procedure")))?;
        let unticked: Vec<&str> = procedure
            .required_documents
            .iter()
            .filter(|r| !body.checked_documents.contains(r))
            .map(String::as_str)
            .collect();
        if !unticked.is_empty() {
            return Err(ApiError::bad_request(
                "missing_documents",
                format!(
                    "a dossier is filed with every required document; not ticked: {}",
                    unticked.join("; ")
                ),
            ));
        }
        if !procedure.required_documents.is_empty()
            && documents::list_for_dossier(&services.db, &caller, id)
                .await?
                .is_empty()
        {
            return Err(ApiError::bad_request(
                "missing_documents",
                "a dossier is filed with its documents attached; this one has none",
            ));
        }
    } else if !body.checked_documents.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "checked_documents only go with submitted",
        ));
    }
    let missing: Vec<String> = body
        .missing_items
        .iter()
        .map(|i| {
            clean_text(i, "missing item", 500).map_err(|e| ApiError::bad_request("invalid_body", e))
        })
        .collect::<Result<_, _>>()?;
    if to == DossierStatus::AwaitingIntegration && missing.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "an integration request lists missing_items",
        ));
    }
    if to != DossierStatus::AwaitingIntegration && !missing.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "missing_items only go with awaiting_integration",
        ));
    }
    let applied = lifecycle::transition(
        &services.db,
        Transition {
            tenant: caller.tenant(),
            dossier: id,
            from: dossier.status,
            to,
            note: note.as_deref(),
            internal_note: internal_note.as_deref(),
            outcome,
            document: decision.as_deref(),
            missing_items: &missing,
            by: caller.id(),
            delivery: services.delivery(),
        },
        &Actor::of(&caller, client),
    )
    .await?;
    if !applied {
        return Err(ApiError::Conflict(
            "the dossier changed state meanwhile; read it again".into(),
        ));
    }
    services.wake.notify_one();
    let record = dossiers::get(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(record).into_response())
}

/// A dossier's timeline.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Timeline {
    /// Current state.
    pub(crate) status: DossierStatus,
    /// Legal deadline in days.
    pub(crate) deadline_days: i64,
    /// Days the legal clock has run (suspensions excluded).
    pub(crate) days_elapsed: i64,
    /// Days the clock was suspended awaiting integrations.
    pub(crate) days_suspended: i64,
    /// Days left before the deadline (negative when late).
    pub(crate) days_left: i64,
    /// Past the deadline.
    pub(crate) overdue: bool,
    /// Every step, oldest first.
    pub(crate) events: Vec<EventRecord>,
}

const DAY_MS: i64 = 86_400_000;

#[utoipa::path(get, path = "/v1/dossiers/{id}/timeline",
    params(("id" = String, Path, description = "Dossier id")),
    responses((status = 200, body = Timeline), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn timeline(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Json<Timeline>, ApiError> {
    let dossier = dossiers::get(&services.db, &caller, id).await?;
    super::audit_read(
        &services,
        &caller,
        &client,
        "dossier.timeline",
        format!("dossier:{id}"),
        dossier.as_ref().map(|_| id),
        dossier.is_some(),
        serde_json::json!({}),
    )
    .await?;
    let dossier = dossier.ok_or(ApiError::NotFound)?;
    let staff_view = matches!(caller.role(), Role::Staff | Role::Auditor);
    let events = lifecycle::events(&services.db, id, staff_view).await?;
    let (running, suspended) = lifecycle::clock(&events, now_ms());
    let deadline =
        lifecycle::deadline_days(&services.db, caller.tenant(), &dossier.procedure).await?;
    let elapsed = running / DAY_MS;
    Ok(Json(Timeline {
        status: dossier.status,
        deadline_days: deadline,
        days_elapsed: elapsed,
        days_suspended: suspended / DAY_MS,
        days_left: deadline - elapsed,
        overdue: elapsed > deadline,
        events,
    }))
}

/// Integration requests of a dossier.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IntegrationList {
    /// Oldest first.
    pub(crate) items: Vec<IntegrationRequest>,
}

#[utoipa::path(get, path = "/v1/dossiers/{id}/integration-requests",
    params(("id" = String, Path, description = "Dossier id")),
    responses((status = 200, body = IntegrationList), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn integration_requests(
    State(services): State<Services>,
    caller: Caller,
    client: ClientAddress,
    DossierPath(id): DossierPath,
) -> Result<Json<IntegrationList>, ApiError> {
    let dossier = dossiers::get(&services.db, &caller, id).await?;
    let mut items = Vec::new();
    if dossier.is_some() {
        items = lifecycle::integration_requests(&services.db, id).await?;
        // A document uploaded for an item is named only to those who may read it: an
        // applicant never learns the id of an internal document.
        let visible: std::collections::HashSet<String> =
            documents::list_for_dossier(&services.db, &caller, id)
                .await?
                .into_iter()
                .map(|d| d.id.to_string())
                .collect();
        for item in items.iter_mut().flat_map(|r| r.items.iter_mut()) {
            if item
                .document_id
                .as_ref()
                .is_some_and(|d| !visible.contains(d))
            {
                item.document_id = None;
            }
        }
    }
    super::audit_read(
        &services,
        &caller,
        &client,
        "integration_requests.list",
        format!("dossier:{id}"),
        dossier.as_ref().map(|_| id),
        dossier.is_some(),
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    dossier.ok_or(ApiError::NotFound)?;
    Ok(Json(IntegrationList { items }))
}

/// Body of a rating.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatingBody {
    /// 1 (poor) to 5 (excellent).
    pub(crate) score: i32,
    /// Optional comment.
    pub(crate) comment: Option<String>,
}

#[utoipa::path(post, path = "/v1/dossiers/{id}/rating", request_body = RatingBody,
    params(("id" = String, Path, description = "Dossier id")),
    responses(
        (status = 201, description = "Recorded"),
        (status = 403, body = super::error::ErrorBody, description = "Only the applicant rates"),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "Not concluded yet, or rated already"),
    ),
    security(("bearer" = [])), tag = "dossiers")]
pub(crate) async fn rate(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    DossierPath(id): DossierPath,
    ApiJson(body): ApiJson<RatingBody>,
) -> Result<Response, ApiError> {
    let dossier = dossiers::get(&services.db, &caller, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if relation(&caller, &dossier) != Relation::Applicant {
        return Err(ApiError::Forbidden(
            "only the applicant rates the service".into(),
        ));
    }
    let concluded = lifecycle::concluded_at(&services.db, id).await?;
    if concluded.is_none() || dossier.status == DossierStatus::Withdrawn {
        return Err(ApiError::Conflict(
            "a dossier is rated after its conclusion".into(),
        ));
    }
    if !(1..=5).contains(&body.score) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "score must be 1 to 5",
        ));
    }
    let comment = optional_text(body.comment.as_deref(), "comment")?;
    if !lifecycle::rate(
        &services.db,
        id,
        caller.id(),
        body.score,
        comment.as_deref(),
        &Actor::of(&caller, client),
    )
    .await?
    {
        return Err(ApiError::Conflict("this dossier was rated already".into()));
    }
    Ok(StatusCode::CREATED.into_response())
}

/// Body of a proposal or complaint.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalBody {
    /// `proposal` or `complaint`.
    kind: String,
    /// The text.
    text: String,
}

#[utoipa::path(post, path = "/v1/proposals", request_body = ProposalBody,
    responses((status = 201, description = "Filed"), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody, description = "Auditors and administrators file nothing")),
    security(("bearer" = [])), tag = "dossiers")]
async fn propose(
    State(services): State<Services>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(body): ApiJson<ProposalBody>,
) -> Result<Response, ApiError> {
    caller.may_file()?;
    if !matches!(body.kind.as_str(), "proposal" | "complaint") {
        return Err(ApiError::bad_request(
            "invalid_body",
            "kind must be proposal or complaint",
        ));
    }
    let text = clean_text(&body.text, "text", 8000)
        .map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let id = lifecycle::file_proposal(
        &services.db,
        caller.tenant(),
        caller.id(),
        &body.kind,
        &text,
        &Actor::of(&caller, client),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({"id": id}))).into_response())
}
