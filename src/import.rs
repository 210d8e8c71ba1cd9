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
//! Without `documents`, every other file of the folder is imported as an internal attachment
//! titled by its file name; a document is public only where the manifest says so. Dossiers
//! are filed as arriving at the desk, by the system user `import`. Symbolic links are never
//! followed: a linked folder or file is refused, so an import reads nothing outside `DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::app::Services;
use crate::db::documents::{self, NewContent, NewDocument};
use crate::db::dossiers::{self, NewDossier};
use crate::domain::{
    Channel, CodiceFiscale, DocumentKind, Visibility, clean_text, judge_media_type,
    sanitize_filename,
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
    let mut folders: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            bail!(
                "{} is a symbolic link: import reads only what is inside its folder",
                entry.path().display()
            );
        }
        if kind.is_dir() {
            folders.push(entry.path());
        }
    }
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
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(plain_file(folder, "manifest.json")?)?)
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
            let mut files: Vec<String> = Vec::new();
            for entry in std::fs::read_dir(folder)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let kind = entry.file_type()?;
                if kind.is_symlink() {
                    bail!(
                        "{name:?} is a symbolic link: import reads only what is inside its folder"
                    );
                }
                if kind.is_file() && name != "manifest.json" {
                    files.push(name);
                }
            }
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
    // Every file is checked before anything is filed: a refused folder leaves nothing behind.
    for entry in &entries {
        if sanitize_filename(&entry.file) == entry.file {
            plain_file(folder, &entry.file)?;
        }
    }
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
            delivery: services.delivery(),
            draft: false,
            applicant_name: None,
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
        let visibility: Visibility = entry.visibility.as_deref().unwrap_or("internal").parse()?;
        let title = clean_text(entry.title.as_deref().unwrap_or(&filename), "title", 300)?;
        let mut file = tokio::fs::File::open(plain_file(folder, &filename)?)
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
        let media_type = judge_media_type(&spooled.head, None, &filename);
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
                    created_role: crate::domain::Role::Admin,
                    channel: crate::domain::UploadChannel::Import,
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

/// `folder/name`, if it is a regular file and not a symbolic link (the check and the open are
/// not atomic; import runs on folders the operator prepared, not on ones an attacker writes
/// while it runs).
fn plain_file(folder: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = folder.join(name);
    let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {name}"))?;
    if meta.file_type().is_symlink() {
        bail!("{name:?} is a symbolic link: import reads only what is inside its folder");
    }
    if !meta.is_file() {
        bail!("{name:?} is not a file");
    }
    Ok(path)
}
