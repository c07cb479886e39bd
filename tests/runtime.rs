//! GC pauses, the thread pool and allocator pauses (issue 3), on real node, python3 and C.

use crate::util::*;
use serde_json::Value;

fn node(fixture_name: &str, node_args: &[&str], env: &[(&str, &str)]) -> Run {
    let path = fixture(fixture_name);
    let mut cmd = vec!["node"];
    cmd.extend_from_slice(node_args);
    cmd.push(path.to_str().unwrap());
    run_json(&[], &cmd, env)
}

/// `fixtures/node/pool_burst.js`: a pbkdf2 burst that keeps every core busy, so it runs alone.
fn pool_burst(env: &[(&str, &str)]) -> Run {
    run_json_alone(&[], &["node", fixture("node/pool_burst.js").to_str().unwrap()], env)
}

#[test]
fn node_gc_pauses_have_kinds_and_a_forced_major() {
    let run = node("node/gc_churn.js", &["--expose-gc"], &[]);
    let gc = &run.report["gc"];
    assert!(gc.is_object(), "gc must be visible with the Node probe: {:#}", run.report);
    let kinds: Vec<&str> = gc["pauses"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"minor"), "scavenges expected: {kinds:?}");
    assert!(kinds.contains(&"major"), "the forced gc() is a mark-compact: {kinds:?}");
    assert_eq!(gc["count"].as_u64().unwrap() as usize, kinds.len());
    let forced = run.truth.iter().find(|t| t.kind == "gc-major-forced").expect("truth of gc()").ms;
    // V8 times the pause itself; the fixture times the gc() call around it.
    let majors: Vec<f64> = gc["pauses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "major")
        .map(|p| p["duration_ms"].as_f64().unwrap())
        .collect();
    assert!(
        majors.iter().any(|m| (m - forced).abs() <= (forced * 0.5).max(2.0)),
        "major pauses {majors:?} ms, gc() took {forced} ms"
    );
    let total: f64 = gc["pauses"].as_array().unwrap().iter().map(|p| p["duration_ms"].as_f64().unwrap()).sum();
    assert!((gc["total_ms"].as_f64().unwrap() - total).abs() < 0.01);
}

fn pool(report: &Value) -> &Value {
    let p = &report["pool"];
    assert!(p.is_object(), "pool must be visible with the Node probe: {report:#}");
    p
}

#[test]
fn a_pbkdf2_burst_queues_on_the_default_pool_and_waits_grow() {
    let run = pool_burst(&[("FIXTURE_JOBS", "16")]);
    let p = pool(&run.report);
    assert_eq!(p["kind"], "libuv");
    assert_eq!(p["size"], 4);
    assert_eq!(p["busy_max"], 4);
    let q = p["queued_max"].as_u64().unwrap();
    assert!((11..=12).contains(&q), "16 jobs on 4 workers: about 12 queued, got {q}");
    assert!(p["items"].as_u64().unwrap() >= 16);
    // Four waves: the first waits not at all, the last for the three before it. The fixture
    // times each job from submission to callback (wait + run): the shortest is a first-wave
    // job's run, the longest a last-wave job's wait + run.
    let job = run.truth.iter().map(|t| t.ms).fold(f64::MAX, f64::min);
    let longest = run.truth.iter().map(|t| t.ms).fold(0.0, f64::max);
    let w = &p["wait_ms"];
    let (p50, max) = (w["p50"].as_f64().unwrap(), w["max"].as_f64().unwrap());
    assert!(max >= job && max <= longest + 5.0, "max wait {max} ms; jobs took {job} .. {longest} ms");
    assert!(p50 < max, "{w}");
}

#[test]
fn a_pool_as_large_as_the_burst_has_no_queue() {
    let run = pool_burst(&[("FIXTURE_JOBS", "16"), ("UV_THREADPOOL_SIZE", "16")]);
    let p = pool(&run.report);
    assert_eq!(p["size"], 16);
    assert_eq!(p["queued_max"], 0);
    assert!(p["wait_ms"]["max"].as_f64().unwrap() < 1.0, "{p}");
}

#[test]
fn fs_and_zlib_async_are_counted() {
    let run = node("node/pool_users.js", &[], &[]);
    let stdout = String::from_utf8_lossy(&run.out.stdout);
    let counts: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let calls: u64 = ["fs_callback", "fs_promise", "zlib"].iter().map(|k| counts[k].as_u64().unwrap()).sum();
    let items = pool(&run.report)["items"].as_u64().unwrap();
    assert!(items >= calls, "{items} pool items seen for {calls} calls ({counts})");
}

#[test]
fn the_node_probe_changes_no_result_error_or_order() {
    let transcript = |probe: &str| {
        let out = looptop()
            .args(["run", "-q", "-o", "/dev/null", "--", "node"])
            .arg(fixture("node/probe_transparency.js"))
            .env("LOOPTOP_PROBE", probe)
            .output_limited();
        let lines: Vec<String> = serde_json::from_slice(out.stdout.trim_ascii_end()).unwrap_or_else(|e| {
            panic!("probe={probe}: {e}; stdout {:?} stderr {}", String::from_utf8_lossy(&out.stdout), stderr(&out))
        });
        lines
    };
    let with = transcript("1");
    let without = transcript("0");
    let pos = |name: &str| with.iter().position(|l| l.starts_with(name)).unwrap();
    assert!(pos("lookup-ip") < pos("immediate"), "{with:?}");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(with), sorted(without));
}

#[test]
fn python_gc_pauses_and_executor_queue() {
    let run =
        run_json(&[], &["python3", fixture("python/gc_executor.py").to_str().unwrap()], &[("FIXTURE_JOBS", "20")]);
    let stdout = String::from_utf8_lossy(&run.out.stdout);
    let info: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let workers = info["workers"].as_u64().unwrap();
    let gc = &run.report["gc"];
    assert!(gc["count"].as_u64().unwrap() >= 1, "{gc}");
    assert!(gc["pauses"].as_array().unwrap().iter().any(|p| p["kind"] == "gen2"), "the full collection: {gc}");
    let p = pool(&run.report);
    assert_eq!(p["kind"], "python-executor");
    assert_eq!(p["size"].as_u64().unwrap(), workers);
    assert_eq!(p["items"], 20);
    let expect = 20u64.saturating_sub(workers);
    let q = p["queued_max"].as_u64().unwrap();
    assert!(q + 1 >= expect && q <= expect, "20 jobs on {workers} workers: queued {q}");
    if expect > 0 {
        assert!(p["wait_ms"]["max"].as_f64().unwrap() >= 90.0, "{p}");
    }
}

#[test]
fn slow_munmap_on_a_loop_thread_is_an_allocator_pause() {
    let dir = TempDir::new("munmap");
    let bin = dir.path("munmap_loop");
    let st =
        std::process::Command::new("cc").args(["-O1", "-o"]).arg(&bin).arg(fixture("c/munmap_loop.c")).status_limited();
    assert!(st.success());
    let run = run_json(&[], &[bin.to_str().unwrap()], &[]);
    let measured: Vec<f64> =
        String::from_utf8_lossy(&run.out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(measured.len(), 3);
    let a = &run.report["alloc"];
    let pauses: Vec<&Value> = a["pauses"].as_array().unwrap().iter().filter(|p| p["call"] == "munmap").collect();
    let slow = measured.iter().filter(|&&m| m >= 1.0).count();
    assert_eq!(pauses.len(), slow, "munmaps of {measured:?} ms, pauses {a}");
    for p in pauses {
        assert_eq!(p["size"], 256u64 << 20);
        assert_eq!(p["tid"], p["pid"]);
    }
}
