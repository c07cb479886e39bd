//! Reading a recording (`looptop.recording/1`, see [`crate::sink::record`]) back into a
//! [`Session`]: the same pipeline as a live run, so `report` prints what `run` printed.
//!
//! A recording is read as the file really is, not as it claims to be: lines are bytes of at
//! most [`MAX_LINE`] ([`lines`]), frame ids are looked up among the frames the file defined
//! (never used to size anything), and a line that cannot be used (not UTF-8, not JSON, an
//! unknown kind, a stack naming a frame never defined, too long) is skipped and counted while
//! everything else is kept. Only a file whose first line is not a recording header is refused,
//! and that is decided from its first line alone.

pub mod lines;

use crate::analysis::report::{Report, Target};
use crate::analysis::stacks::StoredSample;
use crate::analysis::Session;
use crate::event::{Event, LoopId};
use crate::sink::record::{End, Header, Line, SCHEMA};
pub use lines::MAX_LINE;
use lines::{Item, Lines};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The name of a loop whose `loop_started` line could not be read.
pub const UNNAMED: &str = "[unknown]";

/// Frames read of one stack (innermost first; perf and BPF take at most 127 of each of user and
/// kernel, the agent 120): a deeper one is damage, skipped.
const MAX_FRAMES: usize = 1024;
/// One stack line's count (what the kernel counted in one poll): more is damage, skipped.
const MAX_COUNT: u64 = 1 << 32;
/// Loops read (a run that follows hundreds of processes has a few per process): memory for each
/// loop's histograms stays bounded whatever a file claims.
const MAX_LOOPS: usize = 2048;

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
    /// Not a regular file (a device such as `/dev/zero`, a FIFO, a folder).
    #[error("{path} is {what}, not a recording file")]
    NotFile {
        /// The file.
        path: PathBuf,
        /// What it is instead ("a folder", "a character device" …).
        what: &'static str,
    },
    /// The first line is not a recording header.
    #[error("{path} is not a looptop recording (its first line is not a '{SCHEMA}' header)")]
    NotRecording {
        /// The file.
        path: PathBuf,
    },
    /// A header of this version that cannot be read.
    #[error("{path} is a '{SCHEMA}' recording whose header line is damaged ({why})")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
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

/// Why bytes could not be read as a recording (a [`RecordingError`] without the file's name).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The first line is not a recording header.
    #[error("the first line is not a '{SCHEMA}' header")]
    NotRecording,
    /// A recording of another format version.
    #[error("a recording of format '{0}'")]
    Version(String),
    /// A header of this format that cannot be read.
    #[error("its header line is damaged ({0})")]
    BadHeader(String),
}

impl ReadError {
    fn at(self, path: &Path) -> RecordingError {
        let path = path.to_path_buf();
        match self {
            ReadError::Io(source) => RecordingError::Io { path, source },
            ReadError::NotRecording => RecordingError::NotRecording { path },
            ReadError::Version(found) => RecordingError::Version { path, found },
            ReadError::BadHeader(why) => RecordingError::BadHeader { path, why },
        }
    }
}

/// Lines of a recording that were not used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// How many.
    pub count: u64,
    /// The first one: its number (1-based) and why it was skipped.
    pub first: Option<(u64, String)>,
}

/// A loaded recording.
pub struct Replay {
    /// Its header.
    pub header: Header,
    /// The session it replays into.
    pub session: Session,
    /// Its end line; `None` when the file was cut short (a killed recorder).
    pub end: Option<End>,
    /// Lines skipped because they could not be used.
    pub skipped: Skipped,
    /// Lines in the file.
    pub lines: u64,
    /// Time of the last event seen (ns).
    pub last_ns: u64,
    /// What the observation warned of when it was recorded.
    pub recorded_warnings: Vec<String>,
}

impl Replay {
    /// The target as recorded.
    pub fn target(&self) -> Target {
        Target {
            pid: self.header.pid,
            command: self.header.command.clone(),
            runtime: self.end.as_ref().map_or_else(|| self.session.runtime(), |e| runtime_name(&e.runtime)),
            exit_code: self.end.as_ref().and_then(|e| e.exit_code),
            stopped: self.end.as_ref().is_some_and(|e| e.stopped),
        }
    }

    /// When the recording ends (ns): its end line, or the last event of a truncated file.
    pub fn end_ns(&self) -> u64 {
        self.end.as_ref().map_or(self.last_ns, |e| e.at_ns)
    }

    /// The report of the recording, with its [`Replay::warnings`].
    pub fn report(&self, path: &Path) -> Report {
        let mut report = self.session.report(self.target(), self.end_ns());
        report.warnings = self.warnings(path);
        report
    }

    /// Warnings for the user: lines skipped, and a file that ends without its end line.
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        let mut out = self.warnings_raw(path);
        out.iter_mut().for_each(|w| *w = crate::units::printable(std::mem::take(w)));
        out
    }

    /// [`Replay::warnings`], before the file's own bytes in them are made printable.
    fn warnings_raw(&self, path: &Path) -> Vec<String> {
        let mut out = self.recorded_warnings.clone();
        if let Some((line, why)) = &self.skipped.first {
            let n = self.skipped.count;
            out.push(format!(
                "{}: skipped {n} unreadable line{} of {} (first: line {line}, {why}); everything else is shown",
                path.display(),
                if n == 1 { "" } else { "s" },
                self.lines
            ));
        }
        let floor = looptop_abi::stall_floor_ns(self.header.stall_threshold_ns);
        if self.session.threshold_ns() < floor {
            out.push(format!(
                "{} kept ticks one by one only from {} (it was recorded with a {} threshold): stalls shorter than \
                 that are not listed under this {} threshold, though the tick and lag percentiles count every tick; \
                 record with --stall-threshold {}ms to see them",
                path.display(),
                crate::units::fmt_ms(floor as f64 / 1e6),
                crate::units::fmt_ms(self.header.stall_threshold_ns as f64 / 1e6),
                crate::units::fmt_ms(self.session.threshold_ns() as f64 / 1e6),
                self.session.threshold_ns() as f64 / 1e6,
            ));
        }
        if self.end.is_none() {
            out.push(format!(
                "{} ends early (the recorder was stopped before it finished): showing everything up to {:.1} s",
                path.display(),
                self.last_ns.saturating_sub(self.header.origin_ns) as f64 / 1e9
            ));
        }
        out
    }

    fn skip(&mut self, line: u64, why: impl FnOnce() -> String) {
        self.skipped.count += 1;
        if self.skipped.first.is_none() {
            self.skipped.first = Some((line, why()));
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

/// Loads a recording file into a session. Only regular files are read: a device, a FIFO or a
/// folder is refused before anything is read from it. `-` is stdin (`record -o - | report -`).
pub fn load(path: &Path) -> Result<Replay, RecordingError> {
    if path.as_os_str() == "-" {
        return read_from(std::io::stdin().lock()).map_err(|e| e.at(path));
    }
    let file = open(path)?;
    read_from(std::io::BufReader::with_capacity(1 << 16, file)).map_err(|e| e.at(path))
}

/// Opens `path` without blocking (a FIFO with no writer) and without passing the descriptor to
/// children; refuses what is not a regular file.
fn open(path: &Path) -> Result<std::fs::File, RecordingError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let io = |source| RecordingError::Io { path: path.to_path_buf(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let kind = file.metadata().map_err(io)?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(RecordingError::NotFile { path: path.to_path_buf(), what })
}

/// Reads a recording from any buffered reader (a file, a slice of bytes).
///
/// Memory follows what the input holds: no line is held past [`MAX_LINE`] bytes, and a header
/// is looked for in the first line only.
pub fn read_from(reader: impl BufRead) -> Result<Replay, ReadError> {
    let mut lines = Lines::new(reader, MAX_LINE);
    let header = read_header(&mut lines)?;
    let mut session = Session::new(header.origin_ns, header.stall_threshold_ns);
    // A recording covers its own window: what its first lines say of the time before (a
    // recording of an attached process, or one the live view started mid-way) is left out.
    session.count_from(header.origin_ns);
    session.set_mode(if header.mode == "perf" { "perf" } else { "agent" });
    let mut replay = Replay {
        header,
        session: Session::new(0, 0),
        end: None,
        skipped: Skipped::default(),
        lines: 1,
        last_ns: 0,
        recorded_warnings: Vec::new(),
    };
    // Frame ids of the file → ids in the session.
    let mut frames: HashMap<u32, u32> = HashMap::new();
    let mut samples: Vec<(u32, u32, StoredSample)> = Vec::new();
    let mut loops: HashSet<LoopId> = HashSet::new();
    let mut stall_ends: HashMap<LoopId, u64> = HashMap::new();
    while let Some((n, item)) = lines.next_line()? {
        replay.lines = n;
        let (text, terminated) = match item {
            Item::Line { text, terminated } => (text, terminated),
            Item::TooLong { .. } => {
                replay.skip(n, || format!("longer than {} MiB", MAX_LINE >> 20));
                continue;
            }
        };
        if text.trim_ascii().is_empty() {
            continue;
        }
        if replay.end.is_some() {
            replay.skip(n, || "after the end line".into());
            continue;
        }
        let Some(line) = parse(text) else {
            // A last line cut short by a killed recorder is what "ends early" says.
            if terminated {
                replay.skip(n, || why_unreadable(text));
            }
            continue;
        };
        match line {
            Parsed::Line(Line::Frame { id, frame, source }) => {
                frames.insert(id, session.stacks_mut().intern(frame, |_| source));
            }
            Parsed::Line(Line::Stack { pid, tid, t_ns, weight_ns, origin, tick_ns, off_cpu, frames: ids, count }) => {
                if ids.len() > MAX_FRAMES {
                    replay.skip(n, || format!("a stack of {} frames (at most {MAX_FRAMES} are read)", ids.len()));
                    continue;
                }
                if count > MAX_COUNT {
                    replay.skip(n, || format!("a stack counted {count} times in one line"));
                    continue;
                }
                let Some(stack) = ids.iter().map(|f| frames.get(f).copied()).collect::<Option<Vec<u32>>>() else {
                    replay.skip(n, || "a stack naming a frame the file does not define before it".into());
                    continue;
                };
                replay.last_ns = replay.last_ns.max(t_ns);
                samples.push((pid, tid, StoredSample { t_ns, weight_ns, origin, tick_ns, off_cpu, stack, count }));
            }
            Parsed::Line(Line::LostSamples { count }) => session.lose_samples(count),
            Parsed::Line(Line::End(end)) => replay.end = Some(end),
            Parsed::Line(Line::Warning { text }) => replay.recorded_warnings.push(text),
            Parsed::Line(Line::Recording(_)) => replay.skip(n, || "a second header".into()),
            Parsed::Event(Event::Sample(_)) => {
                replay.skip(n, || "a 'sample' line (recordings keep stacks as 'stack' lines)".into())
            }
            Parsed::Event(Event::Stall { id, start_ns, .. }) if stall_ends.get(&id).is_some_and(|&e| start_ns < e) => {
                // Ticks of one thread follow one another: stalls that overlap are not a loop's, and
                // each would be classified from every sample under it.
                replay.skip(n, || "a stall that starts before its loop's previous stall ended".into())
            }
            Parsed::Event(ev) => {
                if let Event::Stall { id, start_ns, duration_ns } = &ev {
                    stall_ends.insert(*id, start_ns.saturating_add(*duration_ns));
                }
                replay.last_ns = replay.last_ns.max(event_time(&ev));
                // A loop whose start line was lost is still a loop: its id tells when it began.
                let new_loop = match &ev {
                    Event::Totals { id, .. }
                    | Event::Stall { id, .. }
                    | Event::LoopEnded { id, .. }
                    | Event::LoopStarted { id, .. } => !loops.contains(id),
                    _ => false,
                };
                if new_loop && loops.len() >= MAX_LOOPS {
                    replay.skip(n, || format!("a loop beyond the first {MAX_LOOPS}"));
                    continue;
                }
                if let Event::Totals { id, .. } | Event::Stall { id, .. } | Event::LoopEnded { id, .. } = &ev {
                    if loops.insert(*id) {
                        session.handle(Event::LoopStarted { id: *id, name: UNNAMED.into(), start_ns: id.since_ns });
                    }
                } else if let Event::LoopStarted { id, .. } = &ev {
                    loops.insert(*id);
                }
                session.handle(ev);
            }
        }
    }
    // Samples go in by thread and time at once: a file that lists them out of order costs a
    // sort, not an insertion each.
    samples.sort_by_key(|(pid, tid, s)| (*pid, *tid, s.t_ns));
    for (pid, tid, s) in samples {
        session.stacks_mut().push_stored(pid, tid, s);
    }
    replay.session = session;
    Ok(replay)
}

/// The header, from the first line alone: a file that does not start with a JSON object is
/// refused at its first byte, one whose first line is longer than [`MAX_LINE`] without reading
/// further.
fn read_header(lines: &mut Lines<impl BufRead>) -> Result<Header, ReadError> {
    if lines.peek()?.first() != Some(&b'{') {
        return Err(ReadError::NotRecording);
    }
    let Some(text) = lines.first_line()? else {
        return Err(ReadError::NotRecording);
    };
    let header = match serde_json::from_slice::<Line>(text) {
        Ok(Line::Recording(h)) => h,
        parsed => {
            #[derive(serde::Deserialize)]
            struct Schema {
                schema: String,
            }
            return match serde_json::from_slice::<Schema>(text) {
                Ok(s) if s.schema == SCHEMA => Err(ReadError::BadHeader(match parsed {
                    Err(e) => e.to_string(),
                    Ok(_) => "not a header".into(),
                })),
                Ok(s) if s.schema.starts_with("looptop.recording/") => Err(version(s.schema)),
                _ => Err(ReadError::NotRecording),
            };
        }
    };
    if header.schema != SCHEMA {
        return Err(version(header.schema));
    }
    let mut header = header;
    header.command = header.command.into_iter().map(crate::units::printable).collect();
    Ok(header)
}

/// A recording of another version, named only when the name is one (the file's bytes never reach
/// the terminal).
fn version(schema: String) -> ReadError {
    if schema.len() <= 64 && schema.bytes().all(|b| b.is_ascii_graphic()) {
        ReadError::Version(schema)
    } else {
        ReadError::NotRecording
    }
}

/// A line of a recording: one of its own lines, or an event.
enum Parsed {
    Line(Line),
    Event(Event),
}

/// The tags of [`Line`]'s variants; every other tag is an [`Event`]'s.
const LINE_TAGS: [&str; 6] = ["recording", "frame", "stack", "lost_samples", "warning", "end"];

fn parse(text: &[u8]) -> Option<Parsed> {
    // looptop writes the tag first: one parse decides. Other lines are tried both ways.
    let tag = text.strip_prefix(b"{\"t\":\"").and_then(|rest| rest.split(|&b| b == b'"').next());
    match tag {
        Some(tag) if LINE_TAGS.iter().any(|t| t.as_bytes() == tag) => {
            serde_json::from_slice(text).ok().map(Parsed::Line)
        }
        Some(_) => serde_json::from_slice(text).ok().map(Parsed::Event),
        None => match serde_json::from_slice::<Line>(text) {
            Ok(line) => Some(Parsed::Line(line)),
            Err(_) => serde_json::from_slice(text).ok().map(Parsed::Event),
        },
    }
}

/// Why a line could not be read, for the warning (worked out for the first such line only).
fn why_unreadable(text: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(text) else {
        return "not valid UTF-8".into();
    };
    let Ok(object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) else {
        return "not a JSON object".into();
    };
    // The kind is shown only when it looks like one: the file's bytes never reach the terminal.
    let known = |k: &&str| k.len() <= 40 && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    match object.get("t").and_then(|t| t.as_str()).filter(known) {
        Some(kind) => format!("a '{kind}' line looptop cannot read"),
        None => "a JSON object of no kind looptop knows".into(),
    }
}

/// The time an event happened, where it has one.
fn event_time(ev: &Event) -> u64 {
    match ev {
        Event::Totals { totals, .. } => totals.at_ns,
        Event::Stall { start_ns, duration_ns, .. } => start_ns.saturating_add(*duration_ns),
        Event::LoopStarted { start_ns, .. } => *start_ns,
        Event::LoopEnded { at_ns, .. } | Event::ProcessExited { at_ns, .. } => *at_ns,
        Event::Gc { start_ns, duration_ns, .. } | Event::Alloc { start_ns, duration_ns, .. } => {
            start_ns.saturating_add(*duration_ns)
        }
        Event::PoolSample { at_ns, .. } => *at_ns,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
