//! The procedure catalogue: the municipality's offices and the procedures each handles.
//! It is declarative data (`schema/procedures.json`), checked once when loaded.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{OfficeCode, ProcedureCode};

/// An office of the municipality.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Office {
    /// Stable code, e.g. `edilizia`.
    #[schema(value_type = String)]
    pub code: OfficeCode,
    /// Display name.
    pub name: String,
}

/// A kind of procedure a citizen can start.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Procedure {
    /// Stable code, e.g. `scia-edilizia`.
    #[schema(value_type = String)]
    pub code: ProcedureCode,
    /// Display name.
    pub name: String,
    /// The office that handles it.
    #[schema(value_type = String)]
    pub office: OfficeCode,
    /// Legal deadline to conclude it, in days.
    pub deadline_days: u32,
    /// What it is for, in a sentence or two.
    pub description: String,
    /// Who may apply.
    pub who_may_apply: String,
    /// Documents an application must carry; the applicant ticks each before filing.
    pub required_documents: Vec<String>,
    /// Documents that may be added.
    pub optional_documents: Vec<String>,
    /// The administrative regime: `autorizzazione` (the office decides), `scia` (work may
    /// start at once, the office checks), `silenzio-assenso` (granted unless refused in time),
    /// `comunicazione` (notice only), or `istanza` (any other request).
    pub regime: String,
}

/// The whole catalogue, validated.
#[derive(Clone, Debug)]
pub struct Catalogue {
    offices: BTreeMap<OfficeCode, Office>,
    procedures: BTreeMap<ProcedureCode, Procedure>,
}

/// A catalogue file that does not hold together.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// Not the expected JSON.
    #[error("catalogue is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    /// A bad code, duplicate, or reference to an unknown office.
    #[error("catalogue: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct RawCatalogue {
    offices: Vec<RawOffice>,
    procedures: Vec<RawProcedure>,
}
#[derive(Deserialize)]
struct RawOffice {
    code: String,
    name: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcedure {
    code: String,
    name: String,
    office: String,
    deadline_days: u32,
    #[serde(default)]
    description: String,
    #[serde(default)]
    who_may_apply: String,
    #[serde(default)]
    required_documents: Vec<String>,
    #[serde(default)]
    optional_documents: Vec<String>,
    #[serde(default = "default_regime")]
    regime: String,
}

fn default_regime() -> String {
    "istanza".to_owned()
}

/// The regimes a procedure may follow.
const REGIMES: [&str; 5] = [
    "autorizzazione",
    "scia",
    "silenzio-assenso",
    "comunicazione",
    "istanza",
];

/// The catalogue shipped with the server.
const BUILT_IN: &str = include_str!("../../schema/procedures.json");

impl Catalogue {
    /// The catalogue shipped in `schema/procedures.json`.
    pub fn built_in() -> Result<Self, CatalogueError> {
        Self::from_json(BUILT_IN)
    }

    /// Parses and checks a catalogue.
    pub fn from_json(json: &str) -> Result<Self, CatalogueError> {
        let raw: RawCatalogue = serde_json::from_str(json)?;
        let invalid = |m: String| CatalogueError::Invalid(m);
        let mut offices = BTreeMap::new();
        for o in raw.offices {
            let code =
                OfficeCode::parse(&o.code).map_err(|e| invalid(format!("{e}: {}", o.code)))?;
            if offices
                .insert(code.clone(), Office { code, name: o.name })
                .is_some()
            {
                return Err(invalid(format!("office {} listed twice", o.code)));
            }
        }
        let mut procedures = BTreeMap::new();
        for p in raw.procedures {
            let code =
                ProcedureCode::parse(&p.code).map_err(|e| invalid(format!("{e}: {}", p.code)))?;
            let office = OfficeCode::parse(&p.office)
                .ok()
                .filter(|o| offices.contains_key(o))
                .ok_or_else(|| {
                    invalid(format!(
                        "procedure {} names unknown office {}",
                        p.code, p.office
                    ))
                })?;
            if p.deadline_days == 0 {
                return Err(invalid(format!("procedure {} has no deadline", p.code)));
            }
            if !REGIMES.contains(&p.regime.as_str()) {
                return Err(invalid(format!(
                    "procedure {} has regime {:?}; expected one of {}",
                    p.code,
                    p.regime,
                    REGIMES.join(", ")
                )));
            }
            let procedure = Procedure {
                code: code.clone(),
                name: p.name,
                office,
                deadline_days: p.deadline_days,
                description: p.description,
                who_may_apply: p.who_may_apply,
                required_documents: p.required_documents,
                optional_documents: p.optional_documents,
                regime: p.regime,
            };
            if procedures.insert(code, procedure).is_some() {
                return Err(invalid(format!("procedure {} listed twice", p.code)));
            }
        }
        let used: HashSet<_> = procedures.values().map(|p| &p.office).collect();
        if let Some(idle) = offices.keys().find(|o| !used.contains(o)) {
            return Err(invalid(format!("office {idle} handles no procedure")));
        }
        Ok(Self {
            offices,
            procedures,
        })
    }

    /// Looks a procedure up by its code.
    pub fn procedure(&self, code: &str) -> Option<&Procedure> {
        let code = ProcedureCode::parse(code).ok()?;
        self.procedures.get(&code)
    }

    /// Looks an office up by its code.
    pub fn office(&self, code: &str) -> Option<&Office> {
        let code = OfficeCode::parse(code).ok()?;
        self.offices.get(&code)
    }

    /// Every procedure, by code.
    pub fn procedures(&self) -> impl Iterator<Item = &Procedure> {
        self.procedures.values()
    }

    /// Every office, by code.
    pub fn offices(&self) -> impl Iterator<Item = &Office> {
        self.offices.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_is_valid_and_covers_the_main_offices() {
        let c = Catalogue::built_in().expect("built-in catalogue");
        assert!(c.procedures().count() >= 40);
        for office in [
            "edilizia",
            "anagrafe",
            "tributi",
            "servizi_sociali",
            "suap",
            "polizia_locale",
            "istruzione",
        ] {
            assert!(c.office(office).is_some(), "missing office {office}");
        }
        assert_eq!(
            c.procedure("scia-edilizia").map(|p| p.office.as_str()),
            Some("edilizia")
        );
    }

    #[test]
    fn a_procedure_of_an_unknown_office_is_refused() {
        let json = r#"{"offices":[{"code":"a","name":"A"}],
            "procedures":[{"code":"p","name":"P","office":"b","deadline_days":30}]}"#;
        let err = Catalogue::from_json(json).expect_err("unknown office");
        assert!(err.to_string().contains("unknown office b"), "{err}");
    }
}
