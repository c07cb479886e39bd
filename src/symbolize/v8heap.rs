//! The line a JavaScript frame was running, read from V8's heap.
//!
//! V8's perf map names where a function starts, never the line inside it. Two kinds of frames
//! can tell more, read in the target's memory (`process_vm_readv`, as its user or root could):
//!
//! - **Interpreted** frames keep their `BytecodeArray` and the offset of the bytecode they run in
//!   two slots below the frame pointer; the agent's watchdog keeps those two words with each
//!   stack it takes (agent mode only). The array's source position table maps the offset to a
//!   script offset.
//! - **Optimized** code (TurboFan, Maglev, on-stack replacement included) is a `Code` object
//!   whose source position table maps an instruction offset to a script offset; the code's start
//!   comes from the perf map, so any sampled address will do (every mode).
//!
//! The layout comes from the process's own `v8dbg_*` symbols (V8's postmortem metadata, which
//! Node exports for debuggers), read from its binary; the few fields they lack (where a
//! `BytecodeArray` keeps its table, where an `InstructionStream` points back to its `Code`) are
//! known for V8 10 and 11 (Node 18–21) and checked on every read. Every object's type is checked
//! by its map and every length and offset by bounds: anything unexpected gives no line (the
//! function's start stays), never a line from garbage. Baseline (Sparkplug) code maps
//! instructions to bytecodes by a table that needs each bytecode's size; it keeps the start.

use std::path::Path;

/// Longest source position table read (bytes).
const MAX_TABLE: u64 = 1 << 20;
/// Most inlining levels followed out to the frame's own function.
const MAX_INLINING: usize = 64;

/// V8's layout, from the `v8dbg_*` symbols of the binary that holds V8.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct V8Heap {
    /// Offset of the first bytecode in a `BytecodeArray`.
    pub bytecode_array_data: u32,
    /// Offset of `Map::instance_type`.
    pub map_instance_type: u32,
    /// Instance type of a `BytecodeArray`.
    pub type_bytecode_array: u32,
    /// Instance type of a `ByteArray`.
    pub type_byte_array: u32,
    /// Instance type of a `FixedArray`.
    pub type_fixed_array: u32,
    /// Instance type of a `Code`.
    pub type_code: u32,
    /// Offset of `FixedArrayBase::length`.
    pub fixed_array_length: u32,
    /// Offset of a `FixedArray`'s first element.
    pub fixed_array_data: u32,
    /// How far a Smi's value is shifted in its word.
    pub smi_shift: u32,
    /// The heap object tag.
    pub heap_object_tag: u32,
    /// Offset of the instructions in an `InstructionStream` (its header size).
    pub instruction_stream_start: u32,
    /// Offset of `Code::source_position_table`.
    pub code_position_table: u32,
    /// Offset of `Code::deoptimization_data`.
    pub code_deopt_data: u32,
    /// Index of the inlining positions in deoptimization data.
    pub deopt_inlining_positions: u32,
    /// Offset of baseline `Code`'s bytecode array (`bytecode_or_interpreter_data`).
    pub code_bytecode_array: u32,
    /// Offset of baseline `Code`'s instruction-to-bytecode table (`bytecode_offset_table`).
    pub code_bytecode_offsets: u32,
    /// Instance type of `InterpreterData` (a baseline function with its own interpreter entry
    /// keeps its bytecode array in one); `u32::MAX` when not exported.
    pub type_interpreter_data: u32,
    /// The size of each bytecode at each operand scale (`Bytecodes::kBytecodeSizes`, 3 rows),
    /// from the binary's symbol table; empty when it has none (baseline code keeps the start).
    pub bytecode_sizes: Vec<u8>,
}

/// The symbols read, in the order of [`V8Heap`]'s fields as it is built.
const SYMBOLS: [&str; 17] = [
    "v8dbg_class_BytecodeArray__data__uintptr_t",
    "v8dbg_class_Map__instance_type__uint16_t",
    "v8dbg_type_BytecodeArray__BYTECODE_ARRAY_TYPE",
    "v8dbg_type_ByteArray__BYTE_ARRAY_TYPE",
    "v8dbg_type_FixedArray__FIXED_ARRAY_TYPE",
    "v8dbg_type_Code__CODE_TYPE",
    "v8dbg_class_FixedArrayBase__length__SMI",
    "v8dbg_class_FixedArray__data__uintptr_t",
    "v8dbg_SmiShiftSize",
    "v8dbg_HeapObjectTag",
    "v8dbg_class_InstructionStream__instruction_start__uintptr_t",
    "v8dbg_class_Code__source_position_table__ByteArray",
    "v8dbg_class_Code__deoptimization_data__FixedArray",
    "v8dbg_DeoptimizationDataInliningPositionsIndex",
    "v8dbg_class_Code__bytecode_or_interpreter_data__HeapObject",
    "v8dbg_class_Code__bytecode_offset_table__ByteArray",
    "v8dbg_TaggedSize",
];

/// Symbols read when present.
const OPTIONAL: [&str; 1] = ["v8dbg_type_InterpreterData__INTERPRETER_DATA_TYPE"];

/// V8's table of bytecode sizes (a C++ symbol: present when the binary keeps its symbol table).
const BYTECODE_SIZES: &str = "_ZN2v88internal11interpreter9Bytecodes14kBytecodeSizesE";
/// Largest bytecode size table read (3 rows of one byte per bytecode).
const MAX_SIZES: usize = 3 * 1024;

impl V8Heap {
    /// The layout the ELF file at `path` exports, if it holds V8 with 64-bit tagged fields.
    pub fn from_elf(path: &Path) -> Option<Self> {
        use blazesym::inspect::source::{Elf, Source};
        let inspector = blazesym::inspect::Inspector::new();
        let mut names = SYMBOLS.to_vec();
        names.extend(OPTIONAL);
        names.push(BYTECODE_SIZES);
        let found = inspector.lookup(&Source::Elf(Elf::new(path)), &names).ok()?;
        let file = std::fs::File::open(path).ok()?;
        let read = |at: u64, buf: &mut [u8]| std::os::unix::fs::FileExt::read_exact_at(&file, buf, at).ok();
        let mut v = [0u32; SYMBOLS.len()];
        for (slot, syms) in v.iter_mut().zip(&found) {
            let mut b = [0u8; 4];
            read(syms.first()?.file_offset?, &mut b)?;
            *slot = u32::from_ne_bytes(b);
        }
        let optional = |i: usize| {
            let at = found.get(SYMBOLS.len() + i)?.first()?.file_offset?;
            let mut b = [0u8; 4];
            read(at, &mut b).map(|_| u32::from_ne_bytes(b))
        };
        let sizes = found.get(SYMBOLS.len() + OPTIONAL.len()).and_then(|syms| {
            let sym = syms.first()?;
            let len = sym.size.filter(|&n| n % 3 == 0 && (3..=MAX_SIZES).contains(&n))?;
            let mut b = vec![0u8; len];
            read(sym.file_offset?, &mut b)?;
            Some(b)
        });
        let h = V8Heap {
            bytecode_array_data: v[0],
            map_instance_type: v[1],
            type_bytecode_array: v[2],
            type_byte_array: v[3],
            type_fixed_array: v[4],
            type_code: v[5],
            fixed_array_length: v[6],
            fixed_array_data: v[7],
            smi_shift: v[8].checked_add(1)?,
            heap_object_tag: v[9],
            instruction_stream_start: v[10],
            code_position_table: v[11],
            code_deopt_data: v[12],
            deopt_inlining_positions: v[13],
            code_bytecode_array: v[14],
            code_bytecode_offsets: v[15],
            type_interpreter_data: optional(0).unwrap_or(u32::MAX),
            bytecode_sizes: sizes.unwrap_or_default(),
        };
        let offsets = [
            h.bytecode_array_data,
            h.map_instance_type,
            h.fixed_array_length,
            h.fixed_array_data,
            h.instruction_stream_start,
            h.code_position_table,
            h.code_deopt_data,
            h.code_bytecode_array,
            h.code_bytecode_offsets,
        ];
        let sane = v[16] == 8
            && h.smi_shift < 64
            && h.heap_object_tag < 4
            && offsets.iter().all(|&o| o < 4096)
            && h.deopt_inlining_positions < 64;
        sane.then_some(h)
    }

    /// Where a `BytecodeArray` keeps its source position table: after the map, the length, the
    /// constant pool and the handler table in V8 10 and 11, whose arrays have a 54-byte header
    /// (56 with padding); unknown for other layouts.
    fn source_position_table(&self) -> Option<u64> {
        matches!(self.bytecode_array_data, 54 | 56).then_some(32)
    }

    /// Where an `InstructionStream` points back to its `Code`: right after its map when its
    /// header is those two words (V8 11); unknown for other layouts.
    fn instruction_stream_code(&self) -> Option<u64> {
        (self.instruction_stream_start == 16).then_some(8)
    }

    /// The value of a Smi word, if it is one.
    fn smi(&self, w: u64) -> Option<i64> {
        (w & 1 == 0).then(|| (w as i64) >> self.smi_shift)
    }

    /// The object a tagged pointer word points at, if it is one.
    fn object(&self, w: u64) -> Option<u64> {
        (w & 3 == self.heap_object_tag as u64 && w > 4096).then(|| w - self.heap_object_tag as u64)
    }
}

/// A process's memory, read from outside.
pub trait Memory {
    /// Fills `buf` from `addr`; false when any byte could not be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    /// The 8-byte word at `addr`.
    fn word(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_ne_bytes(b))
    }
}

/// Another process's memory through `process_vm_readv` (needs the right to trace it).
pub struct ProcessMemory(pub u32);

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: one local iovec over `buf`, which we own mutably; the remote one is only read by
        // the kernel, which checks it against the target's mappings.
        let n = unsafe { libc::process_vm_readv(self.0 as libc::pid_t, &local, 1, &remote, 1, 0) };
        n == buf.len() as isize
    }
}

/// The script offset (UTF-16 units from the start of the script's source) of the bytecode an
/// interpreted frame was running, from its two slot words (`array`, `offset`).
pub fn interpreted_offset(mem: &impl Memory, h: &V8Heap, array: u64, offset: u64) -> Option<u32> {
    let array = h.object(array)?;
    let table_at = h.source_position_table()?;
    // The frame keeps the offset from the array's tagged start: header size − tag + bytecode.
    let bytecode = h.smi(offset)?.checked_sub(h.bytecode_array_data as i64 - h.heap_object_tag as i64)?;
    if !is_a(mem, h, array, h.type_bytecode_array)? {
        return None;
    }
    let length = h.smi(mem.word(array + h.fixed_array_length as u64)?)?;
    if bytecode < 0 || bytecode >= length {
        return None;
    }
    // No table when V8 compiled the function without one (lazy source positions): no line.
    let table = byte_array(mem, h, mem.word(array + table_at)?)?;
    script_offset(position_at(&table, bytecode)?)
}

/// The `Code` object of the code that starts at `start` (the perf map's start of its entry):
/// the `InstructionStream` just before the instructions points back to it, and it names this
/// very start among its fields.
fn code_at(mem: &impl Memory, h: &V8Heap, start: u64) -> Option<u64> {
    let stream = start.checked_sub(h.instruction_stream_start as u64)?;
    let code = h.object(mem.word(stream + h.instruction_stream_code()?)?)?;
    if !is_a(mem, h, code, h.type_code)? {
        return None;
    }
    let mut fields = [0u8; 48];
    (mem.read(code + 16, &mut fields) && fields.chunks_exact(8).any(|w| w == start.to_ne_bytes())).then_some(code)
}

/// The script offset of the instruction at `pc` of optimized code (TurboFan, Maglev) that starts
/// at `start`, in the frame's own function: a position inside code V8 inlined there is followed
/// out to the call in the frame's function.
pub fn compiled_offset(mem: &impl Memory, h: &V8Heap, start: u64, pc: u64) -> Option<u32> {
    let code = code_at(mem, h, start)?;
    let table = byte_array(mem, h, mem.word(code + h.code_position_table as u64)?)?;
    let mut raw = position_at(&table, pc.checked_sub(start)? as i64)?;
    let mut inlined: Option<Vec<u8>> = None;
    for _ in 0..MAX_INLINING {
        let Some(id) = inlining_id(raw) else { return script_offset(raw) };
        if inlined.is_none() {
            let deopt = h.object(mem.word(code + h.code_deopt_data as u64)?)?;
            if !is_a(mem, h, deopt, h.type_fixed_array)? {
                return None;
            }
            let at = deopt + h.fixed_array_data as u64 + 8 * h.deopt_inlining_positions as u64;
            inlined = Some(byte_array(mem, h, mem.word(at)?)?);
        }
        // Each InliningPosition: the call's SourcePosition (8 bytes), the function id (4), padding.
        let entry = inlined.as_deref()?.get(id as usize * 16..id as usize * 16 + 8)?;
        raw = i64::from_ne_bytes(entry.try_into().ok()?);
    }
    None
}

/// The script offset of the instruction at `pc` of baseline (Sparkplug) code that starts at
/// `start`: its table gives the length of each bytecode's instructions in bytecode order, so the
/// bytecodes are walked (by V8's own size table) to the one whose instructions hold `pc`.
pub fn baseline_offset(mem: &impl Memory, h: &V8Heap, start: u64, pc: u64) -> Option<u32> {
    if h.bytecode_sizes.is_empty() {
        return None;
    }
    let code = code_at(mem, h, start)?;
    let mut array = h.object(mem.word(code + h.code_bytecode_array as u64)?)?;
    if is_a(mem, h, array, h.type_interpreter_data)? {
        // A struct: its map, then the bytecode array, then the function's own interpreter entry.
        array = h.object(mem.word(array + 8)?)?;
    }
    if !is_a(mem, h, array, h.type_bytecode_array)? {
        return None;
    }
    let bytecodes = array_bytes(mem, h, array, h.bytecode_array_data)?;
    let table = byte_array(mem, h, mem.word(code + h.code_bytecode_offsets as u64)?)?;
    let bytecode = bytecode_at(&table, &bytecodes, &h.bytecode_sizes, pc.checked_sub(start)?)?;
    let positions = byte_array(mem, h, mem.word(array + h.source_position_table()?)?)?;
    script_offset(position_at(&positions, bytecode as i64)?)
}

/// The offset of the bytecode whose baseline instructions hold `pc_offset`: `table` holds, as
/// unsigned VLQs, the length of the prologue's instructions and then of each bytecode's.
pub fn bytecode_at(table: &[u8], bytecodes: &[u8], sizes: &[u8], pc_offset: u64) -> Option<usize> {
    let (mut i, mut at) = (0, 0usize);
    let mut end = uvlq(table, &mut i)?;
    let mut current = None;
    while end < pc_offset {
        end = end.checked_add(uvlq(table, &mut i)?)?;
        current = Some(at);
        at = at.checked_add(bytecode_size(bytecodes, sizes, at)?)?;
    }
    current
}

/// The size of the bytecode at `at`, with its operand-scaling prefix (`Wide`, `ExtraWide` and
/// their debug-break forms, the first four bytecodes) if it has one.
fn bytecode_size(bytecodes: &[u8], sizes: &[u8], at: usize) -> Option<usize> {
    let count = sizes.len() / 3;
    let op = *bytecodes.get(at)? as usize;
    let (prefix, scale, op) = match op {
        0 | 2 => (1, 1, *bytecodes.get(at + 1)? as usize),
        1 | 3 => (1, 2, *bytecodes.get(at + 1)? as usize),
        _ => (0, 0, op),
    };
    let size = *sizes.get(scale * count + op)? as usize;
    (size > 0).then_some(prefix + size)
}

/// The bytes of the `ByteArray` a tagged word points at (bounded).
fn byte_array(mem: &impl Memory, h: &V8Heap, tagged: u64) -> Option<Vec<u8>> {
    let array = h.object(tagged)?;
    if !is_a(mem, h, array, h.type_byte_array)? {
        return None;
    }
    array_bytes(mem, h, array, h.fixed_array_length + 8)
}

/// The bytes of an array object at `array` whose elements start at `data` (its length, a Smi,
/// is where every `FixedArrayBase` keeps it), at most [`MAX_TABLE`].
fn array_bytes(mem: &impl Memory, h: &V8Heap, array: u64, data: u32) -> Option<Vec<u8>> {
    let len = h.smi(mem.word(array + h.fixed_array_length as u64)?)?;
    if len <= 0 || len as u64 > MAX_TABLE {
        return None;
    }
    let mut bytes = vec![0u8; len as usize];
    mem.read(array + data as u64, &mut bytes).then_some(bytes)
}

/// Whether the heap object at `obj` has instance type `ty`.
fn is_a(mem: &impl Memory, h: &V8Heap, obj: u64, ty: u32) -> Option<bool> {
    let map = h.object(mem.word(obj)?)?;
    let mut b = [0u8; 2];
    mem.read(map + h.map_instance_type as u64, &mut b).then(|| u16::from_ne_bytes(b) as u32 == ty)
}

/// A `SourcePosition`'s inlining id: which inlined function it lies in, `None` for the code's
/// own function (bits 31–46 hold the id + 1).
fn inlining_id(raw: i64) -> Option<u32> {
    let id = ((raw >> 31) & 0xffff) as u32;
    id.checked_sub(1)
}

/// A `SourcePosition`'s script offset: bit 0 is "external" (a line of another file, never ours),
/// bits 1–30 the offset + 1.
fn script_offset(raw: i64) -> Option<u32> {
    if raw & 1 != 0 {
        return None;
    }
    u32::try_from(((raw >> 1) & ((1 << 30) - 1)) - 1).ok()
}

/// The raw `SourcePosition` of the last entry of a source position table at or before
/// `code_offset`: entries are (code offset, position) deltas, each a zigzag VLQ; the sign of the
/// first says whether it is a statement.
pub fn position_at(table: &[u8], code_offset: i64) -> Option<i64> {
    let mut i = 0;
    let (mut code, mut pos) = (0i64, 0i64);
    let mut found = None;
    while i < table.len() {
        let d = vlq(table, &mut i)?;
        let d = if d >= 0 { d } else { -(d + 1) };
        let p = vlq(table, &mut i)?;
        code = code.checked_add(d)?;
        pos = pos.checked_add(p)?;
        if code > code_offset {
            break;
        }
        found = Some(pos);
    }
    found
}

/// One unsigned variable-length integer (7 bits a byte, low first, high bit = more).
fn uvlq(bytes: &[u8], i: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *bytes.get(*i)?;
        *i += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// One zigzag-encoded variable-length integer.
fn vlq(bytes: &[u8], i: &mut usize) -> Option<i64> {
    let v = uvlq(bytes, i)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

#[cfg(test)]
mod tests;
