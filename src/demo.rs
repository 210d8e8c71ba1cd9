//! `serve --demo`: sample dossiers and documents in an empty data dir, and tokens to try
//! the API with at once.

use std::net::SocketAddr;

use anyhow::Context;

use crate::access;
use crate::app::Services;
use crate::blobs::StoredBlob;
use crate::db::documents::{self, NewContent, NewDocument};
use crate::db::dossiers::{self, NewDossier};
use crate::domain::{Channel, CodiceFiscale, DocumentKind, UserId, Visibility, sniff_media_type};
use crate::users::add_user;

struct DemoDoc {
    title: &'static str,
    kind: DocumentKind,
    visibility: Visibility,
    filename: &'static str,
    bytes: Vec<u8>,
    author: UserId,
    author_role: crate::domain::Role,
}

struct DemoUser {
    label: &'static str,
    email: &'static str,
    role: crate::domain::Role,
    name: &'static str,
    cf: &'static str,
    offices: &'static [&'static str],
}

const USERS: &[DemoUser] = &[
    DemoUser {
        label: "citizen",
        email: "maria.bianchi@example.it",
        role: crate::domain::Role::Citizen,
        name: "Maria Bianchi",
        cf: "BNCMRA78C55C722I",
        offices: &[],
    },
    DemoUser {
        label: "professional",
        email: "laura.ferrero@example.it",
        role: crate::domain::Role::Professional,
        name: "Arch. Laura Ferrero",
        cf: "FRRLRA80A41L219P",
        offices: &[],
    },
    DemoUser {
        label: "staff",
        email: "paolo.gallo@comune.example.it",
        role: crate::domain::Role::Staff,
        name: "Paolo Gallo",
        cf: "GLLPLA70E12C722D",
        offices: &["edilizia", "suap"],
    },
    DemoUser {
        label: "auditor",
        email: "anna.conti@comune.example.it",
        role: crate::domain::Role::Auditor,
        name: "Anna Conti",
        cf: "CNTNNA75H50L219S",
        offices: &[],
    },
];

/// Seeds demo data unless the database already holds dossiers, then prints fresh tokens for
/// the demo users and a curl example.
pub async fn seed(services: &Services, addr: SocketAddr) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("select count(*) from dossier")
        .fetch_one(services.db.pool())
        .await?;
    let mut tokens = Vec::new();
    if existing == 0 {
        let mut ids = Vec::new();
        for u in USERS {
            let offices: Vec<String> = u.offices.iter().map(|o| o.to_string()).collect();
            let created = add_user(services, u.role, u.name, Some(u.cf), &offices)
                .await
                .with_context(|| format!("creating demo user {}", u.name))?;
            ids.push(created.id);
            tokens.push((u.label, created.token));
        }
        create_dossiers(services, &ids).await?;
    } else {
        for u in USERS {
            let id: Option<String> = sqlx::query_scalar(
                "select id from app_user where tenant = $1 and codice_fiscale = $2",
            )
            .bind(&services.config.tenant)
            .bind(u.cf)
            .fetch_optional(services.db.pool())
            .await?;
            let Some(id) = id.as_deref().and_then(UserId::parse) else {
                println!("demo: the data dir holds other data; no demo tokens issued");
                return Ok(());
            };
            let token = access::issue_token(
                &services.db,
                id,
                "demo",
                Some(crate::users::token_expiry(services, None)),
                None,
                &crate::audit::Actor::cli(&services.config.tenant),
            )
            .await?;
            tokens.push((u.label, token));
        }
    }
    let pages = web_sign_in(services).await?;
    println!("\nfascicolo demo is ready at http://{addr}\n");
    println!("pages: http://{addr}/  (Accedi)");
    for line in &pages {
        println!("  {line}");
    }
    println!("\nAPI tokens:");
    for (label, token) in &tokens {
        println!("  {label:<13} {token}");
    }
    if let Some((_, token)) = tokens.first() {
        println!(
            "\ntry:\n  curl -s -H 'Authorization: Bearer {token}' http://{addr}/v1/dossiers\n"
        );
    }
    Ok(())
}

/// The password of every demo staff member and auditor.
const DEMO_PASSWORD: &str = "demo-sportello-2026";
/// Their TOTP secret (base32), to enter in an authenticator app or `oathtool --totp -b`.
const DEMO_TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// Gives the demo users a confirmed e-mail (the sign-in codes of citizens and professionals
/// go there) and the staff and auditor the demo password and TOTP secret; returns how to sign
/// in as each.
async fn web_sign_in(services: &Services) -> anyhow::Result<Vec<String>> {
    let tenant = &services.config.tenant;
    let actor = crate::audit::Actor::cli(tenant);
    let hash = crate::credentials::hash_password(DEMO_PASSWORD)?;
    let mut lines = Vec::new();
    for u in USERS {
        let id: Option<String> =
            sqlx::query_scalar("select id from app_user where tenant = $1 and codice_fiscale = $2")
                .bind(tenant)
                .bind(u.cf)
                .fetch_optional(services.db.pool())
                .await?;
        let Some(id) = id.as_deref().and_then(UserId::parse) else {
            continue;
        };
        sqlx::query(
            "update app_user set email = $1, email_confirmed_at = coalesce(email_confirmed_at, $2) \
             where id = $3",
        )
        .bind(u.email)
        .bind(crate::db::now_ms())
        .bind(id.to_string())
        .execute(services.db.write_pool())
        .await?;
        if matches!(
            u.role,
            crate::domain::Role::Citizen | crate::domain::Role::Professional
        ) {
            lines.push(format!(
                "{:<13} {}: codice fiscale {} or {}; the sign-in code is printed here",
                u.label, u.name, u.cf, u.email
            ));
        } else {
            crate::db::web::set_credential(&services.db, id, &hash, DEMO_TOTP_SECRET, None, &actor)
                .await?;
            lines.push(format!(
                "{:<13} {}: {} / {DEMO_PASSWORD} / TOTP secret {DEMO_TOTP_SECRET} \
                 (code: oathtool --totp -b {DEMO_TOTP_SECRET})",
                u.label, u.name, u.email
            ));
        }
    }
    Ok(lines)
}

async fn store(services: &Services, bytes: &[u8]) -> anyhow::Result<(StoredBlob, &'static str)> {
    let mut spool = services
        .blobs
        .spool(services.config.max_upload_bytes)
        .await?;
    spool.write(bytes).await?;
    let spooled = spool.finish().await?;
    let media_type = sniff_media_type(&spooled.head);
    Ok((services.blobs.put(&spooled, false).await?, media_type))
}

async fn create_dossiers(services: &Services, ids: &[UserId]) -> anyhow::Result<()> {
    let tenant = services.config.tenant.as_str();
    let citizen = CodiceFiscale::parse(USERS[0].cf)?;
    let professional = CodiceFiscale::parse(USERS[1].cf)?;
    let cases: [(&CodiceFiscale, &str, &str, UserId, Channel); 4] = [
        (
            &citizen,
            "scia-edilizia",
            "Rifacimento della facciata, via Vittorio Emanuele II 42",
            ids[0],
            Channel::Online,
        ),
        (
            &citizen,
            "riduzione-tari",
            "Riduzione TARI per compostaggio domestico",
            ids[0],
            Channel::Online,
        ),
        (
            &professional,
            "permesso-di-costruire",
            "Ampliamento di fabbricato residenziale, via Robassomero 15",
            ids[1],
            Channel::Online,
        ),
        (
            &citizen,
            "dehors",
            "Dehors stagionale per il bar di piazza Castello",
            ids[2],
            Channel::Desk,
        ),
    ];
    // `ids` are the demo users' in the order of `USERS`.
    let role_of = |id: UserId| {
        ids.iter()
            .position(|i| *i == id)
            .map_or(crate::domain::Role::Admin, |i| USERS[i].role)
    };
    for (i, (applicant, code, subject, by, channel)) in cases.into_iter().enumerate() {
        let procedure = services
            .catalogue
            .procedure(code)
            .with_context(|| format!("demo procedure {code}"))?;
        let dossier = dossiers::create(
            &services.db,
            NewDossier {
                tenant,
                procedure,
                applicant,
                subject,
                channel,
                created_by: by,
                delivery: services.delivery(),
                draft: false,
                applicant_name: None,
            },
            &crate::audit::Actor::system(tenant, by, "demo"),
        )
        .await?;
        let application = format!(
            "Spett.le Comune di Ciriè\nUfficio {office}\n\nOggetto: {name}\n\n\
             Il/La sottoscritto/a, codice fiscale {cf}, chiede l'avvio del procedimento \
             relativo a: {subject}.\nAllega la documentazione prevista e la ricevuta del \
             versamento dei diritti di istruttoria.\n\nDistinti saluti.\n",
            office = procedure.office,
            name = procedure.name,
            cf = applicant,
        );
        let receipt = format!(
            "<!DOCTYPE html><html><body><h1>Ricevuta di pagamento PagoPA</h1>\
             <p>Pratica {number}: diritti di segreteria, euro {amount},00.</p></body></html>",
            number = dossier.number,
            amount = 30 + 20 * i
        );
        let note = format!(
            "Nota istruttoria interna (pratica {}): verificare la conformità urbanistica \
             e acquisire il parere della commissione locale per il paesaggio.",
            dossier.number
        );
        let docs = [
            DemoDoc {
                title: "Istanza",
                kind: DocumentKind::Application,
                visibility: Visibility::Public,
                filename: "istanza.txt",
                bytes: application.into_bytes(),
                author: by,
                author_role: role_of(by),
            },
            DemoDoc {
                title: "Ricevuta di pagamento",
                kind: DocumentKind::Receipt,
                visibility: Visibility::Public,
                filename: "ricevuta.html",
                bytes: receipt.into_bytes(),
                author: by,
                author_role: role_of(by),
            },
            DemoDoc {
                title: "Nota istruttoria",
                kind: DocumentKind::Other,
                visibility: Visibility::Internal,
                filename: "nota.txt",
                bytes: note.into_bytes(),
                author: ids[2],
                author_role: role_of(ids[2]),
            },
        ];
        for doc in docs {
            // Internal notes only on building dossiers, which the demo staff member handles.
            if doc.visibility == Visibility::Internal && procedure.office.as_str() != "edilizia" {
                continue;
            }
            let (blob, media_type) = store(services, &doc.bytes).await?;
            documents::create(
                &services.db,
                NewDocument {
                    tenant,
                    dossier: dossier.id,
                    title: doc.title,
                    kind: doc.kind,
                    visibility: doc.visibility,
                    content: NewContent {
                        blob,
                        media_type,
                        filename: doc.filename,
                        created_by: doc.author,
                        created_role: doc.author_role,
                        channel: doc.author_role.upload_channel(),
                        blobs: &services.blobs,
                    },
                },
                &crate::audit::Actor::system(tenant, doc.author, "demo"),
            )
            .await?;
        }
    }
    // The professional follows one of the citizen's dossiers by delegation.
    sqlx::query(
        "insert into delegation (dossier_id, professional_cf, granted_by, created_at) \
         select id, $1, $2, $3 from dossier where procedure_code = 'scia-edilizia'",
    )
    .bind(professional.as_str())
    .bind(ids[0].to_string())
    .bind(crate::db::now_ms())
    .execute(services.db.pool())
    .await?;
    services.db.access_changed();
    Ok(())
}
