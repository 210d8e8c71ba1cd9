//! The OCR queue's workers (DESIGN.md §2): images and scanned PDF pages are read with
//! Tesseract after their text has been extracted and indexed, so a cheap extraction never
//! waits behind OCR.
//!
//! The text extractor marks the pages that need OCR; the indexer records the text and queues
//! an `ocr_job` for the file in the same transaction. Here `FASCICOLO_OCR_WORKERS` loops take
//! jobs, each reading one page at a time in a sandboxed OCR worker under per-page CPU, memory
//! and wall-clock limits (one core a worker: the worker count is the CPU budget). The pages
//! read are stored as a derived blob beside the extracted text; then the job ends, the
//! versions' text is recorded with the OCR's method and confidence, and the documents are
//! logged as changed, so every node's indexer reads the whole text: the extracted text with
//! each scanned page's OCR text merged in ([`merge`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::db::ocr::{Finished, OcrJob};
use crate::domain::ContentHash;
use crate::extract::Extracted;
use crate::extract::sandbox::{Outcome, Sandbox};
use crate::pipeline::{Pipeline, PipelineError};

/// How often the queue is polled for jobs queued by other nodes.
const POLL: Duration = Duration::from_secs(1);
/// A running job not renewed for this long belongs to a worker that died.
const LEASE_MS: i64 = 10 * 60 * 1000;
/// A job claimed this many times without ending is given up.
const MAX_ATTEMPTS: i32 = 3;

/// What OCR read of a file: kept as a derived blob, merged into its text by [`merge`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrResult {
    /// The pages read.
    pub pages: Vec<OcrPage>,
    /// The pages that could not be read, with the reason.
    pub failed: Vec<FailedPage>,
    /// Pages not read because the document has more than the configured maximum.
    pub skipped: u32,
}

/// One page read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OcrPage {
    /// 1-based.
    pub page: u32,
    /// Its text.
    pub text: String,
    /// Words read.
    pub words: u32,
    /// Mean word confidence, 0 to 100.
    pub confidence: Option<f32>,
}

/// One page that could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedPage {
    /// 1-based.
    pub page: u32,
    /// Why.
    pub reason: String,
}

impl OcrResult {
    /// The mean word confidence over every word read.
    pub fn mean_confidence(&self) -> Option<f64> {
        let (sum, words) = self
            .pages
            .iter()
            .fold((0f64, 0u64), |(s, w), p| match p.confidence {
                Some(c) => (
                    s + f64::from(c) * f64::from(p.words),
                    w + u64::from(p.words),
                ),
                None => (s, w),
            });
        (words > 0).then(|| (sum / words as f64 * 10.0).round() / 10.0)
    }

    /// Why pages were not read, in one line (none when every page was).
    pub fn reason(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .failed
            .iter()
            .take(5)
            .map(|f| format!("page {}: {}", f.page, f.reason))
            .collect();
        if self.failed.len() > 5 {
            parts.push(format!("{} more pages failed", self.failed.len() - 5));
        }
        if self.skipped > 0 {
            parts.push(format!(
                "{} pages beyond the OCR page limit were not read",
                self.skipped
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Where the OCR of a blob is kept.
pub fn result_key(sha256: &str) -> String {
    let (a, b) = (
        sha256.get(..2).unwrap_or("xx"),
        sha256.get(2..4).unwrap_or("xx"),
    );
    format!("ocr/v1/{a}/{b}/{sha256}.json")
}

/// Merges what OCR read into an extracted text: each page's OCR text follows what the page's
/// text layer held (a stamped line, say); the method says OCR was used (`ocr` for an image,
/// `text_layer+ocr` for a PDF) and the metadata carries `ocr` with the pages read and the
/// mean confidence.
pub fn merge(extracted: &mut Extracted, read: &OcrResult) {
    let pages = extracted.pages.unwrap_or(1).max(1) as usize;
    let mut pieces: Vec<String> = extracted.text.split('\u{c}').map(str::to_owned).collect();
    if pieces.len() < pages {
        pieces.resize(pages, String::new());
    }
    for page in &read.pages {
        let Some(piece) = pieces.get_mut(page.page.saturating_sub(1) as usize) else {
            continue;
        };
        if page.text.trim().is_empty() {
            continue;
        }
        if !piece.trim().is_empty() {
            piece.push('\n');
        }
        piece.push_str(&page.text);
    }
    extracted.text = pieces.join("\u{c}");
    if extracted.method.as_deref() != Some("ocr") {
        let layer = extracted
            .method
            .take()
            .unwrap_or_else(|| "text_layer".into());
        extracted.method = Some(format!("{layer}+ocr"));
    }
    let ocr = serde_json::json!({
        "engine": "tesseract",
        "pages_read": read.pages.len(),
        "mean_confidence": read.mean_confidence(),
        "pages": read.pages.iter().map(|p| serde_json::json!({
            "page": p.page, "words": p.words, "confidence": p.confidence,
        })).collect::<Vec<_>>(),
        "failed": read.failed,
        "skipped": read.skipped,
    });
    match &mut extracted.meta {
        Some(serde_json::Value::Object(meta)) => {
            meta.insert("ocr".into(), ocr);
        }
        _ => extracted.meta = Some(serde_json::json!({ "ocr": ocr })),
    }
}

/// The OCR workers.
#[derive(Clone, Debug)]
pub struct OcrService {
    pipeline: Pipeline,
    sandbox: Sandbox,
    workers: usize,
    max_pages: usize,
}

impl OcrService {
    /// `workers` loops reading pages in `sandbox` (an OCR sandbox), at most `max_pages`
    /// pages of one document.
    pub fn new(pipeline: Pipeline, sandbox: Sandbox, workers: usize, max_pages: usize) -> Self {
        Self {
            pipeline,
            sandbox,
            workers,
            max_pages,
        }
    }

    /// Takes jobs until `shutdown` is notified; a job cut short is taken again once its lease
    /// runs out.
    pub async fn run(self, shutdown: Arc<Notify>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let loops: Vec<_> = (0..self.workers)
            .map(|_| {
                let service = self.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = service.work() => {}
                            _ = stopped.changed() => return,
                        }
                    }
                })
            })
            .collect();
        shutdown.notified().await;
        let _ = stop.send(true);
        for task in loops {
            let _ = task.await;
        }
    }

    /// Does one job, or waits for one.
    async fn work(&self) {
        let wake = self.pipeline.ocr_wake();
        let waiting = wake.notified();
        match crate::db::ocr::claim(&self.pipeline.services().db, LEASE_MS).await {
            Ok(Some(job)) => {
                if let Err(e) = self.process(job).await {
                    tracing::error!(error = %e, "OCR failed; the job is retried");
                    tokio::time::sleep(POLL).await;
                }
            }
            Ok(None) => {
                tokio::select! {
                    () = waiting => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the OCR queue");
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Reads a job's pages, stores what was read, and records the new text.
    #[tracing::instrument(skip(self, job), fields(sha256 = %job.sha256, pages = job.pages.len()))]
    async fn process(&self, mut job: OcrJob) -> Result<(), PipelineError> {
        let services = self.pipeline.services();
        let mut read = OcrResult::default();
        if job.attempts > MAX_ATTEMPTS {
            read.failed.push(FailedPage {
                page: job.pages.first().copied().unwrap_or(1),
                reason: format!("OCR did not end after {MAX_ATTEMPTS} attempts"),
            });
        } else {
            let bytes = match ContentHash::parse(&job.sha256) {
                Ok(hash) => match services.blobs.read_verified(&hash).await {
                    Ok(bytes) => Some(bytes),
                    Err(
                        crate::blobs::BlobError::Corrupt(_) | crate::blobs::BlobError::Missing(_),
                    ) => None,
                    Err(e) => return Err(e.into()),
                },
                Err(_) => None,
            };
            match bytes {
                Some(bytes) => {
                    if !self.read_pages(&mut job, bytes, &mut read).await? {
                        return Ok(());
                    }
                }
                None => read.failed.push(FailedPage {
                    page: job.pages.first().copied().unwrap_or(1),
                    reason: "the stored file is missing or failed its integrity check".into(),
                }),
            }
        }
        let json = serde_json::to_vec(&read).unwrap_or_default();
        services
            .blobs
            .put_derived(&result_key(&job.sha256), Bytes::from(json))
            .await?;
        // The text as every node will now index it.
        let (chars, method, meta) =
            match self.pipeline.text_for(&job.sha256, &job.media_type).await? {
                Outcome::Done(e) => (
                    e.text.chars().count() as i64,
                    e.method,
                    e.meta.map(|m| m.to_string()),
                ),
                Outcome::Failed { .. } => (0, None, None),
            };
        let finished = Finished {
            status: if read.pages.is_empty() {
                "failed"
            } else {
                "done"
            },
            pages_read: read.pages.len() as i32,
            mean_confidence: read.mean_confidence(),
            reason: read.reason(),
            chars,
            method,
            meta,
        };
        if crate::db::ocr::finish(&services.db, &job, &finished).await? {
            services.wake.notify_one();
            tracing::info!(
                pages_read = finished.pages_read,
                confidence = ?finished.mean_confidence,
                "OCR done"
            );
        }
        Ok(())
    }

    /// Reads the pages one at a time, renewing the claim after each; false when the claim
    /// was lost to another worker.
    async fn read_pages(
        &self,
        job: &mut OcrJob,
        bytes: Bytes,
        read: &mut OcrResult,
    ) -> Result<bool, PipelineError> {
        let pages = job.pages.clone();
        read.skipped = pages.len().saturating_sub(self.max_pages) as u32;
        for page in pages.into_iter().take(self.max_pages) {
            match self
                .sandbox
                .read_page(bytes.clone(), &job.media_type, page)
                .await
            {
                Ok(text) => read.pages.push(OcrPage {
                    page,
                    text: text.text,
                    words: text.words,
                    confidence: text.confidence,
                }),
                Err(reason) => read.failed.push(FailedPage { page, reason }),
            }
            if !crate::db::ocr::renew(&self.pipeline.services().db, job).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extracted(text: &str, pages: u32, method: &str) -> Extracted {
        Extracted {
            pages: Some(pages),
            text: text.to_owned(),
            truncated: false,
            encoding: None,
            method: Some(method.to_owned()),
            meta: None,
            ocr_pages: Vec::new(),
            content: None,
        }
    }

    fn page(page: u32, text: &str, words: u32, confidence: f32) -> OcrPage {
        OcrPage {
            page,
            text: text.to_owned(),
            words,
            confidence: Some(confidence),
        }
    }

    #[test]
    fn a_scanned_page_is_merged_after_its_stamped_line_and_marked_as_ocr() {
        let mut pdf = extracted("Relazione tecnica\u{c}Prot. n. 42\u{c}", 3, "text_layer");
        let read = OcrResult {
            pages: vec![
                page(2, "Il Comune di Ciriè", 4, 90.0),
                page(3, "rilascia il permesso", 3, 70.0),
            ],
            failed: Vec::new(),
            skipped: 0,
        };
        merge(&mut pdf, &read);
        assert_eq!(
            pdf.text,
            "Relazione tecnica\u{c}Prot. n. 42\nIl Comune di Ciriè\u{c}rilascia il permesso"
        );
        assert_eq!(pdf.method.as_deref(), Some("text_layer+ocr"));
        let meta = pdf.meta.expect("test");
        // (4 × 90 + 3 × 70) / 7 words.
        assert_eq!(meta["ocr"]["mean_confidence"], 81.4);
        assert_eq!(meta["ocr"]["pages_read"], 2);

        let mut image = extracted("", 1, "ocr");
        merge(
            &mut image,
            &OcrResult {
                pages: vec![page(1, "Ricevuta", 1, 95.0)],
                ..Default::default()
            },
        );
        assert_eq!(image.text, "Ricevuta");
        assert_eq!(image.method.as_deref(), Some("ocr"));
    }

    #[test]
    fn reasons_name_failed_and_skipped_pages() {
        let read = OcrResult {
            pages: Vec::new(),
            failed: vec![FailedPage {
                page: 2,
                reason: "tesseract failed".into(),
            }],
            skipped: 10,
        };
        assert_eq!(
            read.reason().expect("test"),
            "page 2: tesseract failed; 10 pages beyond the OCR page limit were not read"
        );
        assert_eq!(read.mean_confidence(), None);
        assert_eq!(OcrResult::default().reason(), None);
    }
}
