//! Names of perf-map entries, parsed into frames.
//!
//! V8 writes `TAG:NAME` (`Builtin:JsonParse`, `RegExp:^([a-z0-9]+)+@`, `BytecodeHandler:Ldar`) and,
//! for JavaScript, `TAG:MARKER FUNCTION SCRIPT:LINE:COL` where the marker is the tier
//! (`JS:~validateEmail /tmp/re.js:1:23`). Function names and script paths may both contain spaces,
//! and paths may contain colons, so the location is taken from the right and the split between
//! name and script is chosen where a script usually starts (`/`, `node:`, `file:` …).
//! CPython's perf trampoline (3.12+) writes `py::QUALNAME:FILE`.

use super::frame::{Frame, FrameKind, JsTier};

/// Tags V8 gives JavaScript code (current and older versions).
const JS_TAGS: &[&str] = &[
    "JS",
    "Function",
    "LazyCompile",
    "Eval",
    "Script",
    "InterpretedFunction",
    "NativeFunction",
    "NativeLazyCompile",
    "NativeScript",
];

/// What a script name usually starts with, after the space that ends the function name.
const SCRIPT_STARTS: &[&str] = &[
    "/",
    "node:",
    "file:",
    "http:",
    "https:",
    "data:",
    "webpack:",
    "evalmachine.",
    "[eval",
    "[worker eval",
    "symbol(",
    "./",
    "../",
];

/// The frame a perf-map entry named `name` stands for; `module` is the perf map's path.
pub(crate) fn parse(name: &str, module: Option<&str>) -> Frame {
    let module = module.map(str::to_string);
    if let Some(rest) = name.strip_prefix("py::") {
        return python(rest, module);
    }
    let Some((tag, rest)) = name.split_once(':') else {
        return other(name, module);
    };
    if JS_TAGS.contains(&tag) {
        js(rest, module)
    } else {
        other(name, module)
    }
}

/// V8 code that is not JavaScript, or a name from another JIT: kept as written.
fn other(name: &str, module: Option<String>) -> Frame {
    Frame {
        name: if name.is_empty() { "[unknown]".into() } else { name.to_string() },
        kind: FrameKind::V8Code,
        module,
        file: None,
        line: None,
        col: None,
        tier: None,
        exec_line: None,
    }
}

/// `QUALNAME:FILE` (a qualified name has no colon; the file may).
fn python(rest: &str, module: Option<String>) -> Frame {
    let (name, file) = match rest.split_once(':') {
        Some((n, f)) => (n, (!f.is_empty()).then(|| f.to_string())),
        None => (rest, None),
    };
    Frame {
        name: if name.is_empty() { "(anonymous)".into() } else { name.to_string() },
        kind: FrameKind::Python,
        module,
        file,
        line: None,
        col: None,
        tier: None,
        exec_line: None,
    }
}

/// `MARKER FUNCTION SCRIPT:LINE:COL`, `MARKER SCRIPT`, `MARKER FUNCTION`.
fn js(rest: &str, module: Option<String>) -> Frame {
    let (tier, rest) = match rest.as_bytes().first() {
        Some(b'~') => (Some(JsTier::Interpreted), &rest[1..]),
        Some(b'^') => (Some(JsTier::Baseline), &rest[1..]),
        Some(b'+') => (Some(JsTier::Maglev), &rest[1..]),
        Some(b'*') => (Some(JsTier::Optimized), &rest[1..]),
        _ => (None, rest),
    };
    let (mut name, location) = split_name(rest);
    let (mut file, line, col) = match location {
        Some(loc) => split_location(loc),
        None => (None, None, None),
    };
    // `Function:~ foo` (older V8, no script): what follows the space is the function's name.
    if name.is_empty() && line.is_none() {
        if let Some(f) = file.filter(|f| !looks_like_script(f)) {
            name = f;
            file = None;
        }
    }
    Frame {
        name: if name.is_empty() { "(anonymous)".into() } else { name.to_string() },
        kind: FrameKind::Js,
        module,
        file: file.map(script_path),
        line,
        col,
        tier,
        exec_line: None,
    }
}

/// Splits `FUNCTION SCRIPT…` into the function name and the location, if any.
fn split_name(s: &str) -> (&str, Option<&str>) {
    if let Some(loc) = s.strip_prefix(' ') {
        return ("", Some(loc));
    }
    let at = s.match_indices(' ').map(|(i, _)| i).find(|&i| looks_like_script(&s[i + 1..])).or_else(|| s.rfind(' '));
    match at {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Whether `s` starts like a script name (or an empty one followed by `:LINE`).
fn looks_like_script(s: &str) -> bool {
    SCRIPT_STARTS.iter().any(|p| s.starts_with(p)) || s.starts_with(':')
}

/// `SCRIPT:LINE:COL`, `SCRIPT:LINE` or `SCRIPT`, read from the right.
fn split_location(loc: &str) -> (Option<&str>, Option<u32>, Option<u32>) {
    let (file, n1) = strip_number(loc);
    let Some(n1) = n1 else {
        return (non_empty(loc), None, None);
    };
    let (file2, n2) = strip_number(file);
    match n2 {
        Some(n2) => (non_empty(file2), Some(n2), Some(n1)),
        None => (non_empty(file), Some(n1), None),
    }
}

/// `(rest, Some(n))` when `s` ends in `:n`.
fn strip_number(s: &str) -> (&str, Option<u32>) {
    let Some((head, tail)) = s.rsplit_once(':') else {
        return (s, None);
    };
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return (s, None);
    }
    match tail.parse() {
        Ok(n) => (head, Some(n)),
        Err(_) => (s, None),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A script name as a path where it is one: `file:///x/a%20b.mjs` → `/x/a b.mjs`.
pub(crate) fn script_path(s: &str) -> String {
    match s.strip_prefix("file://") {
        Some(rest) => percent_decode(rest),
        None => s.to_string(),
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js_frame(name: &str, file: Option<&str>, line: Option<u32>, col: Option<u32>, tier: Option<JsTier>) -> Frame {
        Frame {
            name: name.into(),
            kind: FrameKind::Js,
            module: Some("/tmp/perf-1.map".into()),
            file: file.map(str::to_string),
            line,
            col,
            tier,
            exec_line: None,
        }
    }

    fn p(name: &str) -> Frame {
        parse(name, Some("/tmp/perf-1.map"))
    }

    #[test]
    fn js_tiers() {
        use JsTier::*;
        assert_eq!(
            p("JS:~validateEmail /tmp/re.js:1:23"),
            js_frame("validateEmail", Some("/tmp/re.js"), Some(1), Some(23), Some(Interpreted))
        );
        assert_eq!(
            p("JS:^handler /srv/app.js:2:17"),
            js_frame("handler", Some("/srv/app.js"), Some(2), Some(17), Some(Baseline))
        );
        assert_eq!(
            p("JS:+foo file:///x/app.mjs:3:1"),
            js_frame("foo", Some("/x/app.mjs"), Some(3), Some(1), Some(Maglev))
        );
        assert_eq!(
            p("JS:*parse node:internal/foo:10:3"),
            js_frame("parse", Some("node:internal/foo"), Some(10), Some(3), Some(Optimized))
        );
        // No marker: optimization disabled for this function.
        assert_eq!(p("JS:foo /a.js:1:2"), js_frame("foo", Some("/a.js"), Some(1), Some(2), None));
    }

    #[test]
    fn anonymous_functions_and_scripts() {
        use JsTier::*;
        assert_eq!(
            p("JS:~ /tmp/re.js:3:12"),
            js_frame("(anonymous)", Some("/tmp/re.js"), Some(3), Some(12), Some(Interpreted))
        );
        assert_eq!(p("Script:~ /x.js"), js_frame("(anonymous)", Some("/x.js"), None, None, Some(Interpreted)));
        assert_eq!(
            p("Eval:~ node:internal/main/run_main_module:1:1"),
            js_frame("(anonymous)", Some("node:internal/main/run_main_module"), Some(1), Some(1), Some(Interpreted))
        );
        assert_eq!(p("JS:~ :1:1"), js_frame("(anonymous)", None, Some(1), Some(1), Some(Interpreted)));
    }

    #[test]
    fn older_v8_tags() {
        use JsTier::*;
        assert_eq!(
            p("LazyCompile:~foo /x.js:1:2"),
            js_frame("foo", Some("/x.js"), Some(1), Some(2), Some(Interpreted))
        );
        assert_eq!(p("LazyCompile:*foo /x.js:12"), js_frame("foo", Some("/x.js"), Some(12), None, Some(Optimized)));
        assert_eq!(p("Function:~foo /x.js:1:2"), js_frame("foo", Some("/x.js"), Some(1), Some(2), Some(Interpreted)));
        assert_eq!(p("Function:~ foo"), js_frame("foo", None, None, None, Some(Interpreted)));
        assert_eq!(p("InterpretedFunction:bar /y.js:4:5"), js_frame("bar", Some("/y.js"), Some(4), Some(5), None));
    }

    #[test]
    fn spaces_and_colons() {
        use JsTier::*;
        // Names with spaces (getters, bound functions).
        assert_eq!(
            p("JS:~get size /srv/app.js:7:9"),
            js_frame("get size", Some("/srv/app.js"), Some(7), Some(9), Some(Interpreted))
        );
        assert_eq!(
            p("JS:*bound fn node:events:3:1"),
            js_frame("bound fn", Some("node:events"), Some(3), Some(1), Some(Optimized))
        );
        // Paths with spaces and colons.
        assert_eq!(
            p("JS:~handler /srv/my app/v1:2/app.js:2:17"),
            js_frame("handler", Some("/srv/my app/v1:2/app.js"), Some(2), Some(17), Some(Interpreted))
        );
        assert_eq!(
            p("JS:^get x /srv/a b/c.js:1:1"),
            js_frame("get x", Some("/srv/a b/c.js"), Some(1), Some(1), Some(Baseline))
        );
        assert_eq!(
            p("JS:+f file:///srv/a%20b/c%3A.mjs:5:6"),
            js_frame("f", Some("/srv/a b/c:.mjs"), Some(5), Some(6), Some(Maglev))
        );
        // A relative script name (no known start): the last space splits.
        assert_eq!(p("JS:~get y app.js:1:2"), js_frame("get y", Some("app.js"), Some(1), Some(2), Some(Interpreted)));
        // Other URLs stay URLs.
        assert_eq!(
            p("JS:*f https://x.test/a.js:1:2"),
            js_frame("f", Some("https://x.test/a.js"), Some(1), Some(2), Some(Optimized))
        );
        assert_eq!(p("JS:~f [eval]:1:1"), js_frame("f", Some("[eval]"), Some(1), Some(1), Some(Interpreted)));
        assert_eq!(
            p("JS:~[Symbol.iterator] node:internal/x:1:1"),
            js_frame("[Symbol.iterator]", Some("node:internal/x"), Some(1), Some(1), Some(Interpreted))
        );
        assert_eq!(
            p("JS:~f symbol(hash 1a2b):3:4"),
            js_frame("f", Some("symbol(hash 1a2b)"), Some(3), Some(4), Some(Interpreted))
        );
        assert_eq!(
            p("JS:~get <instance_members_initializer> /c.js:1:2"),
            js_frame("get <instance_members_initializer>", Some("/c.js"), Some(1), Some(2), Some(Interpreted))
        );
        assert_eq!(p("JS:~justname"), js_frame("justname", None, None, None, Some(Interpreted)));
        assert_eq!(p("JS:"), js_frame("(anonymous)", None, None, None, None));
    }

    #[test]
    fn other_v8_code_is_kept_as_written() {
        for name in [
            "RegExp:^([a-z0-9]+)+@",
            "Builtin:JsonParse",
            "Builtin:RegExpPrototypeTest",
            "BytecodeHandler:Ldar",
            "Stub:CEntry_Return1_ArgvOnStack_NoBuiltinExit",
            "Handler:foo",
            "Callback:get length",
            "something else: entirely",
        ] {
            let f = p(name);
            assert_eq!(f.name, name);
            assert_eq!(f.kind, FrameKind::V8Code);
            assert_eq!((f.file, f.line, f.tier), (None, None, None));
            assert_eq!(f.module.as_deref(), Some("/tmp/perf-1.map"));
        }
        assert_eq!(p("").name, "[unknown]");
    }

    #[test]
    fn python_trampoline() {
        let f = p("py::Handler.do_GET:/srv/my app/server.py");
        assert_eq!(f.kind, FrameKind::Python);
        assert_eq!(f.name, "Handler.do_GET");
        assert_eq!(f.file.as_deref(), Some("/srv/my app/server.py"));
        assert_eq!(p("py::<module>:").file, None);
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("/a%2"), "/a%2");
        assert_eq!(percent_decode("/a%zz%41"), "/a%zzA");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("/%C3%A9t%C3%A9"), "/été");
        assert_eq!(percent_decode("/%FF"), "/\u{fffd}");
    }
}
