//! `looptop ps` lists processes that run the agent.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn ps_lists_a_preloaded_node_process() {
    let agent = String::from_utf8(looptop().args(["agent", "path"]).output_limited().stdout).unwrap();
    let mut child = Command::new("node")
        .args([
            "-e",
            "setInterval(() => { const t = Date.now(); while (Date.now() - t < 60) {} }, 100); \
             setTimeout(() => process.exit(0), 8000); console.log('ready')",
        ])
        .env("LD_PRELOAD", agent.trim())
        .stdout(Stdio::piped())
        .spawn_limited();
    let mut line = String::new();
    BufReader::new(child.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let out = looptop().args(["ps", "--json", "--window", "500ms"]).output_limited();
    let pid = child.id();
    drop(child);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in {rows:#}"));
    assert_eq!(row["runtime"], "node");
    assert!(row["loops"].as_u64().unwrap() >= 1);
    assert!(row["stalls"].as_u64().unwrap() >= 1, "{row}");
    let u = row["utilization"].as_f64().unwrap();
    assert!(u > 0.2 && u < 0.95, "busy 60 ms of every 100: {row}");
}

#[test]
fn ps_removes_segments_of_dead_processes() {
    let agent = String::from_utf8(looptop().args(["agent", "path"]).output_limited().stdout).unwrap();
    let dir = TempDir::new("dead");
    // SIGKILL gives the agent no chance to remove its own segment.
    let st = Command::new("sh")
        .args(["-c", "node -e 'setTimeout(()=>{},10); process.kill(process.pid, \"SIGKILL\")'"])
        .env("LD_PRELOAD", agent.trim())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .status_limited();
    assert!(!st.success());
    let left = || {
        std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("looptop-"))
            .count()
    };
    assert!(left() >= 1, "a killed process leaves its segment");
    let out = looptop().args(["ps", "--window", "0ms"]).env("LOOPTOP_SHM_DIR", &dir.0).output_limited();
    assert!(out.status.success());
    assert_eq!(left(), 0, "ps removes segments of dead processes");
}

/// Names anyone can plant in the segment folder cost `ps` a look each, not a listing each, and
/// never add a row: 5000 FIFOs, and five more named after a real process (issue 13, points 8
/// and 9).
#[test]
fn planted_names_neither_slow_ps_nor_repeat_a_row() {
    let dir = TempDir::new("ps-junk");
    let target = Command::new(c_epoll_loop())
        .env("LD_PRELOAD", String::from_utf8(looptop().args(["agent", "path"]).output_limited().stdout).unwrap().trim())
        .env("LOOPTOP_SHM_DIR", &dir.0)
        .env("FIXTURE_START_MS", "20000")
        .spawn_limited();
    let pid = target.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dir.path(&format!("looptop-{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "no segment");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let fifo = |name: String| {
        let c = std::ffi::CString::new(dir.path(&name).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    };
    for n in 0..5000u32 {
        fifo(format!("looptop-{}-junk", 4_000_000 + n));
    }
    for h in ["a", "b", "c", "d", "e"] {
        fifo(format!("looptop-{pid}-{h}"));
    }
    let started = std::time::Instant::now();
    let out = looptop().args(["ps", "--json", "--window", "100ms"]).env("LOOPTOP_SHM_DIR", &dir.0).output_limited();
    let took = started.elapsed();
    drop(target);
    assert!(out.status.success(), "{}", stderr(&out));
    // Quadratic, it took minutes; linear, well under a second (the bound is for a loaded machine).
    assert!(took < std::time::Duration::from_secs(15), "ps took {took:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine = rows.as_array().unwrap().iter().filter(|r| r["pid"] == pid).count();
    assert_eq!(mine, 1, "{rows:#}");
}
