//! A code object read from a Python process's memory: its names, file, first line and line
//! table, checked to be a code object (its type is the process's `PyCode_Type`).

use looptop_abi::python::{Mem, PyLayout, BYTES_DATA, BYTES_SIZE, OBJECT_TYPE, UNICODE_LENGTH, UNICODE_STATE};

/// Longest name or path read, in characters.
const MAX_STR: u64 = 4096;
/// Longest line table read, in bytes.
const MAX_TABLE: u64 = 1 << 20;

/// What looptop keeps of one code object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// `co_qualname` (3.11+), else `co_name`.
    pub name: String,
    /// `co_filename`.
    pub file: String,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// `co_linetable`.
    pub table: Vec<u8>,
    /// Where its bytecode starts (3.11+: inside the object).
    pub bytecode: Option<u64>,
    /// `_co_firsttraceable` (3.11+): earlier code units run before the frame is complete.
    pub first_traceable: u32,
}

impl Code {
    /// Reads the code object at `addr`, if it is one (its type is `code_type`).
    pub fn read(mem: &impl Mem, l: &PyLayout, code_type: u64, addr: u64) -> Option<Code> {
        if addr < 4096 || addr & 7 != 0 || mem.word(addr + OBJECT_TYPE)? != code_type {
            return None;
        }
        let ptr = |o: u64| mem.word(addr + o);
        let name_at = match l.code_qualname {
            Some(q) => ptr(q)?,
            None => ptr(l.code_name)?,
        };
        let name = string(mem, l, name_at)?;
        let file = string(mem, l, ptr(l.code_filename)?)?;
        let first_line = mem.word32(addr + l.code_firstlineno)?;
        let table = bytes(mem, ptr(l.code_linetable)?)?;
        let first_traceable = match l.code_firsttraceable {
            Some(o) => mem.word32(addr + o)?,
            None => 0,
        };
        Some(Code { name, file, first_line, table, bytecode: l.code_adaptive.map(|o| addr + o), first_traceable })
    }

    /// The line that runs at `position` (a frame's second word, without its entry flag);
    /// `None` when the frame has not begun (3.11+: before `_co_firsttraceable`) or the table
    /// says no line.
    pub fn line_at(&self, position: u64) -> Option<u32> {
        match self.bytecode {
            None => {
                // 3.10: `f_lasti`, in code units; -1 before the first instruction.
                let lasti = position as u32 as i32;
                if lasti < 0 {
                    return Some(self.first_line);
                }
                super::lines::line_310(&self.table, self.first_line, lasti as u64 * 2)
            }
            Some(start) => {
                let unit = position.checked_sub(start)? / 2;
                if unit < self.first_traceable as u64 {
                    return None;
                }
                super::lines::line_311(&self.table, self.first_line, unit)
            }
        }
    }
}

/// A compact `str` object's text.
fn string(mem: &impl Mem, l: &PyLayout, addr: u64) -> Option<String> {
    if addr < 4096 || addr & 7 != 0 {
        return None;
    }
    let len = mem.word(addr + UNICODE_LENGTH)?;
    let state = mem.word32(addr + UNICODE_STATE)?;
    let (kind, compact, ascii) = ((state >> 2) & 7, state >> 5 & 1 == 1, state >> 6 & 1 == 1);
    if !compact || len > MAX_STR || !matches!(kind, 1 | 2 | 4) {
        return None;
    }
    let data = addr + if ascii { l.unicode_ascii_size } else { l.unicode_compact_size };
    let mut buf = vec![0u8; (len * kind as u64) as usize];
    if !mem.read(data, &mut buf) {
        return None;
    }
    Some(match kind {
        1 => buf.iter().map(|&b| b as char).collect(),
        2 => {
            let units: Vec<u16> = buf.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
            char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
        }
        _ => buf
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    })
}

/// A `bytes` object's content.
fn bytes(mem: &impl Mem, addr: u64) -> Option<Vec<u8>> {
    if addr < 4096 || addr & 7 != 0 {
        return None;
    }
    let len = mem.word(addr + BYTES_SIZE)?;
    if len > MAX_TABLE {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    mem.read(addr + BYTES_DATA, &mut buf).then_some(buf)
}
