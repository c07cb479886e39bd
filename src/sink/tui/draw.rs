//! Drawing a frame: the layout, the header, the stall banner, the GC / pool line and the footer.
//! Each function draws from the [`Snapshot`] and the [`View`]; nothing here reads the session.

use super::state::Snapshot;
use super::styles::Styles;
use super::view::View;
use super::{chart, popup, tables};
use crate::units::fmt_ms;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

/// From this many columns the stalls and blockers are drawn side by side (each then still has
/// room for a frame and a `file:line`).
const SIDE_BY_SIDE: u16 = 160;

/// Draws the whole view.
pub fn draw(f: &mut Frame, snap: &Snapshot, view: &View, st: &Styles) {
    let area = f.area();
    let warnings = snap.header.warnings.len().min(2) as u16;
    let banner = if snap.stuck.is_empty() { 1 } else { 2 + snap.stuck.len().min(3) as u16 };
    let loops = 2 + snap.loops.len().clamp(1, 4) as u16;
    let head = header_line(snap, view, st);
    let head_rows = if head.width() as u16 > area.width { 2 } else { 1 };
    let runtime_rows = if area.width >= 120 { 1 } else { 2 };
    let [header, warn, banner_area, loops_area, chart_area, lists, runtime, footer] = Layout::vertical([
        Constraint::Length(head_rows),
        Constraint::Length(warnings),
        Constraint::Length(banner),
        Constraint::Length(loops),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(runtime_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(head).wrap(Wrap { trim: true }), header);
    draw_warnings(f, warn, snap, st);
    draw_banner(f, banner_area, snap, st);
    tables::draw_loops(f, loops_area, snap, view, st);
    chart::draw(f, chart_area, snap, view, st);
    if lists.width >= SIDE_BY_SIDE {
        let [left, _, right] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(1), Constraint::Fill(1)]).areas(lists);
        tables::draw_stalls(f, left, snap, view, st, false);
        tables::draw_blockers(f, right, snap, view, st, false);
    } else {
        // Narrow: the focused list of the two, the other named in the title.
        match view.focus {
            super::view::Focus::Blockers => tables::draw_blockers(f, lists, snap, view, st, true),
            _ => tables::draw_stalls(f, lists, snap, view, st, true),
        }
    }
    draw_runtime(f, runtime, snap, st);
    draw_footer(f, footer, view, st);
    if view.help {
        popup::help(f, area, st);
    } else if let Some(d) = &view.detail {
        popup::detail(f, area, d, st);
    }
}

fn header_line(snap: &Snapshot, view: &View, st: &Styles) -> Line<'static> {
    let h = &snap.header;
    let dot = || Span::styled(st.dot(), st.dim());
    let mut spans = vec![
        Span::styled("looptop ", st.title()),
        Span::raw(format!("pid {}", h.pid)),
        dot(),
        Span::raw(h.command.clone()),
        dot(),
        Span::raw(h.runtime.clone()),
        dot(),
        Span::raw(h.mode.clone()),
    ];
    if h.rate_hz > 0 && h.mode.contains("perf") {
        spans.push(Span::raw(format!(" {} Hz", h.rate_hz)));
    }
    spans.extend([dot(), Span::raw(format!("up {}", fmt_uptime(h.uptime_s)))]);
    spans.extend([dot(), Span::raw(format!("threshold {}", fmt_ms(h.threshold_ms)))]);
    if h.lost_samples > 0 {
        spans.extend([dot(), Span::styled(format!("{} samples lost", h.lost_samples), st.warn())]);
    }
    if h.dropped_events > 0 {
        spans.extend([dot(), Span::styled(format!("{} events dropped", h.dropped_events), st.warn())]);
    }
    if let Some(r) = &h.recording {
        spans.extend([dot(), Span::styled(format!("REC {r}"), st.bad())]);
    }
    if view.paused {
        spans.extend([dot(), Span::styled("PAUSED", st.selected())]);
    }
    Line::from(spans)
}

fn draw_warnings(f: &mut Frame, area: Rect, snap: &Snapshot, st: &Styles) {
    let lines: Vec<Line> = snap
        .header
        .warnings
        .iter()
        .take(area.height as usize)
        .map(|w| Line::styled(format!("{} {w}", st.alert_glyph()), st.warn()))
        .collect();
    f.render_widget(Paragraph::new(lines), area);
}

/// The banner: a loop stuck now, in the alert style; else one calm line.
fn draw_banner(f: &mut Frame, area: Rect, snap: &Snapshot, st: &Styles) {
    if let Some(ended) = &snap.header.ended {
        let line = Line::styled(format!("{} {ended}; q quits", st.alert_glyph()), st.warn());
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    if snap.stuck.is_empty() {
        let line = Line::from(vec![
            Span::styled(format!("{} ", st.ok_glyph()), st.ok()),
            Span::styled("no stall in progress", st.dim()),
        ]);
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    let lines: Vec<Line> = snap
        .stuck
        .iter()
        .take(3)
        .map(|s| {
            let what = match &s.blocker {
                Some((kind, frame, loc)) => {
                    let at = loc.as_ref().map(|l| format!(" ({})", short_path(l))).unwrap_or_default();
                    format!("{}{kind} in {frame}{at}", st.dash())
                }
                None => format!("{}no stack yet", st.dash()),
            };
            let who =
                if s.tid == s.pid { format!("loop {}", s.pid) } else { format!("loop {}/{} {}", s.pid, s.tid, s.name) };
            Line::from(format!(" {} {who} stuck for {}{what}", st.alert_glyph(), fmt_ms(s.for_ms)))
        })
        .collect();
    let block = Block::default().borders(Borders::TOP | Borders::BOTTOM).style(st.alert()).title(" STALL IN PROGRESS ");
    f.render_widget(Paragraph::new(lines).style(st.alert()).block(block).wrap(Wrap { trim: true }), area);
}

fn draw_runtime(f: &mut Frame, area: Rect, snap: &Snapshot, st: &Styles) {
    let gc = match &snap.gc {
        Some(g) => vec![
            Span::styled("GC ", st.title()),
            Span::raw(format!("{:.1}/s, max {} in the last 10 s", g.per_s, fmt_ms(g.recent_max_ms))),
            Span::styled(format!("; {} pauses, max {}", g.count, fmt_ms(g.max_ms)), st.dim()),
        ],
        None => vec![Span::styled("GC ", st.title()), Span::styled("not visible", st.dim())],
    };
    let pool = match &snap.pool {
        Some(p) => {
            let queued = if p.queued > 0 { st.bad() } else { Default::default() };
            vec![
                Span::styled("pool ", st.title()),
                Span::raw(format!("{} {} workers, busy {}, ", p.kind, p.size, p.busy)),
                Span::styled(format!("queued {}", p.queued), queued),
                Span::raw(format!(" (max {}), wait p99 {}", p.queued_max, fmt_ms(p.wait_p99_ms))),
                Span::styled(format!(", max {}", fmt_ms(p.wait_max_ms)), st.dim()),
            ]
        }
        None => vec![Span::styled("pool ", st.title()), Span::styled("not seen", st.dim())],
    };
    let lines = if area.height >= 2 {
        vec![Line::from(gc), Line::from(pool)]
    } else {
        let mut one = gc;
        one.push(Span::styled(st.dot(), st.dim()));
        one.extend(pool);
        vec![Line::from(one)]
    };
    f.render_widget(Paragraph::new(lines), area);
}

fn draw_footer(f: &mut Frame, area: Rect, view: &View, st: &Styles) {
    if let Some(m) = &view.message {
        f.render_widget(Paragraph::new(Line::styled(m.clone(), st.warn())), area);
        return;
    }
    let keys = [
        ("q", "quit"),
        ("p", "pause"),
        ("Tab", "pane"),
        ("Enter", "stack"),
        ("f/F", "flame"),
        ("r", "rec"),
        ("+/-", "threshold"),
        ("?", "help"),
    ];
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(k, st.selected()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// `3m05s`, `1h02m`, `12.3s`.
pub fn fmt_uptime(s: f64) -> String {
    let whole = s as u64;
    if whole >= 3600 {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{s:.1}s")
    }
}

/// A path or location with its directories dropped (`server.js:12:3`): the banner must fit.
pub fn short_path(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap_or(loc)
}

/// `loc` in at most `width` cells, shortened from the left so that the file and line stay:
/// whole folders are dropped first (`…/lib/isEmail.js:12:3`), then characters.
pub fn fit_left(loc: &str, width: usize) -> String {
    let len = loc.chars().count();
    if len <= width {
        return loc.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let keep = width - 1;
    let suffix = loc
        .match_indices('/')
        .map(|(i, _)| &loc[i..])
        .find(|rest| rest.chars().count() <= keep)
        .unwrap_or_else(|| &loc[loc.char_indices().nth(len - keep).map_or(loc.len(), |(i, _)| i)..]);
    format!("…{suffix}")
}

/// `text` in at most `width` cells, cut at the right with `…`.
pub fn fit_right(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    if width == 0 {
        kept
    } else {
        kept + "…"
    }
}
