//! Go (issue 18 point 3): the Go runtime has no event loop — goroutines run on a pool of threads
//! and its network poller waits in raw system calls — so looptop says so and times no loop in a
//! Go server, launched (a cgo build, which loads the agent) or attached (a static build), instead
//! of calling its runtime threads loops with false stalls. `go` (Debian's golang-go, which
//! `.ci/run` installs) builds `fixtures/go/server.go`; without it the tests skip, a failure when
//! `LOOPTOP_REQUIRE_GO=1` (CI).

use crate::util::*;
use std::path::PathBuf;
use std::process::Command;

/// `fixtures/go/server.go` built with cgo (dynamically linked: the agent loads) or without
/// (static), once per run; `None` (a skip) without a Go toolchain.
fn go_server(test: &str, cgo: bool) -> Option<PathBuf> {
    let go = Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    if !present_or_skip(test, go, "LOOPTOP_REQUIRE_GO", "go", "apt-get install golang-go") {
        return None;
    }
    // `go build` compiles the standard library on a fresh machine: seconds of both cores, which
    // must not run beside the tests that time ticks.
    let _quiet = machine_wide();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let name = if cgo { "server-cgo" } else { "server-static" };
    let (fresh, out) = (dir.join(format!("{name}.{}", std::process::id())), dir.join(name));
    let st = Command::new("go")
        .args(["build", "-o"])
        .arg(&fresh)
        .arg(fixture("go/server.go"))
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        // Its caches in cargo's scratch folder, not in $HOME; the standard library only: no network.
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .status_limited();
    assert!(st.success(), "{test}: go build of fixtures/go/server.go failed");
    std::fs::rename(&fresh, &out).unwrap();
    Some(out)
}

/// Waits until the server answers (30 s at most), then requests each of the blocking paths.
fn drive(port: u16) {
    assert!(get_when_up(port), "the Go server never answered on port {port}");
    for path in ["/busy", "/sleep", "/busy", "/sleep"] {
        assert!(http_get(port, path).unwrap_or_default().contains(" 200 "), "{path}");
    }
}

/// No loops, and the warning that says what Go is (not that the program never waited).
fn assert_said_go(report: &serde_json::Value, pid: u32) {
    assert_eq!(report["loops"].as_array().map(Vec::len), Some(0), "no invented loops: {report:#}");
    let warnings: Vec<&str> = report["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("process {pid} is a Go program: the Go runtime has no event loop"))),
        "{warnings:#?}"
    );
    assert!(!warnings.iter().any(|w| w.contains("never waited")), "{warnings:#?}");
}

#[test]
fn issue_18_a_go_server_under_run_is_said_to_have_no_event_loop_and_gets_none() {
    let test = "issue_18_a_go_server_under_run_is_said_to_have_no_event_loop_and_gets_none";
    let Some(server) = go_server(test, true) else { return };
    let _timing = timing();
    let dir = TempDir::new("go-run");
    let port = free_port();
    let lt = looptop()
        .args(["run", "--json", "-o"])
        .arg(dir.path("report.json"))
        .arg("--")
        .arg(&server)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    drive(port);
    // SAFETY: signalling the looptop this test started; it passes SIGTERM on to the server.
    unsafe { libc::kill(lt.id() as i32, libc::SIGTERM) };
    let out = lt.wait_with_output();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path("report.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("report: {e}; {}", stderr(&out)));
    assert_report_schema(&report);
    assert_said_go(&report, report["target"]["pid"].as_u64().unwrap() as u32);
    assert!(stderr(&out).contains("is a Go program"), "{}", stderr(&out));
}

#[test]
fn issue_18_attached_to_a_go_server_looptop_says_it_has_no_event_loop_and_check_refuses() {
    let test = "issue_18_attached_to_a_go_server_looptop_says_it_has_no_event_loop_and_check_refuses";
    if !perf_permitted(test) {
        return;
    }
    let Some(server) = go_server(test, false) else { return };
    let _machine = machine_wide();
    let dir = TempDir::new("go-attach");
    let port = free_port();
    let mut app = Command::new(&server).arg(port.to_string()).stdout(std::process::Stdio::null()).spawn_limited();
    let pid = app.id();
    let rec = dir.path("go.rec");
    let lt = looptop()
        .args(["record", "-q", "--pid", &pid.to_string(), "-d", "4s", "-o", rec.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    drive(port);
    let out = lt.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    let report: serde_json::Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    assert_said_go(&report, pid);
    // A CI budget on a Go server cannot be judged: exit 3 with the reason.
    let check =
        looptop().args(["check", "--pid", &pid.to_string(), "-d", "1s", "--budget", "lag.p99<20ms"]).output_limited();
    assert_eq!(check.status.code(), Some(3), "{}", stderr(&check));
    assert!(stderr(&check).contains("a Go program has no event loop"), "{}", stderr(&check));
    // SAFETY: signalling the server this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    app.wait();
}
