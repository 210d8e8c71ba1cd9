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

    /// Program run as the sandboxed extraction worker [default: this executable]
    #[arg(long, env = "FASCICOLO_EXTRACTOR", global = true, hide = true)]
    pub extractor: Option<PathBuf>,

    /// Extraction child processes run at once.
    #[arg(
        long,
        env = "FASCICOLO_EXTRACT_WORKERS",
        default_value_t = 2,
        global = true
    )]
    pub extract_workers: usize,

    /// CPU seconds one extraction may use.
    #[arg(
        long,
        env = "FASCICOLO_EXTRACT_CPU_SECONDS",
        default_value_t = 20,
        global = true
    )]
    pub extract_cpu_seconds: u64,

    /// Memory (address space) one extraction may use, in MiB.
    #[arg(
        long,
        env = "FASCICOLO_EXTRACT_MEMORY_MIB",
        default_value_t = 1024,
        global = true
    )]
    pub extract_memory_mib: u64,

    /// Wall-clock seconds one extraction may take.
    #[arg(
        long,
        env = "FASCICOLO_EXTRACT_WALL_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub extract_wall_seconds: u64,

    /// OCR workers: pages of images and scanned PDFs read at once, one core each (0: no
    /// OCR; such pages wait, `ocr.status` pending).
    #[arg(
        long,
        env = "FASCICOLO_OCR_WORKERS",
        default_value_t = 1,
        global = true
    )]
    pub ocr_workers: usize,

    /// CPU seconds OCR may use for one page.
    #[arg(
        long,
        env = "FASCICOLO_OCR_PAGE_CPU_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub ocr_page_cpu_seconds: u64,

    /// Memory (address space) of one page's OCR, in MiB.
    #[arg(
        long,
        env = "FASCICOLO_OCR_MEMORY_MIB",
        default_value_t = 2048,
        global = true
    )]
    pub ocr_memory_mib: u64,

    /// Pages of one document read with OCR; the rest are listed as skipped.
    #[arg(
        long,
        env = "FASCICOLO_OCR_MAX_PAGES",
        default_value_t = 200,
        global = true
    )]
    pub ocr_max_pages: usize,

    /// Tesseract's languages, `+`-joined (Debian: tesseract-ocr-ita, tesseract-ocr-eng).
    #[arg(
        long,
        env = "FASCICOLO_OCR_LANGUAGES",
        default_value = "ita+eng",
        global = true
    )]
    pub ocr_languages: String,

    /// Tesseract, a path or a name looked up in PATH.
    #[arg(
        long,
        env = "FASCICOLO_TESSERACT",
        default_value = "tesseract",
        global = true
    )]
    pub tesseract: PathBuf,

    /// Poppler's pdftoppm, a path or a name looked up in PATH.
    #[arg(
        long,
        env = "FASCICOLO_PDFTOPPM",
        default_value = "pdftoppm",
        global = true
    )]
    pub pdftoppm: PathBuf,

    /// Reverse proxies whose `X-Forwarded-For` header is believed: addresses or CIDR ranges,
    /// comma-separated. Behind them the client is the last address in the header that is not
    /// one of them (recorded in the audit trail, counted by rate limits); from any other peer
    /// the header is ignored.
    #[arg(
        long,
        env = "FASCICOLO_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network,
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Connections served at once; more wait in the kernel's backlog (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_MAX_CONNECTIONS",
        default_value_t = 1024,
        global = true
    )]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub header_timeout_seconds: u64,

    /// Seconds a request body may pause before it is cut off (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_BODY_IDLE_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub body_idle_seconds: u64,

    /// Slowest accepted body rate, bytes per second averaged over 10 s windows: a slow but steady
    /// upload goes through, a trickle that only holds a connection does not (0: no minimum).
    #[arg(
        long,
        env = "FASCICOLO_BODY_MIN_RATE",
        default_value_t = 1024,
        global = true
    )]
    pub body_min_rate: u64,

    /// Window the minimum body rate is averaged over, in milliseconds.
    #[arg(
        long,
        env = "FASCICOLO_BODY_RATE_WINDOW_MS",
        default_value_t = 10_000,
        global = true,
        hide = true
    )]
    pub body_rate_window_ms: u64,

    /// Requests to anonymous routes (registration, activation) per client address per minute
    /// (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_RATE_ANONYMOUS",
        default_value_t = 30,
        global = true
    )]
    pub rate_anonymous: u32,

    /// Searches per caller per minute (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_RATE_SEARCH",
        default_value_t = 600,
        global = true
    )]
    pub rate_search: u32,

    /// Uploads (documents and versions) per caller per minute (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_RATE_UPLOAD",
        default_value_t = 120,
        global = true
    )]
    pub rate_upload: u32,

    /// Searches run at once; more wait their turn (0: no limit).
    #[arg(
        long,
        env = "FASCICOLO_SEARCH_CONCURRENCY",
        default_value_t = 16,
        global = true
    )]
    pub search_concurrency: usize,

    /// Milliseconds a search may run: past that it stops between segments with a 503 (0 stops
    /// every search at once, for tests).
    #[arg(
        long,
        env = "FASCICOLO_SEARCH_BUDGET_MS",
        default_value_t = 5000,
        global = true
    )]
    pub search_budget_ms: u64,

    /// Bytes a citizen or professional may upload in all, MiB (staff are not limited).
    #[arg(
        long,
        env = "FASCICOLO_UPLOAD_QUOTA_MIB",
        default_value_t = 2048,
        global = true
    )]
    pub upload_quota_mib: u64,

    /// Days a new API token lives unless its maker says otherwise.
    #[arg(
        long,
        env = "FASCICOLO_TOKEN_LIFETIME_DAYS",
        default_value_t = 90,
        global = true
    )]
    pub token_lifetime_days: u32,

    /// SMTP server for e-mail notifications: `smtp://user:password@host:587?tls=required`,
    /// `smtps://user:password@host:465`, or `smtp://host:25` for a local relay. Without it,
    /// e-mails wait in the outbox. `log:` prints them on standard output (what `serve --demo`
    /// does when no SMTP server is set).
    #[arg(long, env = "FASCICOLO_SMTP_URL", global = true)]
    pub smtp_url: Option<String>,

    /// Sender of e-mail notifications, `Name <address>`; its domain names every Message-ID.
    #[arg(
        long,
        env = "FASCICOLO_SMTP_FROM",
        default_value = "Comune - Sportello unico <noreply@comune.example.it>",
        global = true
    )]
    pub smtp_from: String,

    /// A procedure catalogue (JSON, the shape of `schema/procedures.json`) replacing the
    /// built-in one, so a municipality can change its services without rebuilding.
    #[arg(long, env = "FASCICOLO_CATALOGUE", global = true)]
    pub catalogue: Option<PathBuf>,

    /// Folder of notification templates replacing the built-in ones of the same name.
    #[arg(long, env = "FASCICOLO_TEMPLATES_DIR", global = true)]
    pub templates_dir: Option<PathBuf>,

    /// The address citizens reach this server at; links in notifications start with it.
    #[arg(
        long,
        env = "FASCICOLO_PUBLIC_URL",
        default_value = "http://localhost:8080",
        global = true
    )]
    pub public_url: String,

    /// The municipality's name, as messages and pages show it.
    #[arg(
        long,
        env = "FASCICOLO_MUNICIPALITY",
        default_value = "Comune di Ciriè",
        global = true
    )]
    pub municipality: String,

    /// SMS gateway: the URL notifications are POSTed to. Without it, no SMS is sent.
    #[arg(long, env = "FASCICOLO_SMS_URL", global = true)]
    pub sms_url: Option<String>,

    /// The SMS gateway's authentication header, `Name: value`.
    #[arg(long, env = "FASCICOLO_SMS_AUTH_HEADER", global = true)]
    pub sms_auth_header: Option<String>,

    /// The SMS gateway's request body, a template over `to`, `text`, `reference` and
    /// `sender` (use `|tojson` for JSON strings).
    #[arg(
        long,
        env = "FASCICOLO_SMS_BODY",
        default_value = crate::notify::sms::DEFAULT_BODY,
        global = true
    )]
    pub sms_body: String,

    /// The sender name SMS messages show.
    #[arg(
        long,
        env = "FASCICOLO_SMS_SENDER",
        default_value = "Comune",
        global = true
    )]
    pub sms_sender: String,

    /// App IO's API (PagoPA), up to and without `/api/v1`.
    #[arg(
        long,
        env = "FASCICOLO_APP_IO_URL",
        default_value = "https://api.io.pagopa.it",
        global = true
    )]
    pub app_io_url: String,

    /// The App IO service's API key (`Ocp-Apim-Subscription-Key`). Without it, nothing is
    /// sent to App IO.
    #[arg(
        long,
        env = "FASCICOLO_APP_IO_KEY",
        global = true,
        hide_env_values = true
    )]
    pub app_io_key: Option<String>,

    /// Hour of the day (Europe/Rome, 0–23) after which staff get their daily digest of
    /// dossiers close to or past their deadline.
    #[arg(
        long,
        env = "FASCICOLO_DIGEST_HOUR",
        default_value_t = 7,
        global = true
    )]
    pub digest_hour: u8,

    /// A dossier is "close to" its deadline when this many days or fewer are left.
    #[arg(
        long,
        env = "FASCICOLO_DIGEST_WITHIN_DAYS",
        default_value_t = 5,
        global = true
    )]
    pub digest_within_days: i64,

    /// Seconds a notification sender holds the messages it claimed; a sender that dies lets
    /// them go back to the queue after this.
    #[arg(
        long,
        env = "FASCICOLO_NOTIFY_LEASE_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub notify_lease_seconds: u64,

    /// Minutes without a request after which a browser session ends.
    #[arg(
        long,
        env = "FASCICOLO_SIGN_IN_IDLE_MINUTES",
        default_value_t = 30,
        global = true
    )]
    pub sign_in_idle_minutes: u32,

    /// Hours after sign-in at which a browser session ends, however active.
    #[arg(
        long,
        env = "FASCICOLO_SIGN_IN_HOURS",
        default_value_t = 12,
        global = true
    )]
    pub sign_in_hours: u32,

    /// The municipality (ente) this server serves, by its IPA code.
    #[arg(
        long,
        env = "FASCICOLO_TENANT",
        default_value = "c_c722",
        global = true
    )]
    pub tenant: String,
}

/// A CIDR range, or one address (a range of one).
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
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
            extractor: None,
            extract_workers: 2,
            extract_cpu_seconds: 20,
            extract_memory_mib: 1024,
            extract_wall_seconds: 30,
            ocr_workers: 1,
            ocr_page_cpu_seconds: 60,
            ocr_memory_mib: 2048,
            ocr_max_pages: 200,
            ocr_languages: "ita+eng".to_owned(),
            tesseract: PathBuf::from("tesseract"),
            pdftoppm: PathBuf::from("pdftoppm"),
            tenant: "c_c722".to_owned(),
            trusted_proxies: Vec::new(),
            token_lifetime_days: 90,
            smtp_url: None,
            smtp_from: "Comune - Sportello unico <noreply@comune.example.it>".to_owned(),
            templates_dir: None,
            catalogue: None,
            public_url: "http://localhost:8080".to_owned(),
            municipality: "Comune di Ciriè".to_owned(),
            sms_url: None,
            sms_auth_header: None,
            sms_body: crate::notify::sms::DEFAULT_BODY.to_owned(),
            sms_sender: "Comune".to_owned(),
            app_io_url: "https://api.io.pagopa.it".to_owned(),
            app_io_key: None,
            digest_hour: 7,
            digest_within_days: 5,
            notify_lease_seconds: 60,
            sign_in_idle_minutes: 30,
            sign_in_hours: 12,
            max_connections: 1024,
            header_timeout_seconds: 10,
            body_idle_seconds: 30,
            body_min_rate: 1024,
            body_rate_window_ms: 10_000,
            rate_anonymous: 30,
            rate_search: 600,
            rate_upload: 120,
            search_concurrency: 16,
            search_budget_ms: 5000,
            upload_quota_mib: 2048,
        }
    }

    /// Directory of this node's search index.
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
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
