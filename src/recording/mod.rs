//! The recording format, owned here: what `looptop record` writes ([`crate::sink::record`]) and
//! what `looptop report` and `looptop flame --from` read back ([`crate::source::recording`]).
//!
//! # `looptop.recording/2` (written since 0.1: binary, compressed, indexed)
//!
//! A file is [`MAGIC`], then blocks ([`block`]), each a 36-byte head (tag, kind, lengths, the
//! time span of what it holds, a CRC-32 of head and payload) and a zstd-compressed payload of
//! [`codec`] records:
//! - one `header` block: the [`Header`] as JSON, schema [`SCHEMA`];
//! - `defs` blocks: what later blocks refer to — frames (JSON [`Line::Frame`]), stacks (frame ids,
//!   innermost first, interned once: a sample names its stack by id), and the processes and loops
//!   as they start (JSON [`crate::event::Event`]s);
//! - `data` blocks: every other event as JSON, exactly as it came, and every stack sample in
//!   binary — (time, pid, tid, stack id, weight, origin …), varints, times as deltas;
//! - at the end, an `index` block (offset, kind and time span of every block before it) and a
//!   16-byte trailer pointing at it ([`block::TRAILER_TAG`]).
//!
//! The writer closes a block about once a second: a killed recorder leaves a file that reads up
//! to its last complete block, without index or trailer. A window of time is read from the `defs`
//! blocks and the `data` blocks whose span meets it, found from the index (or, without one, by
//! reading block heads alone).
//!
//! # `looptop.recording/1` (read only)
//!
//! JSON lines: the header line, then [`Line`]s and events, one per line, samples as `stack` lines
//! naming frame ids. Recordings of earlier versions of looptop read as before.

pub mod block;
pub mod codec;

use crate::event::{OffCpu, SampleOrigin};
use crate::symbolize::Frame;
use serde::{Deserialize, Serialize};

/// Schema of the recordings looptop writes.
pub const SCHEMA: &str = "looptop.recording/2";
/// Schema of the JSON-lines recordings of earlier versions (still read).
pub const SCHEMA_V1: &str = "looptop.recording/1";
/// The first bytes of a `looptop.recording/2` file.
pub const MAGIC: [u8; 8] = *b"\x89LTREC2\n";

/// The header: what was observed, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// [`SCHEMA`] (or [`SCHEMA_V1`] in a JSON-lines recording).
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

/// The end: written when the recording finished properly.
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

/// The JSON records that are not [`crate::event::Event`]s (the lines of a
/// `looptop.recording/1` file; `frame`, `lost_samples`, `warning` and `end` in version 2 too).
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
    /// A stack sample (version 1; version 2 keeps samples in binary).
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
    /// says it too. Written before the end.
    Warning {
        /// The sentence.
        text: String,
    },
    /// The last line.
    End(End),
}

/// The tags of [`Line`]'s variants; every other tag is an [`crate::event::Event`]'s.
pub const LINE_TAGS: [&str; 6] = ["recording", "frame", "stack", "lost_samples", "warning", "end"];

/// The time span of an event (ns), where it has one: a stall from its start to its end.
pub fn event_span(ev: &crate::event::Event) -> Option<(u64, u64)> {
    use crate::event::Event;
    let at = |t: u64| Some((t, t));
    match ev {
        Event::Totals { totals, .. } => at(totals.at_ns),
        Event::Stall { start_ns, duration_ns, .. }
        | Event::Gc { start_ns, duration_ns, .. }
        | Event::Alloc { start_ns, duration_ns, .. } => Some((*start_ns, start_ns.saturating_add(*duration_ns))),
        Event::LoopStarted { start_ns, .. } => at(*start_ns),
        Event::LoopEnded { at_ns, .. } | Event::ProcessExited { at_ns, .. } | Event::PoolSample { at_ns, .. } => {
            at(*at_ns)
        }
        _ => None,
    }
}
