//! A Node cluster (issue 18 point 7): the primary forks HTTP workers and passes them
//! connections. Attached to the primary (`record --pid`), looptop follows its workers; under
//! `run`, the agent loads into each. Every request's busy work is one stall of the worker that
//! served it, within tolerance of the worker's own timing, and no process has another stall.

use crate::util::*;
use serde_json::Value;

fn cluster(port: u16) -> Vec<String> {
    let script = fixture("node/cluster.js");
    vec!["node".to_string(), script.to_string_lossy().into_owned(), port.to_string(), "2".to_string()]
}

/// Waits until a worker answers, then four requests that block the worker serving each.
fn drive(port: u16) {
    assert!(get_when_up(port), "the cluster never answered on port {port}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    for ms in [120, 200, 80, 150] {
        assert!(http_get(port, &format!("/busy/{ms}")).unwrap_or_default().contains(" 200 "), "/busy/{ms}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Each process's main loop has exactly the stalls its own requests measured (none for the
/// primary), and both workers served and were observed.
fn assert_workers_served(report: &Value, truth: &[Truth], what: &str) {
    assert_eq!(truth.len(), 4, "{what}: the workers measured {truth:?}");
    let loops = report["loops"].as_array().unwrap();
    let mains: Vec<&Value> = loops.iter().filter(|l| l["tid"] == l["pid"]).collect();
    for pid in truth.iter().filter_map(|t| t.pid) {
        assert!(mains.iter().any(|l| l["pid"] == pid), "{what}: worker {pid} served a request but was not observed");
    }
    assert!(mains.len() >= 3, "{what}: the primary and its two workers are loops: {:#}", report["loops"]);
    for l in mains {
        let pid = l["pid"].as_u64().unwrap() as u32;
        let measured: Vec<f64> = truth.iter().filter(|t| t.pid == Some(pid)).map(|t| t.ms).collect();
        let reported = stalls_of(report, |x| x["pid"] == pid && x["tid"] == pid);
        assert_stalls_match(&reported, &measured, 50.0, &format!("{what}, process {pid}"));
    }
}

#[test]
fn issue_18_attached_to_a_node_cluster_primary_looptop_follows_its_workers() {
    let test = "issue_18_attached_to_a_node_cluster_primary_looptop_follows_its_workers";
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let (report, truth) = served_attached(&cluster(port), port, "cluster-attach", |pid| pid, &[], drive);
    assert_workers_served(&report, &truth, "node cluster, attached to the primary");
}

#[test]
fn issue_18_a_node_cluster_under_run_has_each_workers_stalls() {
    let port = free_port();
    let (report, truth) = served_with_agent(&cluster(port), port, "cluster-run", drive);
    assert_workers_served(&report, &truth, "node cluster under run");
}
