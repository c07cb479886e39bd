//! Sinks: each renders a [`crate::analysis::report::Report`]; none reads `/proc` or a segment.

pub mod flame;
pub mod json;
pub mod record;
pub mod summary;
