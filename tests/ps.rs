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
