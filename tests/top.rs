//! The live view end to end: the real binary in a real terminal (tmux) against a real Node
//! program that gets stuck in a catastrophic regex.

use crate::util::{fixture, Limited, TempDir};

use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16, shell_command: &str) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("looptop-test-{}-{n}", std::process::id());
        let st = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "top"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(shell_command)
            .env_remove("LD_PRELOAD")
            .env_remove("TMUX")
            .env("LANG", "C.UTF-8")
            .status_limited();
        assert!(st.success(), "tmux new-session failed");
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output_within(TMUX_LIMIT);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "top", k]);
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Presses `q` and waits for the shell to write looptop's exit status to `status`.
    fn quit(&self, status: &std::path::Path) -> String {
        self.keys(&["q"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !status.exists() {
            assert!(Instant::now() < deadline, "looptop did not exit after q; the screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(status).unwrap().trim().to_string()
    }

    /// Waits until the screen satisfies `ok`; panics with the last screen after `secs`.
    fn wait_for(&self, secs: u64, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "no {what} within {secs} s; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The pane's processes first (looptop and what it launched; they share its process
        // group): a hung looptop must not outlive the test.
        let panes = Command::new("tmux")
            .args(["-L", &self.socket, "list-panes", "-a", "-F", "#{pane_pid}"])
            .stderr(std::process::Stdio::null())
            .output_within(TMUX_LIMIT);
        for pid in String::from_utf8_lossy(&panes.stdout).lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            kill_tree(pid);
        }
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output_within(TMUX_LIMIT);
    }
}

/// How long one tmux client command may take.
const TMUX_LIMIT: Duration = Duration::from_secs(30);

/// SIGKILL to `pid`, its process group, and every descendant (looptop runs in its own group
/// under the pane's shell).
fn kill_tree(pid: i32) {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for c in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
        kill_tree(c);
    }
    // SAFETY: signalling processes this test started.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Whether a node process runs the script (tmux's own command line names it too).
fn fixture_running(path: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let args: Vec<String> = c.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            args.first().is_some_and(|a| a.ends_with("node")) && args.iter().any(|a| a == path)
        })
    })
}

#[test]
fn live_view_shows_the_stall_while_it_lasts_names_its_blocker_and_quits_cleanly() {
    // A 5 s regex keeps a core busy: not while other tests time their fixtures.
    let _machine = crate::util::machine_wide();
    let dir = TempDir::new("top");
    let status = dir.path("status");
    let script = fixture("node/stuck.js");
    let script = script.to_str().unwrap();
    let command = format!(
        "cd {dir} && env NO_COLOR=1 FIXTURE_STUCK_MS=5000 {bin} top --rate 0 -- node {script}; echo $? > {status}; exec sleep 60",
        dir = dir.0.display(),
        bin = env!("CARGO_BIN_EXE_looptop"),
        status = status.display(),
    );
    let tmux = Tmux::start(120, 40, &command);
    // The banner, live, while the regex runs: how long, what, where.
    let screen = tmux.wait_for(30, "stall banner", |s| s.contains("stuck for") && s.contains("regex in validateEmail"));
    assert!(screen.contains("STALL IN PROGRESS"), "{screen}");
    assert!(screen.contains("stuck.js:"), "the banner names the file: {screen}");
    assert_eq!(tmux.tmux(&["display-message", "-p", "-t", "top", "#{alternate_on}"]).trim(), "1");
    // After it: the stall and its blocker in the lists, the calm line again.
    let screen = tmux.wait_for(30, "the stall listed after it ended", |s| {
        s.contains("no stall in progress") && s.lines().any(|l| l.contains("regex") && l.contains("validateEmail"))
    });
    assert!(screen.contains("Loops (") && screen.contains("Lag per second"), "{screen}");
    // Its stack: Tab to the stalls, Enter.
    tmux.keys(&["Tab", "Enter"]);
    let screen = tmux.wait_for(10, "the stack popup", |s| s.contains("stack, outermost first"));
    assert!(screen.contains("validateEmail"), "{screen}");
    tmux.keys(&["Escape"]);
    // f: a flamegraph of the last seconds, in the current folder.
    tmux.keys(&["f"]);
    let screen = tmux.wait_for(10, "the flamegraph written", |s| s.contains("wrote looptop-flame-"));
    let svg = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("looptop-flame-")));
    let svg = svg.unwrap_or_else(|| panic!("no flamegraph file; the screen:\n{screen}"));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("validateEmail"), "the flamegraph shows the blocker");
    // +: the threshold goes up a step.
    tmux.keys(&["+"]);
    tmux.wait_for(10, "the new threshold", |s| s.contains("stall threshold 100.0 ms"));
    // r, r: a recording that `looptop report` reads.
    tmux.keys(&["r"]);
    tmux.wait_for(10, "the recording started", |s| s.contains("recording to looptop-") && s.contains("REC "));
    std::thread::sleep(Duration::from_millis(700));
    tmux.keys(&["r"]);
    tmux.wait_for(10, "the recording written", |s| s.contains("wrote looptop-") && s.contains(".rec"));
    let rec = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "rec"));
    let rec = rec.expect("a recording file");
    let out = crate::util::looptop().args(["report", "--json"]).arg(&rec).output_limited();
    assert!(out.status.success(), "report of the view's recording: {}", crate::util::stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let main = crate::util::main_loop(&report);
    // It covers its own window, from r to r: not the stall before, nor the time before.
    let wall = report["wall_ms"].as_f64().unwrap();
    assert!(wall > 500.0 && wall < 5000.0, "observed from the first r to the second: {wall} ms");
    assert!(main["stalls"].as_array().is_some_and(|s| s.is_empty()), "the stall before r is not its own: {report}");
    assert!(main["ticks"].as_u64().is_some_and(|t| t > 5 && t < 1000), "the ticks of its window only: {main}");
    assert_eq!(tmux.quit(&status), "0", "q exits 0");
    // The terminal is restored: main screen, no view left on it; the program was asked to exit.
    assert_eq!(tmux.tmux(&["display-message", "-p", "-t", "top", "#{alternate_on}"]).trim(), "0");
    let screen = tmux.screen();
    assert!(!screen.contains("Loops ("), "the view is gone from the screen:\n{screen}");
    // What the view showed stays on the terminal: the summary, as `run` prints it.
    assert!(screen.contains("looptop: node") && screen.contains("at or over"), "the summary after q:\n{screen}");
    assert!(screen.contains("stopped by looptop after"), "q stopped the program it started:\n{screen}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fixture_running(script) {
        assert!(Instant::now() < deadline, "the program looptop started still runs after q");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_off_a_terminal_says_what_to_use_instead() {
    let out = crate::util::looptop().args(["top", "--", "node", "-e", "0"]).output_limited();
    assert_eq!(out.status.code(), Some(2));
    let err = crate::util::stderr(&out);
    assert!(err.contains("needs a terminal") && err.contains("looptop run --json"), "{err}");
}

#[test]
fn run_on_a_terminal_opens_the_view_which_stays_after_exit_then_prints_the_summary() {
    let _machine = crate::util::machine_wide();
    let dir = TempDir::new("run-tui");
    let status = dir.path("status");
    let script = fixture("node/stalls.js");
    let command = format!(
        "cd {dir} && env NO_COLOR=1 FIXTURE_STALLS_MS=120 FIXTURE_EXIT=7 {bin} run --rate 0 -- node {script}; echo $? > {status}; exec sleep 60",
        dir = dir.0.display(),
        bin = env!("CARGO_BIN_EXE_looptop"),
        script = script.display(),
        status = status.display(),
    );
    let tmux = Tmux::start(100, 30, &command);
    let screen = tmux.wait_for(30, "the exit notice", |s| s.contains("exited with status 7"));
    assert!(screen.contains("q quits"), "{screen}");
    assert!(screen.lines().any(|l| l.contains("cpu") && l.contains("truth.js:")), "the stall is listed: {screen}");
    assert!(!status.exists(), "the view stays until q");
    assert_eq!(tmux.quit(&status), "7", "run exits with the program's status");
    let screen = tmux.screen();
    assert!(screen.contains("1 stall at or over 50.0 ms"), "the summary follows the view:\n{screen}");
    assert!(screen.contains("the program's output is in"), "{screen}");
}

/// Ctrl-C in the view does what it does in a terminal (issue 13, point 3): the command gets
/// SIGINT — a Python program's KeyboardInterrupt handler runs and decides how it exits — and the
/// view closes when it has; q (or Ctrl-D) is what stops a command with SIGTERM.
#[test]
fn ctrl_c_in_the_view_interrupts_the_command_as_a_terminal_would() {
    let _machine = crate::util::machine_wide();
    let dir = TempDir::new("run-ctrl-c");
    let (status, marker) = (dir.path("status"), dir.path("handled"));
    let script = dir.path("app.py");
    std::fs::write(
        &script,
        format!(
            "import asyncio, sys\n\
             async def main():\n    while True:\n        await asyncio.sleep(0.05)\n\
             try:\n    asyncio.run(main())\n\
             except KeyboardInterrupt:\n    open({marker:?}, 'w').write('yes')\n    sys.exit(7)\n",
            marker = marker.display().to_string()
        ),
    )
    .unwrap();
    let command = format!(
        "cd {dir} && env NO_COLOR=1 {bin} run --rate 0 -- python3 {script}; echo $? > {status}; exec sleep 60",
        dir = dir.0.display(),
        bin = env!("CARGO_BIN_EXE_looptop"),
        script = script.display(),
        status = status.display(),
    );
    let tmux = Tmux::start(100, 30, &command);
    tmux.wait_for(30, "the loop", |s| s.contains("Loops (1)"));
    tmux.keys(&["C-c"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status.exists() {
        assert!(Instant::now() < deadline, "looptop did not exit after Ctrl-C; the screen:\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(&marker).unwrap_or_default(), "yes", "the handler ran:\n{}", tmux.screen());
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "7", "run exits with the program's own status");
    let screen = tmux.screen();
    assert!(screen.contains("exited 7") && !screen.contains("SIGTERM"), "{screen}");
}

#[test]
fn looptop_pid_is_short_for_top_pid() {
    // Off a terminal both say the same: the view needs one.
    let short = crate::util::looptop().arg(std::process::id().to_string()).output_limited();
    let long = crate::util::looptop().args(["top", "--pid", &std::process::id().to_string()]).output_limited();
    assert_eq!(short.status.code(), Some(2));
    assert_eq!(crate::util::stderr(&short), crate::util::stderr(&long));
    // Not a pid, not a subcommand: clap's usage error.
    let bad = crate::util::looptop().arg("nonsense").output_limited();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_programs_log_is_created_anew_never_through_a_planted_link_or_fifo() {
    let stranger = crate::util::Stranger::new("the_programs_log_is_created_anew_never_through_a_planted_link_or_fifo");
    // Without root the same user plants: what is planted is still never opened.
    let as_planter = match &stranger {
        Some(s) => format!("setpriv --reuid={} --regid={} --clear-groups --", s.uid, s.gid),
        None => String::new(),
    };
    let mine = TempDir::new("log-victim");
    let victim = mine.path("victim");
    std::fs::write(&victim, "keep").unwrap();
    for planted in ["symlink", "fifo"] {
        let shared = crate::util::shared_dir("log");
        let status = mine.path(&format!("status-{planted}"));
        // The shell plants at its own pid, then becomes looptop (exec keeps the pid).
        let plant = match planted {
            "symlink" => format!("{as_planter} ln -s {} \"$TMPDIR/looptop-$$.log\"", victim.display()),
            _ => format!("{as_planter} mkfifo \"$TMPDIR/looptop-$$.log\""),
        };
        let command = format!(
            "cd {dir} && export TMPDIR={shared} NO_COLOR=1 && sh -c '{plant} && exec {bin} top --rate 0 -- sh -c \"echo hello-from-target\"'; echo $? > {status}; exec sleep 60",
            dir = mine.0.display(),
            shared = shared.0.display(),
            bin = env!("CARGO_BIN_EXE_looptop"),
            status = status.display(),
        );
        let tmux = Tmux::start(100, 30, &command);
        tmux.wait_for(30, "the exit notice", |s| s.contains("exited with status 0"));
        assert_eq!(tmux.quit(&status), "0", "{planted}:\n{}", tmux.screen());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "{planted}: written through the planted link");
        // The log is a new file of ours, readable by us alone, holding the program's output.
        use std::os::unix::fs::MetadataExt;
        let logs: Vec<_> = std::fs::read_dir(&shared.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        assert_eq!(logs.len(), 1, "{planted}: one log expected: {logs:?}");
        let meta = std::fs::metadata(&logs[0]).unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, unsafe { libc::geteuid() }), "{planted}: {logs:?}");
        assert_eq!(std::fs::read_to_string(&logs[0]).unwrap(), "hello-from-target\n");
    }
}

#[test]
fn attached_without_an_agent_the_view_shows_a_stall_in_progress_from_the_kernel() {
    if !crate::util::perf_permitted("attached_without_an_agent_the_view_shows_a_stall_in_progress_from_the_kernel") {
        return;
    }
    // The BPF source keeps each loop's current tick in a map the view reads every poll: a stall
    // shows while it lasts, not only when its tick ends. A 6 s regex keeps a core busy.
    let _machine = crate::util::machine_wide();
    let dir = TempDir::new("top-bpf");
    let status = dir.path("status");
    let script = fixture("node/stuck.js");
    // Started with nothing; --perf-basic-prof so that the JS frames have names. At 99 Hz: the
    // debug build classifies a stall in progress from all its samples at every redraw.
    let node = Command::new("node")
        .args(["--perf-basic-prof", script.to_str().unwrap()])
        .env("FIXTURE_START_MS", "4000")
        .env("FIXTURE_STUCK_MS", "6000")
        .stdout(std::process::Stdio::null())
        .spawn_limited();
    let tmux = top_attached(&dir, &status, node.id(), 120);
    // Named from the kernel's stacks: the kind, and V8's code for the regex (a perf map names
    // the compiled RegExp, the innermost frame).
    let screen = tmux.wait_for(30, "stall banner", |s| s.contains("stuck for") && s.contains("regex in"));
    assert!(screen.contains("STALL IN PROGRESS"), "{screen}");
    assert!(!screen.contains("refused BPF"), "{screen}");
    // The banner's time grows while the regex runs.
    let first = stuck_ms(&screen);
    std::thread::sleep(Duration::from_millis(1500));
    let later = tmux.wait_for(10, "the banner again", |s| s.contains("stuck for"));
    assert!(stuck_ms(&later) > first + 500.0, "{first} ms, then {} ms:\n{later}", stuck_ms(&later));
    tmux.wait_for(30, "the stall listed after it ended", |s| {
        s.contains("no stall in progress")
            && s.lines().any(|l| l.contains("regex") && (l.contains("RegExp") || l.contains("validateEmail")))
    });
    assert_eq!(tmux.quit(&status), "0", "q exits 0");
    drop(node);
}

#[test]
fn attached_to_a_node_without_a_perf_map_the_view_says_so_live() {
    if !crate::util::perf_permitted("attached_to_a_node_without_a_perf_map_the_view_says_so_live") {
        return;
    }
    let _machine = crate::util::machine_wide();
    let dir = TempDir::new("top-unnamed");
    let status = dir.path("status");
    // Started with nothing: no perf map; a little work each tick so that stacks come in.
    let node = Command::new("node")
        .args(["-e", "setInterval(() => { let x = 0; for (let i = 0; i < 2e6; i++) x += i; }, 20)"])
        .stdout(std::process::Stdio::null())
        .spawn_limited();
    let tmux = top_attached(&dir, &status, node.id(), 160);
    let screen = tmux.wait_for(30, "the unnamed-JS warning", |s| s.contains("writes no perf map"));
    assert!(screen.contains("LD_PRELOAD=$(looptop agent path)"), "the way out, live:\n{screen}");
    assert_eq!(tmux.quit(&status), "0", "q exits 0");
    drop(node);
}

/// `looptop top --mode perf --rate 99 --pid PID` in a tmux `width` columns wide, from `dir`; the
/// shell writes looptop's exit status to `status`.
fn top_attached(dir: &TempDir, status: &std::path::Path, pid: u32, width: u16) -> Tmux {
    let command = format!(
        "cd {dir} && env NO_COLOR=1 {bin} top --mode perf --rate 99 --pid {pid}; echo $? > {status}; exec sleep 60",
        dir = dir.0.display(),
        bin = env!("CARGO_BIN_EXE_looptop"),
        status = status.display(),
    );
    Tmux::start(width, 40, &command)
}

/// The time in the banner's "stuck for 1.23 s" (or "… 850 ms"), in ms.
fn stuck_ms(screen: &str) -> f64 {
    let rest = screen.split("stuck for ").nth(1).unwrap_or("");
    let mut words = rest.split_whitespace();
    let n: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    match words.next() {
        Some(u) if u.starts_with("ms") => n,
        Some(u) if u.starts_with('s') => n * 1000.0,
        _ => 0.0,
    }
}
