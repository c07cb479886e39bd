//! The path every event takes inside looptop once a source yielded it: stack samples are
//! symbolized (while their process still runs) and interned, everything goes into the
//! [`Session`], and into the recording when one is being written.

use crate::analysis::stacks::StoredSample;
use crate::analysis::Session;
use crate::analysis::{FOLD_EVERY_NS, KEEP_SAMPLES_NS};
use crate::event::{Event, Sample, SampleOrigin, KERNEL_ADDRESS_MIN};
use crate::sink::record::Recorder;
use crate::symbolize::{python, Frame, Symbolizer};
use anyhow::{Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Frame ids by address kept at most before the cache starts over (hours of new JIT and kernel
/// addresses would otherwise grow it without end).
const MAX_IDS: usize = 1 << 16;
/// How often a process's mappings are read again while it is sampled.
const REOBSERVE_NS: u64 = 1_000_000_000;

/// A loop's long tick (its start) and the Python frames read while it slept in it: (when read,
/// the frames), oldest first.
type TickFrames = (u64, Vec<(u64, Vec<[u64; 2]>)>);

/// Reads of a sleeping loop thread's Python frames kept per tick.
const READS_PER_TICK: usize = 16;

/// Events in, session (and recording) out.
pub struct Pipeline {
    /// What is known so far.
    pub session: Session,
    symbolizer: Symbolizer,
    recorder: Option<Recorder>,
    /// Processes seen (their mappings are remembered for symbols).
    pids: BTreeSet<u32>,
    /// The frame id of each (pid, address) named so far, valid for [`Symbolizer::epoch`]
    /// `ids_epoch`: most samples repeat addresses, and naming them again (and hashing whole
    /// frames to intern them) was most of looptop's own CPU at 997 Hz.
    ids: HashMap<(u32, u64), u32, BuildIpHasher>,
    ids_epoch: u64,
    /// The same for addresses nothing names yet (JIT code without a perf map: most of a Node
    /// server's frames when attached), valid while the process's
    /// [`Symbolizer::generation`] is the one stored with each.
    unnamed: HashMap<(u32, u64), (u32, u64), BuildIpHasher>,
    /// When each process's mappings and perf map were last read (ns).
    observed: std::collections::HashMap<u32, u64>,
    /// How much of the recent past keeps its samples one by one (ns), and when older ones
    /// were last folded into counts ([`Session::forget_samples`]).
    keep_ns: u64,
    folded_ns: u64,
    /// Each loop's current tick as its latest totals say (0 = waiting): a kernel sample's
    /// Python frames are read from outside only while its tick still runs.
    busy_since: HashMap<(u32, u32), u64>,
    /// The Python frames of a loop thread read during its current long tick, each time it was
    /// found off the CPU (not for processes whose agent's watchdog reads them: `walked_pids`).
    in_tick: HashMap<(u32, u32), TickFrames>,
    /// Processes whose watchdog samples carry Python frames.
    walked_pids: BTreeSet<u32>,
    /// Go processes: no loop of theirs is kept ([`crate::target::golang`]).
    go_pids: BTreeSet<u32>,
    /// Unwind the stack copies samples carry ([`crate::source::stack_copies`]).
    unwind: bool,
}

impl Pipeline {
    /// A pipeline into `session`.
    pub fn new(session: Session) -> Self {
        Pipeline {
            session,
            symbolizer: Symbolizer::new(),
            recorder: None,
            pids: BTreeSet::new(),
            observed: Default::default(),
            ids: HashMap::default(),
            ids_epoch: 0,
            unnamed: HashMap::default(),
            keep_ns: KEEP_SAMPLES_NS,
            folded_ns: crate::source::now_ns(),
            busy_since: HashMap::new(),
            in_tick: HashMap::new(),
            walked_pids: BTreeSet::new(),
            go_pids: BTreeSet::new(),
            unwind: crate::source::stack_copies(),
        }
    }

    /// Keeps samples one by one for at least `keep_ns` (a live view's flamegraph window).
    pub fn keep_samples(&mut self, keep_ns: u64) {
        self.keep_ns = self.keep_ns.max(keep_ns);
    }

    /// Also writes everything to `recorder`.
    pub fn record_to(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Starts recording mid-way: the recording begins with what the session knows now
    /// ([`Session::state_events`]), then every event from here on.
    pub fn start_recording(&mut self, mut recorder: Recorder) -> Result<()> {
        for ev in self.session.state_events() {
            recorder.event(&ev).context("writing the recording")?;
        }
        recorder.flush().context("writing the recording")?;
        self.recorder = Some(recorder);
        Ok(())
    }

    /// Whether a recording is being written.
    pub fn recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Processes seen so far.
    pub fn pids(&self) -> &BTreeSet<u32> {
        &self.pids
    }

    /// Takes every event of `events` (leaving it empty); flushes the recording.
    pub fn feed(&mut self, events: &mut Vec<Event>) -> Result<()> {
        // V8's heap first, for every stack with addresses not named yet or V8's words, while
        // the processes still run.
        self.sync_ids();
        self.drop_go_loops(events);
        let now = crate::source::now_ns();
        for ev in events.iter() {
            match ev {
                Event::Totals { id, totals } => {
                    self.busy_since.insert((id.pid, id.tid), totals.busy_since_ns);
                    self.read_in_tick(id.pid, id.tid, totals.busy_since_ns, now);
                }
                Event::Sample(s) if s.origin == SampleOrigin::Watchdog && !s.py.is_empty() => {
                    self.walked_pids.insert(s.pid);
                }
                _ => {}
            }
        }
        let mut read_now: HashMap<(u32, u32), Vec<[u64; 2]>> = HashMap::default();
        for ev in events.iter_mut() {
            let Event::Sample(s) = ev else { continue };
            // Not where V8's words go with the frames as walked (V8 keeps frame pointers).
            if let Some(copy) = s.stack.take().filter(|_| self.unwind && s.js.is_empty()) {
                // While the process runs: its mappings say which CFI covers each address.
                self.watch(s.pid);
                s.ips = self.symbolizer.unwind(s.pid, &copy, &s.ips);
            }
            if s.py.is_empty() && python_read_from_outside(s, self.busy_since.get(&(s.pid, s.tid)), now) {
                self.watch(s.pid);
                let symbolizer = &mut self.symbolizer;
                s.py = read_now.entry((s.pid, s.tid)).or_insert_with(|| symbolizer.python_stack(s.pid, s.tid)).clone();
            }
            // Off the CPU the kernel sends the stack when the thread comes back, the stall over:
            // frames read while it slept that very sleep are its own (a read at another sleep of
            // the tick, a socket write after it, is not).
            if s.py.is_empty() && s.origin == SampleOrigin::PerfOffCpu && s.tick_ns != 0 {
                if let Some((tick, reads)) = self.in_tick.get(&(s.pid, s.tid)) {
                    let asleep = s.t_ns..=s.t_ns.saturating_add(s.weight_ns);
                    if let Some((_, words)) = reads.iter().find(|(at, _)| *tick == s.tick_ns && asleep.contains(at)) {
                        s.py = words.clone();
                    }
                }
            }
            let ips = lookup_ips(s);
            if !s.js.is_empty() || ips.iter().any(|&ip| !self.ids.contains_key(&(s.pid, ip))) {
                self.watch(s.pid);
                self.symbolizer.prime_js(s.pid, &ips, &s.js);
            }
        }
        for ev in events.drain(..) {
            match ev {
                Event::Sample(s) => self.sample(&s)?,
                ev => {
                    match &ev {
                        Event::Process(p) => self.watch(p.pid),
                        // Reading V8's layout takes a while: before the loop's first stall.
                        Event::LoopStarted { id, .. } => {
                            self.watch(id.pid);
                            self.symbolizer.warm_v8(id.pid);
                            self.symbolizer.warm_python(id.pid);
                        }
                        Event::LoopEnded { id, .. } => {
                            self.busy_since.remove(&(id.pid, id.tid));
                            self.in_tick.remove(&(id.pid, id.tid));
                        }
                        _ => {}
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
        let now = crate::source::now_ns();
        if now.saturating_sub(self.folded_ns) >= FOLD_EVERY_NS {
            self.session.forget_samples(now.saturating_sub(self.keep_ns), now);
            self.folded_ns = now;
        }
        Ok(())
    }

    /// Remembers a process (its mappings, for symbols after it exits), reading them again at
    /// most every [`REOBSERVE_NS`]: an address outside every known mapping makes the symbolizer
    /// read them at once anyway, and the perf map is read when a JIT address is new.
    pub fn watch(&mut self, pid: u32) {
        let now = crate::source::now_ns();
        let last = self.observed.get(&pid).copied();
        if self.pids.insert(pid) || !last.is_some_and(|t| now < t + REOBSERVE_NS) {
            self.symbolizer.observe(pid);
            self.observed.insert(pid, now);
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
        let ips = lookup_ips(s);
        self.sync_ids();
        let generation = self.symbolizer.generation(s.pid);
        let known = |ip: u64| {
            let key = (s.pid, ip);
            self.ids.get(&key).copied().or_else(|| self.unnamed.get(&key).filter(|u| u.1 == generation).map(|u| u.0))
        };
        let mut stack: Vec<u32> = ips.iter().map(|&ip| known(ip).unwrap_or(u32::MAX)).collect();
        let missing: Vec<usize> = (0..ips.len()).filter(|&i| stack[i] == u32::MAX).collect();
        if !missing.is_empty() {
            let unnamed: Vec<u64> = missing.iter().map(|&i| ips[i]).collect();
            let frames = self.symbolizer.symbolize(s.pid, &unnamed);
            // Naming may have read a newer perf map: what was cached before is stale.
            self.sync_ids();
            let generation = self.symbolizer.generation(s.pid);
            let (symbolizer, stacks) = (&mut self.symbolizer, self.session.stacks_mut());
            for (&i, f) in missing.iter().zip(frames) {
                let settled = f.is_settled();
                let id = stacks.intern(f, |f: &Frame| source_of(symbolizer, s.pid, f));
                if settled {
                    self.ids.insert((s.pid, ips[i]), id);
                } else {
                    self.unnamed.insert((s.pid, ips[i]), (id, generation));
                }
                stack[i] = id;
            }
        }
        if !s.js.is_empty() {
            self.running_lines(s.pid, &s.js, &mut stack);
        }
        if !s.py.is_empty() {
            self.python_frames(s.pid, &s.py, &mut stack);
        }
        let stored = StoredSample::of(s, stack);
        if let Some(r) = &mut self.recorder {
            // Frames first (the recorder writes those it has not written yet), then the stack.
            r.stack(s.pid, s.tid, &stored, self.session.stacks()).context("writing the recording")?;
        }
        self.session.stacks_mut().push_stored(s.pid, s.tid, stored);
        Ok(())
    }

    /// Replaces each interpreted JavaScript frame of `stack` whose running line V8's words tell
    /// with the same frame at that line.
    fn running_lines(&mut self, pid: u32, js: &[[u64; 2]], stack: &mut [u32]) {
        for (id, words) in stack.iter_mut().zip(js) {
            let f = self.session.stacks().frame(*id).clone();
            let Some(line) = self.symbolizer.running_line(pid, &f, *words) else { continue };
            let (symbolizer, stacks) = (&mut self.symbolizer, self.session.stacks_mut());
            *id = stacks.intern(Frame { exec_line: Some(line), ..f }, |f: &Frame| source_of(symbolizer, pid, f));
        }
    }

    /// Leaves out the loops of Go processes (found at their `Process` event): the Go runtime has
    /// no event loop, and its threads' waits would read as loops with false stalls.
    fn drop_go_loops(&mut self, events: &mut Vec<Event>) {
        for ev in events.iter() {
            if let Event::Process(p) = ev {
                if !self.go_pids.contains(&p.pid) && crate::target::golang::is_go(p.pid) {
                    self.go_pids.insert(p.pid);
                }
            }
        }
        if self.go_pids.is_empty() {
            return;
        }
        events.retain(|ev| match ev {
            Event::LoopStarted { id, .. }
            | Event::Totals { id, .. }
            | Event::Stall { id, .. }
            | Event::LoopEnded { id, .. } => !self.go_pids.contains(&id.pid),
            _ => true,
        });
    }

    /// The Go processes observed (no loop of theirs is kept).
    pub fn go_pids(&self) -> &BTreeSet<u32> {
        &self.go_pids
    }

    /// For a loop of a process whose agent does not walk its Python frames (none preloaded), in a
    /// tick past the stall floor and off the CPU now: reads its Python frames, for the off-CPU
    /// samples of that tick the kernel sends later (each takes the read made while it slept).
    fn read_in_tick(&mut self, pid: u32, tid: u32, busy_since: u64, now: u64) {
        const AFTER_NS: u64 = looptop_abi::DEFAULT_STALL_FLOOR_NS;
        if busy_since == 0 || now.saturating_sub(busy_since) < AFTER_NS || self.walked_pids.contains(&pid) {
            return;
        }
        let full = self.in_tick.get(&(pid, tid)).is_some_and(|(t, r)| *t == busy_since && r.len() >= READS_PER_TICK);
        if full || !off_cpu(pid, tid) {
            return;
        }
        self.watch(pid);
        let at = crate::source::now_ns();
        let words = self.symbolizer.python_stack(pid, tid);
        // Still asleep after the read: the frames are those of the sleep it was in.
        if words.is_empty() || !off_cpu(pid, tid) {
            return;
        }
        let entry = self.in_tick.entry((pid, tid)).or_insert((busy_since, Vec::new()));
        if entry.0 != busy_since {
            *entry = (busy_since, Vec::new());
        }
        entry.1.push((at, words));
    }

    /// Puts the Python frames of `py` into `stack` where the interpreter ran them.
    fn python_frames(&mut self, pid: u32, py: &[[u64; 2]], stack: &mut Vec<u32>) {
        let frames = self.symbolizer.python_frames(pid, py);
        if frames.is_empty() {
            return;
        }
        let stacks = self.session.stacks();
        let native: Vec<&Frame> = stack.iter().map(|&id| stacks.frame(id)).collect();
        let order = python::splice(&native, &frames);
        let (symbolizer, stacks) = (&mut self.symbolizer, self.session.stacks_mut());
        let ids: Vec<u32> =
            frames.into_iter().map(|(f, _)| stacks.intern(f, |f: &Frame| source_of(symbolizer, pid, f))).collect();
        *stack = order
            .into_iter()
            .map(|o| match o {
                python::Spliced::Native(i) => stack[i],
                python::Spliced::Python(i) => ids[i],
            })
            .collect();
    }

    /// Forgets the cached frame ids once the symbolizer says names may have changed, or once
    /// there are too many.
    fn sync_ids(&mut self) {
        if self.symbolizer.epoch() != self.ids_epoch || self.ids.len() + self.unnamed.len() >= MAX_IDS {
            self.ids.clear();
            self.unnamed.clear();
            self.ids_epoch = self.symbolizer.epoch();
        }
    }

    /// What the user should know about the target's files read for symbols (perf maps refused
    /// or read only in part).
    pub fn file_notes(&self) -> Vec<String> {
        self.symbolizer.notes()
    }

    /// Ends the recording, if any; returns it.
    pub fn take_recorder(&mut self) -> Option<Recorder> {
        self.recorder.take()
    }
}

/// The addresses of a sample to look up: past the leaf, user addresses are return addresses, so
/// the call instruction before each.
fn lookup_ips(s: &Sample) -> Vec<u64> {
    s.ips
        .iter()
        .enumerate()
        .map(|(i, &ip)| if i > 0 && ip < KERNEL_ADDRESS_MIN && ip > 0 { ip - 1 } else { ip })
        .collect()
}

/// Whether looptop reads a sample's Python frames from its process now: a kernel sample taken
/// inside a tick already past the stall floor (the BPF source sends only those one by one),
/// read within a few polls of it, while that tick still runs (`busy_since`: the start of the
/// loop's current tick, as its latest totals say).
fn python_read_from_outside(s: &Sample, busy_since: Option<&u64>, now: u64) -> bool {
    const FRESH_NS: u64 = 250_000_000;
    matches!(s.origin, SampleOrigin::PerfCpu | SampleOrigin::PerfOffCpu)
        && s.tick_ns != 0
        && busy_since == Some(&s.tick_ns)
        && now.saturating_sub(s.t_ns) <= FRESH_NS
}

/// Whether thread `tid` sleeps now (`S` or `D` in `/proc/PID/task/TID/stat`).
fn off_cpu(pid: u32, tid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|c| c == 'S' || c == 'D')
}

/// The source line of a frame of process `pid` with a file and line (read as its user could).
fn source_of(symbolizer: &mut Symbolizer, pid: u32, f: &Frame) -> Option<String> {
    symbolizer.source_line(pid, f.file.as_deref()?, f.exec_line.or(f.line)?)
}

/// A hasher for (pid, address) keys: one multiply per word instead of SipHash (the keys come
/// from the kernel, not from an adversary).
#[derive(Default)]
struct IpHasher(u64);

impl Hasher for IpHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type BuildIpHasher = BuildHasherDefault<IpHasher>;
