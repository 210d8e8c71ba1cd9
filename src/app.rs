//! Builds the running application from a [`Config`]: database, blob store, catalogue and
//! router. The CLI and the tests both start it; tests bind port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::blobs::BlobStore;
use crate::config::Config;
use crate::db::Db;
use crate::domain::Catalogue;
use crate::extract::sandbox::{Sandbox, SandboxLimits};
use crate::http;
use crate::index::SearchIndex;
use crate::pipeline::Pipeline;

/// The shared services every request and command works with.
#[derive(Clone, Debug)]
pub struct Services {
    /// The configuration in effect.
    pub config: Arc<Config>,
    /// Metadata.
    pub db: Db,
    /// Document bytes.
    pub blobs: BlobStore,
    /// Offices and procedures.
    pub catalogue: Arc<Catalogue>,
    /// This node's search index, when this process owns it (the server, `reindex`).
    pub index: Option<Arc<SearchIndex>>,
    /// Records reads in the audit trail (group commit).
    pub auditor: crate::audit::Auditor,
    /// Woken after every committed change, so the indexer need not wait for its next poll.
    pub wake: Arc<Notify>,
    /// Callers this node authenticated recently.
    pub callers: Arc<crate::access::KnownCallers>,
    /// Rate limits and the search concurrency limit.
    pub limits: Arc<crate::http::limits::Limits>,
}

impl Services {
    /// Opens the database (applying migrations), the blob store and the catalogue.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let db = Db::open(&config.database_url())
            .await
            .context("opening the database")?;
        let blobs = BlobStore::open(config.blob_url.as_deref(), &config.data_dir)
            .context("opening the blob store")?;
        let catalogue = match &config.catalogue {
            Some(path) => {
                let json = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the catalogue {}", path.display()))?;
                Catalogue::from_json(&json)
                    .with_context(|| format!("loading the catalogue {}", path.display()))?
            }
            None => Catalogue::built_in().context("loading the procedure catalogue")?,
        };
        db.sync_catalogue(&config.tenant, &catalogue)
            .await
            .context("writing the catalogue")?;
        let auditor = crate::audit::Auditor::start(db.clone());
        Ok(Self {
            db,
            blobs,
            catalogue: Arc::new(catalogue),
            index: None,
            auditor,
            wake: Arc::new(Notify::new()),
            callers: Default::default(),
            limits: Arc::new(crate::http::limits::Limits::new(&config)),
            config: Arc::new(config),
        })
    }

    /// How notices are delivered: the channels configured and the start of links.
    pub fn delivery(&self) -> crate::db::notices::Delivery<'_> {
        crate::db::notices::Delivery {
            channels: crate::db::notices::Channels {
                email: self.config.smtp_url.is_some(),
                sms: self.config.sms_url.is_some(),
                app_io: self.config.app_io_key.is_some(),
            },
            public_url: &self.config.public_url,
        }
    }

    /// Opens this node's search index (taking its writer lock).
    pub fn open_index(&mut self) -> anyhow::Result<Arc<SearchIndex>> {
        let index = Arc::new(
            SearchIndex::open(&self.config.index_dir()).context("opening the search index")?,
        );
        self.index = Some(index.clone());
        Ok(index)
    }

    /// Opens this node's search index for a full rebuild (a writer with more threads and
    /// memory; see [`SearchIndex::open_for_rebuild`]).
    pub fn open_index_for_rebuild(&mut self) -> anyhow::Result<Arc<SearchIndex>> {
        let index = Arc::new(
            SearchIndex::open_for_rebuild(&self.config.index_dir())
                .context("opening the search index")?,
        );
        self.index = Some(index.clone());
        Ok(index)
    }

    /// The notification sender over this node's configuration: each channel configured
    /// (SMTP, SMS gateway, App IO), with the built-in templates or the municipality's.
    pub fn notifier(&self) -> anyhow::Result<crate::notify::Notifier> {
        let config = &self.config;
        let templates =
            crate::notify::Templates::load(config.templates_dir.as_deref(), &config.municipality)
                .context("loading the notification templates")?;
        let mut notifier = crate::notify::Notifier::new(self.db.clone(), templates)
            .with_lease(std::time::Duration::from_secs(
                config.notify_lease_seconds.max(1),
            ))
            .with_digest(crate::notify::DigestSettings {
                tenant: config.tenant.clone(),
                hour: config.digest_hour,
                within_days: config.digest_within_days,
                public_url: config.public_url.clone(),
            });
        match config.smtp_url.as_deref() {
            Some(url) => {
                notifier = notifier.with_email(
                    crate::notify::EmailChannel::new(url, &config.smtp_from)
                        .map_err(|e| anyhow::anyhow!(e))
                        .context("configuring e-mail")?,
                );
            }
            None => {
                tracing::warn!("no SMTP server configured (FASCICOLO_SMTP_URL): no e-mail is sent")
            }
        }
        if let Some(url) = config.sms_url.as_deref() {
            notifier = notifier.with_sms(
                crate::notify::SmsChannel::new(
                    url,
                    config.sms_auth_header.as_deref(),
                    &config.sms_body,
                    &config.sms_sender,
                )
                .map_err(|e| anyhow::anyhow!(e))
                .context("configuring the SMS gateway")?,
            );
        }
        if let Some(key) = config.app_io_key.as_deref() {
            notifier = notifier.with_app_io(
                crate::notify::AppIoChannel::new(&config.app_io_url, key)
                    .map_err(|e| anyhow::anyhow!(e))
                    .context("configuring App IO")?,
            );
        }
        Ok(notifier)
    }

    /// The indexing pipeline over this node's index.
    pub fn pipeline(&self) -> anyhow::Result<Pipeline> {
        let index = self.index.clone().context("the search index is not open")?;
        let exe = match &self.config.extractor {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("locating the extraction worker")?,
        };
        let limits = SandboxLimits {
            cpu_seconds: self.config.extract_cpu_seconds,
            memory_bytes: self.config.extract_memory_mib * 1024 * 1024,
            wall: std::time::Duration::from_secs(self.config.extract_wall_seconds),
            ..SandboxLimits::default()
        };
        let sandbox = Sandbox::new(exe, limits, self.config.extract_workers);
        Ok(Pipeline::new(
            self.clone(),
            index,
            sandbox,
            self.config.extract_workers,
        ))
    }
}

impl Services {
    /// The OCR workers beside `pipeline`, or why there are none: OCR switched off, or
    /// Tesseract or pdftoppm not installed (pages needing OCR then wait as pending).
    pub fn ocr_service(&self, pipeline: &Pipeline) -> Result<crate::ocr::OcrService, String> {
        let config = &self.config;
        if config.ocr_workers == 0 {
            return Err("switched off (FASCICOLO_OCR_WORKERS=0)".into());
        }
        let tesseract = find_program(&config.tesseract).ok_or_else(|| {
            format!(
                "{} not found (Debian: tesseract-ocr)",
                config.tesseract.display()
            )
        })?;
        let pdftoppm = find_program(&config.pdftoppm).ok_or_else(|| {
            format!(
                "{} not found (Debian: poppler-utils)",
                config.pdftoppm.display()
            )
        })?;
        // A language Tesseract lacks would fail every page: wait for it to be installed.
        let listed = std::process::Command::new(&tesseract)
            .arg("--list-langs")
            .env_clear()
            .output()
            .map_err(|e| format!("running {}: {e}", tesseract.display()))?;
        let installed = String::from_utf8_lossy(&listed.stdout).into_owned();
        for language in config.ocr_languages.split('+') {
            if !installed.lines().any(|l| l.trim() == language) {
                return Err(format!(
                    "Tesseract has no {language:?} language data (Debian: tesseract-ocr-{language})"
                ));
            }
        }
        let exe = match &config.extractor {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| format!("locating the worker: {e}"))?,
        };
        let cpu = config.ocr_page_cpu_seconds.max(1);
        let limits = SandboxLimits {
            cpu_seconds: cpu,
            memory_bytes: config.ocr_memory_mib * 1024 * 1024,
            wall: std::time::Duration::from_secs(cpu * 2 + 10),
            ..SandboxLimits::default()
        };
        let tools = crate::extract::ocr::OcrTools {
            tesseract,
            pdftoppm,
            languages: config.ocr_languages.clone(),
        };
        let sandbox = Sandbox::of_kind(
            exe,
            crate::extract::sandbox::WorkerKind::Ocr(tools),
            limits,
            config.ocr_workers,
        );
        Ok(crate::ocr::OcrService::new(
            pipeline.clone(),
            sandbox,
            config.ocr_workers,
            config.ocr_max_pages,
        ))
    }
}

/// A program's absolute path: `name` itself when it has a slash, else the first match in PATH.
fn find_program(name: &std::path::Path) -> Option<std::path::PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A server bound to its listener, ready to run.
pub struct App {
    services: Services,
    listener: TcpListener,
}

impl App {
    /// Opens the services and binds the configured address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut services = Services::open(config).await?;
        // The index's writer lock makes this process the data dir's only server, so it alone
        // owns the audit journal there.
        services.open_index()?;
        services.auditor = crate::audit::Auditor::start_journaled(
            services.db.clone(),
            &services.config.data_dir.join("audit"),
        )
        .context("opening the audit journal")?;
        Self::with_services(services).await
    }

    /// Binds the configured address for services opened by the caller (benchmarks swap
    /// parts of them).
    pub async fn with_services(mut services: Services) -> anyhow::Result<Self> {
        let listen = services.config.listen;
        if services.index.is_none() {
            services.open_index()?;
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        Ok(Self { services, listener })
    }

    /// The address actually bound (the real port when configured with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The services, for tests and tools that run beside the server.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Spool files older than an hour belong to uploads that died with a previous process.
        if let Err(e) = self.services.blobs.clean_spool(3_600_000).await {
            tracing::warn!(error = %e, "could not clean the spool directory");
        }
        let pipeline = self.services.pipeline()?;
        {
            let sandbox = pipeline.sandbox().clone();
            // Beside the spool directory, not in it: whatever is in the spool is an upload. One
            // name, so that what a server killed during the probe left is reused and removed.
            let scratch = self.services.config.data_dir.join("sandbox-probe");
            tokio::spawn(async move { sandbox.log_probe(&scratch).await });
        }
        let stop_ocr = Arc::new(Notify::new());
        let ocr = match self.services.ocr_service(&pipeline) {
            Ok(service) => {
                tracing::info!(workers = self.services.config.ocr_workers, "OCR on");
                Some(tokio::spawn(service.run(stop_ocr.clone())))
            }
            Err(why) => {
                tracing::warn!(%why, "OCR off: images and scanned pages wait, their OCR pending");
                None
            }
        };
        let stop_indexing = Arc::new(Notify::new());
        let indexer = tokio::spawn(pipeline.run(self.services.wake.clone(), stop_indexing.clone()));
        let stop_disclosures = Arc::new(Notify::new());
        let disclosures = tokio::spawn(crate::db::disclosures::run(
            self.services.db.clone(),
            stop_disclosures.clone(),
        ));
        let stop_notifying = Arc::new(Notify::new());
        let notifier = tokio::spawn(
            self.services
                .notifier()?
                .run(Arc::new(Notify::new()), stop_notifying.clone()),
        );
        let config = self.services.config.clone();
        let seconds = |n: u64| (n > 0).then(|| std::time::Duration::from_secs(n));
        let limits = http::serve::ServeLimits {
            max_connections: (config.max_connections > 0).then_some(config.max_connections),
            header_timeout: seconds(config.header_timeout_seconds),
            body_idle: seconds(config.body_idle_seconds),
            body_min_rate: config.body_min_rate,
            rate_window: std::time::Duration::from_millis(config.body_rate_window_ms.max(1)),
        };
        let router = http::router(self.services);
        let served = http::serve::serve(self.listener, router, limits, shutdown)
            .await
            .context("serving HTTP");
        stop_indexing.notify_one();
        stop_notifying.notify_one();
        stop_ocr.notify_one();
        if let Some(ocr) = ocr {
            let _ = ocr.await;
        }
        stop_disclosures.notify_one();
        let _ = indexer.await;
        let _ = disclosures.await;
        let _ = notifier.await;
        served
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
