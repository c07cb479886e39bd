//! Python frames: what CPython's frame chain says a thread runs, named from the process's
//! memory. The words come from the agent's watchdog ([`looptop_abi::python::walk`] in the
//! target) or from looptop reading the process from outside ([`PyTarget::stack`]); either way
//! each (code object, position) pair becomes a [`Frame`] of kind Python with its qualified
//! name, file, first line and the line that was running, and [`splice`] puts those frames in
//! the native stack where the interpreter ran them.

mod code;
mod lines;
#[cfg(test)]
mod tests;

use super::frame::{Frame, FrameKind};
use super::v8heap::ProcessMemory;
use code::Code;
use looptop_abi::python::{self as abi, PyLayout, ENTRY, PY_FRAMES};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The native function of CPython's interpreter loop: each of its frames runs Python frames.
pub const EVAL_FRAME: &str = "_PyEval_EvalFrameDefault";
/// Code objects remembered per process before the cache starts over.
const MAX_CODES: usize = 1 << 14;

/// What an ELF file holding CPython exports for reading it: symbol addresses (as linked) and
/// file offsets, and the version.
#[derive(Debug, Clone, Copy)]
pub struct PyElf {
    /// `_PyRuntime`: (address as linked, file offset).
    runtime: (u64, u64),
    /// `PyCode_Type`.
    code_type: (u64, u64),
    /// `Py_GetVersion`, a function: its mapping (executable) gives the load bias.
    text: (u64, u64),
    /// The minor version: `Py_Version` (3.11+), else the file's name (`libpython3.10.so`).
    pub minor: Option<u32>,
}

impl PyElf {
    /// What `path` (the file; `module`: its name in the process) exports, if it holds CPython.
    pub fn from_elf(path: &Path, module: &str) -> Option<PyElf> {
        use blazesym::inspect::source::{Elf, Source};
        let mut src = Elf::new(path);
        src.debug_syms = false;
        let names = ["_PyRuntime", "PyCode_Type", "Py_Version", "Py_GetVersion"];
        let inspector = blazesym::inspect::Inspector::new();
        let found = inspector.lookup(&Source::Elf(src), &names).ok()?;
        let at = |i: usize| found.get(i)?.first().and_then(|s| Some((s.addr, s.file_offset?)));
        let version = at(2).and_then(|(_, off)| {
            let file = std::fs::File::open(path).ok()?;
            let mut b = [0u8; 8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut b, off).ok()?;
            abi::minor_of_hex(u64::from_ne_bytes(b))
        });
        let minor = version.or_else(|| minor_from_name(module));
        Some(PyElf { runtime: at(0)?, code_type: at(1)?, text: at(3)?, minor })
    }
}

/// `3.10` from `/usr/lib/libpython3.10.so.1.0` or `/usr/bin/python3.10`.
fn minor_from_name(module: &str) -> Option<u32> {
    let base = module.rsplit('/').next()?;
    let rest = &base[base.find("python3.")? + "python3.".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Whether a mapped file may hold CPython (only those are looked into: reading every
/// library's symbols would cost tens of milliseconds for nothing).
pub fn may_hold_python(module: &str) -> bool {
    module.rsplit('/').next().is_some_and(|b| b.contains("python"))
}

/// One process's CPython, located: where its runtime and code type are.
#[derive(Debug, Clone, Copy)]
pub struct PyTarget {
    /// The version's offsets.
    pub layout: &'static PyLayout,
    /// A function of the interpreter, in the process.
    text: u64,
    runtime: u64,
    code_type: u64,
    pthread_tid: Option<u64>,
}

impl PyTarget {
    /// Located from `elf`, mapped in the process at `bias` (address − address as linked).
    pub fn new(layout: &'static PyLayout, elf: &PyElf, bias: u64) -> PyTarget {
        // 3.10 names threads by `pthread_t` only: glibc's offset of the kernel id, from ours.
        // SAFETY: pthread_self and gettid have no preconditions.
        let (me, tid) = unsafe { (libc::pthread_self() as u64, libc::syscall(libc::SYS_gettid) as u32) };
        let pthread_tid = abi::pthread_tid_offset(&ProcessMemory(std::process::id()), me, tid);
        PyTarget {
            layout,
            text: elf.text.0.wrapping_add(bias),
            runtime: elf.runtime.0.wrapping_add(bias),
            code_type: elf.code_type.0.wrapping_add(bias),
            pthread_tid,
        }
    }

    /// The load bias of `elf` (address in the process − address as linked), given where a
    /// file offset of its code is mapped.
    pub fn bias(elf: &PyElf, mapped: impl Fn(u64) -> Option<u64>) -> Option<u64> {
        Some(mapped(elf.text.1)?.wrapping_sub(elf.text.0))
    }

    /// Thread `tid`'s Python frames now, read from outside (as the watchdog reads them inside).
    pub fn stack(&self, pid: u32, tid: u32) -> Vec<[u64; 2]> {
        let mem = ProcessMemory(pid);
        let Some(ts) = abi::find_thread(&mem, self.layout, self.runtime, tid, self.pthread_tid) else {
            return Vec::new();
        };
        let mut words = vec![[0u64; 2]; PY_FRAMES];
        let n = abi::walk(&mem, self.layout, ts, &mut words);
        words.truncate(n);
        words
    }
}

/// Code objects named so far in one process.
#[derive(Debug, Default)]
pub struct Codes(HashMap<u64, Option<Arc<Code>>>);

impl Codes {
    /// The frames of `words` in process `pid` (innermost first), each with whether an
    /// interpreter call entered it; frames whose code cannot be read are left out.
    pub fn frames(&mut self, pid: u32, t: &PyTarget, words: &[[u64; 2]]) -> Vec<(Frame, bool)> {
        let mem = ProcessMemory(pid);
        let mut out = Vec::with_capacity(words.len());
        for &[addr, position] in words {
            let entry = position & ENTRY != 0;
            if self.0.len() >= MAX_CODES {
                self.0.clear();
            }
            let code =
                self.0.entry(addr).or_insert_with(|| Code::read(&mem, t.layout, t.code_type, addr).map(Arc::new));
            // A frame not begun yet (its first instructions set it up) is not the program's.
            match code.as_ref().and_then(|c| Some(frame_of(c, c.line_at(position & !ENTRY)?))) {
                Some(f) => out.push((f, entry)),
                // A frame left out still ends the group an interpreter call entered.
                None if entry => {
                    if let Some(last) = out.last_mut() {
                        last.1 = true;
                    }
                }
                None => {}
            }
        }
        out
    }
}

/// The frame of a code object running `exec_line`.
fn frame_of(code: &Code, exec_line: u32) -> Frame {
    Frame {
        name: code.name.clone(),
        kind: FrameKind::Python,
        module: None,
        file: Some(code.file.clone()),
        line: Some(code.first_line),
        col: None,
        tier: None,
        exec_line: Some(exec_line),
    }
}

/// One frame of a spliced stack: a native frame (its index in the native stack) or a Python
/// frame (its index among the Python frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spliced {
    /// The native stack's frame at this index.
    Native(usize),
    /// The Python frame at this index.
    Python(usize),
}

/// The stack with the Python frames where the interpreter ran them, innermost first: each
/// native [`EVAL_FRAME`] stands for the Python frames up to the next one an interpreter call
/// entered, and the interpreter's own native frames between them are dropped (as py-spy's
/// `--native` shows it). When the native stack does not have one interpreter frame per entered
/// group (a stack scan that found stale ones, a kernel sample without the interpreter's frames),
/// the Python frames go after the innermost native frames, up to the first interpreter frame.
pub fn splice(native: &[&Frame], python: &[(Frame, bool)]) -> Vec<Spliced> {
    let evals: Vec<usize> = (0..native.len()).filter(|&i| native[i].name == EVAL_FRAME).collect();
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for (i, (_, entry)) in python.iter().enumerate() {
        if *entry || i + 1 == python.len() {
            groups.push(start..i + 1);
            start = i + 1;
        }
    }
    let inner = evals.first().copied().unwrap_or(native.len());
    let mut out: Vec<Spliced> = (0..inner).map(Spliced::Native).collect();
    if evals.len() != groups.len() {
        out.extend((0..python.len()).map(Spliced::Python));
        return out;
    }
    let interpreter = native[inner].module.as_deref();
    for (k, (&e, g)) in evals.iter().zip(&groups).enumerate() {
        out.extend(g.clone().map(Spliced::Python));
        let next = evals.get(k + 1).copied().unwrap_or(native.len());
        // Between interpreter frames: C code of other modules (an extension calling back) stays.
        out.extend((e + 1..next).filter(|&i| native[i].module.as_deref() != interpreter).map(Spliced::Native));
    }
    out
}

/// Whether a Python file is the program's own: not the standard library, not an installed
/// package, not frozen or generated code.
pub fn is_user_file(file: &str) -> bool {
    !(file.is_empty()
        || file.starts_with('<')
        || file.contains("/site-packages/")
        || file.contains("/dist-packages/")
        || is_stdlib(file))
}

/// A file of the standard library: `…/lib/python3.X/…` (not in a package folder).
fn is_stdlib(file: &str) -> bool {
    file.split('/').any(|part| {
        part.strip_prefix("python3.").is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    }) && file.contains("/lib")
}

/// What a [`super::Symbolizer`] knows of one process's CPython.
#[derive(Debug, Default)]
pub struct PyProcess {
    /// Looked for at this generation of the process's mappings: found, or not there.
    target: Option<(u64, Option<PyTarget>)>,
    codes: Codes,
    /// A CPython whose layout looptop does not know: what to tell the user.
    pub(super) unknown: Option<String>,
}

impl super::Symbolizer {
    /// The Python frames of the words a sample of process `pid` carries, innermost first, each
    /// with whether an interpreter call entered it; empty when the process runs no CPython
    /// looptop can read.
    pub fn python_frames(&mut self, pid: u32, words: &[[u64; 2]]) -> Vec<(Frame, bool)> {
        let Some(p) = self.procs.get_mut(&pid) else { return Vec::new() };
        let Some(t) = locate(p) else { return Vec::new() };
        p.python.codes.frames(pid, &t, words)
    }

    /// Thread `tid` of process `pid`: its Python frames now, read from outside; empty when it
    /// runs no CPython looptop can read (or may not be read), or when the thread turned out to
    /// wait for events by the end of the read (its stall is over: the frames are not its).
    pub fn python_stack(&mut self, pid: u32, tid: u32) -> Vec<[u64; 2]> {
        let Some(p) = self.procs.get_mut(&pid) else { return Vec::new() };
        let words = locate(p).map(|t| t.stack(pid, tid)).unwrap_or_default();
        if words.is_empty() || crate::source::waits::in_wait_call(pid, tid) {
            return Vec::new();
        }
        words
    }

    /// Gets ready to name process `pid`'s Python frames before its first stall: locates its
    /// CPython and reads the interpreter's native symbols and the kernel's (a first read of
    /// either takes a while, and frames read from outside must be read while their stall runs).
    pub fn warm_python(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else { return };
        let Some(t) = locate(p) else { return };
        self.symbolize(pid, &[t.text]);
        self.kernel.warm();
    }
}

/// The process's CPython: looked for again only when its mappings changed since it was not found.
fn locate(p: &mut super::symbolizer::Process) -> Option<PyTarget> {
    use super::maps::Backing;
    use super::symbolizer::FileKey;
    if let Some((generation, t)) = p.python.target {
        if t.is_some() || generation == p.generation {
            return t;
        }
    }
    let mut found = None;
    for (key, elf) in &p.files {
        let (FileKey::Path(module), Some(elf)) = (key, elf) else { continue };
        if !may_hold_python(module) {
            continue;
        }
        let Some(py) = elf.python.get_or_init(|| PyElf::from_elf(&elf.path, module)) else { continue };
        let Some(layout) = py.minor.and_then(abi::layout) else {
            let version = py.minor.map_or("of an unknown version".to_string(), |m| format!("3.{m}"));
            p.python.unknown = Some(format!(
                "process {} runs CPython {version}, whose Python frames looptop cannot read (it reads \
                 3.10 to 3.13): its stacks name the interpreter's C functions only",
                p.pid
            ));
            continue;
        };
        let mapped = |off: u64| {
            p.maps
                .iter()
                .find(|m| {
                    matches!(&m.backing, Backing::File(f) if f == module)
                        && (m.offset..m.offset + (m.end - m.start)).contains(&off)
                })
                .map(|m| m.start + (off - m.offset))
        };
        if let Some(bias) = PyTarget::bias(py, mapped) {
            found = Some(PyTarget::new(layout, py, bias));
            break;
        }
    }
    p.python.target = Some((p.generation, found));
    found
}
