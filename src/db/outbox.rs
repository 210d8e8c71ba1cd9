//! The notification outbox: messages written in the same transaction as the change that
//! causes them, claimed by senders with a lease, and marked sent, retried or failed.
//!
//! No transaction stays open across a send: a claim is one short statement that marks due
//! messages taken until a deadline (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several nodes
//! claim disjoint messages; SQLite has one writer at a time), and the outcome is another. A
//! lease that runs out (a sender that died mid-send) returns its message to the queue: it may
//! be sent again, never lost, and its idempotency key lets the receiver drop the repeat.

use sqlx::Row;

use super::{Backend, Db, DbError, now_ms};

/// A message claimed for sending.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Its id, also its idempotency key.
    pub id: String,
    /// The municipality.
    pub tenant: String,
    /// `email` or `sms`.
    pub channel: String,
    /// Address or number.
    pub recipient: String,
    /// Template name.
    pub template: String,
    /// The template's values.
    pub payload: serde_json::Value,
    /// This is attempt number…, from 1.
    pub attempt: i32,
}

/// Claims up to `limit` due messages of `channel` for `lease_ms`, as `node`.
pub async fn claim(
    db: &Db,
    node: &str,
    channel: &str,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<Claimed>, DbError> {
    let now = now_ms();
    // The statement is one of two constant texts, so each is prepared once per connection.
    let sql = match db.backend() {
        Backend::Postgres => concat!(
            "update notification_outbox set lease_until = $1, leased_by = $2, ",
            "attempts = attempts + 1 where id in (select id from notification_outbox ",
            "where status = 'pending' and channel = $5 and coalesce(next_attempt_at, 0) <= $3 ",
            "and coalesce(lease_until, 0) < $3 order by created_at limit $4 ",
            "for update skip locked) ",
            "returning id, tenant, channel, recipient, template, payload, attempts"
        ),
        Backend::Sqlite => concat!(
            "update notification_outbox set lease_until = $1, leased_by = $2, ",
            "attempts = attempts + 1 where id in (select id from notification_outbox ",
            "where status = 'pending' and channel = $5 and coalesce(next_attempt_at, 0) <= $3 ",
            "and coalesce(lease_until, 0) < $3 order by created_at limit $4) ",
            "returning id, tenant, channel, recipient, template, payload, attempts"
        ),
    };
    let rows = sqlx::query(sql)
        .bind(now + lease_ms)
        .bind(node)
        .bind(now)
        .bind(limit)
        .bind(channel)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let payload: String = r.try_get("payload")?;
            Ok(Claimed {
                id: r.try_get("id")?,
                tenant: r.try_get("tenant")?,
                channel: r.try_get("channel")?,
                recipient: r.try_get("recipient")?,
                template: r.try_get("template")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| DbError::Corrupt(format!("outbox payload: {e}")))?,
                attempt: r.try_get("attempts")?,
            })
        })
        .collect()
}

/// What became of a claimed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Sent,
    /// Back to the queue until this time (ms), with the reason.
    Retry(i64, String),
    /// Given up, with the reason.
    Failed(String),
}

/// Records the outcomes of messages this node still holds, in one transaction: a batch's
/// sends finish together, and one commit (one flush) records them all.
pub async fn record(db: &Db, node: &str, outcomes: &[(String, Outcome)]) -> Result<(), DbError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    for (id, outcome) in outcomes {
        let query = match outcome {
            Outcome::Sent => sqlx::query(
                "update notification_outbox set status = 'sent', sent_at = $1, lease_until = null, \
                 last_error = null where id = $2 and leased_by = $3",
            )
            .bind(now)
            .bind(id)
            .bind(node),
            Outcome::Retry(at, error) => sqlx::query(
                "update notification_outbox set next_attempt_at = $1, lease_until = null, \
                 last_error = $2 where id = $3 and leased_by = $4",
            )
            .bind(*at)
            .bind(error)
            .bind(id)
            .bind(node),
            Outcome::Failed(error) => sqlx::query(
                "update notification_outbox set status = 'failed', lease_until = null, \
                 last_error = $1 where id = $2 and leased_by = $3",
            )
            .bind(error)
            .bind(id)
            .bind(node),
        };
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
