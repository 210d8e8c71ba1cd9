//! Which searches and listings disclosed which dossiers, for dossier histories.
//!
//! A search's audit event names the documents whose text it returned and their dossiers
//! (`detail.disclosed`), and a dossier listing the dossiers it showed. `audit_disclosure`
//! indexes those events by dossier. It is derived from the trail, like the search index from
//! the database: one task per node follows the trail from a stored position and writes the
//! index in the background, in small batches taking at most a tenth of a core, so that the
//! random inserts of a busy hour never sit on a request's path (measured: ten such inserts per
//! search, written with the search's own trail row, cost a fifth of the searches per second
//! under load). A history reads the index for what it has covered and the events after its
//! position directly, so it is complete however far the index lags.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::Notify;

use super::{Db, DbError};

/// Events read per batch.
const BATCH: i64 = 500;
/// While catching up, the pause after a batch is this many times what the batch took: the
/// index takes at most a tenth of one core from the requests that fill the trail, and catches
/// up when they let it.
const PAUSE_PER_WORK: u32 = 9;
/// The shortest pause between batches.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);
/// How often the trail is looked at once caught up.
const POLL: Duration = Duration::from_secs(1);
/// Actions whose events disclose dossiers.
const DISCLOSING: &str = "('search', 'dossiers.list')";

/// The dossiers `detail` says were disclosed, without repeats.
pub fn disclosed_dossiers(detail: &serde_json::Value) -> Vec<String> {
    let mut dossiers: Vec<String> = detail
        .get("disclosed")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .filter_map(|hit| hit.get("dossier")?.as_str().map(str::to_owned))
        .collect();
    dossiers.sort_unstable();
    dossiers.dedup();
    dossiers
}

/// The position the index has covered: events up to it are indexed.
pub async fn position(db: &Db) -> Result<i64, DbError> {
    let seq: Option<i64> =
        sqlx::query_scalar("select seq from audit_disclosure_position where singleton = 1")
            .fetch_optional(db.pool())
            .await?;
    Ok(seq.unwrap_or(0))
}

/// Indexes the next batch of disclosing events after the stored position; returns how many
/// events it read.
pub async fn index_next(db: &Db) -> Result<usize, DbError> {
    let from = position(db).await?;
    let rows = sqlx::query(
        "select seq, action, detail from audit_event where seq > $1 order by seq limit $2",
    )
    .bind(from)
    .bind(BATCH)
    .fetch_all(db.pool())
    .await?;
    let Some(last) = rows.last() else {
        return Ok(0);
    };
    let last: i64 = last.try_get("seq")?;
    let mut pairs: Vec<(i64, String)> = Vec::new();
    for row in &rows {
        let action: String = row.try_get("action")?;
        if action != "search" && action != "dossiers.list" {
            continue;
        }
        let seq: i64 = row.try_get("seq")?;
        let detail: String = row.try_get("detail")?;
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
        pairs.extend(disclosed_dossiers(&detail).into_iter().map(|d| (seq, d)));
    }
    let mut tx = db.begin_write().await?;
    if !pairs.is_empty() {
        super::insert_rows(
            &mut tx,
            db.backend(),
            (
                "insert into audit_disclosure (seq, dossier_id) values ",
                " on conflict do nothing",
            ),
            &pairs,
            |row, (seq, dossier)| {
                row.value(*seq).value(dossier.clone());
            },
        )
        .await?;
    }
    // Another node may have moved the position meanwhile: the rows are the same either way.
    sqlx::query("update audit_disclosure_position set seq = $1 where singleton = 1 and seq < $1")
        .bind(last)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// Follows the trail until `stop` is notified.
pub async fn run(db: Db, stop: Arc<Notify>) {
    loop {
        let started = std::time::Instant::now();
        let pause = match index_next(&db).await {
            Ok(n) if n as i64 >= BATCH => (started.elapsed() * PAUSE_PER_WORK).max(BETWEEN_BATCHES),
            Ok(_) => POLL,
            Err(e) => {
                tracing::warn!(error = %e, "indexing disclosures failed; retrying");
                POLL
            }
        };
        tokio::select! {
            () = stop.notified() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The `where` clause (without `where`) of the events in a dossier's history: its own, the
/// indexed disclosures, and the disclosing events after the index's position whose detail
/// names it. Binds: `$1` the dossier id, `$2` the position, `$3` the dossier id quoted as
/// JSON text for a `like` pattern.
pub fn history_clause() -> String {
    format!(
        "dossier_id = $1 or seq in (select seq from audit_disclosure where dossier_id = $1) \
         or (seq > $2 and action in {DISCLOSING} and detail like $3)"
    )
}

/// The `like` pattern for a dossier id inside a detail's JSON.
pub fn detail_pattern(dossier: &str) -> String {
    format!("%\"{dossier}\"%")
}

/// One row of a dossier's access history.
#[derive(Clone, Debug)]
pub struct AccessRow {
    /// Position in the audit chain.
    pub seq: i64,
    /// When (ms).
    pub at: i64,
    /// Who.
    pub actor_id: Option<String>,
    /// Their role.
    pub actor_role: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Outcome.
    pub outcome: String,
    /// From where.
    pub client_address: Option<String>,
}

/// Every event of the trail about a dossier, in chain order: reads of it and its documents,
/// searches and listings that disclosed it (as far as the disclosure index has `covered`),
/// and changes.
pub async fn dossier_accesses(
    db: &Db,
    dossier: &str,
    covered: i64,
) -> Result<Vec<AccessRow>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select seq, at, actor_id, actor_role, action, target, outcome, client_address \
         from audit_event where {} order by seq",
        history_clause()
    )))
    .bind(dossier.to_owned())
    .bind(covered)
    .bind(detail_pattern(dossier))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AccessRow {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                actor_id: r.try_get("actor_id")?,
                actor_role: r.try_get("actor_role")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                outcome: r.try_get("outcome")?,
                client_address: r.try_get("client_address")?,
            })
        })
        .collect()
}
