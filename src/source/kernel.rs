//! The kernel's view of a target: the BPF source when the kernel lets looptop load it, else the
//! perf source. One type for the commands, which never care which one runs.

use super::bpf::BpfSource;
use super::perf::{PerfError, PerfOptions, PerfSource};
use crate::event::Event;

/// The BPF source, or the perf source it fell back on.
pub enum KernelSource {
    /// Ticks, stacks and off-CPU waits counted in the kernel.
    Bpf(Box<BpfSource>),
    /// One perf record per wait call, sample and context switch, parsed here.
    Perf(Box<PerfSource>),
}

impl KernelSource {
    /// Opens the BPF source, or else the perf source; the note says why BPF is not used (one
    /// line for the user), `None` when it is.
    pub fn open(options: PerfOptions) -> Result<(KernelSource, Option<String>), PerfError> {
        match BpfSource::new(options) {
            Ok(b) => Ok((KernelSource::Bpf(Box::new(b)), None)),
            Err(e) => {
                let p = PerfSource::new(options)?;
                let note = match e {
                    super::bpf::BpfError::Off => None,
                    e => Some(format!("{e}; using perf events instead, which cost the target more")),
                };
                Ok((KernelSource::Perf(Box::new(p)), note))
            }
        }
    }

    /// Whether the default options are permitted here (as [`PerfSource::permitted`]: BPF needs
    /// at least what perf needs).
    pub fn permitted() -> Result<(), PerfError> {
        PerfSource::permitted()
    }

    /// Observes `pid` from the next poll on.
    pub fn add_process(&mut self, pid: u32) -> Result<(), PerfError> {
        match self {
            KernelSource::Bpf(b) => b.add_process(pid),
            KernelSource::Perf(p) => p.add_process(pid),
        }
    }

    /// Reads what happened since the last poll; `last` on the final read.
    pub fn poll(&mut self, out: &mut Vec<Event>, last: bool) {
        match self {
            KernelSource::Bpf(b) => b.poll(out, last),
            KernelSource::Perf(p) => p.poll(out),
        }
    }

    /// Stops observing (cheap); closing happens on drop.
    pub fn disable(&mut self) {
        match self {
            KernelSource::Bpf(b) => b.disable(),
            KernelSource::Perf(p) => p.disable(),
        }
    }

    /// What could not be observed and why.
    pub fn notes(&self) -> &[String] {
        match self {
            KernelSource::Bpf(b) => b.notes(),
            KernelSource::Perf(p) => p.notes(),
        }
    }

    /// Records lost so far.
    pub fn lost(&self) -> u64 {
        match self {
            KernelSource::Bpf(b) => b.lost(),
            KernelSource::Perf(p) => p.lost(),
        }
    }

    /// One sentence on what was lost and what that means, when anything was.
    pub fn lost_note(&self) -> Option<String> {
        match self {
            KernelSource::Bpf(b) => b.lost_note(),
            KernelSource::Perf(p) => (p.lost() > 0).then(|| {
                format!("perf lost {} records (its rings were full): ticks or stacks around them are missing", p.lost())
            }),
        }
    }

    /// `bpf` or `perf`: which one runs.
    pub fn name(&self) -> &'static str {
        match self {
            KernelSource::Bpf(_) => "bpf",
            KernelSource::Perf(_) => "perf",
        }
    }
}
