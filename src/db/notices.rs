//! Notices of a dossier's steps, written to the outbox in the transaction that makes the step
//! (DESIGN.md §4, transactional outbox): who is told is decided here, at the step, from who
//! may see the dossier then; how is each recipient's confirmed contacts, the channels this
//! server has, and the recipient's preferences. A notice the law requires that no channel
//! can carry becomes a task for the office: "notify by post".

use serde::Serialize;
use sqlx::Row;

use super::dossiers::rfc3339;
use super::{DbError, now_ms};
use crate::domain::DossierId;

/// A recipient's columns: contacts only once confirmed.
macro_rules! user_columns {
    () => {
        "u.id, u.name, u.codice_fiscale, \
         case when u.email_confirmed_at is not null then u.email end as email, \
         case when u.phone_confirmed_at is not null then u.phone end as phone, \
         u.identity_verified_at"
    };
}

/// The channels this server can send through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    /// An SMTP server is configured.
    pub email: bool,
    /// An SMS gateway is configured.
    pub sms: bool,
    /// An App IO service key is configured.
    pub app_io: bool,
}

/// How this server delivers notices: its channels and the start of its links.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The channels configured.
    pub channels: Channels,
    /// The start of every link (`FASCICOLO_PUBLIC_URL`).
    pub public_url: &'a str,
}

/// What a message reports. Each has a template per channel in `schema/notifications/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Filed: the receipt.
    DossierSubmitted,
    /// Taken in charge: the legal clock runs.
    DossierStarted,
    /// The office asks for missing items; the clock is suspended.
    IntegrationRequested,
    /// The missing items arrived; the clock runs again.
    IntegrationReceived,
    /// Concluded with an outcome; the decision can be read online.
    DossierConcluded,
    /// Withdrawn by the applicant.
    DossierWithdrawn,
    /// A professional may now act on the dossier.
    DelegationGranted,
    /// A professional may no longer act on the dossier.
    DelegationRevoked,
    /// For staff: dossiers close to or past their deadline.
    DeadlineDigest,
}

impl Event {
    /// Every event, in the order a dossier meets them.
    pub const ALL: [Event; 9] = [
        Event::DossierSubmitted,
        Event::DossierStarted,
        Event::IntegrationRequested,
        Event::IntegrationReceived,
        Event::DossierConcluded,
        Event::DossierWithdrawn,
        Event::DelegationGranted,
        Event::DelegationRevoked,
        Event::DeadlineDigest,
    ];

    /// Its name, also its template's.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::DossierSubmitted => "dossier_submitted",
            Event::DossierStarted => "dossier_started",
            Event::IntegrationRequested => "integration_requested",
            Event::IntegrationReceived => "integration_received",
            Event::DossierConcluded => "dossier_concluded",
            Event::DossierWithdrawn => "dossier_withdrawn",
            Event::DelegationGranted => "delegation_granted",
            Event::DelegationRevoked => "delegation_revoked",
            Event::DeadlineDigest => "deadline_digest",
        }
    }

    /// The event named `name`.
    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// Notices the law requires the office to give (law 241/1990: the start of a
    /// procedure, a request that suspends it, its conclusion): they go out on at least one
    /// confirmed channel whatever the preferences, or by post.
    pub fn required(self) -> bool {
        matches!(
            self,
            Event::DossierStarted | Event::IntegrationRequested | Event::DossierConcluded
        )
    }
}

/// A channel messages go through.
pub const CHANNELS: [&str; 3] = ["email", "sms", "app_io"];

/// A step to tell the applicant side of a dossier about.
pub struct Notice<'a> {
    /// The municipality.
    pub tenant: &'a str,
    /// The dossier.
    pub dossier: DossierId,
    /// The step (`dossier_event.id`) it reports, if it is one.
    pub step: Option<&'a str>,
    /// What happened.
    pub event: Event,
    /// Values of the event beyond the dossier's own (deadline, missing items, outcome…).
    pub values: serde_json::Value,
    /// The professional a delegation notice is about: told too, as `relation = professional`.
    pub professional_cf: Option<&'a str>,
    /// How it is delivered.
    pub delivery: Delivery<'a>,
}

/// One person to tell, with their contacts.
struct Recipient {
    id: String,
    name: String,
    codice_fiscale: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    verified: bool,
    /// `applicant`, `delegate` or `professional` (the subject of a delegation notice).
    relation: &'static str,
}

/// A channel and address a message to `recipient` can go to.
fn addresses(r: &Recipient, channels: Channels) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if channels.email
        && let Some(e) = &r.email
    {
        out.push(("email", e.clone()));
    }
    if channels.sms
        && let Some(p) = &r.phone
    {
        out.push(("sms", p.clone()));
    }
    // App IO only reaches a codice fiscale proven to be the recipient's.
    if channels.app_io
        && r.verified
        && let Some(cf) = &r.codice_fiscale
    {
        out.push(("app_io", cf.clone()));
    }
    out
}

/// Writes the messages of `notice`, in `tx`. Returns how many were queued; when a required
/// notice reaches nobody, a postal task is opened for the dossier's office instead.
pub async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    notice: &Notice<'_>,
) -> Result<usize, DbError> {
    let now = now_ms();
    let dossier = notice.dossier.to_string();
    let (values, office) = values_of(tx, notice, now).await?;
    // Who may see the dossier, as `access::Caller::scope` decides: the account
    // that filed it online, verified accounts of the applicant's codice fiscale, and
    // professionals with a delegation in force (verified: a delegation names a code).
    let mut recipients = recipients(tx, &dossier, now).await?;
    if let Some(cf) = notice.professional_cf {
        // A delegation is news to its applicant and its professional, not to other delegates.
        recipients.retain(|r| r.relation == "applicant");
        let rows = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from app_user u where u.tenant = $1 and u.codice_fiscale = $2 \
             and u.role = 'professional' and u.identity_verified_at is not null \
             and u.disabled_at is null"
        ))
        .bind(notice.tenant)
        .bind(cf)
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let id: String = r.try_get("id")?;
            recipients.retain(|x| x.id != id);
            recipients.push(recipient(r, "professional")?);
        }
    }
    let mut queued = 0;
    for r in &recipients {
        let disabled: Vec<String> = sqlx::query_scalar(
            "select channel from notification_preference where user_id = $1 and event = $2 \
             and enabled = 0",
        )
        .bind(&r.id)
        .bind(notice.event.as_str())
        .fetch_all(&mut **tx)
        .await?;
        let available = addresses(r, notice.delivery.channels);
        let mut chosen: Vec<&(&str, String)> = available
            .iter()
            .filter(|(c, _)| !disabled.iter().any(|d| d == c))
            .collect();
        // A required notice goes out on the first confirmed channel even if all are off.
        if chosen.is_empty() && notice.event.required() {
            chosen.extend(available.first());
        }
        let mut payload = values.clone();
        if let Some(p) = payload.as_object_mut() {
            p.insert("name".into(), r.name.clone().into());
            p.insert("relation".into(), r.relation.into());
        }
        for (channel, address) in chosen {
            sqlx::query(
                "insert into notification_outbox (id, tenant, channel, recipient, template, \
                 payload, created_at, user_id, dossier_id, step_id, event) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(notice.tenant)
            .bind(*channel)
            .bind(address.clone())
            .bind(notice.event.as_str())
            .bind(payload.to_string())
            .bind(now)
            .bind(&r.id)
            .bind(&dossier)
            .bind(notice.step.map(str::to_owned))
            .bind(notice.event.as_str())
            .execute(&mut **tx)
            .await?;
            queued += 1;
        }
    }
    let applicant_reached = recipients.iter().any(|r| {
        r.relation != "professional" && !addresses(r, notice.delivery.channels).is_empty()
    });
    if notice.event.required() && !applicant_reached {
        sqlx::query(
            "insert into postal_task (id, tenant, dossier_id, office_code, step_id, event, \
             created_at) values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(notice.tenant)
        .bind(&dossier)
        .bind(office)
        .bind(notice.step.map(str::to_owned))
        .bind(notice.event.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(queued)
}

fn recipient(r: &sqlx::any::AnyRow, relation: &'static str) -> Result<Recipient, DbError> {
    Ok(Recipient {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        codice_fiscale: r.try_get("codice_fiscale")?,
        email: r.try_get("email")?,
        phone: r.try_get("phone")?,
        verified: r
            .try_get::<Option<i64>, _>("identity_verified_at")?
            .is_some(),
        relation,
    })
}

async fn recipients(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dossier: &str,
    now: i64,
) -> Result<Vec<Recipient>, DbError> {
    let applicants = sqlx::query(concat!(
        "select ",
        user_columns!(),
        " from app_user u join dossier d on d.id = $1 \
         where u.tenant = d.tenant and u.disabled_at is null \
         and u.role in ('citizen', 'professional') and u.codice_fiscale = d.applicant_cf \
         and (u.identity_verified_at is not null or u.id = d.created_by) order by u.id"
    ))
    .bind(dossier)
    .fetch_all(&mut **tx)
    .await?;
    let delegates = sqlx::query(concat!(
        "select ",
        user_columns!(),
        " from app_user u join dossier d on d.id = $1 \
         join delegation g on g.dossier_id = d.id and g.professional_cf = u.codice_fiscale \
         where u.tenant = d.tenant and u.disabled_at is null and u.role = 'professional' \
         and u.identity_verified_at is not null and g.revoked_at is null \
         and (g.valid_until is null or g.valid_until > $2) order by u.id"
    ))
    .bind(dossier)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::new();
    for r in &applicants {
        out.push(recipient(r, "applicant")?);
    }
    for r in &delegates {
        let d = recipient(r, "delegate")?;
        if !out.iter().any(|x| x.id == d.id) {
            out.push(d);
        }
    }
    Ok(out)
}

/// `dd/mm/yyyy HH:MM` in Europe/Rome, as Italian notices write a time.
pub fn italian_date(ms: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms) else {
        return rfc3339(ms);
    };
    let zoned = t
        .in_tz("Europe/Rome")
        .unwrap_or_else(|_| t.to_zoned(jiff::tz::TimeZone::UTC));
    zoned.strftime("%d/%m/%Y %H:%M").to_string()
}

/// `dd/mm/yyyy` in Europe/Rome.
pub fn italian_day(ms: i64) -> String {
    italian_date(ms).chars().take(10).collect()
}

/// The template values of a notice about a dossier (its number, subject, procedure, office,
/// deadline, filing date, link, and the notice's own), and the dossier's office.
async fn values_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    notice: &Notice<'_>,
    now: i64,
) -> Result<(serde_json::Value, String), DbError> {
    let dossier = notice.dossier.to_string();
    let row = sqlx::query(
        "select d.number, d.subject, d.office_code, d.applicant_cf, \
         coalesce((select min(e.at) from dossier_event e where e.dossier_id = d.id \
         and e.to_status = 'submitted'), d.created_at) as filed_at, \
         p.name as procedure_name, p.deadline_days, o.name as office_name \
         from dossier d join procedure_kind p on p.tenant = d.tenant and p.code = d.procedure_code \
         join office o on o.tenant = d.tenant and o.code = d.office_code where d.id = $1",
    )
    .bind(&dossier)
    .fetch_one(&mut **tx)
    .await?;
    let office: String = row.try_get("office_code")?;
    let mut values = serde_json::json!({
        "number": row.try_get::<String, _>("number")?,
        "subject": row.try_get::<String, _>("subject")?,
        "procedure": row.try_get::<String, _>("procedure_name")?,
        "office": row.try_get::<String, _>("office_name")?,
        "deadline_days": row.try_get::<i32, _>("deadline_days")?,
        // A draft is filed when it goes to `submitted`, not when it was started.
        "filed_at": italian_date(row.try_get("filed_at")?),
        "at": italian_date(now),
        "link": format!("{}/pratiche/{}", notice.delivery.public_url.trim_end_matches('/'), dossier),
    });
    if notice.event == Event::DossierStarted {
        let days = i64::from(row.try_get::<i32, _>("deadline_days")?);
        values["deadline_date"] = italian_day(now + days * 86_400_000).into();
    }
    if let (Some(into), Some(extra)) = (values.as_object_mut(), notice.values.as_object()) {
        into.extend(extra.clone());
    }
    Ok((values, office))
}

/// Sends the receipt of a dossier (the `dossier_submitted` message) to an e-mail address
/// typed at the desk, for an applicant without an account: one message through the outbox.
pub async fn receipt_to_address(
    db: &super::Db,
    notice: &Notice<'_>,
    email: &str,
    name: &str,
    actor: &crate::audit::Actor,
) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let (mut values, _) = values_of(&mut tx, notice, now).await?;
    if let Some(v) = values.as_object_mut() {
        v.insert("name".into(), name.into());
        v.insert("relation".into(), "applicant".into());
    }
    sqlx::query(
        "insert into notification_outbox (id, tenant, channel, recipient, template, payload, \
         created_at, dossier_id, event) values ($1, $2, 'email', $3, $4, $5, $6, $7, $4)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(notice.tenant)
    .bind(email)
    .bind(Event::DossierSubmitted.as_str())
    .bind(values.to_string())
    .bind(now)
    .bind(notice.dossier.to_string())
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in_tx(
        db,
        &mut tx,
        &[actor.event(
            "dossier.receipt",
            format!("dossier:{}", notice.dossier),
            Some(notice.dossier),
            "ok",
            serde_json::json!({"channel": "email"}),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Writes the daily digest of `day` for every member of staff with a confirmed e-mail and
/// dossiers of their offices with `within_days` or fewer days left on the legal clock (or
/// past it), unless a node wrote it already. Returns the messages written.
pub async fn enqueue_digest(
    db: &super::Db,
    tenant: &str,
    day: &str,
    within_days: i64,
    public_url: &str,
) -> Result<usize, DbError> {
    const DAY_MS: i64 = 86_400_000;
    let now = now_ms();
    // Checked every minute on every node: once the day's digest exists, a read is enough.
    let written: i64 =
        sqlx::query_scalar("select count(*) from digest_run where tenant = $1 and day = $2")
            .bind(tenant)
            .bind(day)
            .fetch_one(db.pool())
            .await?;
    if written > 0 {
        return Ok(0);
    }
    let mut tx = db.begin_write().await?;
    let claimed = sqlx::query(
        "insert into digest_run (tenant, day, created_at) values ($1, $2, $3) \
         on conflict (tenant, day) do nothing",
    )
    .bind(tenant)
    .bind(day)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        return Ok(0);
    }
    // The clock runs from the start, less the time integration requests held it.
    let rows = sqlx::query(
        "select d.id, d.number, d.office_code, o.name as office_name, p.name as procedure_name, \
         p.deadline_days, d.started_at, \
         cast(coalesce((select sum(r.closed_at - r.created_at) from integration_request r \
                   where r.dossier_id = d.id and r.closed_at is not null), 0) as bigint) \
         as suspended \
         from dossier d join procedure_kind p on p.tenant = d.tenant and p.code = d.procedure_code \
         join office o on o.tenant = d.tenant and o.code = d.office_code \
         where d.tenant = $1 and d.status = 'started' and d.started_at is not null \
         order by d.number",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let mut due: Vec<(String, serde_json::Value)> = Vec::new();
    for r in &rows {
        let started: i64 = r.try_get("started_at")?;
        let suspended: i64 = r.try_get("suspended")?;
        let deadline = i64::from(r.try_get::<i32, _>("deadline_days")?);
        let days_left = deadline - (now - started - suspended).max(0) / DAY_MS;
        if days_left > within_days {
            continue;
        }
        let id: String = r.try_get("id")?;
        due.push((
            r.try_get("office_code")?,
            serde_json::json!({
                "number": r.try_get::<String, _>("number")?,
                "procedure": r.try_get::<String, _>("procedure_name")?,
                "office": r.try_get::<String, _>("office_name")?,
                "days_left": days_left,
                "link": format!("{}/pratiche/{id}", public_url.trim_end_matches('/')),
            }),
        ));
    }
    let staff = sqlx::query(
        "select u.id, u.name, u.email, u.all_offices from app_user u where u.tenant = $1 \
         and u.role = 'staff' and u.disabled_at is null and u.email_confirmed_at is not null \
         and not exists (select 1 from notification_preference n where n.user_id = u.id \
         and n.event = 'deadline_digest' and n.channel = 'email' and n.enabled = 0) \
         order by u.id",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let mut written = 0;
    for s in &staff {
        let id: String = s.try_get("id")?;
        let all: i32 = s.try_get("all_offices")?;
        let offices: Vec<String> =
            sqlx::query_scalar("select office_code from user_office where user_id = $1")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
        let mine: Vec<&serde_json::Value> = due
            .iter()
            .filter(|(office, _)| all != 0 || offices.contains(office))
            .map(|(_, v)| v)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let payload = serde_json::json!({
            "name": s.try_get::<String, _>("name")?,
            "within_days": within_days,
            "day": day,
            "dossiers": mine,
        });
        sqlx::query(
            "insert into notification_outbox (id, tenant, channel, recipient, template, payload, \
             created_at, user_id, event) values ($1, $2, 'email', $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(tenant)
        .bind(s.try_get::<String, _>("email")?)
        .bind(Event::DeadlineDigest.as_str())
        .bind(payload.to_string())
        .bind(now)
        .bind(&id)
        .bind(Event::DeadlineDigest.as_str())
        .execute(&mut *tx)
        .await?;
        written += 1;
    }
    tx.commit().await?;
    Ok(written)
}
