//! Analysis: the [`Session`] consumes events and knows every loop's ticks, lag and stalls; a
//! [`report::Report`] is what the sinks render.

pub mod dist;
pub mod report;
pub mod runtime;
mod session;

pub use session::Session;
