//! Decoding V8's tables and following its objects, on tables and heaps built as V8 lays them out.

use super::*;

fn zigzag(v: i64, out: &mut Vec<u8>) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (u & 0x7f) as u8;
        u >>= 7;
        out.push(if u == 0 { b } else { b | 0x80 });
        if u == 0 {
            break;
        }
    }
}

/// A table as V8 writes it: deltas from the previous entry, statements with a positive code
/// delta, expressions with `-(delta + 1)`, positions as `(offset + 1) << 1`.
fn table(entries: &[(i64, i64, bool)]) -> Vec<u8> {
    let (mut out, mut code, mut pos) = (Vec::new(), 0, 0);
    for &(c, offset, statement) in entries {
        let raw = (offset + 1) << 1;
        let d = c - code;
        zigzag(if statement { d } else { -d - 1 }, &mut out);
        zigzag(raw - pos, &mut out);
        (code, pos) = (c, raw);
    }
    out
}

/// The script offset a table gives for `code_offset`.
fn offset(t: &[u8], code_offset: i64) -> Option<u32> {
    script_offset(position_at(t, code_offset)?)
}

#[test]
fn the_last_entry_at_or_before_the_offset_gives_the_script_offset() {
    let t = table(&[(0, 100, true), (4, 130, true), (9, 128, false), (20, 5000, true)]);
    assert_eq!(offset(&t, 0), Some(100));
    assert_eq!(offset(&t, 3), Some(100));
    assert_eq!(offset(&t, 4), Some(130));
    assert_eq!(offset(&t, 12), Some(128));
    assert_eq!(offset(&t, 400), Some(5000));
    assert_eq!(offset(&[], 3), None);
}

#[test]
fn a_broken_table_gives_nothing_rather_than_a_guess() {
    let t = table(&[(0, 100, true), (4, 130, true)]);
    assert_eq!(offset(&t[..t.len() - 1], 4), None, "cut mid-entry");
    assert_eq!(offset(&[0xff; 12], 1), None, "a varint longer than 64 bits");
    assert_eq!(offset(&table(&[(3, 10, true)]), 1), None, "nothing at or before the offset");
    assert_eq!(script_offset(((41 << 1) | 1) as i64), None, "an external position");
    assert_eq!(inlining_id((3i64 << 31) | (41 << 1)), Some(2));
    assert_eq!(inlining_id(41 << 1), None);
}

/// Memory made of a few objects.
struct Heap(Vec<(u64, Vec<u8>)>);

impl Memory for Heap {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        for (at, bytes) in &self.0 {
            if addr >= *at && addr + buf.len() as u64 <= at + bytes.len() as u64 {
                let s = (addr - at) as usize;
                buf.copy_from_slice(&bytes[s..s + buf.len()]);
                return true;
            }
        }
        false
    }
}

/// Node 20's layout (V8 11.3), as its `v8dbg_*` symbols give it.
const NODE20: V8Heap = V8Heap {
    bytecode_array_data: 54,
    map_instance_type: 12,
    type_bytecode_array: 191,
    type_byte_arrays: [190, u32::MAX],
    type_fixed_arrays: [175, u32::MAX],
    type_code: 245,
    type_interpreter_data: 159,
    fixed_array_length: 8,
    fixed_array_data: 16,
    smi_shift: 32,
    heap_object_tag: 1,
    instruction_stream_start: 16,
    deopt_inlining_positions: 1,
    bytecode_positions: Some(32),
    code: Some(CodeFields { positions: 24, data: 16 }),
    bytecode_sizes: Vec::new(),
};

fn word(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// A map object whose instance type is `ty`.
fn map(ty: u16) -> Vec<u8> {
    [vec![0; 12], ty.to_ne_bytes().to_vec(), vec![0; 2]].concat()
}

/// A `ByteArray` holding `bytes`, whose map is at `map_at`.
fn byte_array_obj(map_at: u64, bytes: &[u8]) -> Vec<u8> {
    [word(map_at + 1), word((bytes.len() as u64) << 32), bytes.to_vec()].concat()
}

#[test]
fn an_interpreted_frame_is_followed_to_its_table_and_any_mismatch_gives_no_line() {
    let h = NODE20;
    let t = table(&[(0, 40, true), (6, 77, false)]);
    let (array_map, bytes_map, array, tab) = (0x10000, 0x20000, 0x30000, 0x40000);
    let array_obj = [word(array_map + 1), word(20 << 32), vec![0; 16], word(tab + 1), vec![0; 40]].concat();
    let heap = |array_type: u16| {
        Heap(vec![
            (array_map, map(array_type)),
            (bytes_map, map(190)),
            (array, array_obj.clone()),
            (tab, byte_array_obj(bytes_map, &t)),
        ])
    };
    let slot = |bytecode: u64| (53 + bytecode) << 32;
    assert_eq!(interpreted_offset(&heap(191), &h, array + 1, slot(7)), Some(77));
    assert_eq!(interpreted_offset(&heap(191), &h, array + 1, slot(2)), Some(40));
    assert_eq!(interpreted_offset(&heap(190), &h, array + 1, slot(7)), None, "not a BytecodeArray");
    assert_eq!(interpreted_offset(&heap(191), &h, array, slot(7)), None, "not a tagged pointer");
    assert_eq!(interpreted_offset(&heap(191), &h, array + 1, slot(7) | 1), None, "not a Smi");
    assert_eq!(interpreted_offset(&heap(191), &h, array + 1, slot(25)), None, "past the bytecodes");
    let unknown = V8Heap { bytecode_positions: None, ..h };
    assert_eq!(interpreted_offset(&heap(191), &unknown, array + 1, slot(7)), None, "a layout it does not know");
}

#[test]
fn optimized_code_is_found_from_its_start_and_inlined_positions_lead_to_the_call() {
    let h = NODE20;
    let (code_map, bytes_map, fixed_map) = (0x10000, 0x20000, 0x28000);
    let (code, tab, deopt, inl, start) = (0x30000, 0x40000, 0x50000, 0x60000, 0x7000_0010);
    // Instructions 0–9: the function's own line at offset 300; 10–: code inlined from a
    // callee (id 0), called at offset 520 of the function.
    let inlined = |offset: i64| ((offset + 1) << 1) | (1 << 31);
    let mut t = table(&[(0, 300, true)]);
    zigzag(10, &mut t);
    zigzag(inlined(900) - (301 << 1), &mut t);
    let positions = [((520i64 + 1) << 1).to_ne_bytes().to_vec(), vec![0; 8]].concat();
    let code_obj =
        [word(code_map + 1), word(0), word(deopt + 1), word(tab + 1), word(0), word(start), vec![0; 16]].concat();
    let deopt_obj = [word(fixed_map + 1), word(3 << 32), word(0), word(inl + 1), word(0)].concat();
    let heap = |stream_code: u64| {
        Heap(vec![
            (code_map, map(245)),
            (bytes_map, map(190)),
            (fixed_map, map(175)),
            (code, code_obj.clone()),
            (tab, byte_array_obj(bytes_map, &t)),
            (deopt, deopt_obj.clone()),
            (inl, byte_array_obj(bytes_map, &positions)),
            (start - 16, [word(0x99999), word(stream_code)].concat()),
        ])
    };
    assert_eq!(compiled_offset(&heap(code + 1), &h, start, start + 4), Some(300));
    assert_eq!(compiled_offset(&heap(code + 1), &h, start, start + 12), Some(520), "the call of the inlined code");
    assert_eq!(compiled_offset(&heap(tab + 1), &h, start, start + 4), None, "not a Code object");
    assert_eq!(compiled_offset(&heap(code + 1), &h, start + 8, start + 12), None, "a Code of another start");
}

#[test]
fn baseline_instructions_lead_to_their_bytecode_through_prefixes() {
    // Six bytecodes: the four prefixes (Wide, ExtraWide and their debug-break forms), 4 Nop
    // (size 1), 5 Jump (size 2, 3 wide, 5 extra-wide).
    let sizes = [[1, 1, 1, 1, 1, 2], [1, 1, 1, 1, 1, 3], [1, 1, 1, 1, 1, 5]].concat();
    // Nop; Jump; Wide Jump; ExtraWide Jump; Nop — at offsets 0, 1, 3, 7, 13.
    let bytecodes = [4, 5, 9, 0, 5, 9, 9, 1, 5, 9, 9, 9, 9, 4];
    // Prologue 10 bytes of instructions, then 4, 6, 6, 8, 2 for the five bytecodes.
    let table = [10, 4, 6, 6, 8, 2];
    let at = |pc| bytecode_at(&table, &bytecodes, &sizes, pc);
    assert_eq!(at(5), None, "in the prologue");
    assert_eq!(at(11), Some(0));
    assert_eq!(at(14), Some(0), "a return address at the end of the range is still in it");
    assert_eq!(at(15), Some(1));
    assert_eq!(at(20), Some(1));
    assert_eq!(at(21), Some(3), "after the Wide prefix's bytecode");
    assert_eq!(at(27), Some(7), "after the ExtraWide one");
    assert_eq!(at(35), Some(13));
    assert_eq!(at(36), Some(13));
    assert_eq!(at(37), None, "past the table");
    assert_eq!(bytecode_at(&table, &[4, 5], &sizes, 30), None, "past the bytecodes");
}

#[test]
fn baseline_code_leads_to_its_bytecode_and_from_there_to_the_script() {
    // Bytecodes: Nop (4) at 0, Jump (5) at 1: sizes 1 and 2. Instructions: a prologue of 8
    // bytes, then 4 for the Nop, 6 for the Jump.
    let sizes = [[1, 1, 1, 1, 1, 2], [1, 1, 1, 1, 1, 3], [1, 1, 1, 1, 1, 5]].concat();
    let h = V8Heap { bytecode_sizes: sizes, ..NODE20 };
    let (code_map, bytes_map, array_map, idata_map) = (0x10000, 0x20000, 0x24000, 0x28000);
    let (code, offsets, array, positions, idata, start) = (0x30000, 0x40000, 0x50000, 0x60000, 0x68000, 0x7000_0010);
    let bytecodes = [4u8, 5, 9];
    let array_obj = [
        word(array_map + 1),
        word(3 << 32),
        vec![0; 16],
        word(positions + 1),
        vec![0; 14],
        bytecodes.to_vec(),
        vec![0; 8],
    ]
    .concat();
    let code_obj = |data: u64| {
        [word(code_map + 1), word(0), word(data + 1), word(offsets + 1), word(0), word(start), vec![0; 16]].concat()
    };
    let heap = |data: u64| {
        Heap(vec![
            (code_map, map(245)),
            (bytes_map, map(190)),
            (array_map, map(191)),
            (idata_map, map(159)),
            (code, code_obj(data)),
            (offsets, byte_array_obj(bytes_map, &[8, 4, 6])),
            (array, array_obj.clone()),
            (positions, byte_array_obj(bytes_map, &table(&[(0, 70, true), (1, 95, true)]))),
            (idata, [word(idata_map + 1), word(array + 1), word(0)].concat()),
            (start - 16, [word(0x99999), word(code + 1)].concat()),
        ])
    };
    assert_eq!(baseline_offset(&heap(array), &h, start, start + 10), Some(70), "the Nop's instructions");
    assert_eq!(baseline_offset(&heap(array), &h, start, start + 15), Some(95), "the Jump's");
    assert_eq!(baseline_offset(&heap(idata), &h, start, start + 15), Some(95), "through InterpreterData");
    assert_eq!(baseline_offset(&heap(array), &h, start, start + 4), None, "the prologue");
    assert_eq!(baseline_offset(&heap(code), &h, start, start + 15), None, "not a bytecode array");
    let no_sizes = V8Heap { bytecode_sizes: Vec::new(), ..h.clone() };
    assert_eq!(baseline_offset(&heap(array), &no_sizes, start, start + 15), None, "no size table: no line");
}
