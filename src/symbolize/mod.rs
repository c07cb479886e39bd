//! Symbols: native frames (blazesym), V8 perf maps, source lines. Turns the addresses of a
//! [`crate::event::Sample`] into [`Frame`]s.

mod frame;
mod kernel;
mod maps;
mod perfmap;
mod source;
mod v8name;

pub use frame::{Frame, FrameKind, JsTier};
