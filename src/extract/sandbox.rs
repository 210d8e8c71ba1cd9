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
    Error(String),
}

/// Runs extraction workers, at most a fixed number at a time, and keeps the idle ones.
#[derive(Clone, Debug)]
pub struct Sandbox {
    exe: PathBuf,
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
        Self {
            exe,
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
        if bytes.len() as u64 > self.limits.max_input_bytes {
            return failed(format!(
                "file larger than the extraction limit of {} bytes",
                self.limits.max_input_bytes
            ));
        }
        if media_type.len() > MAX_MEDIA_TYPE {
            return failed("media type too long".into());
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return failed("extraction is shutting down".into());
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
                    return failed(format!("cannot start the extraction worker: {e}"));
                }
            },
        };
        // The reply is the text plus JSON escaping: six bytes a character is ample.
        let cap = (self.limits.extract.max_chars as u64) * 6 + 64 * 1024;
        let exchanged = tokio::time::timeout(
            self.limits.wall,
            exchange(&mut worker, &bytes, media_type, cap),
        )
        .await;
        let reply = match exchanged {
            Ok(Ok(reply)) => reply,
            Ok(Err(Broken::Oversized)) => {
                let _ = worker.child.kill().await;
                return failed("extraction output exceeded its cap".into());
            }
            Ok(Err(Broken::Pipe)) => return failed(self.reason_of_death(worker).await),
            Err(_) => {
                let _ = worker.child.kill().await;
                return failed(format!(
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
        match serde_json::from_slice::<WorkerReply>(&reply) {
            Ok(WorkerReply::Ok(extracted)) => Outcome::Done(extracted),
            Ok(WorkerReply::Error(e)) => failed(e),
            Err(e) => failed(format!("unreadable extraction output: {e}")),
        }
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limits = self.limits;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("extract-worker")
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
    async fn reason_of_death(&self, mut worker: Worker) -> String {
        // A worker that broke the protocol without dying is stopped here.
        drop(worker.stdin);
        let status = match tokio::time::timeout(Duration::from_secs(1), worker.child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return format!("waiting for the extraction worker: {e}"),
            Err(_) => {
                let _ = worker.child.kill().await;
                return "the extraction worker stopped answering".to_owned();
            }
        };
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

/// Sends one request frame and reads the reply frame. The input is written while the reply is
/// awaited, so a worker that dies half-way through reading is noticed at once.
async fn exchange(
    worker: &mut Worker,
    bytes: &[u8],
    media_type: &str,
    cap: u64,
) -> Result<Vec<u8>, Broken> {
    let mut header = Vec::with_capacity(12 + media_type.len());
    header.extend_from_slice(&(media_type.len() as u32).to_le_bytes());
    header.extend_from_slice(media_type.as_bytes());
    header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    let stdin = &mut worker.stdin;
    let stdout = &mut worker.stdout;
    let send = async {
        stdin.write_all(&header).await?;
        stdin.write_all(bytes).await?;
        stdin.flush().await
    };
    let receive = async {
        let mut len = [0u8; 8];
        stdout
            .read_exact(&mut len)
            .await
            .map_err(|_| Broken::Pipe)?;
        let len = u64::from_le_bytes(len);
        if len > cap {
            return Err(Broken::Oversized);
        }
        let mut reply = vec![0u8; usize::try_from(len).map_err(|_| Broken::Oversized)?];
        stdout
            .read_exact(&mut reply)
            .await
            .map_err(|_| Broken::Pipe)?;
        Ok(reply)
    };
    let (sent, received) = tokio::join!(send, receive);
    let reply = received?;
    // A worker answers only after reading all of its input.
    sent.map_err(|_| Broken::Pipe)?;
    Ok(reply)
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
    if refused.is_none()
        && let Err(e) = super::confine::confine(args.scratch.as_deref())
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
        let (media_type, bytes) = match read_request(&mut input, args.max_input_bytes) {
            Ok(Some(request)) => request,
            Ok(None) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::FAILURE,
        };
        let answer = if let Some(e) = &refused {
            WorkerReply::Error(e.clone())
        } else if let Err(e) = arm_cpu_limit(args.cpu_seconds) {
            WorkerReply::Error(format!("cannot apply the CPU limit: {e}"))
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

/// One request: the media type and the file. `None` when stdin closed between requests.
fn read_request(
    input: &mut impl Read,
    max_input: u64,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
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
    Ok(Some((media, bytes)))
}

fn write_reply(out: &mut impl Write, answer: &WorkerReply) -> std::io::Result<()> {
    let json = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)?;
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
            frame.extend_from_slice(&(body.len() as u64).to_le_bytes());
            frame.extend_from_slice(body);
        }
        let mut input = &frame[..];
        let first = read_request(&mut input, 16)
            .expect("first")
            .expect("a request");
        assert_eq!(first, ("text/plain".to_owned(), b"ciao".to_vec()));
        let second = read_request(&mut input, 16)
            .expect("second")
            .expect("a request");
        assert_eq!(second, ("application/pdf".to_owned(), Vec::new()));
        assert!(read_request(&mut input, 16).expect("end").is_none());
    }

    #[test]
    fn oversized_and_truncated_requests_are_refused() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&10u32.to_le_bytes());
        frame.extend_from_slice(b"text/plain");
        frame.extend_from_slice(&100u64.to_le_bytes());
        frame.extend_from_slice(b"short");
        assert!(read_request(&mut &frame[..], 50).is_err(), "over the limit");
        assert!(read_request(&mut &frame[..], 1000).is_err(), "truncated");
    }
}
