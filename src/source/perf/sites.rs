//! Where to put the uprobes of [`super::uprobes`]: libuv's pool functions and V8's GC entry
//! points, by name, in the `.symtab` of the executable or of a mapped libuv/libnode.
//!
//! Those files are the target's: each is opened once as the process's user could
//! ([`safefs::open_mapped`]: the very file mapped, never one put under its name since, never a
//! FIFO), read for symbols through `/proc/self/fd/N`, and the probes are placed through that same
//! path, so they land in the code the process runs.

use super::uprobes::Role;
use crate::event::GcKind;
use crate::safefs::{self, Mapped, Reader};
use std::fs::File;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ELF files larger than this are not read.
const MAX_ELF: u64 = 8 << 30;

/// libuv's work functions: every item of the pool runs in one of them.
const WORK_FUNCTIONS: [&str; 5] =
    ["uv__fs_work", "uv__queue_work", "uv__getaddrinfo_work", "uv__getnameinfo_work", "uv__random_work"];
const SUBMIT: &str = "uv__work_submit";
const QUEUE_WORK: &str = "uv_queue_work";
/// Itanium-mangled prefixes of `v8::internal::Heap::…` (their parameter lists vary by version).
const GC_PAUSE: &str = "_ZN2v88internal4Heap24PerformGarbageCollection";
const GC_KINDS: [(&str, GcKind); 3] = [
    ("_ZN2v88internal4Heap8ScavengeEv", GcKind::Minor),
    ("_ZN2v88internal4Heap16MinorMarkCompactEv", GcKind::Minor),
    ("_ZN2v88internal4Heap11MarkCompactEv", GcKind::Major),
];

/// One place to put a uprobe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The ELF file: `/proc/self/fd/N` of the file opened for it (held in
    /// [`RuntimeProbes`]).
    pub path: PathBuf,
    /// File offset of the function's first instruction.
    pub offset: u64,
    /// A uretprobe (on return) rather than a uprobe.
    pub ret: bool,
    /// What reaching it means.
    pub role: Role,
}

/// The probe sites of one process and what they give.
#[derive(Debug, Clone)]
pub struct RuntimeProbes {
    /// Every site, to open on each thread.
    pub sites: Vec<Site>,
    /// The files the sites' paths name, open until the probes are.
    _files: Vec<Arc<File>>,
    /// Workers of the libuv pool (`UV_THREADPOOL_SIZE`, default 4); `None` without pool sites.
    pub pool_size: Option<u64>,
    /// GC pause sites were found.
    pub gc: bool,
}

impl RuntimeProbes {
    /// Finds the sites in the executable and the libuv / libnode libraries `pid` maps; `None`
    /// when it has none of them (not a Node process, or a stripped binary).
    pub fn find(pid: u32) -> Option<RuntimeProbes> {
        let mut sites = Vec::new();
        let mut files = Vec::new();
        let (mut pool, mut gc) = (false, false);
        let reader = Reader::of_pid(pid)?;
        for c in candidate_files(pid) {
            let by_name = (!c.deleted).then(|| PathBuf::from(format!("/proc/{pid}/root{}", c.path)));
            let mapped = Mapped { pid, start: c.start, end: c.end, path: by_name.as_deref(), inode: c.inode };
            let Ok(file) = safefs::open_mapped(&reader, &mapped, MAX_ELF) else { continue };
            let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            files.push(Arc::new(file));
            let found = functions(&path);
            let at = |name: &str| found.iter().find(|(n, _)| n == name).map(|(_, off)| *off);
            if !pool {
                if let (Some(submit), works) = (at(SUBMIT), WORK_FUNCTIONS.map(at)) {
                    pool = true;
                    sites.push(Site { path: path.clone(), offset: submit, ret: false, role: Role::Submit });
                    if let Some(offset) = at(QUEUE_WORK) {
                        sites.push(Site { path: path.clone(), offset, ret: false, role: Role::QueueWork });
                    }
                    for offset in works.into_iter().flatten() {
                        sites.push(Site { path: path.clone(), offset, ret: false, role: Role::WorkStart });
                        sites.push(Site { path: path.clone(), offset, ret: true, role: Role::WorkEnd });
                    }
                }
            }
            if !gc {
                if let Some(&(_, pause)) = found.iter().find(|(n, _)| n.starts_with(GC_PAUSE)) {
                    gc = true;
                    sites.push(Site { path: path.clone(), offset: pause, ret: false, role: Role::GcStart });
                    sites.push(Site { path: path.clone(), offset: pause, ret: true, role: Role::GcEnd });
                    for (name, kind) in GC_KINDS {
                        if let Some(offset) = at(name) {
                            sites.push(Site { path: path.clone(), offset, ret: false, role: Role::GcKind(kind) });
                        }
                    }
                }
            }
        }
        if sites.is_empty() {
            return None;
        }
        files.retain(|f| sites.iter().any(|s| s.path == Path::new(&format!("/proc/self/fd/{}", f.as_raw_fd()))));
        Some(RuntimeProbes { sites, _files: files, pool_size: pool.then(|| pool_size(pid)), gc })
    }

    /// The same without the pool's sites (`None` when nothing is left): the pool's probes are
    /// hit on every item, the GC's a few times a second.
    pub fn without_pool(mut self) -> Option<RuntimeProbes> {
        self.sites.retain(|s| matches!(s.role, Role::GcStart | Role::GcEnd | Role::GcKind(_)));
        self.pool_size = None;
        (!self.sites.is_empty()).then_some(self)
    }
}

/// A mapping of a file that may hold libuv or V8.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    path: String,
    /// Deleted (or replaced) since it was mapped: only `/proc/PID/map_files` has it.
    deleted: bool,
    start: u64,
    end: u64,
    inode: u64,
}

/// The executable and the mapped libraries that may hold libuv or V8, each by its first
/// executable mapping in `/proc/PID/maps`, the executable first.
fn candidate_files(pid: u32) -> Vec<Candidate> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    candidates_in(exe.trim_end_matches(" (deleted)"), &maps)
}

/// [`candidate_files`] from the executable's path and the text of `maps`.
fn candidates_in(exe: &str, maps: &str) -> Vec<Candidate> {
    let mut files: Vec<Candidate> = Vec::new();
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ').filter(|s| !s.is_empty());
        let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = line.splitn(6, ' ').nth(5).unwrap_or_default().trim_start_matches(' ');
        let (path, deleted) = match path.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        let base = path.rsplit('/').next().unwrap_or(path);
        let wanted = path == exe || ["libuv", "libnode", "libv8"].iter().any(|l| base.starts_with(l));
        if !perms.contains('x') || !path.starts_with('/') || !wanted || files.iter().any(|c| c.path == path) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(inode)) =
            (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16), inode.parse::<u64>())
        else {
            continue;
        };
        files.push(Candidate { path: path.to_string(), deleted, start, end, inode });
    }
    files.sort_by_key(|c| c.path != exe);
    files
}

/// The functions of interest in an ELF file's symbol table, with their file offsets.
fn functions(path: &std::path::Path) -> Vec<(String, u64)> {
    use blazesym::inspect::{source::Elf, Inspector};
    let mut src = Elf::new(path);
    src.debug_syms = false;
    let wanted = |name: &str| {
        name == SUBMIT
            || name == QUEUE_WORK
            || WORK_FUNCTIONS.contains(&name)
            || name.starts_with(GC_PAUSE)
            || GC_KINDS.iter().any(|(n, _)| *n == name)
    };
    let mut found = Vec::new();
    let _ = Inspector::new().for_each(&blazesym::inspect::source::Source::Elf(src), |sym| {
        if sym.sym_type == blazesym::SymType::Function && wanted(&sym.name) {
            if let Some(offset) = sym.file_offset {
                found.push((sym.name.to_string(), offset));
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// `UV_THREADPOOL_SIZE` from the process's environment, as libuv reads it (1..=1024, default 4).
fn pool_size(pid: u32) -> u64 {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let value = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"UV_THREADPOOL_SIZE="))
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    match value {
        Some(0) | None => 4,
        Some(n) => n.min(1024),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_executable_mappings_of_the_exe_and_libuv() {
        let maps = "\
00400000-00b72000 r--p 00000000 08:01 1234 /usr/bin/node
00b72000-025fe000 r-xp 00772000 08:01 1234 /usr/bin/node
7f0000010000-7f0000020000 r-xp 00028000 08:01 99 /usr/lib/libc.so.6
7f0000030000-7f0000040000 r-xp 00001000 08:01 77 /opt/lib/libuv.so.1
7f0000050000-7f0000060000 r-xp 00001000 08:01 78 /opt/lib/libnode.so.108 (deleted)
7f0000070000-7f0000080000 rwxp 00000000 00:00 0
";
        let c = candidates_in("/usr/bin/node", maps);
        assert_eq!(
            c,
            [
                Candidate {
                    path: "/usr/bin/node".into(),
                    deleted: false,
                    start: 0xb72000,
                    end: 0x25fe000,
                    inode: 1234
                },
                Candidate {
                    path: "/opt/lib/libuv.so.1".into(),
                    deleted: false,
                    start: 0x7f0000030000,
                    end: 0x7f0000040000,
                    inode: 77
                },
                Candidate {
                    path: "/opt/lib/libnode.so.108".into(),
                    deleted: true,
                    start: 0x7f0000050000,
                    end: 0x7f0000060000,
                    inode: 78
                },
            ]
        );
    }

    #[test]
    fn the_node_binary_has_every_site() {
        let Some(node) = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("node")).find(|n| n.exists()))
        else {
            return;
        };
        let node = std::fs::canonicalize(node).unwrap();
        let found = functions(&node);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        if !names.contains(&SUBMIT) {
            eprintln!("SKIP: {} has no libuv symbols (stripped)", node.display());
            return;
        }
        for f in WORK_FUNCTIONS {
            assert!(names.contains(&f), "{f} not in {}", node.display());
        }
        assert!(names.iter().any(|n| n.starts_with(GC_PAUSE)), "{names:?}");
        assert!(found.iter().all(|(_, off)| *off > 0));
    }
}
