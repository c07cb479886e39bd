//! [`Symbolizer`]: what each process needs to name its addresses, remembered past its exit, and
//! a cache of every address named.

use super::frame::{Frame, FrameKind, JsTier};
use super::kernel::{Kallsyms, KERNEL_MODULE};
use super::maps::{Backing, Mapping, Maps};
use super::native::{Native, Ranges};
use super::perfmap::PerfMap;
use super::source::SourceCache;
use super::v8heap::{self, V8Heap};
use super::v8name;
use crate::event::KERNEL_ADDRESS_MIN;
use crate::safefs::{self, Mapped, Reader};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

/// ELF files larger than this are not read (a sparse file is not a library).
const MAX_ELF: u64 = 8 << 30;

/// The ELF files open for any process, by (device, inode, whether DWARF is read): processes
/// that map the same library share one open file, and blazesym's parse of it.
type OpenElves = HashMap<(u64, u64, bool), Weak<ElfFile>>;

/// Turns sampled addresses into [`Frame`]s: native code (ELF symbols and DWARF lines), the
/// kernel, and JIT code named in perf maps (V8, CPython); also reads source lines.
#[derive(Debug)]
pub struct Symbolizer {
    native: Native,
    pub(super) procs: HashMap<u32, Process>,
    pub(super) kernel: Kernel,
    sources: SourceCache,
    elves: OpenElves,
    /// Bumped whenever an address may now be named differently (JIT code replaced, a pid
    /// reused): caches of names keyed by address are stale from then on.
    epoch: u64,
    /// Running lines of interpreted frames, by (pid, frame words, function start line and column).
    js_lines: HashMap<(u32, [u64; 2], u32, u32), Option<u32>>,
    /// Unwinding copied stacks ([`Symbolizer::unwind`]).
    pub(super) unwinding: super::unwind::Unwinding,
}

/// Running lines kept at most before the cache starts over.
const MAX_JS_LINES: usize = 1 << 16;
/// Addresses named (a process's, the kernel's) kept at most before the cache starts over.
const MAX_NAMED: usize = 1 << 14;

/// Kernel symbols, read on the first kernel address, and the kernel addresses named.
#[derive(Debug, Default)]
pub(super) struct Kernel {
    syms: Option<Kallsyms>,
    named: HashMap<u64, Frame>,
}

impl Kernel {
    /// Reads the kernel's symbols now rather than at the first kernel frame (a third of a
    /// second that would otherwise fall inside the first stall looked at).
    pub(super) fn warm(&mut self) {
        self.syms.get_or_insert_with(Kallsyms::load);
    }

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
pub(super) struct Process {
    /// Its pid.
    pub(super) pid: u32,
    /// Start time (`/proc/PID/stat` field 22), to notice a reused pid.
    start_time: Option<u64>,
    pub(super) maps: Maps,
    perf_map: PerfMap,
    /// Whose permissions its files (ELF files, perf map, sources) are read with; `None`: it was
    /// gone before anyone could tell whose it was, so none are read.
    reader: Option<Reader>,
    /// Whether the process sees this process's root directory (not in a container or chroot).
    same_root: bool,
    /// How to open each mapped ELF file from here, by its path in the process (or its mapping's
    /// start for a deleted file); `None` when it cannot be opened.
    pub(super) files: HashMap<FileKey, Option<Arc<ElfFile>>>,
    /// Addresses named from files (or known to be unnameable).
    named: HashMap<u64, Frame>,
    /// Addresses named by the perf map; dropped when newer entries replace older ones.
    jit: HashMap<u64, Frame>,
    /// [`PerfMap::replaced`] when `jit` was last known current.
    jit_replaced: u64,
    /// When the mappings were last read for an address outside them.
    remapped_at: Option<std::time::Instant>,
    /// Counts the readings of its mappings and perf map that found something new.
    pub(super) generation: u64,
    /// V8's layout, once looked for, with the [`Process::generation`] it was looked for at.
    v8: Option<(u64, Option<Arc<V8Heap>>)>,
    /// CPython in this process, looked for as V8 is.
    pub(super) python: super::python::PyProcess,
}

/// How often an address outside every known mapping makes the mappings be read again: a stack
/// walked through code without frame pointers yields such addresses in most samples, and
/// reading `/proc/PID/maps` for each was most of looptop's own CPU while attached.
const REMAP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum FileKey {
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

/// An ELF file the process maps, opened once (see [`safefs::open_mapped`]).
#[derive(Debug)]
pub(super) struct ElfFile {
    /// `/proc/self/fd/N` for `fd`: blazesym opens that, the very file checked, whatever its
    /// name holds now.
    pub(super) path: PathBuf,
    /// Kept open so it can be read after the process exits.
    fd: File,
    /// Whether its DWARF (and debug links, which name further files) may be read: not for
    /// another user's process, whose files could name a FIFO or another user's file.
    lines: bool,
    /// Its functions named so far.
    ranges: std::sync::Mutex<Ranges>,
    /// V8's layout, if it holds V8 (read on first need).
    v8: std::sync::OnceLock<Option<Arc<V8Heap>>>,
    /// Whether a thread was started to read `v8` ahead of need.
    v8_warming: std::sync::atomic::AtomicBool,
    /// What it exports of CPython, if it may hold it (read on first need).
    pub(super) python: std::sync::OnceLock<Option<super::python::PyElf>>,
    /// Its CFI, for unwinding copied stacks (read on first need).
    cfi: std::sync::OnceLock<Option<Arc<super::unwind::Cfi>>>,
}

impl ElfFile {
    /// Its CFI (`.eh_frame`), read once; `None` when it has none.
    pub(super) fn cfi(&self) -> Option<Arc<super::unwind::Cfi>> {
        self.cfi.get_or_init(|| super::unwind::Cfi::read(&self.fd).map(Arc::new)).clone()
    }
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
            elves: HashMap::new(),
            epoch: 0,
            js_lines: HashMap::new(),
            unwinding: Default::default(),
        }
    }

    /// Remembers what naming `pid`'s addresses needs, so they can be named after it exits: its
    /// executable mappings (read again on every call, as new code gets mapped), the files behind
    /// them and its perf map (opened, and read up to date). Does nothing for a process that is
    /// gone.
    pub fn observe(&mut self, pid: u32) {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let start_time = crate::target::proc::state_and_start(&proc_dir).map(|(_, start)| start);
        if let (Some(p), Some(now)) = (self.procs.get(&pid), start_time) {
            if p.start_time.is_some_and(|then| then != now) {
                // The pid was reused: forget the old process.
                self.procs.remove(&pid);
                self.epoch += 1;
            }
        }
        let p = self.procs.entry(pid).or_insert_with(|| Process::new(pid, &proc_dir, start_time));
        p.read_maps(pid, &mut self.elves);
        if p.perf_map.open() && p.refresh_perf_map() {
            self.epoch += 1;
        }
    }

    /// Changes whenever process `pid`'s mappings or perf map were read and may name an address
    /// that was nameless before.
    pub fn generation(&self, pid: u32) -> u64 {
        self.procs.get(&pid).map_or(0, |p| p.generation)
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
        let Symbolizer { native, procs, kernel, epoch, elves, sources, .. } = self;
        let mut process = procs.get_mut(&pid);
        // Names by address are caches: past a bound they start over, so that hours of new
        // addresses (JIT code, kernel paths) do not grow looptop's memory.
        if kernel.named.len() >= MAX_NAMED {
            kernel.named.clear();
        }
        if let Some(p) = process.as_deref_mut().filter(|p| p.named.len() + p.jit.len() >= MAX_NAMED) {
            p.named.clear();
            p.jit.clear();
        }
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
            if !remapped {
                remapped = p.remap_for(pid, ip, elves);
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
                            let known = elf.ranges.lock().ok().and_then(|r| r.get(offset, path));
                            if let Some(f) = known {
                                p.named.insert(ip, f.clone());
                                out[i] = Some(f);
                                continue;
                            }
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
                        Some((start, name)) => {
                            let mut f = v8name::parse(name, Some(p.perf_map.name()));
                            f.exec_line = compiled_line(sources, p, pid, &f, start, ip);
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
            let frames = native.symbolize(&elf.path, &module, &offsets, elf.lines);
            let Some(p) = process.as_deref_mut() else { break };
            let mut ranges = elf.ranges.lock().ok();
            for ((ip, _, i), f) in addrs.into_iter().zip(frames) {
                let f = match f {
                    Some((f, range)) => {
                        if let (Some(r), Some(range)) = (ranges.as_deref_mut(), range) {
                            r.insert(range, &f);
                        }
                        f
                    }
                    None => Frame::unknown(Some(module.to_string())),
                };
                p.named.insert(ip, f.clone());
                out[i] = Some(f);
            }
        }
        out.into_iter().map(|f| f.unwrap_or_else(|| Frame::unknown(None))).collect()
    }

    /// Line `line` (1-based) of source file `file` (a path or a `file://` URL) of a frame of
    /// process `pid`, trimmed and cut to 160 characters; `None` for Node's built-in modules,
    /// huge files and files the process's user could not read (opened as that user, through the
    /// process's root when it has another).
    pub fn source_line(&mut self, pid: u32, file: &str, line: u32) -> Option<String> {
        let (reader, root) = self.reader(pid)?;
        self.sources.line(&reader, root.as_deref(), file, line)
    }

    /// How process `pid`'s files are read: as its user, through its root when it has another.
    fn reader(&self, pid: u32) -> Option<(Reader, Option<PathBuf>)> {
        match self.procs.get(&pid) {
            Some(p) => p.reader(pid),
            None => Some((Reader::of_pid(pid)?, None)),
        }
    }

    /// Starts reading V8's layout from process `pid`'s executable on a thread of its own, if
    /// the process has a perf map (V8 writes one for looptop): that takes tens of milliseconds
    /// (more on a busy machine), better spent before a stall than while one is being read.
    pub fn warm_v8(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if !p.perf_map.open() {
            return;
        }
        if let Some(elf) = p.v8_candidates().into_iter().next() {
            if elf.v8.get().is_none() && !elf.v8_warming.swap(true, std::sync::atomic::Ordering::Relaxed) {
                // No thread to be had: the first stack that needs the layout reads it.
                let _ = std::thread::Builder::new().name("looptop-v8".into()).spawn(move || {
                    elf.v8.get_or_init(|| V8Heap::from_elf(&elf.path).map(Arc::new));
                });
            }
        }
    }

    /// Reads, while process `pid` still runs, what V8's heap says of the JavaScript frames of a
    /// stack (`ips` as [`Symbolizer::symbolize`] takes them, `js` the frames' words): naming a
    /// stack's native frames can take a while the first time, and a process that exits meanwhile
    /// takes its heap with it. No native frame is named here (only the perf map, the mappings when
    /// an address is outside them, and V8's heap are read); the lines are kept for the naming.
    pub fn prime_js(&mut self, pid: u32, ips: &[u64], js: &[[u64; 2]]) {
        let mut frames = Vec::new();
        if let Some(p) = self.procs.get_mut(&pid) {
            let (mut refreshed, mut remapped) = (false, false);
            for (i, &ip) in ips.iter().enumerate() {
                if ip >= KERNEL_ADDRESS_MIN || p.named.contains_key(&ip) {
                    continue;
                }
                if !p.jit.contains_key(&ip) {
                    // As naming does: V8's binary may not be among the mappings known yet.
                    if !remapped {
                        remapped = p.remap_for(pid, ip, &mut self.elves);
                    }
                    if !matches!(p.maps.find(ip), None | Some(Mapping { backing: Backing::Anon, .. })) {
                        continue;
                    }
                    // Code V8 made since the map was last read (as naming does first).
                    if !refreshed && p.refresh_perf_map() {
                        self.epoch += 1;
                    }
                    refreshed = true;
                    let Some((start, name)) = p.perf_map.lookup(ip) else { continue };
                    let mut f = v8name::parse(name, Some(p.perf_map.name()));
                    f.exec_line = compiled_line(&mut self.sources, p, pid, &f, start, ip);
                    p.jit.insert(ip, f);
                }
                if let (Some(f), Some(&words)) = (p.jit.get(&ip), js.get(i)) {
                    frames.push((f.clone(), words));
                }
            }
        }
        for (f, words) in frames {
            self.running_line(pid, &f, words);
        }
    }

    /// The line an interpreted JavaScript frame `f` of process `pid` was running, from the two
    /// words the watchdog kept of its frame (see [`super::v8heap`]); `None` when it cannot be
    /// told (another tier, a layout not known, memory that is not what it should be, a line
    /// before the function's start).
    pub fn running_line(&mut self, pid: u32, f: &Frame, words: [u64; 2]) -> Option<u32> {
        if f.kind != FrameKind::Js || f.tier != Some(JsTier::Interpreted) || words == [0, 0] {
            return None;
        }
        let key = (pid, words, f.line?, f.col.unwrap_or(0));
        if let Some(&line) = self.js_lines.get(&key) {
            return line;
        }
        let p = self.procs.get_mut(&pid)?;
        let line = p
            .v8()
            .and_then(|heap| v8heap::interpreted_offset(&v8heap::ProcessMemory(pid), &heap, words[0], words[1]))
            .and_then(|offset| script_line(&mut self.sources, p, pid, f, offset));
        if self.js_lines.len() >= MAX_JS_LINES {
            self.js_lines.clear();
        }
        self.js_lines.insert(key, line);
        line
    }

    /// What the user should know about the files read so far: perf maps refused or read only
    /// in part.
    pub fn notes(&self) -> Vec<String> {
        let perf_maps = self.procs.values().filter_map(|p| p.perf_map.note().map(str::to_string));
        let mut notes: Vec<String> =
            perf_maps.chain(self.procs.values().filter_map(|p| p.python.unknown.clone())).collect();
        notes.sort();
        notes.dedup();
        notes
    }
}

/// The line of script offset `offset` in the file of JavaScript frame `f`: never before the
/// function's start (a position that is would be one of another function).
fn script_line(sources: &mut SourceCache, p: &Process, pid: u32, f: &Frame, offset: u32) -> Option<u32> {
    let (reader, root) = p.reader(pid)?;
    sources.line_of_offset(&reader, root.as_deref(), f.file.as_deref()?, offset).filter(|&l| l >= f.line.unwrap_or(1))
}

/// The running line of compiled JavaScript (baseline, Maglev or TurboFan code) at `ip`, in the
/// code that starts at `start`.
fn compiled_line(sources: &mut SourceCache, p: &mut Process, pid: u32, f: &Frame, start: u64, ip: u64) -> Option<u32> {
    if f.kind != FrameKind::Js {
        return None;
    }
    let mem = v8heap::ProcessMemory(pid);
    let offset = match f.tier? {
        JsTier::Interpreted => return None,
        JsTier::Baseline => v8heap::baseline_offset(&mem, &*p.v8()?, start, ip)?,
        JsTier::Maglev | JsTier::Optimized => v8heap::compiled_offset(&mem, &*p.v8()?, start, ip)?,
    };
    script_line(sources, p, pid, f, offset)
}

impl Process {
    fn new(pid: u32, proc_dir: &Path, start_time: Option<u64>) -> Self {
        let root = proc_dir.join("root");
        let same_root = match (std::fs::metadata(&root), std::fs::metadata("/")) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            // Not permitted to look: assume the common case.
            _ => true,
        };
        let nspid = crate::target::proc::nspid(pid).unwrap_or(pid);
        let reader = Reader::of_pid(pid);
        // Through the process's root while it runs (its /tmp may be a container's), then ours.
        let mut candidates = vec![root.join(format!("tmp/perf-{nspid}.map"))];
        if same_root || nspid == pid {
            candidates.push(PathBuf::from(format!("/tmp/perf-{pid}.map")));
        }
        Process {
            pid,
            start_time,
            maps: Maps::default(),
            perf_map: PerfMap::new(format!("/tmp/perf-{nspid}.map"), candidates, reader.clone()),
            reader,
            same_root,
            files: HashMap::new(),
            named: HashMap::new(),
            jit: HashMap::new(),
            jit_replaced: 0,
            remapped_at: None,
            generation: 0,
            v8: None,
            python: Default::default(),
        }
    }

    /// V8's layout in this process: from the first of its ELF files that exports it (read once).
    fn v8(&mut self) -> Option<Arc<V8Heap>> {
        // Looked for again when the mappings changed since it was not found (a process seen
        // before its exec, a library loaded late); each file is read once.
        let stale = match &self.v8 {
            None => true,
            Some((_, Some(_))) => false,
            Some((generation, None)) => *generation != self.generation,
        };
        if stale {
            let found = self
                .v8_candidates()
                .into_iter()
                .find_map(|elf| elf.v8.get_or_init(|| V8Heap::from_elf(&elf.path).map(Arc::new)).clone());
            self.v8 = Some((self.generation, found));
        }
        self.v8.as_ref().and_then(|v| v.1.clone())
    }

    /// The ELF files that may hold V8: the executable first (Node links V8 in), then the rest
    /// (a `libnode`).
    fn v8_candidates(&self) -> Vec<Arc<ElfFile>> {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).ok();
        let mut files: Vec<(&FileKey, &Arc<ElfFile>)> =
            self.files.iter().filter_map(|(k, f)| Some((k, f.as_ref()?))).collect();
        files.sort_by_key(|(k, _)| !matches!((k, &exe), (FileKey::Path(p), Some(e)) if Path::new(&**p) == e));
        files.into_iter().map(|(_, f)| Arc::clone(f)).collect()
    }

    /// How this process's files are read: as its user, through its root when it has another.
    fn reader(&self, pid: u32) -> Option<(Reader, Option<PathBuf>)> {
        Some((self.reader.clone()?, (!self.same_root).then(|| PathBuf::from(format!("/proc/{pid}/root")))))
    }

    /// Reads the mappings again when `ip` is outside every known one (code mapped since they
    /// were last read: a library loaded late, the program exec'd after looptop first looked), at
    /// most every [`REMAP_EVERY`]; whether it did.
    fn remap_for(&mut self, pid: u32, ip: u64, elves: &mut OpenElves) -> bool {
        if self.maps.find(ip).is_some() || self.remapped_at.is_some_and(|t| t.elapsed() < REMAP_EVERY) {
            return false;
        }
        self.read_maps(pid, elves);
        self.remapped_at = Some(std::time::Instant::now());
        true
    }

    /// Reads the process's mappings again (nothing changes once it is gone).
    fn read_maps(&mut self, pid: u32, elves: &mut OpenElves) {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(text) = std::fs::read_to_string(proc_dir.join("maps")) {
            self.maps.update(&text);
            self.open_files(pid, &proc_dir, elves);
            self.generation += 1;
        }
    }

    /// Reads what the perf map gained; forgets names looked up in it when entries were replaced
    /// (and says so).
    fn refresh_perf_map(&mut self) -> bool {
        // An unreadable map names nothing more: its addresses stay unknown.
        if self.perf_map.refresh().unwrap_or(false) {
            self.generation += 1;
        }
        if self.perf_map.replaced() != self.jit_replaced {
            self.jit.clear();
            self.jit_replaced = self.perf_map.replaced();
            return true;
        }
        false
    }

    /// Opens each mapped file not seen before, as the process's user could, and keeps it open
    /// (so it can be read after the process exits, and no one can swap it for another).
    fn open_files(&mut self, pid: u32, proc_dir: &Path, elves: &mut OpenElves) {
        let Some(reader) = self.reader.clone() else { return };
        let lines = !reader.is_other_user();
        let mut new = Vec::new();
        for m in self.maps.iter() {
            let (key, path) = match &m.backing {
                Backing::File(p) => (FileKey::Path(p.clone()), Some(p)),
                Backing::Deleted(_) => (FileKey::Deleted(m.start), None),
                _ => continue,
            };
            if self.files.contains_key(&key) || new.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let by_name = path.map(|p| match self.same_root {
                true => PathBuf::from(&**p),
                false => proc_dir.join("root").join(p.trim_start_matches('/')),
            });
            let mapped = Mapped { pid, start: m.start, end: m.end, path: by_name.as_deref(), inode: m.inode };
            let elf = safefs::open_mapped(&reader, &mapped, MAX_ELF).ok().and_then(|f| {
                let meta = f.metadata().ok()?;
                let id = (meta.dev(), meta.ino(), lines);
                if let Some(elf) = elves.get(&id).and_then(Weak::upgrade) {
                    return Some(elf);
                }
                let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
                let elf = Arc::new(ElfFile {
                    path,
                    fd: f,
                    lines,
                    ranges: Default::default(),
                    v8: Default::default(),
                    v8_warming: Default::default(),
                    python: Default::default(),
                    cfi: Default::default(),
                });
                elves.retain(|_, e| e.strong_count() > 0);
                elves.insert(id, Arc::downgrade(&elf));
                Some(elf)
            });
            new.push((key, elf));
        }
        self.files.extend(new);
    }
}
