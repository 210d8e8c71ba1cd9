//! The office's pages: search across the documents it may read, and its queue of dossiers.

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, render, status_badge};
use crate::app::Services;
use crate::domain::{DocumentKind, DossierStatus};
use crate::http::extract::ApiQuery;
use crate::http::{ApiError, ClientAddress, dossiers, records, search};
use crate::index::search::{Hit, SearchResult};

/// Routes of the office pages.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/ufficio/cerca", get(search_page))
        .route("/ufficio/coda", get(queue))
        .route("/ufficio/statistiche", get(statistics))
}

/// Hits per page.
const PAGE: usize = 10;

/// The search form's fields, as the page's address carries them.
#[derive(Clone, Debug, Default, Deserialize)]
struct SearchParams {
    q: Option<String>,
    procedure: Option<String>,
    kind: Option<String>,
    year: Option<String>,
    status: Option<String>,
    office: Option<String>,
    sort: Option<String>,
    pagina: Option<usize>,
}

impl SearchParams {
    /// This search's address with `field` set to `value` (or removed), from its first page.
    fn with(&self, field: &str, value: Option<&str>) -> String {
        let mut next = self.clone();
        let slot = match field {
            "procedure" => &mut next.procedure,
            "kind" => &mut next.kind,
            "year" => &mut next.year,
            "status" => &mut next.status,
            "office" => &mut next.office,
            _ => &mut next.sort,
        };
        *slot = value.map(str::to_owned);
        next.pagina = None;
        next.href()
    }

    fn href(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let fields = [
            ("q", self.q.as_deref()),
            ("procedure", self.procedure.as_deref()),
            ("kind", self.kind.as_deref()),
            ("year", self.year.as_deref()),
            ("status", self.status.as_deref()),
            ("office", self.office.as_deref()),
            ("sort", self.sort.as_deref()),
        ];
        for (name, value) in fields {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                query.append_pair(name, v);
            }
        }
        if let Some(p) = self.pagina.filter(|p| *p > 1) {
            query.append_pair("pagina", &p.to_string());
        }
        format!("/ufficio/cerca?{}", query.finish())
    }
}

/// One facet value: its label, count, the address that applies or removes it, and whether
/// it is applied.
struct FacetValue {
    label: String,
    count: u64,
    href: String,
    active: bool,
}

/// A facet and its values.
struct Facet {
    title: &'static str,
    values: Vec<FacetValue>,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    page: Layout,
    q: String,
    total: u64,
    hits: Vec<Hit>,
    facets: Vec<Facet>,
    by_date: bool,
    sort_relevance: String,
    sort_date: String,
    previous: Option<String>,
    next: Option<String>,
    first: usize,
    last: usize,
    filters: Vec<(String, String)>,
    offices: Vec<(String, String, bool)>,
}

fn facet_label(services: &Services, field: &str, value: &str) -> String {
    match field {
        "procedure" => services
            .catalogue
            .procedure(value)
            .map_or_else(|| value.to_owned(), |p| p.name.clone()),
        "kind" => value.parse::<DocumentKind>().map_or_else(
            |_| value.to_owned(),
            |k| super::citizen::kind_label(k).to_owned(),
        ),
        "status" => value
            .parse::<DossierStatus>()
            .map_or_else(|_| value.to_owned(), |s| status_badge(s).0.to_owned()),
        "office" => services
            .catalogue
            .office(value)
            .map_or_else(|| value.to_owned(), |o| o.name.clone()),
        _ => value.to_owned(),
    }
}

async fn search_page(
    State(services): State<Services>,
    visitor: Visitor,
    Query(params): Query<SearchParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/ufficio/cerca")?;
    let page_no = params.pagina.unwrap_or(1).clamp(1, 1000);
    let year = params
        .year
        .as_deref()
        .filter(|y| !y.is_empty())
        .map(|y| {
            y.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid_query", "l'anno non è un numero"))
        })
        .transpose()?;
    let blank = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let query = search::SearchQuery {
        q: blank(&params.q),
        procedure: blank(&params.procedure),
        office: blank(&params.office),
        kind: blank(&params.kind),
        status: blank(&params.status),
        year,
        limit: Some(PAGE),
        offset: Some((page_no - 1) * PAGE),
        sort: blank(&params.sort),
        ..Default::default()
    };
    // The API's own search: the same permission, audit record and results.
    let response = search::search(
        State(services.clone()),
        caller,
        ClientAddress(visitor.client.clone()),
        ApiQuery(query),
    )
    .await?;
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let result: SearchResult =
        serde_json::from_slice(&body).map_err(|e| ApiError::Internal(e.into()))?;
    let mut facets = Vec::new();
    for (field, title) in [
        ("procedure", "Servizio"),
        ("kind", "Tipo di documento"),
        ("year", "Anno"),
        ("status", "Stato della pratica"),
    ] {
        let current = match field {
            "procedure" => params.procedure.as_deref(),
            "kind" => params.kind.as_deref(),
            "year" => params.year.as_deref(),
            _ => params.status.as_deref(),
        };
        let mut values: Vec<FacetValue> = result
            .facets
            .get(field)
            .into_iter()
            .flatten()
            .map(|(value, count)| {
                let active = current == Some(value.as_str());
                FacetValue {
                    label: facet_label(&services, field, value),
                    count: *count,
                    href: params.with(field, if active { None } else { Some(value) }),
                    active,
                }
            })
            .collect();
        values.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        if !values.is_empty() {
            facets.push(Facet { title, values });
        }
    }
    // Each procedure belongs to one office: the office facet is the procedure facet summed by
    // office, exact without a count of its own.
    let mut by_office: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (procedure, count) in result.facets.get("procedure").into_iter().flatten() {
        if let Some(p) = services.catalogue.procedure(procedure) {
            *by_office.entry(p.office.as_str().to_owned()).or_default() += count;
        }
    }
    let mut office_values: Vec<FacetValue> = by_office
        .iter()
        .map(|(code, count)| {
            let active = params.office.as_deref() == Some(code.as_str());
            FacetValue {
                label: services
                    .catalogue
                    .office(code)
                    .map_or_else(|| code.clone(), |o| o.name.clone()),
                count: *count,
                href: params.with("office", if active { None } else { Some(code) }),
                active,
            }
        })
        .collect();
    office_values.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
    if !office_values.is_empty() {
        facets.insert(
            0,
            Facet {
                title: "Ufficio",
                values: office_values,
            },
        );
    }
    let mut filters = Vec::new();
    for (field, value) in [
        ("procedure", &params.procedure),
        ("kind", &params.kind),
        ("year", &params.year),
        ("status", &params.status),
        ("office", &params.office),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            filters.push((facet_label(&services, field, v), params.with(field, None)));
        }
    }
    let offices = services
        .catalogue
        .offices()
        .map(|o| {
            (
                o.code.as_str().to_owned(),
                o.name.clone(),
                params.office.as_deref() == Some(o.code.as_str()),
            )
        })
        .collect();
    let q = params.q.clone().unwrap_or_default();
    let by_date =
        params.sort.as_deref() == Some("date") || (params.sort.is_none() && q.trim().is_empty());
    let first = (page_no - 1) * PAGE + 1;
    let last = first + result.hits.len().saturating_sub(1);
    let at = |n: usize| {
        let mut p = params.clone();
        p.pagina = Some(n);
        p.href()
    };
    render(&SearchPage {
        page: Layout::new(&services, &visitor, "Cerca nei documenti", "/ufficio/cerca"),
        q,
        total: result.total,
        previous: (page_no > 1).then(|| at(page_no - 1)),
        next: ((last as u64) < result.total && !result.hits.is_empty()).then(|| at(page_no + 1)),
        first,
        last,
        hits: result.hits,
        facets,
        by_date,
        sort_relevance: params.with("sort", Some("relevance")),
        sort_date: params.with("sort", Some("date")),
        filters,
        offices,
    })
}

#[derive(Deserialize)]
struct QueueParams {
    stato: Option<String>,
    dopo: Option<String>,
}

/// A dossier in the queue.
struct QueueRow {
    id: String,
    number: String,
    procedure: String,
    subject: String,
    applicant: String,
    days_left: Option<i64>,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    page: Layout,
    tabs: Vec<(String, &'static str, bool)>,
    rows: Vec<QueueRow>,
    next: Option<String>,
    state: String,
}

async fn queue(
    State(services): State<Services>,
    visitor: Visitor,
    Query(params): Query<QueueParams>,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/ufficio/coda")?;
    let state = params
        .stato
        .unwrap_or_else(|| DossierStatus::Submitted.as_str().to_owned());
    let Json(page) = dossiers::list_dossiers(
        State(services.clone()),
        caller.clone(),
        ClientAddress(visitor.client.clone()),
        ApiQuery(dossiers::ListQuery {
            limit: Some(50),
            cursor: params.dopo,
            status: Some(state.clone()),
            ..Default::default()
        }),
    )
    .await?;
    let client = ClientAddress(visitor.client.clone());
    let mut rows = Vec::with_capacity(page.items.len());
    for d in &page.items {
        rows.push(QueueRow {
            id: d.id.to_string(),
            number: d.number.clone(),
            procedure: services
                .catalogue
                .procedure(&d.procedure)
                .map_or_else(|| d.procedure.clone(), |p| p.name.clone()),
            subject: d.subject.clone(),
            applicant: d.applicant_cf.clone(),
            days_left: super::citizen::days_left(&services, &caller, &client, d).await?,
        });
    }
    // Overdue first, then the fewest days left.
    rows.sort_by_key(|r| r.days_left.unwrap_or(i64::MAX));
    let tabs = [
        DossierStatus::Submitted,
        DossierStatus::Started,
        DossierStatus::AwaitingIntegration,
        DossierStatus::Concluded,
        DossierStatus::Withdrawn,
        DossierStatus::Archived,
    ]
    .iter()
    .map(|s| {
        (
            s.as_str().to_owned(),
            status_badge(*s).0,
            s.as_str() == state,
        )
    })
    .collect();
    render(&QueuePage {
        page: Layout::new(
            &services,
            &visitor,
            "Pratiche dell'ufficio",
            "/ufficio/coda",
        ),
        tabs,
        rows,
        next: page.next_cursor,
        state,
    })
}

/// A procedure's figures, as the statistics page shows them.
struct StatRow {
    procedure: String,
    total: u64,
    open: u64,
    median: String,
    p90: String,
    overdue: u64,
    online: String,
    rating: String,
}

#[derive(Template)]
#[template(path = "statistics.html")]
struct StatisticsPage {
    page: Layout,
    rows: Vec<StatRow>,
    days_chart: String,
    overdue_chart: String,
}

/// Escapes text for an SVG document.
fn svg_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart, drawn on the server: one row per label, one or two bars per row
/// (`second` drawn thinner, e.g. the 90th percentile behind the median), values printed at
/// the bars' ends. Its title names it for screen readers; the table beside it holds the same
/// numbers.
fn bar_chart(title: &str, unit: &str, rows: &[(String, f64, Option<f64>)]) -> String {
    const ROW: f64 = 26.0;
    const LABEL: f64 = 330.0;
    const WIDTH: f64 = 860.0;
    let max = rows
        .iter()
        .map(|(_, a, b)| a.max(b.unwrap_or(0.0)))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let scale = (WIDTH - LABEL - 60.0) / max;
    let height = ROW * rows.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {WIDTH} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        svg_text(title),
        svg_text(title)
    );
    for (i, (label, value, second)) in rows.iter().enumerate() {
        let y = i as f64 * ROW + 4.0;
        let shown: String = label.chars().take(48).collect();
        svg.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
            LABEL - 8.0,
            y + 15.0,
            svg_text(&shown)
        ));
        if let Some(b) = second {
            svg.push_str(&format!(
                "<rect class=\"chart-bar-late\" x=\"{LABEL}\" y=\"{:.0}\" width=\"{:.1}\" height=\"6\"></rect>",
                y + 14.0,
                b * scale
            ));
        }
        svg.push_str(&format!(
            "<rect class=\"chart-bar\" x=\"{LABEL}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"12\"></rect>\
             <text x=\"{:.1}\" y=\"{:.0}\">{}{unit}</text>",
            value * scale,
            LABEL + value.max(second.unwrap_or(0.0)) * scale + 6.0,
            y + 12.0,
            match second {
                Some(b) => format!("{value:.0} / {b:.0}"),
                None => format!("{value:.0}"),
            }
        ));
    }
    svg.push_str("</svg>");
    svg
}

async fn statistics(
    State(services): State<Services>,
    visitor: Visitor,
) -> Result<Response, WebError> {
    let caller = visitor.caller("/ufficio/statistiche")?;
    let Json(stats) = records::stats(
        State(services.clone()),
        caller,
        ClientAddress(visitor.client.clone()),
    )
    .await?;
    let name = |code: &str| {
        services
            .catalogue
            .procedure(code)
            .map_or_else(|| code.to_owned(), |p| p.name.clone())
    };
    let mut items = stats.items;
    items.sort_by(|a, b| b.total.cmp(&a.total).then(a.procedure.cmp(&b.procedure)));
    let days: Vec<(String, f64, Option<f64>)> = items
        .iter()
        .filter_map(|s| {
            s.median_days
                .map(|m| (name(&s.procedure), m as f64, s.p90_days.map(|p| p as f64)))
        })
        .collect();
    let overdue: Vec<(String, f64, Option<f64>)> = items
        .iter()
        .filter(|s| s.overdue > 0)
        .map(|s| (name(&s.procedure), s.overdue as f64, None))
        .collect();
    let rows = items
        .iter()
        .map(|s| StatRow {
            procedure: name(&s.procedure),
            total: s.total,
            open: ["submitted", "started", "awaiting_integration"]
                .iter()
                .map(|k| s.by_status.get(*k).copied().unwrap_or(0))
                .sum(),
            median: s
                .median_days
                .map_or_else(|| "-".to_owned(), |d| d.to_string()),
            p90: s.p90_days.map_or_else(|| "-".to_owned(), |d| d.to_string()),
            overdue: s.overdue,
            online: format!("{:.0}%", s.online_share * 100.0),
            rating: s
                .average_rating
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} ({})", s.ratings)),
        })
        .collect();
    render(&StatisticsPage {
        page: Layout::new(&services, &visitor, "Statistiche", "/ufficio/statistiche"),
        rows,
        days_chart: bar_chart(
            "Giorni di lavorazione per servizio: mediana (barra) e 90° percentile (linea rossa)",
            " gg",
            &days,
        ),
        overdue_chart: bar_chart(
            "Pratiche oltre il termine di legge, per servizio",
            "",
            &overdue,
        ),
    })
}
