//! What the outbox holds and did, as its readers see it: a user's messages, failed messages
//! (for staff and admins to retry), the notices of each step of a dossier, and the postal
//! tasks opened where no channel reached the applicant. Writing notices is `notices`.

use serde::Serialize;
use sqlx::Row;

use super::dossiers::rfc3339;
use super::{DbError, now_ms};
use crate::domain::DossierId;

/// A message as its reader sees it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MessageRecord {
    /// Its id, also the idempotency key receivers see (`Message-ID`, client reference).
    pub id: String,
    /// What it reports (absent for sign-in and activation codes).
    pub event: Option<String>,
    /// Its template.
    pub template: String,
    /// `email`, `sms` or `app_io`.
    pub channel: String,
    /// Address, number or codice fiscale.
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// When it was sent (RFC 3339).
    pub sent_at: Option<String>,
    /// The dossier it is about.
    pub dossier_id: Option<String>,
    /// The user it is for.
    pub user_id: Option<String>,
    /// Why the last attempt failed (staff and admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

const MESSAGE_COLUMNS: &str = "m.id, m.event, m.template, m.channel, m.recipient, m.status, \
     m.attempts, m.created_at, m.sent_at, m.dossier_id, m.user_id, m.last_error";

fn message_from(r: &sqlx::any::AnyRow, with_error: bool) -> Result<MessageRecord, DbError> {
    Ok(MessageRecord {
        id: r.try_get("id")?,
        event: r.try_get("event")?,
        template: r.try_get("template")?,
        channel: r.try_get("channel")?,
        recipient: r.try_get("recipient")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        created_at: rfc3339(r.try_get("created_at")?),
        sent_at: r.try_get::<Option<i64>, _>("sent_at")?.map(rfc3339),
        dossier_id: r.try_get("dossier_id")?,
        user_id: r.try_get("user_id")?,
        last_error: if with_error {
            r.try_get("last_error")?
        } else {
            None
        },
    })
}

/// The caller's own messages, newest first, older than `before` (a message id) if given.
pub async fn for_user(
    db: &super::Db,
    user: crate::domain::UserId,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<MessageRecord>, DbError> {
    let mut sql = super::Sql::new(&format!(
        "select {MESSAGE_COLUMNS} from notification_outbox m where m.user_id = "
    ));
    sql.bind(user.to_string());
    if let Some(before) = before {
        sql.push(" and m.id < ").bind(before.to_owned());
    }
    sql.push(" order by m.id desc limit ").bind(limit);
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter().map(|r| message_from(r, false)).collect()
}

/// Failed messages the caller may handle, newest first: an admin all of the municipality's,
/// staff those about dossiers of their offices.
pub async fn failed(
    db: &super::Db,
    caller: &crate::access::Caller,
    limit: i64,
) -> Result<Vec<MessageRecord>, DbError> {
    let mut sql = failed_query(db, caller).await?;
    sql.push(" order by m.id desc limit ").bind(limit);
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter().map(|r| message_from(r, true)).collect()
}

async fn failed_query(
    db: &super::Db,
    caller: &crate::access::Caller,
) -> Result<super::Sql, DbError> {
    let mut sql = super::Sql::new(&format!(
        "select {MESSAGE_COLUMNS} from notification_outbox m \
         left join dossier d on d.id = m.dossier_id where m.status = 'failed' and m.tenant = "
    ));
    sql.bind(caller.tenant().to_owned());
    if caller.role() != crate::domain::Role::Admin {
        sql.push(" and ");
        super::scope::push_dossiers(&mut sql, db.backend(), &caller.scope(db).await?);
    }
    Ok(sql)
}

/// Puts a failed message the caller may handle back in the queue, attempts from zero.
/// `None`: no such failed message for this caller.
pub async fn retry_failed(
    db: &super::Db,
    caller: &crate::access::Caller,
    id: &str,
    actor: &crate::audit::Actor,
) -> Result<Option<MessageRecord>, DbError> {
    let mut sql = failed_query(db, caller).await?;
    sql.push(" and m.id = ").bind(id.to_owned());
    let Some(row) = sql.query().fetch_optional(db.pool()).await? else {
        return Ok(None);
    };
    let mut record = message_from(&row, true)?;
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "update notification_outbox set status = 'pending', attempts = 0, next_attempt_at = null, \
         lease_until = null, leased_by = null where id = $1 and status = 'failed'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "notification.retry",
            format!("notification:{id}"),
            record.dossier_id.as_deref().and_then(DossierId::parse),
            "ok",
            serde_json::json!({"channel": record.channel, "last_error": record.last_error}),
        )],
    )
    .await?;
    tx.commit().await?;
    record.status = "pending".into();
    record.attempts = 0;
    Ok(Some(record))
}

/// How one step of a dossier was notified.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StepNotice {
    /// `email`, `sms` or `app_io`.
    pub channel: String,
    /// `pending`, `sent` or `failed` (applicants see sent ones only).
    pub status: String,
    /// When it was sent (RFC 3339).
    pub sent_at: Option<String>,
    /// Why it failed (staff only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The notices of each step of a dossier, by step id; `staff` also gets unsent ones and
/// failures.
pub async fn by_step(
    db: &super::Db,
    dossier: DossierId,
    staff: bool,
) -> Result<std::collections::HashMap<String, Vec<StepNotice>>, DbError> {
    let rows = sqlx::query(
        "select step_id, channel, status, sent_at, last_error from notification_outbox \
         where dossier_id = $1 and step_id is not null order by id",
    )
    .bind(dossier.to_string())
    .fetch_all(db.pool())
    .await?;
    let mut out: std::collections::HashMap<String, Vec<StepNotice>> = Default::default();
    for r in &rows {
        let status: String = r.try_get("status")?;
        if !staff && status != "sent" {
            continue;
        }
        out.entry(r.try_get("step_id")?)
            .or_default()
            .push(StepNotice {
                channel: r.try_get("channel")?,
                sent_at: r.try_get::<Option<i64>, _>("sent_at")?.map(rfc3339),
                error: if staff {
                    r.try_get("last_error")?
                } else {
                    None
                },
                status,
            });
    }
    Ok(out)
}

/// A notice to send by post.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PostalTask {
    /// Its id.
    pub id: String,
    /// The dossier.
    pub dossier_id: String,
    /// Its number.
    pub number: String,
    /// The applicant's codice fiscale.
    pub applicant_cf: String,
    /// The office that sends it.
    pub office: String,
    /// What to notify.
    pub event: String,
    /// When it was opened (RFC 3339).
    pub created_at: String,
    /// When it was marked done (RFC 3339).
    pub done_at: Option<String>,
}

async fn postal_query(
    db: &super::Db,
    caller: &crate::access::Caller,
) -> Result<super::Sql, DbError> {
    let mut sql = super::Sql::new(
        "select t.id, t.dossier_id, d.number, d.applicant_cf, t.office_code, t.event, \
         t.created_at, t.done_at from postal_task t join dossier d on d.id = t.dossier_id where ",
    );
    super::scope::push_dossiers(&mut sql, db.backend(), &caller.scope(db).await?);
    Ok(sql)
}

fn postal_from(r: &sqlx::any::AnyRow) -> Result<PostalTask, DbError> {
    Ok(PostalTask {
        id: r.try_get("id")?,
        dossier_id: r.try_get("dossier_id")?,
        number: r.try_get("number")?,
        applicant_cf: r.try_get("applicant_cf")?,
        office: r.try_get("office_code")?,
        event: r.try_get("event")?,
        created_at: rfc3339(r.try_get("created_at")?),
        done_at: r.try_get::<Option<i64>, _>("done_at")?.map(rfc3339),
    })
}

/// Postal tasks of the caller's dossiers, open ones (or done ones), oldest first.
pub async fn postal_tasks(
    db: &super::Db,
    caller: &crate::access::Caller,
    done: bool,
    limit: i64,
) -> Result<Vec<PostalTask>, DbError> {
    let mut sql = postal_query(db, caller).await?;
    sql.push(if done {
        " and t.done_at is not null"
    } else {
        " and t.done_at is null"
    });
    sql.push(" order by t.created_at, t.id limit ").bind(limit);
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter().map(postal_from).collect()
}

/// Marks a postal task of the caller's dossiers done. `None`: no such task for this caller;
/// `Some(false)`: done already.
pub async fn postal_done(
    db: &super::Db,
    caller: &crate::access::Caller,
    id: &str,
    actor: &crate::audit::Actor,
) -> Result<Option<bool>, DbError> {
    let mut sql = postal_query(db, caller).await?;
    sql.push(" and t.id = ").bind(id.to_owned());
    let Some(row) = sql.query().fetch_optional(db.pool()).await? else {
        return Ok(None);
    };
    let task = postal_from(&row)?;
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "update postal_task set done_at = $1, done_by = $2 where id = $3 and done_at is null",
    )
    .bind(now_ms())
    .bind(caller.id().to_string())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(Some(false));
    }
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "postal_task.done",
            format!("postal_task:{id}"),
            DossierId::parse(&task.dossier_id),
            "ok",
            serde_json::json!({"event": task.event}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(true))
}
