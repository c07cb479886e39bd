//! `looptop demo`: the bundled Node server with real blockers, under the agent, driven by a
//! built-in load loop; the summary at the end shows the stalls each blocker caused.

use crate::error::UserError;
use crate::observe::live::{self, Watch};
use crate::observe::{launch_and_observe, stall_floor, Collect, Flow};
use crate::plan::DemoPlan;
use crate::sink::report_out::{ReportOut, Stream};
use crate::target::launch::{LaunchPlan, Launched, Output};
use anyhow::{anyhow, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The blocking endpoints, hit in turn by the load loop.
const BLOCKERS: [(&str, &str); 5] = [
    ("/search", "catastrophic regex"),
    ("/tokens", "12 async pbkdf2 jobs: a thread-pool queue"),
    ("/import", "JSON.parse of 10 MB"),
    ("/login", "pbkdf2Sync"),
    ("/report", "JSON.stringify"),
];
/// Pause between two fast requests, and between two blocker requests.
const FAST_EVERY: Duration = Duration::from_millis(50);
const BLOCKER_EVERY: Duration = Duration::from_millis(1200);

/// Runs `looptop demo`.
pub fn execute(plan: DemoPlan) -> Result<u8> {
    crate::target::launch::forward_signals();
    let node = find_on_path("node").ok_or_else(|| {
        UserError::observe("looptop demo runs a Node.js server, and there is no `node` on PATH")
            .hint("install Node.js 18 or newer (e.g. apt-get install nodejs), or add it to PATH")
    })?;
    let server = crate::target::embedded::demo_server_path()?;
    let launch = LaunchPlan {
        command: vec![node.into_os_string(), server.into_os_string()],
        stall_floor_ns: stall_floor(plan.observe.stall_threshold),
        stdin: Output::Inherit,
        stdout: Output::Piped,
        stderr: Output::Null,
    };
    let out = ReportOut::open(plan.json.as_ref(), None, Stream::Stdout)?;
    let live = plan.json.is_none() && !plan.no_tui && live::can_show();
    let interactive = !live && !plan.observe.quiet && super::is_tty(2);
    let progress = interactive.then(|| {
        let bar = indicatif::ProgressBar::new(plan.duration.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{spinner}} demo {{elapsed:>3}} / {}  [{{bar:30}}]  {{msg}}",
                indicatif::HumanDuration(plan.duration)
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let load = Arc::new(Load::default());
    let started = Instant::now();
    let mut load_threads = Vec::new();
    let collect = Collect::new(plan.observe.stall_threshold, None, plan.stacks);
    let on_start = |launched: &mut Launched| match read_port(launched) {
        Ok(addr) => load_threads = start_load(addr, plan.duration, &load),
        Err(e) => {
            if !live {
                eprintln!("looptop: {e:#}");
            }
            let _ = launched.child.kill();
        }
    };
    let observed = if live {
        let launch = LaunchPlan { stdin: Output::Null, ..launch };
        let watch = Watch::Launch(launch, Box::new(on_start));
        live::observe_live(watch, &collect, plan.observe.color, live::WINDOW)?.observed
    } else {
        launch_and_observe(&launch, &collect, on_start, |pipeline| {
            let session = &pipeline.session;
            if let Some(bar) = &progress {
                let ms = (started.elapsed().as_millis() as u64).min(plan.duration.as_millis() as u64);
                bar.set_position(ms);
                bar.set_message(format!(
                    "{} requests, {} stalls",
                    load.requests.load(Ordering::Relaxed),
                    session.stall_count()
                ));
            }
            Flow::Go
        })?
    };
    load.stop.store(true, Ordering::Relaxed);
    for t in load_threads {
        let _ = t.join();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if load.requests.load(Ordering::Relaxed) == 0 {
        return Err(anyhow!(UserError::observe("the demo server did not start (no request was answered)")
            .hint("run `node --version` to check Node.js works, then try again")));
    }
    out.write(&observed.report, plan.observe.color, plan.observe.quiet)?;
    if !out.has_text() {
        return Ok(crate::error::exit::OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "The demo sent {} requests; every {} ms one of: {}.",
        load.requests.load(Ordering::Relaxed),
        BLOCKER_EVERY.as_millis(),
        BLOCKERS.iter().map(|(p, what)| format!("{p} ({what})")).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(out, "Try it on your own server: looptop run -- node server.js")?;
    Ok(crate::error::exit::OK)
}

/// The first executable `name` on PATH.
fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Reads "listening <port>" from the server's stdout.
fn read_port(launched: &mut crate::target::launch::Launched) -> Result<SocketAddr> {
    let stdout = launched.child.stdout.take().context("the demo server's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("reading the demo server's port")?;
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("the demo server did not start (it printed {line:?})"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Shared state of the load loop.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    requests: AtomicU64,
}

/// Two clients: one sends fast requests every 50 ms, one a blocker every 1.2 s. At the end one
/// of them asks the server to quit.
fn start_load(addr: SocketAddr, duration: Duration, load: &Arc<Load>) -> Vec<std::thread::JoinHandle<()>> {
    let deadline = Instant::now() + duration;
    let fast = {
        let load = load.clone();
        std::thread::spawn(move || {
            while Instant::now() < deadline && !load.stop.load(Ordering::Relaxed) {
                if get(addr, "/").is_ok() {
                    load.requests.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(FAST_EVERY);
            }
            let _ = get(addr, "/quit");
        })
    };
    let blockers = {
        let load = load.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            std::thread::sleep(BLOCKER_EVERY / 2);
            while Instant::now() + BLOCKER_EVERY / 2 < deadline && !load.stop.load(Ordering::Relaxed) {
                if get(addr, BLOCKERS[i % BLOCKERS.len()].0).is_ok() {
                    load.requests.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                std::thread::sleep(BLOCKER_EVERY);
            }
        })
    };
    vec![fast, blockers]
}

/// One HTTP/1.1 GET with `Connection: close`; the body is read and dropped.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if buf.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected answer"))
    }
}
