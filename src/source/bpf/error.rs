//! Why the BPF source could not start, in the kernel's words.

/// Why the BPF source could not start (the perf source is used instead).
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The kernel refused to load or attach a program or map (no CAP_BPF/CAP_PERFMON, seccomp,
    /// an old kernel).
    #[error("the kernel refused BPF ({what}: {reason})")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// The kernel's or aya's words.
        reason: String,
    },
    /// Turned off by `LOOPTOP_NO_BPF`.
    #[error("BPF is turned off (LOOPTOP_NO_BPF is set)")]
    Off,
}

pub(super) fn refused(what: &'static str) -> impl FnOnce(String) -> BpfError {
    move |reason| BpfError::Refused { what, reason }
}

/// An error and its causes, as one line ("…: Operation not permitted (os error 1)").
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}
