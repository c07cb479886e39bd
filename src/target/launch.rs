//! Launching a command with the agent: `LD_PRELOAD` (appended, never clobbered), a session id
//! that every descendant inherits, the signal state looptop was started with, and forwarding of
//! SIGINT/SIGTERM/SIGHUP ([`super::signals`]).

use super::signals::{self, Inherited};
use crate::error::UserError;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::signals::{forward_signals, interrupted};

/// How long a launched command gets to exit after SIGTERM before it is killed.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// What to launch and how.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// Program and arguments.
    pub command: Vec<OsString>,
    /// Ticks at least this long are kept individually by the agent (ns).
    pub stall_floor_ns: u64,
    /// Where the program's stdin comes from (inherited, or nothing while the live view owns the
    /// terminal).
    pub stdin: Output,
    /// Where the program's stdout goes (inherited unless the caller needs it).
    pub stdout: Output,
    /// Where the program's stderr goes.
    pub stderr: Output,
}

impl LaunchPlan {
    /// `command` with looptop's own stdin, stdout and stderr.
    pub fn inherited(command: &[OsString], stall_floor_ns: u64) -> Self {
        LaunchPlan {
            command: command.to_vec(),
            stall_floor_ns,
            stdin: Output::Inherit,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
        }
    }
}

/// Where a stream of the target goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Same as looptop's.
    Inherit,
    /// A pipe to looptop.
    Piped,
    /// Discarded (or, for stdin, nothing to read).
    Null,
    /// This file, opened by the caller (the program's output while the live view owns the
    /// terminal).
    File(Arc<std::fs::File>),
}

impl Output {
    fn stdio(&self) -> Result<Stdio, UserError> {
        Ok(match self {
            Output::Inherit => Stdio::inherit(),
            Output::Piped => Stdio::piped(),
            Output::Null => Stdio::null(),
            Output::File(file) => file
                .try_clone()
                .map_err(|e| UserError::observe(format!("cannot pass its output file to the program: {e}")))?
                .into(),
        })
    }
}

/// A running target.
pub struct Launched {
    /// The direct child.
    pub child: Child,
    /// Session id in every descendant's segment header.
    pub session: u64,
    /// Private folder where agents report why they could not set up; removed on drop.
    pub run_dir: PathBuf,
    /// Descendants sent SIGTERM when the command was stopped (pid, start time): SIGKILL follows
    /// them even once their parent is gone.
    pub signalled: Vec<(u32, u64)>,
}

impl Launched {
    /// Stops the command if it still runs: SIGTERM, then SIGKILL after [`TERM_GRACE`]. Returns how
    /// it ended (`None` if that cannot be known).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal_all(libc::SIGTERM);
        let asked = Instant::now();
        while asked.elapsed() < TERM_GRACE {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        }
        self.signal_all(libc::SIGKILL);
        self.child.wait().ok()
    }

    /// Sends `sig` to the command and every process it started that still runs (a wrapper such
    /// as `npm start` or `sh -c` would otherwise leave its server running when only it is
    /// stopped), and, for SIGKILL, again to those it signalled before that are still there.
    pub fn signal_all(&mut self, sig: libc::c_int) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let mut targets = super::proc::descendants(self.child.id());
        if sig == libc::SIGKILL {
            targets.extend(self.signalled.iter().copied());
        }
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        for &(pid, start) in &targets {
            // The same process (its start time), not one that took its pid since.
            if super::proc::is_alive(pid, start) {
                // SAFETY: signalling a process the command started.
                unsafe { libc::kill(pid as i32, sig) };
            }
        }
        self.signalled.extend(targets);
    }
}

/// How a finished command ended: "exited 3", "killed by SIGTERM".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// A fresh session id: unique enough among the launches on one machine.
fn new_session() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let x = (ts.tv_sec as u64).wrapping_mul(1_000_000_007) ^ (ts.tv_nsec as u64) ^ ((std::process::id() as u64) << 40);
    // splitmix64 finaliser, and never 0 (0 means "no session").
    let mut z = x.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    (z ^ (z >> 31)) | 1
}

/// `LD_PRELOAD` with the agent appended to what the user already preloads.
fn preload_value(agent: &Path) -> OsString {
    let mut v = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()).unwrap_or_default();
    if !v.is_empty() {
        v.push(":");
    }
    v.push(agent.as_os_str());
    v
}

/// Starts the command with the agent preloaded.
pub fn spawn(plan: &LaunchPlan, agent: &Path) -> Result<Launched, UserError> {
    let (program, args) = plan.command.split_first().ok_or_else(|| UserError::usage("no command to run"))?;
    let session = new_session();
    // A new private folder (mkdir 0700 of a random name): nothing another user planted in a
    // shared TMPDIR can be it.
    let tmp = std::env::temp_dir();
    let run_dir = crate::safefs::new_private_dir(&tmp, "looptop-run").map_err(|e| {
        UserError::observe(format!("cannot create a private folder in {}: {e}", tmp.display()))
            .hint("set TMPDIR to a folder you can write to")
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LD_PRELOAD", preload_value(agent))
        .env(looptop_abi::ENV_SESSION, session.to_string())
        .env(looptop_abi::ENV_RUN_DIR, &run_dir)
        .env(looptop_abi::ENV_KEEP_SEGMENT, std::process::id().to_string())
        .env(looptop_abi::ENV_STALL_FLOOR_NS, plan.stall_floor_ns.to_string())
        .stdin(plan.stdin.stdio()?)
        .stdout(plan.stdout.stdio()?)
        .stderr(plan.stderr.stdio()?);
    // The command starts with the signal mask and dispositions looptop was started with, not
    // with what looptop changed for itself (the forwarded signals blocked, SIGPIPE ignored).
    let inherited = Inherited::at_start();
    // SAFETY: the hook only makes raw, async-signal-safe system calls on values copied in.
    unsafe {
        cmd.pre_exec(move || {
            inherited.restore();
            Ok(())
        })
    };
    let child = cmd.spawn().map_err(|e| {
        let _ = std::fs::remove_dir_all(&run_dir);
        let name = program.to_string_lossy();
        match e.kind() {
            std::io::ErrorKind::NotFound => UserError::observe(format!("no such command '{name}'"))
                .hint("check the spelling, or give the full path (it is looked up on PATH)"),
            std::io::ErrorKind::PermissionDenied => UserError::observe(format!("'{name}' cannot be executed: {e}"))
                .hint(format!("make it executable (chmod +x {name}) or run it through its interpreter")),
            _ => UserError::observe(format!("cannot start '{name}': {e}")),
        }
    })?;
    signals::forward_to(child.id());
    Ok(Launched { child, session, run_dir, signalled: Vec::new() })
}

/// Exit code of a finished target, as a shell reports it (128 + signal when killed).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// Why agents in this run could not set up, one sentence each.
pub fn agent_errors(run_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(run_dir) else { return Vec::new() };
    let mut out: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.strip_prefix("agent-error-")?.to_string();
            let text = std::fs::read_to_string(e.path()).ok()?;
            let mut parts = text.trim_end().splitn(3, '\t');
            let (step, errno, path) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
            if step == "seccomp" {
                return Some(format!(
                    "the agent in process {pid} stepped aside: the process runs under a seccomp filter that \
                     forbids system calls it needs ({path}), so its loops are not timed"
                ));
            }
            let err = std::io::Error::from_raw_os_error(errno.parse().ok()?);
            Some(format!("the agent in process {pid} could not {step} its segment {path}: {err}"))
        })
        .collect();
    out.sort();
    out
}

impl Drop for Launched {
    /// A command still running when its observation ends (an error, a panic) is stopped: looptop
    /// never leaves behind a process it started.
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
