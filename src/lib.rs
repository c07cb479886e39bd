//! looptop shows why an event loop is slow.
//!
//! The path of an event: [`target`] launches or finds a process, a [`source`] reads what its agent
//! (or later perf) saw and yields [`event::Event`]s, [`analysis::Session`] turns them into loops,
//! ticks, lag and stalls, and a [`sink`] renders the result. [`cmd`] wires one command together.
#![deny(missing_docs)]

pub mod analysis;
pub mod cli;
pub mod cmd;
pub mod error;
pub mod event;
pub mod observe;
pub mod plan;
pub mod recording;
pub mod safefs;
pub mod sink;
pub mod source;
pub mod symbolize;
pub mod target;
#[cfg(test)]
mod testdir;
pub mod units;
