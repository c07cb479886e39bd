//! Sinks: each renders what the analysis made (a report, a flamegraph profile, a recording);
//! none reads `/proc` or a segment.

pub mod check;
pub mod flame;
pub mod json;
pub mod output;
pub mod record;
pub mod report_out;
pub mod summary;
pub mod tui;

/// Whether the stream is a terminal.
pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty has no preconditions.
    unsafe { libc::isatty(fd) == 1 }
}

/// Whether the locale says UTF-8 (the first of `LC_ALL`, `LC_CTYPE`, `LANG` that is set and not
/// empty), so glyphs like ✓ and ⚠ can be drawn; ASCII otherwise.
pub fn utf8_locale() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .is_some_and(|l| l.to_ascii_uppercase().replace('-', "").contains("UTF8"))
}
