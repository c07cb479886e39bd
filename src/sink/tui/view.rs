//! The view's own state — focus, selection, popups, pause, the status message — and how actions
//! change it. What needs the session or the pipeline is handed back as a [`Request`].

use super::input::Action;
use super::state::Snapshot;

/// The pane with the keyboard focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    /// The loops table (its selection chooses the chart's loop).
    #[default]
    Loops,
    /// Recent stalls.
    Stalls,
    /// Aggregated blockers.
    Blockers,
}

impl Focus {
    fn index(self) -> usize {
        match self {
            Focus::Loops => 0,
            Focus::Stalls => 1,
            Focus::Blockers => 2,
        }
    }

    fn from_index(i: usize) -> Focus {
        [Focus::Loops, Focus::Stalls, Focus::Blockers][i % 3]
    }
}

/// One frame of a stack shown in the details popup.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailFrame {
    /// Function or symbol.
    pub name: String,
    /// `file:line:col` or the module.
    pub location: Option<String>,
    /// The user's own code (highlighted); runtime and library frames are dimmed.
    pub user: bool,
    /// The blocker's frame.
    pub chosen: bool,
}

/// The details popup of a stall or blocker.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    /// What it is about ("stall at 12.3 s: 480 ms regex").
    pub title: String,
    /// The blocker's frame and location.
    pub blocker: Option<String>,
    /// The source line there.
    pub source: Option<String>,
    /// The stack, outermost first.
    pub frames: Vec<DetailFrame>,
}

/// What the command must do for the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Leave.
    Quit,
    /// Ctrl-C: interrupt a launched command (leave, when attached).
    Interrupt,
    /// Write a flamegraph of the last seconds (only samples inside stalls).
    Flame {
        /// Only samples inside stalls.
        stalls_only: bool,
    },
    /// Start or stop a recording.
    Record,
    /// Raise (+1) or lower (−1) the stall threshold.
    Threshold(i8),
    /// Show the details of the stall at this row of the snapshot.
    StallDetail(usize),
    /// Show the details of the blocker at this row.
    BlockerDetail(usize),
}

/// The view's state.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Which pane has the focus.
    pub focus: Focus,
    /// Selected row of each pane.
    pub selected: [usize; 3],
    /// The display is frozen (collection goes on).
    pub paused: bool,
    /// The keys popup is open.
    pub help: bool,
    /// The details popup, when open.
    pub detail: Option<Detail>,
    /// A one-line message (a flamegraph written, a recording started), until the next one.
    pub message: Option<String>,
}

impl View {
    /// Applies an action; returns what the command must do.
    pub fn apply(&mut self, action: Action, snap: &Snapshot) -> Option<Request> {
        let popup = self.help || self.detail.is_some();
        match action {
            Action::Quit => return Some(Request::Quit),
            Action::Interrupt => return Some(Request::Interrupt),
            Action::Close | Action::Open if popup => {
                self.help = false;
                self.detail = None;
            }
            Action::Help => self.help = !self.help,
            Action::Pause => self.paused = !self.paused,
            Action::FocusNext | Action::FocusPrev if !popup => {
                let step = if action == Action::FocusNext { 1 } else { 2 };
                self.focus = Focus::from_index(self.focus.index() + step);
            }
            Action::Up | Action::Down if !popup => {
                let len = self.rows(snap);
                let sel = &mut self.selected[self.focus.index()];
                *sel = if action == Action::Up { sel.saturating_sub(1) } else { (*sel + 1).min(len.saturating_sub(1)) };
            }
            Action::Open => {
                let sel = self.selected[self.focus.index()];
                return match self.focus {
                    Focus::Stalls if sel < snap.stalls.len() => Some(Request::StallDetail(sel)),
                    Focus::Blockers if sel < snap.blockers.len() => Some(Request::BlockerDetail(sel)),
                    Focus::Loops => {
                        self.message = Some("Tab to the stalls or blockers, then Enter for a stack".into());
                        None
                    }
                    _ => None,
                };
            }
            Action::Flame => return Some(Request::Flame { stalls_only: false }),
            Action::FlameStalls => return Some(Request::Flame { stalls_only: true }),
            Action::Record => return Some(Request::Record),
            Action::ThresholdUp => return Some(Request::Threshold(1)),
            Action::ThresholdDown => return Some(Request::Threshold(-1)),
            _ => {}
        }
        None
    }

    /// Keeps selections inside their tables after the data changed.
    pub fn clamp(&mut self, snap: &Snapshot) {
        let lens = [snap.loops.len(), snap.stalls.len(), snap.blockers.len()];
        for (sel, len) in self.selected.iter_mut().zip(lens) {
            *sel = (*sel).min(len.saturating_sub(1));
        }
    }

    fn rows(&self, snap: &Snapshot) -> usize {
        match self.focus {
            Focus::Loops => snap.loops.len(),
            Focus::Stalls => snap.stalls.len(),
            Focus::Blockers => snap.blockers.len(),
        }
    }

    /// The selected row of a pane.
    pub fn selection(&self, focus: Focus) -> usize {
        self.selected[focus.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::BlockerSummary;
    use crate::sink::tui::state::StallRow;

    fn snap(stalls: usize) -> Snapshot {
        let row = StallRow {
            pid: 1,
            tid: 1,
            start_ns: 0,
            at_s: 0.0,
            duration_ms: 60.0,
            in_progress: false,
            gc_ms: None,
            kind: None,
            frame: None,
            location: None,
            source: None,
        };
        let blocker = BlockerSummary {
            kind: "cpu",
            count: 1,
            total_ms: 60.0,
            max_ms: 60.0,
            frame: "f".into(),
            location: None,
            source: None,
        };
        Snapshot { stalls: vec![row; stalls], blockers: vec![blocker], ..Snapshot::default() }
    }

    #[test]
    fn focus_and_selection_move_within_bounds() {
        let s = snap(3);
        let mut v = View::default();
        assert_eq!(v.apply(Action::FocusNext, &s), None);
        assert_eq!(v.focus, Focus::Stalls);
        for _ in 0..5 {
            v.apply(Action::Down, &s);
        }
        assert_eq!(v.selection(Focus::Stalls), 2);
        assert_eq!(v.apply(Action::Open, &s), Some(Request::StallDetail(2)));
        v.apply(Action::FocusPrev, &s);
        v.apply(Action::FocusPrev, &s);
        assert_eq!(v.focus, Focus::Blockers);
        assert_eq!(v.apply(Action::Open, &s), Some(Request::BlockerDetail(0)));
        v.clamp(&snap(1));
        assert_eq!(v.selection(Focus::Stalls), 0);
    }

    #[test]
    fn popups_take_the_keys_until_closed() {
        let s = snap(2);
        let mut v = View { help: true, ..View::default() };
        v.apply(Action::FocusNext, &s);
        assert_eq!(v.focus, Focus::Loops, "Tab does not move behind a popup");
        v.apply(Action::Close, &s);
        assert!(!v.help);
        assert_eq!(v.apply(Action::Quit, &s), Some(Request::Quit));
        assert_eq!(v.apply(Action::ThresholdDown, &s), Some(Request::Threshold(-1)));
        v.apply(Action::Pause, &s);
        assert!(v.paused);
    }
}
