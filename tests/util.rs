//! Helpers: the binary, fixtures, temp folders, ground truth, the report, and time limits for
//! every process a test starts ([`Limited`]).

#![allow(dead_code)]

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long one looptop command (or fixture) may take before its test fails: a guard against a
/// hang on a loaded 2-core machine, not a timing assertion.
pub const LIMIT: Duration = Duration::from_secs(120);

/// Running commands with a time limit. The command gets a process group of its own; at the
/// limit the whole group (looptop and whatever it launched) is killed and the test panics with
/// what the command printed so far, so a hung looptop fails its test instead of hanging
/// `cargo test`.
pub trait Limited {
    /// `output()` within [`LIMIT`] (stdin empty).
    fn output_limited(&mut self) -> Output {
        self.output_within(LIMIT)
    }
    /// `output()` within `limit` (stdin empty).
    fn output_within(&mut self, limit: Duration) -> Output;
    /// `status()` within [`LIMIT`] (stdio inherited).
    fn status_limited(&mut self) -> ExitStatus;
    /// `spawn()` with a watchdog that kills the process group at [`LIMIT`].
    fn spawn_limited(&mut self) -> Guarded {
        self.spawn_within(LIMIT)
    }
    /// `spawn()` with a watchdog that kills the process group at `limit`.
    fn spawn_within(&mut self, limit: Duration) -> Guarded;
}

impl Limited for Command {
    fn output_within(&mut self, limit: Duration) -> Output {
        self.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.spawn_within(limit).wait_with_output()
    }

    fn status_limited(&mut self) -> ExitStatus {
        self.spawn_limited().wait()
    }

    fn spawn_within(&mut self, limit: Duration) -> Guarded {
        use std::os::unix::process::CommandExt;
        let what = format!("{self:?}");
        let child = self.process_group(0).spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let watchdog = Watchdog::start(child.id() as i32, limit);
        Guarded { child, watchdog, what, limit }
    }
}

/// Kills a process group when the time is up, unless disarmed first.
struct Watchdog {
    /// (disarmed, fired)
    state: Arc<(Mutex<(bool, bool)>, Condvar)>,
}

impl Watchdog {
    fn start(pgid: i32, limit: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new((false, false)), Condvar::new()));
        let s = state.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*s;
            let deadline = Instant::now() + limit;
            let mut g = lock.lock().unwrap();
            while !g.0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    g.1 = true;
                    kill_group(pgid);
                    return;
                }
                g = cv.wait_timeout(g, left).unwrap().0;
            }
        });
        Watchdog { state }
    }

    fn fired(&self) -> bool {
        self.state.0.lock().unwrap().1
    }

    fn disarm(&self) {
        self.state.0.lock().unwrap().0 = true;
        self.state.1.notify_all();
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: signalling a process group the test started.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// A child with a time limit; its process group is killed when this is dropped (a test that
/// panicked leaves nothing running).
pub struct Guarded {
    pub child: Child,
    watchdog: Watchdog,
    what: String,
    limit: Duration,
}

impl Guarded {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child; panics if the limit was reached.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("wait");
        self.check(&[], &[]);
        status
    }

    /// Whether the limit has been reached (and the group killed).
    pub fn timed_out(&self) -> bool {
        self.watchdog.fired()
    }

    /// Reads stdout and stderr to their end and waits; panics with what was read if the limit was
    /// reached.
    pub fn wait_with_output(mut self) -> Output {
        let read = |r: Option<Box<dyn Read + Send>>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            let handle = r.map(|mut r| {
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 8192];
                    while let Ok(n) = r.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        b.lock().unwrap().extend_from_slice(&chunk[..n]);
                    }
                })
            });
            (buf, handle)
        };
        let (out, out_h) = read(self.child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
        let (err, err_h) = read(self.child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
        let status = self.child.wait().expect("wait");
        // The pipes end when every process holding them has exited: something looptop launched
        // and left behind keeps them open until the watchdog kills the group.
        for h in [out_h, err_h].into_iter().flatten() {
            while !h.is_finished() && !self.watchdog.fired() {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.watchdog.fired() {
                // Killed: the pipes close within moments, unless a process outside the group
                // holds them.
                let t = Instant::now();
                while !h.is_finished() && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let (stdout, stderr) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
        self.check(&stdout, &stderr);
        Output { status, stdout, stderr }
    }

    fn check(&self, stdout: &[u8], stderr: &[u8]) {
        if self.watchdog.fired() {
            panic!(
                "{} did not finish within {} s (its process group was killed)\n--- stdout so far:\n{}\n--- stderr so \
                 far:\n{}",
                self.what,
                self.limit.as_secs(),
                String::from_utf8_lossy(stdout),
                String::from_utf8_lossy(stderr)
            );
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.watchdog.disarm();
        // The group outlives its leader while any member runs; its id is not reused until then.
        kill_group(self.child.id() as i32);
        let _ = self.child.wait();
    }
}

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

/// Whether something a test drives is `present`; if not, the test skips (prints `SKIP: test:
/// WHAT is missing (HOW)`), or fails when `require` (an environment variable `.ci/run` sets to
/// 1) says it must be there.
pub fn present_or_skip(test: &str, present: bool, require: &str, what: &str, how: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var(require).map_or(true, |v| v != "1"),
        "{test}: {what} is missing ({how}); .ci/run provides it ({require}=1)"
    );
    println!("SKIP: {test}: {what} is missing ({how})");
    false
}

/// The C epoll fixture, compiled once per test run.
pub fn c_epoll_loop() -> PathBuf {
    c_fixture("epoll_loop")
}

/// `fixtures/c/NAME.c`, compiled once per test run (with frame pointers, line tables).
pub fn c_fixture(name: &str) -> PathBuf {
    c_fixture_built(name, &["-O1", "-g", "-fno-omit-frame-pointer"])
}

/// `fixtures/c/NAME.c`, compiled once per test run with `flags`.
pub fn c_fixture_built(name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, bin)) = built.iter().find(|(n, _)| n == name) {
        return bin.clone();
    }
    // In cargo's scratch folder for tests (not a new folder in /tmp per run); built under a name
    // of this run, then renamed over the last run's.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let (fresh, out) = (dir.join(format!("{name}.{}", std::process::id())), dir.join(name));
    let st = Command::new("cc").args(flags).arg("-o").arg(&fresh).arg(fixture(&format!("c/{name}.c"))).status_limited();
    assert!(st.success(), "compiling fixtures/c/{name}.c failed (cc, i.e. gcc, is needed for the C fixtures)");
    std::fs::rename(&fresh, &out).unwrap();
    built.push((name.to_string(), out.clone()));
    out
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
    /// The lines in it that block (where a sample finds it running).
    pub at: Vec<u64>,
    /// The process that measured it (fixtures whose work runs in a worker process).
    pub pid: Option<u32>,
    /// The thread that ran it (fixtures whose work runs on a pool of loops).
    pub tid: Option<u32>,
    /// GC time inside it by the runtime's own account (ms).
    pub gc_ms: Option<f64>,
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
                at: v["at"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default(),
                pid: v["pid"].as_u64().map(|p| p as u32),
                tid: v["tid"].as_u64().map(|t| t as u32),
                gc_ms: v["gc_ms"].as_f64(),
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
    run_json_unlocked(extra, cmd, env)
}

/// [`run_json`] for a fixture that keeps every core busy (a burst of pool work): alone, since it
/// would stretch the short ticks of the timing tests beside it past their thresholds.
pub fn run_json_alone(extra: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Run {
    let _machine = machine_wide();
    run_json_unlocked(extra, cmd, env)
}

fn run_json_unlocked(extra: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Run {
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
        .output_limited();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json_start = stdout.find("{\n").unwrap_or_else(|| {
        panic!("no report on stdout; stderr:\n{}\nstdout:\n{stdout}", String::from_utf8_lossy(&out.stderr))
    });
    let report: Value = serde_json::from_str(&stdout[json_start..]).expect("report JSON");
    assert_report_schema(&report);
    Run { truth: read_truth(&truth), out, report }
}

/// Checks a report against `docs/report.schema.json` (every report a test reads through
/// [`run_json`] is checked: the schema cannot drift from what looptop prints).
pub fn assert_report_schema(report: &Value) {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/report.schema.json"));
        jsonschema::draft7::new(&serde_json::from_str(text).expect("the schema is JSON")).expect("a valid schema")
    });
    let errors: Vec<String> = validator.iter_errors(report).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the report breaks docs/report.schema.json: {errors:#?}\n{report:#}");
}

/// Tolerance for a stall's duration: max(5 ms, 5 %).
pub fn tolerance(ms: f64) -> f64 {
    (ms * 0.05).max(5.0)
}

/// A tick can hold more than the work a fixture measured in it: on a loaded 2-core machine the
/// thread may be preempted between the end of that work and its next wait. Up to this much more
/// is the machine, not looptop (less than the fixtures' 40 ms idle gaps, so a missed wait that
/// merged two ticks still fails).
pub const PREEMPTION_MS: f64 = 25.0;

/// Whether a reported stall's duration `r` is the fixture's measured `t`: never shorter than it
/// (beyond the tolerance), longer by at most the tolerance and a preemption.
pub fn within_truth(r: f64, t: f64) -> bool {
    r >= t - tolerance(t) && r <= t + tolerance(t) + PREEMPTION_MS
}

/// All stalls of loops matching `pred`, as durations in ms by start.
pub fn stalls_of(report: &Value, pred: impl Fn(&Value) -> bool) -> Vec<f64> {
    durations(&stalls_in_order(report, pred))
}

/// All stalls of loops matching `pred`, by start.
pub fn stalls_in_order(report: &Value, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let loops = report["loops"].as_array().unwrap().iter().filter(|l| pred(l));
    by_start(loops.flat_map(|l| l["stalls"].as_array().unwrap().iter().cloned()).collect())
}

/// Stalls sorted by start.
pub fn by_start(mut stalls: Vec<Value>) -> Vec<Value> {
    stalls.sort_by(|a, b| a["start_ms"].as_f64().unwrap().total_cmp(&b["start_ms"].as_f64().unwrap()));
    stalls
}

/// The durations of `stalls` (ms), in their order.
pub fn durations(stalls: &[Value]) -> Vec<f64> {
    stalls.iter().map(|s| s["duration_ms"].as_f64().unwrap()).collect()
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
        assert!(within_truth(*r, *t), "{what}: stall of {r} ms, truth {t} ms (reported {reported:?}, truth {truth:?})");
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
    by_start(main_loop(report)["stalls"].as_array().cloned().unwrap_or_default())
}

/// Asserts that each truth episode's stall (in order) names the right kind and, where the truth
/// says, the right function in `file`. Extra stalls are allowed only for the runtime's own
/// housekeeping (`gc`, `alloc`: a heap shrinking after a big payload is a real stall too).
/// A node fixture's idle time after its last blocker (`FIXTURE_LINGER_MS`) for tests that want
/// the line that ran: looptop reads it from the process's heap while the process lives, and on a
/// loaded machine it may read a stall just before the exit only after it.
pub const LINGER: (&str, &str) = ("FIXTURE_LINGER_MS", "1000");

/// What [`assert_blockers`] checks of a blocker's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Only the kind (no names to check).
    Unchecked,
    /// The function and file, at its start or at a line that blocks (the position says which).
    Either,
    /// The function and file at a line that blocks (`position` `executing`).
    Running,
}

/// Checks each truth line against the next stall of the main loop: its kind, and as `lines`
/// says, its function and line.
pub fn assert_blockers(report: &Value, truth: &[Truth], file: &str, lines: Lines) {
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
        if lines == Lines::Unchecked {
            continue;
        }
        let func = t.func.as_deref().unwrap();
        assert_eq!(b["frame"], func, "{}: wrong frame; stalls {}", t.kind, dump());
        let loc = b["location"].as_str().unwrap_or_default();
        let (path, line) = location_line(loc);
        assert!(path.ends_with(file), "{}: location {loc} should be in {file}", t.kind);
        let source = b["source"].as_str().unwrap_or_default();
        match b["position"].as_str() {
            Some("executing") => {
                assert!(t.at.contains(&line), "{}: line {line} ({loc}) is not one that blocks: {:?}", t.kind, t.at);
                assert!(source.ends_with("// blocks") || source.ends_with("# blocks"), "{}: source line {b}", t.kind);
            }
            Some("function-start") if lines == Lines::Either => {
                assert_eq!(Some(line), t.line, "{}: location {loc} should be where {func} starts", t.kind);
                assert!(source.contains(func), "{}: source line {b}", t.kind);
            }
            _ => panic!("{}: the line that ran should be named: {b}; stalls {}", t.kind, dump()),
        }
    }
    assert!(it.all(housekeeping), "stalls beyond the truth that are not GC or allocator work: {}", dump());
}

/// The file and line of a `file:line` or `file:line:col` location.
fn location_line(loc: &str) -> (&str, u64) {
    let mut parts = loc.rsplitn(3, ':');
    let (a, b) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    match (parts.next(), b.parse::<u64>()) {
        (Some(path), Ok(line)) if a.parse::<u64>().is_ok() => (path, line),
        _ => (loc.rsplit_once(':').map_or(loc, |p| p.0), a.parse().unwrap_or(0)),
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Whether we are root (throwaway users, mount namespaces); prints `SKIP: <test>: <reason>` and
/// returns false when not, unless `LOOPTOP_REQUIRE_PERF=1` (CI, as root), where a skip fails.
pub fn root_permitted(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = "it needs root (a throwaway user, a mount namespace)";
    if std::env::var("LOOPTOP_REQUIRE_PERF").is_ok_and(|v| v == "1") {
        panic!("{test}: required (LOOPTOP_REQUIRE_PERF=1) but {why}");
    }
    println!("SKIP: {test}: {why}");
    false
}

/// Another user, to plant files as in a shared folder: a throwaway account (`useradd`, root
/// only), removed on drop with whatever it still runs.
pub struct Stranger {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

impl Stranger {
    /// A new throwaway user, or `None` (after `SKIP: <test>: …`, a failure under
    /// `LOOPTOP_REQUIRE_PERF=1`) when that is not possible here.
    pub fn new(test: &str) -> Option<Stranger> {
        if !root_permitted(test) {
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ltt{}x{n}", std::process::id());
        // useradd takes a lock on /etc/passwd: another test or engineer may hold it a moment.
        let mut last = String::new();
        for _ in 0..40 {
            let out = Command::new("useradd")
                .args(["--no-create-home", "--no-user-group", "--shell", "/usr/sbin/nologin", &name])
                .output_within(Duration::from_secs(30));
            if out.status.success() {
                let id = |flag: &str| -> u32 {
                    let out = Command::new("id").args([flag, &name]).output_limited();
                    String::from_utf8_lossy(&out.stdout).trim().parse().expect("id of the throwaway user")
                };
                let (uid, gid) = (id("-u"), id("-g"));
                return Some(Stranger { uid, gid, name });
            }
            last = stderr(&out);
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{test}: useradd {name} failed: {last}");
    }

    /// `program` run as this user, with no supplementary groups.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program)
            .env("HOME", "/nonexistent");
        c
    }

    /// Runs `sh -c script` as this user; whether it succeeded.
    pub fn sh(&self, script: &str) -> bool {
        self.command("sh").args(["-c", script]).output_limited().status.success()
    }

    /// Makes `path` this user's, as if they had made it (a link itself, not what it names).
    pub fn own(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).unwrap();
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.name]).output_within(Duration::from_secs(30));
        for _ in 0..40 {
            if Command::new("userdel").arg(&self.name).output_within(Duration::from_secs(30)).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("userdel {} failed: remove it by hand", self.name);
    }
}

/// A temporary folder that anyone may write to, like `/tmp` (mode 1777).
pub fn shared_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Whether a live process has `marker` among its arguments.
pub fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
        pid.is_some_and(alive)
            && std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == marker.as_bytes()))
    })
}

/// The C fixtures' busy loop, as a blocker names it: `busy_spin`, or the clock read it spins on
/// (`now_ms`) when most samples land there — both the fixture's own code on the busy path (which
/// one depends on where a frame-pointer walk catches it, leaf or caller).
pub fn assert_busy_frame(stall: &Value) {
    let frame = stall["blocker"]["frame"].as_str().unwrap_or_default();
    assert!(["busy_spin", "now_ms"].contains(&frame), "not the busy loop: {stall:#}");
}

/// Everything a recording holds that names or quotes something (each frame, its source line, the
/// warnings), as text: a binary recording searched for what must not be in it.
pub fn recording_text(rec: &Path) -> String {
    let replay = looptop::source::recording::load(rec, &Default::default()).expect("a recording");
    let stacks = replay.session.stacks();
    let mut out = format!("{:?}\n{:?}\n", replay.header, replay.recorded_warnings);
    for (id, frame) in stacks.frames().iter().enumerate() {
        out += &format!("{frame:?} {:?}\n", stacks.source(id as u32));
    }
    out
}

/// A target started by the test, with its ground truth.
pub struct Target {
    pub child: Guarded,
    pub dir: TempDir,
}

impl Target {
    pub fn start(cmd: &[&str], env: &[(&str, &str)]) -> Target {
        let dir = TempDir::new("attach");
        let child = Command::new(cmd[0])
            .args(&cmd[1..])
            .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
            .env("FIXTURE_START_MS", "2000")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn_limited();
        Target { child, dir }
    }

    /// Starts a target and waits until its main thread waits in its event loop: the attach
    /// comes after start-up (a start-up caught mid-way is a first tick, a stall of its own).
    pub fn start_loop(cmd: &[&str], env: &[(&str, &str)]) -> Target {
        let target = Target::start(cmd, env);
        let syscall = format!("/proc/{}/syscall", target.child.id());
        let waits = ["232 ", "281 ", "441 ", "7 ", "271 "];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let now = std::fs::read_to_string(&syscall).unwrap_or_default();
            if waits.iter().any(|w| now.starts_with(w)) {
                return target;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{cmd:?} never waited in its event loop within 10 s");
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `looptop record --pid` until the target exits, then the report of the recording.
    pub fn record(&mut self, extra: &[&str]) -> (Output, Value) {
        self.record_env(extra, &[])
    }

    /// [`Target::record`] with looptop's environment extended by `env`.
    pub fn record_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
        let rec = self.dir.path("attach.rec");
        let out = looptop()
            .args(["record", "--pid", &self.pid(), "-o", rec.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .output_limited();
        assert!(out.status.success(), "record failed: {}", stderr(&out));
        let status = self.child.wait();
        assert!(status.success(), "the target must run to the end unharmed: {status}");
        let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
        assert!(rep.status.success(), "{}", stderr(&rep));
        (out, serde_json::from_slice(&rep.stdout).expect("report JSON"))
    }

    pub fn truth(&self) -> Vec<Truth> {
        read_truth(&self.dir.path("truth.jsonl"))
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over loopback, HTTP/1.1; the response's status line.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().next().map(str::to_string)
}

/// Whether the HTTP server at `port` answers `/ok` within 30 s.
pub fn get_when_up(port: u16) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if http_get(port, "/ok").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Runs `cmd` (a server on `port`) under `looptop run`, drives it (`drive`), stops it with SIGTERM to
/// looptop (passed on to the server); the report and the app's truth.
pub fn served_with_agent(cmd: &[String], port: u16, tag: &str, drive: fn(u16)) -> (Value, Vec<Truth>) {
    // Alone: the requests keep a core busy for seconds, which stretched the short ticks of the
    // timing tests beside them past their thresholds (a Node fixture's exit ticks, in CI).
    let _machine = machine_wide();
    let dir = TempDir::new(tag);
    let lt = looptop()
        .args(["run", "--json", "--rate", "0", "-o"])
        .arg(dir.path("report.json"))
        .arg("--")
        .args(cmd)
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    assert!(get_when_up(port), "the app never answered on port {port}");
    drive(port);
    // SAFETY: signalling the looptop this test started; it passes SIGTERM on to the server.
    unsafe { libc::kill(lt.id() as i32, libc::SIGTERM) };
    let out = lt.wait_with_output();
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path("report.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("report: {e}; {}", stderr(&out)));
    assert_report_schema(&report);
    (report, read_truth(&dir.path("truth.jsonl")))
}

/// Starts `cmd` (a server on `port`) plainly, attaches `looptop record --pid` to the process
/// `serving` picks once it answers (with `env`), drives it (`drive`), stops looptop (Ctrl-C) and then the
/// server; the report and the app's truth.
pub fn served_attached(
    cmd: &[String],
    port: u16,
    tag: &str,
    serving: impl Fn(u32) -> u32,
    env: &[(&str, &str)],
    drive: fn(u16),
) -> (Value, Vec<Truth>) {
    let (report, truth, _) = served_attached_stacks(cmd, port, tag, serving, env, drive);
    (report, truth)
}

/// [`served_attached`], with the folded stacks of the stalls (`flame --stalls-only`) too.
pub fn served_attached_stacks(
    cmd: &[String],
    port: u16,
    tag: &str,
    serving: impl Fn(u32) -> u32,
    env: &[(&str, &str)],
    drive: fn(u16),
) -> (Value, Vec<Truth>, String) {
    let _machine = machine_wide();
    let dir = TempDir::new(tag);
    let mut app = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .stdout(std::process::Stdio::null())
        .spawn_limited();
    // Started and serving before looptop comes.
    assert!(get_when_up(port), "the app never answered on port {port}");
    let rec = dir.path("app.rec");
    let lt = looptop()
        .args(["record", "-q", "--pid", &serving(app.id()).to_string(), "-o", rec.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drive(port);
    // Stopped before the server, whose shutdown is not what the test is about.
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling the looptop this test started, then the server.
    unsafe { libc::kill(lt.id() as i32, libc::SIGINT) };
    let out = lt.wait_with_output();
    unsafe { libc::kill(app.id() as i32, libc::SIGTERM) };
    app.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    let report: Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let flame = looptop()
        .args(["flame", "--stalls-only", "--format", "folded", "-o", "-", "--from"])
        .arg(&rec)
        .output_limited();
    assert!(flame.status.success(), "{}", stderr(&flame));
    (report, read_truth(&dir.path("truth.jsonl")), String::from_utf8_lossy(&flame.stdout).into_owned())
}

/// Of the samples of folded stacks `folded`: how many have every one of `parts` in their stack,
/// and how many there are.
pub fn samples_with(folded: &str, parts: &[&str]) -> (u64, u64) {
    let (mut with, mut all) = (0u64, 0u64);
    for line in folded.lines() {
        let Some((stack, n)) = line.rsplit_once(' ') else { continue };
        let n: u64 = n.parse().unwrap_or(0);
        all += n;
        if parts.iter().all(|p| stack.contains(p)) {
            with += n;
        }
    }
    (with, all)
}
