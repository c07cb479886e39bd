//! Facts about a process from `/proc`: alive or not, command line, thread names, runtime.

use procfs::process::Process;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether `pid` is the same live process that started at `start_time_ticks` (0: don't check).
/// Zombies count as dead: they run no loop any more. One read of `/proc/PID/stat`, parsed in
/// place: looptop asks this several times a second while attached.
pub fn is_alive(pid: u32, start_time_ticks: u64) -> bool {
    match state_and_start(Path::new(&format!("/proc/{pid}"))) {
        Some((b'Z' | b'X', _)) | None => false,
        Some((_, start)) => start_time_ticks == 0 || start == start_time_ticks,
    }
}

/// Every live descendant of `root` now (children first, then theirs), as (pid, start time): one
/// pass over `/proc`, each process's parent read from its `stat`.
pub fn descendants(root: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut by_parent: std::collections::HashMap<u32, Vec<(u32, u64)>> = std::collections::HashMap::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read(e.path().join("stat")) else { continue };
        let Some(close) = stat.iter().rposition(|&b| b == b')') else { continue };
        let mut fields = stat[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
        let parse = |f: Option<&[u8]>| std::str::from_utf8(f?).ok()?.parse::<u64>().ok();
        let (Some(_state), Some(ppid)) = (fields.next(), parse(fields.next())) else { continue };
        let Some(start) = parse(fields.nth(17)) else { continue };
        by_parent.entry(ppid as u32).or_default().push((pid, start));
    }
    let mut out = Vec::new();
    let mut next = vec![root];
    while let Some(p) = next.pop() {
        for &(child, start) in by_parent.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if out.len() < 100_000 && !out.iter().any(|&(q, _)| q == child) {
                out.push((child, start));
                next.push(child);
            }
        }
    }
    out
}

/// The live descendants of `root`, children first, from the `/proc/PID/task/TID/children` files
/// of the family alone (a few reads, where [`descendants`] reads every process's `stat`); the
/// same through [`descendants`] on a kernel without those files (`CONFIG_PROC_CHILDREN`).
pub fn family(root: u32) -> Vec<u32> {
    if !Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        return descendants(root).into_iter().map(|(pid, _)| pid).collect();
    }
    let mut out: Vec<u32> = Vec::new();
    let mut next = vec![root];
    while let Some(p) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if out.len() < 100_000 && !out.contains(&child) {
                    out.push(child);
                    next.push(child);
                }
            }
        }
    }
    out
}

/// The state letter (field 3) and start time in clock ticks (field 22) from `stat` in a
/// process's `/proc` directory, counted after the command name (which may hold spaces and
/// parentheses).
pub fn state_and_start(proc_dir: &Path) -> Option<(u8, u64)> {
    let stat = std::fs::read(proc_dir.join("stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let start = std::str::from_utf8(fields.nth(18)?).ok()?.parse().ok()?;
    Some((state, start))
}

/// Tells when one process has exited, cheaply: a pidfd that polls readable once the process is
/// a zombie or gone (one system call, no `/proc` text for the kernel to format: reading
/// `/proc/PID/stat` of a busy multi-threaded process was a visible share of looptop's own CPU).
/// Kernels without pidfds (before 5.3) fall back on [`is_alive`].
#[derive(Debug)]
pub struct ExitWatch {
    pid: u32,
    /// The process's start time to check without a pidfd (0: none).
    start_time_ticks: u64,
    fd: Option<std::os::fd::OwnedFd>,
    /// Already gone (or the pid another process's) when the watch began.
    gone: bool,
}

impl ExitWatch {
    /// Watches `pid` (the process that has this pid now).
    pub fn new(pid: u32) -> ExitWatch {
        ExitWatch::started_at(pid, 0)
    }

    /// Watches `pid` if it is the process that started at `start_time_ticks` (0: whichever has
    /// it now); else the watch says it exited.
    pub fn started_at(pid: u32, start_time_ticks: u64) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // At most PIDFDS open at once (a tree of many processes must not use up looptop's
        // descriptors): the others read /proc.
        let fd = if PIDFDS_OPEN.fetch_add(1, Ordering::AcqRel) < PIDFDS {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            // SAFETY: a descriptor just returned to us, owned from here on.
            (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
        } else {
            None
        };
        if fd.is_none() {
            PIDFDS_OPEN.fetch_sub(1, Ordering::AcqRel);
        }
        // Checked after the pidfd is open: the pidfd is then of this very process.
        let mut watch = ExitWatch { pid, start_time_ticks, fd, gone: !is_alive(pid, start_time_ticks) };
        if watch.gone {
            watch.release();
        }
        watch
    }

    /// Whether the process has exited (a zombie counts: it runs no loop any more). Once it
    /// has, the pidfd is closed.
    pub fn exited(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        if self.gone {
            return true;
        }
        let Some(fd) = &self.fd else {
            self.gone = !is_alive(self.pid, self.start_time_ticks);
            return self.gone;
        };
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        self.gone = n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        if self.gone {
            self.release();
        }
        self.gone
    }

    fn release(&mut self) {
        if self.fd.take().is_some() {
            PIDFDS_OPEN.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.release();
    }
}

/// Pidfds [`ExitWatch`] keeps open at most, and how many are.
const PIDFDS: usize = 64;
static PIDFDS_OPEN: AtomicUsize = AtomicUsize::new(0);

/// The command line of `pid`, empty when unreadable (printable: its user chose it).
pub fn cmdline(pid: u32) -> Vec<String> {
    let words = Process::new(pid as i32).and_then(|p| p.cmdline()).unwrap_or_default();
    words.into_iter().map(crate::units::printable).collect()
}

/// The current name of a thread (printable: its process chose it).
pub fn thread_name(pid: u32, tid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(crate::units::printable(s.trim_end().to_string()))
}

/// The pid of `pid` in its own namespace (a container's): the last value of `NSpid:` in
/// `/proc/PID/status`.
pub fn nspid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_ascii_whitespace().last()?.parse().ok()
}

/// Whether `pid` is a Java virtual machine (its executable is `java`, or it maps `libjvm.so`).
pub fn is_jvm(pid: u32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if exe.file_name().is_some_and(|n| n == "java") {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("/libjvm.so"))
}

/// The runtime a loop process runs, from its executable and command: `node`, `python`, or
/// `native` for everything else.
pub fn runtime_of(exe: &str, command: &[String]) -> &'static str {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let exe = base(exe);
    let arg0 = command.first().map(|a| base(a)).unwrap_or_default();
    let is = |prefix: &str| exe.starts_with(prefix) || arg0.starts_with(prefix);
    if is("node") {
        "node"
    } else if is("python") {
        "python"
    } else {
        "native"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_is_the_children_and_theirs() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 5 & sleep 5 & wait"]).spawn().unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // The two sleeps, as the slow way over every process's `stat` sees them.
        let sleeps: Vec<u32> = loop {
            let s: Vec<u32> = descendants(child.id()).into_iter().map(|(p, _)| p).collect();
            if s.len() >= 2 || std::time::Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let family = family(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(family.contains(&child.id()), "{family:?}");
        assert!(sleeps.len() == 2 && sleeps.iter().all(|p| family.contains(p)), "{family:?} {sleeps:?}");
    }

    #[test]
    fn runtime_from_names() {
        assert_eq!(runtime_of("/usr/bin/node", &[]), "node");
        assert_eq!(runtime_of("/usr/bin/python3.11", &["python3".into()]), "python");
        assert_eq!(runtime_of("/srv/app/server", &[]), "native");
    }

    #[test]
    fn an_exit_is_seen_through_the_pidfd_zombie_or_reaped() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let mut watch = ExitWatch::new(child.id());
        assert!(watch.fd.is_some(), "pidfd_open works on the kernels we test on");
        assert!(!watch.exited());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !watch.exited() {
            assert!(std::time::Instant::now() < deadline, "the exit was never seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // A zombie until reaped: exited already.
        assert!(!is_alive(child.id(), 0));
        child.wait().unwrap();
        assert!(watch.exited() && watch.fd.is_none(), "closed once seen");
    }

    #[test]
    fn self_is_alive_and_pid_reuse_is_detected() {
        let me = std::process::id();
        assert!(is_alive(me, 0));
        let start = Process::myself().unwrap().stat().unwrap().starttime;
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
    }
}
