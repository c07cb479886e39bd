//! The lag chart: the selected loop's lag p99 and max, second by second over the last minute,
//! against the stall threshold.

use super::state::Snapshot;
use super::styles::Styles;
use super::view::{Focus, View};
use crate::units::fmt_ms;
use ratatui::layout::Rect;
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, LegendPosition, Paragraph};
use ratatui::Frame;

/// Seconds shown.
pub const SPAN_S: f64 = 60.0;

/// Draws the chart of the selected loop.
pub fn draw(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View, st: &Styles) {
    let Some(l) = snap.loops.get(view.selection(Focus::Loops)) else {
        let block = Block::default().borders(Borders::TOP).title(Span::styled("Lag ", st.title()));
        f.render_widget(Paragraph::new("").block(block), area);
        return;
    };
    let thr = snap.header.threshold_ms;
    let pts = |pick: fn(&(f64, f64, f64)) -> f64| -> Vec<(f64, f64)> {
        l.chart.iter().filter(|p| p.0 <= SPAN_S).map(|p| (-p.0, pick(p))).collect()
    };
    let p99 = pts(|p| p.1);
    let max = pts(|p| p.2);
    let threshold = [(-SPAN_S, thr), (0.0, thr)];
    let top = nice_ceiling(max.iter().chain(&p99).map(|p| p.1).fold(thr * 1.25, f64::max));
    let datasets = vec![
        Dataset::default().name("max").marker(Marker::Braille).graph_type(GraphType::Line).style(st.max()).data(&max),
        Dataset::default().name("p99").marker(Marker::Braille).graph_type(GraphType::Line).style(st.p99()).data(&p99),
        Dataset::default()
            .name("threshold")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(st.threshold())
            .data(&threshold),
    ];
    let title = format!("Lag per second, last {SPAN_S:.0} s: loop {}/{} {} ", l.id.pid, l.id.tid, l.name);
    let chart = Chart::new(datasets)
        .block(Block::default().borders(Borders::TOP).title(Span::styled(title, st.title())))
        .legend_position(Some(LegendPosition::TopLeft))
        .hidden_legend_constraints((ratatui::layout::Constraint::Min(0), ratatui::layout::Constraint::Min(0)))
        .x_axis(Axis::default().bounds([-SPAN_S, 0.0]).style(st.dim()).labels([
            format!("-{SPAN_S:.0}s"),
            "-30s".to_string(),
            "now".to_string(),
        ]))
        .y_axis(Axis::default().bounds([0.0, top]).style(st.dim()).labels([
            "0".to_string(),
            fmt_ms(top / 2.0),
            fmt_ms(top),
        ]));
    f.render_widget(chart, area);
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten), so axis labels read well.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v).unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ceilings_are_round() {
        assert_eq!(super::nice_ceiling(62.5), 100.0);
        assert_eq!(super::nice_ceiling(3200.0), 5000.0);
        assert_eq!(super::nice_ceiling(0.3), 0.5);
        assert_eq!(super::nice_ceiling(0.0), 1.0);
    }
}
