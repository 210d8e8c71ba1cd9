//! Runs extraction in child processes of the same binary (`fascicolo extract-worker`) under
//! CPU-time, address-space and wall-clock limits, with their input and output capped. Whatever
//! a file does to the parser, the server sees at worst a failed extraction.
//!
//! A worker serves one file at a time and then waits for the next, so the cost of starting a
//! process (about 4 ms) is paid once per worker, not once per file. One file at a time keeps
//! the fault isolated: a worker that dies takes only the file it was reading with it, and a
//! fresh worker serves the next one. The CPU limit is re-armed before every file; a worker is
//! retired after [`FILES_PER_WORKER`] files so no file inherits a long-lived heap.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;

use super::ocr::{OcrTools, PageText};
use super::{Extracted, Limits, extract};

/// Files a worker extracts before it is replaced.
pub const FILES_PER_WORKER: u32 = 256;
/// Longest media type accepted in a request frame.
const MAX_MEDIA_TYPE: usize = 256;

/// Resource limits of one extraction child.
#[derive(Clone, Copy, Debug)]
pub struct SandboxLimits {
    /// CPU seconds before the kernel stops the child (SIGXCPU, then SIGKILL).
    pub cpu_seconds: u64,
    /// Address space of the child, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time before the parent kills the child.
    pub wall: Duration,
    /// Largest input handed to a child.
    pub max_input_bytes: u64,
    /// Text and parser limits inside the child.
    pub extract: Limits,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            cpu_seconds: 20,
            memory_bytes: 1024 * 1024 * 1024,
            wall: Duration::from_secs(30),
            max_input_bytes: 256 * 1024 * 1024,
            extract: Limits::default(),
        }
    }
}

/// The result of sandboxed extraction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Text was extracted.
    Done(Extracted),
    /// It was not; the reason is for people.
    Failed {
        /// Why.
        reason: String,
    },
}

/// What the child writes on stdout.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WorkerReply {
    Ok(Extracted),
    Page(PageText),
    Error(String),
}

/// What a sandbox's workers do.
#[derive(Clone, Debug)]
pub enum WorkerKind {
    /// Extract a file's text with the parsers in this binary; start no program.
    Extract,
    /// Read one page at a time with OCR, starting these programs.
    Ocr(OcrTools),
}

/// Runs extraction workers, at most a fixed number at a time, and keeps the idle ones.
#[derive(Clone, Debug)]
pub struct Sandbox {
    exe: PathBuf,
    kind: WorkerKind,
    limits: SandboxLimits,
    permits: Arc<Semaphore>,
    idle: Arc<Mutex<Vec<Worker>>>,
    /// Worker processes started so far.
    started: Arc<std::sync::atomic::AtomicU64>,
}

/// A running worker process and its pipes.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    served: u32,
}

/// Why an exchange with a worker ended without a reply.
enum Broken {
    /// The pipes failed or the frame was malformed: the worker died or misbehaved.
    Pipe,
    /// The reply was larger than its cap.
    Oversized,
}

impl Sandbox {
    /// A sandbox running `exe extract-worker`, with at most `parallel` workers at once.
    pub fn new(exe: PathBuf, limits: SandboxLimits, parallel: usize) -> Self {
        Self::of_kind(exe, WorkerKind::Extract, limits, parallel)
    }

    /// A sandbox of workers of `kind`, with at most `parallel` at once.
    pub fn of_kind(exe: PathBuf, kind: WorkerKind, limits: SandboxLimits, parallel: usize) -> Self {
        Self {
            exe,
            kind,
            limits,
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            idle: Arc::new(Mutex::new(Vec::new())),
            started: Arc::default(),
        }
    }

    /// How many worker processes this sandbox has started.
    pub fn workers_started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `exe sandbox-probe` once and logs which layers of the worker's confinement hold:
    /// an error when a required one (Landlock, seccomp) is missing (every extraction will
    /// fail with the reason), a warning when the optional network namespace is.
    pub async fn log_probe(&self, scratch: &std::path::Path) {
        let outside = scratch.join("outside.txt");
        let dir = scratch.join("scratch");
        let prepared = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&outside, b"x"));
        if let Err(e) = prepared {
            tracing::warn!(error = %e, "cannot prepare the sandbox probe");
            return;
        }
        let output = tokio::process::Command::new(&self.exe)
            .arg("sandbox-probe")
            .arg("--scratch")
            .arg(&dir)
            .arg("--outside")
            .arg(&outside)
            .env_clear()
            .stderr(Stdio::null())
            .output()
            .await;
        let _ = std::fs::remove_dir_all(scratch);
        let probe: Option<super::confine::Probe> = output
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok());
        match probe.map(|p| p.layers) {
            Some(Ok(layers)) if layers.network_namespace => {
                tracing::info!(landlock = ?layers.landlock, "extraction sandbox: Landlock, seccomp and a network namespace");
            }
            Some(Ok(layers)) => tracing::warn!(
                landlock = ?layers.landlock,
                "extraction sandbox: Landlock and seccomp hold; the optional network namespace \
                 is missing (needs root or unprivileged user namespaces)"
            ),
            Some(Err(missing)) => tracing::error!(
                %missing,
                "extraction sandbox: a required layer is missing; every extraction will fail"
            ),
            None => tracing::error!("extraction sandbox: the probe did not run"),
        }
    }

    /// The largest file handed to a worker.
    pub fn max_input_bytes(&self) -> u64 {
        self.limits.max_input_bytes
    }

    /// Extracts the text of `bytes` in a worker process.
    #[tracing::instrument(skip(self, bytes), fields(size = bytes.len()))]
    pub async fn run(&self, bytes: bytes::Bytes, media_type: &str) -> Outcome {
        match self.exchange(bytes, media_type, 0).await {
            Ok((WorkerReply::Ok(mut extracted), content)) => {
                extracted.content = content;
                Outcome::Done(extracted)
            }
            Ok((WorkerReply::Error(e), _)) | Err(e) => failed(e),
            Ok((WorkerReply::Page(_), _)) => failed("a worker of the wrong kind answered".into()),
        }
    }

    /// Reads page `page` (1-based) of `bytes` with OCR in a worker process of an OCR
    /// sandbox; the error is the reason, for people.
    #[tracing::instrument(skip(self, bytes), fields(size = bytes.len()))]
    pub async fn read_page(
        &self,
        bytes: bytes::Bytes,
        media_type: &str,
        page: u32,
    ) -> Result<PageText, String> {
        match self.exchange(bytes, media_type, page).await?.0 {
            WorkerReply::Page(text) => Ok(text),
            WorkerReply::Error(e) => Err(e),
            WorkerReply::Ok(_) => Err("a worker of the wrong kind answered".into()),
        }
    }

    /// Hands one request to a worker (an idle one, or a new one) and reads its reply, with
    /// the content it sent beside it (a signed file's).
    async fn exchange(
        &self,
        bytes: bytes::Bytes,
        media_type: &str,
        page: u32,
    ) -> Result<(WorkerReply, Option<Vec<u8>>), String> {
        if bytes.len() as u64 > self.limits.max_input_bytes {
            return Err(format!(
                "file larger than the extraction limit of {} bytes",
                self.limits.max_input_bytes
            ));
        }
        if media_type.len() > MAX_MEDIA_TYPE {
            return Err("media type too long".into());
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return Err("extraction is shutting down".into());
        };
        // An idle worker that has ended since (killed from outside) is not reused.
        let idle = self
            .idle
            .lock()
            .map(|mut v| v.pop())
            .unwrap_or(None)
            .and_then(|mut w: Worker| matches!(w.child.try_wait(), Ok(None)).then_some(w));
        let mut worker = match idle {
            Some(w) => w,
            None => match self.spawn() {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, exe = %self.exe.display(), "cannot start the extraction worker");
                    return Err(format!("cannot start the extraction worker: {e}"));
                }
            },
        };
        // The reply is the text plus JSON escaping: six bytes a character is ample.
        let cap = (self.limits.extract.max_chars as u64) * 6 + 64 * 1024;
        let exchanged = tokio::time::timeout(
            self.limits.wall,
            exchange(
                &mut worker,
                &bytes,
                media_type,
                page,
                cap,
                self.limits.max_input_bytes,
            ),
        )
        .await;
        let reply = match exchanged {
            Ok(Ok(reply)) => reply,
            Ok(Err(Broken::Oversized)) => {
                kill(&mut worker).await;
                return Err("extraction output exceeded its cap".into());
            }
            Ok(Err(Broken::Pipe)) => return Err(self.reason_of_death(worker).await),
            Err(_) => {
                kill(&mut worker).await;
                return Err(format!(
                    "extraction exceeded the wall-clock limit of {} s",
                    self.limits.wall.as_secs()
                ));
            }
        };
        worker.served += 1;
        if worker.served < FILES_PER_WORKER
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(worker);
        }
        let (reply, content) = reply;
        let reply = serde_json::from_slice::<WorkerReply>(&reply)
            .map_err(|e| format!("unreadable extraction output: {e}"))?;
        Ok((reply, (!content.is_empty()).then_some(content)))
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limits = self.limits;
        let mut command = tokio::process::Command::new(&self.exe);
        command.arg("extract-worker");
        if let WorkerKind::Ocr(tools) = &self.kind {
            command
                .arg("--ocr-tesseract")
                .arg(&tools.tesseract)
                .arg("--ocr-pdftoppm")
                .arg(&tools.pdftoppm)
                .arg("--ocr-languages")
                .arg(&tools.languages);
        }
        let mut child = command
            .arg("--cpu-seconds")
            .arg(limits.cpu_seconds.to_string())
            .arg("--memory-bytes")
            .arg(limits.memory_bytes.to_string())
            .arg("--max-input-bytes")
            .arg(limits.max_input_bytes.to_string())
            .arg("--max-chars")
            .arg(limits.extract.max_chars.to_string())
            .arg("--max-pages")
            .arg(limits.extract.max_pages.to_string())
            .arg("--max-page-content-bytes")
            .arg(limits.extract.max_page_content_bytes.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // A group of its own, so that the programs an OCR worker starts end with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Ok(Worker {
                child,
                stdin,
                stdout,
                served: 0,
            }),
            _ => Err(std::io::Error::other("the worker has no pipes")),
        }
    }

    /// Why a worker stopped answering, from how it ended.
    async fn reason_of_death(&self, worker: Worker) -> String {
        // A worker that broke the protocol without dying is stopped here.
        drop(worker.stdin);
        let mut child = worker.child;
        let group = child.id().and_then(|p| i32::try_from(p).ok());
        let status = match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return format!("waiting for the extraction worker: {e}"),
            Err(_) => {
                kill_group(&mut child).await;
                return "the extraction worker stopped answering".to_owned();
            }
        };
        // Whatever it started dies with it.
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        use nix::sys::signal::Signal;
        use std::os::unix::process::ExitStatusExt;
        match status.signal() {
            Some(s) if s == Signal::SIGXCPU as i32 => format!(
                "extraction exceeded the CPU limit of {} s",
                self.limits.cpu_seconds
            ),
            Some(s) if s == Signal::SIGKILL as i32 => {
                "extraction was killed (CPU or memory limit)".to_owned()
            }
            Some(s) if s == Signal::SIGSEGV as i32 => {
                "the parser crashed (stack overflow or invalid memory access)".to_owned()
            }
            Some(s) if s == Signal::SIGABRT as i32 => {
                "the parser aborted (memory limit or stack overflow)".to_owned()
            }
            Some(s) => format!("the parser died with signal {s}"),
            None => format!("the extraction worker ended with {status}"),
        }
    }
}

/// Kills a worker and every process it started (its process group).
async fn kill(worker: &mut Worker) {
    kill_group(&mut worker.child).await;
}

async fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill().await;
}

/// Sends one request frame and reads the reply frames: the reply (at most `cap` bytes) and
/// the content sent beside it (at most `content_cap`, empty for none). The input is written
/// while the reply is awaited, so a worker that dies half-way through reading is noticed at
/// once.
async fn exchange(
    worker: &mut Worker,
    bytes: &[u8],
    media_type: &str,
    page: u32,
    cap: u64,
    content_cap: u64,
) -> Result<(Vec<u8>, Vec<u8>), Broken> {
    let mut header = Vec::with_capacity(16 + media_type.len());
    header.extend_from_slice(&(media_type.len() as u32).to_le_bytes());
    header.extend_from_slice(media_type.as_bytes());
    header.extend_from_slice(&page.to_le_bytes());
    header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    let stdin = &mut worker.stdin;
    let stdout = &mut worker.stdout;
    let send = async {
        stdin.write_all(&header).await?;
        stdin.write_all(bytes).await?;
        stdin.flush().await
    };
    let receive = async {
        let reply = read_frame(stdout, cap).await?;
        let content = read_frame(stdout, content_cap).await?;
        Ok((reply, content))
    };
    let (sent, received) = tokio::join!(send, receive);
    let reply = received?;
    // A worker answers only after reading all of its input.
    sent.map_err(|_| Broken::Pipe)?;
    Ok(reply)
}

/// One frame from a worker: its length, then that many bytes, at most `cap`.
async fn read_frame(stdout: &mut ChildStdout, cap: u64) -> Result<Vec<u8>, Broken> {
    let mut len = [0u8; 8];
    stdout
        .read_exact(&mut len)
        .await
        .map_err(|_| Broken::Pipe)?;
    let len = u64::from_le_bytes(len);
    if len > cap {
        return Err(Broken::Oversized);
    }
    let mut frame = vec![0u8; usize::try_from(len).map_err(|_| Broken::Oversized)?];
    stdout
        .read_exact(&mut frame)
        .await
        .map_err(|_| Broken::Pipe)?;
    Ok(frame)
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed { reason }
}

/// Options of the worker process, from its command line.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// CPU seconds per file.
    #[arg(long)]
    cpu_seconds: u64,
    /// Address-space limit in bytes.
    #[arg(long)]
    memory_bytes: u64,
    /// Largest input accepted.
    #[arg(long)]
    max_input_bytes: u64,
    /// Characters of text kept.
    #[arg(long)]
    max_chars: usize,
    /// Pages read.
    #[arg(long)]
    max_pages: usize,
    /// Decompressed content per page.
    #[arg(long)]
    max_page_content_bytes: usize,
    /// The one folder the worker may read and write (none by default).
    #[arg(long)]
    scratch: Option<std::path::PathBuf>,
    /// Tesseract: given, the worker reads pages with OCR instead of extracting files.
    #[arg(long)]
    ocr_tesseract: Option<PathBuf>,
    /// Poppler's `pdftoppm`, which draws PDF pages for OCR.
    #[arg(long, default_value = "/usr/bin/pdftoppm")]
    ocr_pdftoppm: PathBuf,
    /// Tesseract's languages.
    #[arg(long, default_value = "ita+eng")]
    ocr_languages: String,
}

/// The worker: limit itself, then for each request frame on stdin (media type and bytes)
/// extract and answer a reply frame on stdout, until stdin closes.
pub fn worker_main(args: &WorkerArgs) -> ExitCode {
    use nix::sys::resource::{Resource, setrlimit};
    let fixed = [
        (Resource::RLIMIT_AS, args.memory_bytes, args.memory_bytes),
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_FSIZE, 0, 0),
        (Resource::RLIMIT_NOFILE, 16, 16),
    ];
    let mut refused = None;
    for (resource, soft, hard) in fixed {
        if let Err(e) = setrlimit(resource, soft, hard) {
            refused = Some(format!("cannot apply limit {resource:?}: {e}"));
            break;
        }
    }
    // Confined before the first byte of input is read; a worker that cannot confine itself
    // answers every file with the reason instead of extracting it.
    let tools = args.ocr_tesseract.as_ref().map(|tesseract| OcrTools {
        tesseract: tesseract.clone(),
        pdftoppm: args.ocr_pdftoppm.clone(),
        languages: args.ocr_languages.clone(),
    });
    let allowance = if tools.is_some() {
        super::confine::Allowance::Programs
    } else {
        super::confine::Allowance::Nothing
    };
    if refused.is_none()
        && let Err(e) = super::confine::confine(args.scratch.as_deref(), allowance)
    {
        refused = Some(e.to_string());
    }
    let limits = Limits {
        max_chars: args.max_chars,
        max_page_content_bytes: args.max_page_content_bytes,
        max_pages: args.max_pages,
    };
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    loop {
        let (media_type, page, bytes) = match read_request(&mut input, args.max_input_bytes) {
            Ok(Some(request)) => request,
            Ok(None) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::FAILURE,
        };
        let answer = if let Some(e) = &refused {
            WorkerReply::Error(e.clone())
        } else if let Err(e) = arm_cpu_limit(args.cpu_seconds) {
            WorkerReply::Error(format!("cannot apply the CPU limit: {e}"))
        } else if let Some(tools) = &tools {
            match super::ocr::recognise_page(&bytes, &media_type, page, tools) {
                Ok(text) => WorkerReply::Page(text),
                Err(e) => WorkerReply::Error(e.to_string()),
            }
        } else {
            match extract(&bytes, &media_type, &limits) {
                Ok(extracted) => WorkerReply::Ok(extracted),
                Err(e) => WorkerReply::Error(e.to_string()),
            }
        };
        drop(bytes);
        if write_reply(&mut output, &answer).is_err() || refused.is_some() {
            return ExitCode::FAILURE;
        }
    }
}

/// Sets the soft CPU limit to what this process has used so far plus `seconds`: the kernel
/// ends the worker (SIGXCPU) if the next file takes longer.
fn arm_cpu_limit(seconds: u64) -> nix::Result<()> {
    use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let used = usage.user_time().tv_sec() + usage.system_time().tv_sec() + 1;
    let (_, hard) = getrlimit(Resource::RLIMIT_CPU)?;
    let soft = (u64::try_from(used).unwrap_or(0) + seconds).min(hard);
    setrlimit(Resource::RLIMIT_CPU, soft, hard)
}

/// One request: the media type, the page (0 for a whole file) and the file. `None` when
/// stdin closed between requests.
fn read_request(
    input: &mut impl Read,
    max_input: u64,
) -> std::io::Result<Option<(String, u32, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let media_len = u32::from_le_bytes(len) as usize;
    if media_len > MAX_MEDIA_TYPE {
        return Err(std::io::Error::other("media type too long"));
    }
    let mut media = vec![0u8; media_len];
    input.read_exact(&mut media)?;
    let media = String::from_utf8(media).map_err(std::io::Error::other)?;
    let mut page = [0u8; 4];
    input.read_exact(&mut page)?;
    let page = u32::from_le_bytes(page);
    let mut size = [0u8; 8];
    input.read_exact(&mut size)?;
    let size = u64::from_le_bytes(size);
    if size > max_input {
        return Err(std::io::Error::other("input larger than the limit"));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(size).map_err(std::io::Error::other)?)?;
    input.take(size).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != size {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((media, page, bytes)))
}

/// The reply frame, then the content frame (a signed file's content; empty for none).
fn write_reply(out: &mut impl Write, answer: &WorkerReply) -> std::io::Result<()> {
    let json = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)?;
    let content = match answer {
        WorkerReply::Ok(extracted) => extracted.content.as_deref().unwrap_or_default(),
        _ => &[],
    };
    out.write_all(&(content.len() as u64).to_le_bytes())?;
    out.write_all(content)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frames_round_trip_and_stop_cleanly_between_requests() {
        let mut frame = Vec::new();
        for (media, body) in [("text/plain", &b"ciao"[..]), ("application/pdf", b"")] {
            frame.extend_from_slice(&(media.len() as u32).to_le_bytes());
            frame.extend_from_slice(media.as_bytes());
            frame.extend_from_slice(&3u32.to_le_bytes());
            frame.extend_from_slice(&(body.len() as u64).to_le_bytes());
            frame.extend_from_slice(body);
        }
        let mut input = &frame[..];
        let first = read_request(&mut input, 16)
            .expect("first")
            .expect("a request");
        assert_eq!(first, ("text/plain".to_owned(), 3, b"ciao".to_vec()));
        let second = read_request(&mut input, 16)
            .expect("second")
            .expect("a request");
        assert_eq!(second, ("application/pdf".to_owned(), 3, Vec::new()));
        assert!(read_request(&mut input, 16).expect("end").is_none());
    }

    #[test]
    fn oversized_and_truncated_requests_are_refused() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&10u32.to_le_bytes());
        frame.extend_from_slice(b"text/plain");
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&100u64.to_le_bytes());
        frame.extend_from_slice(b"short");
        assert!(read_request(&mut &frame[..], 50).is_err(), "over the limit");
        assert!(read_request(&mut &frame[..], 1000).is_err(), "truncated");
    }
}
