//! Facts about a process from `/proc`: alive or not, command line, thread names, runtime.

use procfs::process::Process;

/// Whether `pid` is the same live process that started at `start_time_ticks` (0: don't check).
/// Zombies count as dead: they run no loop any more.
pub fn is_alive(pid: u32, start_time_ticks: u64) -> bool {
    let Ok(p) = Process::new(pid as i32) else { return false };
    let Ok(stat) = p.stat() else { return false };
    if stat.state == 'Z' || stat.state == 'X' {
        return false;
    }
    start_time_ticks == 0 || stat.starttime == start_time_ticks
}

/// The command line of `pid`, empty when unreadable.
pub fn cmdline(pid: u32) -> Vec<String> {
    Process::new(pid as i32).and_then(|p| p.cmdline()).unwrap_or_default()
}

/// The current name of a thread.
pub fn thread_name(pid: u32, tid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(s.trim_end().to_string())
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
    fn runtime_from_names() {
        assert_eq!(runtime_of("/usr/bin/node", &[]), "node");
        assert_eq!(runtime_of("/usr/bin/python3.11", &["python3".into()]), "python");
        assert_eq!(runtime_of("/srv/app/server", &[]), "native");
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
