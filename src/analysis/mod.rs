//! Analysis: the [`Session`] consumes events and knows every loop's ticks, lag and stalls; a
//! [`report::Report`] is what the sinks render.

pub mod classify;
pub mod dist;
pub mod history;
pub mod report;
pub mod rules;
pub mod runtime;
mod session;
pub mod stacks;

pub use session::{LoopView, Session, FOLD_EVERY_NS, KEEP_SAMPLES_NS, RECENT_STALLS};
