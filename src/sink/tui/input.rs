//! Keys and what they ask for: small predicates, no state.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `q`, Ctrl-D: leave.
    Quit,
    /// Ctrl-C: what it does in a terminal — SIGINT to a command the view launched (leave, when
    /// attached to a process).
    Interrupt,
    /// `p`: freeze or resume the display (collection goes on).
    Pause,
    /// Tab: next pane.
    FocusNext,
    /// Shift-Tab: previous pane.
    FocusPrev,
    /// Up arrow, `k`, mouse wheel up.
    Up,
    /// Down arrow, `j`, mouse wheel down.
    Down,
    /// Enter: details of the selection.
    Open,
    /// Esc: close a popup.
    Close,
    /// `f`: flamegraph of the last seconds.
    Flame,
    /// `F`: the same, stalls only.
    FlameStalls,
    /// `r`: start or stop a recording.
    Record,
    /// `+`: raise the stall threshold.
    ThresholdUp,
    /// `-`: lower it.
    ThresholdDown,
    /// `?`: the keys.
    Help,
}

/// The action of a terminal event, if any.
pub fn action(ev: &Event) -> Option<Action> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => key(k),
        Event::Mouse(m) => match m.kind {
            MouseEventKind::ScrollUp => Some(Action::Up),
            MouseEventKind::ScrollDown => Some(Action::Down),
            _ => None,
        },
        _ => None,
    }
}

fn key(k: &KeyEvent) -> Option<Action> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        return match k.code {
            KeyCode::Char('c') => Some(Action::Interrupt),
            KeyCode::Char('d') => Some(Action::Quit),
            _ => None,
        };
    }
    Some(match k.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('p') | KeyCode::Char(' ') => Action::Pause,
        KeyCode::Tab => Action::FocusNext,
        KeyCode::BackTab => Action::FocusPrev,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Close,
        KeyCode::Char('f') => Action::Flame,
        KeyCode::Char('F') => Action::FlameStalls,
        KeyCode::Char('r') => Action::Record,
        KeyCode::Char('+') | KeyCode::Char('=') => Action::ThresholdUp,
        KeyCode::Char('-') | KeyCode::Char('_') => Action::ThresholdDown,
        KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => Action::Help,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> Event {
        Event::Key(KeyEvent::new(code, modifiers))
    }

    #[test]
    fn keys_map_to_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(action(&press(KeyCode::Char('q'), none)), Some(Action::Quit));
        assert_eq!(action(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Interrupt));
        assert_eq!(action(&press(KeyCode::Char('d'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(action(&press(KeyCode::Char('x'), KeyModifiers::CONTROL)), None);
        assert_eq!(action(&press(KeyCode::Char('F'), KeyModifiers::SHIFT)), Some(Action::FlameStalls));
        assert_eq!(action(&press(KeyCode::Char('+'), none)), Some(Action::ThresholdUp));
        assert_eq!(action(&press(KeyCode::Enter, none)), Some(Action::Open));
        assert_eq!(action(&press(KeyCode::Char('z'), none)), None);
        let release = Event::Key(KeyEvent { kind: KeyEventKind::Release, ..KeyEvent::new(KeyCode::Char('q'), none) });
        assert_eq!(action(&release), None);
    }
}
