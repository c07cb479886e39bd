//! Errors a user can cause, each with the fix and an exit code from DESIGN.md.

use std::fmt;

/// Exit codes (DESIGN.md, "Command line").
pub mod exit {
    /// Success, or every budget held.
    pub const OK: u8 = 0;
    /// A budget failed.
    pub const BUDGET: u8 = 1;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Could not observe the target.
    pub const OBSERVE: u8 = 3;
}

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The user asked for something malformed (exit 2).
    Usage,
    /// The target could not be observed (exit 3).
    Observe,
}

/// A failure explained to the user: one sentence of what went wrong, and the fix.
#[derive(Debug, thiserror::Error)]
pub struct UserError {
    /// Decides the exit code.
    pub kind: Kind,
    /// What went wrong, one sentence.
    pub message: String,
    /// How to fix it, when there is something to do.
    pub hint: Option<String>,
}

impl UserError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        UserError { kind: Kind::Usage, message: message.into(), hint: None }
    }

    /// An observation failure (exit 3).
    pub fn observe(message: impl Into<String>) -> Self {
        UserError { kind: Kind::Observe, message: message.into(), hint: None }
    }

    /// Adds the fix.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage => exit::USAGE,
            Kind::Observe => exit::OBSERVE,
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  fix: {h}")?;
        }
        Ok(())
    }
}
