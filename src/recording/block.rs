//! Blocks of a `looptop.recording/2` file: a 36-byte head and a zstd-compressed payload, checked
//! by a CRC-32 over both, so that a file cut short or damaged is read up to its last good block.

use std::io::{self, Read, Write};

/// The first bytes of every block head.
pub const TAG: [u8; 4] = *b"LTBK";
/// Bytes of a block head.
pub const HEAD_LEN: usize = 36;
/// The last 8 bytes of a finished file (after the index block's offset).
pub const TRAILER_TAG: [u8; 8] = *b"LTRECEND";
/// Bytes of the trailer: the index block's offset, then [`TRAILER_TAG`].
pub const TRAILER_LEN: usize = 16;
/// The largest payload read, before or after decompression: a head claiming more is damage.
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// zstd's level: 3 (its default) compresses a busy server's second of samples ~5× in ~1 ms.
const LEVEL: i32 = 3;

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The recording's header (JSON).
    Header = 1,
    /// Frames, stacks, processes and loops that later blocks refer to.
    Defs = 2,
    /// Events and samples.
    Data = 3,
    /// Where every block before it starts, and the time it spans.
    Index = 4,
    /// The last data block: events and samples, then the end (read whatever the window).
    Final = 5,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Defs,
            3 => Kind::Data,
            4 => Kind::Index,
            5 => Kind::Final,
            _ => return None,
        })
    }
}

/// A block's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// What it holds.
    pub kind: Kind,
    /// Payload bytes once decompressed.
    pub raw_len: u32,
    /// Payload bytes in the file.
    pub comp_len: u32,
    /// The earliest time (ns) of what it holds (0: none).
    pub t_first: u64,
    /// The latest.
    pub t_last: u64,
    crc: u32,
}

/// Whether a block spanning `[t_first, t_last]` (ns) may hold something of `[since, until]`. A
/// block of no time (`t_last` 0) meets every window.
pub fn meets(t_first: u64, t_last: u64, since: u64, until: u64) -> bool {
    t_last == 0 || (t_first <= until && t_last >= since)
}

/// One block as written: head and compressed payload.
pub fn encode(kind: Kind, t_first: u64, t_last: u64, raw: &[u8]) -> io::Result<Vec<u8>> {
    let comp = zstd::bulk::compress(raw, LEVEL)?;
    let head = head_bytes(kind, raw.len() as u32, comp.len() as u32, t_first, t_last);
    let mut out = Vec::with_capacity(HEAD_LEN + comp.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&checksum(&head, &comp).to_le_bytes());
    out.extend_from_slice(&comp);
    Ok(out)
}

/// A head's bytes before its checksum.
fn head_bytes(kind: Kind, raw_len: u32, comp_len: u32, t_first: u64, t_last: u64) -> [u8; HEAD_LEN - 4] {
    let mut h = [0u8; HEAD_LEN - 4];
    h[..4].copy_from_slice(&TAG);
    h[4] = kind as u8;
    h[8..12].copy_from_slice(&raw_len.to_le_bytes());
    h[12..16].copy_from_slice(&comp_len.to_le_bytes());
    h[16..24].copy_from_slice(&t_first.to_le_bytes());
    h[24..32].copy_from_slice(&t_last.to_le_bytes());
    h
}

/// The CRC-32 of a head (before its checksum) and its payload.
fn checksum(head: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    crc.update(payload);
    crc.finalize()
}

/// Why a block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file ends inside the block (a killed writer).
    #[error("the file ends inside a block")]
    Cut,
    /// Not a block, or one whose bytes do not match its checksum.
    #[error("{0}")]
    Damaged(&'static str),
}

/// Reads a block head; `Ok(None)` at the end of the file.
pub fn read_head(r: &mut impl Read) -> Result<Option<Head>, BlockError> {
    let mut b = [0u8; HEAD_LEN];
    let n = read_full(r, &mut b)?;
    if n == 0 {
        return Ok(None);
    }
    if n < HEAD_LEN {
        return Err(BlockError::Cut);
    }
    if b[..4] != TAG {
        return Err(BlockError::Damaged("a block that does not start as one"));
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let kind = Kind::of(b[4]).ok_or(BlockError::Damaged("a block of a kind this looptop does not know"))?;
    let (raw_len, comp_len) = (u32_at(8), u32_at(12));
    if raw_len > MAX_PAYLOAD || comp_len > MAX_PAYLOAD {
        return Err(BlockError::Damaged("a block longer than 64 MiB"));
    }
    Ok(Some(Head { kind, raw_len, comp_len, t_first: u64_at(16), t_last: u64_at(24), crc: u32_at(32) }))
}

/// Reads the payload of the block whose head was just read, checks it, and decompresses it.
pub fn read_payload(r: &mut impl Read, head: &Head) -> Result<Vec<u8>, BlockError> {
    let mut comp = vec![0u8; head.comp_len as usize];
    if read_full(r, &mut comp)? < comp.len() {
        return Err(BlockError::Cut);
    }
    let h = head_bytes(head.kind, head.raw_len, head.comp_len, head.t_first, head.t_last);
    if checksum(&h, &comp) != head.crc {
        return Err(BlockError::Damaged("a block whose bytes do not match its checksum"));
    }
    let raw = zstd::bulk::decompress(&comp, head.raw_len as usize)
        .map_err(|_| BlockError::Damaged("a block that does not decompress"))?;
    if raw.len() != head.raw_len as usize {
        return Err(BlockError::Damaged("a block shorter than its head says"));
    }
    Ok(raw)
}

/// The trailer of a finished file, pointing at its index block at `index_at`.
pub fn trailer(index_at: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(&index_at.to_le_bytes());
    t[8..].copy_from_slice(&TRAILER_TAG);
    t
}

/// The index block's offset, from a file's last [`TRAILER_LEN`] bytes.
pub fn index_at(tail: &[u8; TRAILER_LEN]) -> Option<u64> {
    (tail[8..] == TRAILER_TAG).then(|| u64::from_le_bytes(tail[..8].try_into().unwrap_or_default()))
}

/// One entry of the index: where a block starts, what it holds and the time it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Offset of its head in the file.
    pub at: u64,
    /// Its kind.
    pub kind: Kind,
    /// Its time span (ns).
    pub t_first: u64,
    /// The latest.
    pub t_last: u64,
}

/// The index block's payload.
pub fn encode_index(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 12 + 4);
    super::codec::put_varint(&mut out, entries.len() as u64);
    for e in entries {
        super::codec::put_varint(&mut out, e.at);
        out.push(e.kind as u8);
        super::codec::put_varint(&mut out, e.t_first);
        super::codec::put_varint(&mut out, e.t_last);
    }
    out
}

/// The entries of an index block's payload; `None` if it is not one.
pub fn decode_index(raw: &[u8]) -> Option<Vec<Entry>> {
    let mut c = super::codec::Cursor::new(raw);
    let n = c.varint()?;
    // Every entry takes at least four bytes: a count larger than that is damage.
    if n > raw.len() as u64 / 4 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let at = c.varint()?;
        let kind = Kind::of(c.byte()?)?;
        out.push(Entry { at, kind, t_first: c.varint()?, t_last: c.varint()? });
    }
    Some(out)
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes `bytes` (a block or the trailer), returning how many.
pub fn write(w: &mut impl Write, bytes: &[u8]) -> io::Result<u64> {
    w.write_all(bytes)?;
    Ok(bytes.len() as u64)
}
