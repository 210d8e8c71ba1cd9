//! Delegations: a professional's access to a client's dossier.

use serde::Serialize;
use sqlx::Row;

use super::dossiers::{log_change, rfc3339};
use super::{Db, DbError, now_ms};
use crate::domain::{CodiceFiscale, DossierId, UserId};

/// A delegation as shown over the API.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DelegationRecord {
    /// The professional's codice fiscale.
    pub professional_cf: String,
    /// When it was granted (RFC 3339).
    pub created_at: String,
    /// When it lapses (RFC 3339), if ever.
    pub until: Option<String>,
    /// When it was revoked (RFC 3339), if so.
    pub revoked_at: Option<String>,
}

/// Grants (or renews) a delegation, in one transaction with the change log and its notices.
#[expect(
    clippy::too_many_arguments,
    reason = "the delegation's columns, who acts, and how the notices go"
)]
pub async fn grant(
    db: &Db,
    tenant: &str,
    dossier: DossierId,
    professional: &CodiceFiscale,
    until_ms: Option<i64>,
    granted_by: UserId,
    actor: &crate::audit::Actor,
    delivery: super::notices::Delivery<'_>,
) -> Result<DelegationRecord, DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "insert into delegation (dossier_id, professional_cf, granted_by, created_at, valid_until) \
         values ($1, $2, $3, $4, $5) on conflict (dossier_id, professional_cf) do update set \
         granted_by = excluded.granted_by, created_at = excluded.created_at, \
         valid_until = excluded.valid_until, revoked_at = null",
    )
    .bind(dossier.to_string())
    .bind(professional.as_str())
    .bind(granted_by.to_string())
    .bind(now)
    .bind(until_ms)
    .execute(&mut *tx)
    .await?;
    log_change(
        &mut tx,
        tenant,
        "dossier",
        &dossier.to_string(),
        "delegation",
    )
    .await?;
    super::notices::enqueue(
        &mut tx,
        &super::notices::Notice {
            tenant,
            dossier,
            step: None,
            event: super::notices::Event::DelegationGranted,
            values: serde_json::json!({"professional_cf": professional.as_str(), "until": until_ms.map(super::notices::italian_day)}),
            professional_cf: Some(professional.as_str()),
            delivery,
        },
    )
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "delegation.grant",
            format!("dossier:{dossier}"),
            Some(dossier),
            "ok",
            serde_json::json!({"professional_cf": professional.as_str(), "until": until_ms}),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(DelegationRecord {
        professional_cf: professional.to_string(),
        created_at: rfc3339(now),
        until: until_ms.map(rfc3339),
        revoked_at: None,
    })
}

/// Revokes an active delegation; `false` if there was none. Effective at commit: every
/// request that starts afterwards reads it.
pub async fn revoke(
    db: &Db,
    tenant: &str,
    dossier: DossierId,
    professional: &CodiceFiscale,
    actor: &crate::audit::Actor,
    delivery: super::notices::Delivery<'_>,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let result = sqlx::query(
        "update delegation set revoked_at = $1 where dossier_id = $2 and professional_cf = $3 \
         and revoked_at is null",
    )
    .bind(now_ms())
    .bind(dossier.to_string())
    .bind(professional.as_str())
    .execute(&mut *tx)
    .await?;
    if result.rows_affected() == 0 {
        return Ok(false);
    }
    log_change(
        &mut tx,
        tenant,
        "dossier",
        &dossier.to_string(),
        "delegation",
    )
    .await?;
    super::notices::enqueue(
        &mut tx,
        &super::notices::Notice {
            tenant,
            dossier,
            step: None,
            event: super::notices::Event::DelegationRevoked,
            values: serde_json::json!({"professional_cf": professional.as_str()}),
            professional_cf: Some(professional.as_str()),
            delivery,
        },
    )
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "delegation.revoke",
            format!("dossier:{dossier}"),
            Some(dossier),
            "ok",
            serde_json::json!({"professional_cf": professional.as_str()}),
        )],
    )
    .await?;
    tx.commit().await?;
    db.access_changed();
    Ok(true)
}

/// Every delegation of a dossier, active or not.
pub async fn list(db: &Db, dossier: DossierId) -> Result<Vec<DelegationRecord>, DbError> {
    let rows = sqlx::query(
        "select professional_cf, created_at, valid_until, revoked_at from delegation \
         where dossier_id = $1 order by professional_cf",
    )
    .bind(dossier.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DelegationRecord {
                professional_cf: r.try_get("professional_cf")?,
                created_at: rfc3339(r.try_get("created_at")?),
                until: r.try_get::<Option<i64>, _>("valid_until")?.map(rfc3339),
                revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(rfc3339),
            })
        })
        .collect()
}

/// The dossiers a citizen or professional takes part in, sorted and without repeats, and the
/// first end of validity among the delegations behind them: the dossiers filed under `cf`
/// (only those `created_by` started, when given: an unproven account's), and with
/// `delegated`, those delegated to `cf` and in force. Written as a union so each half uses its
/// index instead of scanning the tenant's dossiers.
pub async fn member_dossiers(
    db: &Db,
    tenant: &str,
    cf: &str,
    created_by: Option<crate::domain::UserId>,
    delegated: bool,
) -> Result<(Vec<crate::domain::DossierId>, Option<i64>), DbError> {
    // One row with the ids joined: a busy professional has hundreds of dossiers, and each
    // row of a result is a hand-off from the connection's thread (dossier ids never hold
    // a comma).
    let joined = match db.backend() {
        super::Backend::Sqlite => "group_concat(id, ',')",
        super::Backend::Postgres => "string_agg(id, ',')",
    };
    let mut sql = super::Sql::new(&format!(
        "select {joined} as ids, min(until) as until from (select d.id as id, \
         cast(null as bigint) as until from dossier d where d.tenant = "
    ));
    sql.bind(tenant.to_owned())
        .push(" and d.applicant_cf = ")
        .bind(cf.to_owned());
    if let Some(user) = created_by {
        sql.push(" and d.created_by = ").bind(user.to_string());
    } else if delegated {
        // Dossier ids are unique across tenants, and every rendering of the scope ANDs the
        // tenant: this half reads the professional's delegations through their index, and
        // each dossier by its key only to leave drafts out (a draft is its applicant's alone).
        // `union all`: the ids are sorted and deduplicated below anyway.
        sql.push(
            " union all select g.dossier_id as id, g.valid_until as until from delegation g \
             join dossier dd on dd.id = g.dossier_id and dd.status <> 'draft' \
             where g.professional_cf = ",
        )
        .bind(cf.to_owned())
        .push(" and g.revoked_at is null and (g.valid_until is null or g.valid_until > ")
        .bind(now_ms())
        .push(")");
    }
    sql.push(") member");
    let row = sql.query().fetch_one(db.pool()).await?;
    let joined: Option<String> = row.try_get("ids")?;
    let valid_until: Option<i64> = row.try_get("until")?;
    let mut ids = joined
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| {
            crate::domain::DossierId::parse(id)
                .ok_or_else(|| DbError::Corrupt(format!("dossier id {id:?}")))
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    ids.sort();
    ids.dedup();
    Ok((ids, valid_until))
}
