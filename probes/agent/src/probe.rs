//! Arranges the runtime probe, so that preloading the agent alone is enough: in a Node process
//! it appends `--require <probe>` to `NODE_OPTIONS`; in a Python process it puts the folder with
//! looptop's `sitecustomize` first on `PYTHONPATH` (which then loads the user's own). Runs in the
//! constructor, before the runtime reads its environment. The probe files sit next to the agent
//! library (`looptop agent path` writes them): `<agent>.node.js` and the folder `<agent>.python`.
//! `LOOPTOP_PROBE=0` turns this off; a missing probe file means no probe.
//!
//! For Node it also adds `--perf-basic-prof --interpreted-frames-native-stack`, so that V8 writes
//! `/tmp/perf-<pid>.map` (JS function names for stacks) and interpreted JS functions keep a frame
//! of their own on the native stack — once the map's file is made safe ([`crate::perfmap`]), and
//! with V8's files kept from the program's way ([`crate::v8files`]); `LOOPTOP_PERF_MAP=0` leaves
//! them out.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// The agent library's own path.
fn agent_path() -> Option<PathBuf> {
    // SAFETY: dladdr fills `info` for an address inside this library; dli_fname stays valid
    // while the library is loaded.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(arrange as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(PathBuf::from(OsStr::from_bytes(CStr::from_ptr(info.dli_fname).to_bytes())))
    }
}

/// Adds the probe for the runtime this process runs, if any.
pub(crate) fn arrange() {
    if std::env::var_os(looptop_abi::ENV_PROBE).is_some_and(|v| v == "0") {
        return;
    }
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else { return };
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some(agent) = agent_path() else { return };
    let stem = agent.with_extension("");
    if name.starts_with("node") {
        if std::env::var_os("LOOPTOP_PERF_MAP").is_none_or(|v| v != "0") {
            // Flags an agent added in a parent process are inherited through NODE_OPTIONS, with
            // the marker it set: they are ours here too, not the user's.
            let inherited = std::env::var_os(V8_MARKER).is_some_and(|v| v == "1");
            let had = !inherited
                && std::env::var_os("NODE_OPTIONS").is_some_and(|v| {
                    let v = v.to_string_lossy();
                    v.contains("--perf-basic-prof") || v.contains("--perf-prof")
                });
            if !had {
                // The map's name is V8's, in /tmp: made safe first, or no map (see perfmap.rs).
                if crate::perfmap::prepare() {
                    for flag in PERF_FLAGS {
                        add_to_env("NODE_OPTIONS", OsStr::new(" "), flag.as_bytes(), false);
                    }
                    set_env(V8_MARKER, b"1");
                    if !logs_of_its_own() {
                        crate::v8files::set_ours();
                    }
                } else {
                    for flag in PERF_FLAGS {
                        remove_from_env("NODE_OPTIONS", flag.as_bytes());
                    }
                }
            }
        }
        let probe = stem.with_extension("node.js");
        let p = probe.as_os_str().as_bytes();
        // NODE_OPTIONS splits on spaces; a path that would need quoting is left alone.
        if probe.is_file() && !p.iter().any(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'\\') {
            add_to_env("NODE_OPTIONS", OsStr::new(" "), &[b"--require ".as_slice(), p].concat(), false);
        }
    } else if name.starts_with("python") {
        let dir = stem.with_extension("python");
        if dir.join("sitecustomize.py").is_file() {
            add_to_env("PYTHONPATH", OsStr::new(":"), dir.as_os_str().as_bytes(), true);
        }
    }
}

/// Marks NODE_OPTIONS's perf flags as the agent's (inherited by child processes).
const V8_MARKER: &str = "LOOPTOP_V8_LOG_UNWANTED";
/// The flags the agent adds for V8's perf map.
const PERF_FLAGS: [&str; 2] = ["--perf-basic-prof", "--interpreted-frames-native-stack"];

/// Whether the command line asks V8 for a log of its own (`--log…`, `--prof…`, `--logfile`).
fn logs_of_its_own() -> bool {
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else { return false };
    cmdline.split(|&b| b == 0).any(|a| a.starts_with(b"--log") || a.starts_with(b"--prof"))
}

/// Removes every space-separated `item` from a list variable.
fn remove_from_env(var: &str, item: &[u8]) {
    let Some(old) = std::env::var_os(var) else { return };
    let kept: Vec<&[u8]> = old.as_bytes().split(|&b| b == b' ').filter(|w| !w.is_empty() && *w != item).collect();
    if kept.len() != old.as_bytes().split(|&b| b == b' ').filter(|w| !w.is_empty()).count() {
        set_env(var, &kept.join(&b' '));
    }
}

/// Adds `item` to a list variable (first or last), once.
fn add_to_env(var: &str, sep: &OsStr, item: &[u8], first: bool) {
    let old = std::env::var_os(var).unwrap_or_default();
    if old.as_bytes().windows(item.len()).any(|w| w == item) {
        return;
    }
    let mut v = OsString::new();
    let item = OsStr::from_bytes(item);
    match (old.is_empty(), first) {
        (true, _) => v.push(item),
        (false, true) => {
            v.push(item);
            v.push(sep);
            v.push(&old);
        }
        (false, false) => {
            v.push(&old);
            v.push(sep);
            v.push(item);
        }
    }
    set_env(var, &v.into_vec());
}

/// Sets an environment variable (from the constructor, before the program starts threads).
fn set_env(var: &str, value: &[u8]) {
    let (Ok(k), Ok(val)) = (CString::new(var), CString::new(value)) else { return };
    // SAFETY: the constructor runs before the program starts threads; setenv copies both strings.
    unsafe { libc::setenv(k.as_ptr(), val.as_ptr(), 1) };
}
