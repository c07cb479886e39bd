//! Sinks: each renders what the analysis made (a report, a flamegraph profile, a recording);
//! none reads `/proc` or a segment.

pub mod check;
pub mod flame;
pub mod json;
pub mod record;
pub mod summary;
pub mod tui;
