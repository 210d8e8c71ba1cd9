//! The command line: `serve`, `user add`, `verify`, `gc`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{App, Services, shutdown_signal};
use crate::config::Config;
use crate::domain::Role;

/// fascicolo: dossiers and documents of a municipality's one-stop desk.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// Fill an empty data dir with sample dossiers and print tokens to try the API.
        #[arg(long)]
        demo: bool,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Re-hash every referenced blob; exit non-zero if any is missing or corrupt.
    Verify,
    /// Rebuild this node's search index from the database and the cached texts (the server
    /// must be stopped: it holds the index).
    Reindex,
    /// Bulk-load a folder tree: one sub-folder per dossier with a manifest.json.
    Import {
        /// The folder holding one sub-folder per dossier.
        dir: std::path::PathBuf,
    },
    /// Extract the text of stdin in a sandbox (run by the server, not by people).
    #[command(hide = true)]
    ExtractWorker(crate::extract::sandbox::WorkerArgs),
    /// Confine this process as an extraction worker is confined, then try to read and write
    /// files, open sockets and start programs; prints what held as JSON. The server runs it
    /// at start and logs a missing layer.
    SandboxProbe {
        /// The folder the probe may write in.
        #[arg(long)]
        scratch: Option<std::path::PathBuf>,
        /// A file outside it, which the probe must not be able to read.
        #[arg(long)]
        outside: std::path::PathBuf,
        /// Confine as the OCR worker is (it may start programs).
        #[arg(long)]
        programs: bool,
    },
    /// Delete blobs no document references, older than a grace period.
    Gc {
        /// Keep unreferenced blobs younger than this many hours (uploads in flight).
        #[arg(long, default_value_t = 24)]
        grace_hours: u32,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print `{"id","token"}`; the token is shown only this once.
    Add {
        /// citizen, professional, staff, auditor or admin.
        #[arg(long)]
        role: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Codice fiscale (required for citizens and professionals).
        #[arg(long)]
        cf: Option<String>,
        /// Office code (staff; repeat for several).
        #[arg(long = "office")]
        offices: Vec<String>,
        /// Front-office staff, handling every office's dossiers.
        #[arg(long)]
        front_office: bool,
        /// Contact e-mail.
        #[arg(long)]
        email: Option<String>,
    },
    /// Print a one-time link (valid 72 hours) where a staff member, auditor or admin sets
    /// their password and enrols their authenticator app; older unused links stop working.
    ActivationLink {
        /// The user's id.
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain; name the first broken row and exit 2 if there is one.
    Verify,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a new token for a user; prints `{"user","token"}` once.
    Add {
        /// The user's id.
        #[arg(long)]
        user: String,
        /// What the token is for.
        #[arg(long, default_value = "issued from the command line")]
        label: String,
        /// Days until it expires (default: `FASCICOLO_TOKEN_LIFETIME_DAYS`, 90).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a user's tokens (never their secrets).
    List {
        /// The user's id.
        #[arg(long)]
        user: String,
    },
    /// Revoke a token by its id; it stops working on the next request.
    Revoke {
        /// The token's id (from `token list`).
        id: String,
    },
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The extraction child stays single-threaded and starts no runtime: its limits are
    // tight and it has one job.
    if let Command::ExtractWorker(args) = &cli.command {
        return Ok(crate::extract::sandbox::worker_main(args));
    }
    // Single-threaded too: namespaces and the system-call filter apply to this thread.
    if let Command::SandboxProbe {
        scratch,
        outside,
        programs,
    } = &cli.command
    {
        use crate::extract::confine::Allowance;
        let allowance = if *programs {
            Allowance::Programs
        } else {
            Allowance::Nothing
        };
        let probe = crate::extract::confine::probe(scratch.as_deref(), outside, allowance);
        println!("{}", serde_json::to_string(&probe)?);
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { demo } => {
            let mut config = cli.config;
            if demo && config.smtp_url.is_none() {
                // Sign-in codes and notices must reach someone: the terminal.
                config.smtp_url = Some("log:".to_owned());
            }
            let app = App::build(config).await?;
            if demo {
                crate::demo::seed(app.services(), app.local_addr()?).await?;
            }
            tracing::info!(address = %app.local_addr()?, "fascicolo listening");
            app.run_until(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Add {
                    role,
                    name,
                    cf,
                    offices,
                    front_office,
                    email,
                },
        } => {
            let role: Role = role.parse()?;
            let services = Services::open(cli.config).await?;
            let created = crate::users::add_user_with(
                &services,
                &crate::users::UserSpec {
                    role,
                    name: &name,
                    codice_fiscale: cf.as_deref(),
                    offices: &offices,
                    front_office,
                    email: email.as_deref(),
                    phone: None,
                    by: None,
                },
            )
            .await?;
            println!("{}", serde_json::to_string(&created)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command: UserCommand::ActivationLink { user },
        } => {
            let services = Services::open(cli.config).await?;
            let user = crate::domain::UserId::parse(&user)
                .ok_or_else(|| anyhow::anyhow!("{user:?} is not a user id"))?;
            let link = crate::users::activation_link(
                &services,
                user,
                &crate::audit::Actor::cli(&services.config.tenant),
            )
            .await?;
            println!("{link}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let services = Services::open(cli.config).await?;
            let report = crate::maintenance::verify(&services).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::ExtractWorker(_) | Command::SandboxProbe { .. } => Ok(ExitCode::FAILURE),
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let services = Services::open(cli.config).await?;
            let (report, _) = crate::audit::verify_and_record(&services.db, None).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.first_broken.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Token { command } => {
            let services = Services::open(cli.config).await?;
            run_token(&services, command).await
        }
        Command::Reindex => {
            let mut services = Services::open(cli.config).await?;
            services.open_index_for_rebuild().context(
                "is a server running on this data dir? stop it first: it holds the index",
            )?;
            let count = crate::pipeline::reindex(&services, &progress_bar("reindex")).await?;
            println!("{}", serde_json::json!({ "documents": count }));
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { dir } => {
            let services = Services::open(cli.config).await?;
            let report = crate::import::import(&services, &dir, &progress_bar("import")).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { grace_hours } => {
            let services = Services::open(cli.config).await?;
            let report =
                crate::maintenance::gc(&services, i64::from(grace_hours) * 3_600_000).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    bar
}

async fn run_token(services: &Services, command: TokenCommand) -> anyhow::Result<ExitCode> {
    use crate::db::users;
    use crate::domain::{TokenId, UserId};
    let user_of =
        |raw: &str| UserId::parse(raw).ok_or_else(|| anyhow::anyhow!("not a user id: {raw}"));
    match command {
        TokenCommand::Add {
            user,
            label,
            expires_in_days,
        } => {
            let id = user_of(&user)?;
            users::user_by_id(&services.db, &services.config.tenant, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user {id}"))?;
            let expires_at = crate::users::token_expiry(services, expires_in_days);
            let token = crate::access::issue_token(
                &services.db,
                id,
                &label,
                Some(expires_at),
                None,
                &crate::audit::Actor::cli(&services.config.tenant),
            )
            .await?;
            println!(
                "{}",
                serde_json::json!({ "user": id.to_string(), "token": token })
            );
        }
        TokenCommand::List { user } => {
            let tokens = users::list_tokens(&services.db, user_of(&user)?).await?;
            println!("{}", serde_json::to_string_pretty(&tokens)?);
        }
        TokenCommand::Revoke { id } => {
            let token =
                TokenId::parse(&id).ok_or_else(|| anyhow::anyhow!("not a token id: {id}"))?;
            users::token_owner(&services.db, &services.config.tenant, token)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no token {id}"))?;
            users::revoke_token(
                &services.db,
                token,
                &crate::audit::Actor::cli(&services.config.tenant),
            )
            .await?;
            println!("{}", serde_json::json!({ "revoked": id }));
        }
    }
    Ok(ExitCode::SUCCESS)
}
