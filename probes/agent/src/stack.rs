//! Stack capture for the watchdog: the real-time signal handler that walks the frame-pointer
//! chain of the interrupted loop thread into a preallocated sample entry, and the stack scan used
//! when frame pointers are missing (CPython, `-fomit-frame-pointer` code) or the thread sleeps.
//!
//! Everything reachable from [`on_signal`] is async-signal-safe: atomics, plain memory reads
//! bounded by the thread's stack and by executable mappings, and `gettid`. No allocation, no
//! lock, no panic path (indices are checked, arithmetic wraps).

use crate::segment;
use looptop_abi::{sample_flags, SampleEntry, COPY_RING, JS_FRAMES, LOOP_SLOTS, SAMPLE_FRAMES, SAMPLE_RING};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Most executable mappings remembered for the scan's "is this a return address" test.
pub(crate) const EXEC_MAX: usize = 512;
/// Bytes of stack the scan reads above the stack pointer.
pub(crate) const SCAN_BYTES: u64 = 32 * 1024;

/// Sorted, non-overlapping executable ranges `[lo, hi)`, written by the watchdog only while no
/// request is outstanding, read by the handler only while one is.
static EXEC: [AtomicU64; 2 * EXEC_MAX] = [const { AtomicU64::new(0) }; 2 * EXEC_MAX];
static EXEC_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The outstanding request: which thread, which loop slot, which sample index + 1 (0 = none).
static REQ_TID: AtomicU32 = AtomicU32::new(0);
static REQ_SLOT: AtomicUsize = AtomicUsize::new(0);
static REQ_IDX: AtomicU64 = AtomicU64::new(0);
/// The tick the request is for: a handler that runs after that tick ended drops the request.
static REQ_TICK: AtomicU64 = AtomicU64::new(0);

/// Replaces the executable ranges (watchdog only, with no request outstanding).
pub(crate) fn set_exec_ranges(ranges: &[(u64, u64)]) {
    let n = ranges.len().min(EXEC_MAX);
    for (i, &(lo, hi)) in ranges[..n].iter().enumerate() {
        EXEC[2 * i].store(lo, Ordering::Relaxed);
        EXEC[2 * i + 1].store(hi, Ordering::Relaxed);
    }
    EXEC_COUNT.store(n, Ordering::Release);
}

/// Whether `addr` lies in an executable mapping (binary search).
fn is_code(addr: u64) -> bool {
    let n = EXEC_COUNT.load(Ordering::Acquire).min(EXEC_MAX);
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (a, b) = (EXEC[2 * mid].load(Ordering::Relaxed), EXEC[2 * mid + 1].load(Ordering::Relaxed));
        if addr < a {
            hi = mid;
        } else if addr >= b {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    false
}

/// Whether `ret` looks like a return address: in code, right after a call instruction.
#[cfg(target_arch = "x86_64")]
fn after_call(ret: u64) -> bool {
    if ret < 8 || !is_code(ret) || !is_code(ret - 7) {
        return false;
    }
    // SAFETY: [ret-7, ret) lies in an executable, readable mapping (checked above).
    let b = |k: u64| unsafe { std::ptr::read_volatile((ret - k) as *const u8) };
    b(5) == 0xe8                                             // call rel32
        || (b(2) == 0xff && b(1) & 0xf8 == 0xd0)             // call reg
        || (b(3) == 0xff && b(2) & 0xf8 == 0x50)             // call [reg+disp8]
        || (b(3) == 0xff && b(2) == 0x14)                    // call [sib]
        || (b(4) == 0xff && b(3) == 0x54)                    // call [sib+disp8]
        || (b(6) == 0xff && (b(5) & 0xf8 == 0x90 || b(5) == 0x15)) // call [reg+disp32] / [rip+disp32]
        || (b(7) == 0xff && b(6) == 0x94) // call [sib+disp32]
}

/// Whether `ret` looks like a return address (aarch64: after a `bl`/`blr`).
#[cfg(not(target_arch = "x86_64"))]
fn after_call(ret: u64) -> bool {
    if ret < 8 || !is_code(ret) || !is_code(ret - 4) {
        return false;
    }
    // SAFETY: ret-4 lies in an executable, readable mapping (checked above).
    let insn = unsafe { std::ptr::read_volatile((ret - 4) as *const u32) };
    insn & 0xfc00_0000 == 0x9400_0000 || insn & 0xffff_fc1f == 0xd63f_0000
}

/// Where to read a stack word from: the live stack (in the handler) or a copy (watchdog).
pub(crate) trait StackMem {
    /// The 8-byte word at `addr`, if it is inside the readable window.
    fn word(&self, addr: u64) -> Option<u64>;
}

/// The interrupted thread's own stack, `[sp, hi)`: mapped for as long as the handler runs.
struct LiveStack {
    sp: u64,
    hi: u64,
}

impl StackMem for LiveStack {
    fn word(&self, addr: u64) -> Option<u64> {
        if addr < self.sp || addr.checked_add(8)? > self.hi || addr & 7 != 0 {
            return None;
        }
        // SAFETY: [sp, hi) is the current thread's stack above its stack pointer: mapped.
        Some(unsafe { std::ptr::read_volatile(addr as *const u64) })
    }
}

/// A copy of a sleeping thread's stack, taken with `process_vm_readv`.
pub(crate) struct CopiedStack<'a> {
    /// Address of `words[0]`.
    pub base: u64,
    /// The copy.
    pub words: &'a [u64],
}

impl StackMem for CopiedStack<'_> {
    fn word(&self, addr: u64) -> Option<u64> {
        if addr < self.base || addr & 7 != 0 {
            return None;
        }
        self.words.get(((addr - self.base) / 8) as usize).copied()
    }
}

/// The two words V8 keeps in an interpreted frame (bytecode array, bytecode offset), kept for
/// each of the first [`JS_FRAMES`] frames of a walk: looptop tells which frames are interpreted.
pub(crate) struct JsSlots {
    /// Offsets of the two words from a frame pointer; `None` when the process has no V8 layout.
    off: Option<(i64, i64)>,
    /// The words, by frame index.
    pub words: [[u64; 2]; JS_FRAMES],
}

impl JsSlots {
    /// No slots to keep (not V8, or a stack that is not walked from frame pointers).
    pub(crate) const NONE: JsSlots = JsSlots { off: None, words: [[0; 2]; JS_FRAMES] };

    /// Slots to keep where the segment's header says V8 keeps them.
    pub(crate) fn of(header: &looptop_abi::Header) -> JsSlots {
        JsSlots { off: crate::v8layout::frame_slots(header), ..JsSlots::NONE }
    }

    /// Keeps the words of frame `n`, whose frame pointer is `fp`.
    fn keep(&mut self, mem: &impl StackMem, n: usize, fp: u64) {
        let (Some((a, o)), Some(w)) = (self.off, self.words.get_mut(n)) else { return };
        *w = [mem.word(fp.wrapping_add(a as u64)).unwrap_or(0), mem.word(fp.wrapping_add(o as u64)).unwrap_or(0)];
    }
}

/// Appends return addresses along the frame-pointer chain from `fp`; returns the new count.
fn walk(
    mem: &impl StackMem,
    mut fp: u64,
    frames: &mut [u64; SAMPLE_FRAMES],
    mut n: usize,
    js: &mut JsSlots,
) -> (usize, bool) {
    loop {
        if n >= SAMPLE_FRAMES {
            return (n, true);
        }
        let (Some(next), Some(ret)) = (mem.word(fp), mem.word(fp.wrapping_add(8))) else { return (n, false) };
        if ret == 0 || !is_code(ret) {
            return (n, false);
        }
        frames[n] = ret;
        // `ret` returns into the function whose frame starts at `next`.
        js.keep(mem, n, next);
        n += 1;
        if next <= fp {
            return (n, false);
        }
        fp = next;
    }
}

/// Whether a frame record at `a` starts a chain of at least three plausible links.
fn chain_at(mem: &impl StackMem, a: u64) -> bool {
    let mut fp = a;
    for _ in 0..3 {
        let (Some(next), Some(ret)) = (mem.word(fp), mem.word(fp.wrapping_add(8))) else { return false };
        if next <= fp || !after_call(ret) {
            return false;
        }
        fp = next;
    }
    true
}

/// Stack scan from `sp`: return addresses found word by word, until a frame-pointer chain
/// starts (then it is walked, which drops stale words above it, and keeps V8's slots of the
/// frames it walks in `js`). Returns (count, truncated).
fn scan(
    mem: &impl StackMem,
    sp: u64,
    frames: &mut [u64; SAMPLE_FRAMES],
    mut n: usize,
    js: &mut JsSlots,
) -> (usize, bool) {
    let mut a = sp;
    while a < sp.saturating_add(SCAN_BYTES) {
        if n >= SAMPLE_FRAMES {
            return (n, true);
        }
        let Some(w) = mem.word(a) else { break };
        if w > a && chain_at(mem, a) {
            return walk(mem, a, frames, n, js);
        }
        if after_call(w) {
            frames[n] = w;
            n += 1;
        }
        a += 8;
    }
    (n, false)
}

/// A stack from a sleeping thread's copied stack: `pc`, then the scan. Returns (count, flags).
pub(crate) fn scan_copy(
    mem: &CopiedStack,
    pc: u64,
    sp: u64,
    frames: &mut [u64; SAMPLE_FRAMES],
    js: &mut JsSlots,
) -> (usize, u64) {
    frames[0] = pc;
    let (n, cut) = scan(mem, sp, frames, 1, js);
    (n, sample_flags::OFF_CPU | sample_flags::SCANNED | if cut { sample_flags::TRUNCATED } else { 0 })
}

/// Posts a request for the thread `tid` of slot `slot` to fill sample `index` of tick `tick`.
pub(crate) fn post(tid: u32, slot: usize, index: u64, tick: u64) {
    REQ_TID.store(tid, Ordering::Relaxed);
    REQ_SLOT.store(slot, Ordering::Relaxed);
    REQ_TICK.store(tick, Ordering::Relaxed);
    REQ_IDX.store(index + 1, Ordering::SeqCst);
}

/// Whether a request for thread `tid` is posted (read after raising `in_call`, with a full fence).
#[inline]
pub(crate) fn requested_for(tid: u32) -> bool {
    REQ_IDX.load(Ordering::SeqCst) != 0 && REQ_TID.load(Ordering::Relaxed) == tid
}

/// Withdraws the request; true when the handler had not taken it (it never will now).
pub(crate) fn withdraw() -> bool {
    REQ_IDX.swap(0, Ordering::AcqRel) != 0
}

/// Forgets any request (in a fork child).
pub(crate) fn reset() {
    REQ_IDX.store(0, Ordering::Relaxed);
}

/// Registers registers of the interrupted context: (pc, fp, sp).
///
/// # Safety
/// `ctx` must be the `ucontext_t` the kernel passed to a `SA_SIGINFO` handler.
unsafe fn registers(ctx: *mut libc::c_void) -> (u64, u64, u64) {
    let uc = &*(ctx as *const libc::ucontext_t);
    #[cfg(target_arch = "x86_64")]
    {
        let g = &uc.uc_mcontext.gregs;
        (g[libc::REG_RIP as usize] as u64, g[libc::REG_RBP as usize] as u64, g[libc::REG_RSP as usize] as u64)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let m = &uc.uc_mcontext;
        (m.pc, m.regs[29], m.sp)
    }
}

/// The watchdog's signal handler: fills the requested sample with this thread's stack.
pub(crate) extern "C" fn on_signal(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno and gettid are async-signal-safe; errno is restored for the interrupted code.
    let errno = unsafe { *libc::__errno_location() };
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    if REQ_TID.load(Ordering::Acquire) == tid {
        let r = REQ_IDX.swap(0, Ordering::AcqRel);
        if r != 0 {
            // SAFETY: the kernel passed a ucontext_t (the handler is installed with SA_SIGINFO).
            unsafe { fill(r, ctx) };
        }
    }
    unsafe { *libc::__errno_location() = errno };
}

/// Writes sample `r - 1` from the interrupted context.
///
/// # Safety
/// Called from [`on_signal`] with its context.
unsafe fn fill(r: u64, ctx: *mut libc::c_void) {
    let Some(seg) = segment::existing() else { return };
    let Some(entry) = seg.samples().get(((r - 1) % SAMPLE_RING as u64) as usize) else { return };
    let Some(slot) = seg.slots().get(REQ_SLOT.load(Ordering::Relaxed).min(LOOP_SLOTS - 1)) else { return };
    if slot.busy_since_ns.load(Ordering::Acquire) != REQ_TICK.load(Ordering::Relaxed) {
        // Delivered late (it was blocked during a wait): the tick it was for is over.
        seg.header().samples_missed.fetch_add(1, Ordering::Relaxed);
        write_entry(entry, r, &[], &JsSlots::NONE.words, sample_flags::MISSED, u64::MAX, &[0; 32]);
        return;
    }
    let (pc, fp, sp) = registers(ctx);
    let (lo, hi) = (slot.stack_lo.load(Ordering::Relaxed), slot.stack_hi.load(Ordering::Relaxed));
    let mut frames = [0u64; SAMPLE_FRAMES];
    frames[0] = pc;
    let mut js = JsSlots::of(seg.header());
    let (mut n, mut flags) = (1, 0);
    if lo <= sp && sp < hi {
        let mem = LiveStack { sp, hi };
        // The leaf runs in the frame at `fp` (its own, or its caller's when it built none).
        js.keep(&mem, 0, fp);
        // A leaf that set up no frame of its own (a V8 builtin, a libc wrapper) leaves its
        // caller's return address at the stack pointer, where the frame-pointer walk misses it.
        let mut start = 1;
        if let Some(ret) = mem.word(sp).filter(|&r| after_call(r)) {
            let next_ret = mem.word(fp.wrapping_add(8));
            if next_ret != Some(ret) {
                frames[1] = ret;
                js.keep(&mem, 1, fp);
                start = 2;
            }
        }
        let (walked, cut) = walk(&mem, fp, &mut frames, start, &mut js);
        n = walked;
        if cut {
            flags |= sample_flags::TRUNCATED;
        }
        if n < 3 {
            let mut scanned_js = JsSlots::of(seg.header());
            let (scanned, cut) = scan(&mem, sp, &mut frames, 1, &mut scanned_js);
            if scanned > n {
                n = scanned;
                flags = sample_flags::SCANNED | if cut { sample_flags::TRUNCATED } else { 0 };
                js = scanned_js;
            }
        }
    }
    // V8 keeps frame pointers, and its frames' words go with the walk's frames: no copy there.
    if lo <= sp && sp < hi && seg.header().v8.known.load(Ordering::Relaxed) == 0 {
        write_copy(seg, r, (pc, fp, sp), hi);
    }
    entry.t_ns.store(crate::now_ns(), Ordering::Relaxed);
    write_entry(entry, r, &frames[..n], &js.words, flags, u64::MAX, &[0; 32]);
}

/// Copies the interrupted code's registers and stack (from `sp` up to `hi`, at most
/// [`looptop_abi::COPY_BYTES`]) into the copy of sample `r - 1` (seq last), for looptop to unwind with the
/// binaries' CFI where frame pointers are missing. Async-signal-safe.
fn write_copy(seg: segment::Segment, r: u64, (pc, fp, sp): (u64, u64, u64), hi: u64) {
    let Some(c) = seg.copies().get(((r - 1) % COPY_RING as u64) as usize) else { return };
    if sp & 7 != 0 {
        return;
    }
    c.seq.store(0, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    let mem = LiveStack { sp, hi };
    let mut len = 0;
    for (i, dst) in c.words.iter().enumerate() {
        let Some(w) = mem.word(sp + 8 * i as u64) else { break };
        dst.store(w, Ordering::Relaxed);
        len += 8;
    }
    c.ip.store(pc, Ordering::Relaxed);
    c.sp.store(sp, Ordering::Relaxed);
    c.bp.store(fp, Ordering::Relaxed);
    c.len.store(len, Ordering::Relaxed);
    c.seq.store(r, Ordering::Release);
}

/// Writes a complete sample entry as sample `r - 1` (seq last). Async-signal-safe.
pub(crate) fn write_entry(
    entry: &SampleEntry,
    r: u64,
    frames: &[u64],
    js: &[[u64; 2]; JS_FRAMES],
    flags: u64,
    syscall: u64,
    wchan: &[u8; 32],
) {
    entry.seq.store(0, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    for (dst, &f) in entry.frames.iter().zip(frames) {
        dst.store(f, Ordering::Relaxed);
    }
    for (dst, w) in entry.js.iter().zip(js) {
        dst[0].store(w[0], Ordering::Relaxed);
        dst[1].store(w[1], Ordering::Relaxed);
    }
    entry.nframes.store(frames.len().min(SAMPLE_FRAMES) as u32, Ordering::Relaxed);
    entry.flags.store(flags, Ordering::Relaxed);
    entry.syscall.store(syscall, Ordering::Relaxed);
    for (i, w) in entry.wchan.iter().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&wchan[i * 8..i * 8 + 8]);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    entry.seq.store(r, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_ranges_are_searched() {
        set_exec_ranges(&[(0x1000, 0x2000), (0x5000, 0x6000)]);
        assert!(is_code(0x1000) && is_code(0x1fff) && is_code(0x5800));
        assert!(!is_code(0xfff) && !is_code(0x2000) && !is_code(0x7000));
    }
}
