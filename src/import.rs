//! `fascicolo import DIR`: bulk-loads a folder tree, one sub-folder per dossier.
//!
//! Each sub-folder holds the dossier's files and a `manifest.json`:
//!
//! ```json
//! {
//!   "procedure": "scia-edilizia",
//!   "applicant_cf": "RSSMRA85T10A562S",
//!   "subject": "Rifacimento facciata",
//!   "documents": [
//!     {"file": "istanza.pdf", "title": "Istanza", "kind": "application", "visibility": "public"}
//!   ]
//! }
//! ```
//!
//! Without `documents`, every other file of the folder is imported as a public attachment
//! titled by its file name. Dossiers are filed as arriving at the desk, by the system user
//! `import`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::app::Services;
use crate::db::documents::{self, NewContent, NewDocument};
use crate::db::dossiers::{self, NewDossier};
use crate::domain::{
    Channel, CodiceFiscale, DocumentKind, Visibility, clean_text, sanitize_filename,
    sniff_media_type,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    procedure: String,
    applicant_cf: String,
    subject: String,
    #[serde(default)]
    documents: Option<Vec<ManifestDocument>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDocument {
    file: String,
    title: Option<String>,
    kind: Option<String>,
    visibility: Option<String>,
}

/// What an import did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ImportReport {
    /// Dossiers created.
    pub dossiers: usize,
    /// Documents stored.
    pub documents: usize,
}

/// Imports every sub-folder of `dir`, reporting progress through `progress`.
pub async fn import(
    services: &Services,
    dir: &Path,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<ImportReport> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    progress.set_length(folders.len() as u64);
    let importer = crate::users::system_user(services, "import").await?;
    let mut report = ImportReport::default();
    for folder in folders {
        let documents = import_folder(services, &folder, importer)
            .await
            .with_context(|| format!("importing {}", folder.display()))?;
        report.dossiers += 1;
        report.documents += documents;
        progress.inc(1);
        services.wake.notify_one();
    }
    progress.finish();
    Ok(report)
}

async fn import_folder(
    services: &Services,
    folder: &Path,
    importer: crate::domain::UserId,
) -> anyhow::Result<usize> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(folder.join("manifest.json")).context("reading manifest.json")?,
    )
    .context("manifest.json")?;
    let procedure = services
        .catalogue
        .procedure(&manifest.procedure)
        .with_context(|| format!("unknown procedure {:?}", manifest.procedure))?;
    let applicant = CodiceFiscale::parse(&manifest.applicant_cf)?;
    let subject = clean_text(&manifest.subject, "subject", 500)?;
    let entries = match manifest.documents {
        Some(list) => list,
        None => {
            let mut files: Vec<String> = std::fs::read_dir(folder)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "manifest.json")
                .collect();
            files.sort();
            files
                .into_iter()
                .map(|file| ManifestDocument {
                    file,
                    title: None,
                    kind: None,
                    visibility: None,
                })
                .collect()
        }
    };
    let actor = crate::audit::Actor::system(&services.config.tenant, importer, "import");
    let dossier = dossiers::create(
        &services.db,
        NewDossier {
            tenant: &services.config.tenant,
            procedure,
            applicant: &applicant,
            subject: &subject,
            channel: Channel::Desk,
            created_by: importer,
        },
        &actor,
    )
    .await?;
    let mut count = 0;
    for entry in entries {
        let filename = sanitize_filename(&entry.file);
        if filename != entry.file {
            bail!(
                "document file {:?} must be a plain file name in the folder",
                entry.file
            );
        }
        let kind: DocumentKind = entry.kind.as_deref().unwrap_or("attachment").parse()?;
        let visibility: Visibility = entry.visibility.as_deref().unwrap_or("public").parse()?;
        let title = clean_text(entry.title.as_deref().unwrap_or(&filename), "title", 300)?;
        let mut file = tokio::fs::File::open(folder.join(&filename))
            .await
            .with_context(|| format!("opening {filename}"))?;
        let mut spool = services
            .blobs
            .spool(services.config.max_upload_bytes)
            .await?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            spool.write(&buf[..n]).await?;
        }
        let spooled = spool.finish().await?;
        let media_type = sniff_media_type(&spooled.head);
        let blob = services.blobs.put(&spooled, false).await?;
        documents::create(
            &services.db,
            NewDocument {
                tenant: &services.config.tenant,
                dossier: dossier.id,
                title: &title,
                kind,
                visibility,
                content: NewContent {
                    blob,
                    media_type,
                    filename: &filename,
                    created_by: importer,
                    blobs: &services.blobs,
                },
            },
            &actor,
        )
        .await?;
        count += 1;
    }
    Ok(count)
}
