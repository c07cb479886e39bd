//! The three tables: loops, recent stalls and aggregated blockers.

use super::draw::short_path;
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

/// Loops: one row per loop; the selected one is the chart's.
pub fn draw_loops(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles) {
    let focused = view.focus == Focus::Loops;
    let block = pane(format!("Loops ({})", snap.loops.len()), focused, st);
    if snap.loops.is_empty() {
        let text =
            Line::styled("waiting for the first loop: a thread that waits in epoll_wait, poll or ppoll", st.dim());
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let thr = snap.header.threshold_ms;
    let lag = |ms: f64| {
        let style = if ms >= thr { st.bad() } else { Style::default() };
        Cell::from(Span::styled(fmt_ms(ms), style))
    };
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
        ])
        .style(style)
    });
    let columns = ["pid/tid", "name", "util", "ticks/s", "lag p50", "p99", "max", "stalls"];
    let widths = [13, 0, 5, 7, 9, 9, 9, 6].map(|w| if w == 0 { Constraint::Fill(1) } else { Constraint::Length(w) });
    let highlight = if focused { st.selected() } else { st.title() };
    draw_rows(f, area, (&columns, &widths), rows, (block, highlight), Some(view.selection(Focus::Loops)), st);
}

/// Recent stalls, newest first.
pub fn draw_stalls(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles) {
    let focused = view.focus == Focus::Stalls;
    let other = if area.width < 120 { "  (Tab: blockers)" } else { "" };
    let block = pane(format!("Stalls ({}){other}", snap.stalls.len()), focused, st);
    if snap.stalls.is_empty() {
        let text =
            Line::styled(format!("no stall yet: no tick took {} or more", fmt_ms(snap.header.threshold_ms)), st.dim());
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let rows = snap.stalls.iter().map(|s| {
        let dur = if s.in_progress { format!("{}+", fmt_ms(s.duration_ms)) } else { fmt_ms(s.duration_ms) };
        let gc = s.gc_ms.filter(|&g| g >= 1.0).map(|g| format!(" gc {}", fmt_ms(g))).unwrap_or_default();
        Row::new(vec![
            Cell::from(format!("{:.1}s", s.at_s)),
            Cell::from(Span::styled(dur, st.bad())),
            Cell::from(s.kind.clone().unwrap_or_else(|| "?".into())),
            Cell::from(format!("{}{gc}", s.frame.clone().unwrap_or_else(|| "(no stack)".into()))),
            Cell::from(Span::styled(s.location.as_deref().map(short_path).unwrap_or("").to_string(), st.dim())),
        ])
    });
    let columns = ["at", "duration", "kind", "frame", "location"];
    let widths = [
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(14),
        Constraint::Fill(2),
        Constraint::Fill(1),
    ];
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
pub fn draw_blockers(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles) {
    let focused = view.focus == Focus::Blockers;
    let other = if area.width < 120 { "  (Tab: loops)" } else { "" };
    let block = pane(format!("Blockers ({}){other}", snap.blockers.len()), focused, st);
    if snap.blockers.is_empty() {
        let text = Line::styled("no blocker named yet (a stall with a stack names one)", st.dim());
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let rows = snap.blockers.iter().map(|b| {
        Row::new(vec![
            Cell::from(b.count.to_string()),
            Cell::from(Span::styled(fmt_ms(b.max_ms), st.bad())),
            Cell::from(fmt_ms(b.total_ms)),
            Cell::from(b.kind),
            Cell::from(b.frame.clone()),
            Cell::from(Span::styled(b.location.as_deref().map(short_path).unwrap_or("").to_string(), st.dim())),
        ])
    });
    let columns = ["stalls", "max", "total", "kind", "frame", "location"];
    let widths = [6, 9, 9, 14].map(Constraint::Length).into_iter().chain([Constraint::Fill(2), Constraint::Fill(1)]);
    let widths: Vec<Constraint> = widths.collect();
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
