//! Files embedded in this executable (the agent library, the demo server), written on first use
//! to a private cache folder under content-addressed names (so upgrades never mix versions).
//!
//! The agent's path is handed to `LD_PRELOAD`, often root's: whoever can change a folder on that
//! path, or the file, runs code in every program that preloads it. So the folder is one that only
//! we (and root) can change all the way from `/` ([`safefs::private_dir_under`]), the path printed
//! is its real one (no link in it that someone could repoint later), files are written under a
//! fresh name with `O_EXCL` and renamed into place, and an existing file is reused only when it is
//! a regular file of ours with the right mode and content.

use crate::error::UserError;
use crate::safefs::{self, Expect};
use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    let py = safefs::private_dir_under(dir, Path::new(&name("python")))?;
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
        match dir.make().and_then(|dir| install(&dir, &name, bytes, mode)) {
            Ok(p) => return Ok(p),
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    Err(UserError::observe(format!("cannot write {name} to a private cache folder ({})", last_err.unwrap_or_default())))
}

/// A cache folder to try.
enum CacheDir {
    /// `base/rel`, made private ([`safefs::private_dir_under`]).
    Under(PathBuf, PathBuf),
    /// A private folder `parent/<prefix>-<random>` of ours ([`safefs::reuse_or_new_private_dir`]).
    Fresh(PathBuf, String),
}

impl CacheDir {
    /// The folder's real path, once it is private and ours.
    fn make(&self) -> std::io::Result<PathBuf> {
        match self {
            CacheDir::Under(base, rel) => safefs::private_dir_under(base, rel),
            CacheDir::Fresh(parent, prefix) => safefs::reuse_or_new_private_dir(parent, prefix),
        }
    }
}

/// The cache folders to try, best first: `$XDG_CACHE_HOME/looptop` or `~/.cache/looptop`, else
/// `$TMPDIR/looptop-<uid>`, else — when that name is taken by something that is not safely ours
/// (a link, another user's folder) — a private folder `$TMPDIR/looptop-<uid>-<random>` of ours.
fn cache_dirs() -> Vec<CacheDir> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let mut dirs = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        dirs.push(CacheDir::Under(x, "looptop".into()));
    } else if let Some(h) = std::env::var_os("HOME").and_then(absolute) {
        dirs.push(CacheDir::Under(h, ".cache/looptop".into()));
    }
    // SAFETY: getuid has no preconditions.
    let name = format!("looptop-{}", unsafe { libc::getuid() });
    dirs.push(CacheDir::Under(std::env::temp_dir(), name.clone().into()));
    dirs.push(CacheDir::Fresh(std::env::temp_dir(), name));
    dirs
}

/// Writes `bytes` as `dir/name` with `mode` (`dir` is private and ours, see [`cache_dirs`])
/// unless a regular file of ours with that mode and content is already there: under a fresh name
/// with `O_EXCL`, then renamed over the old one.
fn install(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    if holds(&path, bytes, mode) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{name}.{:016x}", safefs::random_u64()));
    let mut f = safefs::create_new(&tmp, 0o600)?;
    let written = (|| {
        f.write_all(bytes)?;
        f.set_permissions(Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    }
    Ok(path)
}

/// Whether `path` is a regular file of ours (not a link) with exactly `mode` and `bytes`.
fn holds(path: &Path, bytes: &[u8], mode: u32) -> bool {
    let Ok(f) = safefs::open(path, Expect::read(bytes.len() as u64).owned_by(safefs::euid())) else { return false };
    let mode_ok = f.metadata().is_ok_and(|m| m.mode() & 0o7777 == mode);
    mode_ok && safefs::read_bounded(&f, bytes.len() as u64).is_ok_and(|b| b.as_deref() == Some(bytes))
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
        let base = std::env::temp_dir().join(format!("looptop-agent-test-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, Permissions::from_mode(0o755)).unwrap();
        let dir = safefs::private_dir_under(&base, Path::new("cache")).unwrap();
        let a = install(&dir, "x.so", AGENT, 0o755).unwrap();
        let ino = fs::metadata(&a).unwrap().ino();
        let b = install(&dir, "x.so", AGENT, 0o755).unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::metadata(&b).unwrap().ino(), ino, "reused, not written again");
        assert_eq!(fs::read(&a).unwrap(), AGENT);
        assert_eq!(fs::metadata(&a).unwrap().mode() & 0o777, 0o755);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Wrong content, wrong mode or a link: replaced by a file of ours.
        fs::write(&a, b"not the agent").unwrap();
        assert_eq!(fs::read(install(&dir, "x.so", AGENT, 0o755).unwrap()).unwrap(), AGENT);
        fs::set_permissions(&a, Permissions::from_mode(0o777)).unwrap();
        install(&dir, "x.so", AGENT, 0o755).unwrap();
        assert_eq!(fs::metadata(&a).unwrap().mode() & 0o777, 0o755);
        let elsewhere = base.join("elsewhere.so");
        fs::write(&elsewhere, AGENT).unwrap();
        fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &a).unwrap();
        install(&dir, "x.so", AGENT, 0o755).unwrap();
        assert!(fs::symlink_metadata(&a).unwrap().file_type().is_file(), "the link is replaced");
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["x.so"]);
        fs::remove_dir_all(base).unwrap();
    }
}
