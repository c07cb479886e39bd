//! Reading a `looptop.recording/2` file: its blocks in order, or — for a window of time in a
//! file — only the blocks that window needs, found from the index (or from the block heads
//! when the file has none: a killed recorder's).

use super::feed::{Feed, Window};
use super::v1::{parse, version, Parsed};
use super::{Load, ReadError, Replay, Skipped};
use crate::analysis::Session;
use crate::recording::block::{self, BlockError, Entry, Kind};
use crate::recording::codec::{Decoder, Record};
use crate::recording::{Header, Line, MAGIC, SCHEMA};
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Seek, SeekFrom};

/// A source of blocks that can pass over bytes: a file seeks, a stream reads and drops them.
pub(super) trait Skip: Read {
    /// Passes over `n` bytes.
    fn skip(&mut self, n: u64) -> io::Result<()>;
    /// Moves to byte `at` of the file, where it can (a file); `false` where it cannot.
    fn jump(&mut self, _at: u64) -> io::Result<bool> {
        Ok(false)
    }
    /// The index of a finished file (from its trailer); `None` when there is none to read.
    fn index(&mut self) -> Option<Vec<Entry>> {
        None
    }
}

/// Any reader, read from start to end.
pub(super) struct Stream<R>(pub R);

impl<R: BufRead> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: BufRead> Skip for Stream<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink()).map(drop)
    }
}

/// A file, whose blocks can be passed over and found by offset.
pub(super) struct File(pub io::BufReader<std::fs::File>);

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Skip for File {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        self.0.seek_relative(i64::try_from(n).unwrap_or(i64::MAX))
    }

    fn jump(&mut self, at: u64) -> io::Result<bool> {
        self.0.seek(SeekFrom::Start(at)).map(|_| true)
    }

    fn index(&mut self) -> Option<Vec<Entry>> {
        let len = self.0.seek(SeekFrom::End(0)).ok()?;
        let mut tail = [0u8; block::TRAILER_LEN];
        self.0.seek(SeekFrom::End(-(block::TRAILER_LEN as i64))).ok()?;
        self.0.read_exact(&mut tail).ok()?;
        let at = block::index_at(&tail).filter(|&at| at < len)?;
        self.0.seek(SeekFrom::Start(at)).ok()?;
        let head = block::read_head(&mut self.0).ok()??;
        if head.kind != Kind::Index {
            return None;
        }
        block::decode_index(&block::read_payload(&mut self.0, &head).ok()?)
    }
}

/// What a block's records do to the replay.
struct Reader {
    replay: Replay,
    feed: Feed,
    /// The file's stack ids → the session's frame ids, innermost first.
    stacks: HashMap<u32, Vec<u32>>,
}

/// Reads a recording whose magic is next in `r`; with `load.window`, only what that window
/// needs (blocks outside it passed over, by the index where `r` is a finished file).
pub(super) fn read(r: &mut impl Skip, load: &Load) -> Result<Replay, ReadError> {
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(|_| ReadError::NotRecording)?;
    if magic != MAGIC {
        return Err(ReadError::NotRecording);
    }
    let mut at = MAGIC.len() as u64;
    let header = match block::read_head(r) {
        Ok(Some(head)) if head.kind == Kind::Header => {
            let raw = block::read_payload(r, &head).map_err(|e| ReadError::BadHeader(e.to_string()))?;
            at += (block::HEAD_LEN as u64) + u64::from(head.comp_len);
            read_header(&raw)?
        }
        Ok(_) => return Err(ReadError::BadHeader("its first block is not a header".into())),
        Err(e) => return Err(ReadError::BadHeader(e.to_string())),
    };
    let mut session = Session::new(header.origin_ns, load.threshold_ns.unwrap_or(header.stall_threshold_ns));
    session.count_from(header.origin_ns);
    session.set_mode(if header.mode == "perf" { "perf" } else { "agent" });
    session.set_rate(header.rate_hz);
    if load.keep_all {
        session.stacks_mut().keep_all();
    }
    let window = load.window.map(|w| Window::from(header.origin_ns, w));
    let mut reader = Reader {
        replay: Replay {
            header,
            session: Session::new(0, 0),
            end: None,
            skipped: Skipped::default(),
            lines: 0,
            last_ns: 0,
            recorded_warnings: Vec::new(),
            unit: "record",
            damaged: None,
        },
        feed: Feed::new(session, window, true),
        stacks: HashMap::new(),
    };
    // What a window needs: every block of definitions, and the data of its time.
    let wanted = |kind: Kind, t_first: u64, t_last: u64| match (kind, window) {
        (Kind::Data, Some(w)) => block::meets(t_first, t_last, w.since_ns, w.until_ns),
        (kind, _) => matches!(kind, Kind::Defs | Kind::Data | Kind::Final),
    };
    // A window of a finished file: straight to the blocks it needs.
    let index = match window {
        Some(_) => r.index(),
        None => None,
    };
    match index {
        Some(entries) => {
            for e in entries.iter().filter(|e| wanted(e.kind, e.t_first, e.t_last)) {
                if !r.jump(e.at)? || reader.next_block(r, e.at, &wanted)?.is_none() {
                    break;
                }
            }
        }
        None => {
            // (Looking for the index moved a file's position; a stream never moved.)
            r.jump(at)?;
            while let Some(next) = reader.next_block(r, at, &wanted)? {
                at = next;
            }
        }
    }
    reader.replay.last_ns = reader.feed.last_ns;
    reader.replay.session = reader.feed.session;
    Ok(reader.replay)
}

impl Reader {
    /// Reads the block at `at` (wanted or passed over); the offset of the next one, `None` at
    /// the end (the index, the end of the file, a cut or damage).
    fn next_block(
        &mut self,
        r: &mut impl Skip,
        at: u64,
        wanted: &impl Fn(Kind, u64, u64) -> bool,
    ) -> Result<Option<u64>, ReadError> {
        let head = match block::read_head(r) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) => return self.stop(at, e),
        };
        let next = at + block::HEAD_LEN as u64 + u64::from(head.comp_len);
        if head.kind == Kind::Index {
            return Ok(None);
        }
        if !wanted(head.kind, head.t_first, head.t_last) {
            r.skip(u64::from(head.comp_len))?;
            return Ok(Some(next));
        }
        match block::read_payload(r, &head) {
            Ok(raw) => {
                self.records(head.kind, &raw);
                Ok(Some(next).filter(|_| self.replay.end.is_none()))
            }
            Err(e) => self.stop(at, e),
        }
    }

    /// Reading stops at a block that is cut short (the writer was killed: "ends early") or
    /// damaged (said, with where).
    fn stop(&mut self, at: u64, e: BlockError) -> Result<Option<u64>, ReadError> {
        match e {
            BlockError::Io(e) => Err(e.into()),
            BlockError::Cut => Ok(None),
            BlockError::Damaged(why) => {
                self.replay.damaged = Some((at, why.into()));
                Ok(None)
            }
        }
    }

    /// The records of one block.
    fn records(&mut self, kind: Kind, raw: &[u8]) {
        for record in Decoder::new(raw) {
            self.replay.lines += 1;
            let n = self.replay.lines;
            let record = match record {
                Ok(r) => r,
                Err(()) => {
                    self.replay
                        .skip(n, || "a record that cannot be decoded (the rest of its block is passed over)".into());
                    break;
                }
            };
            if let Err(why) = self.record(kind, record) {
                self.replay.skip(n, || why);
            }
        }
    }

    fn record(&mut self, kind: Kind, record: Record) -> Result<(), String> {
        if self.replay.end.is_some() {
            return Err("a record after the end".into());
        }
        match record {
            Record::Stack(id, ids) => {
                let stack = self.feed.stack(&ids).ok_or("a stack naming a frame the file does not define before it")?;
                self.stacks.insert(id, stack);
            }
            Record::Sample(s) => {
                let stack =
                    self.stacks.get(&s.stack).ok_or("a sample naming a stack the file does not define before it")?;
                let (pid, tid) = (s.pid, s.tid);
                let stored = s.into_stored(stack.clone());
                self.feed.sample(pid, tid, stored);
            }
            Record::Json(text) => match parse(text).ok_or_else(|| super::v1::why_unreadable(text))? {
                Parsed::Line(Line::Frame { id, frame, source }) => self.feed.frame(id, frame, source),
                Parsed::Line(Line::LostSamples { count }) => self.feed.session.lose_samples(count),
                Parsed::Line(Line::Warning { text }) => self.replay.recorded_warnings.push(text),
                Parsed::Line(Line::End(end)) if kind == Kind::Final => self.replay.end = Some(end),
                Parsed::Line(Line::Stack { .. }) => {
                    return Err("a 'stack' line (this format keeps samples in binary)".into())
                }
                Parsed::Line(_) => return Err("a record out of place".into()),
                Parsed::Event(ev) => self.feed.event(ev)?,
            },
        }
        Ok(())
    }
}

/// The header block's JSON.
fn read_header(raw: &[u8]) -> Result<Header, ReadError> {
    let mut header: Header = match serde_json::from_slice(raw) {
        Ok(h) => h,
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct Schema {
                schema: String,
            }
            return Err(match serde_json::from_slice::<Schema>(raw) {
                Ok(s) if s.schema != SCHEMA => version(s.schema),
                _ => ReadError::BadHeader(e.to_string()),
            });
        }
    };
    if header.schema != SCHEMA {
        return Err(version(header.schema));
    }
    header.command = header.command.into_iter().map(crate::units::printable).collect();
    Ok(header)
}
