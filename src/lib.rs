//! fascicolo: a document-management and search server for the dossiers of public offices.
//!
//! See `DESIGN.md` for the decisions this crate builds on: the database and the blob store
//! are the truth, everything else is derived; permissions are computed in [`access`] only.

pub mod access;
pub mod app;
pub mod audit;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod demo;
pub mod domain;
pub mod extract;
pub mod http;
pub mod import;
pub mod index;
pub mod maintenance;
pub mod notify;
pub mod ocr;
pub mod pipeline;
pub mod users;
pub mod web;

/// The value behind `mutex`, even if a thread panicked while holding it. Every mutex of the
/// server guards state that is whole between statements (maps of complete entries, queues,
/// the index writer, whose uncommitted work is replayed from the change log), so a panic
/// elsewhere must not stop the rest of the server from using it.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
