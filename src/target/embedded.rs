//! Files embedded in this executable (the agent library, the demo server), written on first use
//! to a private cache folder under content-addressed names (so upgrades never mix versions).

use crate::error::UserError;
use std::fs::{self, DirBuilder, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The agent built for this looptop (see build.rs).
static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/liblooptop_agent.so"));

/// The Node probe, written next to the agent as `<agent>.node.js`.
static NODE_PROBE: &[u8] = include_bytes!("../../probes/node/probe.js");
/// The Python probe, written next to the agent in the folder `<agent>.python`.
static PYTHON_PROBE: [(&str, &[u8]); 2] = [
    ("sitecustomize.py", include_bytes!("../../probes/python/sitecustomize.py")),
    ("looptop_probe.py", include_bytes!("../../probes/python/looptop_probe.py")),
];

/// The `looptop demo` server.
static DEMO_SERVER: &[u8] = include_bytes!("../../fixtures/demo/server.js");

/// Environment variable that overrides the agent's path.
pub const ENV_AGENT: &str = "LOOPTOP_AGENT";

/// FNV-1a, 64 bits: enough to name a file by its content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The agent library's path, writing it out if needed. `LOOPTOP_AGENT` wins when set.
pub fn agent_path() -> Result<PathBuf, UserError> {
    if let Some(p) = std::env::var_os(ENV_AGENT).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(UserError::usage(format!("{ENV_AGENT} names '{}', which is not a file", p.display()))
                .hint(format!("unset {ENV_AGENT} to use the agent built into looptop")));
        }
        return Ok(p);
    }
    let agent = cached_as("liblooptop_agent", "so", AGENT, agent_set_hash(), 0o755).map_err(|e| {
        e.hint(format!("make ~/.cache writable, set XDG_CACHE_HOME, or point {ENV_AGENT} at a copy of the agent"))
    })?;
    install_probes(&agent)
        .map_err(|e| UserError::observe(format!("cannot write the runtime probes next to {}: {e}", agent.display())))?;
    Ok(agent)
}

/// The name of the agent's copy covers the probes beside it too: two looptop builds with the
/// same agent and different probes (an upgrade, or two checkouts) never rewrite each other's
/// probes under a running program.
fn agent_set_hash() -> u64 {
    let mut all = AGENT.to_vec();
    all.extend_from_slice(NODE_PROBE);
    for (name, bytes) in PYTHON_PROBE {
        all.extend_from_slice(name.as_bytes());
        all.extend_from_slice(bytes);
    }
    fnv1a(&all)
}

/// Writes the runtime probes where the agent looks for them (next to itself).
fn install_probes(agent: &Path) -> std::io::Result<()> {
    let stem = agent.with_extension("");
    let dir = stem.parent().unwrap_or(Path::new("."));
    let name = |ext: &str| stem.with_extension(ext).file_name().unwrap_or_default().to_string_lossy().into_owned();
    install(dir, &name("node.js"), NODE_PROBE, 0o644)?;
    let py = stem.with_extension("python");
    for (file, bytes) in PYTHON_PROBE {
        install(&py, file, bytes, 0o644)?;
    }
    Ok(())
}

/// The demo server's path.
pub fn demo_server_path() -> Result<PathBuf, UserError> {
    cached("demo-server", "js", DEMO_SERVER, 0o644).map_err(|e| e.hint("make ~/.cache writable or set XDG_CACHE_HOME"))
}

/// Writes `bytes` to the first usable cache folder as `<stem>-<hash>.<ext>`.
fn cached(stem: &str, ext: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, UserError> {
    cached_as(stem, ext, bytes, fnv1a(bytes), mode)
}

/// Writes `bytes` to the first usable cache folder as `<stem>-<hash>.<ext>`, `hash` given.
fn cached_as(stem: &str, ext: &str, bytes: &[u8], hash: u64, mode: u32) -> Result<PathBuf, UserError> {
    let name = format!("{stem}-{hash:016x}.{ext}");
    let mut last_err = None;
    for dir in cache_dirs() {
        match install(&dir, &name, bytes, mode) {
            Ok(p) => return Ok(p),
            Err(e) => last_err = Some(format!("{}: {e}", dir.display())),
        }
    }
    Err(UserError::observe(format!("cannot write {name} to a private cache folder ({})", last_err.unwrap_or_default())))
}

fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        dirs.push(PathBuf::from(x).join("looptop"));
    } else if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(h).join(".cache/looptop"));
    }
    // SAFETY: getuid has no preconditions.
    dirs.push(std::env::temp_dir().join(format!("looptop-{}", unsafe { libc::getuid() })));
    dirs
}

/// Writes `bytes` into `dir` (created 0700 and checked to be ours) unless already there.
fn install(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    // SAFETY: getuid has no preconditions.
    if meta.uid() != unsafe { libc::getuid() } {
        return Err(std::io::Error::other("the folder belongs to another user"));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    }
    let path = dir.join(name);
    if fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_agent_is_a_shared_object_exporting_the_wrappers() {
        assert_eq!(&AGENT[..4], b"\x7fELF");
        for sym in [&b"epoll_wait"[..], b"epoll_pwait", b"epoll_pwait2", b"ppoll", b"__poll_chk"] {
            assert!(AGENT.windows(sym.len()).any(|w| w == sym), "{}", String::from_utf8_lossy(sym));
        }
    }

    #[test]
    fn installs_once_under_a_content_name() {
        let dir = std::env::temp_dir().join(format!("looptop-agent-test-{}", std::process::id()));
        let a = install(&dir, "x.so", AGENT, 0o755).unwrap();
        let b = install(&dir, "x.so", AGENT, 0o755).unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read(&a).unwrap(), AGENT);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(dir).unwrap();
    }
}
