//! Folders whose path may be handed to others (`LD_PRELOAD=$(looptop agent path)`): a path is
//! only as safe as its least safe folder, so every folder from `/` down is checked — no links,
//! owned by us or root, and nobody else may rename or replace what is inside (not writable by
//! others, or sticky like `/tmp`, where only an entry's owner may rename it).

use super::{c_path, euid, new_private_dir, ours_and_private};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Opens `name` in the folder `dir` (or `/` when `None`) as a folder, never through a link.
fn open_dir(dir: Option<&File>, name: &Path) -> io::Result<File> {
    let c = c_path(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a NUL-terminated path and a descriptor we own (or AT_FDCWD for an absolute path).
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Checks a folder on the way to ours: owned by us or root, and nobody else can rename or
/// replace its entries.
fn check_on_the_way(dir: &File, path: &Path) -> io::Result<()> {
    let meta = dir.metadata()?;
    if meta.uid() != 0 && meta.uid() != euid() {
        return Err(io::Error::other(format!("{} belongs to another user (uid {})", path.display(), meta.uid())));
    }
    if meta.mode() & 0o022 != 0 && meta.mode() & libc::S_ISVTX == 0 {
        return Err(io::Error::other(format!(
            "others may write to {} (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Walks the components of the absolute, link-free `path` from `/`, checking each folder.
fn walk(path: &Path) -> io::Result<File> {
    let mut dir = open_dir(None, Path::new("/"))?;
    check_on_the_way(&dir, Path::new("/"))?;
    let mut at = PathBuf::from("/");
    for c in path.components().skip(1) {
        let Component::Normal(name) = c else {
            return Err(io::Error::other(format!("{} is not a plain absolute path", path.display())));
        };
        at.push(name);
        dir = open_dir(Some(&dir), Path::new(name)).map_err(|e| not_a_folder(&at, e))?;
        check_on_the_way(&dir, &at)?;
    }
    Ok(dir)
}

fn not_a_folder(path: &Path, e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            io::Error::other(format!("{} is not a folder (a link or a file is in the way)", path.display()))
        }
        _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

/// The real path of the existing folder `dir` (its links resolved), once every folder on it is
/// checked (see the module's rules).
pub fn trusted_dir(dir: &Path) -> io::Result<PathBuf> {
    let real = std::fs::canonicalize(dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    walk(&real)?;
    Ok(real)
}

/// Makes `base/rel` a private folder of ours and returns its real path: `base` must exist (its
/// links are resolved, then every folder down from `/` is checked); the folders of `rel` are
/// created 0700 where missing, never followed through a link, and must be ours — the last is
/// tightened to 0700 through its own descriptor.
pub fn private_dir_under(base: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut path = trusted_dir(base)?;
    let mut dir = walk(&path)?;
    let names: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::other(format!("{} is not a plain relative path", rel.display()))),
        })
        .collect::<io::Result<_>>()?;
    for (i, name) in names.iter().enumerate() {
        path.push(name);
        let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a NUL-terminated name relative to a folder descriptor we own.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
        }
        dir = open_dir(Some(&dir), Path::new(name)).map_err(|e| not_a_folder(&path, e))?;
        if i + 1 < names.len() {
            check_on_the_way(&dir, &path)?;
        }
    }
    ours_and_private(&dir, &path)?;
    Ok(path)
}

/// A private folder `<parent>/<prefix>-<random>` of ours, for when the usual name in a shared
/// folder is taken by someone else: an earlier one is reused when it is a real folder of ours,
/// mode 0700 (nobody else can make one: only its owner could have created it with that owner);
/// else a new one is made with [`new_private_dir`]. `parent` is checked like [`trusted_dir`].
pub fn reuse_or_new_private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    let parent = trusted_dir(parent)?;
    let start = format!("{prefix}-");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(&start)) else { continue };
            if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            // symlink_metadata: a link is not a folder of ours.
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if meta.is_dir() && meta.uid() == euid() && meta.mode() & 0o7777 == 0o700 {
                return Ok(e.path());
            }
        }
    }
    new_private_dir(&parent, prefix)
}

#[cfg(test)]
mod tests {
    use super::super::tests::tmp;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_checks_and_never_follows_a_link() {
        let d = tmp("under");
        let made = private_dir_under(&d, Path::new(".cache/looptop")).unwrap();
        assert_eq!(made, std::fs::canonicalize(&d).unwrap().join(".cache/looptop"));
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
        // Loose: tightened.
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir_under(&d, Path::new(".cache/looptop")).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
        // A link in the way, to a folder with a loose mode: refused, not chmodded.
        let elsewhere = d.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.join("link")).unwrap();
        assert!(private_dir_under(&d, Path::new("link")).is_err());
        assert!(private_dir_under(&d, Path::new("link/x")).is_err());
        assert_eq!(std::fs::metadata(&elsewhere).unwrap().mode() & 0o777, 0o755);
        assert!(!elsewhere.join("x").exists());
        // A base through a link is resolved: the path returned has no link in it.
        let via = private_dir_under(&d.join("link"), Path::new("y")).unwrap();
        assert_eq!(via, std::fs::canonicalize(&elsewhere).unwrap().join("y"));
        // An ancestor others may write to (not sticky): refused.
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir_under(&open, Path::new("z")).is_err());
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(private_dir_under(&open, Path::new("z")).is_ok(), "sticky, like /tmp");
        assert!(private_dir_under(&d, Path::new("../x")).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn reuses_a_fresh_folder_of_ours() {
        let d = tmp("fresh");
        let a = reuse_or_new_private_dir(&d, "looptop-9").unwrap();
        let b = reuse_or_new_private_dir(&d, "looptop-9").unwrap();
        assert_eq!(a, b);
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = reuse_or_new_private_dir(&d, "looptop-9").unwrap();
        assert_ne!(a, c, "a loose one is not reused");
        std::fs::remove_dir_all(d).unwrap();
    }
}
