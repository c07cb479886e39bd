//! express 4.19.2 from npm (issue 18): its router's path-to-regexp 0.1.7 carries a published
//! ReDoS (CVE-2024-45296): a route with two parameters in one segment (`/flights/:from-:to`)
//! backtracks on a long path of dashes. Each crafted request is one stall of the server's loop, as
//! long as the app timed its routing, of kind `regex`, named after express's own `Layer.match`
//! at the line that runs the regex (with the agent; attached to a node started plainly, which
//! writes no perf map, the kind alone, and looptop says how to get names); the plain requests make
//! none.
//! `.ci/run` installs express (locked) into `target/express`; without it the tests skip, a
//! failure when `LOOPTOP_REQUIRE_EXPRESS=1` (CI).

use crate::util::*;
use serde_json::Value;
use std::path::Path;

/// `target/express/node_modules`, when `.ci/run` (or the line it prints) installed express there.
fn express(test: &str) -> Option<String> {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/express/node_modules");
    let how = "mkdir -p target/express && cp fixtures/node/express_redos/package*.json target/express && \
               (cd target/express && npm ci)";
    let present = modules.join("express/package.json").exists();
    present_or_skip(test, present, "LOOPTOP_REQUIRE_EXPRESS", "target/express", how)
        .then(|| modules.to_string_lossy().into_owned())
}

/// The server on `port`, finding express through `NODE_PATH` (`modules`).
fn server(modules: &str, port: u16) -> Vec<String> {
    let script = fixture("node/express_redos/server.js");
    let node_path = format!("NODE_PATH={modules}");
    ["env", &node_path, "node", script.to_str().unwrap(), &port.to_string()].map(str::to_string).to_vec()
}

/// Two crafted requests (their regex's time grows with the cube of the dashes), each between
/// plain ones.
fn drive(port: u16) {
    for dashes in [10_000, 13_000] {
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(http_get(port, "/ok").unwrap_or_default().contains(" 200 "), "/ok");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let path = format!("/flights/{}/x", "-".repeat(dashes));
        assert!(http_get(port, &path).unwrap_or_default().contains(" 404 "), "{dashes} dashes");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
}

/// The server's loop has exactly the crafted requests' stalls, each as long as the app timed
/// it, a `regex` stall; named `match` in express's router at the line that runs the regex when
/// `named` (the agent gave node a perf map; attached to a node started plainly, JavaScript
/// functions have no names and looptop says how to get them).
fn assert_redos(report: &Value, truth: &[Truth], named: bool, what: &str) {
    assert_eq!(truth.len(), 2, "{what}: the app timed {truth:?}");
    let stalls = main_stalls(report);
    let durations = durations(&stalls);
    let measured: Vec<f64> = truth.iter().map(|t| t.ms).collect();
    assert_stalls_match(&durations, &measured, 50.0, what);
    for s in &stalls {
        let b = &s["blocker"];
        let loc = b["location"].as_str().unwrap_or_default();
        let in_router = b["frame"] == "match"
            && loc.contains("express/lib/router/layer.js:")
            && b["source"].as_str().is_some_and(|s| s.contains("regexp.exec"));
        assert!(b["kind"] == "regex" && (in_router || !named), "{what}: the stall is named {b:#}");
    }
    if !named {
        let warnings = report["warnings"].to_string();
        assert!(warnings.contains("perf map"), "{what}: how to name JavaScript functions is said: {warnings}");
    }
}

#[test]
fn issue_18_express_routing_a_published_redos_is_a_regex_stall_named_in_its_router() {
    let test = "issue_18_express_routing_a_published_redos_is_a_regex_stall_named_in_its_router";
    let Some(modules) = express(test) else { return };
    let port = free_port();
    let (report, truth) = served_with_agent(&server(&modules, port), port, "express", drive);
    assert_redos(&report, &truth, true, "express, agent");
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let (report, truth) = served_attached(&server(&modules, port), port, "express-attach", |pid| pid, &[], drive);
    assert_redos(&report, &truth, false, "express, attached");
}
