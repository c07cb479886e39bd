//! The line a JavaScript frame was running, read from V8's heap.
//!
//! V8's perf map names where a function starts, never the line inside it. Frames can tell more,
//! read in the target's memory (`process_vm_readv`, as its user or root could):
//!
//! - **Interpreted** frames keep their `BytecodeArray` and the offset of the bytecode they run in
//!   two slots below the frame pointer; the agent's watchdog keeps those two words with each
//!   stack it takes (agent mode only). The array's source position table maps the offset to a
//!   script offset.
//! - **Compiled** code is a `Code` object found just before the instructions the perf map names:
//!   optimized code (Maglev, TurboFan, on-stack replacement included) maps instruction offsets
//!   to script offsets, inlined code followed out to the call in the frame's own function;
//!   baseline (Sparkplug) code maps them to bytecodes, walked with V8's own table of bytecode
//!   sizes (`Bytecodes::kBytecodeSizes`, from the binary's symbol table), then as interpreted.
//!
//! The layout comes from the process's own `v8dbg_*` symbols (V8's postmortem metadata, which
//! Node exports for debuggers), read from its binary; the few fields they lack (where a
//! `BytecodeArray` keeps its table, where an `InstructionStream` points back to its `Code`, and
//! in V8 12 where a `Code` keeps its tables) are known for V8 11 and 12.4 (Node 20–22). Every
//! object's type is checked by its map and every length and offset by bounds: anything
//! unexpected gives no line (the function's start stays), never a line from garbage.

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
    /// Instance types of a byte array: `ByteArray`, and `TrustedByteArray` where V8 has one
    /// (`u32::MAX` otherwise).
    pub type_byte_arrays: [u32; 2],
    /// Instance types of a fixed array: `FixedArray`, and `TrustedFixedArray` where V8 has one.
    pub type_fixed_arrays: [u32; 2],
    /// Instance type of a `Code`.
    pub type_code: u32,
    /// Instance type of `InterpreterData` (a baseline function with its own interpreter entry
    /// keeps its bytecode array in one); `u32::MAX` when not exported.
    pub type_interpreter_data: u32,
    /// Offset of `FixedArrayBase::length` (a Smi; the elements follow it).
    pub fixed_array_length: u32,
    /// Offset of a `FixedArray`'s first element.
    pub fixed_array_data: u32,
    /// How far a Smi's value is shifted in its word.
    pub smi_shift: u32,
    /// The heap object tag.
    pub heap_object_tag: u32,
    /// Offset of the instructions in an `InstructionStream` (its header size).
    pub instruction_stream_start: u32,
    /// Index of the inlining positions in deoptimization data.
    pub deopt_inlining_positions: u32,
    /// Where a `BytecodeArray` keeps its source position table, where this V8 is known.
    pub bytecode_positions: Option<u32>,
    /// Where a `Code` keeps its tables, where this V8 is known.
    pub code: Option<CodeFields>,
    /// The size of each bytecode at each operand scale (`Bytecodes::kBytecodeSizes`, 3 rows),
    /// from the binary's symbol table; empty when it has none (baseline code keeps the start).
    pub bytecode_sizes: Vec<u8>,
}

/// Two fields of a `Code` object, each holding one thing or another by the code's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeFields {
    /// Optimized code's source position table; baseline code's instruction-to-bytecode table.
    pub positions: u32,
    /// Optimized code's deoptimization data; baseline code's bytecode array (or the
    /// `InterpreterData` that holds it).
    pub data: u32,
}

/// Symbols every layout needs.
const REQUIRED: [&str; 12] = [
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
    "v8dbg_TaggedSize",
];

/// Symbols read where the version has them.
const OPTIONAL: [&str; 7] = [
    "v8dbg_type_InterpreterData__INTERPRETER_DATA_TYPE",
    "v8dbg_type_TrustedByteArray__TRUSTED_BYTE_ARRAY_TYPE",
    "v8dbg_type_TrustedFixedArray__TRUSTED_FIXED_ARRAY_TYPE",
    "v8dbg_DeoptimizationDataInliningPositionsIndex",
    "v8dbg_class_Code__source_position_table__ByteArray",
    "v8dbg_class_Code__deoptimization_data__FixedArray",
    "v8dbg_class_Code__instruction_start__Address",
];

/// V8's table of bytecode sizes (a C++ symbol: present when the binary keeps its symbol table).
const BYTECODE_SIZES: &str = "_ZN2v88internal11interpreter9Bytecodes14kBytecodeSizesE";
/// Largest bytecode size table read (3 rows of one byte per bytecode).
const MAX_SIZES: usize = 3 * 1024;

impl V8Heap {
    /// The layout the ELF file at `path` exports, if it holds V8 with 64-bit tagged fields.
    pub fn from_elf(path: &Path) -> Option<Self> {
        use blazesym::inspect::source::{Elf, Source};
        let inspector = blazesym::inspect::Inspector::new();
        let names: Vec<&str> = REQUIRED.iter().chain(&OPTIONAL).copied().chain([BYTECODE_SIZES]).collect();
        let found = inspector.lookup(&Source::Elf(Elf::new(path)), &names).ok()?;
        let file = std::fs::File::open(path).ok()?;
        let read = |at: u64, buf: &mut [u8]| std::os::unix::fs::FileExt::read_exact_at(&file, buf, at).ok();
        let value = |i: usize| {
            let mut b = [0u8; 4];
            read(found.get(i)?.first()?.file_offset?, &mut b)?;
            Some(u32::from_ne_bytes(b))
        };
        let mut v = [0u32; REQUIRED.len()];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = value(i)?;
        }
        let opt = |name: &str| value(REQUIRED.len() + OPTIONAL.iter().position(|n| *n == name)?);
        let sizes = found.get(names.len() - 1).and_then(|syms| {
            let sym = syms.first()?;
            let len = sym.size.filter(|&n| n % 3 == 0 && (3..=MAX_SIZES).contains(&n))?;
            let mut b = vec![0u8; len];
            read(sym.file_offset?, &mut b)?;
            Some(b)
        });
        let trusted = opt(OPTIONAL[1]).unwrap_or(u32::MAX);
        let data = v[0];
        // V8 10 and 11 (Node 18–21): the `Code` fields are in the metadata, the array's table
        // follows its map, length, constant pool and handler table. V8 12.4 (Node 22): neither
        // is (the `Code` fields are read at their places in 12.4, told by where its instruction
        // start is); the array's table follows its map, length and wrapper.
        let (bytecode_positions, code) = match (data, opt(OPTIONAL[4]), opt(OPTIONAL[5]), opt(OPTIONAL[6])) {
            (54 | 56, Some(positions), Some(data), _) => (Some(32), Some(CodeFields { positions, data })),
            (64, None, None, Some(40)) if trusted != u32::MAX => {
                (Some(24), Some(CodeFields { positions: 16, data: 8 }))
            }
            _ => (None, None),
        };
        let h = V8Heap {
            bytecode_array_data: data,
            map_instance_type: v[1],
            type_bytecode_array: v[2],
            type_byte_arrays: [v[3], trusted],
            type_fixed_arrays: [v[4], opt(OPTIONAL[2]).unwrap_or(u32::MAX)],
            type_code: v[5],
            type_interpreter_data: opt(OPTIONAL[0]).unwrap_or(u32::MAX),
            fixed_array_length: v[6],
            fixed_array_data: v[7],
            smi_shift: v[8].checked_add(1)?,
            heap_object_tag: v[9],
            instruction_stream_start: v[10],
            deopt_inlining_positions: opt(OPTIONAL[3]).unwrap_or(u32::MAX),
            bytecode_positions,
            code,
            bytecode_sizes: sizes.unwrap_or_default(),
        };
        let offsets = [h.bytecode_array_data, h.map_instance_type, h.fixed_array_length, h.fixed_array_data];
        let sane = v[11] == 8
            && h.smi_shift < 64
            && h.heap_object_tag < 4
            && offsets.iter().chain(&[h.instruction_stream_start]).all(|&o| o < 4096);
        sane.then_some(h)
    }

    /// Where an `InstructionStream` points back to its `Code`: right after its map, in the
    /// headers of V8 11 (map, code) and 12 (map, code, relocation info, body size).
    fn instruction_stream_code(&self) -> Option<u64> {
        matches!(self.instruction_stream_start, 16 | 32).then_some(8)
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

/// A process's memory, read from outside: the one reader the Python frame walk uses too.
pub use looptop_abi::python::Mem as Memory;

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
    let table_at = h.bytecode_positions? as u64;
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
    let fields = h.code?;
    let table = byte_array(mem, h, mem.word(code + fields.positions as u64)?)?;
    let mut raw = position_at(&table, pc.checked_sub(start)? as i64)?;
    let mut inlined: Option<Vec<u8>> = None;
    for _ in 0..MAX_INLINING {
        let Some(id) = inlining_id(raw) else { return script_offset(raw) };
        if inlined.is_none() {
            let deopt = h.object(mem.word(code + fields.data as u64)?)?;
            if !is_one_of(mem, h, deopt, h.type_fixed_arrays)? || h.deopt_inlining_positions >= 64 {
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
    let fields = h.code?;
    let mut array = h.object(mem.word(code + fields.data as u64)?)?;
    if is_a(mem, h, array, h.type_interpreter_data)? {
        // A struct: its map, then the bytecode array, then the function's own interpreter entry.
        array = h.object(mem.word(array + 8)?)?;
    }
    if !is_a(mem, h, array, h.type_bytecode_array)? {
        return None;
    }
    let bytecodes = array_bytes(mem, h, array, h.bytecode_array_data)?;
    let table = byte_array(mem, h, mem.word(code + fields.positions as u64)?)?;
    let bytecode = bytecode_at(&table, &bytecodes, &h.bytecode_sizes, pc.checked_sub(start)?)?;
    let positions = byte_array(mem, h, mem.word(array + h.bytecode_positions? as u64)?)?;
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
    if !is_one_of(mem, h, array, h.type_byte_arrays)? {
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

/// Whether the heap object at `obj` has one of the instance types `types`.
fn is_one_of(mem: &impl Memory, h: &V8Heap, obj: u64, types: [u32; 2]) -> Option<bool> {
    let map = h.object(mem.word(obj)?)?;
    let mut b = [0u8; 2];
    mem.read(map + h.map_instance_type as u64, &mut b).then(|| types.contains(&(u16::from_ne_bytes(b) as u32)))
}

/// Whether the heap object at `obj` has instance type `ty`.
fn is_a(mem: &impl Memory, h: &V8Heap, obj: u64, ty: u32) -> Option<bool> {
    is_one_of(mem, h, obj, [ty, ty])
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
