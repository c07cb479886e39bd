//! [`Symbolizer`]: what each process needs to name its addresses, remembered past its exit, and
//! a cache of every address named.

use super::frame::Frame;
use super::kernel::{Kallsyms, KERNEL_MODULE};
use super::maps::{Backing, Mapping, Maps};
use super::native::Native;
use super::perfmap::PerfMap;
use super::source::SourceCache;
use super::v8name;
use crate::event::KERNEL_ADDRESS_MIN;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Turns sampled addresses into [`Frame`]s: native code (ELF symbols and DWARF lines), the
/// kernel, and JIT code named in perf maps (V8, CPython); also reads source lines.
#[derive(Debug)]
pub struct Symbolizer {
    native: Native,
    procs: HashMap<u32, Process>,
    kernel: Kernel,
    sources: SourceCache,
    /// Bumped whenever an address may now be named differently (JIT code replaced, a pid
    /// reused): caches of names keyed by address are stale from then on.
    epoch: u64,
}

/// Kernel symbols, read on the first kernel address, and the kernel addresses named.
#[derive(Debug, Default)]
struct Kernel {
    syms: Option<Kallsyms>,
    named: HashMap<u64, Frame>,
}

impl Kernel {
    fn frame(&mut self, ip: u64) -> Frame {
        if let Some(f) = self.named.get(&ip) {
            return f.clone();
        }
        let f = self.syms.get_or_insert_with(Kallsyms::load).frame(ip);
        debug_assert_eq!(f.module.as_deref(), Some(KERNEL_MODULE));
        self.named.insert(ip, f.clone());
        f
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// What is remembered of one process.
#[derive(Debug)]
struct Process {
    /// Start time (`/proc/PID/stat` field 22), to notice a reused pid.
    start_time: Option<u64>,
    maps: Maps,
    perf_map: PerfMap,
    /// Whether the process sees this process's root directory (not in a container or chroot).
    same_root: bool,
    /// How to open each mapped ELF file from here, by its path in the process (or its mapping's
    /// start for a deleted file); `None` when it cannot be opened.
    files: HashMap<FileKey, Option<Arc<ElfFile>>>,
    /// Addresses named from files (or known to be unnameable).
    named: HashMap<u64, Frame>,
    /// Addresses named by the perf map; dropped when newer entries replace older ones.
    jit: HashMap<u64, Frame>,
    /// [`PerfMap::replaced`] when `jit` was last known current.
    jit_replaced: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    Path(Arc<str>),
    Deleted(u64),
}

/// Addresses of one ELF file to symbolize together.
struct Batch {
    elf: Arc<ElfFile>,
    /// The file's path in the process.
    module: Arc<str>,
    /// (address, file offset, index in the output).
    addrs: Vec<(u64, u64, usize)>,
}

/// An ELF file as this process can open it.
#[derive(Debug)]
struct ElfFile {
    /// A path that opens it: the original one, or `/proc/self/fd/N` for `fd`.
    path: PathBuf,
    /// Kept open for files only reachable through the process (containers, deleted files), so
    /// they can still be read after it exits.
    _fd: Option<File>,
}

impl Symbolizer {
    /// A symbolizer that knows no process yet.
    pub fn new() -> Self {
        Self::with_native_lines(true)
    }

    /// A symbolizer that reads DWARF for native frames' `file:line` only when `lines` is set.
    pub(crate) fn with_native_lines(lines: bool) -> Self {
        Symbolizer {
            native: Native::new(lines),
            procs: HashMap::new(),
            kernel: Kernel::default(),
            sources: SourceCache::default(),
            epoch: 0,
        }
    }

    /// Remembers what naming `pid`'s addresses needs, so they can be named after it exits: its
    /// executable mappings (read again on every call, as new code gets mapped), the files behind
    /// them and its perf map (opened, and read up to date). Does nothing for a process that is
    /// gone.
    pub fn observe(&mut self, pid: u32) {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let start_time = read_start_time(&proc_dir);
        if let (Some(p), Some(now)) = (self.procs.get(&pid), start_time) {
            if p.start_time.is_some_and(|then| then != now) {
                // The pid was reused: forget the old process.
                self.procs.remove(&pid);
                self.epoch += 1;
            }
        }
        let p = self.procs.entry(pid).or_insert_with(|| Process::new(pid, &proc_dir, start_time));
        p.read_maps(pid);
        if p.perf_map.open() && p.refresh_perf_map() {
            self.epoch += 1;
        }
    }

    /// Changes whenever a name given earlier for an address may no longer hold (see
    /// [`Frame::is_settled`] for which names hold at all).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// One frame per address of `ips` (innermost first, as in a [`crate::event::Sample`]), in
    /// the same order. Addresses already named cost a hash lookup.
    pub fn symbolize(&mut self, pid: u32, ips: &[u64]) -> Vec<Frame> {
        if !self.procs.contains_key(&pid) && ips.iter().any(|&ip| ip < KERNEL_ADDRESS_MIN) {
            self.observe(pid);
        }
        let Symbolizer { native, procs, kernel, epoch, .. } = self;
        let mut process = procs.get_mut(&pid);
        let mut out: Vec<Option<Frame>> = vec![None; ips.len()];
        // Addresses to look up in ELF files, one batch per file.
        let mut batches: HashMap<PathBuf, Batch> = HashMap::new();
        let mut refreshed = false;
        let mut remapped = false;
        for (i, &ip) in ips.iter().enumerate() {
            if ip >= KERNEL_ADDRESS_MIN {
                out[i] = Some(kernel.frame(ip));
                continue;
            }
            let Some(p) = process.as_deref_mut() else {
                out[i] = Some(Frame::unknown(None));
                continue;
            };
            if let Some(f) = p.named.get(&ip).or_else(|| p.jit.get(&ip)) {
                out[i] = Some(f.clone());
                continue;
            }
            if !remapped && p.maps.find(ip).is_none() {
                // Code mapped since the mappings were last read (a library loaded late).
                p.read_maps(pid);
                remapped = true;
            }
            match p.maps.find(ip) {
                Some(m @ Mapping { backing: Backing::File(path) | Backing::Deleted(path), .. }) => {
                    let key = match &m.backing {
                        Backing::Deleted(_) => FileKey::Deleted(m.start),
                        _ => FileKey::Path(path.clone()),
                    };
                    match p.files.get(&key).cloned().flatten() {
                        Some(elf) => {
                            let offset = (ip - m.start).wrapping_add(m.offset);
                            let module = path.clone();
                            let b = batches.entry(elf.path.clone()).or_insert_with(|| Batch {
                                elf,
                                module,
                                addrs: Vec::new(),
                            });
                            b.addrs.push((ip, offset, i));
                        }
                        None => {
                            let f = Frame::unknown(Some(path.to_string()));
                            p.named.insert(ip, f.clone());
                            out[i] = Some(f);
                        }
                    }
                }
                Some(Mapping { backing: Backing::Special(name), .. }) => {
                    let f = Frame::unknown(Some(name.to_string()));
                    p.named.insert(ip, f.clone());
                    out[i] = Some(f);
                }
                // Anonymous memory, or no mapping known (yet): JIT code, named by the perf map.
                Some(Mapping { backing: Backing::Anon, .. }) | None => {
                    if !refreshed {
                        if p.refresh_perf_map() {
                            *epoch += 1;
                        }
                        refreshed = true;
                    }
                    match p.perf_map.lookup(ip) {
                        Some(name) => {
                            let f = v8name::parse(name, Some(p.perf_map.name()));
                            p.jit.insert(ip, f.clone());
                            out[i] = Some(f);
                        }
                        // Not cached: the map may name it later.
                        None => out[i] = Some(Frame::unknown(None)),
                    }
                }
            }
        }
        for Batch { elf, module, addrs } in batches.into_values() {
            let offsets: Vec<u64> = addrs.iter().map(|a| a.1).collect();
            let frames = native.symbolize(&elf.path, &module, &offsets);
            let Some(p) = process.as_deref_mut() else { break };
            for ((ip, _, i), f) in addrs.into_iter().zip(frames) {
                let f = f.unwrap_or_else(|| Frame::unknown(Some(module.to_string())));
                p.named.insert(ip, f.clone());
                out[i] = Some(f);
            }
        }
        out.into_iter().map(|f| f.unwrap_or_else(|| Frame::unknown(None))).collect()
    }

    /// Line `line` (1-based) of source file `file` (a path or a `file://` URL), trimmed and cut
    /// to 160 characters; `None` for Node's built-in modules, unreadable or huge files.
    pub fn source_line(&mut self, file: &str, line: u32) -> Option<String> {
        self.sources.line(file, line)
    }
}

impl Process {
    fn new(pid: u32, proc_dir: &Path, start_time: Option<u64>) -> Self {
        let root = proc_dir.join("root");
        let same_root = match (std::fs::metadata(&root), std::fs::metadata("/")) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            // Not permitted to look: assume the common case.
            _ => true,
        };
        let nspid = read_nspid(proc_dir).unwrap_or(pid);
        // Through the process's root while it runs (its /tmp may be a container's), then ours.
        let mut candidates = vec![root.join(format!("tmp/perf-{nspid}.map"))];
        if same_root || nspid == pid {
            candidates.push(PathBuf::from(format!("/tmp/perf-{pid}.map")));
        }
        Process {
            start_time,
            maps: Maps::default(),
            perf_map: PerfMap::new(format!("/tmp/perf-{nspid}.map"), candidates),
            same_root,
            files: HashMap::new(),
            named: HashMap::new(),
            jit: HashMap::new(),
            jit_replaced: 0,
        }
    }

    /// Reads the process's mappings again (nothing changes once it is gone).
    fn read_maps(&mut self, pid: u32) {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(text) = std::fs::read_to_string(proc_dir.join("maps")) {
            self.maps.update(&text);
            self.open_files(&proc_dir);
        }
    }

    /// Reads what the perf map gained; forgets names looked up in it when entries were replaced
    /// (and says so).
    fn refresh_perf_map(&mut self) -> bool {
        // An unreadable map names nothing more: its addresses stay unknown.
        let _ = self.perf_map.refresh();
        if self.perf_map.replaced() != self.jit_replaced {
            self.jit.clear();
            self.jit_replaced = self.perf_map.replaced();
            return true;
        }
        false
    }

    /// Decides, for each mapped file not seen before, how to open it from here; opens it now
    /// when only the live process makes it reachable.
    fn open_files(&mut self, proc_dir: &Path) {
        let mut new = Vec::new();
        for m in self.maps.iter() {
            let key = match &m.backing {
                Backing::File(p) => FileKey::Path(p.clone()),
                Backing::Deleted(_) => FileKey::Deleted(m.start),
                _ => continue,
            };
            if self.files.contains_key(&key) {
                continue;
            }
            let elf = match &m.backing {
                Backing::File(p) if self.same_root => Some(ElfFile { path: PathBuf::from(&**p), _fd: None }),
                Backing::File(p) => open_fd(&proc_dir.join("root").join(p.trim_start_matches('/'))),
                _ => open_fd(&proc_dir.join(format!("map_files/{:x}-{:x}", m.start, m.end))),
            };
            new.push((key, elf.map(Arc::new)));
        }
        self.files.extend(new);
    }
}

/// Opens `path` and keeps it open, to be read later through `/proc/self/fd`.
fn open_fd(path: &Path) -> Option<ElfFile> {
    let f = File::open(path).ok()?;
    Some(ElfFile { path: PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())), _fd: Some(f) })
}

/// Field 22 of `/proc/PID/stat`, counted after the command name (which may hold spaces).
fn read_start_time(proc_dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The pid in the process's own namespace: the last value of `NSpid:` in `/proc/PID/status`.
fn read_nspid(proc_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_ascii_whitespace().last()?.parse().ok()
}
