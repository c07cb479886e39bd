//! The watchdog: a thread of the agent that notices a tick running past the threshold (a stall
//! in progress) and takes the loop thread's stack every interval until the tick ends, bounded per
//! stall, into the segment's sample ring.
//!
//! A thread on the CPU gets a real-time signal (never SIGPROF: V8's profiler owns it) and walks
//! its own frame pointers in [`crate::stack::on_signal`]. A thread that sleeps in a system call
//! is not signalled (that would cut a `nanosleep` short): the watchdog reads where it waits from
//! `/proc/self/task/TID/{syscall,wchan}` and scans a copy of its stack.
//!
//! "Not signalled while it sleeps" holds without a race for every call the agent wraps (the wait
//! calls, `nanosleep`, `select` … see `sleeps.rs`): the thread raises its slot's `in_call` and
//! then looks for a request posted for it; the watchdog posts its request and then looks at
//! `in_call` (both with full fences). Either the watchdog sees the call and takes the stack from
//! outside instead, or the thread sees the request and blocks the signal for the length of the
//! call (then takes it, harmlessly, when the call returns — the handler drops a sample whose tick
//! is over).

use crate::segment::Segment;
use crate::stack;
use looptop_abi::{sample_flags, slot_state, LoopSlot, LOOP_SLOTS, SAMPLES_PER_STALL, SAMPLE_FRAMES, SAMPLE_RING};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(true);
/// Whether the watchdog reads the Python frames of a stalled thread (`LOOPTOP_PYTHON_FRAMES=0`: no).
static PYTHON_FRAMES: AtomicBool = AtomicBool::new(true);
static INTERVAL_NS: AtomicU64 = AtomicU64::new(looptop_abi::DEFAULT_WATCH_INTERVAL_NS);
/// The fork generation whose watchdog runs (0 = none yet).
static STARTED: AtomicU32 = AtomicU32::new(0);
/// The signal in use, 0 = none.
static SIGNAL: AtomicU32 = AtomicU32::new(0);

/// After this many samples of one stall, sample ten times less often.
const DENSE_SAMPLES: u64 = 100;
/// How long to wait for the handler to run.
const HANDLER_WAIT: Duration = Duration::from_millis(20);
/// How long a posted request may wait for a thread stuck in a system call.
const PENDING_MAX: Duration = Duration::from_secs(2);
/// Consecutive missed samples of a loop after which it is not signalled again in this stall.
const MAX_MISSES: u32 = 3;

/// Reads `LOOPTOP_WATCHDOG` and `LOOPTOP_WATCH_INTERVAL_NS`.
pub(crate) fn configure_from_env() {
    if std::env::var(looptop_abi::ENV_WATCHDOG).is_ok_and(|v| v == "0") {
        ENABLED.store(false, Ordering::Relaxed);
    }
    if std::env::var(looptop_abi::ENV_PYTHON_FRAMES).is_ok_and(|v| v == "0") {
        PYTHON_FRAMES.store(false, Ordering::Relaxed);
    }
    if let Some(i) = std::env::var(looptop_abi::ENV_WATCH_INTERVAL_NS).ok().and_then(|v| v.parse::<u64>().ok()) {
        INTERVAL_NS.store(i.clamp(1_000_000, 1_000_000_000), Ordering::Relaxed);
    }
}

/// The interval in force (ns).
pub(crate) fn interval_ns() -> u64 {
    INTERVAL_NS.load(Ordering::Relaxed)
}

/// Starts this process image's watchdog once it has a loop (called after a slot is claimed).
pub(crate) fn ensure_started(seg: Segment) {
    let generation = crate::GENERATION.load(Ordering::Relaxed);
    if !ENABLED.load(Ordering::Relaxed) || STARTED.swap(generation, Ordering::AcqRel) == generation {
        return;
    }
    // The watchdog blocks every signal in its own thread (else a process-directed signal of the
    // program could run its handler here) and is started with pthread_create, which installs
    // glibc's own handlers for the first thread: without those calls there is no watchdog.
    use crate::sys::{allowed, Call};
    if !crate::sys::thread_allowed() || !allowed(Call::Sigaction) {
        return;
    }
    let threshold = crate::STALL_FLOOR_NS.load(Ordering::Relaxed);
    if SIGNAL.load(Ordering::Relaxed) == 0 && crate::sys::signals_allowed() {
        SIGNAL.store(install_handler().unwrap_or(0) as u32, Ordering::Relaxed);
    }
    seg.header().watch_signal.store(SIGNAL.load(Ordering::Relaxed), Ordering::Relaxed);
    // Naming the thread is a prctl call.
    let builder = std::thread::Builder::new().stack_size(256 * 1024);
    let builder = if allowed(Call::Prctl) { builder.name("looptop-watch".into()) } else { builder };
    let spawned = builder.spawn(move || {
        block_all_signals();
        let _ = std::panic::catch_unwind(move || run(seg, threshold));
    });
    if spawned.is_ok() {
        seg.header().watch_threshold_ns.store(threshold, Ordering::Release);
    }
}

/// In a fork child: the watchdog thread was not copied; the next claim starts a new one.
pub(crate) fn after_fork() {
    STARTED.store(0, Ordering::Relaxed);
    stack::reset();
}

/// Records the calling thread's stack bounds in its slot (for the handler's walk).
pub(crate) fn note_stack(slot: &LoopSlot) {
    // glibc's pthread_getattr_np asks sched_getaffinity and prlimit64.
    if !crate::sys::allowed(crate::sys::Call::ThreadStart) {
        return;
    }
    // SAFETY: pthread_getattr_np fills an attr for the calling thread, destroyed below.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        if libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0 {
            slot.stack_lo.store(addr as u64, Ordering::Relaxed);
            slot.stack_hi.store(addr as u64 + size as u64, Ordering::Relaxed);
        }
        libc::pthread_attr_destroy(&mut attr);
    }
}

/// Installs the handler on a free real-time signal (one nobody handles); returns it.
fn install_handler() -> Option<i32> {
    let (lo, hi) = (libc::SIGRTMIN() + 4, libc::SIGRTMAX() - 1);
    (lo..=hi).rev().find(|&sig| {
        // SAFETY: querying and setting a signal disposition with valid sigaction structs.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 || old.sa_sigaction != libc::SIG_DFL {
                return false;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = stack::on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
        }
    })
}

/// Whether our handler still owns the signal (the program may have taken it since).
fn handler_in_place(sig: i32) -> bool {
    // SAFETY: querying a disposition.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
            && cur.sa_sigaction == stack::on_signal as *const () as usize
    }
}

fn block_all_signals() {
    // SAFETY: a full set blocks every signal for this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// What the watchdog remembers of one slot.
#[derive(Clone, Copy, Default)]
struct Watch {
    tick: u64,
    taken: u64,
    next_ns: u64,
    misses: u32,
    /// A request the handler has not answered yet: (sample index, since).
    pending: Option<(u64, u64)>,
}

/// Scratch space, allocated once.
struct Scratch {
    maps_at: u64,
    ranges: Vec<(u64, u64)>,
    stack: Vec<u64>,
    text: Vec<u8>,
    /// The CPython runtime of this process, once found, and when it was last looked for.
    python: Option<crate::python::Runtime>,
    python_looked_ns: u64,
    /// Each loop's Python thread state, as last found (0 = not known).
    tstates: [u64; LOOP_SLOTS],
}

/// How often the watchdog looks again for a CPython runtime it has not found (a process that
/// loads the interpreter late, or none at all).
const PYTHON_LOOK_EVERY_NS: u64 = 1_000_000_000;

fn run(seg: Segment, threshold: u64) {
    let interval = interval_ns();
    let mut watch = [Watch::default(); LOOP_SLOTS];
    let mut scratch = Scratch {
        maps_at: 0,
        ranges: Vec::with_capacity(stack::EXEC_MAX),
        stack: vec![0; (stack::SCAN_BYTES / 8) as usize],
        text: Vec::with_capacity(1 << 16),
        python: None,
        python_looked_ns: 0,
        tstates: [0; LOOP_SLOTS],
    };
    crate::v8layout::publish(seg.header());
    loop {
        std::thread::sleep(Duration::from_nanos(interval));
        if !crate::ENABLED.load(Ordering::Relaxed) || seg.header().exited_ns.load(Ordering::Relaxed) != 0 {
            return;
        }
        // The program installed a seccomp filter of its own: only the sleep is left.
        if !crate::sys::core_allowed() {
            continue;
        }
        // One request at a time: while one waits for a thread in a long system call, no
        // other loop is signalled.
        if watch.iter_mut().enumerate().any(|(i, w)| still_pending(seg, i, w, crate::now_ns())) {
            continue;
        }
        for (i, slot) in seg.slots().iter().enumerate() {
            if slot.state.load(Ordering::Acquire) != slot_state::ACTIVE {
                continue;
            }
            let since = slot.busy_since_ns.load(Ordering::Acquire);
            let now = crate::now_ns();
            let w = &mut watch[i];
            if since == 0 || now.saturating_sub(since) < threshold {
                continue;
            }
            if w.tick != since {
                *w = Watch { tick: since, ..Watch::default() };
            }
            if w.taken >= SAMPLES_PER_STALL || now < w.next_ns {
                continue;
            }
            if now.saturating_sub(scratch.maps_at) > 100_000_000 || w.taken == 0 {
                refresh_exec_ranges(&mut scratch, now);
            }
            if scratch.python.is_none()
                && PYTHON_FRAMES.load(Ordering::Relaxed)
                && now.saturating_sub(scratch.python_looked_ns) >= PYTHON_LOOK_EVERY_NS
            {
                scratch.python = crate::python::Runtime::find();
                scratch.python_looked_ns = now;
            }
            sample(seg, i, slot, since, w, &mut scratch);
            w.taken += 1;
            let step = if w.taken >= DENSE_SAMPLES { interval * 10 } else { interval };
            w.next_ns = now + step - step / 4;
        }
    }
}

/// Takes one sample of the loop in slot `i`, busy since `tick`.
fn sample(seg: Segment, i: usize, slot: &LoopSlot, tick: u64, w: &mut Watch, scratch: &mut Scratch) {
    let tid = slot.tid.load(Ordering::Relaxed);
    let status = read_proc(&format!("/proc/self/task/{tid}/status"), &mut scratch.text)
        .map(ThreadStatus::parse)
        .unwrap_or_default();
    let index = seg.header().sample_head.fetch_add(1, Ordering::AcqRel);
    let Some(entry) = seg.samples().get((index % SAMPLE_RING as u64) as usize) else { return };
    entry.seq.store(0, Ordering::Relaxed);
    entry.tid.store(tid, Ordering::Relaxed);
    entry.t_ns.store(crate::now_ns(), Ordering::Relaxed);
    entry.tick_ns.store(tick, Ordering::Relaxed);
    // The Python frames first, while the request is not posted: the handler's last store
    // publishes them with the native ones.
    match scratch.python {
        Some(py) => py.sample(tid, &mut scratch.tstates[i], entry),
        None => entry.npy.store(0, Ordering::Relaxed),
    }
    let sig = SIGNAL.load(Ordering::Relaxed) as i32;
    if status.sleeping && off_cpu(seg, slot, tid, entry, index, scratch) {
        return;
    }
    let blocked = sig != 0 && status.blocked & (1u64 << (sig - 1)) != 0;
    if sig == 0 || blocked || w.misses >= MAX_MISSES || !handler_in_place(sig) {
        miss(seg, entry, index);
        return;
    }
    stack::post(tid, i, index, tick);
    std::sync::atomic::fence(Ordering::SeqCst);
    if slot.in_call.load(Ordering::SeqCst) != 0 || slot.busy_since_ns.load(Ordering::SeqCst) != tick {
        // It entered a wait or sleep (or ended the tick) since: no signal now.
        if stack::withdraw() && !off_cpu(seg, slot, tid, entry, index, scratch) {
            miss(seg, entry, index);
        }
        return;
    }
    // SAFETY: tgkill to a thread of our own process with our own handler installed.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::c_long, sig as libc::c_long) };
    wait_for_handler(entry, index, w);
}

/// A wrapped wait or sleep in progress on a loop thread: while it lives the watchdog does not
/// signal the thread. Dropping it ends the call (and unblocks the signal if it was blocked).
pub(crate) struct Quiet {
    slot: &'static LoopSlot,
    /// The watchdog's signal, when it is blocked for the call (a request was posted for this
    /// thread just before); calls that pass a signal mask to the kernel must add it.
    pub(crate) blocked: Option<libc::c_int>,
}

thread_local! {
    /// The mask a blocking [`Quiet`] restores (kept out of `Quiet`, which the wait path moves).
    static OLD_MASK: std::cell::Cell<std::mem::MaybeUninit<libc::sigset_t>> =
        const { std::cell::Cell::new(std::mem::MaybeUninit::uninit()) };
}

impl Quiet {
    /// Marks the call begun, and blocks the watchdog's signal if a request for this thread is
    /// already posted.
    #[inline]
    pub(crate) fn begin(slot: &'static LoopSlot) -> Quiet {
        slot.in_call.fetch_add(1, Ordering::SeqCst);
        let mut q = Quiet { slot, blocked: None };
        let sig = SIGNAL.load(Ordering::Relaxed) as libc::c_int;
        if sig != 0 && stack::requested_for(slot.tid.load(Ordering::Relaxed)) {
            // SAFETY: a sigset with our signal; pthread_sigmask fills `old`, restored in drop.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                if libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) == 0
                    && OLD_MASK.try_with(|m| m.set(old)).is_ok()
                {
                    q.blocked = Some(sig);
                }
            }
        }
        q
    }
}

impl Drop for Quiet {
    #[inline]
    fn drop(&mut self) {
        if self.blocked.is_some() {
            if let Ok(old) = OLD_MASK.try_with(|m| m.get()) {
                // SAFETY: OLD_MASK was filled by pthread_sigmask in begin (blocked is set only then).
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
            }
        }
        self.slot.in_call.fetch_sub(1, Ordering::Release);
    }
}

/// Waits for the handler to fill sample `index`. A thread inside a long system call (a big
/// `read`) takes the signal only when the call returns: the request then stays posted (and no
/// other is sent) until it does, or the tick is over for long.
fn wait_for_handler(entry: &looptop_abi::SampleEntry, index: u64, w: &mut Watch) {
    let deadline = crate::now_ns() + HANDLER_WAIT.as_nanos() as u64;
    while entry.seq.load(Ordering::Acquire) != index + 1 {
        if crate::now_ns() > deadline {
            w.pending = Some((index, crate::now_ns()));
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    w.misses = 0;
}

/// A request still posted from an earlier round: done, still waiting (true), or given up.
fn still_pending(seg: Segment, i: usize, w: &mut Watch, now: u64) -> bool {
    let Some((index, since)) = w.pending else { return false };
    let Some(entry) = seg.samples().get((index % SAMPLE_RING as u64) as usize) else { return false };
    if entry.seq.load(Ordering::Acquire) == index + 1 {
        w.pending = None;
        w.misses = 0;
        return false;
    }
    // The tick is over (the thread blocked the signal for its next wait): give up at once.
    let over = seg.slots().get(i).is_none_or(|s| s.busy_since_ns.load(Ordering::Acquire) != w.tick);
    if !over && now.saturating_sub(since) < PENDING_MAX.as_nanos() as u64 {
        return true;
    }
    w.pending = None;
    if stack::withdraw() {
        w.misses += 1;
        miss(seg, entry, index);
    }
    false
}

/// Marks a sample that could not be taken.
fn miss(seg: Segment, entry: &looptop_abi::SampleEntry, index: u64) {
    seg.header().samples_missed.fetch_add(1, Ordering::Relaxed);
    stack::write_entry(entry, index + 1, &[], &stack::JsSlots::NONE.words, sample_flags::MISSED, u64::MAX, &[0; 32]);
}

/// A sleeping thread: where it waits, and a scan of a copy of its stack. False when it turned
/// out to be running (then it gets the signal).
fn off_cpu(
    seg: Segment,
    slot: &LoopSlot,
    tid: u32,
    entry: &looptop_abi::SampleEntry,
    index: u64,
    s: &mut Scratch,
) -> bool {
    let Some(text) = read_proc(&format!("/proc/self/task/{tid}/syscall"), &mut s.text) else { return false };
    let fields: Vec<&str> = std::str::from_utf8(text).unwrap_or("").split_whitespace().collect();
    if fields.first().is_none_or(|f| *f == "running") || fields.len() < 3 {
        return false;
    }
    let hex = |f: &str| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok();
    let nr: i64 = fields[0].parse().unwrap_or(-1);
    let (Some(sp), Some(pc)) = (hex(fields[fields.len() - 2]), hex(fields[fields.len() - 1])) else { return false };
    let mut wchan = [0u8; 32];
    if let Some(w) = read_proc(&format!("/proc/self/task/{tid}/wchan"), &mut s.text) {
        let n = w.len().min(31);
        wchan[..n].copy_from_slice(&w[..n]);
        if &wchan[..2] == b"0\0" {
            wchan = [0; 32];
        }
    }
    let hi = slot.stack_hi.load(Ordering::Relaxed);
    let len = if crate::sys::allowed(crate::sys::Call::ProcessVmReadv) { copy_stack(sp, hi, &mut s.stack) } else { 0 };
    let mem = stack::CopiedStack { base: sp, words: &s.stack[..len] };
    let mut frames = [0u64; SAMPLE_FRAMES];
    let mut js = stack::JsSlots::of(seg.header());
    let (n, flags) = stack::scan_copy(&mem, pc, sp, &mut frames, &mut js);
    stack::write_entry(entry, index + 1, &frames[..n], &js.words, flags, nr as u64, &wchan);
    true
}

/// Copies `[sp, min(hi, sp + buffer))` of our own memory without risking a fault; returns words.
fn copy_stack(sp: u64, hi: u64, buf: &mut [u64]) -> usize {
    let want = (hi.saturating_sub(sp) as usize).min(buf.len() * 8) & !7;
    // SAFETY: the first `want` bytes of `buf` as bytes (u64 has no invalid bit patterns).
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), want) };
    crate::sys::read_own(sp, bytes) / 8
}

/// State and blocked signals of a thread, from `/proc/self/task/TID/status`.
#[derive(Default)]
struct ThreadStatus {
    sleeping: bool,
    blocked: u64,
}

impl ThreadStatus {
    fn parse(text: &[u8]) -> Self {
        let mut st = ThreadStatus::default();
        for line in std::str::from_utf8(text).unwrap_or("").lines() {
            if let Some(v) = line.strip_prefix("State:") {
                st.sleeping = matches!(v.trim_start().as_bytes().first(), Some(b'S' | b'D'));
            } else if let Some(v) = line.strip_prefix("SigBlk:") {
                st.blocked = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
            }
        }
        st
    }
}

/// Re-reads the executable mappings for the stack scan (at most every 100 ms, and at the first
/// sample of each stall).
fn refresh_exec_ranges(s: &mut Scratch, now: u64) {
    s.maps_at = now;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    s.ranges.clear();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with("r-x") && !perms.starts_with("rwx") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
            s.ranges.push((a, b));
        }
    }
    s.ranges.sort_unstable();
    stack::set_exec_ranges(&s.ranges);
}

/// Reads a small /proc file into `buf`; the bytes read.
fn read_proc<'a>(path: &str, buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(path).ok()?.read_to_end(buf).ok()?;
    while buf.last().is_some_and(|b| b.is_ascii_whitespace()) {
        buf.pop();
    }
    Some(&buf[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_parsed() {
        let st = ThreadStatus::parse(b"Name:\tnode\nState:\tS (sleeping)\nSigBlk:\t0000000000010000\n");
        assert!(st.sleeping);
        assert_eq!(st.blocked, 1 << 16);
        assert!(!ThreadStatus::parse(b"State:\tR (running)\n").sleeping);
    }
}
