//! Helpers: the binary, fixtures, temp folders, ground truth and the report.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The looptop binary under test.
pub fn looptop() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_looptop"));
    c.env_remove("LD_PRELOAD").env_remove("LOOPTOP_AGENT").env("NO_COLOR", "1");
    c
}

/// A fixture's absolute path.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("looptop-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The C epoll fixture, compiled once per test run.
pub fn c_epoll_loop() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("looptop-test-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("epoll_loop");
        let st = Command::new("cc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&out)
            .arg(fixture("c/epoll_loop.c"))
            .status()
            .expect("cc (gcc) is needed for the C fixtures");
        assert!(st.success(), "compiling fixtures/c/epoll_loop.c failed");
        out
    })
    .clone()
}

/// One deliberate blocking episode a fixture reports about itself.
#[derive(Debug, Clone)]
pub struct Truth {
    pub loop_name: String,
    pub kind: String,
    pub ms: f64,
    /// The fixture function that blocked (blocker fixtures).
    pub func: Option<String>,
    /// Its line in the fixture file.
    pub line: Option<u64>,
}

/// Reads a fixture's ground truth (JSON lines).
pub fn read_truth(path: &Path) -> Vec<Truth> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad truth line {l:?}: {e}"));
            Truth {
                loop_name: v["loop"].as_str().unwrap_or("main").to_string(),
                kind: v["kind"].as_str().unwrap_or("busy").to_string(),
                ms: v["ms"].as_f64().expect("ms"),
                func: v["fn"].as_str().map(str::to_string),
                line: v["line"].as_u64(),
            }
        })
        .collect()
}

/// The outcome of `looptop run --json -- CMD` on a fixture.
pub struct Run {
    pub out: Output,
    pub report: Value,
    pub truth: Vec<Truth>,
}

/// Attached in perf mode, looptop traces the wait calls and samples every CPU, which slows every
/// process on this 2-core machine: tests that compare ticks with a fixture's own clock hold this
/// shared ([`timing`]), perf-mode attach tests hold it exclusively ([`machine_wide`]).
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a timing test.
pub fn timing() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test whose looptop traces machine-wide (perf mode).
pub fn machine_wide() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// Runs a command under `looptop run --json` with ground truth collected.
pub fn run_json(extra: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Run {
    let _timing = timing();
    let dir = TempDir::new("run");
    let truth = dir.path("truth.jsonl");
    // Timing tests compare ticks with what fixtures measure themselves on a 2-core machine shared
    // with other tests: perf stays off unless a test asks for it with --rate.
    let perf_off: &[&str] = if extra.contains(&"--rate") { &[] } else { &["--rate", "0"] };
    let out = looptop()
        .arg("run")
        .arg("--json")
        .args(perf_off)
        .args(extra)
        .arg("--")
        .args(cmd)
        .env("FIXTURE_TRUTH", &truth)
        .envs(env.iter().copied())
        .output()
        .expect("run looptop");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json_start = stdout.find("{\n").unwrap_or_else(|| {
        panic!("no report on stdout; stderr:\n{}\nstdout:\n{stdout}", String::from_utf8_lossy(&out.stderr))
    });
    let report: Value = serde_json::from_str(&stdout[json_start..]).expect("report JSON");
    Run { truth: read_truth(&truth), out, report }
}

/// Tolerance for a stall's duration: max(5 ms, 5 %).
pub fn tolerance(ms: f64) -> f64 {
    (ms * 0.05).max(5.0)
}

/// All stalls of loops matching `pred`, as durations in ms by start.
pub fn stalls_of(report: &Value, pred: impl Fn(&Value) -> bool) -> Vec<f64> {
    let mut v: Vec<(f64, f64)> = report["loops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| pred(l))
        .flat_map(|l| l["stalls"].as_array().unwrap().iter())
        .map(|s| (s["start_ms"].as_f64().unwrap(), s["duration_ms"].as_f64().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v.into_iter().map(|s| s.1).collect()
}

/// Asserts the reported stalls are exactly the truth episodes at or over the threshold, in order,
/// each within tolerance.
pub fn assert_stalls_match(reported: &[f64], truth: &[f64], threshold_ms: f64, what: &str) {
    let expected: Vec<f64> = truth.iter().copied().filter(|&t| t >= threshold_ms).collect();
    assert_eq!(
        reported.len(),
        expected.len(),
        "{what}: reported stalls {reported:?}, expected (truth over {threshold_ms} ms) {expected:?}, all truth {truth:?}"
    );
    for (r, t) in reported.iter().zip(&expected) {
        assert!(
            (r - t).abs() <= tolerance(*t),
            "{what}: stall of {r} ms, truth {t} ms (reported {reported:?}, truth {truth:?})"
        );
    }
}

/// The loop object whose tid equals its pid (the main thread).
pub fn main_loop(report: &Value) -> &Value {
    report["loops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["tid"] == l["pid"])
        .max_by_key(|l| l["ticks"].as_u64().unwrap_or(0))
        .unwrap_or_else(|| panic!("no main-thread loop in {report:#}"))
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether perf may be used here; prints `SKIP: <reason>` and returns false when not, unless
/// `LOOPTOP_REQUIRE_PERF=1` (CI, as root), where a skip is a failure.
pub fn perf_permitted(test: &str) -> bool {
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root && paranoid > 1 {
        Some(format!("perf_event_paranoid is {paranoid} and we are not root"))
    } else if !Path::new("/sys/kernel/tracing/events/sched").exists()
        && !Path::new("/sys/kernel/debug/tracing/events/sched").exists()
    {
        Some("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var("LOOPTOP_REQUIRE_PERF").is_ok_and(|v| v == "1") => {
            panic!("{test}: perf is required (LOOPTOP_REQUIRE_PERF=1) but {why}")
        }
        Some(why) => {
            println!("SKIP: {test}: {why}");
            false
        }
    }
}

/// The stalls of the main loop, in order, with their blockers.
pub fn main_stalls(report: &Value) -> Vec<Value> {
    let mut v = main_loop(report)["stalls"].as_array().cloned().unwrap_or_default();
    v.sort_by(|a, b| a["start_ms"].as_f64().unwrap().total_cmp(&b["start_ms"].as_f64().unwrap()));
    v
}

/// Asserts that each truth episode's stall (in order) names the right kind and, where the truth
/// says, the right function in `file`. Extra stalls are allowed only for the runtime's own
/// housekeeping (`gc`, `alloc`: a heap shrinking after a big payload is a real stall too).
pub fn assert_blockers(report: &Value, truth: &[Truth], file: &str, check_location: bool) {
    let stalls = main_stalls(report);
    let dump = || serde_json::to_string_pretty(&stalls).unwrap();
    let housekeeping = |s: &Value| matches!(s["blocker"]["kind"].as_str(), Some("gc" | "alloc"));
    let mut it = stalls.iter();
    for t in truth {
        let s = loop {
            let s =
                it.next().unwrap_or_else(|| panic!("{}: no stall for it; truth {truth:?}; stalls {}", t.kind, dump()));
            if s["blocker"]["kind"] == t.kind.as_str() || !housekeeping(s) {
                break s;
            }
        };
        let b = &s["blocker"];
        assert!(!b.is_null(), "{}: no blocker for the stall {s}", t.kind);
        assert_eq!(b["kind"], t.kind.as_str(), "{}: wrong kind; stalls {}", t.kind, dump());
        if !check_location {
            continue;
        }
        let func = t.func.as_deref().unwrap();
        assert_eq!(b["frame"], func, "{}: wrong frame; stalls {}", t.kind, dump());
        let loc = b["location"].as_str().unwrap_or_default();
        let want = format!("{file}:{}:", t.line.unwrap());
        assert!(loc.contains(&want), "{}: location {loc} should contain {want}", t.kind);
        assert!(b["source"].as_str().is_some_and(|s| s.contains(func)), "{}: source line {b}", t.kind);
    }
    assert!(it.all(housekeeping), "stalls beyond the truth that are not GC or allocator work: {}", dump());
}

/// Runs `cmd` to completion within `limit` (stdin closed, output captured), in a process group of
/// its own that is killed when the limit passes: a hung looptop or target fails the test instead
/// of hanging `cargo test`. Anything the command left behind in its group is killed too.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pgid = child.id() as i32;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if std::time::Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let finished = status.is_some();
    // SAFETY: signals the process group this function created (its leader is our child).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let status = status.unwrap_or_else(|| child.wait().expect("wait"));
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        finished,
        "{cmd:?} did not finish within {limit:?} and was killed;\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    Output { status, stdout, stderr }
}
