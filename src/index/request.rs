//! A search as the index takes it and answers it: the typed request, its filters, when it
//! stops (and the collector that checks it), the caller's permission, the hits.

use serde::Serialize;
use tantivy::Term;
use tantivy::collector::Collector;
use tantivy::query::{EnableScoring, Query};

use super::IndexError;
use super::facets::FacetCounts;

/// How hits are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Best match first.
    Relevance,
    /// Newest first.
    Date,
}

/// The exact-match filters of a search, typed: each one a term every hit must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Procedure code.
    pub procedure: Option<String>,
    /// Office code.
    pub office: Option<String>,
    /// Document kind.
    pub kind: Option<crate::domain::DocumentKind>,
    /// Dossier status.
    pub status: Option<crate::domain::DossierStatus>,
    /// One dossier.
    pub dossier: Option<crate::domain::DossierId>,
    /// Year the dossier was opened.
    pub year: Option<u64>,
    /// Only signed files.
    pub signed: bool,
    /// Only files one person signed: their codice fiscale, upper case.
    pub signer: Option<String>,
}

impl Filters {
    /// Each filter as the field it matches and its value (the year as text), in a fixed
    /// order: what the search's audit record lists, and what becomes its terms.
    pub fn named(&self) -> Vec<(&'static str, String)> {
        [
            ("procedure", self.procedure.clone()),
            ("office", self.office.clone()),
            ("kind", self.kind.map(|k| k.as_str().to_owned())),
            ("status", self.status.map(|s| s.as_str().to_owned())),
            ("dossier_id", self.dossier.map(|d| d.to_string())),
            ("signed", self.signed.then(|| "yes".to_owned())),
            ("signer", self.signer.clone()),
            ("year", self.year.map(|y| y.to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
    }

    /// The terms every hit must hold: each filter's value in the field of its name.
    pub fn terms(&self, schema: &tantivy::schema::Schema) -> Result<Vec<Term>, IndexError> {
        let mut terms = Vec::new();
        for (name, value) in self.named() {
            let field = schema.get_field(name)?;
            terms.push(match self.year {
                Some(year) if name == "year" => Term::from_field_u64(field, year),
                _ => Term::from_field_text(field, &value),
            });
        }
        Ok(terms)
    }
}

/// A search, already validated.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    /// The user's query; empty matches everything the caller may see.
    pub q: String,
    /// The exact-match filters.
    pub filters: Filters,
    /// Newest version at or after (ms).
    pub from_ms: Option<i64>,
    /// Newest version before (ms).
    pub to_ms: Option<i64>,
    /// Page size.
    pub limit: usize,
    /// Hits skipped.
    pub offset: usize,
    /// Order.
    pub sort: Option<SortBy>,
    /// When to give up: a time budget, and a flag the server sets when the client goes away.
    pub stop: Option<Stop>,
}

/// When a search stops: checked before each segment is visited.
#[derive(Clone, Debug)]
pub struct Stop {
    /// Past this, the search stops.
    pub deadline: std::time::Instant,
    /// Set when nobody waits for the answer any more.
    pub abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Stop {
    pub(super) fn check(&self) -> tantivy::Result<()> {
        if self.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(tantivy::TantivyError::InternalError(
                STOPPED_ABANDONED.into(),
            ));
        }
        if std::time::Instant::now() >= self.deadline {
            return Err(tantivy::TantivyError::InternalError(STOPPED_BUDGET.into()));
        }
        Ok(())
    }
}

/// The error texts of a stopped search, told apart by [`stopped`].
const STOPPED_BUDGET: &str = "search stopped: over its time budget";
const STOPPED_ABANDONED: &str = "search stopped: the client went away";

/// Whether `e` is a search stopped by its [`Stop`], and which way: over budget (`true`) or
/// abandoned (`false`).
pub fn stopped(e: &IndexError) -> Option<bool> {
    let IndexError::Tantivy(tantivy::TantivyError::InternalError(text)) = e else {
        return None;
    };
    match text.as_str() {
        STOPPED_BUDGET => Some(true),
        STOPPED_ABANDONED => Some(false),
        _ => None,
    }
}

/// A collector that checks a [`Stop`], if any, before each segment, then lets `inner` collect
/// it.
pub(super) struct Stoppable<'a, C> {
    pub(super) inner: &'a C,
    pub(super) stop: Option<&'a Stop>,
}

impl<C> Stoppable<'_, C> {
    fn check(&self) -> tantivy::Result<()> {
        self.stop.map_or(Ok(()), Stop::check)
    }
}

impl<C: Collector> Collector for Stoppable<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn for_segment(
        &self,
        segment_local_id: tantivy::SegmentOrdinal,
        segment: &tantivy::SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        self.check()?;
        self.inner.for_segment(segment_local_id, segment)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(
        &self,
        segment_fruits: Vec<<Self::Child as tantivy::collector::SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Self::Fruit> {
        self.inner.merge_fruits(segment_fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        segment_ord: tantivy::SegmentOrdinal,
        reader: &tantivy::SegmentReader,
    ) -> tantivy::Result<<Self::Child as tantivy::collector::SegmentCollector>::Fruit> {
        self.check()?;
        self.inner.collect_segment(weight, segment_ord, reader)
    }
}

/// One hit.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Hit {
    /// Document id.
    #[schema(value_type = String)]
    pub document_id: crate::domain::DocumentId,
    /// Dossier id.
    #[schema(value_type = String)]
    pub dossier_id: crate::domain::DossierId,
    /// Dossier number.
    pub dossier_number: String,
    /// Title.
    pub title: String,
    /// Kind.
    pub kind: String,
    /// Place in the whole result, from 1.
    pub rank: usize,
    /// Relevance score (0 when sorted by date or searching without words). Not sent: it is
    /// computed from statistics over documents the caller may not read.
    #[serde(skip)]
    pub score: f32,
    /// HTML: the best passage, matches in `<mark>`, everything else escaped.
    pub snippet: String,
}

/// The answer.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SearchResult {
    /// Exact number of matching documents the caller may read.
    pub total: u64,
    /// The requested page.
    pub hits: Vec<Hit>,
    /// Counts per value of `procedure`, `kind`, `year`, `status`.
    #[schema(value_type = Object)]
    pub facets: FacetCounts,
}

/// What a caller may find: a query selecting the documents, and a key naming exactly what it
/// selects when it is worth keeping per segment (see [`super::cache`]).
pub struct Permission {
    /// The documents the caller may read.
    pub query: Box<dyn Query>,
    /// For broad or costly permissions: the role, tenant and scope it was built from.
    pub cache_key: Option<super::cache::FilterKey>,
    /// The permission admits only the documents of a few dossiers: a search over so few is
    /// cheaper on the calling thread than handed to every core.
    pub narrow: bool,
    /// The permission admits a large part of the index (the tenant, an office): its searches
    /// visit most of a phrase's matches anyway, and find a segment's whole to keep them.
    pub broad: bool,
}

/// A query built only when a search evaluates it. A kept permission's query (a term per
/// dossier, hundreds for a busy professional) is not needed while its filters are kept.
#[derive(Clone)]
pub struct Deferred(std::sync::Arc<dyn Fn() -> Box<dyn Query> + Send + Sync>);

impl Deferred {
    /// The query `build` returns, built anew each time it is evaluated.
    pub fn new(build: impl Fn() -> Box<dyn Query> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(build))
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

impl Query for Deferred {
    fn weight(
        &self,
        scoring: EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        (self.0)().weight(scoring)
    }
}
