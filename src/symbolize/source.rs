//! Source lines for frames: each file is read once and kept, within bounds.

use std::collections::HashMap;

/// Files larger than this are not read (generated bundles, minified code).
const MAX_FILE: u64 = 16 << 20;
/// Bytes of source kept at most; past it the cache starts over.
const MAX_TOTAL: usize = 64 << 20;
/// Characters of a line returned at most.
const MAX_LINE: usize = 160;

/// Source files read so far (and those that could not be read).
#[derive(Debug, Default)]
pub(crate) struct SourceCache {
    /// File → its text and where each line starts; `None` when unreadable.
    files: HashMap<String, Option<(String, Vec<u32>)>>,
    total: usize,
}

impl SourceCache {
    /// Line `line` (1-based) of `file`, trimmed and cut to 160 characters; `None` for Node's
    /// built-in modules (`node:…`), unreadable or large files and lines past the end.
    pub(crate) fn line(&mut self, file: &str, line: u32) -> Option<String> {
        if line == 0 || file.starts_with("node:") || file.is_empty() {
            return None;
        }
        if !self.files.contains_key(file) {
            let read = read(file);
            self.total += read.as_ref().map_or(0, |(t, s)| t.len() + s.len() * 4);
            if self.total > MAX_TOTAL {
                self.files.clear();
                self.total = read.as_ref().map_or(0, |(t, s)| t.len() + s.len() * 4);
            }
            self.files.insert(file.to_string(), read);
        }
        let (text, starts) = self.files.get(file)?.as_ref()?;
        let i = line as usize - 1;
        let start = *starts.get(i)? as usize;
        let end = starts.get(i + 1).map_or(text.len(), |&e| e as usize);
        Some(cut(text[start..end].trim()))
    }
}

/// The text of `file` and where its lines start.
fn read(file: &str) -> Option<(String, Vec<u32>)> {
    let path = super::v8name::script_path(file);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
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
        assert_eq!(c.line(p, 1).as_deref(), Some("function f() {"));
        assert_eq!(c.line(p, 2).as_deref(), Some("if (/^([a-z0-9]+)+@/.test(s)) {"));
        let l3 = c.line(p, 3).unwrap();
        assert_eq!(l3.chars().count(), 160);
        assert!(l3.starts_with("const s = 'éé") && l3.ends_with("é…"));
        assert_eq!(c.line(p, 4).as_deref(), Some(""));
        assert_eq!(c.line(p, 5).as_deref(), Some("last"));
        assert_eq!(c.line(p, 6), None);
        assert_eq!(c.line(p, 0), None);
        // A file URL, percent-encoded.
        let url = format!("file://{}", p.replace(' ', "%20"));
        assert_eq!(c.line(&url, 1).as_deref(), Some("function f() {"));
        // Read once: later changes are not seen.
        std::fs::write(&path, "changed\n").unwrap();
        assert_eq!(c.line(p, 1).as_deref(), Some("function f() {"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn internal_missing_and_odd_files() {
        let mut c = SourceCache::default();
        assert_eq!(c.line("node:internal/timers", 1), None);
        assert_eq!(c.line("/nonexistent/x.js", 1), None);
        assert_eq!(c.line("", 1), None);
        assert_eq!(c.line("/", 1), None, "a directory");
        assert_eq!(c.line("/proc/self/status", 1).map(|l| l.starts_with("Name:")), Some(true));
    }
}
