//! Native frames: file offsets in ELF files symbolized with blazesym, names demangled here.
//!
//! Addresses are turned into file offsets through the process's mappings before they get here,
//! so an ELF file symbolizes the same whether it is a PIE, a non-PIE executable or a shared
//! library, and whether or not its process still runs.

use super::frame::{Frame, FrameKind};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Sym, Symbolized, Symbolizer};
use std::ops::Range;
use std::path::Path;

/// blazesym, set up for ELF files.
pub(crate) struct Native {
    blaze: Symbolizer,
    /// Ask DWARF for names and `file:line`; without it only the ELF symbol tables are read.
    lines: bool,
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native").field("lines", &self.lines).finish_non_exhaustive()
    }
}

impl Native {
    /// A symbolizer that reads DWARF line tables when `lines` is set.
    pub(crate) fn new(lines: bool) -> Self {
        let blaze = Symbolizer::builder().enable_code_info(true).enable_inlined_fns(false).build();
        Native { blaze, lines }
    }

    /// Frames for `offsets` in the ELF file at `path` (`module` is the path the process knew it
    /// by); `None` where no symbol covers an offset. An unreadable file names nothing. DWARF is
    /// read only when `lines` is set too: it names further files (debug links) that blazesym
    /// would open by name. Each frame comes with the file offsets its whole symbol covers when
    /// the frame holds for all of them (a name without a line).
    pub(crate) fn symbolize(
        &self,
        path: &Path,
        module: &str,
        offsets: &[u64],
        lines: bool,
    ) -> Vec<Option<(Frame, Option<Range<u64>>)>> {
        let mut elf = Elf::new(path);
        elf.debug_syms = self.lines && lines;
        match self.blaze.symbolize(&Source::Elf(elf), Input::FileOffset(offsets)) {
            Ok(syms) => syms
                .into_iter()
                .zip(offsets)
                .map(|(s, &at)| match s {
                    Symbolized::Sym(sym) => {
                        let f = frame(&sym, module);
                        let whole = f.line.is_none() && f.file.is_none();
                        let start = at.checked_sub(sym.offset as u64);
                        let range = match (whole, start, sym.size) {
                            (true, Some(start), Some(size)) if size > 0 => Some(start..start + size as u64),
                            _ => None,
                        };
                        Some((f, range))
                    }
                    Symbolized::Unknown(_) => None,
                })
                .collect(),
            Err(_) => vec![None; offsets.len()],
        }
    }
}

/// Functions of one ELF file already named, by the file offsets they cover: an address in a
/// known function is named without asking blazesym (a Node server's samples land on thousands
/// of distinct return addresses in the few hundred V8 functions they run).
#[derive(Debug, Default)]
pub(crate) struct Ranges(std::collections::BTreeMap<u64, (u64, Frame)>);

impl Ranges {
    /// The frame of the function covering `offset`, named for `module`.
    pub(crate) fn get(&self, offset: u64, module: &str) -> Option<Frame> {
        let (_, (end, f)) = self.0.range(..=offset).next_back()?;
        (offset < *end).then(|| Frame { module: Some(module.to_string()), ..f.clone() })
    }

    /// Remembers that `frame` names all of `range`.
    pub(crate) fn insert(&mut self, range: Range<u64>, frame: &Frame) {
        self.0.insert(range.start, (range.end, frame.clone()));
    }
}

fn frame(sym: &Sym<'_>, module: &str) -> Frame {
    let (mut file, mut line, mut col) = (None, None, None);
    if let Some(ci) = &sym.code_info {
        file = Some(tidy_path(&ci.to_path()));
        line = ci.line.filter(|&l| l > 0);
        col = ci.column.filter(|&c| c > 0).map(u32::from);
    }
    Frame {
        name: demangle(&sym.name),
        kind: FrameKind::Native,
        module: Some(module.to_string()),
        file,
        line,
        col,
        tier: None,
        exec_line: None,
    }
}

/// `path` without `.` and `..` components (`/build/out/../deps/uv/core.c` → `/build/deps/uv/core.c`),
/// as compilers record paths the way the build spelled them.
fn tidy_path(path: &Path) -> String {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.to_string_lossy().into_owned()
}

/// A readable name: Rust symbols without their hash, C++ symbols without parameters or return
/// type (`v8::internal::JsonParser<unsigned char>::ParseJson`), anything else as it is.
pub(crate) fn demangle(name: &str) -> String {
    let rust = rustc_demangle::try_demangle(name).ok();
    if let Some(r) = &rust {
        // Rust's legacy mangling is C++'s `_ZN…E` plus a hash; v0 starts with `_R`.
        if name.starts_with("_R") || format!("{r}") != format!("{r:#}") {
            return format!("{r:#}");
        }
    }
    if name.starts_with("_Z") {
        let opts = cpp_demangle::DemangleOptions::new().no_params().no_return_type();
        if let Some(s) = cpp_demangle::Symbol::new(name).ok().and_then(|s| s.demangle_with_options(&opts).ok()) {
            return s;
        }
    }
    match rust {
        Some(r) => format!("{r:#}"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_named_once_names_every_address_in_it() {
        let f = Frame { name: "v8::internal::Run".into(), module: Some("/a/node".into()), ..Frame::unknown(None) };
        let mut r = Ranges::default();
        r.insert(0x1000..0x1080, &f);
        assert_eq!(
            r.get(0x1000, "/b/node").map(|f| (f.name, f.module)),
            Some((f.name.clone(), Some("/b/node".into())))
        );
        assert!(r.get(0x107f, "/a/node").is_some());
        assert!(r.get(0x1080, "/a/node").is_none());
        assert!(r.get(0xfff, "/a/node").is_none());
    }

    #[test]
    fn tidies_paths() {
        assert_eq!(tidy_path(Path::new("/home/b/out/../deps/uv/./core.c")), "/home/b/deps/uv/core.c");
        assert_eq!(tidy_path(Path::new("../../src/a.cc")), "../../src/a.cc");
        assert_eq!(tidy_path(Path::new("/../a.c")), "/../a.c");
        assert_eq!(tidy_path(Path::new("src/x/../y.rs")), "src/y.rs");
    }

    #[test]
    fn demangles_cpp_and_rust() {
        assert_eq!(
            demangle("_ZN2v88internal10JsonParserIhE9ParseJsonENS0_6HandleINS0_6ObjectEEE"),
            "v8::internal::JsonParser<unsigned char>::ParseJson"
        );
        assert_eq!(demangle("_ZN2v88internal4Heap14CollectGarbageEv"), "v8::internal::Heap::CollectGarbage");
        assert_eq!(demangle("_ZN4node2fsL4ReadERKN2v820FunctionCallbackInfoINS1_5ValueEEE"), "node::fs::Read");
        assert_eq!(
            demangle("_ZN7looptop9symbolize6native8demangle17h0123456789abcdefE"),
            "looptop::symbolize::native::demangle"
        );
        assert_eq!(demangle("_RNvCs1234_7looptop4main"), "looptop::main");
        assert_eq!(demangle("Builtins_JsonParse"), "Builtins_JsonParse");
        assert_eq!(demangle("getpid"), "getpid");
        assert_eq!(demangle("_Znot valid"), "_Znot valid");
        assert_eq!(demangle(""), "");
    }
}
