//! Colours and glyphs of the live view in one place, with a `NO_COLOR` / ASCII fallback: without
//! colour, emphasis is bold, reverse video and dim only.

use ratatui::style::{Color, Modifier, Style};

/// How things look.
#[derive(Debug, Clone, Copy)]
pub struct Styles {
    color: bool,
    unicode: bool,
}

impl Styles {
    /// Colour on or off; Unicode glyphs when the locale says UTF-8.
    pub fn new(color: bool) -> Self {
        Styles { color, unicode: crate::sink::utf8_locale() }
    }

    /// Fixed choices (tests).
    pub fn with(color: bool, unicode: bool) -> Self {
        Styles { color, unicode }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Pane titles and the program name.
    pub fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// Column headers.
    pub fn column(&self) -> Style {
        self.fg(Color::Gray).add_modifier(Modifier::BOLD)
    }

    /// Secondary text, runtime frames.
    pub fn dim(&self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    /// The stall-in-progress banner: impossible to miss.
    pub fn alert(&self) -> Style {
        if self.color {
            Style::default().bg(Color::Red).fg(Color::White).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }

    /// Something fine.
    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    /// A figure past the threshold, a warning.
    pub fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// A warning line.
    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    /// The selected row.
    pub fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// The user's own frames in a stack.
    pub fn user(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    /// Lag p99 in the chart.
    pub fn p99(&self) -> Style {
        self.fg(Color::Cyan)
    }

    /// Lag max in the chart.
    pub fn max(&self) -> Style {
        self.fg(Color::Magenta)
    }

    /// The threshold line in the chart.
    pub fn threshold(&self) -> Style {
        self.fg(Color::Red)
    }

    /// The banner's mark.
    pub fn alert_glyph(&self) -> &'static str {
        if self.unicode {
            "⚠"
        } else {
            "!!"
        }
    }

    /// The all-clear mark.
    pub fn ok_glyph(&self) -> &'static str {
        if self.unicode {
            "✓"
        } else {
            "ok"
        }
    }

    /// Separator of header items.
    pub fn dot(&self) -> &'static str {
        if self.unicode {
            " · "
        } else {
            " | "
        }
    }

    /// Between a blocker and its frame.
    pub fn dash(&self) -> &'static str {
        if self.unicode {
            " — "
        } else {
            " - "
        }
    }
}
