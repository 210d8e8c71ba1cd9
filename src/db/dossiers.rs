//! Dossiers: creation with a per-year number, and permission-filtered reads.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, DbError, Sql, now_ms, parse_stored};
use crate::access::Caller;
use crate::domain::{Channel, CodiceFiscale, DossierId, DossierStatus, Procedure, dossier_number};

/// A dossier as stored.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DossierRecord {
    /// Its id.
    #[schema(value_type = String)]
    pub id: DossierId,
    /// Human number, `YYYY/NNNNNN`.
    #[schema(example = "2026/000123")]
    pub number: String,
    /// Procedure code.
    pub procedure: String,
    /// The office handling it.
    pub office: String,
    /// The applicant's codice fiscale.
    pub applicant_cf: String,
    /// The applicant's name, when the desk wrote it down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applicant_name: Option<String>,
    /// What it is about.
    pub subject: String,
    /// Where it stands.
    pub status: DossierStatus,
    /// How it was filed.
    pub channel: Channel,
    /// When it was opened (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

impl DossierRecord {
    /// What write decisions about it depend on.
    pub fn facts(&self) -> crate::access::DossierFacts<'_> {
        crate::access::DossierFacts {
            office: &self.office,
            applicant_cf: &self.applicant_cf,
            status: self.status,
        }
    }
}

/// Renders stored milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

const COLUMNS: &str = "d.id, d.number, d.procedure_code, d.office_code, d.applicant_cf, \
                       d.applicant_name, d.subject, d.status, d.channel, d.created_at, d.updated_at";

fn from_row(row: &AnyRow) -> Result<DossierRecord, DbError> {
    let id: String = row.try_get("id")?;
    Ok(DossierRecord {
        id: DossierId::parse(&id).ok_or_else(|| DbError::Corrupt(format!("dossier id {id:?}")))?,
        number: row.try_get("number")?,
        procedure: row.try_get("procedure_code")?,
        office: row.try_get("office_code")?,
        applicant_cf: row.try_get("applicant_cf")?,
        applicant_name: row.try_get("applicant_name")?,
        subject: row.try_get("subject")?,
        status: parse_stored(&row.try_get::<String, _>("status")?, "status")?,
        channel: parse_stored(&row.try_get::<String, _>("channel")?, "channel")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// What is needed to open a dossier; permission was checked by the caller.
pub struct NewDossier<'a> {
    /// The municipality.
    pub tenant: &'a str,
    /// Its procedure.
    pub procedure: &'a Procedure,
    /// The applicant.
    pub applicant: &'a CodiceFiscale,
    /// Subject line.
    pub subject: &'a str,
    /// How it arrives.
    pub channel: Channel,
    /// Who files it.
    pub created_by: crate::domain::UserId,
    /// How its receipt is delivered.
    pub delivery: super::notices::Delivery<'a>,
    /// Opened as a draft, which its applicant files later (`draft` → `submitted`).
    pub draft: bool,
    /// The applicant's name, when the front office files for someone at the desk.
    pub applicant_name: Option<&'a str>,
}

/// Opens a dossier, numbering it in its year's sequence, and logs the change.
pub async fn create(
    db: &Db,
    new: NewDossier<'_>,
    actor: &crate::audit::Actor,
) -> Result<DossierRecord, DbError> {
    let now = now_ms();
    // Dossier numbers follow the municipality's calendar year.
    let year = jiff::Timestamp::from_millisecond(now)
        .map(|t| {
            t.in_tz("Europe/Rome")
                .map(|z| z.year())
                .unwrap_or_else(|_| t.to_zoned(jiff::tz::TimeZone::UTC).year())
        })
        .map_err(|e| DbError::Corrupt(e.to_string()))? as i32;
    let id = DossierId::new();
    let mut tx = db.begin_write().await?;
    let seq: i64 = sqlx::query_scalar(
        "insert into dossier_sequence (tenant, year, last_value) values ($1, $2, 1) \
         on conflict (tenant, year) do update set last_value = dossier_sequence.last_value + 1 \
         returning last_value",
    )
    .bind(new.tenant)
    .bind(year)
    .fetch_one(&mut *tx)
    .await?;
    let number = dossier_number(year, seq);
    let status = if new.draft {
        DossierStatus::Draft
    } else {
        DossierStatus::Submitted
    };
    sqlx::query(
        "insert into dossier (id, tenant, year, seq, number, procedure_code, office_code, \
         applicant_cf, subject, status, channel, created_by, created_at, updated_at, \
         applicant_name) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(id.to_string())
    .bind(new.tenant)
    .bind(year)
    .bind(seq)
    .bind(&number)
    .bind(new.procedure.code.as_str())
    .bind(new.procedure.office.as_str())
    .bind(new.applicant.as_str())
    .bind(new.subject)
    .bind(status.as_str())
    .bind(new.channel.as_str())
    .bind(new.created_by.to_string())
    .bind(now)
    .bind(now)
    .bind(new.applicant_name)
    .execute(&mut *tx)
    .await?;
    log_change(&mut tx, new.tenant, "dossier", &id.to_string(), "create").await?;
    let step = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "insert into dossier_event (id, dossier_id, at, kind, to_status, actor_id, actor_role, \
         actor_name) select $1, $2, $3, 'transition', $4, id, role, name from app_user where id = $5",
    )
    .bind(&step)
    .bind(id.to_string())
    .bind(now)
    .bind(status.as_str())
    .bind(new.created_by.to_string())
    .execute(&mut *tx)
    .await?;
    // A draft tells nobody anything yet: its receipt goes out when it is filed.
    if !new.draft {
        super::notices::enqueue(
            &mut tx,
            &super::notices::Notice {
                tenant: new.tenant,
                dossier: id,
                step: Some(&step),
                event: super::notices::Event::DossierSubmitted,
                values: serde_json::json!({"channel": new.channel.as_str()}),
                professional_cf: None,
                delivery: new.delivery,
            },
        )
        .await?;
    }
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "dossier.create",
            format!("dossier:{id}"),
            Some(id),
            "ok",
            serde_json::json!({"number": number, "procedure": new.procedure.code.as_str(), "channel": new.channel.as_str(), "draft": new.draft}),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(DossierRecord {
        id,
        number,
        procedure: new.procedure.code.to_string(),
        office: new.procedure.office.to_string(),
        applicant_cf: new.applicant.to_string(),
        applicant_name: new.applicant_name.map(str::to_owned),
        subject: new.subject.to_owned(),
        status,
        channel: new.channel,
        created_at: rfc3339(now),
        updated_at: rfc3339(now),
    })
}

/// Appends to the change log, inside the transaction making the change.
pub async fn log_change(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    entity: &str,
    entity_id: &str,
    op: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into change_log (tenant, entity, entity_id, op, created_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(entity)
    .bind(entity_id)
    .bind(op)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The dossier, if it exists and the caller may see it.
pub async fn get(
    db: &Db,
    caller: &Caller,
    id: DossierId,
) -> Result<Option<DossierRecord>, DbError> {
    let mut sql = Sql::new(&format!("select {COLUMNS} from dossier d where d.id = "));
    sql.bind(id.to_string()).push(" and ");
    super::scope::push_dossiers(&mut sql, db.backend(), &caller.scope(db).await?);
    let row = sql.query().fetch_optional(db.pool()).await?;
    row.as_ref().map(from_row).transpose()
}

/// Filters for a dossier listing.
#[derive(Default, Debug)]
pub struct ListFilter {
    /// Only dossiers in this state.
    pub status: Option<DossierStatus>,
    /// Only dossiers of this procedure.
    pub procedure: Option<String>,
    /// Only dossiers opened before this one (the paging cursor).
    pub before: Option<DossierId>,
}

/// Dossiers the caller may see, newest first, at most `limit`, and whether more follow.
pub async fn list(
    db: &Db,
    caller: &Caller,
    filter: &ListFilter,
    limit: u32,
) -> Result<(Vec<DossierRecord>, bool), DbError> {
    let mut sql = Sql::new(&format!("select {COLUMNS} from dossier d where "));
    super::scope::push_dossiers(&mut sql, db.backend(), &caller.scope(db).await?);
    if let Some(status) = filter.status {
        sql.push(" and d.status = ")
            .bind(status.as_str().to_owned());
    }
    if let Some(procedure) = &filter.procedure {
        sql.push(" and d.procedure_code = ").bind(procedure.clone());
    }
    if let Some(before) = filter.before {
        // Ids are UUIDv7, so their text order is creation order.
        sql.push(" and d.id < ").bind(before.to_string());
    }
    sql.push(" order by d.id desc limit ")
        .bind(i64::from(limit) + 1);
    let rows = sql.query().fetch_all(db.pool()).await?;
    let more = rows.len() > limit as usize;
    let records = rows
        .iter()
        .take(limit as usize)
        .map(from_row)
        .collect::<Result<_, _>>()?;
    Ok((records, more))
}
