//! Recordings (`looptop record`): the event stream of a session written as JSON lines, so that
//! `looptop report` and `looptop flame --from` replay exactly what was seen.
//!
//! Format `looptop.recording/1`, one JSON object per line, each with a tag `t`:
//! - first line `{"t":"recording","schema":"looptop.recording/1",…}`: [`Header`];
//! - [`crate::event::Event`]s as they came (`process`, `loop_started`, `totals`, `stall`, `gc`,
//!   `pool_sample`, … — the `Event` enum's serde form; `totals` at most once a second per loop
//!   and once at the end);
//! - `{"t":"frame","id":N,"frame":{…},"source":"…"}` before the first stack that uses frame N;
//! - `{"t":"stack","pid":…,"tid":…,"t_ns":…,"weight_ns":…,"origin":"watchdog|perf-cpu|perf-off-cpu",
//!   "tick_ns":…,"off_cpu":{…}|null,"frames":[ids, innermost first]}`: one sample;
//! - `{"t":"lost_samples","count":N}`;
//! - last line `{"t":"end",…}` ([`End`]) when the recording finished properly.
//!
//! Lines are flushed at every poll: a killed recorder leaves a file that loads up to the last
//! complete line (`report` warns that it is truncated).

use crate::analysis::report::Target;
use crate::analysis::stacks::{Stacks, StoredSample};
use crate::event::{Event, LoopId, OffCpu, SampleOrigin};
use crate::symbolize::Frame;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Schema of a recording.
pub const SCHEMA: &str = "looptop.recording/1";

/// The first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// looptop's version.
    pub looptop: String,
    /// When observation began (ns, `CLOCK_MONOTONIC`): report times count from here.
    pub origin_ns: u64,
    /// The stall threshold (ns).
    pub stall_threshold_ns: u64,
    /// The target's pid.
    pub pid: u32,
    /// The target's command line.
    pub command: Vec<String>,
    /// Stack sample rate of perf (Hz), 0 without perf.
    pub rate_hz: u64,
    /// Where ticks came from: `agent` or `perf` (absent in recordings before perf mode: agent).
    #[serde(default = "agent_mode")]
    pub mode: String,
}

impl Header {
    /// The header of a recording made now by this looptop.
    pub fn new(
        origin_ns: u64,
        stall_threshold_ns: u64,
        pid: u32,
        command: &[String],
        rate_hz: u64,
        mode: &str,
    ) -> Self {
        Header {
            schema: SCHEMA.into(),
            looptop: env!("CARGO_PKG_VERSION").into(),
            origin_ns,
            stall_threshold_ns,
            pid,
            command: command.to_vec(),
            rate_hz,
            mode: mode.into(),
        }
    }
}

fn agent_mode() -> String {
    "agent".into()
}

/// The last line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    /// When observation ended (ns).
    pub at_ns: u64,
    /// The target, with its exit code when it exited.
    pub exit_code: Option<i32>,
    /// `node`, `python` or `native`.
    pub runtime: String,
    /// looptop stopped the launched command itself (its `-d` ran out, or `q` in the live view).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

/// The lines that are not [`Event`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Line {
    /// The first line.
    Recording(Header),
    /// A frame of the table.
    Frame {
        /// Its id.
        id: u32,
        /// The frame.
        frame: Frame,
        /// Its source line, where the file was readable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// A stack sample.
    Stack {
        /// Process.
        pid: u32,
        /// Thread.
        tid: u32,
        /// When (ns).
        t_ns: u64,
        /// Time it stands for (ns).
        weight_ns: u64,
        /// What took it.
        origin: SampleOrigin,
        /// Its tick (watchdog), else 0.
        tick_ns: u64,
        /// Off-CPU details.
        off_cpu: Option<OffCpu>,
        /// Frame ids, innermost first.
        frames: Vec<u32>,
        /// Samples it stands for (left out when 1).
        #[serde(default = "crate::event::one", skip_serializing_if = "crate::event::is_one")]
        count: u64,
    },
    /// Samples lost by a source.
    LostSamples {
        /// How many.
        count: u64,
    },
    /// What the observation warned of (unnamed JavaScript, lost records …), so that `report`
    /// says it too. Written before the end line.
    Warning {
        /// The sentence.
        text: String,
    },
    /// The last line.
    End(End),
}

/// A recording could not be written (a full disk): the lines written before stay readable.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the recording {}: {source}", path.display())]
pub struct WriteError {
    /// The recording.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

/// Writes a recording as the session goes.
pub struct Recorder {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    frames_written: u32,
    totals_at: HashMap<LoopId, u64>,
    pending_totals: HashMap<LoopId, Event>,
    lines: u64,
}

impl Recorder {
    /// Writes the header to `file`, the recording at `path` (opened by the caller, so that a path
    /// that cannot be written is refused before anything starts).
    pub fn new(file: std::fs::File, path: &Path, header: &Header) -> Result<Recorder, WriteError> {
        let mut r = Recorder {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, file),
            frames_written: 0,
            totals_at: HashMap::new(),
            pending_totals: HashMap::new(),
            lines: 0,
        };
        r.line(&Line::Recording(header.clone()))?;
        Ok(r)
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed(&self, source: std::io::Error) -> WriteError {
        WriteError { path: self.path.clone(), source }
    }

    fn line(&mut self, v: &impl Serialize) -> Result<(), WriteError> {
        let written = serde_json::to_writer(&mut self.out, v)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        self.lines += 1;
        written.map_err(|e| self.failed(e))
    }

    /// Records an event (not a sample: see [`Recorder::stack`]). Totals are thinned to one a second
    /// per loop; the latest is always written by [`Recorder::finish`].
    pub fn event(&mut self, ev: &Event) -> Result<(), WriteError> {
        match ev {
            Event::Sample(_) => Ok(()),
            Event::Totals { id, totals } => {
                let last = self.totals_at.get(id).copied().unwrap_or(0);
                if totals.at_ns.saturating_sub(last) >= 1_000_000_000 {
                    self.totals_at.insert(*id, totals.at_ns);
                    self.pending_totals.remove(id);
                    self.line(ev)
                } else {
                    self.pending_totals.insert(*id, ev.clone());
                    Ok(())
                }
            }
            Event::LoopEnded { id, .. } => {
                if let Some(t) = self.pending_totals.remove(id) {
                    self.line(&t)?;
                }
                self.line(ev)
            }
            _ => self.line(ev),
        }
    }

    /// Records a sample, after any frames of the table it is the first to use.
    pub fn stack(&mut self, pid: u32, tid: u32, s: &StoredSample, stacks: &Stacks) -> Result<(), WriteError> {
        let n = stacks.frames().len() as u32;
        while self.frames_written < n {
            let id = self.frames_written;
            let frame = stacks.frame(id).clone();
            let source = stacks.source(id).map(str::to_string);
            self.line(&Line::Frame { id, frame, source })?;
            self.frames_written += 1;
        }
        self.line(&Line::Stack {
            pid,
            tid,
            t_ns: s.t_ns,
            weight_ns: s.weight_ns,
            origin: s.origin,
            tick_ns: s.tick_ns,
            off_cpu: s.off_cpu.clone(),
            frames: s.stack.clone(),
            count: s.count,
        })
    }

    /// Records lost samples.
    pub fn lost(&mut self, count: u64) -> Result<(), WriteError> {
        self.line(&Line::LostSamples { count })
    }

    /// Pushes what was written to the file (at every poll).
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.out.flush().map_err(|e| self.failed(e))
    }

    /// Writes the latest totals, the observation's `warnings` and the end line; returns the
    /// number of lines written.
    pub fn finish(mut self, at_ns: u64, target: &Target, warnings: &[String]) -> Result<u64, WriteError> {
        let pending: Vec<Event> = self.pending_totals.drain().map(|(_, e)| e).collect();
        for e in &pending {
            self.line(e)?;
        }
        for text in warnings {
            self.line(&Line::Warning { text: text.clone() })?;
        }
        let end =
            End { at_ns, exit_code: target.exit_code, runtime: target.runtime.to_string(), stopped: target.stopped };
        self.line(&Line::End(end))?;
        self.flush()?;
        // A character device or a pipe (-o /dev/stdout) cannot be synced, and need not be.
        match self.out.get_ref().sync_data() {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(self.failed(e)),
            _ => Ok(self.lines),
        }
    }
}
