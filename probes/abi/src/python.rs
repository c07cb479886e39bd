//! Where CPython 3.10–3.13 keep a thread's chain of Python frames, and one bounded walk of it
//! over any memory reader: the agent's watchdog walks its own process (fault-proof reads, no
//! allocation), looptop walks another process (`process_vm_readv`) and names what it found.
//!
//! A walk yields, innermost first, one pair of words per Python frame: the frame's code object
//! and where it was in its bytecode (3.10: the index of the last instruction, `f_lasti`; 3.11+:
//! the address of the instruction, `prev_instr`/`instr_ptr`), [`ENTRY`] set on the frames that
//! a C call of the interpreter (`_PyEval_EvalFrameDefault`) entered: those tell which native
//! frame of the interpreter runs which Python frames.
//!
//! The offsets come from each version's own headers (`Py_BUILD_CORE`, x86_64 and aarch64 alike:
//! 8-byte pointers); `src/symbolize/python/tests.rs` compiles `fixtures/c/python_offsets.c` against the installed
//! versions and fails when a number here is wrong.

/// Python frames kept per sample (innermost first; deeper stacks lose their outermost frames).
pub const PY_FRAMES: usize = 64;
/// Set in a frame's second word when an interpreter's C call entered that frame.
pub const ENTRY: u64 = 1 << 63;
/// `owner` of 3.12+'s shim frames, which only mark where C called into the interpreter.
const FRAME_OWNED_BY_CSTACK: u8 = 3;
/// Interpreters (subinterpreters included) looked at at most.
const MAX_INTERPRETERS: usize = 64;
/// Thread states per interpreter looked at at most.
const MAX_THREADS: usize = 4096;

/// A CPython version's offsets: of the runtime's interpreter list, the thread states, their
/// frames and the code objects (byte offsets within each structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyLayout {
    /// Minor version (3.x).
    pub minor: u32,
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interpreters_head: u64,
    /// `PyInterpreterState.next`.
    pub interp_next: u64,
    /// `PyInterpreterState.threads.head` (3.10: `tstate_head`).
    pub interp_threads_head: u64,
    /// `PyThreadState.next`.
    pub tstate_next: u64,
    /// `PyThreadState.native_thread_id` (3.11+): the thread's kernel id.
    pub tstate_native_thread_id: Option<u64>,
    /// `PyThreadState.thread_id`: the thread's `pthread_t` (3.10 has only this).
    pub tstate_thread_id: u64,
    /// `PyThreadState.frame` (3.10), `.cframe` (3.11, 3.12) or `.current_frame` (3.13+).
    pub tstate_frame: u64,
    /// `_PyCFrame.current_frame` (3.11, 3.12): the frame is one more pointer away.
    pub cframe_current_frame: Option<u64>,
    /// The frame's code object (`f_code`; 3.13: `f_executable`).
    pub frame_code: u64,
    /// The calling frame (`f_back`; 3.11+: `previous`).
    pub frame_previous: u64,
    /// Where the frame is (3.10: `f_lasti`, an `int`; 3.11, 3.12: `prev_instr`; 3.13: `instr_ptr`).
    pub frame_instr: u64,
    /// `owner` (3.11+).
    pub frame_owner: Option<u64>,
    /// `is_entry` (3.11 only).
    pub frame_is_entry: Option<u64>,
    /// `co_filename`.
    pub code_filename: u64,
    /// `co_name`.
    pub code_name: u64,
    /// `co_qualname` (3.11+).
    pub code_qualname: Option<u64>,
    /// `co_firstlineno` (an `int`).
    pub code_firstlineno: u64,
    /// `co_linetable` (a `bytes`).
    pub code_linetable: u64,
    /// `co_code_adaptive` (3.11+): the bytecode, inside the code object.
    pub code_adaptive: Option<u64>,
    /// `_co_firsttraceable` (3.11+, an `int`): instructions before it run before the frame is
    /// complete.
    pub code_firsttraceable: Option<u64>,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub unicode_ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub unicode_compact_size: u64,
}

/// `PyASCIIObject.length`.
pub const UNICODE_LENGTH: u64 = 16;
/// `PyASCIIObject.state` (bit fields: interned, kind, compact, ascii).
pub const UNICODE_STATE: u64 = 32;
/// `PyBytesObject.ob_size`.
pub const BYTES_SIZE: u64 = 16;
/// `PyBytesObject.ob_sval`.
pub const BYTES_DATA: u64 = 32;
/// `PyObject.ob_type`.
pub const OBJECT_TYPE: u64 = 8;

const PY310: PyLayout = PyLayout {
    minor: 10,
    runtime_interpreters_head: 32,
    interp_next: 0,
    interp_threads_head: 8,
    tstate_next: 8,
    tstate_native_thread_id: None,
    tstate_thread_id: 176,
    tstate_frame: 24,
    cframe_current_frame: None,
    frame_code: 32,
    frame_previous: 24,
    frame_instr: 96,
    frame_owner: None,
    frame_is_entry: None,
    code_filename: 104,
    code_name: 112,
    code_qualname: None,
    code_firstlineno: 40,
    code_linetable: 120,
    code_adaptive: None,
    code_firsttraceable: None,
    unicode_ascii_size: 48,
    unicode_compact_size: 72,
};

const PY311: PyLayout = PyLayout {
    minor: 11,
    runtime_interpreters_head: 40,
    interp_next: 0,
    interp_threads_head: 16,
    tstate_next: 8,
    tstate_native_thread_id: Some(160),
    tstate_thread_id: 152,
    tstate_frame: 56,
    cframe_current_frame: Some(8),
    frame_code: 32,
    frame_previous: 48,
    frame_instr: 56,
    frame_owner: Some(69),
    frame_is_entry: Some(68),
    code_filename: 112,
    code_name: 120,
    code_qualname: Some(128),
    code_firstlineno: 72,
    code_linetable: 136,
    code_adaptive: Some(184),
    code_firsttraceable: Some(168),
    unicode_ascii_size: 48,
    unicode_compact_size: 72,
};

const PY312: PyLayout = PyLayout {
    minor: 12,
    runtime_interpreters_head: 40,
    interp_next: 0,
    interp_threads_head: 72,
    tstate_next: 8,
    tstate_native_thread_id: Some(144),
    tstate_thread_id: 136,
    tstate_frame: 56,
    cframe_current_frame: Some(0),
    frame_code: 0,
    frame_previous: 8,
    frame_instr: 56,
    frame_owner: Some(70),
    frame_is_entry: None,
    code_filename: 112,
    code_name: 120,
    code_qualname: Some(128),
    code_firstlineno: 68,
    code_linetable: 136,
    code_adaptive: Some(192),
    code_firsttraceable: Some(176),
    unicode_ascii_size: 40,
    unicode_compact_size: 56,
};

const PY313: PyLayout = PyLayout {
    minor: 13,
    runtime_interpreters_head: 632,
    interp_next: 7264,
    interp_threads_head: 7344,
    tstate_next: 8,
    tstate_native_thread_id: Some(160),
    tstate_thread_id: 152,
    tstate_frame: 72,
    cframe_current_frame: None,
    frame_code: 0,
    frame_previous: 8,
    frame_instr: 56,
    frame_owner: Some(70),
    frame_is_entry: None,
    code_filename: 112,
    code_name: 120,
    code_qualname: Some(128),
    code_firstlineno: 68,
    code_linetable: 136,
    code_adaptive: Some(200),
    code_firsttraceable: Some(184),
    unicode_ascii_size: 40,
    unicode_compact_size: 56,
};

/// Every layout known, by minor version.
pub const LAYOUTS: [&PyLayout; 4] = [&PY310, &PY311, &PY312, &PY313];

/// The layout of CPython 3.`minor`, if it is one of [`LAYOUTS`].
pub fn layout(minor: u32) -> Option<&'static PyLayout> {
    LAYOUTS.iter().copied().find(|l| l.minor == minor)
}

/// The minor version of a `Py_Version`/`PY_VERSION_HEX` value (`0x030B07F0` → 11), for 3.x.
pub fn minor_of_hex(hex: u64) -> Option<u32> {
    (hex >> 24 == 3).then_some(((hex >> 16) & 0xff) as u32)
}

/// Memory of the process walked.
pub trait Mem {
    /// Fills `buf` from `addr`; false when any byte could not be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    /// The 8-byte word at `addr`.
    fn word(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_ne_bytes(b))
    }

    /// The 4-byte word at `addr`.
    fn word32(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_ne_bytes(b))
    }
}

/// Whether `p` can be a pointer to a structure (not null, aligned, in user space).
fn pointer(p: u64) -> Option<u64> {
    (p >= 4096 && p & 7 == 0 && p < 1 << 56).then_some(p)
}

/// The thread state of kernel thread `tid`, looked for in every interpreter of the runtime at
/// `runtime`. 3.10 keeps only the `pthread_t`: `pthread_tid` is where glibc keeps the kernel
/// id in the thread's `struct pthread` (found by [`pthread_tid_offset`]).
pub fn find_thread(mem: &impl Mem, l: &PyLayout, runtime: u64, tid: u32, pthread_tid: Option<u64>) -> Option<u64> {
    let mut interp = pointer(mem.word(runtime + l.runtime_interpreters_head)?);
    for _ in 0..MAX_INTERPRETERS {
        let Some(i) = interp else { break };
        let mut ts = pointer(mem.word(i + l.interp_threads_head)?);
        for _ in 0..MAX_THREADS {
            let Some(t) = ts else { break };
            if thread_id(mem, l, t, pthread_tid) == Some(tid) {
                return Some(t);
            }
            ts = pointer(mem.word(t + l.tstate_next)?);
        }
        interp = pointer(mem.word(i + l.interp_next)?);
    }
    None
}

/// The kernel thread id of thread state `tstate`.
pub fn thread_id(mem: &impl Mem, l: &PyLayout, tstate: u64, pthread_tid: Option<u64>) -> Option<u32> {
    match l.tstate_native_thread_id {
        Some(o) => Some(mem.word(tstate + o)? as u32),
        None => {
            let pthread = pointer(mem.word(tstate + l.tstate_thread_id)?)?;
            mem.word32(pthread + pthread_tid?)
        }
    }
}

/// Where glibc keeps the kernel thread id in a `struct pthread`, found in the calling thread's
/// own: the first 4-byte word equal to `tid` within the first 2 KiB of `pthread_self`.
pub fn pthread_tid_offset(mem: &impl Mem, pthread_self: u64, tid: u32) -> Option<u64> {
    let mut buf = [0u8; 2048];
    if !mem.read(pthread_self, &mut buf) {
        return None;
    }
    (16..buf.len() / 4)
        .find(|&i| u32::from_ne_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]) == tid)
        .map(|i| 4 * i as u64)
}

/// Walks the Python frames of thread state `tstate`, innermost first, into `out` (code object,
/// position | [`ENTRY`]); returns how many were written. Bounded by `out`; stops at the first
/// word it cannot read.
pub fn walk(mem: &impl Mem, l: &PyLayout, tstate: u64, out: &mut [[u64; 2]]) -> usize {
    let Some(mut frame) = mem.word(tstate + l.tstate_frame).and_then(pointer) else { return 0 };
    if let Some(o) = l.cframe_current_frame {
        match mem.word(frame + o).and_then(pointer) {
            Some(f) => frame = f,
            None => return 0,
        }
    }
    let span = [l.frame_code + 8, l.frame_previous + 8, l.frame_instr + 8, l.frame_owner.unwrap_or(0) + 1];
    let span = span.iter().copied().max().unwrap_or(0) as usize;
    let mut buf = [0u8; 128];
    if span > buf.len() {
        return 0;
    }
    let (mut n, mut steps) = (0usize, 0usize);
    let at = |buf: &[u8], o: u64| {
        let o = o as usize;
        u64::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3], buf[o + 4], buf[o + 5], buf[o + 6], buf[o + 7]])
    };
    while n < out.len() && steps < 2 * out.len() + 8 {
        steps += 1;
        if !mem.read(frame, &mut buf[..span]) {
            break;
        }
        let code = at(&buf, l.frame_code);
        let previous = at(&buf, l.frame_previous);
        let owner = l.frame_owner.map(|o| buf[o as usize]);
        if l.minor >= 12 && owner == Some(FRAME_OWNED_BY_CSTACK) {
            // The shim C left when it called the interpreter: the frame inside was entered.
            if let Some(last) = n.checked_sub(1).and_then(|i| out.get_mut(i)) {
                last[1] |= ENTRY;
            }
        } else {
            let instr = match l.minor {
                10 => at(&buf, l.frame_instr) as u32 as u64,
                _ => at(&buf, l.frame_instr) & !ENTRY,
            };
            let entry = match (l.minor, l.frame_is_entry) {
                (10, _) => true,
                (_, Some(o)) => buf[o as usize] != 0,
                _ => false,
            };
            out[n] = [code, instr | if entry { ENTRY } else { 0 }];
            n += 1;
        }
        match pointer(previous) {
            Some(p) => frame = p,
            None => break,
        }
    }
    n
}
