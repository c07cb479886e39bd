//! The three tables: loops, recent stalls and aggregated blockers.

use super::draw::{fit_left, fit_right, short_path};
use super::state::Snapshot;
use super::styles::Styles;
use super::view::{Focus, View};
use crate::units::fmt_ms;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

fn pane<'a>(title: String, focused: bool, st: &Styles) -> Block<'a> {
    let mark = if focused { "> " } else { "" };
    Block::default().borders(Borders::TOP).title(Span::styled(format!("{mark}{title} "), st.title()))
}

/// Draws rows under a header in columns of `widths`; the `selected` row is highlighted.
fn draw_rows<'a>(
    f: &mut Frame,
    area: Rect,
    (header, widths): (&[&'a str], &[Constraint]),
    rows: impl IntoIterator<Item = Row<'a>>,
    (block, highlight): (Block<'a>, Style),
    selected: Option<usize>,
    st: &Styles,
) {
    let table = Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).style(st.column()))
        .block(block)
        .row_highlight_style(highlight);
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(table, area, &mut state);
}

/// How `room` cells are shared by a table's frame and location columns: the location gets what
/// its longest entry needs up to half the room, and the longest `file:line` even past that (up to
/// two thirds); the frame gets the rest.
fn share(room: u16, locations: &[&str]) -> (u16, u16) {
    let room = room as usize;
    let count = |s: &str| s.chars().count();
    let full = locations.iter().map(|l| count(l)).max().unwrap_or(0);
    let short = locations.iter().map(|l| count(short_path(l))).max().unwrap_or(0);
    let location = full.min(room / 2).max(short.min(room * 2 / 3));
    ((room - location) as u16, location as u16)
}

/// The room left for the frame and location columns once `fixed` columns and the gaps between
/// all of them (and one cell at the right edge) are drawn in `width`.
fn room(width: u16, fixed: &[u16]) -> u16 {
    let gaps = fixed.len() as u16 + 2;
    width.saturating_sub(fixed.iter().sum::<u16>() + gaps)
}

/// Loops: one row per loop; the selected one is the chart's.
pub fn draw_loops(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles) {
    let focused = view.focus == Focus::Loops;
    let block = pane(format!("Loops ({})", snap.loops.len()), focused, st);
    if snap.loops.is_empty() {
        let text = Line::styled("waiting for the first loop: a thread waiting in epoll_wait, poll or select", st.dim());
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let thr = snap.header.threshold_ms;
    let lag = |ms: f64| {
        let style = if ms >= thr { st.bad() } else { Style::default() };
        Cell::from(Span::styled(fmt_ms(ms), style))
    };
    // The name as wide as the longest (a blank column of half the screen helps nobody).
    let name_width = snap.loops.iter().map(|l| l.name.chars().count()).max().unwrap_or(0).clamp(4, 32) as u16;
    let rows = snap.loops.iter().map(|l| {
        let style = if l.alive { Style::default() } else { st.dim() };
        Row::new(vec![
            Cell::from(format!("{}/{}", l.id.pid, l.id.tid)),
            Cell::from(l.name.clone()),
            Cell::from(format!("{:.0}%", l.utilization * 100.0)),
            Cell::from(format!("{:.0}", l.ticks_per_s)),
            lag(l.lag_p50),
            lag(l.lag_p99),
            lag(l.lag_max),
            Cell::from(Span::styled(l.stalls.to_string(), if l.stalls > 0 { st.bad() } else { Style::default() })),
            Cell::from(""),
        ])
        .style(style)
    });
    let columns = ["pid/tid", "name", "util", "ticks/s", "lag p50", "p99", "max", "stalls", ""];
    let widths =
        [13, name_width, 5, 7, 9, 9, 9, 6, 0].map(|w| if w == 0 { Constraint::Fill(1) } else { Constraint::Length(w) });
    let highlight = if focused { st.selected() } else { st.title() };
    draw_rows(f, area, (&columns, &widths), rows, (block, highlight), Some(view.selection(Focus::Loops)), st);
}

/// Recent stalls, newest first.
pub fn draw_stalls(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles, alone: bool) {
    let focused = view.focus == Focus::Stalls;
    let other = if alone { "  (Tab: blockers)" } else { "" };
    let block = pane(format!("Stalls ({}){other}", snap.stalls.len()), focused, st);
    if snap.stalls.is_empty() {
        let text =
            Line::styled(format!("no stall yet: no tick took {} or more", fmt_ms(snap.header.threshold_ms)), st.dim());
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    const FIXED: [u16; 3] = [7, 10, 14];
    let locations: Vec<&str> = snap.stalls.iter().filter_map(|s| s.location.as_deref()).collect();
    let (frame_width, location_width) = share(room(area.width, &FIXED), &locations);
    let rows = snap.stalls.iter().map(|s| {
        let dur = if s.in_progress { format!("{}+", fmt_ms(s.duration_ms)) } else { fmt_ms(s.duration_ms) };
        let gc = s.gc_ms.filter(|&g| g >= 1.0).map(|g| format!(" gc {}", fmt_ms(g))).unwrap_or_default();
        let frame = format!("{}{gc}", s.frame.as_deref().unwrap_or("(no stack)"));
        let location = fit_left(s.location.as_deref().unwrap_or(""), location_width as usize);
        Row::new(vec![
            // A stall already under way when looptop attached began before its clock: no negative time.
            Cell::from(if s.at_s < 0.0 { "before".to_string() } else { format!("{:.1}s", s.at_s) }),
            Cell::from(Span::styled(dur, st.bad())),
            Cell::from(s.kind.clone().unwrap_or_else(|| "?".into())),
            Cell::from(fit_right(&frame, frame_width as usize)),
            Cell::from(Span::styled(location, st.dim())),
        ])
    });
    let columns = ["at", "duration", "kind", "frame", "location"];
    let widths: Vec<Constraint> =
        FIXED.iter().chain(&[frame_width, location_width]).map(|&w| Constraint::Length(w)).collect();
    let highlight = if focused { st.selected() } else { Style::default() };
    draw_rows(
        f,
        area,
        (&columns, &widths),
        rows,
        (block, highlight),
        focused.then(|| view.selection(Focus::Stalls)),
        st,
    );
}

/// Stalls aggregated by blocker, worst first.
pub fn draw_blockers(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles, alone: bool) {
    let focused = view.focus == Focus::Blockers;
    let other = if alone { "  (Tab: loops)" } else { "" };
    let block = pane(format!("Blockers ({}){other}", snap.blockers.len()), focused, st);
    if snap.blockers.is_empty() {
        let text = Line::styled("no blocker named yet (a stall with a stack names one)", st.dim());
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    const FIXED: [u16; 4] = [6, 9, 9, 14];
    let locations: Vec<&str> = snap.blockers.iter().filter_map(|b| b.location.as_deref()).collect();
    let (frame_width, location_width) = share(room(area.width, &FIXED), &locations);
    let rows = snap.blockers.iter().map(|b| {
        Row::new(vec![
            Cell::from(b.count.to_string()),
            Cell::from(Span::styled(fmt_ms(b.max_ms), st.bad())),
            Cell::from(fmt_ms(b.total_ms)),
            Cell::from(b.kind),
            Cell::from(fit_right(&b.frame, frame_width as usize)),
            Cell::from(Span::styled(fit_left(b.location.as_deref().unwrap_or(""), location_width as usize), st.dim())),
        ])
    });
    let columns = ["stalls", "max", "total", "kind", "frame", "location"];
    let widths: Vec<Constraint> =
        FIXED.iter().chain(&[frame_width, location_width]).map(|&w| Constraint::Length(w)).collect();
    let highlight = if focused { st.selected() } else { Style::default() };
    draw_rows(
        f,
        area,
        (&columns, &widths),
        rows,
        (block, highlight),
        focused.then(|| view.selection(Focus::Blockers)),
        st,
    );
}
