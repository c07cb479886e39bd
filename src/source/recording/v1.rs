//! Reading a `looptop.recording/1` file (JSON lines, written by earlier versions of looptop).

use super::feed::{Feed, Window};
use super::lines::{Item, Lines, MAX_LINE};
use super::{Load, ReadError, Replay, Skipped};
use crate::analysis::stacks::StoredSample;
use crate::analysis::Session;
use crate::event::Event;
use crate::recording::{Header, Line, LINE_TAGS, SCHEMA_V1};
use std::io::BufRead;

/// One stack line's count (what the kernel counted in one poll): more is damage, skipped.
const MAX_COUNT: u64 = 1 << 32;

/// Reads a JSON-lines recording.
///
/// Memory follows what the input holds: no line is held past [`MAX_LINE`] bytes, and a header
/// is looked for in the first line only.
pub(super) fn read(reader: impl BufRead, how: &Load) -> Result<Replay, ReadError> {
    let mut lines = Lines::new(reader, MAX_LINE);
    let header = read_header(&mut lines)?;
    let mut session = Session::new(header.origin_ns, how.threshold_ns.unwrap_or(header.stall_threshold_ns));
    // A recording covers its own window: what its first lines say of the time before (a
    // recording of an attached process, or one the live view started mid-way) is left out.
    session.count_from(header.origin_ns);
    session.set_mode(if header.mode == "perf" { "perf" } else { "agent" });
    session.set_rate(header.rate_hz);
    let window = how.window.map(|w| Window::from(header.origin_ns, w));
    // Samples come last, sorted: never folded (a file may list them in any order).
    let mut feed = Feed::new(session, window, false);
    let mut replay = Replay {
        header,
        session: Session::new(0, 0),
        end: None,
        skipped: Skipped::default(),
        lines: 1,
        last_ns: 0,
        recorded_warnings: Vec::new(),
        unit: "line",
        damaged: None,
    };
    let mut samples: Vec<(u32, u32, StoredSample)> = Vec::new();
    while let Some((n, item)) = lines.next_line()? {
        replay.lines = n;
        let (text, terminated) = match item {
            Item::Line { text, terminated } => (text, terminated),
            Item::TooLong { .. } => {
                replay.skip(n, || format!("longer than {} MiB", MAX_LINE >> 20));
                continue;
            }
        };
        if text.trim_ascii().is_empty() {
            continue;
        }
        if replay.end.is_some() {
            replay.skip(n, || "after the end line".into());
            continue;
        }
        let Some(line) = parse(text) else {
            // A last line cut short by a killed recorder is what "ends early" says.
            if terminated {
                replay.skip(n, || why_unreadable(text));
            }
            continue;
        };
        match line {
            Parsed::Line(Line::Frame { id, frame, source }) => feed.frame(id, frame, source),
            Parsed::Line(Line::Stack { pid, tid, t_ns, weight_ns, origin, tick_ns, off_cpu, frames: ids, count }) => {
                if ids.len() as u64 > crate::recording::codec::MAX_FRAMES {
                    replay.skip(n, || {
                        format!(
                            "a stack of {} frames (at most {} are read)",
                            ids.len(),
                            crate::recording::codec::MAX_FRAMES
                        )
                    });
                    continue;
                }
                if count > MAX_COUNT {
                    replay.skip(n, || format!("a stack counted {count} times in one line"));
                    continue;
                }
                let Some(stack) = feed.stack(&ids) else {
                    replay.skip(n, || "a stack naming a frame the file does not define before it".into());
                    continue;
                };
                samples.push((pid, tid, StoredSample { t_ns, weight_ns, origin, tick_ns, off_cpu, stack, count }));
            }
            Parsed::Line(Line::LostSamples { count }) => feed.session.lose_samples(count),
            Parsed::Line(Line::End(end)) => replay.end = Some(end),
            Parsed::Line(Line::Warning { text }) => replay.recorded_warnings.push(text),
            Parsed::Line(Line::Recording(_)) => replay.skip(n, || "a second header".into()),
            Parsed::Event(ev) => {
                if let Err(why) = feed.event(ev) {
                    replay.skip(n, || why);
                }
            }
        }
    }
    // Samples go in by thread and time at once: a file that lists them out of order costs a
    // sort, not an insertion each.
    samples.sort_by_key(|(pid, tid, s)| (*pid, *tid, s.t_ns));
    for (pid, tid, s) in samples {
        feed.sample(pid, tid, s);
    }
    replay.last_ns = feed.last_ns;
    replay.session = feed.session;
    Ok(replay)
}

/// The header, from the first line alone: a file that does not start with a JSON object is
/// refused at its first byte, one whose first line is longer than [`MAX_LINE`] without reading
/// further.
fn read_header(lines: &mut Lines<impl BufRead>) -> Result<Header, ReadError> {
    if lines.peek()?.first() != Some(&b'{') {
        return Err(ReadError::NotRecording);
    }
    let Some(text) = lines.first_line()? else {
        return Err(ReadError::NotRecording);
    };
    let header = match serde_json::from_slice::<Line>(text) {
        Ok(Line::Recording(h)) => h,
        parsed => {
            #[derive(serde::Deserialize)]
            struct Schema {
                schema: String,
            }
            return match serde_json::from_slice::<Schema>(text) {
                Ok(s) if s.schema == SCHEMA_V1 => Err(ReadError::BadHeader(match parsed {
                    Err(e) => e.to_string(),
                    Ok(_) => "not a header".into(),
                })),
                Ok(s) if s.schema.starts_with("looptop.recording/") => Err(version(s.schema)),
                _ => Err(ReadError::NotRecording),
            };
        }
    };
    if header.schema == crate::recording::SCHEMA {
        return Err(ReadError::BadHeader(format!("a '{}' recording is binary, not JSON lines", header.schema)));
    }
    if header.schema != SCHEMA_V1 {
        return Err(version(header.schema));
    }
    let mut header = header;
    header.command = header.command.into_iter().map(crate::units::printable).collect();
    Ok(header)
}

/// A recording of another version, named only when the name is one (the file's bytes never reach
/// the terminal).
pub(super) fn version(schema: String) -> ReadError {
    if schema.len() <= 64 && schema.bytes().all(|b| b.is_ascii_graphic()) {
        ReadError::Version(schema)
    } else {
        ReadError::NotRecording
    }
}

/// A line of a recording: one of its own lines, or an event.
pub(super) enum Parsed {
    Line(Line),
    Event(Event),
}

pub(super) fn parse(text: &[u8]) -> Option<Parsed> {
    // looptop writes the tag first: one parse decides. Other lines are tried both ways.
    let tag = text.strip_prefix(b"{\"t\":\"").and_then(|rest| rest.split(|&b| b == b'"').next());
    match tag {
        Some(tag) if LINE_TAGS.iter().any(|t| t.as_bytes() == tag) => {
            serde_json::from_slice(text).ok().map(Parsed::Line)
        }
        Some(_) => serde_json::from_slice(text).ok().map(Parsed::Event),
        None => match serde_json::from_slice::<Line>(text) {
            Ok(line) => Some(Parsed::Line(line)),
            Err(_) => serde_json::from_slice(text).ok().map(Parsed::Event),
        },
    }
}

/// Why a line could not be read, for the warning (worked out for the first such line only).
pub(super) fn why_unreadable(text: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(text) else {
        return "not valid UTF-8".into();
    };
    let Ok(object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) else {
        return "not a JSON object".into();
    };
    // The kind is shown only when it looks like one: the file's bytes never reach the terminal.
    let known = |k: &&str| k.len() <= 40 && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    match object.get("t").and_then(|t| t.as_str()).filter(known) {
        Some(kind) => format!("a '{kind}' line looptop cannot read"),
        None => "a JSON object of no kind looptop knows".into(),
    }
}
