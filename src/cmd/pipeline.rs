//! The path every event takes inside looptop once a source yielded it: stack samples are
//! symbolized (while their process still runs) and interned, everything goes into the
//! [`Session`], and into the recording when one is being written.

use crate::analysis::stacks::StoredSample;
use crate::analysis::Session;
use crate::event::{Event, Sample, KERNEL_ADDRESS_MIN};
use crate::sink::record::Recorder;
use crate::symbolize::{Frame, Symbolizer};
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// Events in, session (and recording) out.
pub struct Pipeline {
    /// What is known so far.
    pub session: Session,
    symbolizer: Symbolizer,
    recorder: Option<Recorder>,
    /// Processes seen (their mappings are remembered for symbols).
    pids: BTreeSet<u32>,
    /// Processes whose mappings were refreshed since the last poll.
    fresh: BTreeSet<u32>,
}

impl Pipeline {
    /// A pipeline into `session`.
    pub fn new(session: Session) -> Self {
        Pipeline {
            session,
            symbolizer: Symbolizer::new(),
            recorder: None,
            pids: BTreeSet::new(),
            fresh: BTreeSet::new(),
        }
    }

    /// Also writes everything to `recorder`.
    pub fn record_to(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Processes seen so far.
    pub fn pids(&self) -> &BTreeSet<u32> {
        &self.pids
    }

    /// Takes every event of `events` (leaving it empty); flushes the recording.
    pub fn feed(&mut self, events: &mut Vec<Event>) -> Result<()> {
        self.fresh.clear();
        for ev in events.drain(..) {
            match ev {
                Event::Sample(s) => self.sample(&s)?,
                ev => {
                    if let Event::Process(p) = &ev {
                        self.watch(p.pid);
                    }
                    if let Some(r) = &mut self.recorder {
                        r.event(&ev).context("writing the recording")?;
                    }
                    self.session.handle(ev);
                }
            }
        }
        if let Some(r) = &mut self.recorder {
            r.flush().context("writing the recording")?;
        }
        Ok(())
    }

    /// Remembers a process (its mappings, for symbols after it exits).
    pub fn watch(&mut self, pid: u32) {
        if self.pids.insert(pid) || self.fresh.insert(pid) {
            self.symbolizer.observe(pid);
            self.fresh.insert(pid);
        }
    }

    /// Counts samples a source lost.
    pub fn lose_samples(&mut self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.session.lose_samples(n);
        if let Some(r) = &mut self.recorder {
            r.lost(n).context("writing the recording")?;
        }
        Ok(())
    }

    fn sample(&mut self, s: &Sample) -> Result<()> {
        self.watch(s.pid);
        // Past the leaf, user addresses are return addresses: look up the call instruction.
        let ips: Vec<u64> = s
            .ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i > 0 && ip < KERNEL_ADDRESS_MIN && ip > 0 { ip - 1 } else { ip })
            .collect();
        let frames = self.symbolizer.symbolize(s.pid, &ips);
        let (symbolizer, stacks) = (&mut self.symbolizer, self.session.stacks_mut());
        let stack: Vec<u32> =
            frames.into_iter().map(|f| stacks.intern(f, |f: &Frame| source_of(symbolizer, f))).collect();
        let stored = StoredSample {
            t_ns: s.t_ns,
            weight_ns: s.weight_ns,
            origin: s.origin,
            tick_ns: s.tick_ns,
            off_cpu: s.off_cpu.clone(),
            stack,
        };
        if let Some(r) = &mut self.recorder {
            // Frames first (the recorder writes those it has not written yet), then the stack.
            r.stack(s.pid, s.tid, &stored, self.session.stacks()).context("writing the recording")?;
        }
        self.session.stacks_mut().push_stored(s.pid, s.tid, stored);
        Ok(())
    }

    /// Ends the recording, if any; returns it.
    pub fn take_recorder(&mut self) -> Option<Recorder> {
        self.recorder.take()
    }
}

/// The source line of a frame with a file and line.
fn source_of(symbolizer: &mut Symbolizer, f: &Frame) -> Option<String> {
    symbolizer.source_line(f.file.as_deref()?, f.line?)
}
