//! The live terminal view (`looptop top`, and `run` / `demo` on a terminal): state, drawing and
//! input apart. [`state::Snapshot`] is built from the session, [`draw::draw`] renders it with the
//! [`view::View`]'s focus and popups, [`input`] turns keys into actions. [`Tui`] owns the
//! terminal and restores it on every way out: drop, error and panic.

pub mod chart;
pub mod draw;
pub mod input;
pub mod popup;
pub mod state;
pub mod styles;
pub mod tables;
pub mod view;

#[cfg(test)]
mod tests;

use crate::analysis::history::LagHistory;
use crate::analysis::Session;
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use state::{Live, Snapshot};
use std::io::{self, Stdout};
use std::time::{Duration, Instant};
use styles::Styles;
use view::{Detail, DetailFrame, Request, View};

/// How often the view is rebuilt and redrawn.
pub const REFRESH: Duration = Duration::from_millis(250);
/// Windows of the lag chart kept (one per second).
const HISTORY_S: usize = 120;

/// Why the view could not start.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// stdin or stdout is not a terminal.
    #[error("the live view needs a terminal, and {0} is not one")]
    NotATerminal(&'static str),
    /// The terminal refused raw mode or the alternate screen.
    #[error("could not set up the terminal: {0}")]
    Terminal(#[from] io::Error),
}

/// Leaves raw mode and the alternate screen. Safe to call more than once.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = crossterm::execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen, crossterm::cursor::Show);
}

/// The live view on the terminal.
pub struct Tui {
    term: Terminal<CrosstermBackend<Stdout>>,
    styles: Styles,
    view: View,
    snapshot: Snapshot,
    history: LagHistory,
    drawn: Option<Instant>,
}

impl Tui {
    /// Takes over the terminal (raw mode, alternate screen); restored when the `Tui` is dropped
    /// and by a panic hook.
    pub fn start(color: bool) -> Result<Tui, TuiError> {
        if !crate::sink::is_tty(0) {
            return Err(TuiError::NotATerminal("stdin"));
        }
        if !crate::sink::is_tty(1) {
            return Err(TuiError::NotATerminal("stdout"));
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let setup =
            crossterm::execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture, crossterm::cursor::Hide);
        let term = setup.and_then(|_| Terminal::new(CrosstermBackend::new(io::stdout())));
        let term = match term {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e.into());
            }
        };
        Ok(Tui {
            term,
            styles: Styles::new(color),
            view: View::default(),
            snapshot: Snapshot::default(),
            history: LagHistory::new(1_000_000_000, HISTORY_S),
            drawn: None,
        })
    }

    /// Takes the keys pressed since the last call, keeps the lag history, and redraws when it is
    /// time (or something changed). Returns what the command must do. `now_ns` is the session's
    /// clock.
    pub fn step(&mut self, session: &Session, live: &Live, now_ns: u64) -> io::Result<Vec<Request>> {
        self.history.update(session, now_ns);
        // A terminal that went away (its window closed, the ssh session dropped) is hung up: its
        // ioctls fail, and its stdin would read end-of-file forever.
        if !crate::sink::is_tty(0) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the terminal is gone"));
        }
        let mut requests = Vec::new();
        let mut changed = false;
        // Bounded, so a flood of input cannot hold up collection.
        for _ in 0..64 {
            if !event::poll(Duration::ZERO)? {
                break;
            }
            let ev = event::read()?;
            if matches!(ev, event::Event::Resize(..)) {
                changed = true;
            }
            let Some(action) = input::action(&ev) else { continue };
            changed = true;
            match self.view.apply(action, &self.snapshot) {
                Some(Request::StallDetail(i)) => self.view.detail = stall_detail(session, &self.snapshot, i),
                Some(Request::BlockerDetail(i)) => {
                    let b = &self.snapshot.blockers[i];
                    let worst = self.snapshot.stalls.iter().enumerate().filter(|(_, s)| {
                        s.kind.as_deref() == Some(b.kind) && s.frame.as_deref() == Some(b.frame.as_str())
                    });
                    match worst.max_by(|a, b| a.1.duration_ms.total_cmp(&b.1.duration_ms)) {
                        Some((j, _)) => self.view.detail = stall_detail(session, &self.snapshot, j),
                        None => self.view.message = Some("its stalls are no longer listed".into()),
                    }
                }
                Some(r) => requests.push(r),
                None => {}
            }
        }
        let due = !self.drawn.is_some_and(|t| t.elapsed() < REFRESH);
        if due && !self.view.paused {
            self.snapshot = Snapshot::build(session, &self.history, live, now_ns);
            self.view.clamp(&self.snapshot);
        }
        if due || changed {
            self.draw()?;
        }
        Ok(requests)
    }

    /// Shows a one-line message in the footer.
    pub fn say(&mut self, message: String) {
        self.view.message = Some(message);
        self.drawn = None;
    }

    fn draw(&mut self) -> io::Result<()> {
        let (snap, view, st) = (&self.snapshot, &self.view, &self.styles);
        self.term.draw(|f| draw::draw(f, snap, view, st))?;
        self.drawn = Some(Instant::now());
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

/// The details of the stall at row `i`: its blocker, source line and most telling stack.
fn stall_detail(session: &Session, snap: &Snapshot, i: usize) -> Option<Detail> {
    let s = snap.stalls.get(i)?;
    let frame = s.frame.clone().unwrap_or_default();
    let stack = session.stall_stack(s.pid, s.tid, s.start_ns, (s.duration_ms * 1e6) as u64, &frame);
    let frames = stack
        .iter()
        .map(|(f, _)| DetailFrame {
            name: f.name.clone(),
            location: f.location().or_else(|| f.module.as_deref().map(|m| draw::short_path(m).to_string())),
            user: session.is_user_frame(s.pid, f),
            chosen: f.name == frame,
        })
        .collect();
    let kind = s.kind.clone().unwrap_or_else(|| "no stack".into());
    Some(Detail {
        title: format!(
            "stall {} on {}/{}: {} {kind}",
            if s.at_s < 0.0 { "begun before looptop attached".to_string() } else { format!("at {:.1} s", s.at_s) },
            s.pid,
            s.tid,
            crate::units::fmt_ms(s.duration_ms)
        ),
        blocker: s.frame.as_ref().map(|f| match &s.location {
            Some(l) => format!("{kind} in {f} ({l})"),
            None => format!("{kind} in {f}"),
        }),
        source: s.source.clone(),
        frames,
    })
}
