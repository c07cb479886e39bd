//! CPython's line tables: which source line an instruction of a code object belongs to.
//! 3.10 keeps PEP 626's `co_linetable` (pairs of byte delta, line delta); 3.11+ the location
//! table of `Objects/locations.md` (varint entries, lengths in code units).

/// The line of the instruction at byte offset `offset` in a 3.10 code object's `co_linetable`
/// (`first`: `co_firstlineno`); `None` for an instruction with no line, or past the table.
pub fn line_310(table: &[u8], first: u32, offset: u64) -> Option<u32> {
    let (mut addr, mut line) = (0u64, first as i64);
    for pair in table.chunks_exact(2) {
        let end = addr + pair[0] as u64;
        let delta = pair[1] as i8;
        let here = if delta == -128 {
            None
        } else {
            line += delta as i64;
            Some(line)
        };
        if (addr..end).contains(&offset) {
            return here.and_then(|l| u32::try_from(l).ok());
        }
        addr = end;
    }
    None
}

/// The line of the code unit at `unit` (instructions are 2-byte code units) in a 3.11+ code
/// object's location table (`first`: `co_firstlineno`); `None` for one with no location, or
/// past the table.
pub fn line_311(table: &[u8], first: u32, unit: u64) -> Option<u32> {
    let (mut i, mut addr, mut line) = (0usize, 0u64, first as i64);
    while i < table.len() {
        let head = table[i];
        if head & 0x80 == 0 {
            return None;
        }
        i += 1;
        let code = (head >> 3) & 0x0f;
        let end = addr + (head & 7) as u64 + 1;
        let here = match code {
            15 => None,
            14 => {
                line += svarint(table, &mut i)?;
                varint(table, &mut i)?; // end line delta
                varint(table, &mut i)?; // column + 1
                varint(table, &mut i)?; // end column + 1
                Some(line)
            }
            13 => {
                line += svarint(table, &mut i)?;
                Some(line)
            }
            10..=12 => {
                line += (code - 10) as i64;
                i += 2; // column, end column
                Some(line)
            }
            _ => {
                i += 1; // column bits
                Some(line)
            }
        };
        if (addr..end).contains(&unit) {
            return here.and_then(|l| u32::try_from(l).ok());
        }
        addr = end;
    }
    None
}

/// An unsigned varint of the location table: 6 bits a byte, low bits first, 0x40 = more.
fn varint(t: &[u8], i: &mut usize) -> Option<i64> {
    let (mut v, mut shift) = (0i64, 0u32);
    loop {
        let b = *t.get(*i)?;
        *i += 1;
        v |= ((b & 0x3f) as i64) << shift;
        if b & 0x40 == 0 {
            return Some(v);
        }
        shift += 6;
        if shift > 48 {
            return None;
        }
    }
}

/// A signed varint: the sign in the lowest bit.
fn svarint(t: &[u8], i: &mut usize) -> Option<i64> {
    let u = varint(t, i)?;
    Some(if u & 1 != 0 { -(u >> 1) } else { u >> 1 })
}
