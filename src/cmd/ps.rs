//! `looptop ps`: processes with a live agent segment.

use crate::analysis::Session;
use crate::event::Event;
use crate::plan::PsPlan;
use crate::sink::output::OutputFile;
use crate::source::agent::{remove_dead_segments, AgentSource, Selector};
use crate::source::{now_ns, segment};
use anyhow::Result;
use serde::Serialize;
use std::io::Write;

/// One row of `looptop ps`.
#[derive(Debug, Serialize)]
struct Row {
    pid: u32,
    runtime: &'static str,
    loops: usize,
    utilization: f64,
    stalls: usize,
    uptime_s: f64,
    command: Vec<String>,
}

/// Runs `looptop ps`.
pub fn execute(plan: PsPlan) -> Result<u8> {
    let json_out = match &plan.json {
        Some(to) => Some(OutputFile::json(to, "the JSON rows")?),
        None => None,
    };
    remove_dead_segments();
    let threshold = plan.observe.stall_threshold.as_nanos() as u64;
    // One listing, and one source per process whose segment is believed: names anyone can
    // plant (FIFOs, junk, a second name for a real pid) add neither rows nor a listing each.
    let mut pids = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    for (pid, path) in segment::list(&segment::shm_dir()) {
        match segment::Segment::open(&path, segment::Owner::Pid(pid)) {
            Ok(_) => {
                pids.insert(pid);
            }
            Err(e) if !e.is_noise() => refused.push(e.to_string()),
            Err(_) => {}
        }
    }
    let mut watched: Vec<(u32, AgentSource, Session)> = pids
        .into_iter()
        .map(|pid| (pid, AgentSource::new(Selector::Pid(pid)), Session::new(now_ns(), threshold)))
        .collect();
    let mut events: Vec<Event> = Vec::new();
    let mut read_all = |watched: &mut Vec<(u32, AgentSource, Session)>| {
        for (_, source, session) in watched.iter_mut() {
            source.poll(now_ns(), &mut events);
            events.drain(..).for_each(|e| session.handle(e));
        }
    };
    read_all(&mut watched);
    std::thread::sleep(plan.window);
    read_all(&mut watched);
    let now = now_ns();
    let mut rows = Vec::new();
    let mut errors = refused;
    for (pid, source, session) in &watched {
        errors.extend(source.errors.iter().map(|e| e.to_string()));
        let Some(info) = session.process(*pid) else { continue };
        if session.exited(*pid) {
            continue;
        }
        rows.push(Row {
            pid: *pid,
            runtime: crate::target::proc::runtime_of(&info.exe, &info.command),
            loops: session.live_loops(*pid),
            utilization: session.recent_utilization(*pid),
            stalls: session.stall_count(),
            uptime_s: now.saturating_sub(info.start_ns) as f64 / 1e9,
            command: info.command.clone(),
        });
    }
    let mut out = std::io::stdout().lock();
    errors.sort();
    errors.dedup();
    // A folder anyone can fill: a few lines say what is there, not ten thousand.
    const SHOWN: usize = 5;
    for e in errors.iter().take(SHOWN) {
        eprintln!("looptop: warning: {e}");
    }
    if errors.len() > SHOWN {
        eprintln!("looptop: warning: … and {} more files in the segment folder like these", errors.len() - SHOWN);
    }
    if let Some(json) = &json_out {
        json.write_with(|w| {
            serde_json::to_writer_pretty(&mut *w, &rows)?;
            Ok(writeln!(w)?)
        })?;
        if json.is_stdout() {
            return Ok(crate::error::exit::OK);
        }
    }
    if rows.is_empty() {
        eprintln!(
            "looptop: no process runs the looptop agent (start one with `looptop run -- CMD`, or \
             LD_PRELOAD=$(looptop agent path) CMD)"
        );
        return Ok(crate::error::exit::OK);
    }
    writeln!(
        out,
        "{:>8}  {:<7} {:>5} {:>6} {:>7} {:>9}  COMMAND",
        "PID", "RUNTIME", "LOOPS", "UTIL", "STALLS", "UPTIME"
    )?;
    // On a terminal a row is one line, as ps(1) keeps it: the command is cut to the width left.
    let room = super::is_tty(1)
        .then(|| crossterm::terminal::size().ok())
        .flatten()
        .filter(|&(w, _)| w > 0)
        .map(|(w, _)| (w as usize).saturating_sub(BEFORE_COMMAND).max(12));
    for r in rows {
        writeln!(
            out,
            "{:>8}  {:<7} {:>5} {:>5.1}% {:>7} {:>9}  {}",
            r.pid,
            r.runtime,
            r.loops,
            r.utilization * 100.0,
            r.stalls,
            crate::units::fmt_ms(r.uptime_s * 1000.0),
            fit(&r.command.join(" "), room)
        )?;
    }
    Ok(crate::error::exit::OK)
}

/// Columns before COMMAND in a row.
const BEFORE_COMMAND: usize = 50;

/// `text` cut to `room` characters (the last one `…`) when it is longer; all of it without a limit.
fn fit(text: &str, room: Option<usize>) -> String {
    match room {
        Some(n) if text.chars().count() > n => text.chars().take(n.saturating_sub(1)).chain(['…']).collect(),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_command_is_cut_to_the_room_left() {
        assert_eq!(super::fit("node server.js", Some(20)), "node server.js");
        assert_eq!(super::fit("node /srv/app/server.js --port 8080", Some(12)), "node /srv/a…");
        assert_eq!(super::fit("node /srv/app/server.js --port 8080", None), "node /srv/app/server.js --port 8080");
    }
}
