//! The live view of `top`, and of `run` and `demo` on a terminal: observes the target while
//! [`crate::sink::tui`] draws the session, and does what the view's keys ask — flamegraphs of
//! the last seconds, recordings, another stall threshold.

use super::pipeline::Pipeline;
use super::{attach_and_observe, launch_and_observe, Collect, Flow, Observed};
use crate::analysis::report::Target;
use crate::analysis::Session;
use crate::error::UserError;
use crate::recording::Header;
use crate::sink::record::Recorder;
use crate::sink::tui::state::Live;
use crate::sink::tui::view::Request;
use crate::sink::tui::{Tui, TuiError};
use crate::source::now_ns;
use crate::target::launch::{self, LaunchPlan, Launched, Output};
use crate::units::fmt_ms;
use anyhow::Result;
use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

/// Stall thresholds `+` and `-` step through (ms).
const THRESHOLDS_MS: [u64; 14] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000];
/// What `f` draws in `run` and `demo`'s view: the last this long.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Stacks older than this (and outside stalls) are forgotten, beyond the flamegraph window.
const KEEP_STACKS: Duration = Duration::from_secs(120);

/// A command for the live view: no stdin (the view reads the keys), output to the log file.
fn launch_plan(command: &[std::ffi::OsString], collect: &Collect, log: std::fs::File) -> LaunchPlan {
    let log = std::sync::Arc::new(log);
    LaunchPlan {
        command: command.to_vec(),
        stall_floor_ns: super::stall_floor(collect.threshold),
        stdin: Output::Null,
        stdout: Output::File(log.clone()),
        stderr: Output::File(log),
    }
}

/// The log of a program the live view launched: `$TMPDIR/looptop-<pid>.log`, or
/// `looptop-<pid>-<random>.log` when that name is taken. Always created anew, mode 0600, never
/// through a link: a file, link or FIFO someone planted under the name is left alone.
fn create_log() -> Result<(std::fs::File, PathBuf), UserError> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let names = std::iter::once(dir.join(format!("looptop-{pid}.log")))
        .chain((0..64).map(|_| dir.join(format!("looptop-{pid}-{:08x}.log", crate::safefs::random_u64() as u32))));
    crate::safefs::create_first_free(names, 0o600).map_err(|e| {
        UserError::usage(format!("cannot create a log file for the program's output in {}: {e}", dir.display()))
            .hint("set TMPDIR to a folder you can write to, or use --no-tui")
    })
}

/// What the live view watches.
pub enum Watch<'a> {
    /// A command to launch, its output going to a log file (created once the view is up).
    Logged(Vec<std::ffi::OsString>),
    /// A command to launch, and what to do once it started.
    Launch(LaunchPlan, Box<dyn FnMut(&mut Launched) + 'a>),
    /// A running process.
    Pid(u32),
}

/// A finished live observation.
pub struct LiveRun {
    /// The observation.
    pub observed: Observed,
    /// Where the launched program's output went.
    pub log: Option<PathBuf>,
}

/// Whether the live view can open here: stdin, stdout and stderr are terminals.
pub fn can_show() -> bool {
    crate::sink::is_tty(0) && crate::sink::is_tty(1) && crate::sink::is_tty(2)
}

/// Observes under the live view until the user quits (the view stays after the target exits).
/// The terminal is restored before this returns.
pub fn observe_live(watch: Watch, collect: &Collect, color: bool, window: Duration) -> Result<LiveRun> {
    launch::forward_signals();
    let tui = Tui::start(color).map_err(|e| match e {
        TuiError::NotATerminal(_) => anyhow::Error::from(
            UserError::usage(format!("{e}"))
                .hint("for scripts and pipes use `looptop run --json -- CMD` or `looptop record -o FILE --pid PID`"),
        ),
        e => anyhow::Error::from(UserError::usage(format!("{e}")).hint("use `looptop run --no-tui -- CMD`")),
    })?;
    let mut view = LiveView::new(tui, collect, window);
    let pid = Cell::new(0u32);
    let mut log = None;
    let observed = match watch {
        Watch::Logged(command) => {
            let (file, path) = create_log()?;
            view.live.warnings.push(format!("the program's output goes to {}", path.display()));
            log = Some(path);
            view.launch(&launch_plan(&command, collect, file), collect, &pid, Box::new(|_| {}))?
        }
        Watch::Launch(plan, on_start) => view.launch(&plan, collect, &pid, on_start)?,
        Watch::Pid(p) => {
            pid.set(p);
            attach_and_observe(p, collect, |pl| view.poll(pl, pid.get()))?
        }
    };
    let mut observed = observed;
    view.fail()?;
    if !view.quit && !view.interrupted && !launch::interrupted() {
        let ended = match observed.report.target.exit_code {
            Some(code) => format!(
                "process {} exited with status {code} after {:.1} s",
                observed.report.target.pid,
                observed.report.wall_ms / 1e3
            ),
            None => observed.notes.first().cloned().unwrap_or_else(|| "observation ended".into()),
        };
        view.linger(&mut observed, ended)?;
    }
    drop(view);
    Ok(LiveRun { observed, log })
}

/// The view and what its keys started.
struct LiveView {
    tui: Tui,
    live: Live,
    window: Duration,
    /// Lowest threshold the source keeps stalls for.
    floor_ns: u64,
    quit: bool,
    /// The view launched the command it watches (Ctrl-C then interrupts it, as in a terminal).
    launched: bool,
    /// Ctrl-C sent the launched command SIGINT: the view closes when it exits.
    interrupted: bool,
    /// The terminal failed: stop and say why.
    failed: Option<std::io::Error>,
    /// Whether the view has looked for unnamed JavaScript (once stacks came in).
    looked_for_names: bool,
}

impl LiveView {
    fn new(tui: Tui, collect: &Collect, window: Duration) -> Self {
        LiveView {
            tui,
            live: Live { rate_hz: collect.rate_hz, ..Live::default() },
            window,
            floor_ns: super::stall_floor(collect.threshold),
            quit: false,
            launched: false,
            interrupted: false,
            failed: None,
            looked_for_names: false,
        }
    }

    /// Launches `plan` and observes it under the view.
    fn launch(
        &mut self,
        plan: &LaunchPlan,
        collect: &Collect,
        pid: &Cell<u32>,
        mut on_start: Box<dyn FnMut(&mut Launched) + '_>,
    ) -> Result<Observed> {
        self.launched = true;
        let on_start = |l: &mut Launched| {
            pid.set(l.child.id());
            on_start(l)
        };
        launch_and_observe(plan, collect, on_start, |p| self.poll(p, pid.get()))
    }

    /// One poll of the observation: the view steps, requests are carried out.
    fn poll(&mut self, pipeline: &mut Pipeline, pid: u32) -> Flow {
        let now = now_ns();
        if self.live.pid != pid {
            self.live.pid = pid;
        }
        if self.live.command.is_empty() {
            self.live.command = pipeline
                .session
                .process(pid)
                .map(|p| p.command.clone())
                .unwrap_or_else(|| crate::target::proc::cmdline(pid));
        }
        // A node without a perf map: said live, not only once the view is closed.
        if !self.looked_for_names && !pipeline.session.stacks().is_empty() {
            self.looked_for_names = true;
            if super::unnamed_js(pid, &pipeline.session).is_some() {
                self.tui.say(format!(
                    "node {pid} writes no perf map, so its JavaScript functions are unnamed: restart it with \
                     LD_PRELOAD=$(looptop agent path) (or node --perf-basic-prof)"
                ));
            }
        }
        pipeline.keep_samples(KEEP_STACKS.max(self.window * 2).as_nanos() as u64);
        let requests = match self.tui.step(&pipeline.session, &self.live, now) {
            Ok(r) => r,
            Err(e) => {
                self.failed = Some(e);
                return Flow::Stop;
            }
        };
        for r in requests {
            match self.carry_out(r, &mut pipeline.session, now) {
                Some(Request::Quit) => {
                    self.quit = true;
                    return Flow::Stop;
                }
                Some(Request::Interrupt) if self.launched && pid > 0 => {
                    // What Ctrl-C does in a terminal (the view's raw mode keeps it from the
                    // command): SIGINT, and the command decides. The view closes when it exits.
                    // SAFETY: signalling the command this view launched.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
                    self.interrupted = true;
                    self.tui
                        .say(format!("Ctrl-C: sent SIGINT to {pid}; the view closes when it exits (q stops it now)"));
                }
                Some(Request::Interrupt) => {
                    self.quit = true;
                    return Flow::Stop;
                }
                Some(Request::Record) => self.record(pipeline, now),
                _ => {}
            }
        }
        Flow::Go
    }

    /// Carries out the requests that need only the session (flamegraphs, the threshold; the
    /// view opened the details itself); hands back the others.
    fn carry_out(&mut self, r: Request, session: &mut Session, now: u64) -> Option<Request> {
        match r {
            Request::Flame { stalls_only } => self.flame(session, now, stalls_only),
            Request::Threshold(step) => self.threshold(session, step),
            Request::StallDetail(_) | Request::BlockerDetail(_) => {}
            other => return Some(other),
        }
        None
    }

    /// After the target is gone: the view stays, saying so, until `q`.
    fn linger(&mut self, observed: &mut Observed, ended: String) -> Result<()> {
        self.live.ended = Some(ended);
        self.live.recording = None;
        self.live.warnings.extend(observed.warnings.iter().cloned());
        self.tui.say("q quits".into());
        let end = observed.session.origin_ns() + (observed.report.wall_ms * 1e6) as u64;
        loop {
            for r in self.tui.step(&observed.session, &self.live, end)? {
                match self.carry_out(r, &mut observed.session, end) {
                    Some(Request::Quit | Request::Interrupt) => return Ok(()),
                    Some(Request::Record) => {
                        self.tui.say("the process has exited: there is nothing left to record".into())
                    }
                    _ => {}
                }
            }
            if launch::interrupted() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The terminal error that stopped the view, if any.
    fn fail(&mut self) -> Result<()> {
        match self.failed.take() {
            Some(e) => Err(anyhow::Error::from(e).context("the terminal failed")),
            None => Ok(()),
        }
    }

    /// `f` / `F`: a flamegraph SVG of the last window, in the current folder.
    fn flame(&mut self, session: &Session, now: u64, stalls_only: bool) {
        let since = now.saturating_sub(self.window.as_nanos() as u64);
        let rate = crate::sink::flame::perf_rate(session, self.live.rate_hz);
        let draw = crate::sink::flame::Draw::new(since, now, rate, stalls_only);
        let profile = crate::sink::flame::build_profile(session, &self.live.command, &draw);
        let window = fmt_ms(self.window.as_secs_f64() * 1e3);
        if profile.sample_count() == 0 {
            let why = if stalls_only {
                format!("no stack was sampled inside a stall in the last {window}")
            } else {
                format!("no stack was sampled in the last {window} (without perf the agent samples stalls only)")
            };
            self.tui.say(why);
            return;
        }
        let stem = if stalls_only { "looptop-stalls" } else { "looptop-flame" };
        let (file, path) = match create_free(stem, self.live.pid, "svg") {
            Ok(created) => created,
            Err(e) => return self.tui.say(format!("cannot write a flamegraph here: {e}")),
        };
        let options = crate::sink::flame::Options::new(crate::sink::flame::Format::Svg);
        self.tui.say(match crate::sink::flame::write(&profile, &options, file) {
            Ok(()) => format!("wrote {} ({})", path.display(), profile.subtitle),
            Err(e) => format!("cannot write {}: {e:#}", path.display()),
        });
    }

    /// `r`: starts a recording (from the state now on), or finishes the one under way.
    fn record(&mut self, pipeline: &mut Pipeline, now: u64) {
        if pipeline.recording() {
            let target = Target {
                pid: self.live.pid,
                command: self.live.command.clone(),
                runtime: pipeline.session.runtime(),
                exit_code: None,
                stopped: false,
            };
            let message = match pipeline.take_recorder().map(|r| (r.path().to_path_buf(), r.finish(now, &target, &[])))
            {
                Some((path, Ok(bytes))) => format!(
                    "wrote {} ({}); read it with `looptop report {}`",
                    path.display(),
                    crate::units::fmt_bytes(bytes),
                    path.display()
                ),
                Some((path, Err(e))) => format!("cannot finish {}: {e}", path.display()),
                None => String::new(),
            };
            self.live.recording = None;
            self.tui.say(message);
            return;
        }
        let (file, path) = match create_free("looptop", self.live.pid, "rec") {
            Ok(created) => created,
            Err(e) => return self.tui.say(format!("cannot record here: {e}")),
        };
        let s = &pipeline.session;
        // The recording's window starts now (its first lines carry the state so far).
        let header = Header::new(now, s.threshold_ns(), self.live.pid, &self.live.command, self.live.rate_hz, s.mode());
        let started =
            Recorder::new(file, &path, &header).map_err(anyhow::Error::from).and_then(|r| pipeline.start_recording(r));
        match started {
            Ok(()) => {
                self.live.recording = Some(path.display().to_string());
                self.tui.say(format!("recording to {} (r stops)", path.display()));
            }
            Err(e) => self.tui.say(format!("cannot record to {}: {e:#}", path.display())),
        }
    }

    /// `+` / `-`: the next stall threshold up or down, never under the source's floor.
    fn threshold(&mut self, session: &mut Session, step: i8) {
        let cur = session.threshold_ns();
        let ms = |ns: u64| ns / 1_000_000;
        let next = if step > 0 {
            THRESHOLDS_MS.iter().map(|&m| m * 1_000_000).find(|&t| t > cur)
        } else {
            THRESHOLDS_MS.iter().rev().map(|&m| m * 1_000_000).find(|&t| t < cur)
        };
        match next {
            Some(t) if t >= self.floor_ns => {
                session.set_threshold(t);
                self.tui.say(format!("stall threshold {} (was {})", fmt_ms(ms(t) as f64), fmt_ms(ms(cur) as f64)));
            }
            Some(_) => self.tui.say(format!(
                "the threshold cannot go under {}: shorter ticks were not kept one by one",
                fmt_ms(self.floor_ns as f64 / 1e6)
            )),
            None => self.tui.say(format!("the threshold is already at {}", fmt_ms(ms(cur) as f64))),
        }
    }
}

/// Creates `stem-PID-N.ext` in the current folder, with the first N not taken (`O_EXCL`: a file
/// or link already there is never opened).
fn create_free(stem: &str, pid: u32, ext: &str) -> std::io::Result<(std::fs::File, PathBuf)> {
    let names = (1..10_000).map(|n| PathBuf::from(format!("{stem}-{pid}-{n}.{ext}")));
    crate::safefs::create_first_free(names, 0o666)
}
