//! What both formats' readers do with what they read: frames interned, events checked and
//! handed to the [`Session`], samples kept — within the window asked for — and folded into
//! counts as the replay's time goes on, as a live run does, so that memory stays flat however
//! long the recording.

use super::UNNAMED;
use crate::analysis::stacks::StoredSample;
use crate::analysis::{Session, FOLD_EVERY_NS, KEEP_SAMPLES_NS};
use crate::event::{Event, LoopId};
use crate::recording::event_span;
use crate::symbolize::Frame;
use std::collections::{HashMap, HashSet};

/// Loops read (a run that follows hundreds of processes has a few per process): memory for each
/// loop's histograms stays bounded whatever a file claims.
pub const MAX_LOOPS: usize = 2048;

/// A window of time (ns, inclusive): what `flame --since/--until` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// From.
    pub since_ns: u64,
    /// To.
    pub until_ns: u64,
}

impl Window {
    /// The window `(since, until)` ns from `origin_ns`.
    pub fn from(origin_ns: u64, (since, until): (u64, u64)) -> Self {
        Window { since_ns: origin_ns.saturating_add(since), until_ns: origin_ns.saturating_add(until) }
    }

    /// Whether `t_ns` falls in it.
    pub fn holds(&self, t_ns: u64) -> bool {
        t_ns >= self.since_ns && t_ns <= self.until_ns
    }
}

/// The session being replayed into, and what the reader must remember to fill it.
pub(super) struct Feed {
    pub session: Session,
    /// Frame ids of the file → ids in the session.
    frames: HashMap<u32, u32>,
    loops: HashSet<LoopId>,
    stall_ends: HashMap<LoopId, u64>,
    window: Option<Window>,
    /// Time of the last event or sample seen (ns).
    pub last_ns: u64,
    /// Whether samples are folded as the replay's time goes on: only when they come in the
    /// order they were taken in, each before the stall that holds it ends two seconds ([`Session::forget_samples`]).
    fold: bool,
    folded_ns: u64,
}

impl Feed {
    /// A feed into `session`, keeping the samples of `window` only when given, folding older
    /// samples into counts when `fold`.
    pub fn new(session: Session, window: Option<Window>, fold: bool) -> Self {
        Feed {
            session,
            frames: HashMap::new(),
            loops: HashSet::new(),
            stall_ends: HashMap::new(),
            window,
            last_ns: 0,
            fold,
            folded_ns: 0,
        }
    }

    /// A frame of the file's table.
    pub fn frame(&mut self, id: u32, frame: Frame, source: Option<String>) {
        let ours = self.session.stacks_mut().intern(frame, |_| source);
        self.frames.insert(id, ours);
    }

    /// The session's ids of the file's frame ids; `None` if one was never defined.
    pub fn stack(&self, ids: &[u32]) -> Option<Vec<u32>> {
        ids.iter().map(|f| self.frames.get(f).copied()).collect()
    }

    /// An event; `Err` says why it was skipped.
    pub fn event(&mut self, ev: Event) -> Result<(), String> {
        match &ev {
            Event::Sample(_) => return Err("a 'sample' record (recordings keep stacks as stacks)".into()),
            // Ticks of one thread follow one another: stalls that overlap are not a loop's, and
            // each would be classified from every sample under it.
            Event::Stall { id, start_ns, .. } if self.stall_ends.get(id).is_some_and(|&e| *start_ns < e) => {
                return Err("a stall that starts before its loop's previous stall ended".into())
            }
            Event::Stall { id, start_ns, duration_ns } => {
                self.stall_ends.insert(*id, start_ns.saturating_add(*duration_ns));
            }
            _ => {}
        }
        if let Some((_, last)) = event_span(&ev) {
            self.last_ns = self.last_ns.max(last);
        }
        // A loop whose start was lost is still a loop: its id tells when it began.
        if let Event::Totals { id, .. }
        | Event::Stall { id, .. }
        | Event::LoopEnded { id, .. }
        | Event::LoopStarted { id, .. } = &ev
        {
            if !self.loops.contains(id) {
                if self.loops.len() >= MAX_LOOPS {
                    return Err(format!("a loop beyond the first {MAX_LOOPS}"));
                }
                self.loops.insert(*id);
                if !matches!(ev, Event::LoopStarted { .. }) {
                    self.session.handle(Event::LoopStarted { id: *id, name: UNNAMED.into(), start_ns: id.since_ns });
                }
            }
        }
        self.session.handle(ev);
        Ok(())
    }

    /// A sample (its frames already the session's ids), kept when it falls in the window.
    pub fn sample(&mut self, pid: u32, tid: u32, s: StoredSample) {
        let t = s.t_ns;
        self.last_ns = self.last_ns.max(t);
        if self.window.is_some_and(|w| !w.holds(t)) {
            return;
        }
        self.session.stacks_mut().push_stored(pid, tid, s);
        if !self.fold {
            return;
        }
        if self.folded_ns == 0 {
            self.folded_ns = t;
        } else if t.saturating_sub(self.folded_ns) >= FOLD_EVERY_NS {
            self.session.forget_samples(t.saturating_sub(KEEP_SAMPLES_NS), t);
            self.folded_ns = t;
        }
    }
}
