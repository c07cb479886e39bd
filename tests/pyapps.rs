//! Real Python servers driven over loopback: asyncio's own `start_server`, and from PyPI
//! (`fixtures/python/requirements.txt`, installed by `.ci/run` into `target/pyapps`) a FastAPI app
//! under uvicorn (on an asyncio loop, and on uvloop's) and a WSGI app under gunicorn's sync
//! workers (a worker process waiting in `select`) and gevent workers (greenlets on a libev hub,
//! the standard library patched: a sleep there yields, no stall). Their requests
//! block in `fixtures/python/endpoints.py`, which measures each; every stall must be found once,
//! within tolerance of that measurement, and name the endpoint's function, file and line, with
//! the agent (`looptop run`) and attached (`looptop record --pid`, no agent).

use crate::util::*;
use serde_json::Value;

/// The python of the virtualenv `.ci/run` makes (`target/pyapps`), if there.
fn venv_python() -> Option<String> {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyapps/bin/python");
    py.exists().then(|| py.to_string_lossy().into_owned())
}

/// The virtualenv `.ci/run` fills with FastAPI, uvicorn and gunicorn, if there.
fn pyapps(test: &str) -> Option<String> {
    let py = venv_python();
    let how = "python3 -m venv target/pyapps && target/pyapps/bin/pip install -r fixtures/python/requirements.txt";
    present_or_skip(test, py.is_some(), "LOOPTOP_REQUIRE_PYTHONS", "target/pyapps", how).then_some(py?)
}

/// Drives each blocking endpoint once (and `/ok` last, which writes the truth still pending).
fn drive(port: u16) {
    for path in ["/sleep", "/regex", "/json", "/busy", "/deep", "/ok"] {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let status = http_get(port, path).unwrap_or_default();
        assert!(status.contains(" 200 "), "{path}: {status}");
    }
}

/// The command serving `fixtures/python/asgi_app.py` with uvicorn on `port`.
fn uvicorn(py: &str, port: u16) -> Vec<String> {
    let dir = fixture("python");
    let port = port.to_string();
    let args = ["-m", "uvicorn", "--app-dir", dir.to_str().unwrap(), "--port", &port, "--log-level", "warning"];
    std::iter::once(py).chain(args).chain(["asgi_app:app"]).map(str::to_string).collect()
}

/// [`uvicorn`] on uvloop's event loop (libuv's, under asyncio's API) rather than asyncio's own.
fn uvicorn_uvloop(py: &str, port: u16) -> Vec<String> {
    let mut cmd = uvicorn(py, port);
    let app = cmd.pop().unwrap();
    cmd.extend(["--loop".to_string(), "uvloop".to_string(), app]);
    cmd
}

/// The command serving `fixtures/python/asyncio_app.py` (asyncio's own server) on `port`.
fn asyncio_server(py: &str, port: u16) -> Vec<String> {
    vec![py.to_string(), fixture("python/asyncio_app.py").to_string_lossy().into_owned(), port.to_string()]
}

/// The command serving `fixtures/python/wsgi_app.py` with `workers` gunicorn sync workers on
/// `port`.
fn gunicorn(py: &str, port: u16, workers: u32) -> Vec<String> {
    gunicorn_of("sync", py, port, workers)
}

/// The command serving `fixtures/python/wsgi_app.py` with `workers` gunicorn workers of class
/// `class` (`sync`, `gevent`) on `port`.
fn gunicorn_of(class: &str, py: &str, port: u16, workers: u32) -> Vec<String> {
    let dir = fixture("python");
    let bind = format!("127.0.0.1:{port}");
    let workers = workers.to_string();
    let args = ["-m", "gunicorn", "--chdir", dir.to_str().unwrap(), "-w", &workers, "-k", class, "-b", &bind];
    std::iter::once(py).chain(args).chain(["--log-level", "warning", "wsgi_app:app"]).map(str::to_string).collect()
}

/// The stalls of the main thread of `pid`, in order.
fn stalls_of_main_thread(report: &Value, pid: u32) -> Vec<Value> {
    stalls_in_order(report, |l| l["pid"] == pid && l["tid"] == pid)
}

/// Each serving process's stalls (its main thread's) are the blocking work of the requests it
/// served, each once, as long as the app measured it (within tolerance), each naming its function
/// at a line that blocks in `endpoints.py` with the source shown (`any_kind`: kinds not checked,
/// their function and line still are: json.loads's kind attached rests on the Python frames read
/// in time, CPython having no frame pointers for the kernel to find `_json`'s C frames by, and
/// its page faults may outvote it as `alloc`).
fn assert_served(report: &Value, truth: &[Truth], any_kind: &[&str], what: &str) {
    assert_eq!(truth.len(), 5, "{what}: the app measured {truth:?}");
    assert_blocked(report, truth, any_kind, what);
}

/// [`assert_served`] for the requests of `truth` that blocked their loop (each process's own).
fn assert_blocked(report: &Value, truth: &[Truth], any_kind: &[&str], what: &str) {
    let mut pids: Vec<u32> = truth.iter().map(|t| t.pid.expect("truth lines carry the server's pid")).collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let mine: Vec<&Truth> = truth.iter().filter(|t| t.pid == Some(pid)).collect();
        assert_served_by(report, pid, &mine, any_kind, &format!("{what}, process {pid}"));
    }
}

/// [`assert_served`] for one serving process.
fn assert_served_by(report: &Value, pid: u32, truth: &[&Truth], any_kind: &[&str], what: &str) {
    let stalls = stalls_of_main_thread(report, pid);
    let durations = durations(&stalls);
    let measured: Vec<f64> = truth.iter().map(|t| t.ms).collect();
    assert_stalls_match(&durations, &measured, 50.0, what);
    for (t, s) in truth.iter().zip(&stalls) {
        let func = t.func.as_deref().unwrap();
        let b = &s["blocker"];
        let loc = b["location"].as_str().unwrap_or_default();
        let line = loc.rsplit(':').next().and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
        let named = (b["kind"] == t.kind.as_str() || any_kind.contains(&t.kind.as_str()))
            && b["frame"] == func
            && loc.contains("endpoints.py:")
            && t.at.contains(&line)
            && b["source"].as_str().is_some_and(|s| s.ends_with("# blocks"));
        assert!(named, "{what}: {} in {func} at {:?} is named {b:#}", t.kind, t.at);
    }
}

/// The one worker process of gunicorn's arbiter `arbiter`.
fn gunicorn_worker(arbiter: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{arbiter}/task/{arbiter}/children")).unwrap_or_default();
    let workers: Vec<u32> = children.split_whitespace().filter_map(|c| c.parse().ok()).collect();
    assert_eq!(workers.len(), 1, "gunicorn {arbiter} has workers {workers:?}");
    workers[0]
}

#[test]
fn issue_17_an_asyncio_server_names_the_requests_blocking_lines_with_the_agent_and_attached() {
    let test = "issue_17_an_asyncio_server_names_the_requests_blocking_lines_with_the_agent_and_attached";
    // asyncio's own server needs nothing from PyPI: the virtualenv's python3 when there, else
    // the one on PATH.
    let py = venv_python().unwrap_or_else(|| "python3".to_string());
    let port = free_port();
    let (report, truth) = served_with_agent(&asyncio_server(&py, port), port, "asyncio", drive);
    assert_served(&report, &truth, &[], "asyncio server, agent");
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let (report, truth) = served_attached(&asyncio_server(&py, port), port, "asyncio-attach", |pid| pid, &[], drive);
    assert_served(&report, &truth, &["json-parse"], "asyncio server, attached");
}

#[test]
fn issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_with_the_agent() {
    let Some(py) = pyapps("issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_with_the_agent")
    else {
        return;
    };
    let port = free_port();
    let (report, truth) = served_with_agent(&uvicorn(&py, port), port, "fastapi", drive);
    assert_served(&report, &truth, &[], "uvicorn, agent");
}

#[test]
fn issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_attached() {
    let test = "issue_17_a_fastapi_app_under_uvicorn_names_the_endpoints_blocking_lines_attached";
    if !perf_permitted(test) {
        return;
    }
    let Some(py) = pyapps(test) else { return };
    let port = free_port();
    let (report, truth) = served_attached(&uvicorn(&py, port), port, "fastapi-attach", |pid| pid, &[], drive);
    // json.loads's kind attached: see tests/python.rs (the json module's frames read in time).
    assert_served(&report, &truth, &["json-parse"], "uvicorn, attached");
}

#[test]
fn issue_18_a_gunicorn_sync_worker_waiting_in_select_has_its_requests_stalls_with_the_agent() {
    let Some(py) = pyapps("issue_18_a_gunicorn_sync_worker_waiting_in_select_has_its_requests_stalls_with_the_agent")
    else {
        return;
    };
    let port = free_port();
    let (report, truth) = served_with_agent(&gunicorn(&py, port, 1), port, "gunicorn", drive);
    assert_served(&report, &truth, &[], "gunicorn sync worker, agent");
}

#[test]
fn issue_18_a_gunicorn_sync_worker_waiting_in_select_has_its_requests_stalls_attached() {
    let test = "issue_18_a_gunicorn_sync_worker_waiting_in_select_has_its_requests_stalls_attached";
    if !perf_permitted(test) {
        return;
    }
    let Some(py) = pyapps(test) else { return };
    let port = free_port();
    let (report, truth) =
        served_attached(&gunicorn(&py, port, 1), port, "gunicorn-attach", gunicorn_worker, &[], drive);
    assert_served(&report, &truth, &["json-parse"], "gunicorn sync worker, attached");
}

#[test]
fn issue_18_a_gunicorn_sync_worker_waiting_in_select_has_its_requests_stalls_attached_with_perf_events() {
    let test = "issue_18_a_gunicorn_sync_worker_waiting_in_select_has_its_requests_stalls_attached_with_perf_events";
    if !perf_permitted(test) {
        return;
    }
    let Some(py) = pyapps(test) else { return };
    let port = free_port();
    // The perf source: select's entries filtered by the kernel (n > 0), Python frames read for
    // the samples of a stall as with BPF.
    let env = [("LOOPTOP_NO_BPF", "1")];
    let (report, truth) = served_attached(&gunicorn(&py, port, 1), port, "gunicorn-perf", gunicorn_worker, &env, drive);
    assert_served(&report, &truth, &["json-parse"], "gunicorn sync worker, attached with perf events");
}

#[test]
fn issue_18_attached_to_gunicorns_arbiter_looptop_follows_its_workers() {
    let test = "issue_18_attached_to_gunicorns_arbiter_looptop_follows_its_workers";
    if !perf_permitted(test) {
        return;
    }
    let Some(py) = pyapps(test) else { return };
    let port = free_port();
    // The arbiter only manages its worker, which serves every request. (One worker: with two,
    // both wake at each connection and the one that finds it taken can wait for a CPU long
    // enough, on a loaded 2-core machine, to make a real but unplanned stall.)
    let (report, truth) = served_attached(&gunicorn(&py, port, 1), port, "gunicorn-arbiter", |pid| pid, &[], drive);
    assert_served(&report, &truth, &["json-parse"], "gunicorn's arbiter, attached");
    let arbiter = report["target"]["pid"].as_u64().unwrap();
    let worker = truth[0].pid.unwrap() as u64;
    assert_ne!(worker, arbiter, "the requests were served by a worker process");
    assert!(report["loops"].as_array().unwrap().iter().any(|l| l["pid"] == worker), "{report:#}");
}

#[test]
fn issue_18_a_fastapi_app_on_uvloop_names_the_endpoints_blocking_lines_with_the_agent_and_attached() {
    let test = "issue_18_a_fastapi_app_on_uvloop_names_the_endpoints_blocking_lines_with_the_agent_and_attached";
    let Some(py) = pyapps(test) else { return };
    let port = free_port();
    let (report, truth) = served_with_agent(&uvicorn_uvloop(&py, port), port, "uvloop", drive);
    assert_served(&report, &truth, &[], "uvicorn on uvloop, agent");
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let (report, truth) = served_attached(&uvicorn_uvloop(&py, port), port, "uvloop-attach", |pid| pid, &[], drive);
    assert_served(&report, &truth, &["json-parse"], "uvicorn on uvloop, attached");
}

/// Under gevent, `time.sleep` is gevent's (gunicorn's gevent worker patches the standard
/// library): the request's greenlet yields and the hub waits in `epoll_wait` meanwhile, so the
/// 150 ms sleep is no stall (and must not be reported as one); the CPU-bound requests are.
fn assert_served_by_gevent(report: &Value, truth: &[Truth], any_kind: &[&str], what: &str) {
    assert_eq!(truth.len(), 5, "{what}: the app measured {truth:?}");
    let blocking: Vec<Truth> = truth.iter().filter(|t| t.kind != "sync-wait").cloned().collect();
    assert_eq!(blocking.len(), 4, "{what}: {truth:?}");
    assert_blocked(report, &blocking, any_kind, what);
}

#[test]
fn issue_18_a_gevent_worker_has_the_stalls_of_its_cpu_bound_requests_and_none_for_a_patched_sleep() {
    let test = "issue_18_a_gevent_worker_has_the_stalls_of_its_cpu_bound_requests_and_none_for_a_patched_sleep";
    let Some(py) = pyapps(test) else { return };
    let port = free_port();
    let (report, truth) = served_with_agent(&gunicorn_of("gevent", &py, port, 1), port, "gevent", drive);
    assert_served_by_gevent(&report, &truth, &[], "gunicorn gevent worker, agent");
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let cmd = gunicorn_of("gevent", &py, port, 1);
    let (report, truth) = served_attached(&cmd, port, "gevent-attach", gunicorn_worker, &[], drive);
    assert_served_by_gevent(&report, &truth, &["json-parse"], "gunicorn gevent worker, attached");
}
