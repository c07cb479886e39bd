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
