//! Debian's nginx with its perl and njs modules (issue 18, points 4 and 7): a request whose
//! handler runs regular expressions for a time it measures (`fixtures/nginx`: Perl's engine, and
//! njs's PCRE2) is one stall of the worker's loop, as long as measured, of kind `regex`, named
//! after the engine's function, not after nginx's frame that dispatched to the module; attached
//! to the master, looptop follows its worker, whose stacks (nginx is built without frame
//! pointers) are unwound whole through the binaries' CFI. Under `run` too. Without nginx and its
//! modules the tests skip, a failure when `LOOPTOP_REQUIRE_NGINX=1` (CI, which installs them).

use crate::util::*;
use serde_json::Value;
use std::path::Path;

/// nginx's dynamic modules, where Debian puts them.
const MODULES: [&str; 2] =
    ["/usr/lib/nginx/modules/ngx_http_perl_module.so", "/usr/lib/nginx/modules/ngx_http_js_module.so"];

/// Whether nginx and its perl and njs modules are installed.
fn nginx(test: &str) -> bool {
    let ok = std::process::Command::new("nginx").arg("-v").output().is_ok_and(|o| o.status.success())
        && MODULES.iter().all(|m| Path::new(m).exists());
    let how = "apt-get install nginx libnginx-mod-http-perl libnginx-mod-http-js";
    present_or_skip(test, ok, "LOOPTOP_REQUIRE_NGINX", "nginx with its perl and njs modules", how)
}

/// The command that runs nginx in the foreground from `dir` (its configuration written there
/// from `fixtures/nginx/nginx.conf`), on `port`. Its worker runs as nginx's own user (www-data
/// under root), so the handlers' truth file is made writable for it first.
fn server(dir: &TempDir, port: u16) -> Vec<String> {
    let fixtures = fixture("nginx");
    let conf = std::fs::read_to_string(fixtures.join("nginx.conf")).unwrap();
    let conf = conf
        .replace("@DIR@", dir.path("").to_str().unwrap().trim_end_matches('/'))
        .replace("@PORT@", &port.to_string())
        .replace("@FIXTURES@", fixtures.to_str().unwrap());
    let path = dir.path("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let prefix = dir.path("");
    let script = format!(
        "touch \"$FIXTURE_TRUTH\" && chmod 666 \"$FIXTURE_TRUTH\" && exec nginx -p {} -c {} -g 'daemon off;'",
        prefix.display(),
        path.display()
    );
    ["sh", "-c", &script].map(str::to_string).to_vec()
}

/// Two requests of each handler, with plain ones between.
fn drive(port: u16) {
    for path in ["/perl/150", "/njs/120", "/perl/90", "/njs/160"] {
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(http_get(port, "/ok").unwrap_or_default().contains(" 200 "), "/ok");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(http_get(port, path).unwrap_or_default().contains(" 200 "), "{path}");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
}

/// The worker's loop has exactly the handlers' stalls, each as long as measured, of kind
/// `regex`, named after the engine that ran: Perl's for the perl handler, PCRE2 for njs.
fn assert_handlers(report: &Value, truth: &[Truth], what: &str) {
    assert_eq!(truth.len(), 4, "{what}: the handlers measured {truth:?}");
    let worker = truth[0].pid.unwrap();
    let loops = report["loops"].as_array().unwrap();
    let stalls = stalls_in_order(report, |l| l["pid"] == worker && l["tid"] == worker);
    let durations = durations(&stalls);
    let measured: Vec<f64> = truth.iter().map(|t| t.ms).collect();
    assert_stalls_match(&durations, &measured, 50.0, what);
    for (t, s) in truth.iter().zip(&stalls) {
        let b = &s["blocker"];
        let engine = if t.func.as_deref() == Some("perl") { "Perl_regexec_flags" } else { "pcre2_match" };
        let named = b["kind"] == "regex" && b["frame"].as_str().is_some_and(|f| f.starts_with(engine));
        assert!(named, "{what}: the {:?} handler's stall is named {b:#}", t.func);
    }
    let others: usize =
        loops.iter().filter(|l| l["pid"] != worker).map(|l| l["stalls"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(others, 0, "{what}: the master has no stall: {:#}", report["loops"]);
}

#[test]
fn issue_18_nginx_perl_and_njs_handlers_are_regex_stalls_named_by_their_engine_attached() {
    let test = "issue_18_nginx_perl_and_njs_handlers_are_regex_stalls_named_by_their_engine_attached";
    if !perf_permitted(test) || !nginx(test) {
        return;
    }
    let dir = TempDir::new("nginx-attach");
    let port = free_port();
    // Attached to the master (a shell that became nginx), which only manages its worker.
    let (report, truth, folded) =
        served_attached_stacks(&server(&dir, port), port, "nginx-attach", |pid| pid, &[], drive);
    assert_handlers(&report, &truth, "nginx, attached to its master");
    // nginx has no frame pointers: its worker's stalls are walked whole through its CFI, from
    // the request's phase handler down to the engine.
    for (engine, module) in [("Perl_regexec_flags", "ngx_http_perl_handle_request"), ("pcre2_match", "ngx_js_call")] {
        let (whole, _) = samples_with(&folded, &["ngx_http_core_run_phases;", module, engine]);
        let (all, _) = samples_with(&folded, &[engine]);
        assert!(all > 0 && whole * 10 >= all * 8, "{engine}: {whole} of {all} walked from nginx's phases:\n{folded}");
    }
}

#[test]
fn issue_18_nginx_perl_and_njs_handlers_are_regex_stalls_named_by_their_engine_under_run() {
    let test = "issue_18_nginx_perl_and_njs_handlers_are_regex_stalls_named_by_their_engine_under_run";
    if !nginx(test) {
        return;
    }
    let dir = TempDir::new("nginx-run");
    let port = free_port();
    let (report, truth) = served_with_agent(&server(&dir, port), port, "nginx-run", drive);
    assert_handlers(&report, &truth, "nginx under run");
}
