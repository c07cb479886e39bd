//! Python frames (issue 17): every installed CPython 3.10–3.13 (pyenv's, `~/.pyenv/versions/`),
//! launched with the agent and attached to without one: each stall of `fixtures/python/frames.py`
//! names the user's function (qualified on 3.11+), its file and the line that was running, and
//! flamegraphs carry the Python frames by name. A version that is not installed is skipped
//! (`SKIP:`), a failure when `LOOPTOP_REQUIRE_PYTHONS=1` (CI).

use crate::util::*;

const VERSIONS: [&str; 4] = ["3.10", "3.11", "3.12", "3.13"];

/// The interpreter of CPython `minor` (`3.12`): the newest pyenv build of it.
fn python(minor: &str) -> Option<String> {
    let root = std::path::PathBuf::from(std::env::var("HOME").ok()?).join(".pyenv/versions");
    let mut found: Vec<_> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.strip_prefix(minor).is_some_and(|r| r.starts_with('.'))))
        .map(|e| e.path().join("bin/python3"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().map(|p| p.to_string_lossy().into_owned())
}

/// The interpreters to test; a missing one is a skip, or a failure where CI requires them all.
fn pythons(test: &str) -> Vec<(&'static str, String)> {
    let required = std::env::var("LOOPTOP_REQUIRE_PYTHONS").is_ok_and(|v| v == "1");
    VERSIONS
        .iter()
        .filter_map(|&v| match python(v) {
            Some(p) => Some((v, p)),
            None if required => panic!("{test}: CPython {v} is not installed under ~/.pyenv/versions"),
            None => {
                println!("SKIP: {test}: CPython {v} is not installed under ~/.pyenv/versions");
                None
            }
        })
        .collect()
}

#[test]
fn issue_17_the_agent_names_the_python_function_and_line_of_every_stall() {
    let file = fixture("python/frames.py");
    for (v, py) in pythons("issue_17_the_agent_names_the_python_function_and_line_of_every_stall") {
        // Watchdog stacks only: the agent's own walk of the frames.
        let run = run_json(&["--rate", "0"], &[&py, file.to_str().unwrap()], &[]);
        assert_eq!(run.truth.len(), 6, "CPython {v}: {}", stderr(&run.out));
        assert_blockers(&run.report, &run.truth, "frames.py", Lines::Running);
    }
}

#[test]
fn issue_17_attached_without_an_agent_stalls_name_the_python_function_and_line() {
    if !perf_permitted("issue_17_attached_without_an_agent_stalls_name_the_python_function_and_line") {
        return;
    }
    let _machine = machine_wide();
    let file = fixture("python/frames.py");
    for (v, py) in pythons("issue_17_attached_without_an_agent_stalls_name_the_python_function_and_line") {
        let mut target = Target::start_loop(&[&py, file.to_str().unwrap()], &[]);
        let (out, report) = target.record(&[]);
        let truth = target.truth();
        assert_eq!(truth.len(), 6, "CPython {v}: {}", stderr(&out));
        // json.loads: its kind needs the json module's Python frames (CPython has no frame
        // pointers, so the kernel's stacks lose the `_json` C frames), read only for the samples
        // looptop reaches while the stall still runs; on a loaded machine those may be too few to
        // outvote the rest. Its function and line must still be named.
        let stalls: Vec<serde_json::Value> = main_stalls(&report)
            .into_iter()
            .map(|mut s| {
                if s["blocker"]["frame"] == "parse_payload" && s["blocker"]["kind"] == "cpu" {
                    s["blocker"]["kind"] = "json-parse".into();
                }
                s
            })
            .collect();
        let report = serde_json::json!({"loops": [{"pid": 1, "tid": 1, "stalls": stalls}]});
        assert_blockers(&report, &truth, "frames.py", Lines::Running);
    }
}

#[test]
fn issue_17_flamegraphs_show_python_frames_where_the_interpreter_ran_them() {
    let Some(py) = python("3.12") else {
        pythons("issue_17_flamegraphs_show_python_frames_where_the_interpreter_ran_them");
        return;
    };
    let _timing = timing();
    let file = fixture("python/frames.py");
    let out = looptop()
        .args(["flame", "--stalls-only", "--rate", "0", "--format", "folded", "-o", "-", "--", &py])
        .arg(&file)
        .output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    let folded = String::from_utf8_lossy(&out.stdout);
    // The deep chain, outermost first, down to the busy loop; the method by its qualified name.
    let chain = folded.lines().find(|l| l.contains("level1 ")).unwrap_or_else(|| panic!("no level1 frame:\n{folded}"));
    let at = |name: &str| chain.find(&format!(";{name} ")).unwrap_or_else(|| panic!("no {name} in {chain}"));
    assert!(at("main") < at("level1") && at("level1") < at("level2") && at("level2") < at("level3"));
    assert!(at("level3") < at("spin"), "{chain}");
    assert!(chain.contains("frames.py:"), "{chain}");
    let regex = folded.lines().find(|l| l.contains(";Validator.check ")).unwrap_or_else(|| panic!("{folded}"));
    // The regex engine's C frames stay inside the method that called it.
    assert!(regex.contains("sre_"), "{regex}");
    assert!(regex.find(";Validator.check ").unwrap() < regex.find("sre_").unwrap(), "{regex}");
}

/// The virtualenv `.ci/run` fills with FastAPI, uvicorn and gunicorn (`target/pyapps`), if there.
fn pyapps(test: &str) -> Option<String> {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyapps/bin/python");
    if py.exists() {
        return Some(py.to_string_lossy().into_owned());
    }
    assert!(
        std::env::var("LOOPTOP_REQUIRE_PYTHONS").map_or(true, |v| v != "1"),
        "{test}: target/pyapps (FastAPI, uvicorn) is missing: .ci/run makes it"
    );
    println!("SKIP: {test}: no target/pyapps (python3 -m venv target/pyapps && target/pyapps/bin/pip install fastapi uvicorn)");
    None
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over loopback; the response's status line.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().next().map(str::to_string)
}

/// Waits until the server answers, then drives each blocking endpoint once (and `/ok` last,
/// which writes the truth still pending).
fn drive(port: u16) {
    assert!(get_when_up(port), "the app never answered on port {port}");
    for path in ["/sleep", "/regex", "/json", "/busy", "/deep", "/ok"] {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let status = get(port, path).unwrap_or_default();
        assert!(status.contains(" 200 "), "{path}: {status}");
    }
}

/// The uvicorn command serving `fixtures/python/asgi_app.py` on `port`.
fn uvicorn(py: &str, port: u16) -> Vec<String> {
    let dir = fixture("python");
    [py, "-m", "uvicorn", "--app-dir", dir.to_str().unwrap(), "--port", &port.to_string(), "--log-level", "warning"]
        .iter()
        .map(|s| s.to_string())
        .chain(["asgi_app:app".to_string()])
        .collect()
}

/// Each truth line has a stall of its kind naming its function at a line that blocks (`skip`:
/// kinds not checked; `or_cpu`: kinds that may read `cpu`, their function and line still checked).
fn assert_named(report: &serde_json::Value, truth: &[Truth], skip: &[&str], or_cpu: &[&str]) {
    let stalls = main_stalls(report);
    for t in truth.iter().filter(|t| !skip.contains(&t.kind.as_str())) {
        let func = t.func.as_deref().unwrap();
        let found = stalls.iter().any(|s| {
            let b = &s["blocker"];
            let loc = b["location"].as_str().unwrap_or_default();
            let line = loc.rsplit(':').next().and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
            (b["kind"] == t.kind.as_str() || (or_cpu.contains(&t.kind.as_str()) && b["kind"] == "cpu"))
                && b["frame"] == func
                && loc.contains("asgi_app.py:")
                && t.at.contains(&line)
                && b["source"].as_str().is_some_and(|s| s.ends_with("# blocks"))
        });
        assert!(found, "{} in {func}: no stall names it at {:?}; stalls {:#?}", t.kind, t.at, stalls);
    }
}

#[test]
fn issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_with_the_agent() {
    let test = "issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_with_the_agent";
    let Some(py) = pyapps(test) else { return };
    let _timing = timing();
    let dir = TempDir::new("fastapi");
    let port = free_port();
    let lt = looptop()
        .args(["run", "--json", "--rate", "0", "-o"])
        .arg(dir.path("report.json"))
        .arg("--")
        .args(uvicorn(&py, port))
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    drive(port);
    // SAFETY: signalling the looptop this test started; it passes SIGTERM on to uvicorn.
    unsafe { libc::kill(lt.id() as i32, libc::SIGTERM) };
    let out = lt.wait_with_output();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path("report.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("report: {e}; {}", stderr(&out)));
    let truth = read_truth(&dir.path("truth.jsonl"));
    assert_eq!(truth.len(), 5, "{}", stderr(&out));
    assert_named(&report, &truth, &[], &[]);
}

#[test]
fn issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_attached() {
    let test = "issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_attached";
    if !perf_permitted(test) {
        return;
    }
    let Some(py) = pyapps(test) else { return };
    let _machine = machine_wide();
    let dir = TempDir::new("fastapi-attach");
    let port = free_port();
    let cmd = uvicorn(&py, port);
    let mut app = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .stdout(std::process::Stdio::null())
        .spawn_limited();
    // Started and serving before looptop comes.
    assert!(get_when_up(port), "the app never answered on port {port}");
    let rec = dir.path("app.rec");
    let lt = looptop()
        .args(["record", "-q", "--pid", &app.id().to_string(), "-o", rec.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drive(port);
    // SAFETY: signalling the app this test started: it shuts down and looptop ends with it.
    unsafe { libc::kill(app.id() as i32, libc::SIGTERM) };
    app.wait();
    let out = lt.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    let report: serde_json::Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let truth = read_truth(&dir.path("truth.jsonl"));
    assert_eq!(truth.len(), 5);
    // json.loads's kind: see the fixture test above.
    assert_named(&report, &truth, &[], &["json-parse"]);
}

/// Whether the server at `port` answers within 30 s.
fn get_when_up(port: u16) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if get(port, "/ok").is_some() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
