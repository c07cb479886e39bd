//! Files in shared folders (`/dev/shm`, `/tmp`) and files a target's user controls, opened by
//! DESIGN.md's rules of the road: never follow a link, never block on a FIFO, accept only regular
//! files of the expected owner and a bounded size, create with `O_EXCL` in private folders, and
//! read a target's files only as the target's user could.
//!
//! Every function here is the one way looptop opens such a file; a test with a throwaway user
//! (tests/hostile.rs) proves each rule. Files looptop writes are opened by [`open_output`] and [`create_first_free`].

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod dirs;
mod mapped;

pub use dirs::{private_dir_under, reuse_or_new_private_dir, trusted_dir};
pub use mapped::{open_mapped, Mapped};

mod output;

pub use output::{create_first_free, open_output, Opened, OutputRefused};

/// Why an untrusted file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The system call failed (missing, a symbolic link: `ELOOP`, not permitted …).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A FIFO, a device, a folder, a socket.
    #[error("{} is not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// Owned by someone other than the expected user.
    #[error("{} belongs to uid {found}, not {expected}", path.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        found: u32,
        /// Who should own it.
        expected: u32,
    },
    /// Larger than the caller accepts.
    #[error("{} is {len} bytes, more than the {max} accepted", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
}

impl Refused {
    /// The OS error behind a refusal, when there is one.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            Refused::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What an untrusted file must be.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Its owner, when one is expected.
    pub owner: Option<u32>,
    /// Largest accepted length in bytes.
    pub max_len: u64,
    /// Open for reading and writing (else read-only).
    pub write: bool,
}

impl Expect {
    /// A read-only file of at most `max_len` bytes, owned by anybody.
    pub fn read(max_len: u64) -> Self {
        Expect { owner: None, max_len, write: false }
    }

    /// The same, owned by `uid`.
    pub fn owned_by(self, uid: u32) -> Self {
        Expect { owner: Some(uid), ..self }
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `path` with `O_NOFOLLOW|O_NONBLOCK|O_NOCTTY|O_CLOEXEC` and checks it: a regular file, of
/// the expected owner, no longer than the bound. A FIFO never blocks the open and is refused; a
/// link is refused (`ELOOP`) whatever `fs.protected_symlinks` says. Anything but a regular file is
/// refused before it is opened (opening a device can do things), and again after (in case the
/// name changed in between).
pub fn open(path: &Path, expect: Expect) -> Result<File, Refused> {
    let io_err = |source| Refused::Io { path: path.to_path_buf(), source };
    let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
    if meta.file_type().is_symlink() {
        return Err(io_err(io::Error::from_raw_os_error(libc::ELOOP)));
    }
    if !meta.file_type().is_file() {
        return Err(Refused::NotRegular { path: path.to_path_buf() });
    }
    open_checked(path, expect, libc::O_NOFOLLOW)
}

/// Opens `path` with `O_NONBLOCK|O_NOCTTY|O_CLOEXEC` and `extra_flags`, then checks it.
fn open_checked(path: &Path, expect: Expect, extra_flags: libc::c_int) -> Result<File, Refused> {
    let io_err = |source| Refused::Io { path: path.to_path_buf(), source };
    let c = c_path(path).map_err(io_err)?;
    let access = if expect.write { libc::O_RDWR } else { libc::O_RDONLY };
    let flags = access | extra_flags | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    check(path, &file, expect)?;
    Ok(file)
}

/// Reads all of `file` if it holds at most `max` bytes (whatever its length said when it was
/// opened: procfs files say 0, and a file can grow); `None` when it holds more.
pub fn read_bounded(file: &File, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Checks an open file against `expect` (see [`open`]).
pub fn check(path: &Path, file: &File, expect: Expect) -> Result<(), Refused> {
    let meta = file.metadata().map_err(|source| Refused::Io { path: path.to_path_buf(), source })?;
    if !meta.file_type().is_file() {
        return Err(Refused::NotRegular { path: path.to_path_buf() });
    }
    if let Some(expected) = expect.owner {
        if meta.uid() != expected {
            return Err(Refused::Owner { path: path.to_path_buf(), found: meta.uid(), expected });
        }
    }
    if meta.len() > expect.max_len {
        return Err(Refused::TooLarge { path: path.to_path_buf(), len: meta.len(), max: expect.max_len });
    }
    Ok(())
}

/// Creates `path` anew (`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, `mode` before the umask): never
/// opens a file or a link that was already there.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let c = c_path(path)?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Makes sure `dir` is a private folder of ours: created 0700 when missing; when present, a real
/// folder (not a link), owned by us, and not open to others — a folder of ours with a loose mode is
/// tightened through a descriptor of the folder itself, never through a path that could be a link.
/// Its parent must exist.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let c = c_path(dir)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkdir(c.as_ptr(), 0o700) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                io::Error::other(format!("{} is not a folder (a link or a file is in the way)", dir.display()))
            }
            _ => e,
        });
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    ours_and_private(&File::from(unsafe { OwnedFd::from_raw_fd(fd) }), dir)
}

/// Checks that the open folder `dir` (called `path`) is ours, and tightens a loose mode to 0700
/// through its own descriptor, never through a name.
fn ours_and_private(dir: &File, path: &Path) -> io::Result<()> {
    let meta = dir.metadata()?;
    if meta.uid() != euid() {
        return Err(io::Error::other(format!("{} belongs to another user (uid {})", path.display(), meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: fchmod on the folder's own descriptor.
        if unsafe { libc::fchmod(dir.as_raw_fd(), 0o700) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Creates a new private folder `<parent>/<prefix>-<random>` (0700, `mkdir` fails if the name
/// exists, so nobody can have planted it) and returns its path.
pub fn new_private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    for _ in 0..64 {
        let path = parent.join(format!("{prefix}-{:016x}", random_u64()));
        let c = c_path(&path)?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::mkdir(c.as_ptr(), 0o700) } == 0 {
            return Ok(path);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Err(io::Error::other(format!("no free name for a private folder in {}", parent.display())))
}

/// 64 random bits from the kernel (`getrandom`), mixed with the clock if that fails.
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into v.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        v ^= (ts.tv_nsec as u64).wrapping_mul(0x9e3779b97f4a7c15) ^ ((std::process::id() as u64) << 32);
    }
    v
}

/// The credentials a process's file accesses are checked with: its filesystem uid and gid and
/// its supplementary groups (`/proc/PID/status`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Creds {
    /// Filesystem uid.
    pub uid: u32,
    /// Filesystem gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Creds {
    /// The credentials of process `pid`, if it can be read.
    pub fn of_pid(pid: u32) -> Option<Creds> {
        Self::parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    /// Parses the `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status` text (the fourth
    /// number of `Uid`/`Gid` is the filesystem id).
    pub fn parse_status(text: &str) -> Option<Creds> {
        let ids = |key: &str| -> Option<Vec<u32>> {
            let line = text.lines().find_map(|l| l.strip_prefix(key))?;
            line.split_whitespace().map(|n| n.parse().ok()).collect()
        };
        let uid = *ids("Uid:")?.get(3)?;
        let gid = *ids("Gid:")?.get(3)?;
        Some(Creds { uid, gid, groups: ids("Groups:").unwrap_or_default() })
    }
}

/// How long an open as another user may take before it is given up: a FUSE file system of the
/// target's user can make `open` wait for its daemon forever.
const OPEN_AS_TIMEOUT: Duration = Duration::from_secs(2);
/// `f_type` of FUSE file systems (`statfs(2)`).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Opens a file a target's user named (a script in a perf map, a source file) as that user
/// could: when looptop runs as root for another user, the open happens on a thread whose
/// filesystem ids and groups are the user's (Linux keeps credentials per thread; the raw system
/// calls change only that thread's), so a file the user could not read stays unread. Then
/// [`open`]'s checks apply. For another user, an open that does not return within 2 s is given
/// up (its thread is left behind) and a file on a FUSE file system is refused: reading it would
/// wait on a daemon that user runs.
pub fn open_as(creds: Option<&Creds>, path: &Path, expect: Expect) -> Result<File, Refused> {
    as_user(creds, path, move |p| open(p, expect))
}

/// Runs `open` on `path` as [`open_as`] describes: as ourselves unless we are root and `creds`
/// are another user's, else on a thread with the user's file credentials, within
/// [`OPEN_AS_TIMEOUT`], and refusing FUSE.
pub(crate) fn as_user(
    creds: Option<&Creds>,
    path: &Path,
    open: impl FnOnce(&Path) -> Result<File, Refused> + Send + 'static,
) -> Result<File, Refused> {
    let Some(creds) = creds.filter(|c| euid() == 0 && c.uid != 0) else {
        return open(path);
    };
    let io_err = |source| Refused::Io { path: path.to_path_buf(), source };
    let (tx, rx) = std::sync::mpsc::channel();
    let (creds, owned) = (creds.clone(), path.to_path_buf());
    // Not a scoped thread: one stuck in the kernel must not hold us.
    std::thread::Builder::new()
        .name("looptop-open-as".into())
        .spawn(move || {
            let opened = match become_for_files(&creds) {
                Ok(()) => open(&owned),
                Err(source) => Err(Refused::Io { path: owned, source }),
            };
            let _ = tx.send(opened);
        })
        .map_err(io_err)?;
    let file = match rx.recv_timeout(OPEN_AS_TIMEOUT) {
        Ok(opened) => opened?,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(io_err(io::Error::new(io::ErrorKind::TimedOut, "the open did not return within 2 s")))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(io_err(io::Error::other("panicked"))),
    };
    if on_fuse(&file) {
        return Err(io_err(io::Error::other("on a FUSE file system, which its user's daemon could make hang")));
    }
    Ok(file)
}

/// Whether `file` lives on a FUSE file system.
fn on_fuse(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs fills a zeroed statfs for a descriptor we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::fstatfs(file.as_raw_fd(), &mut st) == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC
    }
}

/// Whose permissions a target's files are read with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reader {
    /// looptop's own: it is not root (and can only observe its own user's processes), or the
    /// target runs as root.
    Me,
    /// The target's user, for root observing another user's process (see [`open_as`]).
    User(Creds),
}

impl Reader {
    /// Whose permissions `pid`'s files are read with; `None` when looptop is root and cannot
    /// tell whose the process is (it is gone): then none of its files may be read.
    pub fn of_pid(pid: u32) -> Option<Reader> {
        if euid() != 0 {
            return Some(Reader::Me);
        }
        let creds = Creds::of_pid(pid)?;
        Some(if creds.uid == 0 { Reader::Me } else { Reader::User(creds) })
    }

    /// The uid that owns files only the target writes (its perf map).
    pub fn uid(&self) -> u32 {
        match self {
            Reader::Me => euid(),
            Reader::User(c) => c.uid,
        }
    }

    /// Whether files are read for a user other than looptop's own.
    pub fn is_other_user(&self) -> bool {
        matches!(self, Reader::User(_))
    }

    /// The credentials to open with ([`open_as`]).
    pub fn creds(&self) -> Option<&Creds> {
        match self {
            Reader::Me => None,
            Reader::User(c) => Some(c),
        }
    }

    /// Opens `path` as this reader ([`open_as`]).
    pub fn open(&self, path: &Path, expect: Expect) -> Result<File, Refused> {
        open_as(self.creds(), path, expect)
    }
}

/// Sets this thread's groups, filesystem gid and filesystem uid (raw system calls: per thread).
fn become_for_files(c: &Creds) -> io::Result<()> {
    // SAFETY: raw credential system calls with a valid group array; they affect this thread only.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, c.gid);
        libc::syscall(libc::SYS_setfsuid, c.uid);
        // setfs*id return the previous id, never an error: read back to be sure it took.
        if libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != c.uid
            || libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != c.gid
        {
            return Err(io::Error::other("cannot take the target user's file credentials"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder of ours for a test.
    pub(super) fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("looptop-safefs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_links_fifos_and_large_files() {
        let d = tmp("refuse");
        let file = d.join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        std::os::unix::fs::symlink(&file, d.join("link")).unwrap();
        let fifo = c_path(&d.join("fifo")).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(open(&file, Expect::read(10)).is_ok());
        assert!(matches!(open(&file, Expect::read(9)), Err(Refused::TooLarge { len: 10, .. })));
        let e = open(&d.join("link"), Expect::read(10)).unwrap_err();
        assert_eq!(e.os_error().and_then(|e| e.raw_os_error()), Some(libc::ELOOP));
        // A FIFO nobody writes to: the open returns at once and is refused.
        assert!(matches!(open(&d.join("fifo"), Expect::read(10)), Err(Refused::NotRegular { .. })));
        assert!(matches!(open(&file, Expect::read(10).owned_by(euid() + 1)), Err(Refused::Owner { .. })));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn create_new_never_reuses_a_name() {
        let d = tmp("create");
        let target = d.join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, d.join("planted")).unwrap();
        assert!(create_new(&d.join("planted"), 0o600).is_err());
        assert!(create_new(&target, 0o600).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(create_new(&d.join("fresh"), 0o600).is_ok());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn private_dir_refuses_a_link_and_tightens_our_own() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("private");
        let elsewhere = d.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.join("link")).unwrap();
        assert!(private_dir(&d.join("link")).is_err());
        assert_eq!(std::fs::metadata(&elsewhere).unwrap().mode() & 0o777, 0o755, "chmod went through the link");
        private_dir(&elsewhere).unwrap();
        assert_eq!(std::fs::metadata(&elsewhere).unwrap().mode() & 0o777, 0o700);
        let fresh = new_private_dir(&d, "x").unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn reads_only_what_is_there_up_to_the_bound() {
        let d = tmp("bounded");
        std::fs::write(d.join("f"), b"0123456789").unwrap();
        let f = open(&d.join("f"), Expect::read(100)).unwrap();
        assert_eq!(read_bounded(&f, 10).unwrap().as_deref(), Some(&b"0123456789"[..]));
        let f = open(&d.join("f"), Expect::read(100)).unwrap();
        assert_eq!(read_bounded(&f, 9).unwrap(), None);
        // procfs says 0 bytes and holds more: the bound still holds.
        let f = open(Path::new("/proc/self/maps"), Expect::read(0)).unwrap();
        assert_eq!(read_bounded(&f, 8).unwrap(), None);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn open_as_another_user_reads_only_what_they_could() {
        use std::os::unix::fs::PermissionsExt;
        if euid() != 0 {
            println!("SKIP: open_as_another_user_reads_only_what_they_could: needs root");
            return;
        }
        let d = tmp("as");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (secret, public) = (d.join("secret"), d.join("public"));
        std::fs::write(&secret, b"s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&public, b"p").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Any uid will do: file permissions need no account.
        let nobody = Reader::User(Creds { uid: 65534, gid: 65534, groups: vec![] });
        let e = nobody.open(&secret, Expect::read(10)).unwrap_err();
        assert_eq!(e.os_error().map(io::Error::kind), Some(io::ErrorKind::PermissionDenied), "{e}");
        assert!(nobody.open(&public, Expect::read(10)).is_ok());
        assert!(Reader::Me.open(&secret, Expect::read(10)).is_ok());
        // This thread kept its own credentials.
        assert!(std::fs::read(&secret).is_ok());
        assert_eq!(nobody.uid(), 65534);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn creds_from_status() {
        let c =
            Creds::parse_status("Name:\tx\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t100\nGroups:\t4 27 \n")
                .unwrap();
        assert_eq!(c, Creds { uid: 1001, gid: 100, groups: vec![4, 27] });
    }
}
