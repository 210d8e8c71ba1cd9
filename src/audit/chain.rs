//! The hash chain of the `audit_event` table: appending rows, its head, and verifying it.
//!
//! Each row's hash covers its canonical content and the previous row's hash, so editing,
//! deleting or reordering rows breaks the chain at that row.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::AuditEvent;
use crate::db::{Backend, Db, DbError, now_ms};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Advisory-lock key serialising appends to the chain on PostgreSQL (SQLite writers are
/// serial already).
const CHAIN_LOCK: i64 = 0x6175_6469_7400;

fn canonical(seq: i64, at: i64, e: &AuditEvent, detail: &str) -> String {
    // A JSON array has one serialisation for given values: the canonical form. Serialised
    // from a tuple of references: the same text as a `serde_json::Value` array, without
    // copying every field into one first (the mover does this for every event it moves).
    let row = (
        seq,
        at,
        &e.tenant,
        &e.actor_id,
        &e.actor_role,
        &e.action,
        &e.target,
        &e.dossier_id,
        &e.outcome,
        &e.client_address,
        detail,
    );
    serde_json::to_string(&row).expect("integers and strings always serialise")
}

fn chain_hash(prev: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Appends events inside the caller's write transaction.
pub async fn append_in_tx(
    db: &Db,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    events: &[AuditEvent],
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    if db.backend() == Backend::Postgres {
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let last = sqlx::query("select seq, hash from audit_event order by seq desc limit 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (mut seq, mut prev) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")?,
            row.try_get::<String, _>("hash")?,
        ),
        None => (0, GENESIS.to_owned()),
    };
    let at = now_ms();
    crate::db::insert_rows(
        tx,
        db.backend(),
        (
            "insert into audit_event (seq, at, tenant, actor_id, actor_role, action, target, \
             dossier_id, outcome, client_address, detail, prev_hash, hash) values ",
            "",
        ),
        events,
        |row, e| {
            seq += 1;
            let at = e.at.unwrap_or(at);
            let detail = e.detail.to_string();
            let hash = chain_hash(&prev, &canonical(seq, at, e, &detail));
            row.value(seq)
                .value(at)
                .value(e.tenant.clone())
                .value(e.actor_id.clone())
                .value(e.actor_role.clone())
                .value(e.action.clone())
                .value(e.target.clone())
                .value(e.dossier_id.clone())
                .value(e.outcome.clone())
                .value(e.client_address.clone())
                .value(detail)
                .value(std::mem::replace(&mut prev, hash.clone()))
                .value(hash);
        },
    )
    .await?;
    Ok(())
}

/// The newest row of the chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Head {
    /// Its position.
    pub seq: i64,
    /// Its hash: anchor it outside the system.
    pub hash: String,
    /// When it was written (RFC 3339).
    pub at: Option<String>,
}

/// The newest row, or the genesis hash for an empty trail.
pub async fn head(db: &Db) -> Result<Head, DbError> {
    let row = sqlx::query("select seq, hash, at from audit_event order by seq desc limit 1")
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Head {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            at: Some(crate::db::dossiers::rfc3339(r.try_get("at")?)),
        },
        None => Head {
            seq: 0,
            hash: GENESIS.to_owned(),
            at: None,
        },
    })
}

/// What a verification of the chain found.
#[derive(Debug, Serialize)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The first row that breaks the chain, and why.
    pub first_broken: Option<Broken>,
}

/// A row that breaks the chain.
#[derive(Debug, Serialize)]
pub struct Broken {
    /// Its position (or the position missing).
    pub seq: i64,
    /// What is wrong.
    pub reason: String,
}

/// Re-computes the whole chain from the first row.
pub async fn verify(db: &Db) -> Result<ChainReport, DbError> {
    use futures_util::TryStreamExt;
    let mut rows = sqlx::query(
        "select seq, at, tenant, actor_id, actor_role, action, target, dossier_id, outcome, \
         client_address, detail, prev_hash, hash from audit_event order by seq",
    )
    .fetch(db.pool());
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut count = 0u64;
    while let Some(row) = rows.try_next().await? {
        count += 1;
        let seq: i64 = row.try_get("seq")?;
        let broken = |reason: String| {
            Ok(ChainReport {
                rows: count,
                first_broken: Some(Broken { seq, reason }),
            })
        };
        if seq != expected_seq {
            return Ok(ChainReport {
                rows: count,
                first_broken: Some(Broken {
                    seq: expected_seq,
                    reason: format!("row {expected_seq} is missing (next row is {seq})"),
                }),
            });
        }
        let prev_hash: String = row.try_get("prev_hash")?;
        if prev_hash != prev {
            return broken("its previous hash does not match the row before it".into());
        }
        let detail: String = row.try_get("detail")?;
        let event = AuditEvent {
            at: None,
            tenant: row.try_get("tenant")?,
            actor_id: row.try_get("actor_id")?,
            actor_role: row.try_get("actor_role")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            dossier_id: row.try_get("dossier_id")?,
            outcome: row.try_get("outcome")?,
            client_address: row.try_get("client_address")?,
            detail: serde_json::Value::Null,
        };
        let at: i64 = row.try_get("at")?;
        let hash: String = row.try_get("hash")?;
        if chain_hash(&prev, &canonical(seq, at, &event, &detail)) != hash {
            return broken("its content does not match its hash".into());
        }
        prev = hash;
        expected_seq += 1;
    }
    Ok(ChainReport {
        rows: count,
        first_broken: None,
    })
}

/// A verification of the chain, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// When it ran (RFC 3339).
    pub at: String,
    /// Who asked for it (an auditor's id; none for the command line).
    pub user_id: Option<String>,
    /// Rows checked.
    pub checked: i64,
    /// The first row that breaks the chain, if one does.
    pub broken_seq: Option<i64>,
    /// Why it breaks it.
    pub reason: Option<String>,
    /// The newest row when it ran.
    pub head_seq: i64,
    /// Its hash.
    pub head_hash: String,
}

/// Verifies the whole chain and records what was found.
pub async fn verify_and_record(
    db: &Db,
    by: Option<crate::domain::UserId>,
) -> Result<(ChainReport, Head), DbError> {
    let head = head(db).await?;
    let report = verify(db).await?;
    sqlx::query(
        "insert into audit_verification (id, at, user_id, checked, broken_seq, reason, head_seq, \
         head_hash) values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(crate::db::now_ms())
    .bind(by.map(|u| u.to_string()))
    .bind(i64::try_from(report.rows).unwrap_or(i64::MAX))
    .bind(report.first_broken.as_ref().map(|b| b.seq))
    .bind(report.first_broken.as_ref().map(|b| b.reason.clone()))
    .bind(head.seq)
    .bind(&head.hash)
    .execute(db.write_pool())
    .await?;
    Ok((report, head))
}

/// The newest recorded verification of the chain.
pub async fn last_verification(db: &Db) -> Result<Option<Verification>, DbError> {
    let row = sqlx::query(
        "select at, user_id, checked, broken_seq, reason, head_seq, head_hash \
         from audit_verification order by at desc limit 1",
    )
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(Verification {
            at: crate::db::dossiers::rfc3339(r.try_get("at")?),
            user_id: r.try_get("user_id")?,
            checked: r.try_get("checked")?,
            broken_seq: r.try_get("broken_seq")?,
            reason: r.try_get("reason")?,
            head_seq: r.try_get("head_seq")?,
            head_hash: r.try_get("head_hash")?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows chained by earlier versions, which built the canonical form as a JSON value,
    /// must hash alike: the text is compared with that construction, over escapes, non-ASCII
    /// text, absent fields and extreme numbers.
    #[test]
    fn the_canonical_form_is_the_json_array_of_the_fields() {
        let tricky = [
            "plain",
            "",
            "quote \" backslash \\ slash /",
            "controls \u{0}\u{1f}\n\t\r",
            "accenti àèéìòù, “virgolette” e € \u{1F600}",
            "\u{7f}\u{2028}\u{2029}",
        ];
        for (i, text) in tricky.iter().enumerate() {
            let some = |s: &str| (i % 2 == 0).then(|| s.to_owned());
            let event = AuditEvent {
                at: None,
                tenant: text.to_string(),
                actor_id: some(text),
                actor_role: some("staff"),
                action: format!("{text}.read"),
                target: format!("document:{text}"),
                dossier_id: some(text),
                outcome: text.to_string(),
                client_address: (i % 3 == 0).then(|| "::1".to_owned()),
                detail: serde_json::Value::Null,
            };
            let detail = serde_json::json!({ "query": text, "total": i }).to_string();
            for (seq, at) in [(1, 0), (i64::MAX, i64::MIN), (42, -1)] {
                let before = serde_json::json!([
                    seq,
                    at,
                    event.tenant,
                    event.actor_id,
                    event.actor_role,
                    event.action,
                    event.target,
                    event.dossier_id,
                    event.outcome,
                    event.client_address,
                    detail
                ])
                .to_string();
                assert_eq!(canonical(seq, at, &event, &detail), before, "{text:?}");
            }
        }
    }
}
