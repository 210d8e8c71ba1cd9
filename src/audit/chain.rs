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

/// A row's columns as the table holds them (text), which is what its hash covers.
struct RowText<'a> {
    tenant: &'a str,
    actor_id: Option<&'a str>,
    actor_role: Option<&'a str>,
    action: &'a str,
    target: &'a str,
    dossier_id: Option<&'a str>,
    outcome: &'a str,
    client_address: Option<&'a str>,
}

fn canonical(seq: i64, at: i64, r: &RowText<'_>, detail: &str) -> String {
    // A JSON array has one serialisation for given values: the canonical form. Serialised
    // from a tuple of references: the same text as a `serde_json::Value` array, without
    // copying every field into one first (the mover does this for every event it moves).
    let row = (
        seq,
        at,
        r.tenant,
        r.actor_id,
        r.actor_role,
        r.action,
        r.target,
        r.dossier_id,
        r.outcome,
        r.client_address,
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
            let actor_id = e.actor_id.map(|id| id.to_string());
            let dossier_id = e.dossier_id.map(|id| id.to_string());
            let text = RowText {
                tenant: &e.tenant,
                actor_id: actor_id.as_deref(),
                actor_role: e.actor_role.as_deref(),
                action: &e.action,
                target: &e.target,
                dossier_id: dossier_id.as_deref(),
                outcome: &e.outcome,
                client_address: e.client_address.as_deref(),
            };
            let hash = chain_hash(&prev, &canonical(seq, at, &text, &detail));
            row.value(seq)
                .value(at)
                .value(e.tenant.clone())
                .value(actor_id)
                .value(e.actor_role.clone())
                .value(e.action.clone())
                .value(e.target.clone())
                .value(dossier_id)
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
        let column = |name: &str| row.try_get::<Option<String>, _>(name);
        let (tenant, actor_id, actor_role, action) = (
            column("tenant")?.unwrap_or_default(),
            column("actor_id")?,
            column("actor_role")?,
            column("action")?.unwrap_or_default(),
        );
        let (target, dossier_id, outcome, client_address) = (
            column("target")?.unwrap_or_default(),
            column("dossier_id")?,
            column("outcome")?.unwrap_or_default(),
            column("client_address")?,
        );
        let text = RowText {
            tenant: &tenant,
            actor_id: actor_id.as_deref(),
            actor_role: actor_role.as_deref(),
            action: &action,
            target: &target,
            dossier_id: dossier_id.as_deref(),
            outcome: &outcome,
            client_address: client_address.as_deref(),
        };
        let at: i64 = row.try_get("at")?;
        let hash: String = row.try_get("hash")?;
        if chain_hash(&prev, &canonical(seq, at, &text, &detail)) != hash {
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
            let some = |s: &'static str| (i % 2 == 0).then_some(s);
            let (action, target) = (format!("{text}.read"), format!("document:{text}"));
            let event = RowText {
                tenant: text,
                actor_id: some(text),
                actor_role: some("staff"),
                action: &action,
                target: &target,
                dossier_id: some(text),
                outcome: text,
                client_address: (i % 3 == 0).then_some("::1"),
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
