//! Where V8 keeps an interpreted frame's position, from its postmortem metadata: the `v8dbg_*`
//! symbols Node exports (they exist for debuggers such as llnode). Copied once into the segment
//! header, so that the watchdog's signal handler keeps each frame's bytecode array and offset,
//! which looptop turns into the line that was running. A process without them (no V8, or a
//! build that strips them) keeps the header's block zero.

use looptop_abi::{Header, V8Layout};
use std::sync::atomic::Ordering;

/// The value of `v8dbg_<name>` (an `int` in the program's data), if exported.
fn symbol(name: &[u8]) -> Option<i32> {
    let mut sym = [0u8; 96];
    let prefix = b"v8dbg_";
    let len = prefix.len() + name.len();
    if len >= sym.len() {
        return None;
    }
    sym[..prefix.len()].copy_from_slice(prefix);
    sym[prefix.len()..len].copy_from_slice(name);
    // SAFETY: `sym` is NUL-terminated; RTLD_DEFAULT searches the global scope (the program and
    // its libraries); the result, when not null, is the address of an exported `int`.
    let at = unsafe { libc::dlsym(libc::RTLD_DEFAULT, sym.as_ptr().cast()) } as *const i32;
    if at.is_null() {
        return None;
    }
    // SAFETY: see above; read once, as a debugger would.
    Some(unsafe { std::ptr::read_volatile(at) })
}

/// The two frame offsets, if exported and usable: word-aligned slots below the frame pointer,
/// and 64-bit tagged fields (no pointer compression).
fn read() -> Option<(i32, i32)> {
    let off_array = symbol(b"off_fp_bytecode_array")?;
    let off_offset = symbol(b"off_fp_bytecode_offset")?;
    let slot = |o: i32| (-256..0).contains(&o) && o % 8 == 0;
    (slot(off_array) && slot(off_offset) && symbol(b"TaggedSize") == Some(8)).then_some((off_array, off_offset))
}

/// Fills `header.v8` (once, from the watchdog thread: `dlsym` may allocate).
pub(crate) fn publish(header: &Header) {
    let v8: &V8Layout = &header.v8;
    if v8.known.load(Ordering::Acquire) != 0 {
        return;
    }
    let Some((off_array, off_offset)) = read() else { return };
    v8.off_fp_bytecode_array.store(off_array, Ordering::Relaxed);
    v8.off_fp_bytecode_offset.store(off_offset, Ordering::Relaxed);
    v8.known.store(1, Ordering::Release);
}

/// The frame-pointer offsets of an interpreted frame's two slots, once published.
pub(crate) fn frame_slots(header: &Header) -> Option<(i64, i64)> {
    let v8 = &header.v8;
    (v8.known.load(Ordering::Acquire) != 0).then(|| {
        (
            v8.off_fp_bytecode_array.load(Ordering::Relaxed) as i64,
            v8.off_fp_bytecode_offset.load(Ordering::Relaxed) as i64,
        )
    })
}
