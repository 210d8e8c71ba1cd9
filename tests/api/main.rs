//! Black-box tests over real HTTP. One binary, one module per area.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected value"
)]

mod audit;
mod auth;
mod browser;
mod cli;
mod crash;
mod delegations;
mod documents;
mod dossiers;
mod formats;
mod helpers;
mod hostile;
mod identities;
mod leak;
mod lifecycle;
mod limits;
mod matrix;
mod notices;
mod notify;
mod ocr;
mod process;
mod sandbox;
mod scaleout;
mod search;
mod security;
mod server;
mod web;
