//! `looptop check`: budgets that hold and break on real programs, every metric and operator,
//! malformed budgets (exit 2, nothing runs), JUnit, JSON, GitHub annotations, the warm-up.

use crate::util::*;
use serde_json::Value;
use std::process::Output;

/// `looptop check ARGS -- node FIXTURE` with `env`, in UTF-8.
fn check(args: &[&str], fixture_rel: &str, env: &[(&str, &str)]) -> Output {
    let _timing = timing();
    let mut c = looptop();
    c.arg("check").args(args).args(["--rate", "0", "--", "node"]).arg(fixture(fixture_rel)).env("LANG", "C.UTF-8");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output_limited()
}

#[test]
fn a_broken_budget_fails_the_build_and_names_the_code() {
    let dir = TempDir::new("check");
    let (json, junit, summary) = (dir.path("r.json"), dir.path("r.xml"), dir.path("summary.md"));
    let out = check(
        &[
            "--budget",
            "stalls==0",
            "--budget",
            "stall.max<5s",
            "--budget",
            "tick.max<=100ms",
            "--budget",
            "lag.p99 < 10s",
            &format!("--json={}", json.display()),
            "--junit",
            junit.to_str().unwrap(),
            "--github",
        ],
        "node/stalls.js",
        &[
            ("FIXTURE_STALLS_MS", "150"),
            LINGER,
            ("GITHUB_WORKSPACE", fixture("").to_str().unwrap()),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a failed budget exits 1: {err}");
    assert!(err.contains("✗ stalls==0") && err.contains("✓ stall.max<5s"), "{err}");
    assert!(err.contains("✗ tick.max<=100ms") && err.contains("✓ lag.p99 < 10s"), "{err}");
    assert!(err.contains("2 of 4 budgets failed"), "{err}");
    // Under the failed budget: the stall, its kind, function, file:line and source line.
    let evidence = err.lines().find(|l| l.contains("↳")).unwrap_or_else(|| panic!("no evidence line: {err}"));
    assert!(evidence.contains("cpu in busy") && evidence.contains("truth.js:"), "{err}");
    assert!(err.contains("for (let i = 0; i < 10000; i++) x = (x + i) | 0;"), "the line that ran: {err}");
    // JSON: the report plus the budgets.
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "looptop.report/1");
    let budgets = v["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 4);
    assert_eq!(budgets[0]["expr"], "stalls==0");
    assert_eq!(budgets[0]["held"], false);
    assert_eq!(budgets[0]["observed"], 1.0);
    assert_eq!(budgets[1]["held"], true);
    // JUnit: one test case per budget, the failures with their message and the stall.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit XML parses");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 4, "{xml}");
    let failures: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("failure")).collect();
    assert_eq!(failures.len(), 2, "{xml}");
    assert!(failures[0].attribute("message").is_some_and(|m| m.contains("stalls==0: observed 1")), "{xml}");
    assert!(failures[0].text().is_some_and(|t| t.contains("cpu in busy") && t.contains("truth.js:")), "{xml}");
    // GitHub: an annotation at the stall's line, relative to the workspace; a job summary.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ann: Vec<&str> = stdout.lines().filter(|l| l.starts_with("::error ")).collect();
    assert_eq!(ann.len(), 2, "{stdout}");
    // At the line of busy's inner loop: the one that was running.
    let source = std::fs::read_to_string(fixture("node/truth.js")).unwrap();
    let line = source.lines().position(|l| l.trim_start().starts_with("for (let i = 0; i < 10000; i++)")).unwrap() + 1;
    assert!(ann[0].starts_with(&format!("::error file=node/truth.js,line={line},")), "{}", ann[0]);
    assert!(ann[0].contains("title=looptop budget stalls==0 failed::stalls==0: observed 1"), "{}", ann[0]);
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("2 of 4 budgets failed") && md.contains("| ❌ | `stalls==0` | 1 |"), "{md}");
}

#[test]
fn a_failing_command_fails_the_check_unless_its_exit_code_is_ignored() {
    let dir = TempDir::new("check-exit");
    let (json, junit) = (dir.path("r.json"), dir.path("r.xml"));
    let budgets = ["-b", "stalls<=1", "-b", "utilization<100%", "-b", "stall.max>=100ms"];
    let env = [("FIXTURE_STALLS_MS", "150"), ("FIXTURE_EXIT", "3"), ("GITHUB_WORKSPACE", "/nowhere")];
    let json_arg = format!("--json={}", json.display());
    let outputs = [json_arg.as_str(), "--junit", junit.to_str().unwrap(), "--github"];
    let out = check(&[&budgets[..], &outputs[..]].concat(), "node/stalls.js", &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a failed command fails the check: {err}");
    assert!(err.contains("✓ stall.max>=100ms"), "the budgets are still shown: {err}");
    assert!(err.contains("the command failed (exit status 3)") && err.contains("--ignore-exit-code"), "{err}");
    assert!(err.contains("check failed: the command failed (all 3 budgets held)"), "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["passed"], false, "{v}");
    assert_eq!(v["unmet"][0]["case"], "command", "{v}");
    assert_eq!(v["target"]["exit_code"], 3);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"testcase name="command""#) && xml.contains("exit status 3"), "{xml}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("::error title=looptop check%3A the command failed::"), "{stdout}");

    let out = check(&[&budgets[..], &["--ignore-exit-code"]].concat(), "node/stalls.js", &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "--ignore-exit-code judges the budgets alone: {err}");
    assert!(err.contains("all 3 budgets held") && !err.contains("check failed"), "{err}");
    assert!(err.contains("the command itself exited with status 3 (--ignore-exit-code)"), "{err}");
}

#[test]
fn a_run_with_no_event_loop_fails_as_not_observed() {
    let _timing = timing();
    let out = looptop().args(["check", "--rate", "0", "-b", "stalls==0", "--", "sleep", "0.2"]).output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "nothing observed is not a pass: {err}");
    assert!(err.contains("✓ stalls==0") && err.contains("no event loop was observed"), "{err}");
    assert!(err.contains("check failed: no event loop was observed"), "{err}");
}

#[test]
fn a_command_looptop_stops_at_the_end_of_its_duration_has_not_failed() {
    let _timing = timing();
    let out = looptop()
        .args(["check", "--rate", "0", "-d", "1s", "-b", "stalls==0", "--", "node", "-e", "setInterval(() => {}, 50)"])
        .output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stopped by looptop, not failed: {err}");
    assert!(err.contains("all 1 budget held") && !err.contains("check failed"), "{err}");
    assert!(err.contains("stopped by looptop after") && err.contains("(it was sent SIGTERM; exited 143)"), "{err}");
}

#[test]
fn every_metric_is_observed_on_node() {
    let metrics = [
        "lag.p50",
        "lag.p90",
        "lag.p99",
        "lag.p999",
        "lag.max",
        "tick.p50",
        "tick.p90",
        "tick.p99",
        "tick.max",
        "stall.max",
        "gc.max",
        "pool.wait.p50",
        "pool.wait.p99",
        "pool.wait.max",
        "alloc.max",
    ];
    let mut args: Vec<String> = Vec::new();
    for m in metrics {
        args.extend(["-b".into(), format!("{m}>=0ms")]);
    }
    for m in ["stalls", "gc.count", "pool.queued.max", "pool.busy.max", "alloc.count"] {
        args.extend(["-b".into(), format!("{m}>=0")]);
    }
    for m in ["stall.total", "gc.total", "alloc.total"] {
        args.extend(["-b".into(), format!("{m}<100%"), "-b".into(), format!("{m}>=0us")]);
    }
    args.extend([
        "-b".into(),
        "utilization>0".into(),
        "-b".into(),
        "utilization<=1".into(),
        "-b".into(),
        "stalls==1".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = check(&args, "node/stalls.js", &[("FIXTURE_STALLS_MS", "150")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("not observed"), "{err}");
    assert!(err.contains(&format!("all {} budgets held", args.len() / 2)), "{err}");
}

#[test]
fn a_budget_on_what_the_source_cannot_see_fails_as_not_observed() {
    let _timing = timing();
    let out = looptop()
        .args(["check", "--rate", "0", "-b", "gc.max<50ms", "-b", "stalls>=1", "--"])
        .arg(c_epoll_loop())
        .env("LANG", "C")
        .output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("FAIL gc.max<50ms") && err.contains("not observed"), "{err}");
    assert!(err.contains("ok stalls>=1"), "{err}");
}

#[test]
fn the_warmup_leaves_the_start_up_stall_out() {
    let without = check(&["-b", "stalls==0"], "node/warmup.js", &[]);
    assert_eq!(without.status.code(), Some(1), "the start-up stall counts: {}", stderr(&without));
    let with = check(&["--warmup", "1s", "-b", "stalls==0", "-b", "tick.max<100ms"], "node/warmup.js", &[]);
    let err = stderr(&with);
    assert_eq!(with.status.code(), Some(0), "{err}");
    assert!(err.contains("the first 1.00 s left out"), "{err}");
}

#[test]
fn malformed_budgets_exit_2_pointing_at_the_character_and_nothing_runs() {
    let dir = TempDir::new("check-bad");
    let marker = dir.path("ran");
    let cmd = format!("touch {}", marker.display());
    let cases: [(&str, &str, &str); 6] = [
        ("lag.p98<20ms", "unknown metric 'lag.p98'", "    ^"),
        ("lag.p99<20xs", "unknown unit 'xs'", "              ^"),
        ("lag.p99<<20ms", "expected a number after '<'", "            ^"),
        ("", "the budget is empty", "    ^"),
        ("stalls==0 and more", "unexpected 'and more'", "              ^"),
        ("lag.p99<20", "lag.p99 is a time", "              ^"),
    ];
    for (expr, what, caret) in cases {
        let out = looptop().args(["check", "-b", expr, "--", "sh", "-c", &cmd]).output_limited();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{expr}: {err}");
        assert!(err.contains(what), "{expr}: {err}");
        assert!(err.lines().any(|l| l == caret), "{expr}: the caret under the offending character:\n{err}");
        assert!(!marker.exists(), "{expr}: the command must not run");
    }
    // The budget file: invalid TOML, a bad budget in it, no [budgets] table.
    let file = dir.path("looptop.toml");
    for (text, what) in [
        ("[budgets\n", "is not valid TOML"),
        (
            "[budgets]\n\"lag.p99\" = \"<20parsecs\"\n",
            "budgets.\"lag.p99\": budget 'lag.p99<20parsecs': unknown unit 'parsecs'",
        ),
        ("[limits]\nstalls = 0\n", "has no [budgets] table"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = looptop().args(["check", "--budget-file"]).arg(&file).args(["--", "sh", "-c", &cmd]).output_limited();
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(what), "{text}: {}", stderr(&out));
        assert!(!marker.exists());
    }
    // No budget at all; --pid without -d.
    let empty = TempDir::new("check-empty");
    let out = looptop().current_dir(&empty.0).args(["check", "--", "true"]).output_limited();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no budget to check"), "{}", stderr(&out));
    let out = looptop().args(["check", "-b", "stalls==0", "--pid", "1"]).output_limited();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs -d DUR"), "{}", stderr(&out));
}

#[test]
fn a_budget_file_in_the_working_directory_is_read_and_flags_add_to_it() {
    let dir = TempDir::new("check-file");
    std::fs::write(dir.path("looptop.toml"), "[budgets]\n\"stall.max\" = \"<5s\"\nstalls = 3\n").unwrap();
    let _timing = timing();
    let out = looptop()
        .current_dir(&dir.0)
        .env("LANG", "C.UTF-8")
        .args(["check", "--rate", "0", "-b", "tick.max<1ms", "--", "node"])
        .arg(fixture("node/stalls.js"))
        .env("FIXTURE_STALLS_MS", "60")
        .output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("✓ stall.max<5s") && err.contains("✓ stalls<=3") && err.contains("✗ tick.max<1ms"), "{err}");
}

#[test]
fn a_command_that_cannot_be_observed_exits_3() {
    let out = looptop().args(["check", "-b", "stalls==0", "--", "/nonexistent/server"]).output_limited();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}
