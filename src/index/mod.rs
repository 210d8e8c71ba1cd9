//! The search index (DESIGN.md §1, derived data): tantivy with an Italian analyzer, one
//! document per dossier document (its newest version), and the position in the change log
//! kept in the commit payload so indexing resumes exactly where it stopped.

mod bits;
mod cache;
#[cfg(test)]
mod differential;
pub use cache::FilterKey;
mod facet_table;
mod facets;
mod filter;
mod phrase;
mod request;
mod scope;
pub mod search;
mod shape;
mod snippet;
mod stem;

use std::path::Path;
use std::sync::Mutex;

use crate::domain::{DocumentId, DossierId};
use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

/// Bumped whenever the schema or the analyzer changes; an index of another version is
/// rebuilt from the database.
pub const SCHEMA_VERSION: u32 = 5;
/// Name of the Italian analyzer.
pub const ITALIAN: &str = "it_text";
const STOP_WORDS: &str = include_str!("../../schema/stopwords_it.txt");
/// Memory the server's writer may use before it flushes a segment.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// Memory a full rebuild's writer may use, over all its threads: larger segments, fewer
/// merges.
const REBUILD_MEMORY: usize = 768 * 1024 * 1024;

/// An index failure.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// tantivy failed.
    #[error(transparent)]
    Tantivy(#[from] tantivy::TantivyError),
    /// Opening the directory failed.
    #[error(transparent)]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    /// Filesystem error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The query could not be parsed; the message is for the user.
    #[error("{0}")]
    Query(String),
}

/// How the index is stored: the document store (titles and texts, for snippets) is compressed
/// with zstd, about half the size of lz4 on Italian prose, in 32 KiB blocks: 8 % smaller than
/// 16 KiB ones, and still about 20 µs to decompress for each hit of a page.
fn settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::Zstd(tantivy::store::ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: 32 * 1024,
        ..Default::default()
    }
}

/// The fields of the schema.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// Document id.
    pub doc_id: Field,
    /// Dossier id.
    pub dossier_id: Field,
    /// Dossier number.
    pub dossier_number: Field,
    /// Municipality.
    pub tenant: Field,
    /// Office handling the dossier.
    pub office: Field,
    /// Procedure code.
    pub procedure: Field,
    /// Document kind.
    pub kind: Field,
    /// Dossier status.
    pub status: Field,
    /// Document visibility.
    pub visibility: Field,
    /// Year the dossier was opened.
    pub year: Field,
    /// Time of the newest version, ms since the epoch.
    pub date: Field,
    /// Title, stored for display.
    pub title: Field,
    /// Extracted text, stored for snippets.
    pub text: Field,
    /// What the user's words are searched in: the title (twice, which weighs its words
    /// double) and the text, analysed in Italian, with positions for phrases. One field, so a
    /// word is one posting list and a phrase one scorer, not a union over two fields.
    pub body: Field,
    /// `yes` on a document whose file is signed (CAdES or PAdES).
    pub signed: Field,
    /// The codice fiscale of each signer.
    pub signer: Field,
}

fn build_schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let italian = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ITALIAN)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        doc_id: b.add_text_field("doc_id", STRING | STORED),
        dossier_id: b.add_text_field("dossier_id", STRING | STORED),
        dossier_number: b.add_text_field("dossier_number", STRING | STORED),
        tenant: b.add_text_field("tenant", STRING),
        office: b.add_text_field("office", STRING | FAST),
        procedure: b.add_text_field("procedure", STRING | FAST),
        kind: b.add_text_field("kind", STRING | FAST | STORED),
        status: b.add_text_field("status", STRING | FAST),
        visibility: b.add_text_field("visibility", STRING),
        year: b.add_u64_field("year", INDEXED | FAST),
        date: b.add_i64_field("date", INDEXED | FAST | STORED),
        title: b.add_text_field("title", STORED),
        text: b.add_text_field("text", STORED),
        body: b.add_text_field("body", italian),
        signed: b.add_text_field("signed", STRING),
        signer: b.add_text_field("signer", STRING),
    };
    (b.build(), fields)
}

/// The Italian analyzer: split on anything not a letter or digit (which also splits elisions
/// such as "dell'atto" and "l’istanza"), lower-case, fold accents, drop stop words, stem.
pub fn italian_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(stop_words())
        .filter(stem::ItalianStemmer::default())
        .build()
}

/// The stop words the analyzers drop (after lower-casing and folding), read once.
fn stop_words() -> StopWordFilter {
    static FILTER: std::sync::LazyLock<StopWordFilter> = std::sync::LazyLock::new(|| {
        StopWordFilter::remove(
            STOP_WORDS
                .lines()
                .filter(|l| !l.starts_with('#'))
                .flat_map(|l| l.split_whitespace())
                .map(str::to_owned),
        )
    });
    FILTER.clone()
}

/// One indexed document.
#[derive(Clone, Debug)]
pub struct IndexedDoc {
    /// Document id.
    pub doc_id: DocumentId,
    /// Dossier id.
    pub dossier_id: DossierId,
    /// Dossier number.
    pub dossier_number: String,
    /// Municipality.
    pub tenant: String,
    /// Office.
    pub office: String,
    /// Procedure.
    pub procedure: String,
    /// Kind.
    pub kind: String,
    /// Dossier status.
    pub status: String,
    /// Visibility.
    pub visibility: String,
    /// Dossier year.
    pub year: u64,
    /// Newest version time (ms).
    pub date_ms: i64,
    /// Title.
    pub title: String,
    /// Extracted text.
    pub text: String,
    /// The file is signed (CAdES or PAdES).
    pub signed: bool,
    /// The codice fiscale of each signer.
    pub signers: Vec<String>,
}

/// What the commit payload records.
#[derive(Serialize, Deserialize, Default)]
struct Payload {
    schema: u32,
    position: i64,
}

/// The index with its single writer and a reader.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// The change-log position whose changes searches can see (set after the reader reloads).
    visible: std::sync::atomic::AtomicI64,
    /// Facet tables and permission filters per segment, warmed when the reader reloads.
    caches: std::sync::Arc<cache::SegmentCaches>,
    /// Runs the segments of a large index's searches, and reads their pages, on every core.
    parallel: tantivy::Executor,
    /// How many threads `parallel` has.
    cores: usize,
    /// Searches over at least this many documents run on every core (a setting so that the
    /// tests can reach the multi-core path with a small index).
    parallel_from_docs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it, or recreating it empty when it was built with
    /// another schema version (the pipeline then rebuilds it from the change log).
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        Self::open_with_writer(dir, 1, WRITER_MEMORY)
    }

    /// Opens the index for a full rebuild: a writer with a thread per core (up to four) and a
    /// larger memory budget.
    pub fn open_for_rebuild(dir: &Path) -> Result<Self, IndexError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        Self::open_with_writer(dir, threads, REBUILD_MEMORY)
    }

    fn open_with_writer(dir: &Path, threads: usize, memory: usize) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = build_schema();
        let directory = MmapDirectory::open(dir)?;
        let index = match Index::open(directory.clone()) {
            Ok(index) if payload_of(&index).schema == SCHEMA_VERSION => index,
            Ok(_) => {
                tracing::warn!("index schema changed: rebuilding the index from the database");
                drop(directory);
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                Index::create(MmapDirectory::open(dir)?, schema, settings())?
            }
            Err(_) => Index::create(directory, schema, settings())?,
        };
        index.tokenizers().register(ITALIAN, italian_analyzer());
        let writer = index.writer_with_num_threads(threads, memory)?;
        let caches = std::sync::Arc::new(cache::SegmentCaches::default());
        let warmer: std::sync::Arc<dyn tantivy::Warmer> = caches.clone();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .warmers(vec![std::sync::Arc::downgrade(&warmer)])
            .try_into()?;
        let visible = std::sync::atomic::AtomicI64::new(payload_of(&index).position);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            visible,
            caches,
            parallel: tantivy::Executor::multi_thread(cores, "fascicolo-search-")?,
            cores,
            parallel_from_docs: std::sync::atomic::AtomicU64::new(search::PARALLEL_FROM_DOCS),
        })
    }

    /// Lowers the index size from which searches run on every core, and with it the matches
    /// below which they do not (a tenth of it): tests reach that path with a small index this
    /// way.
    #[doc(hidden)]
    pub fn set_parallel_from_docs(&self, docs: u64) {
        self.parallel_from_docs
            .store(docs, std::sync::atomic::Ordering::Relaxed);
    }

    fn parallel_from_docs(&self) -> u64 {
        self.parallel_from_docs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The schema's fields.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The last change-log position applied, committed and visible to searches.
    pub fn position(&self) -> i64 {
        self.visible.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic while holding the writer cannot leave it half-updated on disk: uncommitted
        // operations are simply lost and replayed from the change log.
        crate::lock(&self.writer)
    }

    /// Replaces (or adds) a document: delete by id, then add.
    pub fn upsert(&self, d: &IndexedDoc) -> Result<(), IndexError> {
        let f = &self.fields;
        let writer = self.writer();
        writer.delete_term(Term::from_field_text(f.doc_id, &d.doc_id.to_string()));
        writer.add_document(self.document(d))?;
        Ok(())
    }

    /// Adds a document known not to be in the index (a rebuild after [`Self::clear`]).
    pub fn add(&self, d: &IndexedDoc) -> Result<(), IndexError> {
        self.writer().add_document(self.document(d))?;
        Ok(())
    }

    fn document(&self, d: &IndexedDoc) -> TantivyDocument {
        let f = &self.fields;
        let mut document = doc!(
            f.doc_id => d.doc_id.to_string(),
            f.dossier_id => d.dossier_id.to_string(),
            f.dossier_number => d.dossier_number.as_str(),
            f.tenant => d.tenant.as_str(),
            f.office => d.office.as_str(),
            f.procedure => d.procedure.as_str(),
            f.kind => d.kind.as_str(),
            f.status => d.status.as_str(),
            f.visibility => d.visibility.as_str(),
            f.year => d.year,
            f.date => d.date_ms,
            f.title => d.title.as_str(),
            f.text => d.text.as_str(),
            f.body => d.title.as_str(),
            f.body => d.title.as_str(),
            f.body => d.text.as_str(),
        );
        if d.signed {
            document.add_text(f.signed, "yes");
        }
        for cf in &d.signers {
            document.add_text(f.signer, cf);
        }
        document
    }

    /// Removes a document.
    pub fn delete(&self, doc_id: DocumentId) {
        self.writer().delete_term(Term::from_field_text(
            self.fields.doc_id,
            &doc_id.to_string(),
        ));
    }

    /// Removes every document (before a full rebuild).
    pub fn clear(&self) -> Result<(), IndexError> {
        self.writer().delete_all_documents()?;
        Ok(())
    }

    /// Commits pending changes with the change-log position they bring the index to, and
    /// makes them visible to searches.
    pub fn commit(&self, position: i64) -> Result<(), IndexError> {
        let payload = serde_json::to_string(&Payload {
            schema: SCHEMA_VERSION,
            position,
        })
        .map_err(std::io::Error::other)?;
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        self.visible
            .store(position, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Number of documents visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// What searches see now.
    pub(crate) fn searcher(&self) -> tantivy::Searcher {
        self.reader.searcher()
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }
}

fn payload_of(index: &Index) -> Payload {
    index
        .load_metas()
        .ok()
        .and_then(|m| m.payload)
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or(Payload {
            schema: SCHEMA_VERSION,
            position: 0,
        })
}

#[cfg(test)]
mod tests {
    use tantivy::tokenizer::TokenStream;

    use super::snippet::snippet_analyzer;
    use super::*;

    /// The tokens `analyzer` makes of `text`.
    pub(super) fn analyse(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            out.push(t.text.clone());
        }
        out
    }

    fn tokens(text: &str) -> Vec<String> {
        analyse(&mut italian_analyzer(), text)
    }

    #[test]
    fn the_snippet_analyzer_stems_every_word_the_italian_analyzer_would_match() {
        let text = "Licenze, presenza dell'autorizzazione: città, CITTÀ, costruire, costruzioni, \
                    l’istanza, istanze, perché, qualità, uguale, ioni, a, è";
        let stems = tokens(text);
        let mut analyzer = snippet_analyzer(&stems);
        let mut stream = analyzer.token_stream(text);
        let mut highlighted = Vec::new();
        while let Some(t) = stream.next() {
            if !t.text.is_empty() {
                highlighted.push(t.text.clone());
            }
        }
        assert_eq!(highlighted, stems);
        let mut analyzer = snippet_analyzer(&tokens("permesso"));
        let mut stream = analyzer.token_stream("richiesta di permessi edilizi");
        let mut kept = Vec::new();
        while let Some(t) = stream.next() {
            if !t.text.is_empty() {
                kept.push(t.text.clone());
            }
        }
        assert_eq!(kept, tokens("permessi"));
    }

    #[test]
    fn the_italian_analyzer_folds_splits_elisions_stems_and_drops_stop_words() {
        assert_eq!(tokens("città"), tokens("CITTA"));
        assert_eq!(tokens("dell'atto"), tokens("atto"));
        assert_eq!(tokens("l’istanza"), tokens("istanza"));
        assert_eq!(tokens("autorizzazioni"), tokens("autorizzazione"));
        assert_eq!(tokens("domanda di residenza").len(), 2);
    }
}
