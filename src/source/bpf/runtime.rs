//! The libuv pool and V8's GC pauses of a process attached without the agent, from BPF uprobes
//! on the sites `perf/sites.rs` finds: the pool's queue, workers and waits are kept in the
//! kernel (`pools`, read every poll), a GC pause is one ring-buffer record.

use super::layout::Pool;
use crate::event::Event;
use crate::source::perf::sites::{RuntimeProbes, Site};
use crate::source::perf::uprobes::Role;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::UProbe;
use std::collections::HashMap;

/// Buckets of the wait histogram (`WAIT_BUCKETS` in the C): 16 per power of two.
pub const WAIT_SUB_BITS: u32 = 4;

/// The range `[low, high)` of waits (ns) in bucket `b`.
pub fn wait_range(b: usize) -> (u64, u64) {
    looptop_abi::log_linear_range(b, WAIT_SUB_BITS)
}

/// The program that runs at a site of this role.
fn program(role: Role) -> &'static str {
    use crate::event::GcKind;
    match role {
        Role::Submit => "pool_submit",
        Role::QueueWork => "pool_queue_work",
        Role::WorkStart => "pool_start",
        Role::WorkEnd => "pool_end",
        Role::GcStart => "gc_start",
        Role::GcEnd => "gc_end",
        Role::GcKind(GcKind::Major) => "gc_major",
        Role::GcKind(_) => "gc_minor",
    }
}

/// The uprobe programs, loaded once; attached per process.
pub const PROGRAMS: [&str; 8] =
    ["pool_submit", "pool_queue_work", "pool_start", "pool_end", "gc_start", "gc_end", "gc_minor", "gc_major"];

/// The maps of the pools' state.
pub struct PoolMaps {
    /// Process → its pool's gauges and waits.
    pub pools: BpfHashMap<MapData, u32, Pool>,
    /// Process → the most queued since the last read.
    pub queued_max: BpfHashMap<MapData, u32, i64>,
}

/// A site: the probed file (device, inode), the offset, and the program run there.
type SiteKey = (u64, u64, u64, &'static str);

/// The uprobes attached, each once for every process that runs its file: a uprobe is the file's
/// (the programs keep only observed processes' hits). Attached for all processes, not for one: a
/// uprobe bound to a process is a perf event of its task, which the kernel switches in and out
/// with the task at every context switch (that cost a busy server 12 % of its throughput).
#[derive(Default)]
pub struct Uprobes {
    links: HashMap<SiteKey, (aya::programs::uprobe::UProbeLinkId, u32)>,
}

impl Uprobes {
    fn attach(&mut self, ebpf: &mut aya::Ebpf, site: &Site) -> Result<SiteKey, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&site.path).map_err(|e| e.to_string())?;
        let key = (meta.dev(), meta.ino(), site.offset, program(site.role));
        if let Some((_, n)) = self.links.get_mut(&key) {
            *n += 1;
            return Ok(key);
        }
        let prog = ebpf.program_mut(key.3).and_then(|p| <&mut UProbe>::try_from(p).ok());
        let prog = prog.ok_or_else(|| format!("no program {}", key.3))?;
        let link = prog.attach(None, site.offset, &site.path, None).map_err(|e| super::chain(&e))?;
        self.links.insert(key, (link, 1));
        Ok(key)
    }

    fn release(&mut self, ebpf: &mut aya::Ebpf, keys: Vec<SiteKey>) {
        for key in keys {
            let Some((_, n)) = self.links.get_mut(&key) else { continue };
            *n -= 1;
            if *n > 0 {
                continue;
            }
            if let Some((link, _)) = self.links.remove(&key) {
                if let Some(p) = ebpf.program_mut(key.3).and_then(|p| <&mut UProbe>::try_from(p).ok()) {
                    let _ = p.detach(link);
                }
            }
        }
    }
}

/// One process's probes and what looptop last read of its pool.
pub struct ProcessRuntime {
    pid: u32,
    /// Keeps the probed files open (the sites' paths name them).
    _probes: RuntimeProbes,
    sites: Vec<SiteKey>,
    pool_size: Option<u64>,
    /// Waits per bucket already reported.
    waits_seen: Vec<u64>,
    /// The last sample had items in flight.
    busy: bool,
}

impl ProcessRuntime {
    /// Attaches the programs to `pid`'s sites (the pool's only when `pool`); the pool and probe
    /// events go to `pending`, what would not attach to `notes`.
    pub fn attach(
        ebpf: &mut aya::Ebpf,
        uprobes: &mut Uprobes,
        maps: &mut PoolMaps,
        pid: u32,
        pool: bool,
        pending: &mut Vec<Event>,
        notes: &mut Vec<String>,
    ) -> Option<ProcessRuntime> {
        let probes = RuntimeProbes::find(pid)?;
        let probes = if pool { probes } else { probes.without_pool()? };
        let mut sites = Vec::new();
        for site in &probes.sites {
            match uprobes.attach(ebpf, site) {
                Ok(key) => sites.push(key),
                Err(e) => {
                    notes.push(format!(
                        "the thread pool and GC pauses of process {pid} are not probed: a uprobe would not attach ({e})"
                    ));
                    uprobes.release(ebpf, sites);
                    return None;
                }
            }
        }
        if let Some(size) = probes.pool_size {
            if maps.pools.insert(pid, Pool::default(), 0).is_err() || maps.queued_max.insert(pid, 0, 0).is_err() {
                uprobes.release(ebpf, sites);
                return None;
            }
            pending.push(Event::PoolKind { pid, kind: "libuv".into(), size });
        }
        if probes.gc {
            pending.push(Event::ProbeReady { pid });
        }
        let pool_size = probes.pool_size;
        Some(ProcessRuntime { pid, _probes: probes, sites, pool_size, waits_seen: Vec::new(), busy: false })
    }

    /// The pool's state now and the waits since the last read, when anything happened.
    pub fn poll(&mut self, maps: &mut PoolMaps, now_ns: u64, out: &mut Vec<Event>) {
        let Some(size) = self.pool_size else { return };
        let Ok(p) = maps.pools.get(&self.pid, 0) else { return };
        let queued = p.queued.max(0);
        let queued_max = maps.queued_max.get(&self.pid, 0).unwrap_or(0).max(queued);
        let in_flight = (queued + p.running.max(0)) as u64;
        self.waits_seen.resize(p.waits.len(), 0);
        let mut waits = Vec::new();
        for (b, (&n, &max)) in p.waits.iter().zip(p.wait_max.iter()).enumerate() {
            let new = n.saturating_sub(self.waits_seen[b]);
            if new > 0 {
                let (low_ns, high_ns) = wait_range(b);
                let max_ns = max.min(high_ns);
                waits.push(Event::PoolWaits { pid: self.pid, low_ns, high_ns, count: new, max_ns, at_ns: 0 });
                self.waits_seen[b] = n;
            }
        }
        let active = !waits.is_empty() || queued_max > queued;
        if !active && !self.busy && in_flight == 0 {
            return;
        }
        out.push(Event::PoolSample { pid: self.pid, at_ns: now_ns, size, in_flight, queued_max: queued_max as u64 });
        out.extend(waits);
        self.busy = in_flight > 0;
        // The most queued since this read starts again from the queue now.
        let _ = maps.queued_max.insert(self.pid, queued, 0);
    }

    /// Removes the process's probes (those no other observed process shares) and its pool's
    /// state.
    pub fn detach(self, ebpf: &mut aya::Ebpf, uprobes: &mut Uprobes, maps: &mut PoolMaps) {
        let _ = maps.pools.remove(&self.pid);
        let _ = maps.queued_max.remove(&self.pid);
        uprobes.release(ebpf, self.sites);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_buckets_cover_their_range() {
        assert_eq!(wait_range(0), (0, 1));
        assert_eq!(wait_range(15), (15, 16));
        assert_eq!(wait_range(16), (16, 17));
        let (low, high) = wait_range(16 * 10 + 3);
        assert!(low < high && high - low <= low / 16 + 1);
    }
}
