//! The `fascicolo` binary: parse the command line and hand over.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fascicolo::cli::Cli::parse();
    fascicolo::cli::init_tracing();
    match fascicolo::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
