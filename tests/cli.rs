//! Small commands: `agent path`, `completions`, `--help`, `--version`, `demo`.

use crate::util::*;

#[test]
fn agent_path_prints_an_installed_library() {
    let out = looptop().args(["agent", "path"]).output_limited();
    assert!(out.status.success());
    let path = String::from_utf8(out.stdout).unwrap();
    let path = std::path::Path::new(path.trim());
    assert!(path.is_file(), "{path:?}");
    assert!(path.file_name().unwrap().to_str().unwrap().starts_with("liblooptop_agent-"));
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
}

#[test]
fn looptop_agent_overrides_the_path() {
    let out = looptop().args(["agent", "path"]).env("LOOPTOP_AGENT", "/nonexistent/agent.so").output_limited();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("LOOPTOP_AGENT"), "{}", stderr(&out));
}

#[test]
fn preloading_the_agent_by_hand_leaves_a_segment_that_is_removed_at_exit() {
    let agent = String::from_utf8(looptop().args(["agent", "path"]).output_limited().stdout).unwrap();
    let out = std::process::Command::new("node")
        .args(["-e", "setTimeout(() => console.log(require('fs').existsSync('/dev/shm/looptop-' + process.pid)), 50)"])
        .env("LD_PRELOAD", agent.trim())
        .output_limited();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "true\n", "{}", stderr(&out));
}

#[test]
fn completions_for_bash() {
    let out = looptop().args(["completions", "bash"]).output_limited();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("looptop") && s.contains("run"), "{s}");
}

#[test]
fn help_names_the_commands() {
    let out = looptop().arg("--help").output_limited();
    let s = String::from_utf8(out.stdout).unwrap();
    for word in ["run", "ps", "demo", "agent", "Exit codes"] {
        assert!(s.contains(word), "{word} missing from --help:\n{s}");
    }
}

#[test]
fn demo_names_its_stalls_off_a_terminal() {
    let out = looptop().args(["demo", "-d", "4s"]).output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("stalls ("), "{s}");
    assert!(s.contains("requests"), "{s}");
}

#[test]
fn demo_without_node_says_so() {
    let out = looptop().args(["demo", "-d", "1s"]).env("PATH", "/nonexistent").output_limited();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no `node` on PATH"), "{}", stderr(&out));
}
