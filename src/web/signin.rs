//! Signing in and out.
//!
//! - Citizens and professionals: a one-time code, sent through the notification outbox to
//!   their confirmed e-mail (or mobile number), typed back within ten minutes.
//! - Staff, auditors and admins: e-mail, password (Argon2id) and a TOTP code (RFC 6238),
//!   after setting both through a one-time activation link.
//!
//! Failed attempts slow down (back-off) per address, per account from an address, and, more
//! gently, per account: an attacker elsewhere can delay a clerk by seconds, never lock them out.

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, render, see_other};
use crate::access::{Caller, hash_token};
use crate::app::Services;
use crate::audit::Actor;
use crate::credentials;
use crate::db::now_ms;
use crate::db::web::{self as store, CodeCheck};
use crate::domain::Role;

/// How long a sign-in code works.
const CODE_LIFETIME_MS: i64 = 10 * 60_000;
/// Failures older than this are forgotten.
const FORGET_FAILURES_MS: i64 = 3_600_000;

/// Routes of signing in and out.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/accedi", get(sign_in_page))
        .route("/accedi/codice", get(code_page).post(send_code))
        .route("/accedi/codice/verifica", post(check_code))
        .route("/accedi/personale", post(staff_sign_in))
        .route("/attivazione/{secret}", get(activation_page).post(activate))
        .route("/esci", post(sign_out))
        .route("/area-personale", get(personal_area))
}

/// A path to come back to after signing in: only a path of this site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/area-personale".to_owned(),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    page: Layout,
    next: String,
    error: Option<String>,
    notice: Option<String>,
    email: String,
}

#[derive(Deserialize)]
struct SignInQuery {
    next: Option<String>,
    attivato: Option<String>,
}

async fn sign_in_page(
    State(services): State<Services>,
    visitor: Visitor,
    Query(query): Query<SignInQuery>,
) -> Result<Response, WebError> {
    render(&SignInPage {
        page: Layout::new(&services, &visitor, "Accedi", ""),
        next: safe_next(query.next.as_deref()),
        error: None,
        notice: query
            .attivato
            .map(|_| "Account attivato: ora puoi accedere.".to_owned()),
        email: String::new(),
    })
}

#[derive(Deserialize)]
struct SendCode {
    csrf: String,
    identifier: String,
    next: Option<String>,
}

/// Sends a code to the account named by a codice fiscale or an e-mail address. The answer
/// is the same whether or not such an account exists.
async fn send_code(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<SendCode>,
) -> Result<Response, WebError> {
    visitor.check_csrf(&form.csrf)?;
    let client = visitor
        .client
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    services
        .limits
        .check(crate::http::limits::Kind::Anonymous, &client)?;
    let pending = uuid::Uuid::now_v7().to_string();
    let identifier: String = form.identifier.trim().chars().take(254).collect();
    let account = store::account_for_sign_in(
        &services.db,
        &services.config.tenant,
        &identifier,
        &[Role::Citizen, Role::Professional],
    )
    .await?;
    match account {
        Some(account) => {
            let (channel, recipient) = match (&account.email, &account.phone) {
                (Some(email), _) => ("email", email.clone()),
                (None, Some(phone)) => ("sms", phone.clone()),
                (None, None) => {
                    tracing::info!(user = %account.user.id, "sign-in code asked for an account without a confirmed contact");
                    ("", String::new())
                }
            };
            if !channel.is_empty() {
                let code = crate::http::new_code();
                let expires_at = now_ms() + CODE_LIFETIME_MS;
                store::start_code(
                    &services.db,
                    store::NewCode {
                        id: &pending,
                        tenant: &services.config.tenant,
                        user: account.user.id,
                        code_hash: &hash_token(&format!("{pending}:{code}")),
                        expires_at,
                        client: visitor.client.as_deref(),
                        channel,
                        recipient: &recipient,
                        payload: serde_json::json!({
                            "name": account.user.name,
                            "code": code,
                            "expires_at": crate::db::contacts::expiry_text(expires_at),
                        }),
                    },
                )
                .await?;
                services.wake.notify_one();
            }
        }
        None => tracing::info!("sign-in code asked for no known account"),
    }
    let next = safe_next(form.next.as_deref());
    Ok(see_other(&format!(
        "/accedi/codice?attesa={pending}&next={}",
        encode(&next)
    )))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Template)]
#[template(path = "sign_in_code.html")]
struct CodePage {
    page: Layout,
    pending: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct CodeQuery {
    attesa: Option<String>,
    next: Option<String>,
}

async fn code_page(
    State(services): State<Services>,
    visitor: Visitor,
    Query(query): Query<CodeQuery>,
) -> Result<Response, WebError> {
    let Some(pending) = query.attesa.filter(|p| uuid::Uuid::parse_str(p).is_ok()) else {
        return Ok(see_other("/accedi"));
    };
    render(&CodePage {
        page: Layout::new(&services, &visitor, "Inserisci il codice", "")
            .under("Accedi", "/accedi"),
        pending,
        next: safe_next(query.next.as_deref()),
        error: None,
    })
}

#[derive(Deserialize)]
struct CheckCode {
    csrf: String,
    attesa: String,
    code: String,
    next: Option<String>,
}

async fn check_code(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<CheckCode>,
) -> Result<Response, WebError> {
    visitor.check_csrf(&form.csrf)?;
    let next = safe_next(form.next.as_deref());
    let code: String = form.code.chars().filter(|c| c.is_ascii_digit()).collect();
    let checked = store::check_code(
        &services.db,
        &services.config.tenant,
        &form.attesa,
        |c| hash_token(&format!("{}:{c}", form.attesa)),
        &code,
    )
    .await?;
    let error = match checked {
        CodeCheck::Right(user) => {
            return open_session(&services, &visitor, user, "code", &next).await;
        }
        CodeCheck::Wrong => {
            "Il codice non è corretto o è scaduto. Controlla il messaggio ricevuto."
        }
        CodeCheck::TooMany => {
            "Troppi tentativi con questo codice. Torna ad «Accedi» e chiedine uno nuovo."
        }
    };
    let mut response = render(&CodePage {
        page: Layout::new(&services, &visitor, "Inserisci il codice", "")
            .under("Accedi", "/accedi"),
        pending: form.attesa,
        next,
        error: Some(error.to_owned()),
    })?;
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(response)
}

/// Opens a session for `user` and sends the browser on to `next`.
async fn open_session(
    services: &Services,
    visitor: &Visitor,
    user: crate::domain::UserId,
    method: &str,
    next: &str,
) -> Result<Response, WebError> {
    let record = crate::db::users::user_by_id(&services.db, &services.config.tenant, user)
        .await?
        .ok_or(crate::http::ApiError::NotFound)?;
    let secret = credentials::new_secret();
    let lifetime_ms = i64::from(services.config.sign_in_hours) * 3_600_000;
    store::open_session(
        &services.db,
        store::NewSession {
            id_hash: &hash_token(&secret),
            tenant: &services.config.tenant,
            user,
            csrf: &credentials::new_secret(),
            method,
            expires_at: now_ms() + lifetime_ms,
            client: visitor.client.as_deref(),
        },
        &Actor::of(&Caller::from_user(record), visitor.client.clone()),
    )
    .await?;
    let mut response = see_other(next);
    if let Ok(v) = HeaderValue::from_str(&visitor.session_cookie(&secret, lifetime_ms / 1000)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct StaffSignIn {
    csrf: String,
    email: String,
    password: String,
    totp: String,
    next: Option<String>,
}

/// Seconds to wait before another attempt, from the failures under each key: past `free`
/// failures the wait doubles with each one, up to `cap` seconds.
fn wait_seconds(failures: &[(String, i32, i64)], now: i64) -> i64 {
    failures
        .iter()
        .map(|(key, count, last)| {
            let (free, cap) = if key.starts_with("addr:") {
                (20, 900)
            } else if key.contains("|addr:") {
                (3, 900)
            } else {
                // The account alone, from anywhere: never more than half a minute, so that
                // failures caused by someone else cannot keep its owner out.
                (10, 30)
            };
            if *count < free {
                return 0;
            }
            let delay = 1i64 << (count - free).min(10);
            delay.min(cap) - (now - last) / 1000
        })
        .max()
        .unwrap_or(0)
        .max(0)
}

async fn staff_sign_in(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<StaffSignIn>,
) -> Result<Response, WebError> {
    visitor.check_csrf(&form.csrf)?;
    let next = safe_next(form.next.as_deref());
    let email: String = form.email.trim().chars().take(254).collect();
    let address = format!("addr:{}", visitor.client.as_deref().unwrap_or("unknown"));
    let account = store::account_for_sign_in(
        &services.db,
        &services.config.tenant,
        &email,
        &[Role::Staff, Role::Auditor, Role::Admin],
    )
    .await?;
    let mut keys = vec![address.clone()];
    if let Some(a) = &account {
        keys.push(format!("acct:{}|{address}", a.user.id));
        keys.push(format!("acct:{}", a.user.id));
    }
    let wait = wait_seconds(&store::failures(&services.db, &keys).await?, now_ms());
    let failed = |message: String, status: StatusCode| -> Result<Response, WebError> {
        let mut response = render(&SignInPage {
            page: Layout::new(&services, &visitor, "Accedi", ""),
            next: next.clone(),
            error: Some(message),
            notice: None,
            email: email.clone(),
        })?;
        *response.status_mut() = status;
        if status == StatusCode::TOO_MANY_REQUESTS
            && let Ok(v) = HeaderValue::from_str(&wait.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Ok(response)
    };
    if wait > 0 {
        return failed(
            format!("Troppi tentativi non riusciti. Riprova tra {wait} secondi."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let credential = match &account {
        Some(a) => store::credential(&services.db, a.user.id).await?,
        None => None,
    };
    let password = form.password.clone();
    let right = match &credential {
        Some(c) => {
            let stored = c.password_hash.clone();
            tokio::task::spawn_blocking(move || credentials::verify_password(&password, &stored))
                .await
                .unwrap_or(false)
        }
        None => {
            let _ = tokio::task::spawn_blocking(move || credentials::burn_password_time(&password))
                .await;
            false
        }
    };
    let step = match (&account, &credential) {
        (Some(a), Some(c)) if right => {
            let totp = credentials::totp(&c.totp_secret, &services.config.municipality, &email)
                .map_err(|e| WebError::Api(crate::http::ApiError::Internal(e)))?;
            let now = u64::try_from(now_ms() / 1000).unwrap_or_default();
            match credentials::totp_step(&totp, &form.totp, now) {
                Some(step) if step > c.totp_last_step => {
                    store::use_totp_step(&services.db, a.user.id, step)
                        .await?
                        .then_some(step)
                }
                _ => None,
            }
        }
        _ => None,
    };
    match (account, step) {
        (Some(account), Some(_)) => {
            store::clear_failures(&services.db, &format!("acct:{}|{address}", account.user.id))
                .await?;
            open_session(&services, &visitor, account.user.id, "password_totp", &next).await
        }
        _ => {
            store::record_failure(&services.db, &keys, FORGET_FAILURES_MS).await?;
            failed(
                "E-mail, password o codice dell'app non corretti.".to_owned(),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Template)]
#[template(path = "activation.html")]
struct ActivationPage {
    page: Layout,
    secret: String,
    name: String,
    totp_secret: String,
    otpauth: String,
    qr_svg: String,
    error: Option<String>,
}

fn activation_page_for(
    services: &Services,
    visitor: &Visitor,
    secret: String,
    user: &crate::db::users::UserRecord,
    totp_secret: String,
    error: Option<String>,
) -> Result<Response, WebError> {
    let totp = credentials::totp(&totp_secret, &services.config.municipality, &user.name)
        .map_err(|e| WebError::Api(crate::http::ApiError::Internal(e)))?;
    let (otpauth, qr_svg) = credentials::enrolment(&totp)
        .map_err(|e| WebError::Api(crate::http::ApiError::Internal(e)))?;
    render(&ActivationPage {
        page: Layout::new(services, visitor, "Attiva il tuo account", ""),
        secret,
        name: user.name.clone(),
        totp_secret,
        otpauth,
        qr_svg,
        error,
    })
}

async fn activation_page(
    State(services): State<Services>,
    visitor: Visitor,
    Path(secret): Path<String>,
) -> Result<Response, WebError> {
    let (_, user) =
        store::activation_link(&services.db, &services.config.tenant, &hash_token(&secret))
            .await?
            .ok_or(crate::http::ApiError::NotFound)?;
    activation_page_for(
        &services,
        &visitor,
        secret,
        &user,
        credentials::new_totp_secret(),
        None,
    )
}

#[derive(Deserialize)]
struct Activate {
    csrf: String,
    password: String,
    password_again: String,
    totp_secret: String,
    totp: String,
}

async fn activate(
    State(services): State<Services>,
    visitor: Visitor,
    Path(secret): Path<String>,
    Form(form): Form<Activate>,
) -> Result<Response, WebError> {
    visitor.check_csrf(&form.csrf)?;
    let (link, user) =
        store::activation_link(&services.db, &services.config.tenant, &hash_token(&secret))
            .await?
            .ok_or(crate::http::ApiError::NotFound)?;
    let retry = |message: String| -> Result<Response, WebError> {
        let mut r = activation_page_for(
            &services,
            &visitor,
            secret.clone(),
            &user,
            form.totp_secret.clone(),
            Some(message),
        )?;
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        Ok(r)
    };
    if form.password != form.password_again {
        return retry("Le due password non coincidono.".to_owned());
    }
    if let Err(e) = credentials::check_new_password(&form.password, &[&user.name]) {
        return retry(format!("Scegli un'altra password: {e}."));
    }
    let Ok(totp) = credentials::totp(&form.totp_secret, &services.config.municipality, &user.name)
    else {
        return retry("Il codice segreto dell'app non è valido: ricarica la pagina.".to_owned());
    };
    let now = u64::try_from(now_ms() / 1000).unwrap_or_default();
    if credentials::totp_step(&totp, &form.totp, now).is_none() {
        return retry(
            "Il codice dell'app non è corretto. Controlla che l'ora del telefono sia giusta e \
             inserisci il codice che l'app mostra ora."
                .to_owned(),
        );
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || credentials::hash_password(&password))
        .await
        .map_err(|e| WebError::Api(crate::http::ApiError::Internal(e.into())))?
        .map_err(|e| WebError::Api(crate::http::ApiError::Internal(e)))?;
    let actor = Actor::of(&Caller::from_user(user.clone()), visitor.client.clone());
    if !store::set_credential(
        &services.db,
        user.id,
        &hash,
        &form.totp_secret,
        Some(&link),
        &actor,
    )
    .await?
    {
        return Err(crate::http::ApiError::NotFound.into());
    }
    Ok(see_other("/accedi?attivato=1"))
}

#[derive(Deserialize)]
struct SignOut {
    csrf: String,
}

async fn sign_out(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<SignOut>,
) -> Result<Response, WebError> {
    visitor.check_csrf(&form.csrf)?;
    if let Some(session) = &visitor.session {
        let actor = Actor::of(
            &Caller::from_user(session.user.clone()),
            visitor.client.clone(),
        );
        store::end_session(&services.db, &session.id_hash, &actor, session.user.id).await?;
    }
    let mut response = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&visitor.cleared_cookie()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response.into_response())
}

/// The personal area: the page each role starts from.
async fn personal_area(visitor: Visitor) -> Result<Response, WebError> {
    let caller = visitor.caller("/area-personale")?;
    Ok(see_other(match caller.role() {
        Role::Citizen | Role::Professional => "/pratiche",
        Role::Staff => "/ufficio/coda",
        Role::Auditor => "/audit",
        Role::Admin => "/amministrazione",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/pratiche/1")), "/pratiche/1");
        assert_eq!(safe_next(Some("//evil.example")), "/area-personale");
        assert_eq!(safe_next(Some("https://evil.example")), "/area-personale");
        assert_eq!(safe_next(Some("/\\evil.example")), "/area-personale");
        assert_eq!(safe_next(None), "/area-personale");
    }

    #[test]
    fn failures_slow_down_per_key_and_never_lock_an_account_for_long() {
        let now = 1_000_000_000;
        let k = |key: &str, n: i32| (key.to_owned(), n, now);
        assert_eq!(wait_seconds(&[k("acct:u|addr:1.2.3.4", 2)], now), 0);
        assert_eq!(wait_seconds(&[k("acct:u|addr:1.2.3.4", 3)], now), 1);
        assert_eq!(wait_seconds(&[k("acct:u|addr:1.2.3.4", 6)], now), 8);
        assert_eq!(wait_seconds(&[k("acct:u|addr:1.2.3.4", 60)], now), 900);
        // The account alone, however many failures from elsewhere: at most 30 s.
        assert_eq!(wait_seconds(&[k("acct:u", 1000)], now), 30);
        // Time passing since the last failure counts.
        assert_eq!(
            wait_seconds(&[("acct:u".to_owned(), 1000, now - 20_000)], now),
            10
        );
        assert_eq!(wait_seconds(&[k("addr:1.2.3.4", 19)], now), 0);
    }
}
