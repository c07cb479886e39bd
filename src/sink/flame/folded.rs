//! Folded stacks (Brendan Gregg's `stackcollapse` output): `root;…;leaf count`, one line per
//! unique stack, sorted. The SVG is inferno drawing these same lines.
//!
//! A frame's label carries the annotation suffix inferno's `js` palette colours by (`_[j]` for
//! JS, other V8 code and Python; `_[k]` for kernel; none for native code). inferno strips the
//! suffix before it shows a name.

use super::Profile;
use crate::symbolize::{Frame, FrameKind};
use std::collections::BTreeMap;
use std::io::Write;

/// What a stack without any frame is called, so its samples still count.
const NO_FRAMES: &str = "[no frames]";

/// Writes the folded lines, each ending in a newline.
pub(super) fn write(profile: &Profile, out: &mut impl Write) -> anyhow::Result<()> {
    for line in lines(profile) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The folded lines, sorted, identical stacks merged, stacks of weight 0 left out.
pub(super) fn lines(profile: &Profile) -> Vec<String> {
    let labels: Vec<String> = profile.frames.iter().map(label).collect();
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    let mut key = String::new();
    for (stack, weight) in &profile.stacks {
        if *weight == 0 {
            continue;
        }
        key.clear();
        for (i, &id) in stack.iter().enumerate() {
            if i > 0 {
                key.push(';');
            }
            key.push_str(&labels[id as usize]);
        }
        if stack.is_empty() {
            key.push_str(NO_FRAMES);
        }
        // Two frame ids with the same label (one function at two V8 tiers) merge here too.
        match merged.get_mut(key.as_str()) {
            Some(count) => *count = count.saturating_add(*weight),
            None => {
                merged.insert(key.clone(), *weight);
            }
        }
    }
    merged.into_iter().map(|(stack, count)| format!("{stack} {count}")).collect()
}

/// A frame's folded label: `validateEmail /srv/app/server.js:12:17_[j]`, `uv_run`,
/// `do_syscall_64_[k]`, `[libc.so.6]` for an unnamed address in a known file.
pub(super) fn label(frame: &Frame) -> String {
    let name = frame.name.trim();
    let (mut text, annotation) = match frame.kind {
        FrameKind::Js | FrameKind::Python => {
            let mut text = name.to_string();
            if let Some(location) = frame.location() {
                text.push(' ');
                text.push_str(&location);
            }
            (text, "_[j]")
        }
        FrameKind::V8Code => (name.to_string(), "_[j]"),
        FrameKind::Kernel => (name.to_string(), "_[k]"),
        FrameKind::Native => (name.to_string(), ""),
        FrameKind::Unknown => match frame.module.as_deref().map(basename).filter(|m| !m.is_empty()) {
            // perf's convention: an address without a symbol is named by its file.
            Some(module) if name.is_empty() || name == "[unknown]" => (format!("[{module}]"), ""),
            _ => (name.to_string(), ""),
        },
    };
    sanitize(&mut text);
    text.push_str(annotation);
    text
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A character a folded line or an SVG cannot carry: control characters (a newline ends a
/// line; XML 1.0 forbids most of them even escaped) and the two non-characters XML excludes.
pub(super) fn unfit(c: char) -> bool {
    c.is_control() || matches!(c, '\u{fffe}' | '\u{ffff}')
}

/// Makes `text` safe as one frame of a folded line, whichever parser reads it (inferno's,
/// flamegraph.pl's, or a split on the last space):
/// - `;` separates frames, so it becomes `:` (what inferno's own collapsers do);
/// - [`unfit`] characters (newlines above all) become spaces: a line stays one line, and the
///   SVG stays valid XML;
/// - a label whose last space-separated word is a number (`Builtin: 3`) would, as the leaf,
///   read as a second (differential) count: that space becomes a no-break space;
/// - a label starting `# ` would, as the root, make the line a comment: same fix.
fn sanitize(text: &mut String) {
    const NBSP: char = '\u{a0}';
    if text.contains(|c: char| c == ';' || unfit(c)) {
        *text = text
            .chars()
            .map(|c| {
                if c == ';' {
                    ':'
                } else if unfit(c) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
    }
    let trimmed = text.trim();
    if trimmed.len() != text.len() {
        *text = trimmed.to_string();
    }
    if text.is_empty() {
        text.push_str("[unknown]");
    }
    if let Some(space) = text.rfind(' ') {
        let word = &text[space + 1..];
        if word.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            text.replace_range(space..space + 1, NBSP.encode_utf8(&mut [0; 4]));
        }
    }
    if text.starts_with("# ") {
        text.replace_range(1..2, NBSP.encode_utf8(&mut [0; 4]));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{self, frame, js_frame, native_frame, profile};
    use super::*;

    /// Parses a folded line the way every reader does: the count is the last space-separated
    /// token, the rest is the stack.
    fn parse(line: &str) -> (Vec<&str>, u64) {
        let (stack, count) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no count in {line:?}"));
        let count = count.parse().unwrap_or_else(|_| panic!("count of {line:?} is not a number"));
        (stack.split(';').collect(), count)
    }

    #[test]
    fn every_line_of_a_node_stall_parses_as_stack_and_count() {
        let p = testdata::node_stall();
        let out = {
            let mut out = Vec::new();
            write(&p, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(out.ends_with('\n'));
        let lines: Vec<&str> = out.lines().collect();
        assert!(!lines.is_empty());
        let mut total = 0;
        for line in &lines {
            let (stack, count) = parse(line);
            assert!(stack.iter().all(|f| !f.is_empty()), "{line}");
            total += count;
        }
        assert_eq!(total, p.sample_count());
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "lines are sorted");
        // The blocker reads as a JS frame with its location, root first.
        // 88 + 5 samples of one stack, given twice, are one line.
        let redos = lines.iter().find(|l| l.ends_with(";RegExp:^([a-z0-9]+)+@_[j] 93")).unwrap();
        assert!(redos.starts_with("_start;__libc_start_main;node::Start;"), "{redos}");
        assert!(redos.contains(";validateEmail /srv/app/server.js:12:17_[j];"), "{redos}");
    }

    #[test]
    fn identical_stacks_merge_and_weightless_ones_vanish() {
        let frames = vec![native_frame("main"), js_frame("a", "/srv/x.js", 1, 2), js_frame("b", "/srv/x.js", 5, 3)];
        let p = profile(
            frames,
            vec![(vec![0, 1], 3), (vec![0, 2], 1), (vec![0, 1], 4), (vec![0, 2, 1], 0), (vec![0, 1], 1)],
        );
        assert_eq!(lines(&p), ["main;a /srv/x.js:1:2_[j] 8", "main;b /srv/x.js:5:3_[j] 1"]);
    }

    #[test]
    fn frames_with_the_same_label_merge() {
        // One function seen at two V8 tiers is two frames in the table but one box.
        let mut hot = js_frame("parse", "/srv/p.js", 3, 9);
        hot.tier = Some(crate::symbolize::JsTier::Optimized);
        let p = profile(
            vec![native_frame("main"), js_frame("parse", "/srv/p.js", 3, 9), hot],
            vec![(vec![0, 1], 2), (vec![0, 2], 5)],
        );
        assert_eq!(lines(&p), ["main;parse /srv/p.js:3:9_[j] 7"]);
    }

    #[test]
    fn labels_carry_the_js_palette_annotations() {
        assert_eq!(
            label(&js_frame("validateEmail", "/srv/app/server.js", 12, 17)),
            "validateEmail /srv/app/server.js:12:17_[j]"
        );
        let mut no_col = js_frame("listOnTimeout", "node:internal/timers", 581, 1);
        no_col.col = None;
        assert_eq!(label(&no_col), "listOnTimeout node:internal/timers:581_[j]");
        let mut no_file = js_frame("(anonymous)", "", 0, 0);
        (no_file.file, no_file.line, no_file.col) = (None, None, None);
        assert_eq!(label(&no_file), "(anonymous)_[j]");
        assert_eq!(label(&frame("RegExp:^([a-z0-9]+)+@", FrameKind::V8Code)), "RegExp:^([a-z0-9]+)+@_[j]");
        assert_eq!(label(&frame("asm_exc_page_fault", FrameKind::Kernel)), "asm_exc_page_fault_[k]");
        assert_eq!(
            label(&native_frame("v8::internal::JsonParser<unsigned char>::ParseJson")),
            "v8::internal::JsonParser<unsigned char>::ParseJson"
        );
        let mut py = frame("handle", FrameKind::Python);
        (py.file, py.line) = (Some("/srv/app.py".into()), Some(40));
        assert_eq!(label(&py), "handle /srv/app.py:40_[j]");
        assert_eq!(label(&crate::symbolize::Frame::unknown(Some("/usr/lib/libc.so.6".into()))), "[libc.so.6]");
        assert_eq!(label(&crate::symbolize::Frame::unknown(None)), "[unknown]");
    }

    #[test]
    fn separators_and_newlines_inside_names_are_escaped() {
        let frames = vec![
            native_frame("std::array<int; 3>::at"),
            frame("RegExp:a;b\nc\r\td\u{ffff}", FrameKind::V8Code),
            native_frame("  "),
            native_frame("Builtin: 3"),
            native_frame("# not a comment"),
        ];
        let p = profile(frames, vec![(vec![4, 0, 1, 2, 3], 7), (vec![], 2)]);
        let lines = lines(&p);
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert!(!line.contains(['\n', '\r', '\t']), "{line:?}");
            assert!(!line.starts_with("# "), "{line:?}");
        }
        let (stack, count) = parse(&lines[0]);
        assert_eq!(count, 7);
        assert_eq!(
            stack,
            ["#\u{a0}not a comment", "std::array<int: 3>::at", "RegExp:a:b c  d_[j]", "[unknown]", "Builtin:\u{a0}3",]
        );
        assert_eq!(parse(&lines[1]), (vec![NO_FRAMES], 2));
    }

    #[test]
    fn inferno_reads_the_escaped_lines_with_their_counts() {
        // The last word of the leaf being a number must not turn into a differential count.
        let p = profile(vec![native_frame("main"), native_frame("Builtin: 3")], vec![(vec![0, 1], 5)]);
        let mut svg = Vec::new();
        super::super::write(&p, &super::super::Options::default(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains(r#"total_samples="5""#), "{svg}");
        assert!(svg.contains("Builtin:\u{a0}3 (5 samples, 100.00%)"));
    }

    #[test]
    fn a_real_node_profile_folds_into_parseable_lines_with_every_sample() {
        let p = testdata::node_demo();
        let lines = lines(&p);
        assert_eq!(lines.len(), p.stacks.len(), "node's call tree has no duplicate paths");
        let total: u64 = lines.iter().map(|l| parse(l).1).sum();
        assert_eq!(total, 2075);
        assert_eq!(total, p.sample_count());
        let regex = lines
            .iter()
            .find(|l| l.contains(";validateSearch /tmp/flame-demo/server.js:47:24_[j];RegExp: ^(a+)+$_[j] "))
            .expect("the ReDoS stack");
        assert!(regex.contains(";/search /tmp/flame-demo/server.js:66:14_[j];"), "{regex}");
        assert!(lines.iter().any(|l| l.starts_with("(garbage collector)_[j] ")), "{lines:#?}");
    }
}
