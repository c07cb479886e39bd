//! Native stacks unwound from a copy of the thread's stack. Code built without frame pointers
//! (Debian's nginx, Redis and CPython, Rust release builds, the JVM) uses `rbp` as an ordinary
//! register, so a frame-pointer walk yields stale or invented callers. Where a source copied the
//! stack, each mapped ELF file's `.eh_frame` CFI (read once per file, shared by every process
//! that maps it) says how to find each caller (framehop); code without CFI (V8's JIT code) is
//! walked by its frame pointers, as the kernel would.

use super::maps::Backing;
use super::symbolizer::{FileKey, Symbolizer};
use crate::event::{UserStack, KERNEL_ADDRESS_MIN};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

/// A section's bytes, shared by the modules of every process that maps the file.
type Bytes = Arc<[u8]>;

/// Frames unwound at most (the kernel's callchains stop at 127 as well).
const MOST_FRAMES: usize = 127;
/// CFI sections larger than this are not read (a hostile file could claim gigabytes).
const MOST_CFI_BYTES: u64 = 256 << 20;
/// Processes whose modules are kept at most before the table starts over.
const MOST_PROCESSES: usize = 256;

/// What unwinding needs of one ELF file: its CFI, and where its executable segments load.
pub(super) struct Cfi {
    eh_frame: Option<(Range<u64>, Bytes)>,
    eh_frame_hdr: Option<(Range<u64>, Bytes)>,
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
    /// Executable `PT_LOAD`s: (file offset, address, size in the file).
    loads: Vec<(u64, u64, u64)>,
}

impl std::fmt::Debug for Cfi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = |s: &Option<(Range<u64>, Bytes)>| s.as_ref().map_or(0, |s| s.1.len());
        f.debug_struct("Cfi")
            .field("eh_frame_bytes", &len(&self.eh_frame))
            .field("eh_frame_hdr_bytes", &len(&self.eh_frame_hdr))
            .field("loads", &self.loads)
            .finish_non_exhaustive()
    }
}

impl Cfi {
    /// Reads `file`'s CFI; `None` when it is no ELF file or has no `.eh_frame`.
    pub(super) fn read(file: &File) -> Option<Cfi> {
        let cache = object::ReadCache::new(file);
        Cfi::of(&object::File::parse(&cache).ok()?)
    }

    /// The CFI of the kernel's vDSO (`clock_gettime` and friends run there, without frame
    /// pointers): the same image in every process, read once from looptop's own.
    fn vdso() -> Option<Arc<Cfi>> {
        static VDSO: std::sync::OnceLock<Option<Arc<Cfi>>> = std::sync::OnceLock::new();
        VDSO.get_or_init(|| {
            let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
            let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
            let len = usize::try_from(end.checked_sub(start)?).ok().filter(|&n| n <= 1 << 20)?;
            // SAFETY: the vDSO is mapped readable in this process for its whole life, at the
            // range its maps line gives.
            let image = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
            Cfi::of(&object::File::parse(image).ok()?).map(Arc::new)
        })
        .clone()
    }

    /// The CFI of a parsed ELF image; `None` without `.eh_frame`.
    fn of<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> Option<Cfi> {
        let range = |s: &object::Section<'a, '_, R>| s.address()..s.address() + s.size();
        let section = |name: &str| {
            let s = elf.section_by_name(name).filter(|s| s.size() <= MOST_CFI_BYTES)?;
            Some((range(&s), Bytes::from(s.data().ok()?)))
        };
        let eh_frame = section(".eh_frame")?;
        let loads = elf
            .segments()
            .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0))
            .map(|s| (s.file_range().0, s.address(), s.file_range().1))
            .collect();
        Some(Cfi {
            eh_frame: Some(eh_frame),
            eh_frame_hdr: section(".eh_frame_hdr"),
            text: elf.section_by_name(".text").map(|s| range(&s)),
            got: elf.section_by_name(".got").map(|s| range(&s)),
            loads,
        })
    }

    /// The module of a mapping of this file at `avma` (file offset `offset`): `None` when no
    /// executable segment holds that offset.
    fn module(&self, name: &str, avma: Range<u64>, offset: u64) -> Option<Module<Bytes>> {
        let &(seg_offset, seg_vaddr, _) =
            self.loads.iter().find(|(o, _, size)| (*o..o.saturating_add(*size)).contains(&offset))?;
        // Where address 0 of the file would be: the mapping's start is the segment's address
        // plus how far into the segment the mapping starts.
        let base = avma.start.checked_sub(seg_vaddr.checked_add(offset - seg_offset)?)?;
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.clone(),
            text: None,
            stubs_svma: None,
            stub_helper_svma: None,
            got_svma: self.got.clone(),
            unwind_info: None,
            eh_frame_svma: self.eh_frame.as_ref().map(|e| e.0.clone()),
            eh_frame: self.eh_frame.as_ref().map(|e| e.1.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|e| e.0.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|e| e.1.clone()),
            debug_frame: None,
            text_segment_svma: None,
            text_segment: None,
        };
        Some(Module::new(name.to_string(), avma, base, info))
    }
}

/// The unwinder of each process (rebuilt when its mappings were read again) and framehop's cache
/// of unwind rules.
#[derive(Default)]
pub(super) struct Unwinding {
    processes: HashMap<u32, (u64, UnwinderX86_64<Bytes>)>,
    cache: Option<CacheX86_64>,
}

impl std::fmt::Debug for Unwinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinding").field("processes", &self.processes.len()).finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// The addresses of a sample whose source copied the user stack (`copy`): the kernel frames
    /// of `ips` (its frame-pointer walk), then the user frames unwound from the copy with the
    /// binaries' CFI, continued by the frame-pointer walk where the copy ran out and the two agree.
    pub fn unwind(&mut self, pid: u32, copy: &UserStack, ips: &[u64]) -> Vec<u64> {
        let split = ips.iter().position(|&ip| ip < KERNEL_ADDRESS_MIN).unwrap_or(ips.len());
        let (kernel, walked) = ips.split_at(split);
        let (unwound, complete) = self.unwind_copy(pid, copy);
        let mut out = kernel.to_vec();
        out.extend(splice(&unwound, complete, walked));
        out
    }

    /// The user frames of `copy`, innermost first, and whether the unwinding reached the stack's
    /// outermost frame (rather than the end of the copy or a frame it could not unwind).
    fn unwind_copy(&mut self, pid: u32, copy: &UserStack) -> (Vec<u64>, bool) {
        let Some(p) = self.procs.get(&pid) else { return (Vec::new(), false) };
        let generation = p.generation;
        let u = &mut self.unwinding;
        if u.processes.len() >= MOST_PROCESSES && !u.processes.contains_key(&pid) {
            u.processes.clear();
        }
        let stale = !matches!(u.processes.get(&pid), Some((g, _)) if *g == generation);
        if stale {
            let mut unwinder = UnwinderX86_64::new();
            for m in p.maps.iter() {
                let (cfi, name) = match &m.backing {
                    Backing::File(path) | Backing::Deleted(path) => {
                        let key = match &m.backing {
                            Backing::Deleted(_) => FileKey::Deleted(m.start),
                            _ => FileKey::Path(path.clone()),
                        };
                        let Some(elf) = p.files.get(&key).cloned().flatten() else { continue };
                        (elf.cfi(), path)
                    }
                    Backing::Special(name) if &**name == "[vdso]" => (Cfi::vdso(), name),
                    _ => continue,
                };
                if let Some(module) = cfi.and_then(|cfi| cfi.module(name, m.start..m.end, m.offset)) {
                    unwinder.add_module(module);
                }
            }
            u.processes.insert(pid, (generation, unwinder));
        }
        let unwinder = &u.processes[&pid].1;
        let cache = u.cache.get_or_insert_with(CacheX86_64::new);
        let mut read_stack = |addr: u64| {
            let at = usize::try_from(addr.checked_sub(copy.sp).ok_or(())?).map_err(|_| ())?;
            let word = copy.bytes.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(word.try_into().map_err(|_| ())?))
        };
        let regs = UnwindRegsX86_64::new(copy.ip, copy.sp, copy.bp);
        let mut frames = unwinder.iter_frames(copy.ip, regs, cache, &mut read_stack);
        let mut out = Vec::new();
        loop {
            match frames.next() {
                Ok(Some(f)) if out.len() < MOST_FRAMES => out.push(f.address()),
                Ok(None) => return (out, true),
                _ => return (out, false),
            }
        }
    }
}

/// The user frames of a sample from its unwound frames (`unwound`, `complete` when the
/// unwinding reached the outermost frame) and the kernel's frame-pointer walk (`walked`). The
/// unwinding is right where frame pointers are missing; where it stopped early (the copy ended
/// inside a deep stack), the walk carries on from the last frame both have, which frame pointers
/// got right. With nothing unwound beyond the sampled address, the walk stands.
pub(super) fn splice(unwound: &[u64], complete: bool, walked: &[u64]) -> Vec<u64> {
    if unwound.len() < 2 {
        return walked.to_vec();
    }
    if complete {
        return unwound.to_vec();
    }
    let common = unwound
        .iter()
        .enumerate()
        .skip(1)
        .rev()
        .find_map(|(i, ip)| Some((i, walked.iter().skip(1).position(|w| w == ip)? + 1)));
    match common {
        Some((i, j)) => unwound[..=i].iter().chain(&walked[j + 1..]).copied().collect(),
        None => unwound.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::{splice, Cfi};

    #[test]
    fn the_vdso_has_cfi_and_an_executable_segment() {
        // clock_gettime runs there: without its CFI a sample in it ended the stack.
        let vdso = Cfi::vdso().expect("the vDSO's .eh_frame");
        assert!(vdso.eh_frame.is_some() && !vdso.loads.is_empty(), "{vdso:?}");
        assert!(vdso.module("[vdso]", 0x7fff_0000_0000..0x7fff_0000_2000, 0).is_some());
    }

    #[test]
    fn the_unwinding_stands_where_frame_pointers_lie() {
        // Built without frame pointers: the walk found stale callers, the CFI the real ones.
        assert_eq!(splice(&[10, 20, 30, 40], true, &[10, 99, 98]), vec![10, 20, 30, 40]);
        // The copy ended early and nothing is common: what was unwound is all that is known.
        assert_eq!(splice(&[10, 20, 30], false, &[10, 99, 98]), vec![10, 20, 30]);
    }

    #[test]
    fn the_walk_carries_on_where_the_copy_ran_out() {
        // A deep stack with frame pointers (V8's JIT code): the unwinding agrees with the walk
        // up to where the copy ends, and the walk goes on to the outermost frames.
        assert_eq!(splice(&[10, 20, 30], false, &[10, 20, 30, 40, 50]), vec![10, 20, 30, 40, 50]);
        // A leaf without a frame pointer hid its caller (20) from the walk.
        assert_eq!(splice(&[10, 20, 30, 40], false, &[10, 30, 40, 50]), vec![10, 20, 30, 40, 50]);
        // Nothing unwound beyond the sampled address: the walk stands.
        assert_eq!(splice(&[10], false, &[10, 20, 30]), vec![10, 20, 30]);
        assert_eq!(splice(&[], false, &[10, 20]), vec![10, 20]);
    }
}
