//! Popups over the view: the keys, and the stack of a stall or blocker.

use super::styles::Styles;
use super::view::Detail;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// The keys.
pub const KEYS: [(&str, &str); 12] = [
    ("q, Ctrl-D", "quit (a command looptop started is sent SIGTERM)"),
    ("Ctrl-C", "SIGINT to a command looptop started (attached: quit)"),
    ("p, Space", "pause or resume the display; collection goes on"),
    ("Tab, Shift-Tab", "move the focus: loops, stalls, blockers"),
    ("Up/Down, j/k", "move the selection (the loop chosen is charted)"),
    ("Enter", "the stack of the selected stall or blocker"),
    ("Esc", "close a popup"),
    ("f", "flamegraph (SVG) of the last seconds"),
    ("F", "the same, only samples inside stalls"),
    ("r", "start or stop a recording (looptop report FILE)"),
    ("+ / -", "raise or lower the stall threshold"),
    ("?", "this help"),
];

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [_, mid, _] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(height.min(area.height)), Constraint::Fill(1)])
            .areas(area);
    let [_, c, _] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(width.min(area.width)), Constraint::Fill(1)])
            .areas(mid);
    c
}

/// The keys popup.
pub fn help(f: &mut Frame, area: Rect, st: &Styles) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| Line::from(vec![Span::styled(format!("{k:>15}  "), st.title()), Span::raw(*what)]))
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled("A stall is a tick at least as long as the threshold; lag is how long an", st.dim()));
    lines.push(Line::styled("event arriving then would wait. Esc closes.", st.dim()));
    let r = centered(area, 78, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    let block = Block::default().borders(Borders::ALL).title(Span::styled(" keys ", st.title()));
    f.render_widget(Paragraph::new(lines).block(block), r);
}

/// The details popup: the blocker, its source line, and the stack with the user's frames
/// highlighted and the runtime's dimmed.
pub fn detail(f: &mut Frame, area: Rect, d: &Detail, st: &Styles) {
    let mut lines = Vec::new();
    if let Some(b) = &d.blocker {
        lines.push(Line::from(vec![Span::styled("blocker  ", st.column()), Span::styled(b.clone(), st.user())]));
    }
    if let Some(src) = &d.source {
        lines.push(Line::from(vec![Span::styled("source   ", st.column()), Span::raw(src.trim().to_string())]));
    }
    lines.push(Line::raw(""));
    if d.frames.is_empty() {
        lines.push(Line::styled("no stack was sampled during this stall", st.dim()));
    } else {
        lines.push(Line::styled("stack, outermost first (your frames highlighted)", st.column()));
    }
    for fr in &d.frames {
        let style = if fr.chosen {
            st.user().add_modifier(ratatui::style::Modifier::REVERSED)
        } else if fr.user {
            st.user()
        } else {
            st.dim()
        };
        let at = fr.location.as_ref().map(|l| format!("  {l}")).unwrap_or_default();
        lines.push(Line::from(vec![Span::styled(fr.name.clone(), style), Span::styled(at, st.dim())]));
    }
    let r = centered(area, area.width.saturating_sub(4), area.height.saturating_sub(2));
    f.render_widget(Clear, r);
    let block =
        Block::default().borders(Borders::ALL).title(Span::styled(format!(" {} (Esc closes) ", d.title), st.title()));
    // The frames nearest the blocker matter most: keep the end of a long stack in view.
    let inner = r.height.saturating_sub(2) as usize;
    let skip = lines.len().saturating_sub(inner);
    let shown: Vec<Line> = if skip > 0 {
        let head = lines.iter().take(4).cloned();
        let tail = lines.iter().skip(skip + 5).cloned();
        head.chain(std::iter::once(Line::styled(format!("  … {} outer frames", skip + 1), st.dim())))
            .chain(tail)
            .collect()
    } else {
        lines
    };
    f.render_widget(Paragraph::new(shown).block(block).wrap(Wrap { trim: false }), r);
}
