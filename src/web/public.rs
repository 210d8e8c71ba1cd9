//! Pages anyone may read: the home page, the procedure catalogue, one page per procedure,
//! and the privacy, accessibility and legal notes.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::visitor::Visitor;
use super::{Layout, WebError, render};
use crate::app::Services;
use crate::domain::Procedure;
use crate::http::ApiError;

/// Routes of the public pages.
pub fn router() -> Router<Services> {
    Router::new()
        .route("/", get(home))
        .route("/servizi", get(catalogue))
        .route("/servizi/{code}", get(procedure))
        .route("/privacy", get(privacy))
        .route("/accessibilita", get(accessibility))
        .route("/note-legali", get(legal))
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    page: Layout,
    procedures: usize,
    offices: usize,
}

async fn home(State(services): State<Services>, visitor: Visitor) -> Result<Response, WebError> {
    render(&Home {
        page: Layout::new(&services, &visitor, "Sportello unico digitale", "/"),
        procedures: services.catalogue.procedures().count(),
        offices: services.catalogue.offices().count(),
    })
}

/// One office and its procedures, as the catalogue lists them.
struct OfficeGroup<'a> {
    name: &'a str,
    procedures: Vec<&'a Procedure>,
}

#[derive(Template)]
#[template(path = "catalogue.html")]
struct CataloguePage<'a> {
    page: Layout,
    q: String,
    groups: Vec<OfficeGroup<'a>>,
    found: usize,
}

#[derive(Deserialize)]
struct CatalogueQuery {
    q: Option<String>,
}

async fn catalogue(
    State(services): State<Services>,
    visitor: Visitor,
    Query(query): Query<CatalogueQuery>,
) -> Result<Response, WebError> {
    let q = query.q.unwrap_or_default();
    let words: Vec<String> = q
        .split_whitespace()
        .take(10)
        .map(|w| w.to_lowercase())
        .collect();
    let matches = |p: &Procedure| {
        let text = format!("{} {} {}", p.name, p.code.as_str(), p.description).to_lowercase();
        words.iter().all(|w| text.contains(w.as_str()))
    };
    let mut groups = Vec::new();
    let mut found = 0;
    for office in services.catalogue.offices() {
        let procedures: Vec<&Procedure> = services
            .catalogue
            .procedures()
            .filter(|p| p.office == office.code && matches(p))
            .collect();
        found += procedures.len();
        if !procedures.is_empty() {
            groups.push(OfficeGroup {
                name: &office.name,
                procedures,
            });
        }
    }
    render(&CataloguePage {
        page: Layout::new(&services, &visitor, "Servizi", "/servizi"),
        q,
        groups,
        found,
    })
}

#[derive(Template)]
#[template(path = "procedure.html")]
struct ProcedurePage<'a> {
    page: Layout,
    procedure: &'a Procedure,
    office: &'a str,
    regime: &'static str,
}

/// What a regime means for the applicant.
fn regime_label(regime: &str) -> &'static str {
    match regime {
        "autorizzazione" => "Autorizzazione: l'ufficio decide prima che tu possa procedere",
        "scia" => {
            "Segnalazione certificata (SCIA): puoi iniziare dal giorno della presentazione; l'ufficio controlla dopo"
        }
        "silenzio-assenso" => {
            "Silenzio assenso: se l'ufficio non risponde entro il termine, la domanda è accolta"
        }
        "comunicazione" => "Comunicazione: basta informare l'ufficio",
        _ => "Istanza: l'ufficio risponde entro il termine",
    }
}

async fn procedure(
    State(services): State<Services>,
    visitor: Visitor,
    Path(code): Path<String>,
) -> Result<Response, WebError> {
    let procedure = services
        .catalogue
        .procedure(&code)
        .ok_or(ApiError::NotFound)?;
    let office = services
        .catalogue
        .office(procedure.office.as_str())
        .map_or("", |o| o.name.as_str());
    render(&ProcedurePage {
        page: Layout::new(&services, &visitor, procedure.name.clone(), "/servizi")
            .under("Servizi", "/servizi"),
        regime: regime_label(&procedure.regime),
        procedure,
        office,
    })
}

#[derive(Template)]
#[template(path = "info.html")]
struct Info {
    page: Layout,
    paragraphs: Vec<String>,
}

async fn privacy(State(services): State<Services>, visitor: Visitor) -> Result<Response, WebError> {
    let m = &services.config.municipality;
    render(&Info {
        page: Layout::new(&services, &visitor, "Informativa privacy", ""),
        paragraphs: vec![
            format!(
                "Titolare del trattamento è il {m}. I dati personali delle pratiche sono trattati \
                 per svolgere i procedimenti amministrativi richiesti (art. 6, par. 1, lett. c ed e, \
                 Regolamento UE 2016/679)."
            ),
            "Il sito usa soltanto cookie tecnici: uno per la sessione di chi accede all'area \
             personale e uno che protegge i moduli da invii di altri siti. Non usa cookie di \
             profilazione né servizi di terze parti."
                .to_owned(),
            "Ogni lettura di una pratica e dei suoi documenti è registrata nel registro degli \
             accessi, che gli ispettori incaricati possono consultare."
                .to_owned(),
        ],
    })
}

async fn accessibility(
    State(services): State<Services>,
    visitor: Visitor,
) -> Result<Response, WebError> {
    render(&Info {
        page: Layout::new(&services, &visitor, "Dichiarazione di accessibilità", ""),
        paragraphs: vec![
            "Questo sito segue le linee guida AgID sull'accessibilità degli strumenti \
             informatici e il livello AA delle WCAG 2.1: ogni pagina è verificata in un browser \
             con axe-core e ogni modulo si usa con la sola tastiera."
                .to_owned(),
            "I documenti caricati dai cittadini e dagli uffici possono non essere accessibili; \
             per riceverne una versione accessibile, scrivi all'ufficio che gestisce la pratica."
                .to_owned(),
        ],
    })
}

async fn legal(State(services): State<Services>, visitor: Visitor) -> Result<Response, WebError> {
    let m = &services.config.municipality;
    render(&Info {
        page: Layout::new(&services, &visitor, "Note legali", ""),
        paragraphs: vec![format!(
            "I contenuti di questo sito sono del {m}. Le comunicazioni inviate tramite lo \
             sportello hanno il valore previsto dal Codice dell'amministrazione digitale \
             (D.Lgs. 82/2005)."
        )],
    })
}
