//! Signals and the commands looptop launches (issue 13, point 3): a command starts with the
//! signal mask and dispositions looptop itself was started with, SIGINT sent to it and SIGTERM
//! sent to looptop reach its handlers, `record -d` ends it with SIGTERM, and a signal looptop was
//! started with ignored (nohup) stays ignored by looptop too.

use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The signal state a process is started with, as a shell or `nohup` would hand it.
#[derive(Debug, Clone, Copy)]
struct Start {
    ignored: &'static [libc::c_int],
    blocked: &'static [libc::c_int],
}

const PLAIN: Start = Start { ignored: &[], blocked: &[] };
/// `nohup CMD`.
const NOHUP: Start = Start { ignored: &[libc::SIGHUP], blocked: &[] };
/// A background job of a non-interactive shell (`CMD &`), from a parent that ignores SIGPIPE and
/// blocks SIGUSR1.
const ODD: Start = Start { ignored: &[libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE], blocked: &[libc::SIGUSR1] };

/// Starts `cmd` with `start`'s signal state.
fn starting_with(cmd: &mut Command, start: Start) -> &mut Command {
    // SAFETY: only async-signal-safe calls on constants, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &s in start.ignored {
                libc::signal(s, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in start.blocked {
                libc::sigaddset(&mut set, s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        })
    }
}

/// The `SigBlk` and `SigIgn` lines a fixture printed.
fn signal_state(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout).lines().filter(|l| l.starts_with("Sig")).map(str::to_string).collect()
}

fn fixtures(wait: bool) -> [Vec<String>; 2] {
    let arg = |v: &mut Vec<String>| {
        if wait {
            v.push("wait".into())
        }
    };
    let mut c = vec![c_fixture("signals").to_string_lossy().into_owned()];
    arg(&mut c);
    let mut py = vec!["python3".to_string(), fixture("python/signals.py").to_string_lossy().into_owned()];
    arg(&mut py);
    [c, py]
}

#[test]
fn a_launched_command_starts_with_the_signal_state_looptop_was_started_with() {
    for start in [PLAIN, NOHUP, ODD] {
        for cmd in fixtures(false) {
            let direct = starting_with(Command::new(&cmd[0]).args(&cmd[1..]), start).output_limited();
            assert!(direct.status.success(), "{cmd:?}: {}", stderr(&direct));
            let under =
                starting_with(looptop().args(["run", "-q", "--rate", "0", "-o", "/dev/null", "--"]).args(&cmd), start)
                    .output_limited();
            assert!(under.status.success(), "{cmd:?} under looptop: {}", stderr(&under));
            let (want, got) = (signal_state(&direct.stdout), signal_state(&under.stdout));
            assert_eq!(want.len(), 2, "{cmd:?}: {}", String::from_utf8_lossy(&direct.stdout));
            assert_eq!(got, want, "{cmd:?} started with {start:?}: under looptop run, then directly");
        }
    }
}

#[test]
fn sigint_to_the_command_and_sigterm_to_looptop_reach_its_handlers() {
    for cmd in fixtures(true) {
        let mut run = looptop()
            .args(["run", "-q", "--rate", "0", "-o", "/dev/null", "--"])
            .args(&cmd)
            .stdout(Stdio::piped())
            .spawn_within(Duration::from_secs(60));
        let mut out = BufReader::new(run.child.stdout.take().unwrap());
        let mut line = String::new();
        let mut next = || {
            line.clear();
            out.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        };
        let pid: i32 = loop {
            let l = next();
            if let Some(pid) = l.strip_prefix("pid ") {
                break pid.parse().unwrap();
            }
            assert!(l.starts_with("Sig"), "{cmd:?}: unexpected {l:?}");
        };
        // SAFETY: signalling the fixture this test started (through looptop).
        unsafe { libc::kill(pid, libc::SIGINT) };
        let got = next();
        assert!(!run.timed_out(), "{cmd:?}: SIGINT sent to the command never reached its handler");
        assert_eq!(got, "got INT", "{cmd:?}: SIGINT sent to the command");
        // Within milliseconds of the start: looptop may not have its pid back from `spawn` yet.
        // SAFETY: signalling looptop, which passes SIGTERM on.
        unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
        let got = next();
        assert!(!run.timed_out(), "{cmd:?}: SIGTERM sent to looptop never reached the command's handler");
        assert_eq!(got, "got TERM", "{cmd:?}: SIGTERM sent to looptop");
        let status = run.wait();
        assert_eq!(status.code(), Some(0), "{cmd:?}: looptop run exits with the command's status");
    }
}

#[test]
fn record_for_a_duration_ends_the_command_with_sigterm_not_sigkill() {
    let dir = TempDir::new("sig-rec");
    let rec = dir.path("sleep.rec");
    let out = looptop()
        .args(["record", "--rate", "0", "-d", "1s", "-o"])
        .arg(&rec)
        .args(["--", "python3", "-c", "import time; time.sleep(60)"])
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rep = looptop().args(["report", "--json"]).arg(&rec).output_limited();
    let report: Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    assert_eq!(report["target"]["exit_code"], 128 + 15, "ended by SIGTERM (143), not SIGKILL (137): {report:#}");
    // Asked at 1 s, gone at once: well under the 3 s grace before SIGKILL.
    let wall = report["wall_ms"].as_f64().unwrap();
    assert!(wall < 3500.0, "the command took {wall} ms to end");
}

#[test]
fn under_nohup_looptop_ignores_sighup_too() {
    let agent = String::from_utf8(looptop().args(["agent", "path"]).output_limited().stdout).unwrap();
    let target = Command::new("python3")
        .args(["-c", "import time; print('ready', flush=True); time.sleep(60)"])
        .env("LD_PRELOAD", agent.trim())
        .stdout(Stdio::piped())
        .spawn_limited();
    let mut target = target;
    let mut ready = String::new();
    BufReader::new(target.child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let dir = TempDir::new("nohup");
    let rec = dir.path("nohup.rec");
    let record = starting_with(
        looptop()
            .args(["record", "--mode", "agent", "--rate", "0", "-d", "2s", "-o"])
            .arg(&rec)
            .args(["--pid", &target.id().to_string()]),
        NOHUP,
    )
    .stdout(Stdio::null())
    .spawn_limited();
    let mut record = record;
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the looptop this test started.
    unsafe { libc::kill(record.id() as i32, libc::SIGHUP) };
    assert_eq!(record.wait().code(), Some(0));
    let rep = looptop().args(["report", "--json"]).arg(&rec).output_limited();
    let report: Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let wall = report["wall_ms"].as_f64().unwrap();
    assert!(wall >= 1900.0, "SIGHUP stopped a looptop started under nohup after {wall} ms");
    assert!(alive(target.id()), "the attached process is untouched");
}

/// A signal meant for the program (`kill -USR1` to looptop) reaches it; looptop never dies of
/// one and leaves the command it started running, unobserved.
#[test]
fn other_signals_sent_to_looptop_reach_the_command_and_never_orphan_it() {
    let dir = TempDir::new("sig-usr1");
    let marker = dir.path("sleep-marker");
    std::fs::write(&marker, "").unwrap();
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM] {
        let run = looptop()
            .args(["run", "-q", "--rate", "0", "-o", "/dev/null", "--", "python3", "-c"])
            .arg("import sys, time; time.sleep(30)")
            .arg(&marker)
            .spawn_within(Duration::from_secs(60));
        // Until the command runs under it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !running_with(marker.to_str().unwrap()) {
            assert!(std::time::Instant::now() < deadline, "the command did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling the looptop this test started.
        unsafe { libc::kill(run.id() as i32, sig) };
        let mut run = run;
        let status = run.wait();
        assert!(!run.timed_out(), "signal {sig}: the command did not get it");
        assert_eq!(status.code(), Some(128 + sig), "signal {sig}: looptop reports the command's end: {status:?}");
        assert!(!running_with(marker.to_str().unwrap()), "signal {sig}: the command was left running");
    }
}

/// A command stopped at the end of `-d` is stopped with everything it started: a wrapper (`sh`,
/// `npm start`) must not leave its server running behind it (issue 13, point 16).
#[test]
fn a_stopped_command_takes_what_it_started_with_it() {
    let dir = TempDir::new("sig-tree");
    let marker = dir.path("tree-marker");
    let out = looptop()
        .args(["record", "-q", "--rate", "0", "-d", "1s", "-o"])
        .arg(dir.path("x.rec"))
        .arg("--")
        .arg("sh")
        .arg(fixture("sh/child_wrapper.sh"))
        .args(["python3", "-c", "import time; time.sleep(60)"])
        .arg(&marker)
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Gone at once (SIGTERM reached it), well before the test's own limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running_with(marker.to_str().unwrap()) {
        assert!(std::time::Instant::now() < deadline, "the wrapper's child was left running");
        std::thread::sleep(Duration::from_millis(50));
    }
}
