//! Black-box tests over real HTTP. One binary, one module per area.

mod auth;
mod cli;
mod documents;
mod dossiers;
mod helpers;
mod server;
