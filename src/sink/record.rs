//! Recordings (`looptop record`): the event stream of a session written as it goes, in the
//! format of [`crate::recording`], so that `looptop report` and `looptop flame --from` replay
//! exactly what was seen.
//!
//! Totals are thinned to one a second per loop (the latest always written); frames and stacks are
//! written once, the first time a sample uses them. A block is closed about once a second (at the
//! poll after [`BLOCK_EVERY`]), so a killed recorder loses at most that.

use crate::analysis::report::Target;
use crate::analysis::stacks::{Stacks, StoredSample};
use crate::event::{Event, LoopId};
use crate::recording::block::{self, Entry, Kind};
use crate::recording::codec::{Encoder, SampleRec};
use crate::recording::{event_span, End, Header, Line, MAGIC};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a block stays open: what a killed recorder can lose.
pub const BLOCK_EVERY: Duration = Duration::from_secs(1);
/// Stack ids remembered at most (see [`Recorder::stack`]).
const MAX_STACKS: usize = 1 << 16;
/// A block is closed sooner once its payload reaches this many bytes.
const BLOCK_BYTES: usize = 4 << 20;

/// A recording could not be written (a full disk): the blocks written before stay readable.
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
    /// The id of each stack written, by a 64-bit hash of its frame ids (a collision, about one
    /// in 10^10 for a run's 10^5 stacks, would name one stack for another), and the next id.
    stacks: HashMap<u64, u32>,
    next_stack: u32,
    hasher: std::collections::hash_map::RandomState,
    totals_at: HashMap<LoopId, u64>,
    pending_totals: HashMap<LoopId, Event>,
    /// What later blocks refer to (frames, stacks, processes, loops), and everything else.
    defs: Encoder,
    data: Encoder,
    /// The time span of what `data` holds (ns; 0: nothing yet).
    span: (u64, u64),
    /// Bytes written, and where each block went.
    written: u64,
    index: Vec<Entry>,
    opened: Instant,
}

impl Recorder {
    /// Writes the header to `file`, the recording at `path` (opened by the caller, so that a path
    /// that cannot be written is refused before anything starts).
    pub fn new(file: std::fs::File, path: &Path, header: &Header) -> Result<Recorder, WriteError> {
        let mut r = Recorder {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, file),
            frames_written: 0,
            stacks: HashMap::new(),
            next_stack: 0,
            hasher: Default::default(),
            totals_at: HashMap::new(),
            pending_totals: HashMap::new(),
            defs: Encoder::default(),
            data: Encoder::default(),
            span: (0, 0),
            written: 0,
            index: Vec::new(),
            opened: Instant::now(),
        };
        r.written = block::write(&mut r.out, &MAGIC).map_err(|e| r.failed(e))?;
        let json = serde_json::to_vec(header).map_err(|e| r.failed(e.into()))?;
        r.block(Kind::Header, (0, 0), &json)?;
        // The file is a recording from its first moment (and `record -o - | report -` starts).
        r.out.flush().map_err(|e| r.failed(e))?;
        Ok(r)
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed(&self, source: std::io::Error) -> WriteError {
        WriteError { path: self.path.clone(), source }
    }

    /// Writes one block of `kind` spanning `span` (ns), and notes it in the index.
    fn block(&mut self, kind: Kind, span: (u64, u64), raw: &[u8]) -> Result<(), WriteError> {
        let bytes = block::encode(kind, span.0, span.1, raw).map_err(|e| self.failed(e))?;
        self.index.push(Entry { at: self.written, kind, t_first: span.0, t_last: span.1 });
        self.written += block::write(&mut self.out, &bytes).map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// An event or a record of its own, in the block it belongs to.
    fn line(&mut self, v: &impl serde::Serialize, defs: bool) -> Result<(), WriteError> {
        let to = if defs { &mut self.defs } else { &mut self.data };
        to.json(v).map_err(|e| WriteError { path: self.path.clone(), source: e.into() })
    }

    /// Widens the time span of the open data block to `(first, last)`.
    fn spans(&mut self, (first, last): (u64, u64)) {
        self.span = match self.span {
            (0, 0) => (first, last),
            (a, b) => (a.min(first), b.max(last)),
        };
    }

    /// Closes the open blocks (defs first: the data refers to them); the `last` data block
    /// holds the end.
    fn close_blocks(&mut self, last: bool) -> Result<(), WriteError> {
        if !self.defs.is_empty() {
            let raw = self.defs.take();
            self.block(Kind::Defs, (0, 0), &raw)?;
        }
        if !self.data.is_empty() {
            let (raw, span) = (self.data.take(), std::mem::take(&mut self.span));
            self.block(if last { Kind::Final } else { Kind::Data }, span, &raw)?;
        }
        self.opened = Instant::now();
        Ok(())
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
                    self.data_event(ev)
                } else {
                    self.pending_totals.insert(*id, ev.clone());
                    Ok(())
                }
            }
            Event::LoopEnded { id, .. } => {
                if let Some(t) = self.pending_totals.remove(id) {
                    self.data_event(&t)?;
                }
                self.data_event(ev)
            }
            // What a window of the recording needs whatever its time: the processes and loops.
            Event::Process(_) | Event::LoopStarted { .. } => self.line(ev, true),
            _ => self.data_event(ev),
        }
    }

    fn data_event(&mut self, ev: &Event) -> Result<(), WriteError> {
        if let Some(span) = event_span(ev) {
            self.spans(span);
        }
        self.line(ev, false)
    }

    /// Records a sample, after any frames of the table it is the first to use.
    pub fn stack(&mut self, pid: u32, tid: u32, s: &StoredSample, stacks: &Stacks) -> Result<(), WriteError> {
        let n = stacks.frames().len() as u32;
        while self.frames_written < n {
            let id = self.frames_written;
            let frame = stacks.frame(id).clone();
            let source = stacks.source(id).map(str::to_string);
            self.line(&Line::Frame { id, frame, source }, true)?;
            self.frames_written += 1;
        }
        let key = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = self.hasher.build_hasher();
            s.stack.iter().for_each(|&f| h.write_u32(f));
            h.finish()
        };
        let stack = match self.stacks.get(&key) {
            Some(&id) => id,
            None => {
                // The ids of stacks written are remembered up to a bound, then forgotten: a stack
                // seen again is written again, under a new id (hours of rare stacks would
                // otherwise grow the recorder's memory, not only the file).
                if self.stacks.len() >= MAX_STACKS {
                    self.stacks.clear();
                }
                let id = self.next_stack;
                self.next_stack = self.next_stack.wrapping_add(1);
                self.defs.stack(id, &s.stack);
                self.stacks.insert(key, id);
                id
            }
        };
        self.spans((s.t_ns, s.t_ns));
        self.data.sample(&SampleRec::of(pid, tid, s, stack));
        Ok(())
    }

    /// Records lost samples.
    pub fn lost(&mut self, count: u64) -> Result<(), WriteError> {
        self.line(&Line::LostSamples { count }, false)
    }

    /// At every poll: closes the open block once it has been open [`BLOCK_EVERY`] (or is large)
    /// and pushes it to the file.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if self.opened.elapsed() < BLOCK_EVERY && self.data.len() + self.defs.len() < BLOCK_BYTES {
            return Ok(());
        }
        self.close_blocks(false)?;
        self.out.flush().map_err(|e| self.failed(e))
    }

    /// Closes the open block now and pushes it to the file, however long it was open.
    pub fn cut(&mut self) -> Result<(), WriteError> {
        self.close_blocks(false)?;
        self.out.flush().map_err(|e| self.failed(e))
    }

    /// Writes the latest totals, the observation's `warnings`, the end, the index and the
    /// trailer; returns the number of bytes written.
    pub fn finish(mut self, at_ns: u64, target: &Target, warnings: &[String]) -> Result<u64, WriteError> {
        let pending: Vec<Event> = self.pending_totals.drain().map(|(_, e)| e).collect();
        for e in &pending {
            self.data_event(e)?;
        }
        for text in warnings {
            self.line(&Line::Warning { text: text.clone() }, false)?;
        }
        let end =
            End { at_ns, exit_code: target.exit_code, runtime: target.runtime.to_string(), stopped: target.stopped };
        self.line(&Line::End(end), false)?;
        self.close_blocks(true)?;
        let index_at = self.written;
        let index = block::encode_index(&self.index);
        self.block(Kind::Index, (0, 0), &index)?;
        self.written += block::write(&mut self.out, &block::trailer(index_at)).map_err(|e| self.failed(e))?;
        self.out.flush().map_err(|e| self.failed(e))?;
        // A character device or a pipe (-o /dev/stdout) cannot be synced, and need not be.
        match self.out.get_ref().sync_data() {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(self.failed(e)),
            _ => Ok(self.written),
        }
    }
}
