//! Redis (issue 18 points 4, 5 and 8): `KEYS` over a million keys is one CPU stall whose stacks
//! are walked whole through Redis's CFI (Debian builds it without frame pointers). A long Lua script makes Redis run its event loop nested, answering
//! `BUSY` from inside the script (a zero-timeout `epoll_wait` deeper on the same stack than the
//! loop's own). That is one stall, as long as Redis's own SLOWLOG says the script ran, not a short
//! one and thousands of ticks. Debian's `redis-server` (which `.ci/run` installs) under
//! `looptop run` and attached (BPF); without it the tests skip, a failure when
//! `LOOPTOP_REQUIRE_REDIS=1` (CI).

use crate::util::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `redis-server`, if installed.
fn redis_server(test: &str) -> Option<&'static str> {
    let redis = std::process::Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    present_or_skip(test, redis, "LOOPTOP_REQUIRE_REDIS", "redis-server", "apt-get install redis-server")
        .then_some("redis-server")
}

/// A Redis connection speaking RESP.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    /// Connects to the server on `port`, trying for up to 30 s.
    fn connect(port: u16) -> Client {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                return Client { r: BufReader::new(s.try_clone().unwrap()), w: s };
            }
            assert!(std::time::Instant::now() < deadline, "redis never answered on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a command; its reply, flattened into lines (integers, strings, errors, arrays).
    fn call(&mut self, args: &[&str]) -> Vec<String> {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd += &format!("${}\r\n{a}\r\n", a.len());
        }
        self.w.write_all(cmd.as_bytes()).unwrap();
        let mut out = Vec::new();
        self.read_reply(&mut out);
        out
    }

    fn read_reply(&mut self, out: &mut Vec<String>) {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        let (kind, rest) = line.split_at(1);
        match kind {
            "*" => (0..rest.parse::<i64>().unwrap().max(0)).for_each(|_| self.read_reply(out)),
            "$" if rest == "-1" => out.push(String::new()),
            "$" => {
                let mut data = vec![0; rest.parse::<usize>().unwrap() + 2];
                std::io::Read::read_exact(&mut self.r, &mut data).unwrap();
                out.push(String::from_utf8_lossy(&data[..data.len() - 2]).into_owned());
            }
            _ => out.push(line),
        }
    }
}

/// A Lua script that keeps Redis busy for `ms` milliseconds.
fn busy_script(ms: u32) -> String {
    format!(
        "local function now() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end \
         local s = now() while now() - s < {ms} do end return 1"
    )
}

/// The server's arguments: on `port`, no persistence, answering BUSY (the nested loop) after
/// 100 ms of script, logging every command over 10 ms.
fn server_args(port: u16, dir: &TempDir) -> Vec<String> {
    let dir = dir.path("");
    let port = port.to_string();
    let args = ["--port", &port, "--save", "", "--appendonly", "no", "--dir", dir.to_str().unwrap()];
    let more = ["--busy-reply-threshold", "100", "--slowlog-log-slower-than", "10000", "--enable-debug-command", "yes"];
    args.iter().chain(&more).map(|s| s.to_string()).collect()
}

/// Runs a 600 ms script while a second client is answered BUSY from inside it; how long the
/// script ran by Redis's SLOWLOG (ms).
fn busy_script_episode(port: u16) -> f64 {
    let mut c = Client::connect(port);
    assert_eq!(c.call(&["PING"]), ["+PONG"]);
    std::thread::sleep(Duration::from_millis(200));
    let pinger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        Client::connect(port).call(&["PING"])
    });
    assert_eq!(c.call(&["EVAL", &busy_script(600), "0"]), [":1"]);
    let busy = pinger.join().unwrap();
    assert!(busy[0].starts_with("-BUSY"), "the nested loop answered {busy:?}");
    std::thread::sleep(Duration::from_millis(200));
    // SLOWLOG GET: [id, timestamp, duration in µs, [command …], client, name] per entry.
    let log = c.call(&["SLOWLOG", "GET", "10"]);
    let eval = log.iter().position(|l| l == "EVAL").expect("the script is in the slow log");
    log[eval - 1].trim_start_matches(':').parse::<f64>().unwrap() / 1000.0
}

#[test]
fn issue_18_a_long_lua_script_is_one_stall_as_long_as_redis_slowlog_says() {
    let test = "issue_18_a_long_lua_script_is_one_stall_as_long_as_redis_slowlog_says";
    let Some((report, script_ms)) = under_run(test, "50ms", |_| {}, busy_script_episode) else { return };
    let stalls = stalls_of(&report, |l| l["tid"] == l["pid"]);
    assert_stalls_match(&stalls, &[script_ms], 50.0, "redis, a 600 ms script answering BUSY, agent");
}

/// A Redis server under `looptop run --rate 0` (the agent's watchdog takes the stacks) with a
/// stall threshold of `threshold`, filled by `prepare`, while `episode` drives it: the report and
/// what `episode` returned (the episode's length by SLOWLOG); `None` when skipped.
fn under_run(
    test: &str,
    threshold: &str,
    prepare: fn(u16),
    episode: fn(u16) -> f64,
) -> Option<(serde_json::Value, f64)> {
    let server = redis_server(test)?;
    let _timing = timing();
    let dir = TempDir::new("redis");
    let port = free_port();
    let lt = looptop()
        .args(["run", "--json", "--rate", "0", "--stall-threshold", threshold, "-o"])
        .arg(dir.path("report.json"))
        .args(["--", server])
        .args(server_args(port, &dir))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    drop(Client::connect(port));
    prepare(port);
    let ms = episode(port);
    // SAFETY: signalling the looptop this test started; it passes SIGTERM on to redis.
    unsafe { libc::kill(lt.id() as i32, libc::SIGTERM) };
    let out = lt.wait_with_output();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path("report.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("report: {e}; {}", stderr(&out)));
    assert_report_schema(&report);
    Some((report, ms))
}

#[test]
fn issue_18_attached_a_long_lua_script_is_one_stall_as_long_as_redis_slowlog_says() {
    attached_script("issue_18_attached_a_long_lua_script_is_one_stall_as_long_as_redis_slowlog_says", &[]);
}

#[test]
fn issue_18_attached_with_perf_events_a_long_lua_script_is_one_stall_as_long_as_redis_slowlog_says() {
    attached_script(
        "issue_18_attached_with_perf_events_a_long_lua_script_is_one_stall_as_long_as_redis_slowlog_says",
        &[("LOOPTOP_NO_BPF", "1")],
    );
}

/// A Redis server started plainly, `looptop record --pid` attached to it (with `env`), the
/// 600 ms script: one stall of the main loop, as long as SLOWLOG says.
fn attached_script(test: &str, env: &[(&str, &str)]) {
    let Some((report, _, script_ms)) = attached(test, env, |_| {}, busy_script_episode) else { return };
    let stalls = stalls_of(&report, |l| l["tid"] == l["pid"]);
    assert_stalls_match(
        &stalls,
        &[script_ms],
        50.0,
        &format!("redis, a 600 ms script answering BUSY, attached {env:?}"),
    );
}

/// A Redis server started plainly (and filled by `prepare`), `looptop record --pid` attached to it
/// (with `env`) while `episode` drives it: the report, the folded stacks of its stalls and what
/// `episode` returned (the episode's length by SLOWLOG); `None` when skipped.
fn attached(
    test: &str,
    env: &[(&str, &str)],
    prepare: fn(u16),
    episode: fn(u16) -> f64,
) -> Option<(serde_json::Value, String, f64)> {
    if !perf_permitted(test) {
        return None;
    }
    let server = redis_server(test)?;
    let _machine = machine_wide();
    let dir = TempDir::new("redis-attach");
    let port = free_port();
    let mut redis = std::process::Command::new(server)
        .args(server_args(port, &dir))
        .stdout(std::process::Stdio::null())
        .spawn_limited();
    drop(Client::connect(port));
    prepare(port);
    let rec = dir.path("redis.rec");
    let lt = looptop()
        .args(["record", "-q", "--pid", &redis.id().to_string(), "-o", rec.to_str().unwrap()])
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn_limited();
    std::thread::sleep(Duration::from_millis(1500));
    let ms = episode(port);
    // SAFETY: signalling the looptop this test started (it stops), then redis.
    unsafe { libc::kill(lt.id() as i32, libc::SIGINT) };
    let out = lt.wait_with_output();
    unsafe { libc::kill(redis.id() as i32, libc::SIGTERM) };
    redis.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    let report: serde_json::Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let flame = looptop()
        .args(["flame", "--stalls-only", "--format", "folded", "-o", "-", "--from"])
        .arg(&rec)
        .output_limited();
    assert!(flame.status.success(), "{}", stderr(&flame));
    Some((report, String::from_utf8_lossy(&flame.stdout).into_owned(), ms))
}

/// A million keys, from `DEBUG POPULATE` in twenty steps (each well under 200 ms: the stall
/// threshold of the test under `run`, which observes them).
fn populate(port: u16) {
    let mut c = Client::connect(port);
    for step in 0..20 {
        c.call(&["DEBUG", "POPULATE", "50000", &format!("key{step}")]);
    }
}

/// `KEYS` over the million keys; how long it ran by SLOWLOG (ms).
fn keys_episode(port: u16) -> f64 {
    let mut c = Client::connect(port);
    c.call(&["SLOWLOG", "RESET"]);
    let found = c.call(&["KEYS", "*4999*"]);
    assert!(!found.is_empty(), "KEYS found nothing");
    std::thread::sleep(Duration::from_millis(300));
    let log = c.call(&["SLOWLOG", "GET", "10"]);
    let keys = log.iter().position(|l| l == "KEYS").expect("KEYS is in the slow log");
    log[keys - 1].trim_start_matches(':').parse::<f64>().unwrap() / 1000.0
}

#[test]
fn issue_18_attached_keys_is_one_cpu_stall_named_down_from_main_through_redis_cfi() {
    let test = "issue_18_attached_keys_is_one_cpu_stall_named_down_from_main_through_redis_cfi";
    let Some((report, folded, keys_ms)) = attached(test, &[], populate, keys_episode) else { return };
    let stalls = main_stalls(&report);
    let durations = durations(&stalls);
    assert_stalls_match(&durations, &[keys_ms], 50.0, "redis KEYS, attached");
    // The verdict: CPU, from most of the samples (not a kind one sample in a hundred had).
    let blocker = &stalls[0]["blocker"];
    assert_eq!(blocker["kind"], "cpu", "{blocker:#}");
    assert!(blocker["confidence"].as_f64().unwrap() >= 0.8, "{blocker:#}");
    // Debian's redis-server has no frame pointers: the callers come from its CFI, whole from
    // main down to the command (a frame-pointer walk stops at one `[unknown]` caller).
    let (whole, all) = samples_with(&folded, &[";main;aeMain;", ";processCommand;call;keysCommand"]);
    assert!(
        all > 0 && whole * 10 >= all * 8,
        "{whole} of {all} stall samples walked from main to keysCommand:\n{folded}"
    );
}

#[test]
fn issue_18_keys_under_run_is_one_cpu_stall_named_after_redis_own_function() {
    let test = "issue_18_keys_under_run_is_one_cpu_stall_named_after_redis_own_function";
    let Some((report, keys_ms)) = under_run(test, "200ms", populate, keys_episode) else { return };
    let stalls = main_stalls(&report);
    let durations = durations(&stalls);
    assert_stalls_match(&durations, &[keys_ms], 200.0, "redis KEYS, agent");
    // The watchdog's samples, unwound through Redis's CFI: the verdict is CPU, from most samples,
    // named after one of Redis's own functions that the command runs.
    let blocker = &stalls[0]["blocker"];
    assert_eq!(blocker["kind"], "cpu", "{blocker:#}");
    assert!(blocker["confidence"].as_f64().unwrap() >= 0.8, "{blocker:#}");
    let frame = blocker["frame"].as_str().unwrap_or_default();
    assert!(["keysCommand", "dictNext", "stringmatchlen"].contains(&frame), "{blocker:#}");
}
