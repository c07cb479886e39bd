//! Source lines for frames: each file is read once and kept, within bounds.
//!
//! A frame's file is named by its process (its perf map, its DWARF), so it is read only as that
//! process's user could ([`Reader`]), only when it is a regular file, never blocking, and only up
//! to [`MAX_FILE`] bytes: a FIFO or `/dev/zero` named as a script shows no line and costs nothing.

use crate::safefs::{self, Expect, Reader};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Files larger than this are not read (generated bundles, minified code).
const MAX_FILE: u64 = 16 << 20;
/// Bytes of source kept at most; past it the cache starts over.
const MAX_TOTAL: usize = 64 << 20;
/// Characters of a line returned at most.
const MAX_LINE: usize = 160;

/// A file's text and where each of its lines starts.
type Text = (String, Vec<u32>);

/// Source files read so far (and those that could not be read), by who read them and where.
#[derive(Debug, Default)]
pub(crate) struct SourceCache {
    /// (reader, path opened) → its text and where each line starts; `None` when unreadable.
    files: HashMap<(Reader, PathBuf), Option<Text>>,
    total: usize,
}

impl SourceCache {
    /// Line `line` (1-based) of `file`, read as `reader` could (through `root`, the process's
    /// root folder, when it has another one), trimmed and cut to 160 characters; `None` for
    /// Node's built-in modules (`node:…`), unreadable, odd or large files and lines past the end.
    pub(crate) fn line(&mut self, reader: &Reader, root: Option<&Path>, file: &str, line: u32) -> Option<String> {
        if line == 0 {
            return None;
        }
        let (text, starts) = self.text(reader, root, file)?;
        let i = line as usize - 1;
        let start = *starts.get(i)? as usize;
        let end = starts.get(i + 1).map_or(text.len(), |&e| e as usize);
        Some(cut(text[start..end].trim()))
    }

    /// The 1-based line holding UTF-16 unit `offset` of the script `file` (V8 counts source
    /// positions in UTF-16 units; Node drops a leading byte order mark before compiling).
    pub(crate) fn line_of_offset(
        &mut self,
        reader: &Reader,
        root: Option<&Path>,
        file: &str,
        offset: u32,
    ) -> Option<u32> {
        let (text, starts) = self.text(reader, root, file)?;
        let body = text.as_str().strip_prefix('\u{feff}').unwrap_or(text);
        let skipped = text.len() - body.len();
        let (mut units, mut at) = (0u64, None);
        for (i, c) in body.char_indices() {
            if units >= offset as u64 {
                at = Some(i + skipped);
                break;
            }
            units += c.len_utf16() as u64;
        }
        let at = at?;
        Some(starts.partition_point(|&s| s as usize <= at) as u32)
    }

    /// The text of a script and where its lines start, read once.
    fn text(&mut self, reader: &Reader, root: Option<&Path>, file: &str) -> Option<&Text> {
        if file.starts_with("node:") || file.is_empty() {
            return None;
        }
        let path = super::v8name::script_path(file);
        let path = match root {
            Some(root) if path.starts_with('/') => root.join(path.trim_start_matches('/')),
            _ => PathBuf::from(path),
        };
        let key = (reader.clone(), path);
        if !self.files.contains_key(&key) {
            let read = read(reader, &key.1);
            self.total += read.as_ref().map_or(0, |(t, s)| t.len() + s.len() * 4);
            if self.total > MAX_TOTAL {
                self.files.clear();
                self.total = read.as_ref().map_or(0, |(t, s)| t.len() + s.len() * 4);
            }
            self.files.insert(key.clone(), read);
        }
        self.files.get(&key)?.as_ref()
    }
}

/// The text of `path` and where its lines start, read as `reader` could.
fn read(reader: &Reader, path: &Path) -> Option<Text> {
    let file = reader.open(path, Expect::read(MAX_FILE)).ok()?;
    let bytes = safefs::read_bounded(&file, MAX_FILE).ok()??;
    let text = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let mut starts = vec![0u32];
    starts.extend(text.match_indices('\n').map(|(i, _)| i as u32 + 1));
    Some((text, starts))
}

/// `s` cut to [`MAX_LINE`] characters, the last one an ellipsis when cut.
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_LINE) {
        None => s.to_string(),
        Some(_) => {
            let (end, _) = s.char_indices().nth(MAX_LINE - 1).unwrap_or((s.len(), ' '));
            format!("{}…", &s[..end])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_trimmed_and_cut() {
        let dir = std::env::temp_dir().join(format!("looptop-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a b.js");
        let long = format!("  const s = '{}';", "é".repeat(300));
        std::fs::write(&path, format!("function f() {{\r\n    if (/^([a-z0-9]+)+@/.test(s)) {{\n{long}\n\nlast"))
            .unwrap();
        let p = path.to_str().unwrap();
        let mut c = SourceCache::default();
        let me = &Reader::Me;
        assert_eq!(c.line(me, None, p, 1).as_deref(), Some("function f() {"));
        assert_eq!(c.line(me, None, p, 2).as_deref(), Some("if (/^([a-z0-9]+)+@/.test(s)) {"));
        let l3 = c.line(me, None, p, 3).unwrap();
        assert_eq!(l3.chars().count(), 160);
        assert!(l3.starts_with("const s = 'éé") && l3.ends_with("é…"));
        assert_eq!(c.line(me, None, p, 4).as_deref(), Some(""));
        assert_eq!(c.line(me, None, p, 5).as_deref(), Some("last"));
        assert_eq!(c.line(me, None, p, 6), None);
        assert_eq!(c.line(me, None, p, 0), None);
        // A file URL, percent-encoded.
        let url = format!("file://{}", p.replace(' ', "%20"));
        assert_eq!(c.line(me, None, &url, 1).as_deref(), Some("function f() {"));
        // Read once: later changes are not seen.
        std::fs::write(&path, "changed\n").unwrap();
        assert_eq!(c.line(me, None, p, 1).as_deref(), Some("function f() {"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn script_offsets_count_utf16_units_after_a_byte_order_mark() {
        let dir = std::env::temp_dir().join(format!("looptop-offsets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.js");
        // '𝄞' is two UTF-16 units (four UTF-8 bytes), 'é' one (two bytes).
        std::fs::write(&path, "\u{feff}const a = '𝄞é';\nf();\n  g();\n").unwrap();
        let p = path.to_str().unwrap();
        let mut c = SourceCache::default();
        let me = &Reader::Me;
        let line = |c: &mut SourceCache, o| c.line_of_offset(me, None, p, o);
        assert_eq!(line(&mut c, 0), Some(1));
        assert_eq!(line(&mut c, 16), Some(1), "the newline after `'𝄞é';` (2 + 1 units)");
        assert_eq!(line(&mut c, 17), Some(2));
        assert_eq!(line(&mut c, 21), Some(2), "the newline after `f();`");
        assert_eq!(line(&mut c, 22), Some(3));
        assert_eq!(line(&mut c, 200), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn internal_missing_and_odd_files() {
        let mut c = SourceCache::default();
        let me = &Reader::Me;
        assert_eq!(c.line(me, None, "node:internal/timers", 1), None);
        assert_eq!(c.line(me, None, "/nonexistent/x.js", 1), None);
        assert_eq!(c.line(me, None, "", 1), None);
        assert_eq!(c.line(me, None, "/", 1), None, "a directory");
        assert_eq!(c.line(me, None, "/proc/self/status", 1).map(|l| l.starts_with("Name:")), Some(true));
        // Devices and FIFOs named as scripts: no line, no wait, nothing read.
        assert_eq!(c.line(me, None, "/dev/zero", 1), None);
        assert_eq!(c.line(me, None, "/dev/null", 1), None);
        let dir = std::env::temp_dir().join(format!("looptop-source-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.js");
        let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o644) }, 0);
        assert_eq!(c.line(me, None, fifo.to_str().unwrap(), 1), None);
        // A link to a readable file: not followed.
        std::fs::write(dir.join("real.js"), "real\n").unwrap();
        std::os::unix::fs::symlink(dir.join("real.js"), dir.join("link.js")).unwrap();
        assert_eq!(c.line(me, None, dir.join("link.js").to_str().unwrap(), 1), None);
        // Through a process's root.
        assert_eq!(
            c.line(me, Some(Path::new("/proc/self/root")), dir.join("real.js").to_str().unwrap(), 1).as_deref(),
            Some("real")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_users_source_is_read_as_that_user() {
        use std::os::unix::fs::PermissionsExt;
        if safefs::euid() != 0 {
            println!("SKIP: another_users_source_is_read_as_that_user: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("looptop-source-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.join("secret.js");
        std::fs::write(&secret, "SECRET\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = secret.to_str().unwrap();
        let user = Reader::User(safefs::Creds { uid: 65534, gid: 65534, groups: vec![] });
        let mut c = SourceCache::default();
        assert_eq!(c.line(&user, None, p, 1), None);
        // Root's own process: its file; and the user's refusal was not cached for root.
        assert_eq!(c.line(&Reader::Me, None, p, 1).as_deref(), Some("SECRET"));
        assert_eq!(c.line(&user, None, p, 1), None, "nor root's reading for the user");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
