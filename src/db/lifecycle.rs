//! Dossier lifecycle: transitions with their timeline events, integration requests, ratings.

use serde::Serialize;
use sqlx::Row;

use super::dossiers::{log_change, rfc3339};
use super::{Db, DbError, now_ms, parse_stored};
use crate::audit::Actor;
use crate::domain::{DossierId, DossierStatus, UserId};

/// A transition to apply; permission and legality were checked by the caller.
pub struct Transition<'a> {
    /// Municipality.
    pub tenant: &'a str,
    /// The dossier.
    pub dossier: DossierId,
    /// Its state now (the update only applies if it still is).
    pub from: DossierStatus,
    /// The new state.
    pub to: DossierStatus,
    /// Note for the applicant.
    pub note: Option<&'a str>,
    /// Note for staff and auditors.
    pub internal_note: Option<&'a str>,
    /// Outcome, when concluding.
    pub outcome: Option<&'a str>,
    /// The decision document, when concluding.
    pub document: Option<&'a str>,
    /// Items missing, when asking for an integration.
    pub missing_items: &'a [String],
    /// Who.
    pub by: UserId,
    /// How the applicant is told.
    pub delivery: super::notices::Delivery<'a>,
}

/// Applies a transition; `false` if the dossier changed state meanwhile.
pub async fn transition(db: &Db, t: Transition<'_>, actor: &Actor) -> Result<bool, DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "update dossier set status = $1, updated_at = $2, \
         started_at = case when $3 = 1 and started_at is null then $4 else started_at end, \
         concluded_at = case when $5 = 1 then $6 else concluded_at end, \
         outcome = coalesce($7, outcome) where id = $8 and status = $9",
    )
    .bind(t.to.as_str())
    .bind(now)
    .bind(i32::from(t.to == DossierStatus::Started))
    .bind(now)
    .bind(i32::from(matches!(
        t.to,
        DossierStatus::Concluded | DossierStatus::Withdrawn
    )))
    .bind(now)
    .bind(t.outcome.map(str::to_owned))
    .bind(t.dossier.to_string())
    .bind(t.from.as_str())
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    let step = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "insert into dossier_event (id, dossier_id, at, kind, from_status, to_status, actor_id, \
         actor_role, actor_name, note, internal_note, outcome, document_id) \
         select $1, $2, $3, 'transition', $4, $5, id, role, name, $6, $7, $8, $9 \
         from app_user where id = $10",
    )
    .bind(&step)
    .bind(t.dossier.to_string())
    .bind(now)
    .bind(t.from.as_str())
    .bind(t.to.as_str())
    .bind(t.note.map(str::to_owned))
    .bind(t.internal_note.map(str::to_owned))
    .bind(t.outcome.map(str::to_owned))
    .bind(t.document.map(str::to_owned))
    .bind(t.by.to_string())
    .execute(&mut *tx)
    .await?;
    if t.to == DossierStatus::AwaitingIntegration {
        let request = uuid::Uuid::now_v7().to_string();
        sqlx::query("insert into integration_request (id, dossier_id, created_by, created_at) values ($1, $2, $3, $4)")
            .bind(&request)
            .bind(t.dossier.to_string())
            .bind(t.by.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for (i, item) in t.missing_items.iter().enumerate() {
            sqlx::query("insert into integration_item (request_id, position, description) values ($1, $2, $3)")
                .bind(&request)
                .bind(i as i32 + 1)
                .bind(item.clone())
                .execute(&mut *tx)
                .await?;
        }
    }
    if t.from == DossierStatus::AwaitingIntegration {
        sqlx::query("update integration_request set closed_at = $1 where dossier_id = $2 and closed_at is null")
            .bind(now)
            .bind(t.dossier.to_string())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(event) = notice_of(t.from, t.to) {
        let outcome = match t.outcome {
            Some("approved") => "accolta",
            Some("rejected") => "respinta",
            _ => "",
        };
        super::notices::enqueue(
            &mut tx,
            &super::notices::Notice {
                tenant: t.tenant,
                dossier: t.dossier,
                step: Some(&step),
                event,
                values: serde_json::json!({
                    "note": t.note.unwrap_or_default(),
                    "missing_items": t.missing_items,
                    "outcome": t.outcome.unwrap_or_default(),
                    "outcome_text": outcome,
                }),
                professional_cf: None,
                delivery: t.delivery,
            },
        )
        .await?;
    }
    // The status is a search filter and facet: the indexer re-reads the dossier's documents.
    log_change(
        &mut tx,
        t.tenant,
        "dossier",
        &t.dossier.to_string(),
        "status",
    )
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "dossier.transition",
            format!("dossier:{}", t.dossier),
            Some(t.dossier),
            "ok",
            serde_json::json!({"from": t.from.as_str(), "to": t.to.as_str(), "outcome": t.outcome}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The notice a transition sends the applicant, if any (archiving is the office's own).
fn notice_of(from: DossierStatus, to: DossierStatus) -> Option<super::notices::Event> {
    use super::notices::Event;
    match (from, to) {
        (DossierStatus::AwaitingIntegration, DossierStatus::Started) => {
            Some(Event::IntegrationReceived)
        }
        (_, DossierStatus::Started) => Some(Event::DossierStarted),
        (_, DossierStatus::AwaitingIntegration) => Some(Event::IntegrationRequested),
        (_, DossierStatus::Concluded) => Some(Event::DossierConcluded),
        (_, DossierStatus::Withdrawn) => Some(Event::DossierWithdrawn),
        (DossierStatus::Draft, DossierStatus::Submitted) => Some(Event::DossierSubmitted),
        // A draft withdrawn was never filed: nobody is told.
        (DossierStatus::Draft, _) => None,
        (_, DossierStatus::Submitted | DossierStatus::Draft | DossierStatus::Archived) => None,
    }
}

/// One step of a dossier's life.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// When (RFC 3339).
    pub at: String,
    /// `transition`, `document` or `version`.
    pub kind: String,
    /// State before a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// State after a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The actor's role.
    pub actor_role: String,
    /// The actor's name (staff only; others are not named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// Note for the applicant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Note for staff and auditors (absent for others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_note: Option<String>,
    /// Outcome of a conclusion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The document added, or the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<String>,
    /// How the applicant side was told of this step: channel and time (staff also see
    /// unsent and failed messages, with the reason).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<super::messages::StepNotice>,
    /// Raw time (ms), for arithmetic.
    #[serde(skip)]
    pub at_ms: i64,
    /// Its id, to join its notices.
    #[serde(skip)]
    pub id: String,
}

/// Every event of a dossier, oldest first; `show_internal` keeps internal notes and the
/// events of internal documents.
pub async fn events(
    db: &Db,
    dossier: DossierId,
    show_internal: bool,
) -> Result<Vec<EventRecord>, DbError> {
    let rows = sqlx::query(
        "select e.id, e.at, e.kind, e.from_status, e.to_status, e.actor_role, e.actor_name, e.note, \
         e.internal_note, e.outcome, e.document_id, doc.visibility from dossier_event e \
         left join document doc on doc.id = e.document_id where e.dossier_id = $1 order by e.at, e.id",
    )
    .bind(dossier.to_string())
    .fetch_all(db.pool())
    .await?;
    let mut notices = super::messages::by_step(db, dossier, show_internal).await?;
    let mut out = Vec::new();
    for r in rows {
        let id: String = r.try_get("id")?;
        let visibility: Option<String> = r.try_get("visibility")?;
        if !show_internal && visibility.as_deref() == Some("internal") {
            continue;
        }
        let role: String = r.try_get("actor_role")?;
        let at: i64 = r.try_get("at")?;
        out.push(EventRecord {
            at: rfc3339(at),
            kind: r.try_get("kind")?,
            from: r.try_get("from_status")?,
            to: r.try_get("to_status")?,
            actor_name: (role == "staff" || show_internal)
                .then(|| r.try_get("actor_name"))
                .transpose()?,
            actor_role: role,
            note: r.try_get("note")?,
            internal_note: if show_internal {
                r.try_get("internal_note")?
            } else {
                None
            },
            outcome: r.try_get("outcome")?,
            document_id: r.try_get("document_id")?,
            notifications: notices.remove(&id).unwrap_or_default(),
            at_ms: at,
            id,
        });
    }
    Ok(out)
}

/// Time a dossier's legal clock has run and been suspended, in ms, from its transitions.
pub fn clock(events: &[EventRecord], now: i64) -> (i64, i64) {
    let mut running_since: Option<i64> = None;
    let mut suspended_since: Option<i64> = None;
    let (mut running, mut suspended) = (0i64, 0i64);
    for e in events.iter().filter(|e| e.kind == "transition") {
        if let Some(s) = running_since.take() {
            running += e.at_ms - s;
        }
        if let Some(s) = suspended_since.take() {
            suspended += e.at_ms - s;
        }
        match e.to.as_deref() {
            Some("started") => running_since = Some(e.at_ms),
            Some("awaiting_integration") => suspended_since = Some(e.at_ms),
            _ => {}
        }
    }
    if let Some(s) = running_since {
        running += now - s;
    }
    if let Some(s) = suspended_since {
        suspended += now - s;
    }
    (running, suspended)
}

/// An integration request with its items.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationRequest {
    /// Its id.
    pub id: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Still waiting for the applicant.
    pub open: bool,
    /// What is missing.
    pub items: Vec<IntegrationItem>,
}

/// One missing item.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationItem {
    /// Its number in the request, from 1.
    pub position: i32,
    /// What is missing.
    pub description: String,
    /// Whether a document was uploaded for it.
    pub satisfied: bool,
    /// The document uploaded for it.
    pub document_id: Option<String>,
}

/// The integration requests of a dossier, oldest first.
pub async fn integration_requests(
    db: &Db,
    dossier: DossierId,
) -> Result<Vec<IntegrationRequest>, DbError> {
    let requests = sqlx::query("select id, created_at, closed_at from integration_request where dossier_id = $1 order by id")
        .bind(dossier.to_string())
        .fetch_all(db.pool())
        .await?;
    let mut out = Vec::new();
    for r in requests {
        let id: String = r.try_get("id")?;
        let items = sqlx::query("select position, description, document_id from integration_item where request_id = $1 order by position")
            .bind(&id)
            .fetch_all(db.pool())
            .await?;
        out.push(IntegrationRequest {
            created_at: rfc3339(r.try_get("created_at")?),
            open: r.try_get::<Option<i64>, _>("closed_at")?.is_none(),
            items: items
                .iter()
                .map(|i| {
                    let document_id: Option<String> = i.try_get("document_id")?;
                    Ok(IntegrationItem {
                        position: i.try_get("position")?,
                        description: i.try_get("description")?,
                        satisfied: document_id.is_some(),
                        document_id,
                    })
                })
                .collect::<Result<_, DbError>>()?,
            id,
        });
    }
    Ok(out)
}

/// Marks an item of the dossier's open request as satisfied by a document; `false` if
/// there is no such open item.
pub async fn satisfy_item(
    db: &Db,
    dossier: DossierId,
    request: &str,
    position: i32,
    document: &str,
) -> Result<bool, DbError> {
    let result = sqlx::query(
        "update integration_item set document_id = $1 where request_id = $2 and position = $3 \
         and request_id in (select id from integration_request where dossier_id = $4 and closed_at is null)",
    )
    .bind(document.to_owned())
    .bind(request.to_owned())
    .bind(position)
    .bind(dossier.to_string())
    .execute(db.pool())
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Stores the applicant's rating; `false` if the dossier was rated already.
pub async fn rate(
    db: &Db,
    dossier: DossierId,
    user: UserId,
    score: i32,
    comment: Option<&str>,
    actor: &Actor,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "insert into rating (dossier_id, user_id, score, comment, created_at) values ($1, $2, $3, $4, $5) \
         on conflict (dossier_id) do nothing",
    )
    .bind(dossier.to_string())
    .bind(user.to_string())
    .bind(score)
    .bind(comment.map(str::to_owned))
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "dossier.rating",
            format!("dossier:{dossier}"),
            Some(dossier),
            "ok",
            serde_json::json!({"score": score}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Parses a stored status.
pub fn status_of(text: &str) -> Result<DossierStatus, DbError> {
    parse_stored(text, "status")
}

/// A procedure's legal deadline, in days.
pub async fn deadline_days(db: &Db, tenant: &str, procedure: &str) -> Result<i64, DbError> {
    let days: i32 = sqlx::query_scalar(
        "select deadline_days from procedure_kind where tenant = $1 and code = $2",
    )
    .bind(tenant.to_owned())
    .bind(procedure.to_owned())
    .fetch_one(db.pool())
    .await?;
    Ok(i64::from(days))
}

/// When a dossier was concluded, if it was.
pub async fn concluded_at(db: &Db, dossier: DossierId) -> Result<Option<i64>, DbError> {
    Ok(
        sqlx::query_scalar("select concluded_at from dossier where id = $1")
            .bind(dossier.to_string())
            .fetch_one(db.pool())
            .await?,
    )
}

/// Files a proposal or complaint with its audit record, in one transaction; returns its id.
pub async fn file_proposal(
    db: &Db,
    tenant: &str,
    user: UserId,
    kind: &str,
    text: &str,
    actor: &Actor,
) -> Result<String, DbError> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into proposal (id, tenant, user_id, kind, text, created_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(tenant.to_owned())
    .bind(user.to_string())
    .bind(kind.to_owned())
    .bind(text.to_owned())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "proposal.create",
            format!("proposal:{id}"),
            None,
            "ok",
            serde_json::json!({ "kind": kind }),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// A dossier as the statistics count it.
#[derive(Debug)]
pub struct StatRow {
    /// Its id.
    pub id: String,
    /// Its procedure's code.
    pub procedure: String,
    /// Its office.
    pub office: String,
    /// Its state.
    pub status: String,
    /// How it arrived.
    pub channel: String,
    /// Its applicant's rating, if any.
    pub score: Option<i32>,
}

/// The dossiers `caller` may read, for the statistics, and their transitions by dossier
/// (oldest first; only `at_ms` and `to` are filled).
pub async fn stats_rows(
    db: &Db,
    caller: &crate::access::Caller,
) -> Result<
    (
        Vec<StatRow>,
        std::collections::BTreeMap<String, Vec<EventRecord>>,
    ),
    DbError,
> {
    let scope = caller.scope(db).await?;
    let mut sql = super::Sql::new(
        "select d.id, d.procedure_code, d.office_code, d.status, d.channel, r.score \
         from dossier d left join rating r on r.dossier_id = d.id where ",
    );
    super::scope::push_dossiers(&mut sql, db.backend(), &scope);
    let rows = sql
        .query()
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(StatRow {
                id: r.try_get("id")?,
                procedure: r.try_get("procedure_code")?,
                office: r.try_get("office_code")?,
                status: r.try_get("status")?,
                channel: r.try_get("channel")?,
                score: r.try_get("score")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let mut sql = super::Sql::new(
        "select e.dossier_id, e.at, e.to_status from dossier_event e \
         join dossier d on d.id = e.dossier_id where e.kind = 'transition' and ",
    );
    super::scope::push_dossiers(&mut sql, db.backend(), &scope);
    sql.push(" order by e.at, e.id");
    let mut by_dossier: std::collections::BTreeMap<String, Vec<EventRecord>> =
        std::collections::BTreeMap::new();
    for e in sql.query().fetch_all(db.pool()).await? {
        by_dossier
            .entry(e.try_get("dossier_id")?)
            .or_default()
            .push(EventRecord {
                at: String::new(),
                kind: "transition".into(),
                from: None,
                to: e.try_get("to_status")?,
                actor_role: String::new(),
                actor_name: None,
                note: None,
                internal_note: None,
                outcome: None,
                document_id: None,
                notifications: Vec::new(),
                at_ms: e.try_get("at")?,
                id: String::new(),
            });
    }
    Ok((rows, by_dossier))
}
