//! The perf events of one thread and how their records become [`Sample`]s.
//!
//! Each thread has a `cpu-clock` sampler and, for off-CPU stacks, a `sched:sched_switch` sampler
//! that also carries the thread's switch records (`attr.context_switch`). Both live in the
//! thread's own ring, so a switch-out sample and the switch-in that ends it arrive in order.

use super::sys;
use super::ticks::{TickClock, WaitEvents, WaitTracepoints};
use super::tracefs::SchedSwitch;
use crate::event::{Event, OffCpu, Sample, SampleOrigin};
use crate::source::waits::in_wait_call;
use perf_event::data::Record;
use perf_event::events::{Software, Tracepoint};
use perf_event::{Builder, Clock, SampleFlag, Sampler};
use std::io;

/// Ring size of a thread's cpu-clock sampler. At 997 Hz a 60-frame stack is ~0.5 KiB, so 128 KiB
/// holds about a quarter second of samples: poll at least every 100 ms.
const RING_BYTES: usize = 128 * 1024;
/// Ring size of a thread's off-CPU sampler: a stack (~0.5 KiB) and two switch records at every
/// sleep, and a loop serving 20 000 requests/s sleeps about that often: 1 MiB holds 100 ms.
const OFF_CPU_RING_BYTES: usize = 1024 * 1024;

/// How the events of every thread are set up.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    /// cpu-clock samples per second of CPU time (0: no on-CPU stacks).
    pub rate_hz: u64,
    /// Kernel frames in callchains (and cpu-clock samples taken while in the kernel).
    pub kernel: bool,
    /// Off-CPU stacks, from this tracepoint.
    pub sched_switch: Option<SchedSwitch>,
    /// Ticks, from these tracepoints (perf mode); `None` when the agent times the ticks.
    pub waits: Option<WaitTracepoints>,
    /// Completed ticks at least this long become stall events.
    pub stall_floor_ns: u64,
}

/// A failure to open one of the thread's events, and which.
pub(super) struct OpenError {
    /// `"cpu-clock"`, `"sched_switch"` or `"wait tracepoints"`.
    pub what: &'static str,
    /// From `perf_event_open` or the ring's `mmap`.
    pub source: io::Error,
    /// The `mmap` of the ring failed (rather than `perf_event_open`).
    pub mmap: bool,
}

/// A thread that left the CPU to wait and has not come back yet.
struct Away {
    t_ns: u64,
    ips: Vec<u64>,
}

/// The perf events of one thread.
pub(super) struct Thread {
    pid: u32,
    tid: u32,
    cpu: Option<Sampler>,
    off: Option<(Sampler, SchedSwitch)>,
    /// Off-CPU stacks to open once the thread is a loop (perf mode), and with kernel frames.
    later_off: Option<(SchedSwitch, bool)>,
    away: Option<Away>,
    waits: Option<(WaitEvents, TickClock)>,
    /// Events from opening (a loop found waiting), delivered by the first drain.
    pending: Vec<Event>,
}

impl Thread {
    /// Opens and enables the thread's events. `attach_ns`: the thread was there when looptop
    /// attached, at that time (its tick may be under way); `None` for a thread started since.
    pub fn open(pid: u32, tid: u32, setup: &Setup, attach_ns: Option<u64>) -> Result<Thread, OpenError> {
        let cpu =
            if setup.rate_hz > 0 { Some(cpu_sampler(Some(tid), None, setup.rate_hz, setup.kernel)?) } else { None };

        // With the agent, every thread gets off-CPU stacks. In perf mode only loops do: a pool
        // worker switches on every item, and its off-CPU stacks would cost the most and say the
        // least; a thread that becomes a loop later gets them from its first wait on.
        let perf_mode = setup.waits.is_some();
        let loop_now = attach_ns.is_some() && (tid == pid || in_wait_call(pid, tid));
        let off = match setup.sched_switch {
            Some(sched_switch) if !perf_mode || loop_now => Some(off_cpu(tid, sched_switch, setup.kernel)?),
            _ => None,
        };
        let later_off = if perf_mode && off.is_none() { setup.sched_switch.map(|s| (s, setup.kernel)) } else { None };
        let mut pending = Vec::new();
        let waits = match &setup.waits {
            None => None,
            Some(tracepoints) => {
                let name = crate::target::proc::thread_name(pid, tid).unwrap_or_default();
                let parks = tid != pid && crate::target::proc::thread_name(pid, pid).is_some_and(|p| p != name);
                let events = WaitEvents::open(tid, tracepoints, parks).map_err(|source| OpenError {
                    what: "wait tracepoints",
                    source,
                    mmap: false,
                })?;
                let now = crate::source::now_ns();
                let mut clock = TickClock::new(pid, tid, name, attach_ns.unwrap_or(now), setup.stall_floor_ns);
                if let Some(at) = attach_ns {
                    // Enabled first, then looked at: a wait that ends in between still shows.
                    if in_wait_call(pid, tid) {
                        clock.found_waiting(at, &mut pending);
                    } else if tid == pid {
                        clock.assume_busy(at);
                    }
                }
                Some((events, clock))
            }
        };
        let mut thread = Thread { pid, tid, cpu, off, later_off, away: None, waits, pending };
        let enable = |s: &mut Sampler, what| s.enable().map_err(|source| OpenError { what, source, mmap: false });
        if let Some(cpu) = &mut thread.cpu {
            enable(cpu, "cpu-clock")?;
        }
        if let Some((off, _)) = &mut thread.off {
            enable(off, "sched_switch")?;
        }
        Ok(thread)
    }

    /// Stops the thread's events.
    pub fn disable(&mut self) {
        for s in self.cpu.iter_mut().chain(self.off.as_mut().map(|o| &mut o.0)) {
            let _ = s.disable();
        }
        if let Some((events, _)) = &mut self.waits {
            events.disable();
        }
    }

    /// The thread's loop: its totals as of `now_ns` when they changed (perf mode).
    pub fn totals(&mut self, now_ns: u64) -> Option<Event> {
        self.waits.as_mut()?.1.totals(now_ns)
    }

    /// The start of the stall-long tick this thread ran at `t` (perf mode; 0 otherwise or when
    /// none): a sample's tick, read once the thread's wait records are.
    pub fn tick_of(&self, t: u64) -> u64 {
        self.waits.as_ref().map_or(0, |(_, clock)| clock.tick_of(t))
    }

    /// The loop this thread is, if any (perf mode).
    pub fn loop_id(&self) -> Option<crate::event::LoopId> {
        self.waits.as_ref()?.1.id()
    }

    /// The thread's name (perf mode).
    pub fn name(&self) -> Option<&str> {
        Some(self.waits.as_ref()?.1.name())
    }

    /// Marks the thread a pool's worker or not (perf mode): see [`TickClock::set_worker`].
    pub fn set_worker(&mut self, worker: bool) {
        if let Some((_, clock)) = &mut self.waits {
            clock.set_worker(worker);
        }
    }

    /// Moves every record in the thread's rings into `out`; returns the records the kernel lost.
    pub fn drain(&mut self, out: &mut Vec<Event>) -> u64 {
        let mut lost = 0;
        out.append(&mut self.pending);
        if let Some((events, clock)) = &mut self.waits {
            lost += events.drain(clock, out);
            if let (Some((sched_switch, kernel)), Some(_)) = (self.later_off, clock.id()) {
                self.later_off = None;
                // Not permitted now, or the thread is gone: it stays without off-CPU stacks.
                if let Ok(mut off) = off_cpu(self.tid, sched_switch, kernel) {
                    if off.0.enable().is_ok() {
                        self.off = Some(off);
                    }
                }
            }
        }
        let clock = self.waits.as_ref().map(|(_, clock)| clock);
        let tick_of = |t: u64| clock.map_or(0, |c| c.tick_of(t));
        while let Some(record) = self.cpu.as_mut().and_then(|c| c.next_record()) {
            match record.parse_record() {
                Ok(Record::Sample(s)) => {
                    let mut sample = cpu_sample(&s, self.pid, self.tid);
                    sample.tick_ns = tick_of(sample.t_ns);
                    out.push(Event::Sample(sample));
                }
                Ok(Record::Lost(l)) => lost += l.lost,
                _ => {}
            }
        }
        let Some((off, sched_switch)) = &mut self.off else { return lost };
        while let Some(record) = off.next_record() {
            if record.ty() == sys::PERF_RECORD_SWITCH {
                if record.misc() & sys::PERF_RECORD_MISC_SWITCH_OUT != 0 {
                    continue;
                }
                // Back on a CPU: the wait that began at the switch-out is over.
                let (Some(away), Some(t_in)) = (self.away.take(), switch_time(&record.to_contiguous())) else {
                    continue;
                };
                if t_in >= away.t_ns {
                    // The tick it came back to, past the floor by then (a sleep that began the
                    // stall started before the floor), as the BPF source stamps it.
                    let tick_ns = tick_of(t_in);
                    out.push(Event::Sample(Sample {
                        pid: self.pid,
                        tid: self.tid,
                        t_ns: away.t_ns,
                        origin: SampleOrigin::PerfOffCpu,
                        weight_ns: t_in - away.t_ns,
                        tick_ns,
                        off_cpu: Some(OffCpu { syscall: None, wchan: None }),
                        ips: away.ips,
                        count: 1,
                        js: Vec::new(),
                        py: Vec::new(),
                        stack: None,
                    }));
                }
                continue;
            }
            match record.parse_record() {
                // A preemption (still runnable) is not a wait; only a sleep starts one.
                Ok(Record::Sample(s)) if sched_switch.is_voluntary_switch_of(self.tid, s.raw().unwrap_or_default()) => {
                    let ips = addresses(s.callchain().unwrap_or_default());
                    self.away = Some(Away { t_ns: s.time().unwrap_or(0), ips });
                }
                Ok(Record::Lost(l)) => {
                    lost += l.lost;
                    // The switch-in may be among the lost: no honest duration for this wait.
                    self.away = None;
                }
                _ => {}
            }
        }
        lost
    }
}

/// The `cpu-clock` sampler of one thread (`tid`) or of one CPU (`cpu`, every process), disabled.
pub(super) fn cpu_sampler(
    tid: Option<u32>,
    cpu: Option<usize>,
    rate_hz: u64,
    kernel: bool,
) -> Result<Sampler, OpenError> {
    let mut b = Builder::new(Software::CPU_CLOCK);
    match (tid, cpu) {
        (Some(tid), _) => b.observe_pid(tid as i32).any_cpu(),
        (None, Some(cpu)) => b.any_pid().one_cpu(cpu),
        (None, None) => b.any_cpu(),
    };
    b.sample_frequency(rate_hz)
        .clockid(Clock::MONOTONIC)
        .sample(SampleFlag::TID | SampleFlag::TIME | SampleFlag::CALLCHAIN | SampleFlag::PERIOD)
        .exclude_kernel(!kernel)
        .exclude_idle(true);
    sampler(&b, "cpu-clock")
}

/// A `cpu-clock` record as a sample (`pid`, `tid` when the record does not say).
pub(super) fn cpu_sample(s: &perf_event::data::Sample, pid: u32, tid: u32) -> Sample {
    Sample {
        pid: s.pid().unwrap_or(pid),
        tid: s.tid().unwrap_or(tid),
        t_ns: s.time().unwrap_or(0),
        origin: SampleOrigin::PerfCpu,
        // cpu-clock counts nanoseconds, so its period is the time a sample stands for.
        weight_ns: s.period().unwrap_or(0),
        tick_ns: 0,
        off_cpu: None,
        ips: addresses(s.callchain().unwrap_or_default()),
        count: 1,
        js: Vec::new(),
        py: Vec::new(),
        stack: None,
    }
}

/// The thread's `sched_switch` sampler (off-CPU stacks and switch records), still disabled.
fn off_cpu(tid: u32, sched_switch: SchedSwitch, kernel: bool) -> Result<(Sampler, SchedSwitch), OpenError> {
    let mut off = Builder::new(Tracepoint::with_id(sched_switch.id));
    off.observe_pid(tid as i32)
        .any_cpu()
        .sample_period(1)
        .clockid(Clock::MONOTONIC)
        .sample(SampleFlag::TID | SampleFlag::TIME | SampleFlag::CALLCHAIN | SampleFlag::RAW)
        // Switch records carry the time the thread comes back.
        .context_switch(true)
        .sample_id_all(true)
        // The tracepoint fires in the kernel, so it must count kernel events; only its callchain
        // leaves the kernel part out when we may not see it.
        .exclude_kernel(false)
        .exclude_callchain_kernel(!kernel);
    let build = || off.build().map_err(|source| OpenError { what: "sched_switch", source, mmap: false });
    // Over the locked-memory allowance (a user without CAP_IPC_LOCK), the usual size will do.
    let ring = match build()?.sampled(OFF_CPU_RING_BYTES) {
        Ok(ring) => ring,
        Err(_) => {
            build()?.sampled(RING_BYTES).map_err(|source| OpenError { what: "sched_switch", source, mmap: true })?
        }
    };
    Ok((ring, sched_switch))
}

/// Builds the event and maps its ring, still disabled.
fn sampler(builder: &Builder, what: &'static str) -> Result<Sampler, OpenError> {
    let counter = builder.build().map_err(|source| OpenError { what, source, mmap: false })?;
    counter.sampled(RING_BYTES).map_err(|source| OpenError { what, source, mmap: true })
}

/// The callchain without its `PERF_CONTEXT_*` markers, nor the 0 that ends a frame-pointer walk
/// at a null return address: innermost first, kernel before user.
fn addresses(callchain: &[u64]) -> Vec<u64> {
    callchain.iter().copied().filter(|&ip| ip != 0 && ip < sys::PERF_CONTEXT_MAX).collect()
}

/// The time in a switch record's `sample_id` trailer (`pid, tid: u32; time: u64` for our
/// sample type); perf-event-data parses switch records to a bare `Record::Switch`.
fn switch_time(body: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(body.get(8..16)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_markers_are_stripped_and_order_kept() {
        const KERNEL: u64 = -128i64 as u64;
        const USER: u64 = -512i64 as u64;
        let chain = [KERNEL, 0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100, USER, 0x40_1000, 0x40_2000, 0];
        assert_eq!(addresses(&chain), vec![0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100, 0x40_1000, 0x40_2000]);
        assert!(addresses(&[USER]).is_empty());
    }

    #[test]
    fn switch_time_reads_the_trailer() {
        let mut body = vec![0u8; 16];
        body[..4].copy_from_slice(&7u32.to_ne_bytes());
        body[4..8].copy_from_slice(&8u32.to_ne_bytes());
        body[8..].copy_from_slice(&123_456_789u64.to_ne_bytes());
        assert_eq!(switch_time(&body), Some(123_456_789));
        assert_eq!(switch_time(&body[..12]), None);
    }
}
