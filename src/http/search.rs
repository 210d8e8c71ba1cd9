//! `GET /v1/search`: full-text search over the documents the caller may read.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::ApiQuery;
use crate::access::Caller;
use crate::app::Services;
use crate::domain::{DocumentKind, DossierId, DossierStatus, Role};
use crate::index::IndexError;
use crate::index::search::{Filters, SearchRequest, SearchResult, SortBy, Stop, stopped};

/// Routes of this resource.
pub fn router() -> Router<Services> {
    Router::new().route("/search", get(search))
}

/// Query of `GET /v1/search`.
#[derive(Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Words (all required), `"phrases"`, `-excluded`, `OR`. Empty: everything readable.
    pub(crate) q: Option<String>,
    /// Procedure code.
    pub(crate) procedure: Option<String>,
    /// Office code.
    pub(crate) office: Option<String>,
    /// Document kind.
    pub(crate) kind: Option<String>,
    /// Dossier status.
    pub(crate) status: Option<String>,
    /// Year the dossier was opened.
    pub(crate) year: Option<u64>,
    /// Dossier id.
    pub(crate) dossier: Option<String>,
    /// Newest version on or after this date (YYYY-MM-DD).
    pub(crate) from: Option<String>,
    /// Newest version before the end of this date (YYYY-MM-DD).
    pub(crate) to: Option<String>,
    /// Page size, 1–100 (default 10).
    pub(crate) limit: Option<usize>,
    /// Hits to skip, up to 10000.
    pub(crate) offset: Option<usize>,
    /// `relevance` (default with a query) or `date` (default without).
    pub(crate) sort: Option<String>,
    /// `true`: only signed files (CAdES `.p7m`, signed PDFs).
    pub(crate) signed: Option<bool>,
    /// Only files signed by this codice fiscale (office staff and auditors).
    pub(crate) signer: Option<String>,
}

fn bad(message: impl ToString) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// Start of a calendar day in the municipality's time zone, in ms; `next_day` for the end.
fn day_ms(date: &str, next_day: bool) -> Result<i64, ApiError> {
    let day: jiff::civil::Date = date
        .parse()
        .map_err(|_| bad(format!("{date:?} is not a date (YYYY-MM-DD)")))?;
    let day = if next_day {
        day.tomorrow().map_err(bad)?
    } else {
        day
    };
    let zoned = day
        .to_zoned(jiff::tz::TimeZone::get("Europe/Rome").map_err(|e| ApiError::Internal(e.into()))?)
        .map_err(bad)?;
    Ok(zoned.timestamp().as_millisecond())
}

#[utoipa::path(get, path = "/v1/search", params(SearchQuery),
    responses(
        (status = 200, body = SearchResult, description = "Hits, exact total and facets, over what the caller may read"),
        (status = 400, body = super::error::ErrorBody, description = "Malformed query or filter"),
        (status = 401, body = super::error::ErrorBody),
    ),
    security(("bearer" = [])), tag = "search")]
pub(crate) async fn search(
    State(services): State<Services>,
    caller: Caller,
    client: super::extract::ClientAddress,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Response, ApiError> {
    services
        .limits
        .check(super::limits::Kind::Search, &caller.id().to_string())?;
    let index = services
        .index
        .clone()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("search index not open")))?;
    let limit = query.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(bad("limit must be between 1 and 100"));
    }
    let offset = query.offset.unwrap_or(0);
    if offset > 10_000 {
        return Err(bad(
            "offset must be at most 10000; narrow the search instead",
        ));
    }
    // The public grammar (README): words, phrases, exclusions, OR, groups. What reaches the
    // engine is its quoted rendering: no field, range, wildcard or regex.
    let typed = query.q.unwrap_or_default();
    let parsed = crate::domain::query::PublicQuery::parse(&typed).map_err(bad)?;
    if parsed.is_empty() && !typed.trim().is_empty() {
        return Err(bad(
            "the query holds no word to search for (wildcards and field names are not part of \
             the search syntax)",
        ));
    }
    let q = parsed.to_engine();
    let signer = match query.signer {
        None => None,
        Some(_) if !matches!(caller.role(), Role::Staff | Role::Auditor) => {
            return Err(bad("the signer filter is for office staff and auditors"));
        }
        Some(cf) => {
            let cf = cf.trim().to_ascii_uppercase();
            if cf.is_empty() || cf.len() > 32 || !cf.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad("signer must be a codice fiscale"));
            }
            Some(cf)
        }
    };
    let filters = Filters {
        procedure: query.procedure,
        office: query.office,
        kind: query
            .kind
            .map(|k| k.parse::<DocumentKind>())
            .transpose()
            .map_err(bad)?,
        status: query
            .status
            .map(|s| s.parse::<DossierStatus>())
            .transpose()
            .map_err(bad)?,
        dossier: query
            .dossier
            .map(|d| DossierId::parse(&d).ok_or_else(|| bad("dossier is not a dossier id")))
            .transpose()?,
        year: query.year,
        signed: match query.signed {
            Some(true) => true,
            Some(false) => return Err(bad("signed can only be true")),
            None => false,
        },
        signer,
    };
    let sort = match query.sort.as_deref() {
        None => None,
        Some("relevance") => Some(SortBy::Relevance),
        Some("date") => Some(SortBy::Date),
        Some(other) => {
            return Err(bad(format!(
                "sort must be relevance or date, not {other:?}"
            )));
        }
    };
    let request = SearchRequest {
        q,
        filters,
        from_ms: query
            .from
            .as_deref()
            .map(|d| day_ms(d, false))
            .transpose()?,
        to_ms: query.to.as_deref().map(|d| day_ms(d, true)).transpose()?,
        limit,
        offset,
        sort,
        stop: None,
    };
    let filters: Vec<String> = request
        .filters
        .named()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let actor = crate::audit::Actor::of(&caller, client.0.clone());
    let permission = caller
        .search_permission(&services.db, index.fields())
        .await?;
    // At most so many searches run at once; the others wait their turn here. A search stops
    // between segments once over its time budget, or once its client has gone away (this
    // handler is dropped then, and the guard raises the flag).
    let _running = match &services.limits.searches {
        Some(searches) => Some(
            searches
                .acquire()
                .await
                .map_err(|e| ApiError::Internal(e.into()))?,
        ),
        None => None,
    };
    let abandoned = AbandonOnDrop::default();
    let mut request = request;
    request.stop = Some(Stop {
        deadline: std::time::Instant::now()
            + std::time::Duration::from_millis(services.config.search_budget_ms),
        abandoned: abandoned.0.clone(),
    });
    // The search, its audit record and the response body are made on one blocking thread: the
    // record is handed to the journal once the page is read (it names the hits), and is
    // written while the snippets are made and the body is serialised.
    let span = tracing::Span::current();
    let auditor = services.auditor.clone();
    let (receipt, outcome) = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let record = |result: &str, detail: serde_json::Value| {
            auditor.submit_blocking(actor.event(
                "search",
                "search".to_owned(),
                None,
                result,
                detail,
            ))
        };
        // The record names every document whose text the answer carries, with its dossier:
        // the dossier's history lists this search (see `audit::append_in_tx`).
        let disclosed = |total: u64, hits: &[crate::index::search::Hit]| {
            let disclosed: Vec<serde_json::Value> = hits
                .iter()
                .map(|h| serde_json::json!({"document": h.document_id, "dossier": h.dossier_id}))
                .collect();
            serde_json::json!({
                "query": typed, "filters": filters, "total": total, "disclosed": disclosed,
            })
        };
        let mut receipt = None;
        let outcome = index.search_disclosing(&request, permission, &mut |total, hits| {
            receipt = Some(record("ok", disclosed(total, hits)));
        });
        let receipt = match (receipt, &outcome) {
            (Some(receipt), _) => receipt,
            (None, Ok(result)) => record("ok", disclosed(result.total, &result.hits)),
            (None, Err(e)) => record(
                if matches!(e, IndexError::Query(_)) {
                    "rejected"
                } else {
                    "error"
                },
                serde_json::json!({ "query": typed, "filters": filters }),
            ),
        };
        (receipt, outcome.map(|result| serde_json::to_vec(&result)))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    receipt
        .map_err(|e| ApiError::Internal(e.into()))?
        .durable()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    match outcome {
        Ok(body) => {
            let body = body.map_err(|e| ApiError::Internal(e.into()))?;
            Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Err(IndexError::Query(message)) => Err(bad(message)),
        Err(e) if stopped(&e).is_some() => Err(ApiError::Unavailable(
            "the search ran past its time budget; narrow it with more words or filters".into(),
        )),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

/// Raises its flag when dropped: the search handler holding it was dropped before the search
/// ended, because its client went away.
#[derive(Default)]
struct AbandonOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
