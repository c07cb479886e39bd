//! The records inside a block's payload: JSON (frames, events, the end), stacks (frame ids,
//! interned once) and samples (binary: varints, times as deltas from the previous sample).
//!
//! Each record is a tag byte and its body: `J` a length and JSON, `K` a stack (its id, the number
//! of frames, the frame ids innermost first), `S` a sample ([`SampleRec`]).

use crate::analysis::stacks::StoredSample;
use crate::event::{OffCpu, SampleOrigin};

/// Frames read of one stack (perf and BPF take at most 127 of each of user and kernel, the agent
/// 120): a deeper one is damage.
pub const MAX_FRAMES: u64 = 1024;

/// One stack sample as a recording keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRec {
    /// Process.
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// When (ns).
    pub t_ns: u64,
    /// Time it stands for (ns).
    pub weight_ns: u64,
    /// What took it.
    pub origin: SampleOrigin,
    /// Start of its tick (watchdog), else 0.
    pub tick_ns: u64,
    /// Off-CPU details.
    pub off_cpu: Option<OffCpu>,
    /// Its stack's id in the recording.
    pub stack: u32,
    /// Samples it stands for.
    pub count: u64,
}

impl SampleRec {
    /// The record of thread `tid` of `pid`'s sample `s`, its stack written as `stack`.
    pub fn of(pid: u32, tid: u32, s: &StoredSample, stack: u32) -> Self {
        let StoredSample { t_ns, weight_ns, origin, tick_ns, ref off_cpu, count, .. } = *s;
        SampleRec { pid, tid, t_ns, weight_ns, origin, tick_ns, off_cpu: off_cpu.clone(), stack, count }
    }

    /// The sample it records, its stack read back as the frame ids `stack`.
    pub fn into_stored(self, stack: Vec<u32>) -> StoredSample {
        let SampleRec { t_ns, weight_ns, origin, tick_ns, off_cpu, count, .. } = self;
        StoredSample { t_ns, weight_ns, origin, tick_ns, off_cpu, stack, count }
    }
}

/// A record read from a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A JSON record: a [`super::Line`] or an [`crate::event::Event`].
    Json(&'a [u8]),
    /// A stack of the recording's table: its id and frame ids, innermost first.
    Stack(u32, Vec<u32>),
    /// A sample.
    Sample(SampleRec),
}

const JSON: u8 = b'J';
const STACK: u8 = b'K';
const SAMPLE: u8 = b'S';
const HAS_TICK: u8 = 0x10;
const HAS_OFF_CPU: u8 = 0x20;
const HAS_COUNT: u8 = 0x40;

fn origin_code(o: SampleOrigin) -> u8 {
    match o {
        SampleOrigin::Watchdog => 0,
        SampleOrigin::PerfCpu => 1,
        SampleOrigin::PerfOffCpu => 2,
        SampleOrigin::KernelCount => 3,
    }
}

fn origin_of(code: u8) -> Option<SampleOrigin> {
    Some(match code {
        0 => SampleOrigin::Watchdog,
        1 => SampleOrigin::PerfCpu,
        2 => SampleOrigin::PerfOffCpu,
        3 => SampleOrigin::KernelCount,
        _ => return None,
    })
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Writes records into a payload.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
    last_t: u64,
}

impl Encoder {
    /// A JSON record.
    pub fn json(&mut self, v: &impl serde::Serialize) -> serde_json::Result<()> {
        let text = serde_json::to_vec(v)?;
        self.buf.push(JSON);
        put_varint(&mut self.buf, text.len() as u64);
        self.buf.extend_from_slice(&text);
        Ok(())
    }

    /// A stack of the table.
    pub fn stack(&mut self, id: u32, frames: &[u32]) {
        self.buf.push(STACK);
        put_varint(&mut self.buf, id.into());
        put_varint(&mut self.buf, frames.len() as u64);
        frames.iter().for_each(|&f| put_varint(&mut self.buf, f.into()));
    }

    /// A sample.
    pub fn sample(&mut self, s: &SampleRec) {
        let off_cpu = s.off_cpu.as_ref().and_then(|o| serde_json::to_vec(o).ok());
        let mut flags = origin_code(s.origin);
        flags |= if s.tick_ns != 0 { HAS_TICK } else { 0 };
        flags |= if off_cpu.is_some() { HAS_OFF_CPU } else { 0 };
        flags |= if s.count != 1 { HAS_COUNT } else { 0 };
        self.buf.push(SAMPLE);
        self.buf.push(flags);
        put_varint(&mut self.buf, zigzag(s.t_ns.wrapping_sub(self.last_t) as i64));
        self.last_t = s.t_ns;
        put_varint(&mut self.buf, s.pid.into());
        put_varint(&mut self.buf, s.tid.into());
        put_varint(&mut self.buf, s.stack.into());
        put_varint(&mut self.buf, s.weight_ns);
        if s.tick_ns != 0 {
            put_varint(&mut self.buf, zigzag(s.t_ns.wrapping_sub(s.tick_ns) as i64));
        }
        if let Some(o) = off_cpu {
            put_varint(&mut self.buf, o.len() as u64);
            self.buf.extend_from_slice(&o);
        }
        if s.count != 1 {
            put_varint(&mut self.buf, s.count);
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The payload; the encoder starts again empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.last_t = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Reads bytes of a payload, never past its end.
#[derive(Debug)]
pub struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, at: 0 }
    }

    /// One byte.
    pub fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    /// A LEB128 varint of at most 10 bytes.
    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }

    fn bytes(&mut self, n: u64) -> Option<&'a [u8]> {
        let end = self.at.checked_add(usize::try_from(n).ok()?).filter(|&e| e <= self.b.len())?;
        let v = &self.b[self.at..end];
        self.at = end;
        Some(v)
    }

    fn done(&self) -> bool {
        self.at >= self.b.len()
    }
}

/// Reads the records of a payload in order; stops at the first that cannot be read (which it
/// yields as an error).
#[derive(Debug)]
pub struct Decoder<'a> {
    c: Cursor<'a>,
    last_t: u64,
    failed: bool,
}

impl<'a> Decoder<'a> {
    /// Records of `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Decoder { c: Cursor::new(payload), last_t: 0, failed: false }
    }

    fn record(&mut self) -> Option<Record<'a>> {
        match self.c.byte()? {
            JSON => {
                let n = self.c.varint()?;
                Some(Record::Json(self.c.bytes(n)?))
            }
            STACK => {
                let id = self.c.u32()?;
                let n = self.c.varint().filter(|&n| n <= MAX_FRAMES)?;
                let frames = (0..n).map(|_| self.c.u32()).collect::<Option<Vec<u32>>>()?;
                Some(Record::Stack(id, frames))
            }
            SAMPLE => {
                let flags = self.c.byte()?;
                let origin = origin_of(flags & 0x0f)?;
                let t_ns = self.last_t.wrapping_add(unzigzag(self.c.varint()?) as u64);
                self.last_t = t_ns;
                let (pid, tid, stack, weight_ns) = (self.c.u32()?, self.c.u32()?, self.c.u32()?, self.c.varint()?);
                let tick_ns =
                    if flags & HAS_TICK != 0 { t_ns.wrapping_sub(unzigzag(self.c.varint()?) as u64) } else { 0 };
                let off_cpu = if flags & HAS_OFF_CPU != 0 {
                    let n = self.c.varint()?;
                    Some(serde_json::from_slice(self.c.bytes(n)?).ok()?)
                } else {
                    None
                };
                let count = if flags & HAS_COUNT != 0 { self.c.varint()? } else { 1 };
                Some(Record::Sample(SampleRec { pid, tid, t_ns, weight_ns, origin, tick_ns, off_cpu, stack, count }))
            }
            _ => None,
        }
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<Record<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.c.done() {
            return None;
        }
        let r = self.record();
        self.failed = r.is_none();
        Some(r.ok_or(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let a = SampleRec {
            pid: 7,
            tid: 9,
            t_ns: 5_000_000_123,
            weight_ns: 1_003_009,
            origin: SampleOrigin::PerfCpu,
            tick_ns: 0,
            off_cpu: None,
            stack: 3,
            count: 1,
        };
        let b = SampleRec {
            t_ns: 4_999_000_000,
            origin: SampleOrigin::Watchdog,
            tick_ns: 4_900_000_000,
            off_cpu: Some(OffCpu { syscall: Some(202), wchan: Some("futex_wait_queue".into()) }),
            count: 17,
            stack: u32::MAX,
            ..a.clone()
        };
        let mut e = Encoder::default();
        e.json(&serde_json::json!({"t": "x"})).unwrap();
        e.stack(3, &[1, 2, 300_000]);
        e.sample(&a);
        e.sample(&b);
        let payload = e.take();
        let got: Vec<Record> = Decoder::new(&payload).map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                Record::Json(br#"{"t":"x"}"#),
                Record::Stack(3, vec![1, 2, 300_000]),
                Record::Sample(a),
                Record::Sample(b)
            ]
        );
        // Cut anywhere, a payload yields the records before the cut and then one error.
        for cut in 0..payload.len() {
            let got: Vec<_> = Decoder::new(&payload[..cut]).collect();
            assert!(got.iter().rev().skip(1).all(Result::is_ok), "cut at {cut}");
        }
    }
}
