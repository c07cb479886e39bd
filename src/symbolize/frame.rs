//! A symbolized stack frame: what every sink and the blocker classifier see of an address.

use serde::{Deserialize, Serialize};

/// Where a frame's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrameKind {
    /// JavaScript compiled or interpreted by V8 (a `JS:` perf-map entry).
    Js,
    /// Other V8-generated code from the perf map: `RegExp:`, `Builtin:`, `Stub:`, bytecode handlers.
    V8Code,
    /// Native code in an ELF file (executable or shared library).
    Native,
    /// Kernel code.
    Kernel,
    /// A Python function (from a Python-level stack).
    Python,
    /// An address nothing could name.
    Unknown,
}

/// V8's execution tier of a JS frame, from the perf-map prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JsTier {
    /// `~`: Ignition bytecode interpreter.
    Interpreted,
    /// `^`: Sparkplug baseline compiler.
    Baseline,
    /// `+`: Maglev mid-tier compiler.
    Maglev,
    /// `*`: TurboFan optimizing compiler.
    Optimized,
}

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Function name: `validateEmail`, `(anonymous)`, `v8::internal::JsonParser<unsigned char>::ParseJson`,
    /// `RegExp:^([a-z0-9]+)+@`, `[unknown]` …
    pub name: String,
    /// Where the code comes from.
    pub kind: FrameKind,
    /// The ELF file of a native frame (`/usr/bin/node`), `[kernel]`, or the perf map for V8 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Source file: the JS script (`/srv/app/server.js`, `node:internal/timers`) or a native
    /// frame's DWARF source file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based source line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based source column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub col: Option<u32>,
    /// V8 tier of a JS frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<JsTier>,
    /// The line that was running when the stack was taken, where the runtime tells it (V8: an
    /// interpreted frame's bytecode position); `line` and `col` stay where the function starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_line: Option<u32>,
}

impl Frame {
    /// A frame nothing could name.
    pub fn unknown(module: Option<String>) -> Self {
        Frame {
            name: "[unknown]".into(),
            kind: FrameKind::Unknown,
            module,
            file: None,
            line: None,
            col: None,
            tier: None,
            exec_line: None,
        }
    }

    /// Whether the name can be kept for its address (until [`super::Symbolizer::epoch`]
    /// changes): everything but an address no mapping or perf map knows yet, which may be named
    /// once the perf map grows.
    pub fn is_settled(&self) -> bool {
        !(self.kind == FrameKind::Unknown && self.module.is_none())
    }

    /// The same frame under another name.
    pub fn renamed(self, name: String) -> Self {
        Frame { name, ..self }
    }

    /// The function this frame runs in: the frame without its running line.
    pub fn function(&self) -> Frame {
        Frame { exec_line: None, ..self.clone() }
    }

    /// Whether both frames run in the same function (whatever line each was running).
    pub fn same_function(&self, other: &Frame) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.file == other.file
            && self.line == other.line
            && self.col == other.col
            && self.module == other.module
            && self.tier == other.tier
    }

    /// `file:line` of the line that was running when it is known, else [`Frame::location`].
    pub fn running_location(&self) -> Option<String> {
        match (self.file.as_deref(), self.exec_line) {
            (Some(file), Some(l)) => Some(format!("{file}:{l}")),
            _ => self.location(),
        }
    }

    /// `file:line:col` (as much of it as is known), or `None` without a file.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_deref()?;
        Some(match (self.line, self.col) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            (Some(l), None) => format!("{file}:{l}"),
            _ => file.to_string(),
        })
    }
}
