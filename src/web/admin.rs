//! The administrators' pages: accounts, their roles and offices, their API tokens. An
//! administrator reads no document content and never sees a credential: a new office account
//! gets its activation link by e-mail, a citizen's account its activation code.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, italian_date, render, see_other};
use crate::app::Services;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiError, ClientAddress, users};

/// Routes of the administrators' pages.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/amministrazione", get(accounts))
        .route("/amministrazione/utenti", post(create))
        .route("/amministrazione/utenti/{id}", get(account))
        .route("/amministrazione/utenti/{id}/uffici", post(offices))
        .route("/amministrazione/utenti/{id}/disattiva", post(disable))
        .route("/amministrazione/token/{id}/revoca", post(revoke_token))
}

fn role_label(role: &str) -> &'static str {
    match role {
        "citizen" => "Cittadino",
        "professional" => "Professionista",
        "staff" => "Personale",
        "auditor" => "Ispettore",
        "admin" => "Amministratore",
        _ => "",
    }
}

/// An account as the list shows it.
struct Row {
    id: String,
    name: String,
    role: &'static str,
    cf: String,
    verified: bool,
    disabled: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AccountsPage {
    page: Layout,
    rows: Vec<Row>,
    offices: Vec<(String, String)>,
    notice: Option<String>,
}

#[derive(Deserialize)]
struct AccountsParams {
    creato: Option<String>,
}

async fn accounts(
    State(services): State<Services>,
    visitor: Visitor,
    Query(params): Query<AccountsParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/amministrazione")?;
    caller.may_administer()?;
    let Json(list) = users::list_users(
        State(services.clone()),
        caller,
        ClientAddress(visitor.client.clone()),
        ApiQuery(users::UsersQuery {
            codice_fiscale: None,
        }),
    )
    .await?;
    let rows = list
        .items
        .iter()
        .map(|u| Row {
            id: u.id.clone(),
            name: u.name.clone(),
            role: role_label(&u.role),
            cf: u.codice_fiscale.clone().unwrap_or_default(),
            verified: u.identity_verified_at.is_some(),
            disabled: u.disabled_at.is_some(),
        })
        .collect();
    render(&AccountsPage {
        page: Layout::new(&services, &visitor, "Amministrazione", "/amministrazione"),
        rows,
        offices: office_choices(&services),
        notice: params.creato.map(|email| {
            format!("Account creato: le istruzioni per attivarlo sono state inviate a {email}.")
        }),
    })
}

fn office_choices(services: &Services) -> Vec<(String, String)> {
    services
        .catalogue
        .offices()
        .map(|o| (o.code.as_str().to_owned(), o.name.clone()))
        .collect()
}

/// The ticked offices of a form, sent as `office_CODE` fields.
fn ticked_offices(fields: &HashMap<String, String>) -> Vec<String> {
    let mut offices: Vec<String> = fields
        .keys()
        .filter_map(|k| k.strip_prefix("office_"))
        .map(str::to_owned)
        .collect();
    offices.sort();
    offices
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    role: String,
    name: String,
    email: String,
    codice_fiscale: Option<String>,
    front_office: Option<String>,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

async fn create(
    State(services): State<Services>,
    visitor: Visitor,
    Form(form): Form<CreateForm>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/amministrazione")?;
    visitor.check_csrf(&form.csrf)?;
    let email = form.email.trim().to_lowercase();
    users::create_user(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        ApiJson(users::CreateUserBody {
            role: form.role,
            name: form.name,
            codice_fiscale: form
                .codice_fiscale
                .map(|c| c.trim().to_uppercase())
                .filter(|c| !c.is_empty()),
            offices: ticked_offices(&form.rest),
            front_office: form.front_office.is_some(),
            email: email.clone(),
        }),
    )
    .await?;
    Ok(see_other(&format!(
        "/amministrazione?creato={}",
        percent_encoding::utf8_percent_encode(&email, percent_encoding::NON_ALPHANUMERIC)
    )))
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct AccountPage {
    page: Layout,
    id: String,
    name: String,
    role: &'static str,
    is_staff: bool,
    disabled: bool,
    offices: Vec<(String, String, bool)>,
    tokens: Vec<(String, String, String, String, bool)>,
}

async fn account(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/amministrazione")?;
    caller.may_administer()?;
    let id = crate::domain::UserId::parse(&raw).ok_or(ApiError::NotFound)?;
    let user = crate::db::users::user_by_id(&services.db, caller.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let Json(list) = users::list_users(
        State(services.clone()),
        caller.clone(),
        ClientAddress(visitor.client.clone()),
        ApiQuery(users::UsersQuery {
            codice_fiscale: None,
        }),
    )
    .await?;
    let disabled = list
        .items
        .iter()
        .any(|u| u.id == raw && u.disabled_at.is_some());
    let Json(tokens) = users::list_tokens(
        State(services.clone()),
        caller,
        ClientAddress(visitor.client.clone()),
        ApiQuery(users::TokensQuery {
            user: Some(raw.clone()),
        }),
    )
    .await?;
    let offices = office_choices(&services)
        .into_iter()
        .map(|(code, name)| {
            let on = user.offices.iter().any(|o| o.as_str() == code);
            (code, name, on)
        })
        .collect();
    render(&AccountPage {
        page: Layout::new(&services, &visitor, user.name.clone(), "/amministrazione")
            .under("Amministrazione", "/amministrazione"),
        id: raw,
        name: user.name.clone(),
        role: role_label(user.role.as_str()),
        is_staff: user.role == crate::domain::Role::Staff,
        disabled,
        offices,
        tokens: tokens
            .items
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.label.clone(),
                    italian_date(&t.created_at),
                    t.expires_at
                        .as_deref()
                        .map(italian_date)
                        .unwrap_or_default(),
                    t.revoked_at.is_none(),
                )
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct OfficesForm {
    csrf: String,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

async fn offices(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<OfficesForm>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/amministrazione")?;
    visitor.check_csrf(&form.csrf)?;
    users::set_offices(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        Path(raw.clone()),
        ApiJson(users::OfficesBody {
            offices: ticked_offices(&form.rest),
        }),
    )
    .await?;
    Ok(see_other(&format!("/amministrazione/utenti/{raw}")))
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn disable(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/amministrazione")?;
    visitor.check_csrf(&form.csrf)?;
    users::disable_user(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        Path(raw.clone()),
    )
    .await?;
    Ok(see_other(&format!("/amministrazione/utenti/{raw}")))
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
    user: String,
}

async fn revoke_token(
    State(services): State<Services>,
    visitor: Visitor,
    Path(raw): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/amministrazione")?;
    visitor.check_csrf(&form.csrf)?;
    users::revoke_token(
        State(services),
        caller,
        ClientAddress(visitor.client.clone()),
        Path(raw),
    )
    .await?;
    let user = crate::domain::UserId::parse(&form.user).ok_or(ApiError::NotFound)?;
    Ok(see_other(&format!("/amministrazione/utenti/{user}")))
}
