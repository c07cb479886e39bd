//! Symbols: native frames (blazesym), V8/Python perf maps, source lines. Turns the addresses of a
//! [`crate::event::Sample`] into [`Frame`]s.
//!
//! [`Symbolizer::observe`] remembers a process's executable mappings, the files behind them and
//! its perf map; [`Symbolizer::symbolize`] names addresses from that, also after the process
//! exited: user addresses in file mappings through the ELF file (symbol tables, DWARF lines),
//! addresses in anonymous memory through the perf map (`/tmp/perf-PID.map`, read incrementally),
//! kernel addresses through `/proc/kallsyms`.

mod frame;
mod kernel;
mod maps;
mod native;
mod perfmap;
pub mod python;
mod source;
mod symbolizer;
#[cfg(test)]
mod tests;
mod unwind;
mod v8heap;
mod v8name;

pub use frame::{Frame, FrameKind, JsTier};
pub use symbolizer::Symbolizer;
pub use v8heap::V8Heap;
