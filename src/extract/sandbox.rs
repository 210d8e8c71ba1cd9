//! Runs extraction in a child process of the same binary (`fascicolo extract-worker`) under
//! CPU-time, address-space and wall-clock limits, with its input and output capped. Whatever
//! the file does to the parser, the server sees at worst a failed extraction.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::{Extracted, Limits, extract};

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

/// Spawns extraction children, at most a fixed number at a time.
#[derive(Clone, Debug)]
pub struct Sandbox {
    exe: PathBuf,
    limits: SandboxLimits,
    permits: Arc<Semaphore>,
}

impl Sandbox {
    /// A sandbox running `exe extract-worker`, with at most `parallel` children at once.
    pub fn new(exe: PathBuf, limits: SandboxLimits, parallel: usize) -> Self {
        Self {
            exe,
            limits,
            permits: Arc::new(Semaphore::new(parallel.max(1))),
        }
    }

    /// The largest file handed to a child.
    pub fn max_input_bytes(&self) -> u64 {
        self.limits.max_input_bytes
    }

    /// Extracts the text of `bytes` in a child process.
    #[tracing::instrument(skip(self, bytes), fields(size = bytes.len()))]
    pub async fn run(&self, bytes: bytes::Bytes, media_type: &str) -> Outcome {
        if bytes.len() as u64 > self.limits.max_input_bytes {
            return failed(format!(
                "file larger than the extraction limit of {} bytes",
                self.limits.max_input_bytes
            ));
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return failed("extraction is shutting down".into());
        };
        let limits = self.limits;
        let mut child = match tokio::process::Command::new(&self.exe)
            .arg("extract-worker")
            .arg("--media-type")
            .arg(media_type)
            .arg("--cpu-seconds")
            .arg(limits.cpu_seconds.to_string())
            .arg("--memory-bytes")
            .arg(limits.memory_bytes.to_string())
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
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, exe = %self.exe.display(), "cannot start the extraction worker");
                return failed(format!("cannot start the extraction worker: {e}"));
            }
        };
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return failed("extraction worker has no pipes".into());
        };
        // A child that stops reading (it crashed, or gave up) just closes the pipe.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        });
        // The reply is the text plus JSON escaping: four bytes a character is ample.
        let cap = (limits.extract.max_chars as u64) * 6 + 64 * 1024;
        let reading = async {
            let mut out = Vec::new();
            let mut limited = stdout.take(cap + 1);
            limited.read_to_end(&mut out).await.map(|_| out)
        };
        let result = tokio::time::timeout(limits.wall, async {
            let out = reading.await;
            let status = child.wait().await;
            (out, status)
        })
        .await;
        writer.abort();
        let (out, status) = match result {
            Ok(r) => r,
            Err(_) => {
                let _ = child.kill().await;
                return failed(format!(
                    "extraction exceeded the wall-clock limit of {} s",
                    limits.wall.as_secs()
                ));
            }
        };
        let out = match out {
            Ok(o) if o.len() as u64 > cap => {
                return failed("extraction output exceeded its cap".into());
            }
            Ok(o) => o,
            Err(e) => return failed(format!("reading extraction output: {e}")),
        };
        let status = match status {
            Ok(s) => s,
            Err(e) => return failed(format!("waiting for the extraction worker: {e}")),
        };
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let reason = match status.signal() {
                Some(s) if s == nix::sys::signal::Signal::SIGXCPU as i32 => {
                    format!(
                        "extraction exceeded the CPU limit of {} s",
                        limits.cpu_seconds
                    )
                }
                Some(s) if s == nix::sys::signal::Signal::SIGKILL as i32 => {
                    "extraction was killed (CPU or memory limit)".to_owned()
                }
                Some(s) if s == nix::sys::signal::Signal::SIGSEGV as i32 => {
                    "the parser crashed (stack overflow or invalid memory access)".to_owned()
                }
                Some(s) if s == nix::sys::signal::Signal::SIGABRT as i32 => {
                    "the parser aborted (memory limit or stack overflow)".to_owned()
                }
                Some(s) => format!("the parser died with signal {s}"),
                None => match serde_json::from_slice::<WorkerReply>(&out) {
                    Ok(WorkerReply::Error(e)) => e,
                    _ => format!("the parser failed with {status}"),
                },
            };
            return failed(reason);
        }
        match serde_json::from_slice::<WorkerReply>(&out) {
            Ok(WorkerReply::Ok(extracted)) => Outcome::Done(extracted),
            Ok(WorkerReply::Error(e)) => failed(e),
            Err(e) => failed(format!("unreadable extraction output: {e}")),
        }
    }
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed { reason }
}

/// Options of the child process, from its command line.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// Sniffed media type of the input.
    #[arg(long)]
    media_type: String,
    /// CPU seconds.
    #[arg(long)]
    cpu_seconds: u64,
    /// Address-space limit in bytes.
    #[arg(long)]
    memory_bytes: u64,
    /// Characters of text kept.
    #[arg(long)]
    max_chars: usize,
    /// Pages read.
    #[arg(long)]
    max_pages: usize,
    /// Decompressed content per page.
    #[arg(long)]
    max_page_content_bytes: usize,
}

/// The child: limit itself, read stdin, extract, answer JSON on stdout.
pub fn worker_main(args: &WorkerArgs) -> ExitCode {
    use nix::sys::resource::{Resource, setrlimit};
    let limits = [
        (Resource::RLIMIT_CPU, args.cpu_seconds, args.cpu_seconds + 1),
        (Resource::RLIMIT_AS, args.memory_bytes, args.memory_bytes),
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_FSIZE, 0, 0),
        (Resource::RLIMIT_NOFILE, 16, 16),
    ];
    for (resource, soft, hard) in limits {
        if let Err(e) = setrlimit(resource, soft, hard) {
            let _ = reply(&WorkerReply::Error(format!(
                "cannot apply limit {resource:?}: {e}"
            )));
            return ExitCode::FAILURE;
        }
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        let _ = reply(&WorkerReply::Error(format!("reading input: {e}")));
        return ExitCode::FAILURE;
    }
    let limits = Limits {
        max_chars: args.max_chars,
        max_page_content_bytes: args.max_page_content_bytes,
        max_pages: args.max_pages,
    };
    let answer = match extract(&input, &args.media_type, &limits) {
        Ok(extracted) => WorkerReply::Ok(extracted),
        Err(e) => WorkerReply::Error(e.to_string()),
    };
    match reply(&answer) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn reply(answer: &WorkerReply) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, answer)?;
    out.flush()
}
