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

/// `--json` is one option everywhere (issue 15, point 12): bare, the JSON goes to stdout in place
/// of the text; `--json=FILE` writes it beside the text; `-` names stdout for every output file
/// and stdin for a recording.
#[test]
fn json_and_dash_mean_the_same_on_every_command() {
    let dir = TempDir::new("json-dash");
    let c = c_epoll_loop();
    let run = |extra: &[&str]| looptop().arg("run").args(extra).args(["--rate", "0", "--"]).arg(&c).output_limited();
    // run --json: the JSON on stdout, no text summary.
    let out = run(&["-q", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run --json prints JSON on stdout");
    assert_eq!(v["schema"], "looptop.report/1");
    assert!(!stderr(&out).contains(" — exited "), "{}", stderr(&out));
    // run --json=FILE: the JSON in the file and the text summary as without it.
    let file = dir.path("run.json");
    let out = run(&[&format!("--json={}", file.display())]);
    assert!(stderr(&out).contains(" — exited 0"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["schema"], "looptop.report/1");
    // check --json: the report with its verdict on stdout, the budget lines on stderr.
    let out = looptop().args(["check", "-b", "stalls==0", "--json", "--rate", "0", "--"]).arg(&c).output_limited();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON on stdout");
    assert!(v["budgets"].is_array() && v["passed"].is_boolean(), "{v}");
    assert!(stderr(&out).contains("stalls==0"), "{}", stderr(&out));
    // The old form gets the fix; --github keeps stdout for its annotations.
    let out = looptop().args(["check", "-b", "stalls==0", "--json", "out.json", "--", "true"]).output_limited();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--json=out.json"), "{}", stderr(&out));
    let out = looptop().args(["check", "-b", "stalls==0", "--json", "--github", "--", "true"]).output_limited();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--json=report.json"), "{}", stderr(&out));
    // A recording read from stdin, reported to a file and to stdout; a flamegraph to stdout.
    let rec = dir.path("r.rec");
    let out = looptop().args(["record", "-q", "--rate", "0", "-o"]).arg(&rec).arg("--").arg(&c).output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    // (through a shell: `output_limited` gives the child an empty stdin)
    let from_stdin = |args: &str| {
        let bin = looptop().get_program().to_string_lossy().into_owned();
        std::process::Command::new("sh")
            .args(["-c", &format!("exec '{bin}' report {args} - < '{}'", rec.display())])
            .output_limited()
    };
    let rep = dir.path("rep.json");
    let out = from_stdin(&format!("--json='{}'", rep.display()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" — exited 0"), "the text stays on stdout");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(v["schema"], "looptop.report/1");
    let out = from_stdin("--json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report --json - prints JSON");
    assert_eq!(v["schema"], "looptop.report/1");
    let out = looptop().args(["flame", "--from"]).arg(&rec).args(["-o", "-"]).output_limited();
    assert!(out.status.success() && out.stdout.starts_with(b"<?xml"), "{}", stderr(&out));
    let out =
        looptop().args(["check", "-b", "stalls==0", "--junit", "-", "--rate", "0", "--"]).arg(&c).output_limited();
    assert!(String::from_utf8_lossy(&out.stdout).contains("<testsuites"), "{}", stderr(&out));
    // A recording on stdout would mix with a launched command's own output: refused.
    let out = looptop().args(["record", "-o", "-", "--", "true"]).output_limited();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Options that mean nothing somewhere are not offered there.
    for args in [&["ps", "-q"][..], &["top", "-q", "--", "true"], &["run", "--mode", "perf", "--", "true"]] {
        let out = looptop().args(args).output_limited();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
