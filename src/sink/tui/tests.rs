//! Views drawn on ratatui's `TestBackend` from fixed snapshots, compared with the golden
//! buffers in `snapshots/` (insta; `INSTA_UPDATE=always cargo test` rewrites them after a
//! deliberate change, then review the diff).

use super::draw::draw;
use super::state::{GcRow, Header, LoopRow, PoolRow, Snapshot, StallRow, Stuck};
use super::styles::Styles;
use super::view::{Detail, DetailFrame, Focus, View};
use crate::analysis::report::BlockerSummary;
use crate::event::LoopId;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

fn render(snap: &Snapshot, view: &View, width: u16, height: u16, color: bool) -> Terminal<TestBackend> {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    let st = Styles::with(color, true);
    term.draw(|f| draw(f, snap, view, &st)).expect("draw");
    term
}

fn header() -> Header {
    Header {
        pid: 4242,
        command: "node server.js".into(),
        runtime: "node".into(),
        mode: "agent+perf".into(),
        uptime_s: 83.4,
        rate_hz: 997,
        lost_samples: 0,
        dropped_events: 0,
        threshold_ms: 50.0,
        recording: None,
        ended: None,
        warnings: Vec::new(),
    }
}

fn empty() -> Snapshot {
    Snapshot { header: Header { uptime_s: 0.4, mode: "agent".into(), ..header() }, ..Snapshot::default() }
}

/// A file deep in a project, as real ones are.
const DEEP: &str = "/home/dev/projects/shop-backend/node_modules/@acme/validators/lib/isEmail.js";

fn stall(at_s: f64, ms: f64, kind: &str, frame: &str, line: u32, in_progress: bool) -> StallRow {
    StallRow {
        pid: 4242,
        tid: 4242,
        start_ns: (at_s * 1e9) as u64,
        at_s,
        duration_ms: ms,
        in_progress,
        gc_ms: (kind == "json-parse").then_some(31.0),
        kind: Some(kind.into()),
        frame: Some(frame.into()),
        location: Some(if frame == "validateEmail" {
            format!("{DEEP}:{line}:3")
        } else {
            format!("/srv/app/server.js:{line}:3")
        }),
        source: Some(format!("function {frame}(input) {{")),
    }
}

fn busy() -> Snapshot {
    let main = LoopId { pid: 4242, tid: 4242, since_ns: 1 };
    // Quiet seconds, then a growing stall in the last five.
    let chart: Vec<(f64, f64, f64)> = (0..60)
        .map(|i| {
            let ago = 59.0 - i as f64;
            let spike = if (40..45).contains(&i) {
                180.0
            } else if i >= 55 {
                600.0 * (i - 54) as f64
            } else {
                0.0
            };
            (ago, 2.0 + spike * 0.8, 4.0 + spike)
        })
        .collect();
    Snapshot {
        header: Header { lost_samples: 12, recording: Some("looptop-4242-1.rec".into()), ..header() },
        stuck: vec![Stuck {
            pid: 4242,
            tid: 4242,
            name: "node".into(),
            for_ms: 3210.0,
            blocker: Some(("regex".into(), "validateEmail".into(), Some("/srv/app/server.js:12:3".into()))),
        }],
        loops: vec![
            LoopRow {
                id: main,
                name: "node".into(),
                utilization: 0.62,
                ticks_per_s: 1840.0,
                lag_p50: 0.21,
                lag_p99: 112.5,
                lag_max: 3210.0,
                stalls: 4,
                alive: true,
                chart,
            },
            LoopRow {
                id: LoopId { pid: 4242, tid: 4250, since_ns: 2 },
                name: "node".into(),
                utilization: 0.0,
                ticks_per_s: 0.0,
                lag_p50: 0.0,
                lag_p99: 0.0,
                lag_max: 0.0,
                stalls: 0,
                alive: true,
                chart: Vec::new(),
            },
        ],
        stalls: vec![
            stall(80.2, 3210.0, "regex", "validateEmail", 12, true),
            stall(61.0, 182.0, "json-parse", "importUsers", 30, false),
            stall(44.5, 75.1, "sync-crypto", "checkPassword", 41, false),
            stall(12.9, 64.0, "regex", "validateEmail", 12, false),
        ],
        blockers: vec![
            BlockerSummary {
                kind: "regex",
                count: 2,
                total_ms: 3274.0,
                max_ms: 3210.0,
                frame: "validateEmail".into(),
                location: Some(format!("{DEEP}:12:3")),
                source: Some("function validateEmail(input) {".into()),
            },
            BlockerSummary {
                kind: "json-parse",
                count: 1,
                total_ms: 182.0,
                max_ms: 182.0,
                frame: "importUsers".into(),
                location: Some("/srv/app/server.js:30:3".into()),
                source: None,
            },
        ],
        gc: Some(GcRow { per_s: 3.4, recent_max_ms: 12.5, count: 312, max_ms: 41.0, total_ms: 980.0 }),
        pool: Some(PoolRow {
            kind: "libuv".into(),
            size: 4,
            busy: 4,
            queued: 8,
            queued_max: 12,
            wait_p99_ms: 45.0,
            wait_max_ms: 120.0,
        }),
    }
}

fn detail() -> Detail {
    let frame = |name: &str, loc: &str, user: bool, chosen: bool| DetailFrame {
        name: name.into(),
        location: Some(loc.into()),
        user,
        chosen,
    };
    Detail {
        title: "stall at 80.2 s on 4242/4242: 3.21 s regex".into(),
        blocker: Some("regex in validateEmail (/srv/app/server.js:12:3)".into()),
        source: Some("  return /^(a+)+$/.test(input);".into()),
        frames: vec![
            frame("processTicksAndRejections", "node:internal/process/task_queues:95:5", false, false),
            frame("handle", "/srv/app/server.js:40:3", true, false),
            frame("validateEmail", "/srv/app/server.js:12:3", true, true),
            frame("Builtins_RegExpPrototypeTest", "node", false, false),
        ],
    }
}

#[test]
fn empty_at_80x24() {
    insta::assert_snapshot!(render(&empty(), &View::default(), 80, 24, false).backend());
}

#[test]
fn busy_at_80x24() {
    insta::assert_snapshot!(render(&busy(), &View::default(), 80, 24, false).backend());
}

#[test]
fn busy_at_160x40_shows_stalls_and_blockers_side_by_side() {
    let view = View { focus: Focus::Stalls, selected: [0, 1, 0], ..View::default() };
    insta::assert_snapshot!(render(&busy(), &view, 160, 40, false).backend());
}

#[test]
fn narrow_view_shows_the_focused_list() {
    let view = View { focus: Focus::Blockers, paused: true, ..View::default() };
    insta::assert_snapshot!(render(&busy(), &view, 80, 24, false).backend());
}

#[test]
fn after_the_process_exited() {
    let mut snap = busy();
    snap.stuck.clear();
    snap.header.ended = Some("process 4242 exited with status 0 after 83.4 s".into());
    snap.header.warnings = vec!["perf stack sampling is off (not permitted)".into()];
    let view = View { message: Some("q quits".into()), ..View::default() };
    insta::assert_snapshot!(render(&snap, &view, 80, 24, false).backend());
}

#[test]
fn help_popup() {
    let view = View { help: true, ..View::default() };
    insta::assert_snapshot!(render(&busy(), &view, 80, 24, false).backend());
}

#[test]
fn stack_popup() {
    let view = View { detail: Some(detail()), focus: Focus::Stalls, ..View::default() };
    insta::assert_snapshot!(render(&busy(), &view, 80, 24, false).backend());
}

#[test]
fn the_banner_cannot_be_missed_with_or_without_colour() {
    let snap = busy();
    let row_text = |term: &Terminal<TestBackend>, y: u16| -> String {
        (0..80u16).map(|x| term.backend().buffer()[(x, y)].symbol().to_string()).collect()
    };
    let plain = render(&snap, &View::default(), 80, 24, false);
    let y = (0..24).find(|&y| row_text(&plain, y).contains("stuck for")).expect("a banner line");
    let text = row_text(&plain, y);
    assert!(text.contains("loop 4242 stuck for 3.21 s — regex in validateEmail (server.js:12:3)"), "{text}");
    let n = plain.backend().buffer()[(5, y)].clone();
    assert_eq!(n.bg, Color::Reset, "NO_COLOR: no colour at all");
    assert!(n.modifier.contains(Modifier::REVERSED | Modifier::BOLD));
    let c = render(&snap, &View::default(), 80, 24, true).backend().buffer()[(5, y)].clone();
    assert_eq!(c.bg, Color::Red);
    assert!(c.modifier.contains(Modifier::BOLD));
}

/// A stall already under way when looptop attached began before the view's clock: it says so
/// instead of showing a negative time.
#[test]
fn a_stall_from_before_the_attach_shows_no_negative_time() {
    let mut snap = busy();
    snap.stalls[0].at_s = -0.4;
    let term = render(&snap, &View::default(), 80, 24, false);
    let buf = term.backend().buffer();
    let text: String =
        (0..24u16).map(|y| (0..80u16).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n").collect();
    assert!(text.contains("before ") && !text.contains("-0.4"), "{text}");
}

#[test]
fn tiny_terminals_do_not_panic() {
    for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 8), (300, 100)] {
        render(&busy(), &View { detail: Some(detail()), ..View::default() }, w, h, true);
        render(&busy(), &View { help: true, ..View::default() }, w, h, false);
        render(&empty(), &View::default(), w, h, true);
    }
}

/// The file and line of every stall and blocker stay visible at every width from 80 columns
/// (paths are shortened from the left), and no column is left blank for nothing.
#[test]
fn file_and_line_stay_visible_at_every_width() {
    for width in [80u16, 90, 100, 120, 140, 159, 160, 200, 250] {
        for focus in [Focus::Stalls, Focus::Blockers] {
            let view = View { focus, ..View::default() };
            let term = render(&busy(), &view, width, 40, false);
            let buf = term.backend().buffer();
            let lines: Vec<String> =
                (0..40u16).map(|y| (0..width).map(|x| buf[(x, y)].symbol().to_string()).collect()).collect();
            let text = lines.join("\n");
            let shown = |needle: &str| text.matches(needle).count();
            // The stalls pane (focused, or beside the blockers from 120 columns).
            if focus == Focus::Stalls || width >= 160 {
                assert_eq!(shown("isEmail.js:12:3"), 2 + usize::from(width >= 160), "{width}:\n{text}");
                assert_eq!(shown("server.js:30:3"), 1 + usize::from(width >= 160), "{width}:\n{text}");
                assert_eq!(shown("server.js:41:3"), 1, "{width}:\n{text}");
            }
            if focus == Focus::Blockers {
                assert!(shown("isEmail.js:12:3") >= 1 && shown("server.js:30:3") >= 1, "{width}:\n{text}");
            }
            // The loop name column is as wide as the names, not half the screen.
            let header = lines.iter().find(|l| l.starts_with("pid/tid")).expect("the loops' header");
            assert!(header.find("util").unwrap() < 30, "{width}: {header}");
        }
    }
}

#[test]
fn fitting_keeps_the_end_of_a_location_and_the_start_of_a_frame() {
    use super::draw::{fit_left, fit_right};
    let loc = "/home/dev/app/lib/isEmail.js:12:3";
    assert_eq!(fit_left(loc, 40), loc);
    assert_eq!(fit_left(loc, 22), "…/lib/isEmail.js:12:3");
    assert_eq!(fit_left(loc, 17), "…/isEmail.js:12:3");
    assert_eq!(fit_left(loc, 16), "…isEmail.js:12:3");
    assert_eq!(fit_left(loc, 10), "…l.js:12:3");
    assert_eq!(fit_left(loc, 0), "");
    assert_eq!(fit_right("validateEmailAddress", 8), "validat…");
    assert_eq!(fit_right("short", 8), "short");
}

/// The docs' picture of the live view is this view, drawn: it cannot drift from the code.
#[test]
fn the_readme_shows_the_view_as_drawn() {
    let readme = include_str!("../../../docs/commands.md");
    let from = readme.find("## The live view:").expect("the live view's section in docs/commands.md");
    let block = readme[from..].split("```").nth(1).expect("a picture of the view").trim_matches('\n');
    let term = render(&busy(), &View::default(), 80, 24, false);
    let buf = term.backend().buffer();
    let drawn: Vec<String> =
        (0..24u16).map(|y| (0..80u16).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>()).collect();
    let drawn = drawn.iter().map(|l| l.trim_end()).collect::<Vec<_>>().join("\n");
    assert_eq!(
        block, drawn,
        "docs/commands.md's live view differs from what is drawn: paste the drawing above into it"
    );
}
