//! The extraction worker confines itself before it reads a byte of untrusted input (DESIGN.md
//! §2), in three layers:
//! - **Landlock** (required): no file may be opened, read, written, created, removed or
//!   executed, except beneath the scratch folder it is handed (none today: files arrive on
//!   stdin and text leaves on stdout, pipes opened before the ruleset);
//! - **seccomp** (required): no sockets, no new processes (`fork`, `vfork`, `execve`, a
//!   `clone` that is not a thread), no tracing, mounting, namespaces, kernel modules, BPF or
//!   keyrings; these calls fail with `EPERM`;
//!
//!   The OCR worker differs in one point: it may read and execute the programs beneath the
//!   system folders (Landlock) and start processes (seccomp), because it runs Tesseract and
//!   `pdftoppm`. They inherit every layer: no network, no file written, no file read outside
//!   those folders;
//! - **a network namespace of its own** (optional): no network interface but a loopback that
//!   is down, where the process may create one (root, or unprivileged user namespaces).
//!
//! A worker that cannot apply a required layer refuses every file (see
//! [`super::sandbox::worker_main`]); the server probes the layers once at start and logs
//! which optional one is missing.

use std::collections::BTreeMap;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use serde::{Deserialize, Serialize};

/// The newest Landlock ABI this code asks for; older kernels enforce what they know.
const LANDLOCK_ABI: ABI = ABI::V5;

/// Which layers hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// `full` or `partial` (a kernel that knows only some of the access rights).
    pub landlock: Option<String>,
    /// The system-call filter is on.
    pub seccomp: bool,
    /// The process has a network namespace of its own.
    pub network_namespace: bool,
}

/// A required layer that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Landlock is not available or refused the ruleset.
    #[error("Landlock cannot be applied: {0}")]
    Landlock(String),
    /// seccomp is not available or refused the filter.
    #[error("seccomp cannot be applied: {0}")]
    Seccomp(String),
}

/// Folders whose files an OCR worker may read and execute: the programs it starts, their
/// libraries, language data and fonts. Nothing beneath them is writable.
const PROGRAM_FOLDERS: &[&str] = &["/usr", "/lib", "/lib64", "/etc", "/var/cache/fontconfig"];

/// What a confined worker may still do besides reading its pipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// Nothing: the text extractor.
    Nothing,
    /// Start the programs beneath [`PROGRAM_FOLDERS`] (Tesseract, `pdftoppm`), which inherit
    /// every layer: the OCR worker.
    Programs,
}

/// Confines the calling process, which must still be single-threaded (namespaces and
/// seccomp apply to the calling thread and its future children). `scratch`, when given, is
/// the one folder where files may be read and written.
pub fn confine(scratch: Option<&Path>, allowance: Allowance) -> Result<Layers, ConfineError> {
    // Before Landlock: creating a namespace needs nothing it forbids, and must happen while
    // the process is alone.
    let network_namespace = own_network_namespace();
    let landlock = restrict_filesystem(scratch, allowance)?;
    filter_system_calls(allowance)?;
    Ok(Layers {
        landlock: Some(landlock.to_owned()),
        seccomp: true,
        network_namespace,
    })
}

fn own_network_namespace() -> bool {
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWNET).is_ok()
        || unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).is_ok()
}

fn restrict_filesystem(
    scratch: Option<&Path>,
    allowance: Allowance,
) -> Result<&'static str, ConfineError> {
    let error = |e: &dyn std::fmt::Display| ConfineError::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .map_err(|e| error(&e))?
        .create()
        .map_err(|e| error(&e))?;
    if let Some(dir) = scratch {
        let fd = PathFd::new(dir).map_err(|e| error(&e))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, AccessFs::from_all(LANDLOCK_ABI)))
            .map_err(|e| error(&e))?;
    }
    if allowance == Allowance::Programs {
        for folder in PROGRAM_FOLDERS {
            // A folder this system lacks is simply not granted.
            let Ok(fd) = PathFd::new(folder) else {
                continue;
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(
                    fd,
                    AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
                ))
                .map_err(|e| error(&e))?;
        }
    }
    let status = ruleset.restrict_self().map_err(|e| error(&e))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("full"),
        RulesetStatus::PartiallyEnforced => Ok("partial"),
        RulesetStatus::NotEnforced => Err(ConfineError::Landlock(
            "the kernel does not enforce Landlock".into(),
        )),
    }
}

/// System calls a text extractor never needs, refused with `EPERM` (`clone3` with `ENOSYS`,
/// so the C library falls back to `clone`, whose flags the filter can read). An OCR worker
/// may start processes; the rest is refused to it and to them alike.
fn filter_system_calls(allowance: Allowance) -> Result<(), ConfineError> {
    let error = |e: &dyn std::fmt::Display| ConfineError::Seccomp(e.to_string());
    let starting: &[libc::c_long] = &[
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
    ];
    let refused: &[libc::c_long] = &[
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        refused.iter().map(|&call| (call, Vec::new())).collect();
    if allowance == Allowance::Nothing {
        rules.extend(starting.iter().map(|&call| (call, Vec::new())));
        // A clone without CLONE_THREAD is a new process.
        let not_a_thread = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            0,
        )
        .map_err(|e| error(&e))?;
        rules.insert(
            libc::SYS_clone,
            vec![SeccompRule::new(vec![not_a_thread]).map_err(|e| error(&e))?],
        );
    }
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| error(&e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| error(&e))?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| error(&e))?;
    for filter in [filter, clone3] {
        let program: seccompiler::BpfProgram = filter.try_into().map_err(|e| error(&e))?;
        seccompiler::apply_filter(&program).map_err(|e| error(&e))?;
    }
    Ok(())
}

/// What a confined process can still do, tried from inside it: the probe behind
/// `fascicolo sandbox-probe`, which the server runs at start and the tests run to
/// show each layer holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    /// The layers applied, or why a required one was not.
    pub layers: Result<Layers, String>,
    /// Reading a file outside the scratch folder succeeded.
    pub read_outside: bool,
    /// Creating a file outside the scratch folder succeeded.
    pub write_outside: bool,
    /// Creating a file inside the scratch folder succeeded.
    pub write_scratch: bool,
    /// Creating a network socket succeeded.
    pub socket: bool,
    /// Starting another program succeeded.
    pub spawn: bool,
    /// Starting a thread succeeded (extractors may use threads).
    pub thread: bool,
    /// A program started from the probe read the file outside or wrote beside it (only an
    /// OCR worker can start one at all).
    pub child_escaped: bool,
}

/// Confines this process and tries what it should no longer be able to do.
pub fn probe(scratch: Option<&Path>, outside: &Path, allowance: Allowance) -> Probe {
    let layers = confine(scratch, allowance).map_err(|e| e.to_string());
    let write_scratch = scratch.is_some_and(|dir| {
        std::fs::write(dir.join("probe.txt"), b"ok").is_ok()
            && std::fs::read(dir.join("probe.txt")).is_ok()
    });
    Probe {
        layers,
        read_outside: std::fs::read(outside).is_ok(),
        write_outside: std::fs::write(
            outside.with_file_name("written-by-the-worker.txt"),
            b"escaped",
        )
        .is_ok(),
        write_scratch,
        socket: std::net::UdpSocket::bind("127.0.0.1:0").is_ok()
            || std::net::TcpStream::connect("127.0.0.1:9").is_ok(),
        spawn: std::process::Command::new("/bin/true").status().is_ok(),
        thread: std::thread::spawn(|| 1 + 1).join().is_ok_and(|n| n == 2),
        child_escaped: child_escapes(outside),
    }
}

/// Whether a shell started here can read `outside` or write beside it.
fn child_escapes(outside: &Path) -> bool {
    let written = outside.with_file_name("written-by-a-child.txt");
    let read = std::process::Command::new("/bin/cat")
        .arg(outside)
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    let wrote = std::process::Command::new("/bin/cp")
        .arg("/etc/hostname")
        .arg(&written)
        .status()
        .is_ok_and(|s| s.success());
    read || wrote || written.exists()
}
