//! Files looptop writes: outputs the user named (`-o report.json`, `--junit`, a flamegraph) and
//! files it names itself in a shared or the current folder (the live view's log, `f` and `r`).
//!
//! A new file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing planted under that name is
//! ever opened. An existing one is the user's to overwrite, as with a shell's `>`, except where
//! another user could have planted it: in a folder others can write to (`/tmp`), a symbolic link,
//! a file or a FIFO that belongs neither to us nor to the folder's owner is refused, and so is a
//! regular file with a second name (a hard link to a file elsewhere). These are the kernel's
//! `fs.protected_symlinks`, `protected_regular` and `protected_fifos` rules, applied whatever the
//! sysctls say (containers often turn them off).

use super::{c_path, euid};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why an output file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OutputRefused {
    /// The system call failed (no such folder, not permitted, a folder, a FIFO nobody reads …).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A symbolic link another user may have planted.
    #[error("{} is a symbolic link that belongs to uid {owner}, in a folder others can write to", path.display())]
    ForeignLink {
        /// The link.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A file or FIFO another user may have planted.
    #[error("{} belongs to uid {owner}, in a folder others can write to", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A regular file with more than one name: writing would change the file behind its other name.
    #[error("{} has {links} hard links, in a folder others can write to", path.display())]
    HardLinked {
        /// The file.
        path: PathBuf,
        /// Its number of names.
        links: u64,
    },
}

impl OutputRefused {
    /// The OS error behind a refusal, when there is one.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            OutputRefused::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An output file, open for writing.
#[derive(Debug)]
pub struct Opened {
    /// The file (blocking writes, close-on-exec).
    pub file: File,
    /// Whether it was created by this open (else it was there: nothing in it is changed yet, a
    /// caller that rewrites it truncates it when it writes).
    pub created: bool,
}

/// Opens `path` for writing (`append`: every write at the end) as described in the module
/// documentation: created with `mode` (before the umask) when missing, else the existing file
/// after the shared-folder checks. A FIFO nobody reads fails at once (`ENXIO`), never blocks.
pub fn open_output(path: &Path, mode: u32, append: bool) -> Result<Opened, OutputRefused> {
    let io_err = |source| OutputRefused::Io { path: path.to_path_buf(), source };
    let extra = if append { libc::O_APPEND } else { 0 };
    // Created anew, or there already: a file removed in between is created on the next turn.
    for _ in 0..8 {
        match open_flags(path, libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | extra, mode) {
            Ok(file) => return Ok(Opened { file, created: true }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(io_err(e)),
        }
        let folder = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => p,
            None => Path::new("."),
        };
        let folder = std::fs::metadata(folder).map_err(io_err)?;
        let shared = folder.mode() & 0o002 != 0 || (folder.mode() & 0o1000 != 0 && folder.mode() & 0o020 != 0);
        let trusted = |uid: u32| !shared || uid == euid() || uid == folder.uid();
        let file = match open_flags(path, libc::O_NOFOLLOW | libc::O_NONBLOCK | extra, 0) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let link = std::fs::symlink_metadata(path).map_err(io_err)?;
                if !trusted(link.uid()) {
                    return Err(OutputRefused::ForeignLink { path: path.to_path_buf(), owner: link.uid() });
                }
                open_flags(path, libc::O_NONBLOCK | extra, 0).map_err(io_err)?
            }
            Err(e) => return Err(io_err(e)),
        };
        let meta = file.metadata().map_err(io_err)?;
        let kind = meta.file_type();
        if (kind.is_file() || std::os::unix::fs::FileTypeExt::is_fifo(&kind)) && !trusted(meta.uid()) {
            return Err(OutputRefused::Foreign { path: path.to_path_buf(), owner: meta.uid() });
        }
        if kind.is_file() && shared && meta.nlink() > 1 {
            return Err(OutputRefused::HardLinked { path: path.to_path_buf(), links: meta.nlink() });
        }
        // Opened without blocking (a FIFO); written with blocking writes.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        return Ok(Opened { file, created: false });
    }
    Err(io_err(io::Error::other("it keeps appearing and disappearing")))
}

/// Creates the first of `names` that does not exist yet (`O_EXCL|O_NOFOLLOW`, `mode` before the
/// umask), e.g. `looptop-flame-4242-1.svg`, `-2` … in the current folder: nothing that is there,
/// planted or not, is opened.
pub fn create_first_free(names: impl IntoIterator<Item = PathBuf>, mode: u32) -> io::Result<(File, PathBuf)> {
    for path in names {
        match open_flags(&path, libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, mode) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "every name tried is taken"))
}

/// `open(path, O_WRONLY|O_CLOEXEC|O_NOCTTY|flags, mode)`.
fn open_flags(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let c = c_path(path)?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOCTTY | flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};

    fn tmp(tag: &str, mode: u32) -> PathBuf {
        let d = std::env::temp_dir().join(format!("looptop-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        d
    }

    fn errno(r: Result<Opened, OutputRefused>) -> Option<i32> {
        r.unwrap_err().os_error().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn new_files_are_created_and_the_users_own_are_kept_for_overwriting() {
        let d = tmp("own", 0o755);
        let new = open_output(&d.join("new.json"), 0o600, false).unwrap();
        assert!(new.created);
        assert_eq!(new.file.metadata().unwrap().mode() & 0o077, 0);
        std::fs::write(d.join("old.json"), b"old").unwrap();
        let mut old = open_output(&d.join("old.json"), 0o666, false).unwrap();
        assert!(!old.created);
        assert_eq!(std::fs::read(d.join("old.json")).unwrap(), b"old", "not truncated by the open");
        old.file.write_all(b"x").unwrap();
        let mut appended = open_output(&d.join("old.json"), 0o666, true).unwrap();
        appended.file.write_all(b"!").unwrap();
        assert_eq!(std::fs::read(d.join("old.json")).unwrap(), b"xld!");
        // The user's own link, even in a shared folder, is followed.
        symlink(d.join("old.json"), d.join("mine")).unwrap();
        assert!(!open_output(&d.join("mine"), 0o666, false).unwrap().created);
        assert!(open_output(Path::new("/dev/null"), 0o666, false).is_ok());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn paths_that_cannot_be_written_fail_at_once() {
        let d = tmp("bad", 0o755);
        assert_eq!(errno(open_output(&d.join("missing/x.rec"), 0o666, false)), Some(libc::ENOENT));
        assert_eq!(errno(open_output(&d, 0o666, false)), Some(libc::EISDIR));
        let fifo = c_path(&d.join("fifo")).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // Nobody reads it: refused at once rather than blocking.
        assert_eq!(errno(open_output(&d.join("fifo"), 0o666, false)), Some(libc::ENXIO));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn what_another_user_planted_in_a_shared_folder_is_refused() {
        if euid() != 0 {
            println!("SKIP: planting files of another uid needs root");
            return;
        }
        let d = tmp("shared", 0o1777);
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let stranger = 54_321;
        symlink(&victim, d.join("link.svg")).unwrap();
        lchown(d.join("link.svg"), Some(stranger), None).unwrap();
        assert!(matches!(
            open_output(&d.join("link.svg"), 0o666, false),
            Err(OutputRefused::ForeignLink { owner: 54_321, .. })
        ));
        std::fs::write(d.join("planted.json"), b"").unwrap();
        lchown(d.join("planted.json"), Some(stranger), None).unwrap();
        assert!(matches!(open_output(&d.join("planted.json"), 0o666, false), Err(OutputRefused::Foreign { .. })));
        std::fs::hard_link(&victim, d.join("hard.rec")).unwrap();
        assert!(matches!(
            open_output(&d.join("hard.rec"), 0o666, false),
            Err(OutputRefused::HardLinked { links: 2, .. })
        ));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        // The same link in a folder only its owner writes to is that owner's to place.
        let private = tmp("private-link", 0o755);
        symlink(&victim, private.join("link.svg")).unwrap();
        lchown(private.join("link.svg"), Some(stranger), None).unwrap();
        assert!(open_output(&private.join("link.svg"), 0o666, false).is_ok());
        std::fs::remove_dir_all(d).unwrap();
        std::fs::remove_dir_all(private).unwrap();
    }

    #[test]
    fn create_first_free_skips_every_name_that_is_there() {
        let d = tmp("free", 0o755);
        std::fs::write(d.join("a-1.svg"), b"keep").unwrap();
        symlink(d.join("a-1.svg"), d.join("a-2.svg")).unwrap();
        let (_, path) = create_first_free((1..5).map(|n| d.join(format!("a-{n}.svg"))), 0o600).unwrap();
        assert_eq!(path, d.join("a-3.svg"));
        assert_eq!(std::fs::read(d.join("a-1.svg")).unwrap(), b"keep");
        std::fs::remove_dir_all(d).unwrap();
    }
}
