//! The real binary as a child process, for tests that kill or restart the server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts `fascicolo serve` on port 0 over `data_dir` and waits for its address.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// [`Self::start`] with more environment variables.
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fascicolo"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .env("FASCICOLO_DATA_DIR", data_dir)
            .env("FASCICOLO_EXTRACT_CPU_SECONDS", "5")
            .env("RUST_LOG", "warn,fascicolo::cli=info")
            .env("NO_COLOR", "1")
            .env_remove("FASCICOLO_DATABASE_URL")
            .env_remove("FASCICOLO_BLOB_URL")
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the server");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut base = None;
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(address) = line.split("address=").nth(1) {
                base = Some(format!(
                    "http://{}",
                    address.split_whitespace().next().unwrap_or_default()
                ));
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base: base.expect("the server logged its address"),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI over `data_dir` and returns its JSON output.
pub fn cli(data_dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .args(args)
        .env("FASCICOLO_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("FASCICOLO_DATABASE_URL")
        .env_remove("FASCICOLO_BLOB_URL")
        .output()
        .expect("running the CLI");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}
