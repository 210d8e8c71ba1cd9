//! One typed configuration, from flags and `FASCICOLO_*` environment variables. The server
//! and every CLI command read the same one, so a command run beside a server works on that
//! server's data.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default largest upload: 512 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// Configuration shared by all commands.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Directory for the SQLite database, local blobs, spooled uploads and the index.
    #[arg(
        long,
        env = "FASCICOLO_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Address the HTTP server listens on.
    #[arg(
        long,
        env = "FASCICOLO_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Metadata database: `sqlite://PATH` or `postgres://…` [default: sqlite in the data dir]
    #[arg(long, env = "FASCICOLO_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Blob store: a directory, `file:///DIR`, `s3://BUCKET/PREFIX` or `memory://`
    /// [default: DATA_DIR/blobs]
    #[arg(long, env = "FASCICOLO_BLOB_URL", global = true)]
    pub blob_url: Option<String>,

    /// Largest accepted upload, in bytes.
    #[arg(long, env = "FASCICOLO_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES, global = true)]
    pub max_upload_bytes: u64,

    /// The municipality (ente) this server serves, by its IPA code.
    #[arg(
        long,
        env = "FASCICOLO_TENANT",
        default_value = "c_c722",
        global = true
    )]
    pub tenant: String,
}

impl Config {
    /// The embedded defaults, rooted at `data_dir`, listening on an ephemeral port.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: None,
            blob_url: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            tenant: "c_c722".to_owned(),
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("fascicolo.db").display()
            ),
        }
    }
}
