//! Reading a recording (its format: [`crate::recording`]) back into a [`Session`]: the same
//! pipeline as a live run, so `report` prints what `run` printed.
//!
//! A recording is read as the file really is, not as it claims to be: blocks are checked
//! against their checksum and bounded ([`crate::recording::block`]), lines of the JSON-lines
//! format are bytes of at most [`MAX_LINE`] ([`lines`]), frame and stack ids are looked up among
//! those the file defined (never used to size anything), and a record that cannot be used (not
//! JSON, an unknown kind, a stack naming a frame never defined, too long) is skipped and counted
//! while everything else is kept. A file cut short reads up to its last complete block (or
//! line). Only a file that does not start as a recording is refused, and that is decided from
//! its first bytes.

mod feed;
pub mod lines;
mod v1;
mod v2;

use crate::analysis::report::{Report, Target};
use crate::analysis::Session;
use crate::recording::{End, Header, MAGIC, SCHEMA, SCHEMA_V1};
pub use feed::Window;
pub use lines::MAX_LINE;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The name of a loop whose `loop_started` record could not be read.
pub const UNNAMED: &str = "[unknown]";

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
    /// It does not start as a recording.
    #[error("{path} is not a looptop recording (it does not start with a '{SCHEMA}' or '{SCHEMA_V1}' header)")]
    NotRecording {
        /// The file.
        path: PathBuf,
    },
    /// A header of a known version that cannot be read.
    #[error("{path} is a looptop recording whose header is damaged ({why})")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A recording of another format version.
    #[error("{path} is a recording of format '{found}'; this looptop reads '{SCHEMA}' and '{SCHEMA_V1}'")]
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
    /// It does not start as a recording.
    #[error("it does not start with a '{SCHEMA}' or '{SCHEMA_V1}' header")]
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

/// Lines (or records) of a recording that were not used.
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
    /// Lines (records) skipped because they could not be used.
    pub skipped: Skipped,
    /// Lines in the file (records, in a binary recording).
    pub lines: u64,
    /// What [`Replay::lines`] counts: `line` or `record`.
    pub unit: &'static str,
    /// Where a binary recording was found damaged (its byte offset, and why): what comes
    /// before is shown, the rest could not be read.
    pub damaged: Option<(u64, String)>,
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
            let unit = self.unit;
            out.push(format!(
                "{}: skipped {n} unreadable {unit}{} of {} (first: {unit} {line}, {why}); everything else is shown",
                path.display(),
                if n == 1 { "" } else { "s" },
                self.lines
            ));
        }
        if let Some((at, why)) = &self.damaged {
            out.push(format!(
                "{} is damaged at byte {at} ({why}): showing everything before it, up to {:.1} s",
                path.display(),
                self.last_ns.saturating_sub(self.header.origin_ns) as f64 / 1e9
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
        if self.end.is_none() && self.damaged.is_none() {
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

/// How a recording is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Only the samples of this window (ns from the recording's start, inclusive); only the
    /// blocks it needs are read.
    pub window: Option<(u64, u64)>,
    /// Stalls from this threshold (ns) instead of the recorded one.
    pub threshold_ns: Option<u64>,
    /// Keep every sample one by one (a speedscope profile's timelines), never folding.
    pub keep_all: bool,
}

/// Loads a recording file into a session. Only regular files are read: a device, a FIFO or a
/// folder is refused before anything is read from it. `-` is stdin (`record -o - | report -`).
pub fn load(path: &Path, how: &Load) -> Result<Replay, RecordingError> {
    if path.as_os_str() == "-" {
        return read_with(std::io::stdin().lock(), how).map_err(|e| e.at(path));
    }
    let mut file = std::io::BufReader::with_capacity(1 << 16, open(path)?);
    let magic = file.fill_buf().map_err(|source| RecordingError::Io { path: path.to_path_buf(), source })?;
    if magic.first() == Some(&MAGIC[0]) {
        return v2::read(&mut v2::File(file), how).map_err(|e| e.at(path));
    }
    read_with(file, how).map_err(|e| e.at(path))
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

/// Reads a whole recording from any buffered reader (a file, stdin, a slice of bytes), of either
/// format, told apart by its first byte.
pub fn read_from(reader: impl BufRead) -> Result<Replay, ReadError> {
    read_with(reader, &Load::default())
}

/// [`read_from`], read as `how` says.
fn read_with(mut reader: impl BufRead, how: &Load) -> Result<Replay, ReadError> {
    match reader.fill_buf()?.first() {
        Some(&b) if b == MAGIC[0] => v2::read(&mut v2::Stream(reader), how),
        Some(b'{') => v1::read(reader, how),
        _ => Err(ReadError::NotRecording),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_v2;
