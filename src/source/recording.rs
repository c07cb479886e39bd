//! Reading a recording (`looptop.recording/1`, see [`crate::sink::record`]) back into a
//! [`Session`]: the same pipeline as a live run, so `report` prints what `run` printed.

use crate::analysis::report::Target;
use crate::analysis::stacks::StoredSample;
use crate::analysis::Session;
use crate::event::Event;
use crate::sink::record::{End, Header, Line, SCHEMA};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Why a file could not be read as a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// Could not open or read it.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The first line is not a recording header.
    #[error("{path} is not a looptop recording (its first line is not a '{SCHEMA}' header)")]
    NotRecording {
        /// The file.
        path: PathBuf,
    },
    /// A recording of another format version.
    #[error("{path} is a recording of format '{found}'; this looptop reads '{SCHEMA}'")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: String,
    },
}

/// A loaded recording.
pub struct Replay {
    /// Its header.
    pub header: Header,
    /// The session it replays into.
    pub session: Session,
    /// Its end line; `None` when the file was cut short (a killed recorder).
    pub end: Option<End>,
    /// Lines that could not be read (a torn last line, or corruption), with the first one's
    /// number.
    pub bad_lines: (u64, Option<u64>),
    /// Time of the last event seen (ns).
    pub last_ns: u64,
}

impl Replay {
    /// The target as recorded.
    pub fn target(&self) -> Target {
        Target {
            pid: self.header.pid,
            command: self.header.command.clone(),
            runtime: self.end.as_ref().map_or_else(|| self.session.runtime(), |e| runtime_name(&e.runtime)),
            exit_code: self.end.as_ref().and_then(|e| e.exit_code),
        }
    }

    /// When the recording ends (ns): its end line, or the last event of a truncated file.
    pub fn end_ns(&self) -> u64 {
        self.end.as_ref().map_or(self.last_ns, |e| e.at_ns)
    }

    /// A warning for the user when the file was not complete.
    pub fn warning(&self, path: &Path) -> Option<String> {
        let (bad, first) = self.bad_lines;
        match (&self.end, first) {
            (None, _) => Some(format!(
                "{} ends early (the recorder was stopped before it finished): showing everything up to {:.1} s",
                path.display(),
                self.last_ns.saturating_sub(self.header.origin_ns) as f64 / 1e9
            )),
            (Some(_), Some(line)) => {
                Some(format!("{}: skipped {bad} unreadable line(s), the first at line {line}", path.display()))
            }
            _ => None,
        }
    }
}

fn runtime_name(s: &str) -> &'static str {
    match s {
        "node" => "node",
        "python" => "python",
        _ => "native",
    }
}

/// Loads a recording into a session.
pub fn load(path: &Path) -> Result<Replay, RecordingError> {
    let io = |source| RecordingError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut lines = std::io::BufReader::with_capacity(1 << 16, file).lines();
    let not = || RecordingError::NotRecording { path: path.to_path_buf() };
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => return Err(not()),
        Some(Err(e)) => return Err(io(e)),
        None => return Err(not()),
    };
    let header = match serde_json::from_str::<Line>(&first) {
        Ok(Line::Recording(h)) => h,
        _ => {
            let v: serde_json::Value = serde_json::from_str(&first).map_err(|_| not())?;
            return match v.get("schema").and_then(|s| s.as_str()) {
                Some(s) if s.starts_with("looptop.recording/") => {
                    Err(RecordingError::Version { path: path.to_path_buf(), found: s.to_string() })
                }
                _ => Err(not()),
            };
        }
    };
    if header.schema != SCHEMA {
        return Err(RecordingError::Version { path: path.to_path_buf(), found: header.schema });
    }
    let mut session = Session::new(header.origin_ns, header.stall_threshold_ns);
    session.set_mode(if header.mode == "perf" { "perf" } else { "agent" });
    let mut ids: Vec<u32> = Vec::new();
    let mut replay = Replay { header, session: Session::new(0, 0), end: None, bad_lines: (0, None), last_ns: 0 };
    let mut n = 1u64;
    for line in lines {
        n += 1;
        let Ok(line) = line else {
            replay.bad(n);
            break;
        };
        if replay.end.is_some() || line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Frame { id, frame, source }) => {
                let local = session.stacks_mut().intern(frame, |_| source);
                if ids.len() <= id as usize {
                    ids.resize(id as usize + 1, 0);
                }
                ids[id as usize] = local;
            }
            Ok(Line::Stack { pid, tid, t_ns, weight_ns, origin, tick_ns, off_cpu, frames }) => {
                let Some(stack) = frames.iter().map(|&f| ids.get(f as usize).copied()).collect::<Option<Vec<u32>>>()
                else {
                    replay.bad(n);
                    continue;
                };
                replay.last_ns = replay.last_ns.max(t_ns);
                let s = StoredSample { t_ns, weight_ns, origin, tick_ns, off_cpu, stack };
                session.stacks_mut().push_stored(pid, tid, s);
            }
            Ok(Line::LostSamples { count }) => session.lose_samples(count),
            Ok(Line::End(end)) => replay.end = Some(end),
            Ok(Line::Recording(_)) => replay.bad(n),
            Err(_) => match serde_json::from_str::<Event>(&line) {
                Ok(ev) => {
                    replay.last_ns = replay.last_ns.max(event_time(&ev));
                    session.handle(ev);
                }
                Err(_) => replay.bad(n),
            },
        }
    }
    replay.session = session;
    Ok(replay)
}

impl Replay {
    fn bad(&mut self, line: u64) {
        self.bad_lines.0 += 1;
        self.bad_lines.1.get_or_insert(line);
    }
}

/// The time an event happened, where it has one.
fn event_time(ev: &Event) -> u64 {
    match ev {
        Event::Totals { totals, .. } => totals.at_ns,
        Event::Stall { start_ns, duration_ns, .. } => start_ns + duration_ns,
        Event::LoopStarted { start_ns, .. } => *start_ns,
        Event::LoopEnded { at_ns, .. } | Event::ProcessExited { at_ns, .. } => *at_ns,
        Event::Gc { start_ns, duration_ns, .. } | Event::Alloc { start_ns, duration_ns, .. } => start_ns + duration_ns,
        Event::PoolSample { at_ns, .. } => *at_ns,
        _ => 0,
    }
}
