//! Do no harm: the agent never crashes, hangs or changes a target (a full /dev/shm, fork servers,
//! sleeps inside a stall, more loops than slots, seccomp filters), and other users cannot hang or
//! fool root's looptop (FIFOs, links and forged segments in the segment folder, truncated
//! segments). Tests that need root (mount namespaces, a throwaway user) say `SKIP:` without it,
//! and fail under `LOOPTOP_REQUIRE_PERF=1` (CI, where we are root).

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent library looptop embeds, written out by `looptop agent path`.
fn agent() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = looptop().args(["agent", "path"]).output_limited();
        assert!(out.status.success(), "{}", stderr(&out));
        PathBuf::from(stdout(&out).trim())
    })
    .clone()
}

fn segments_in(dir: &Path) -> Vec<String> {
    let mut v = segments_like(dir, "looptop-");
    v.sort();
    v
}

/// The next pids the kernel will hand out (a range to plant names for).
fn next_pids(n: u32) -> std::ops::Range<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap().trim().parse().unwrap();
    last + 1..last + 1 + n
}

/// Start time of `pid` in clock ticks (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().parse().unwrap()
}

/// The bytes of a version-3 segment of `pid` (started at `start`) with one active loop that had
/// a 900 ms stall: what a forger would write.
fn forged_segment(pid: u32, start: u64, version: u32) -> Vec<u8> {
    use looptop_abi::*;
    let mut bytes = vec![0u8; backed_len(1)];
    // SAFETY: an all-zero Header is valid; it is filled and copied out as bytes.
    let mut h: Box<Header> = unsafe { Box::new(std::mem::zeroed()) };
    h.magic = MAGIC;
    h.version = version;
    h.header_size = std::mem::size_of::<Header>() as u32;
    h.segment_size = SEGMENT_SIZE as u64;
    h.pid = pid;
    h.clock_id = 1;
    h.start_time_ticks = start;
    h.stall_floor_ns = 10_000_000;
    h.created_ns = 1;
    h.loop_slots = LOOP_SLOTS as u32;
    h.slot_size = SLOT_SIZE as u32;
    h.event_offset = EVENT_OFFSET as u64;
    h.probe_offset = PROBE_OFFSET as u64;
    h.probe_channels = PROBE_CHANNELS as u32;
    h.probe_ring = PROBE_RING as u32;
    h.record_size = RECORD_SIZE as u32;
    h.sample_offset = SAMPLE_OFFSET as u64;
    h.sample_ring = SAMPLE_RING as u32;
    h.sample_size = SAMPLE_SIZE as u32;
    h.slot_offset = SLOT_OFFSET as u64;
    h.backed_slots = 1.into();
    h.exe[..13].copy_from_slice(b"/bin/python3\0");
    // SAFETY: Header is plain data.
    let hb = unsafe { std::slice::from_raw_parts((&*h as *const Header).cast::<u8>(), std::mem::size_of::<Header>()) };
    bytes[..hb.len()].copy_from_slice(hb);
    let slot = SLOT_OFFSET;
    let put = |bytes: &mut Vec<u8>, off: usize, v: u64| bytes[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    let state = slot + std::mem::offset_of!(LoopSlot, state);
    bytes[state..state + 4].copy_from_slice(&slot_state::ACTIVE.to_ne_bytes());
    let tid = slot + std::mem::offset_of!(LoopSlot, tid);
    bytes[tid..tid + 4].copy_from_slice(&pid.to_ne_bytes());
    let f = |name: &str| -> usize {
        match name {
            "claimed" => std::mem::offset_of!(LoopSlot, claimed_ns),
            "ticks" => std::mem::offset_of!(LoopSlot, ticks),
            "busy" => std::mem::offset_of!(LoopSlot, busy_ns),
            "max" => std::mem::offset_of!(LoopSlot, max_busy_ns),
            "stalls" => std::mem::offset_of!(LoopSlot, stall_count),
            _ => std::mem::offset_of!(LoopSlot, stalls),
        }
    };
    put(&mut bytes, slot + f("claimed"), 2);
    put(&mut bytes, slot + f("ticks"), 1);
    put(&mut bytes, slot + f("busy"), 900_000_000);
    put(&mut bytes, slot + f("max"), 900_000_000);
    put(&mut bytes, slot + f("stalls"), 1);
    let e = slot + f("ring");
    put(&mut bytes, e, 1);
    put(&mut bytes, e + 8, 3);
    put(&mut bytes, e + 16, 900_000_000);
    bytes
}

/// A process of ours that lives for `secs` and never waits (no agent), killed on drop.
fn sleeper(secs: u32) -> Guarded {
    Command::new("sleep").arg(secs.to_string()).spawn_limited()
}

#[test]
fn a_full_shm_folder_leaves_every_preloaded_target_and_looptop_running() {
    if !root_permitted("a_full_shm_folder_leaves_every_preloaded_target_and_looptop_running") {
        return;
    }
    let loop_bin = c_epoll_loop();
    // A 64 KiB tmpfs over /dev/shm in a mount namespace of its own, filled to the last page.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=64k none /dev/shm || exit 99
dd if=/dev/zero of=/dev/shm/fill bs=4k count=64 2>/dev/null
LD_PRELOAD={agent} {c} >/dev/null; echo "c $?"
LD_PRELOAD={agent} python3 -c 'import select; select.epoll().poll(0.02); print("py ran")'; echo "python $?"
LD_PRELOAD={agent} node -e 'setTimeout(() => console.log("node ran"), 20)'; echo "node $?"
{looptop} run -- {c} >/dev/null 2>/tmp/looptop-harm-full-$$; echo "looptop $?"; cat /tmp/looptop-harm-full-$$; rm -f /tmp/looptop-harm-full-$$
ls /dev/shm
"#,
        agent = agent().display(),
        c = loop_bin.display(),
        looptop = env!("CARGO_BIN_EXE_looptop"),
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env_remove("LD_PRELOAD")
        .output_within(Duration::from_secs(120));
    let text = stdout(&out);
    assert_ne!(out.status.code(), Some(99), "cannot mount a tmpfs: {}", stderr(&out));
    for line in ["c 0", "py ran", "python 0", "node ran", "node 0", "looptop 3"] {
        assert!(text.lines().any(|l| l == line), "expected '{line}' in:\n{text}\nstderr:\n{}", stderr(&out));
    }
    assert!(text.contains("could not reserve space for its segment /dev/shm"), "{text}");
    assert!(text.contains("fix: free space in /dev/shm"), "{text}");
    assert_eq!(text.lines().last(), Some("fill"), "nothing else may be left in /dev/shm:\n{text}");
}

#[test]
fn a_folder_that_fills_up_leaves_threads_without_slots_and_the_main_loop_with_its_own() {
    if !root_permitted("a_folder_that_fills_up_leaves_threads_without_slots_and_the_main_loop_with_its_own") {
        return;
    }
    // 6 MiB: the base fits, and loop slots are reserved until only the 4 MiB reserve is left.
    let _machine = machine_wide();
    let bin = c_fixture("many_loops");
    let dir = TempDir::new("slots-fill");
    let truth = dir.path("truth.jsonl");
    let script = format!(
        "mount -t tmpfs -o size=6m none /dev/shm || exit 99\n{looptop} run --json --rate 0 -- {bin}",
        looptop = env!("CARGO_BIN_EXE_looptop"),
        bin = bin.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("FIXTURE_THREADS", "60")
        .env("FIXTURE_TRUTH", &truth)
        .env("NO_COLOR", "1")
        .output_within(Duration::from_secs(120));
    assert_ne!(out.status.code(), Some(99), "cannot mount a tmpfs: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let loops = report["loops"].as_array().unwrap().len();
    assert!((10..61).contains(&loops), "{loops} loops seen; stderr:\n{}", stderr(&out));
    assert!(stderr(&out).contains("found no free loop slot"), "{}", stderr(&out));
    let truth: Vec<f64> = read_truth(&truth).iter().map(|t| t.ms).collect();
    assert_stalls_match(&stalls_of(&report, |l| l["tid"] == l["pid"]), &truth, 50.0, "main loop");
}

#[test]
fn more_loops_than_slots_never_lose_the_main_loop() {
    // 100 polling threads would slow the timing tests running beside it.
    let _machine = machine_wide();
    let bin = c_fixture("many_loops");
    let dir = TempDir::new("slots");
    let truth = dir.path("truth.jsonl");
    let out = looptop()
        .args(["run", "--json", "--rate", "0", "--"])
        .arg(&bin)
        .env("FIXTURE_THREADS", "100")
        .env("FIXTURE_TRUTH", &truth)
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    // 100 threads polling on 2 cores preempt the main thread: its one stall is found, its
    // length only roughly (the timing tests check lengths).
    let truth: Vec<f64> = read_truth(&truth).iter().map(|t| t.ms).collect();
    let main = stalls_of(&report, |l| l["tid"] == l["pid"]);
    assert!(main.len() == 1 && (main[0] - truth[0]).abs() < truth[0] * 0.25, "main {main:?}, truth {truth:?}");
    assert_eq!(report["loops"].as_array().unwrap().len(), looptop_abi::LOOP_SLOTS);
    let e = stderr(&out);
    assert!(e.contains(&format!("{} threads of process", 101 - looptop_abi::LOOP_SLOTS)), "{e}");
    assert!(e.contains("found no free loop slot"), "{e}");
}

/// A check cannot pass when loops went unseen for want of a slot: a stall there would be missed
/// (a loop on another thread than the main one, started after the pollers, has no reserved slot).
#[test]
fn a_check_with_loops_that_found_no_slot_does_not_pass() {
    let _machine = machine_wide();
    let dir = TempDir::new("slots-check");
    let out = looptop()
        .args(["check", "-b", "stalls==0", "--rate", "0", "--"])
        .arg(c_fixture("many_loops"))
        .env("FIXTURE_THREADS", "100")
        .env("FIXTURE_STALL_MS", "0")
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .env("NO_COLOR", "1")
        .output_within(Duration::from_secs(120));
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(e.contains("found no free loop slot") && e.contains("the check cannot pass"), "{e}");
}

#[test]
fn forked_children_that_exit_without_cleanup_leave_no_segments_behind() {
    let _machine = machine_wide();
    let dir = TempDir::new("forks");
    let script = r#"
import os, select, sys
for i in range(300):
    pid = os.fork()
    if pid == 0:
        select.poll().poll(1)
        os._exit(0)
    os.waitpid(pid, 0)
print(len([f for f in os.listdir(os.environ["LOOPTOP_SHM_DIR"]) if f.startswith("looptop-")]))
"#;
    // Preloaded alone (production): every agent sweeps its user's dead processes' segments.
    let out = Command::new("python3")
        .args(["-c", script])
        .env("LD_PRELOAD", agent())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let during: usize = stdout(&out).trim().parse().unwrap();
    assert!(during <= 3, "{during} segments in the folder after 300 children");
    assert!(segments_in(&dir.0).len() <= 1, "{:?}", segments_in(&dir.0));
    // Under looptop run: each child's segment is kept for looptop's last read, then removed.
    let out = looptop()
        .args(["run", "-q", "--rate", "0", "--", "python3", "-c", script])
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(segments_in(&dir.0), Vec::<String>::new(), "looptop run must remove what it kept");
}

#[test]
fn short_sleeps_inside_a_stall_are_never_cut_short_by_the_watchdog() {
    let _t = timing();
    let bin = c_fixture("short_sleeps");
    // Before the fix, each run saw 2–16 EINTRs; three runs of ~150 sleeps each.
    for _ in 0..3 {
        let out =
            looptop().args(["run", "--json", "--rate", "0", "--"]).arg(&bin).output_within(Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("eintr 0 calls "), "the program saw EINTR: {first}");
        let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
        let stalls = main_stalls(&report);
        assert_eq!(stalls.len(), 1, "{report:#}");
        // The stall's stacks are still taken: by signal while it runs, from outside while it sleeps.
        assert!(stalls[0]["blocker"]["samples"].as_u64().unwrap_or(0) >= 10, "{:#}", stalls[0]);
        assert_busy_frame(&stalls[0]);
    }
    // A tick made of sleeps alone (semaphores, a socket with a timeout, raw syscall(2) too):
    // where a signal sent between two of them would land in the next. Before, 1–2 EINTRs a run.
    for _ in 0..3 {
        let out = looptop()
            .args(["run", "-q", "--rate", "0", "-o", "/dev/null", "--"])
            .arg(&bin)
            .env("FIXTURE_SPIN_MS", "0")
            .env("FIXTURE_ALL_SLEEPS", "1")
            .env("FIXTURE_STALL_MS", "600")
            .output_within(Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
        let first = stdout(&out).lines().next().unwrap_or_default().to_string();
        assert!(first.starts_with("eintr 0 calls "), "the program saw EINTR: {first}");
    }
}

#[test]
fn a_seccomp_filter_that_kills_on_a_call_the_agent_uses_never_kills_the_target() {
    let exec = c_fixture("seccomp_exec");
    let bin = c_fixture("short_sleeps");
    for call in [
        "process_vm_readv",
        "tgkill",
        "ftruncate",
        "fallocate",
        "rt_sigaction",
        "rt_sigprocmask",
        "prctl",
        "statfs",
        "kill",
        // Every other call of the agent's that a program may never make itself.
        "clone",
        "unlink",
        "unlinkat",
        "readlink",
        "readlinkat",
        "getdents64",
        "rt_sigreturn",
        "statx",
        "lseek",
        "geteuid",
        "gettid",
        "madvise",
        "sched_getaffinity",
    ] {
        let out = Command::new(&exec)
            .args([call, "--"])
            .arg(&bin)
            .env("LD_PRELOAD", agent())
            .output_within(Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "{call}: the target died ({:?}): {}", out.status, stderr(&out));
        assert!(stdout(&out).starts_with("eintr 0"), "{call}: {}", stdout(&out));
    }
    // A program that never allocates, under a filter that forbids what glibc's malloc asks first
    // (`getrandom`): the agent allocates nothing before its probe, then steps aside.
    let out = Command::new(&exec)
        .args(["getrandom", "--"])
        .arg(c_epoll_loop())
        .env("LD_PRELOAD", agent())
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "getrandom: the target died ({:?}): {}", out.status, stderr(&out));
    // Observed all the same, without signals: the stall, with stacks taken from outside.
    let out = looptop()
        .args(["run", "--json", "--rate", "0", "--"])
        .arg(&exec)
        .args(["tgkill", "--"])
        .arg(&bin)
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(main_stalls(&report).len(), 1, "{report:#}");
    // A call it cannot do without: the agent steps aside, and looptop says why.
    let out = looptop()
        .args(["run", "--no-tui", "--rate", "0", "--"])
        .arg(&exec)
        .args(["unlink", "--"])
        .arg(&bin)
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("stepped aside") && e.contains("seccomp filter") && e.contains("unlink"), "{e}");
    assert!(!e.contains("never waited"), "{e}");
}

/// A program that installs a seccomp filter itself once it runs (after the agent's probe) is not
/// killed by the agent's later calls: the agent freezes as the filter goes in.
#[test]
fn a_filter_the_program_installs_later_freezes_the_agent_instead_of_killing_the_program() {
    let exec = c_fixture("seccomp_exec");
    for call in ["unlink", "unlinkat", "tgkill", "openat", "getdents64", "process_vm_readv", "rt_sigprocmask", "statx"]
    {
        let out = Command::new(&exec)
            .args(["--after", call])
            .env("LD_PRELOAD", agent())
            .output_within(Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "{call}: the program died ({:?}): {}", out.status, stderr(&out));
    }
    // Its ticks up to then, and after, are still timed (the segment needs no system call).
    let out = looptop()
        .args(["run", "--json", "--rate", "0", "--"])
        .arg(&exec)
        .args(["--after", "unlink"])
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(main_stalls(&report).len(), 1, "the 120 ms tick after the filter: {report:#}");
}

#[test]
fn fifos_links_and_junk_named_like_segments_hang_nothing_and_fail_agent_mode_clearly() {
    let dir = shared_dir("junk");
    let victim = sleeper(60);
    let pid = victim.id();
    let seg = dir.path(&format!("looptop-{pid}"));
    let c = std::ffi::CString::new(seg.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let check_fails = |why: &str| {
        let out = looptop()
            .args(["check", "--mode", "agent", "--pid", &pid.to_string(), "-d", "1s", "-b", "stalls==0"])
            .env("LOOPTOP_SHM_DIR", &dir.0)
            .output_within(Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(3), "{why}: {}", stderr(&out));
        assert!(!stdout(&out).contains('✓') && !stderr(&out).contains("held"), "{why}: {}", stderr(&out));
        out
    };
    let out = looptop().args(["ps"]).env("LOOPTOP_SHM_DIR", &dir.0).output_within(Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    check_fails("a FIFO");
    let out = looptop()
        .args(["record", "--mode", "agent", "--pid", &pid.to_string(), "-d", "1s", "-o"])
        .arg(dir.path("x.rec"))
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    std::fs::remove_file(&seg).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &seg).unwrap();
    check_fails("a link");
    std::fs::remove_file(&seg).unwrap();
    // Truncated: a version-3 header and nothing after it.
    let bytes = forged_segment(pid, start_time(pid), looptop_abi::LAYOUT_VERSION);
    std::fs::write(&seg, &bytes[..4096]).unwrap();
    let out = check_fails("a truncated segment");
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    std::fs::write(&seg, forged_segment(pid, start_time(pid), 99)).unwrap();
    let out = check_fails("another version");
    assert!(stderr(&out).contains("layout version 99"), "{}", stderr(&out));
    std::fs::write(&seg, vec![0x5a; 8192]).unwrap();
    let out = check_fails("junk");
    assert!(stderr(&out).contains("not a looptop segment"), "{}", stderr(&out));
    drop(victim);
}

#[test]
fn another_users_forged_segment_is_not_believed_and_a_taken_name_does_not_blind_the_agent() {
    let test = "another_users_forged_segment_is_not_believed_and_a_taken_name_does_not_blind_the_agent";
    let Some(user) = Stranger::new(test) else { return };
    let dir = shared_dir("forged");
    // A root process with no agent; the other user writes a segment "of" it, with its real pid
    // and start time and a stall of 900 ms.
    let victim = sleeper(60);
    let pid = victim.id();
    let seg = dir.path(&format!("looptop-{pid}"));
    std::fs::write(&seg, forged_segment(pid, start_time(pid), looptop_abi::LAYOUT_VERSION)).unwrap();
    user.own(&seg);
    let out = looptop()
        .args(["ps", "--json", "--window", "100ms"])
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(&format!("\"pid\": {pid}")), "the forged segment was believed: {}", stdout(&out));
    assert!(stderr(&out).contains(&format!("belongs to uid {}", user.uid)), "{}", stderr(&out));
    let out = looptop()
        .args(["check", "--mode", "agent", "--pid", &pid.to_string(), "-d", "1s", "-b", "stalls==0"])
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    drop(victim);

    // The other user takes the names of the next pids: root's program is observed all the same.
    for p in next_pids(400) {
        let planted = dir.path(&format!("looptop-{p}"));
        std::fs::write(&planted, b"mine").unwrap();
        user.own(&planted);
    }
    let _t = timing();
    let out = looptop()
        .args(["run", "--json", "--rate", "0", "--"])
        .arg(c_epoll_loop())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert!(!main_stalls(&report).is_empty(), "{report:#}");
}

/// How the target's user damages her own segment while root's looptop reads it.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut short.
    Truncate,
    /// Its header's layout version rewritten.
    Version,
}

/// Starts a preloaded C loop whose first wait lasts 3 s, runs `looptop ARGS --pid PID` on it, and
/// damages the segment 0.8 s in: looptop must neither crash nor pass over it (issue 13, points
/// 10 and 17).
fn damaged_under(args: impl Fn(&TempDir) -> Vec<String>, damage: Damage) -> std::process::Output {
    let dir = TempDir::new("damage");
    let target = Command::new(c_epoll_loop())
        .env("LD_PRELOAD", agent())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .env("FIXTURE_START_MS", "3000")
        .spawn_limited();
    let pid = target.id();
    let seg = dir.path(&format!("looptop-{pid}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seg.exists() {
        assert!(Instant::now() < deadline, "no segment");
        std::thread::sleep(Duration::from_millis(20));
    }
    let looptop = looptop()
        .args(args(&dir))
        .args(["--mode", "agent", "--pid", &pid.to_string()])
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_limited();
    std::thread::sleep(Duration::from_millis(800));
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    match damage {
        Damage::Truncate => file.set_len(100).unwrap(),
        Damage::Version => {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&2u32.to_ne_bytes(), std::mem::offset_of!(looptop_abi::Header, version) as u64).unwrap()
        }
    }
    let out = looptop.wait_with_output();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "looptop died of a signal: {}", stderr(&out));
    drop(target);
    out
}

#[test]
fn a_segment_damaged_while_it_is_read_never_crashes_looptop_nor_passes_a_check() {
    for damage in [Damage::Truncate, Damage::Version] {
        let record = |dir: &TempDir| {
            let rec = dir.path("t.rec").display().to_string();
            ["record", "-d", "3s", "-o", &rec].map(String::from).to_vec()
        };
        let out = damaged_under(record, damage);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{damage:?}: record says the recording is incomplete: {e}");
        assert!(e.contains(if let Damage::Truncate = damage { "truncated" } else { "changed" }), "{damage:?}: {e}");
        assert!(e.contains("wrote "), "{damage:?}: what was read is kept: {e}");
        let check = |_: &TempDir| ["check", "-d", "3s", "-b", "stalls==0"].map(String::from).to_vec();
        let out = damaged_under(check, damage);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{damage:?}: the check does not pass: {e}");
        assert!(e.contains("cut short"), "{damage:?}: {e}");
    }
}

/// Containers that share `/dev/shm` but not pids: an agent in another pid namespace, where the
/// host process's pid names nobody, must not take its segment for a dead process's.
#[test]
fn an_agent_in_another_pid_namespace_leaves_live_segments_alone() {
    if !root_permitted("an_agent_in_another_pid_namespace_leaves_live_segments_alone") {
        return;
    }
    let dir = TempDir::new("pidns");
    let host = Command::new(c_epoll_loop())
        .env("LD_PRELOAD", agent())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .env("FIXTURE_START_MS", "20000")
        .spawn_limited();
    let seg = dir.path(&format!("looptop-{}", host.id()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seg.exists() {
        assert!(Instant::now() < deadline, "no segment");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The "container": a new pid namespace whose agent sweeps the same folder.
    let out = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(c_epoll_loop())
        .env("LD_PRELOAD", agent())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .output_within(Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(seg.exists(), "the host process's live segment was removed from another pid namespace");
    // Root's ps in the host namespace keeps it too, and still shows the process.
    let out = looptop().args(["ps", "--json", "--window", "100ms"]).env("LOOPTOP_SHM_DIR", &dir.0).output_limited();
    assert!(seg.exists() && stdout(&out).contains(&format!("\"pid\": {}", host.id())), "{}", stdout(&out));
    drop(host);
}

#[test]
fn node_perf_maps_are_made_safe_before_v8_opens_them_and_removed_at_exit() {
    let Some(user) = Stranger::new("node_perf_maps_are_made_safe_before_v8_opens_them_and_removed_at_exit") else {
        return;
    };
    // Root-only file the other user points the next pids' perf maps at.
    let secret = TempDir::new("perfmap-secret");
    let target = secret.path("root-only");
    std::fs::write(&target, "root's data\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let planted: Vec<PathBuf> = next_pids(400).map(|p| PathBuf::from(format!("/tmp/perf-{p}.map"))).collect();
    for p in &planted {
        if std::os::unix::fs::symlink(&target, p).is_ok() {
            user.own(p);
        }
    }
    let out = Command::new("node")
        .args(["-e", "setTimeout(() => console.log(process.pid), 50)"])
        .env("LD_PRELOAD", agent())
        .output_within(Duration::from_secs(60));
    for p in &planted {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(p);
        }
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's data\n", "V8 wrote through the planted link");
    // A normal run: the map exists while node runs and is gone after it exits.
    let out = Command::new("node")
        .args([
            "-e",
            "const fs = require('fs'); const m = `/tmp/perf-${process.pid}.map`; \
                 setTimeout(() => console.log(process.pid, fs.statSync(m).mode & 0o777), 50)",
        ])
        .env("LD_PRELOAD", agent())
        .output_within(Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut it = text.split_whitespace();
    let pid: u32 = it.next().unwrap().parse().unwrap();
    assert_eq!(it.next(), Some("384"), "the map must be 0600");
    assert!(!Path::new(&format!("/tmp/perf-{pid}.map")).exists(), "the perf map of {pid} was left behind");
}

#[test]
fn v8s_files_stay_out_of_a_node_programs_way() {
    let dir = TempDir::new("v8files");
    // A daemon that closes every file descriptor it inherited, by number, then opens its data
    // files: V8's perf map and log never take their numbers, so nothing else lands in them.
    let out = Command::new("node")
        .arg(fixture("node/closes_inherited.js"))
        .args([dir.0.to_str().unwrap(), "4"])
        .env("LD_PRELOAD", agent())
        .output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 0..4 {
        let len = std::fs::metadata(dir.path(&format!("data-{i}"))).unwrap().len();
        assert_eq!(len, 10, "data-{i} holds {len} bytes: V8 wrote into the program's file");
    }
    // V8 writes no isolate log into the working folder, and never on stdout when it cannot.
    let out = Command::new("node")
        .args(["-e", "console.log('hello')"])
        .current_dir(&dir.0)
        .env("LD_PRELOAD", agent())
        .output_limited();
    assert_eq!(stdout(&out), "hello\n", "{}", stderr(&out));
    let logs: Vec<_> = segments_like(&dir.0, "isolate-");
    assert!(logs.is_empty(), "isolate logs left in the working folder: {logs:?}");
    if let Some(user) = Stranger::new("v8s_files_stay_out_of_a_node_programs_way") {
        let mut c = user.command("node");
        c.args(["-e", "console.log('hello')"]).current_dir("/").env("LD_PRELOAD", agent());
        let out = c.output_limited();
        assert_eq!(stdout(&out), "hello\n", "V8 logged on the program's stdout: {}", stderr(&out));
    }
    // A node started by node inherits the flags: its map is made safe (0600) and removed too.
    let out = Command::new("node")
        .args([
            "-e",
            "const { execFileSync } = require('child_process'); \
             process.stdout.write(execFileSync(process.execPath, ['-e', \
             'const m = `/tmp/perf-${process.pid}.map`; console.log(process.pid, require(\"fs\").statSync(m).mode & 0o777)']))",
        ])
        .env("LD_PRELOAD", agent())
        .output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut it = text.split_whitespace();
    let child: u32 = it.next().unwrap().parse().unwrap();
    assert_eq!(it.next(), Some("384"), "the child's perf map must be the agent's 0600 file");
    assert!(!Path::new(&format!("/tmp/perf-{child}.map")).exists(), "the child's perf map was left behind");
}

/// Names in `dir` that start with `prefix`.
fn segments_like(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}
