//! The writer's side of the shared-memory segment: creation (once per process image, lazily
//! again after a fork), reserving slots as loops appear, exit stamping and removal, and
//! reporting why it could not be created.
//!
//! No page of the mapping is touched before it is known to be backed: the base (header and rings)
//! and slot 0 are reserved with `posix_fallocate` when the segment is created, every further slot
//! before it is claimed. When the folder is full (or would be left with less than its reserve),
//! the agent steps aside instead of dying of `SIGBUS`. The agent keeps no file descriptor open:
//! growing reopens the file by name and checks it is still the same file.

use crate::sys;
use looptop_abi::{
    backed_len, header_flags, Header, LoopSlot, LAYOUT_VERSION, LOOP_SLOTS, MAGIC, SEGMENT_PREFIX, SEGMENT_SIZE,
};
use std::cell::UnsafeCell;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Settings read from the environment by the constructor (inherited by fork children).
struct Config {
    dir: PathBuf,
    run_dir: Option<PathBuf>,
    session: u64,
    /// Keep the segment at exit for this looptop's last read (`LOOPTOP_KEEP_SEGMENT`).
    keep: bool,
    /// Pid of that looptop (0 when the variable holds no pid).
    keeper: u32,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
static BASE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static STATE: AtomicU32 = AtomicU32::new(UNINIT);
const UNINIT: u32 = 0;
const CREATING: u32 = 1;
const READY: u32 = 2;
const FAILED: u32 = 3;

/// The segment file's name, written once by the creator (state CREATING) and read after READY.
struct PathCell(UnsafeCell<[u8; PATH_MAX]>);
// SAFETY: written only by the one thread that moved STATE to CREATING, read only after READY.
unsafe impl Sync for PathCell {}
const PATH_MAX: usize = 4096;
static PATH: PathCell = PathCell(UnsafeCell::new([0; PATH_MAX]));
/// Device and inode of the file we created: growing reopens by name and checks both.
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);
/// Held while a thread reserves more slots.
static GROWING: AtomicBool = AtomicBool::new(false);

/// The folder's space looptop never takes: a quarter of it, at least 4 MiB and at most 64 MiB
/// (a quarter of a 24 GiB tmpfs, or of a disk when LOOPTOP_SHM_DIR names one, is more than any
/// program needs kept free).
const RESERVE_MIN: u64 = 4 << 20;
const RESERVE_MAX: u64 = 64 << 20;

/// A mapped segment of this process.
#[derive(Clone, Copy)]
pub(crate) struct Segment(*mut u8);

// SAFETY: the mapping is shared by every thread of the process and only accessed through atomics.
unsafe impl Send for Segment {}

impl Segment {
    /// The header.
    pub(crate) fn header(self) -> &'static Header {
        // SAFETY: the header lies in the base, backed since creation; the mapping lives until
        // exit or fork.
        unsafe { &*(self.0 as *const Header) }
    }

    /// The agent's event ring.
    pub(crate) fn events(self) -> &'static [looptop_abi::Record] {
        // SAFETY: the ring lies inside the backed base, 8-byte aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.0.add(looptop_abi::EVENT_OFFSET) as *const looptop_abi::Record,
                looptop_abi::EVENT_RING,
            )
        }
    }

    /// The watchdog's stack sample ring.
    pub(crate) fn samples(self) -> &'static [looptop_abi::SampleEntry] {
        // SAFETY: the ring lies inside the backed base, 8-byte aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.0.add(looptop_abi::SAMPLE_OFFSET) as *const looptop_abi::SampleEntry,
                looptop_abi::SAMPLE_RING,
            )
        }
    }

    /// The ring of stack copies that go with the samples.
    pub(crate) fn copies(self) -> &'static [looptop_abi::StackCopyEntry] {
        // SAFETY: the ring lies inside the backed base, 8-byte aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.0.add(looptop_abi::COPY_OFFSET) as *const looptop_abi::StackCopyEntry,
                looptop_abi::COPY_RING,
            )
        }
    }

    /// The loop slots whose pages are backed (only these may be touched).
    pub(crate) fn slots(self) -> &'static [LoopSlot] {
        let n = (self.header().backed_slots.load(Ordering::Acquire) as usize).min(LOOP_SLOTS);
        // SAFETY: slots follow the base, 8-byte aligned; the first `backed_slots` are backed.
        unsafe { std::slice::from_raw_parts(self.0.add(looptop_abi::slot_offset(0)) as *const LoopSlot, n) }
    }

    /// Reserves pages for `want` slots (at most [`LOOP_SLOTS`]), or at least one more; false when
    /// not even that is possible (the folder is full or would drop under its reserve, the file is
    /// gone or replaced).
    pub(crate) fn grow(self, want: usize) -> bool {
        let want = want.min(LOOP_SLOTS);
        let h = self.header();
        if h.backed_slots.load(Ordering::Acquire) as usize >= want {
            return true;
        }
        // One grower at a time; the others sleep while it works (a handful of system calls), for
        // at most a second of a loaded machine, then try again at a later wait. Sleeping, not
        // spinning: sixty threads yielding to each other starved the grower on two cores.
        let since = crate::now_ns();
        while GROWING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            if crate::now_ns().saturating_sub(since) > 1_000_000_000 {
                return false;
            }
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
            // SAFETY: the raw system call (not libc's nanosleep, which this library wraps).
            unsafe {
                libc::syscall(libc::SYS_nanosleep, &ts as *const libc::timespec, ptr::null_mut::<libc::timespec>())
            };
        }
        let have = h.backed_slots.load(Ordering::Acquire) as usize;
        // When the folder has no room for the whole step, one more slot may still fit.
        let got = if have >= want {
            have
        } else if reserve_more(have, want) {
            want
        } else if want > have + 1 && reserve_more(have, have + 1) {
            have + 1
        } else {
            have
        };
        let ok = got > have || have >= want;
        if got > have {
            h.backed_slots.store(got as u32, Ordering::Release);
        }
        GROWING.store(false, Ordering::Release);
        ok
    }
}

/// Reopens our segment file by name and reserves `[0, backed_len(want))`.
fn reserve_more(have: usize, want: usize) -> bool {
    let Some(path) = own_path() else { return false };
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    let extra = (backed_len(want) - backed_len(have)) as u64;
    if !space_left_for(path.parent().unwrap_or(Path::new("/")), extra) {
        return false;
    }
    // SAFETY: plain system calls on a NUL-terminated path and the descriptor they return.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let mut st: libc::stat = std::mem::zeroed();
        let same = libc::fstat(fd, &mut st) == 0
            && st.st_dev == DEV.load(Ordering::Relaxed)
            && st.st_ino == INO.load(Ordering::Relaxed);
        let ok = same
            && sys::allowed(sys::Call::Fallocate)
            && libc::posix_fallocate(fd, 0, backed_len(want) as libc::off_t) == 0;
        libc::close(fd);
        ok
    }
}

/// Whether `dir` keeps its reserve after `extra` more bytes (true when it cannot be told).
fn space_left_for(dir: &Path, extra: u64) -> bool {
    if !sys::allowed(sys::Call::Statfs) {
        return true;
    }
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else { return true };
    // SAFETY: statvfs fills a valid struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return true;
    }
    let unit = st.f_frsize.max(1) as u64;
    let total = (st.f_blocks as u64).saturating_mul(unit);
    if total == 0 {
        // A pseudo file system (no blocks to count): creating the file will tell.
        return true;
    }
    let avail = (st.f_bavail as u64).saturating_mul(unit);
    avail >= extra.saturating_add((total / 4).clamp(RESERVE_MIN, RESERVE_MAX))
}

/// Whether the segment can be used now.
pub(crate) enum Ready {
    /// Mapped and initialised.
    Yes(Segment),
    /// Another thread is creating it: try again at the next wait.
    NotYet,
    /// Creation failed: never try again in this process.
    Never,
}

/// Reads the agent's settings from the environment.
pub(crate) fn configure_from_env() {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let keep = var(looptop_abi::ENV_KEEP_SEGMENT);
    let _ = CONFIG.set(Config {
        dir: var(looptop_abi::ENV_SHM_DIR).map(PathBuf::from).unwrap_or_else(|| looptop_abi::DEFAULT_SHM_DIR.into()),
        run_dir: var(looptop_abi::ENV_RUN_DIR).map(PathBuf::from),
        session: var(looptop_abi::ENV_SESSION).and_then(|v| v.to_str()?.parse().ok()).unwrap_or(0),
        keeper: keep.as_ref().and_then(|v| v.to_str()?.parse().ok()).filter(|&p: &u32| p > 1).unwrap_or(0),
        keep: keep.is_some_and(|v| v != "0"),
    });
}

/// The folder of segments.
pub(crate) fn dir() -> Option<&'static Path> {
    CONFIG.get().map(|c| c.dir.as_path())
}

/// Our segment's path (after READY).
fn own_path() -> Option<PathBuf> {
    if STATE.load(Ordering::Acquire) != READY {
        return None;
    }
    // SAFETY: PATH is written before READY is published and never again in this image.
    let bytes = unsafe { &*PATH.0.get() };
    let n = bytes.iter().position(|&b| b == 0)?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..n])))
}

/// The segment if it exists (never creates one).
pub(crate) fn existing() -> Option<Segment> {
    (STATE.load(Ordering::Acquire) == READY).then(|| Segment(BASE.load(Ordering::Acquire)))
}

/// The segment, creating it if this process has none yet.
pub(crate) fn ensure() -> Ready {
    match STATE.load(Ordering::Acquire) {
        READY => return Ready::Yes(Segment(BASE.load(Ordering::Acquire))),
        FAILED => return Ready::Never,
        CREATING => return Ready::NotYet,
        _ => {}
    }
    if !crate::sys::core_allowed() {
        // A seccomp filter of the program's own came after the probe (a fork child's segment).
        return Ready::Never;
    }
    if STATE.compare_exchange(UNINIT, CREATING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Ready::NotYet;
    }
    match create() {
        Ok(base) => {
            BASE.store(base, Ordering::Release);
            STATE.store(READY, Ordering::Release);
            Ready::Yes(Segment(base))
        }
        Err((step, path, errno)) => {
            report_failure(step, &path, errno);
            STATE.store(FAILED, Ordering::Release);
            Ready::Never
        }
    }
}

type Failure = (&'static str, PathBuf, i32);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Creates `looptop-<pid>` with `O_EXCL`: a stale file of ours under that name is removed first;
/// a name taken by anything else (another user's file, a link, a FIFO) is left alone and a
/// random name `looptop-<pid>-<hex>` is used instead. Returns the descriptor and the path.
fn create_file(dir: &Path, pid: u32) -> Result<(libc::c_int, PathBuf), Failure> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let open_excl = |path: &Path| -> Result<libc::c_int, i32> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), flags, 0o600 as libc::c_uint) };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(fd)
        }
    };
    let path = dir.join(format!("{SEGMENT_PREFIX}{pid}"));
    match open_excl(&path) {
        Ok(fd) => return Ok((fd, path)),
        Err(libc::EEXIST) => {
            // Left by an earlier image of this pid (exec) or a dead process whose pid was reused:
            // ours to replace. Anything else under the name — another user's file, the segment
            // of a process of another pid namespace with the same number — is not ours to touch.
            if crate::sweep::is_own_regular(&path) && crate::sweep::same_pid_ns(&path) {
                let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in our own path");
                // SAFETY: a NUL-terminated path.
                unsafe { libc::unlink(c.as_ptr()) };
                if let Ok(fd) = open_excl(&path) {
                    return Ok((fd, path));
                }
            }
        }
        Err(e) => return Err(("create", path, e)),
    }
    let mut last = (path, libc::EEXIST);
    for _ in 0..16 {
        let alt = dir.join(format!("{SEGMENT_PREFIX}{pid}-{:016x}", sys::random_u64()));
        match open_excl(&alt) {
            Ok(fd) => return Ok((fd, alt)),
            Err(e) => last = (alt, e),
        }
    }
    Err(("create", last.0, last.1))
}

fn create() -> Result<*mut u8, Failure> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let dir = dir().ok_or(("configure", PathBuf::new(), 0))?;
    if !sys::allowed(sys::Call::Fallocate) {
        return Err(("reserve", dir.to_path_buf(), libc::EPERM));
    }
    crate::sweep::dead_segments(dir, pid);
    let base_len = backed_len(1);
    if !space_left_for(dir, base_len as u64) {
        return Err(("reserve space for", dir.to_path_buf(), libc::ENOSPC));
    }
    if dir.as_os_str().len() + 64 >= PATH_MAX {
        return Err(("create", dir.to_path_buf(), libc::ENAMETOOLONG));
    }
    let (fd, path) = create_file(dir, pid)?;
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL in our own path");
    // SAFETY: plain syscalls on a NUL-terminated path and the descriptor created above.
    unsafe {
        let fail = |step: &'static str, e: i32| {
            libc::close(fd);
            libc::unlink(c_path.as_ptr());
            Err((step, path.clone(), e))
        };
        // Every page of the base and of slot 0 is reserved now, or the agent steps aside.
        let e = libc::posix_fallocate(fd, 0, base_len as libc::off_t);
        if e != 0 {
            return fail("reserve space for", e);
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return fail("check", errno());
        }
        let base =
            libc::mmap(ptr::null_mut(), SEGMENT_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        if base == libc::MAP_FAILED {
            return fail("map", errno());
        }
        libc::close(fd);
        DEV.store(st.st_dev, Ordering::Relaxed);
        INO.store(st.st_ino, Ordering::Relaxed);
        let buf = &mut *PATH.0.get();
        let bytes = path.as_os_str().as_bytes();
        buf.fill(0);
        buf[..bytes.len()].copy_from_slice(bytes);
        init_header(&mut *(base as *mut Header), pid);
        Ok(base as *mut u8)
    }
}

/// Fills the header; the magic is written last so a reader never trusts a half-written header.
fn init_header(h: &mut Header, pid: u32) {
    let cfg = CONFIG.get();
    h.version = LAYOUT_VERSION;
    h.header_size = std::mem::size_of::<Header>() as u32;
    h.segment_size = SEGMENT_SIZE as u64;
    h.pid = pid;
    h.clock_id = libc::CLOCK_MONOTONIC as u32;
    h.start_time_ticks = own_start_time().unwrap_or(0);
    h.session = cfg.map_or(0, |c| c.session);
    h.stall_floor_ns = super::STALL_FLOOR_NS.load(Ordering::Relaxed);
    h.created_ns = super::now_ns();
    h.loop_slots = LOOP_SLOTS as u32;
    h.alloc_threshold_ns = super::alloc::threshold_ns();
    h.event_offset = looptop_abi::EVENT_OFFSET as u64;
    h.probe_offset = looptop_abi::PROBE_OFFSET as u64;
    h.probe_channels = looptop_abi::PROBE_CHANNELS as u32;
    h.probe_ring = looptop_abi::PROBE_RING as u32;
    h.record_size = looptop_abi::RECORD_SIZE as u32;
    h.slot_size = std::mem::size_of::<LoopSlot>() as u32;
    h.sample_offset = looptop_abi::SAMPLE_OFFSET as u64;
    h.sample_ring = looptop_abi::SAMPLE_RING as u32;
    h.sample_size = looptop_abi::SAMPLE_SIZE as u32;
    h.watch_interval_ns = super::watchdog::interval_ns();
    h.slot_offset = looptop_abi::SLOT_OFFSET as u64;
    h.backed_slots.store(1, Ordering::Relaxed);
    // SAFETY: geteuid has no preconditions.
    h.owner_uid = unsafe { libc::geteuid() };
    h.pid_ns = crate::sweep::own_pid_ns();
    h.keeper_pid = cfg.filter(|c| c.keep).map_or(0, |c| c.keeper);
    let mut flags = 0;
    if crate::perfmap::created_for(pid) {
        flags |= header_flags::PERF_MAP;
    }
    if !sys::signals_allowed() {
        flags |= header_flags::NO_SIGNALS;
    }
    h.flags.store(flags, Ordering::Relaxed);
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        let b = exe.as_os_str().as_bytes();
        let n = b.len().min(h.exe.len() - 1);
        h.exe[..n].copy_from_slice(&b[..n]);
    }
    std::sync::atomic::fence(Ordering::Release);
    // SAFETY: a volatile write keeps the magic store after the fence.
    unsafe { ptr::write_volatile(&mut h.magic, MAGIC) };
}

/// Field 22 of `/proc/self/stat`: start time in clock ticks since boot.
fn own_start_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Tells `looptop run` why this process runs unobserved (a file in its private run folder,
/// created anew: nothing planted there is followed).
pub(crate) fn report_failure(step: &str, path: &Path, errno: i32) {
    let Some(dir) = CONFIG.get().and_then(|c| c.run_dir.as_ref()) else { return };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let file = dir.join(format!("agent-error-{pid}"));
    let Ok(c) = CString::new(file.as_os_str().as_bytes()) else { return };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: a NUL-terminated path; the descriptor is handed to File, which closes it.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = writeln!(f, "{step}\t{errno}\t{}", path.display());
}

/// In a fork child: the inherited mapping is the parent's; drop it and start over lazily.
pub(crate) fn forget_after_fork() {
    GROWING.store(false, Ordering::Relaxed);
    let base = BASE.swap(ptr::null_mut(), Ordering::AcqRel);
    if STATE.load(Ordering::Acquire) == READY && !base.is_null() {
        // SAFETY: unmapping our own mapping in the child only; no thread of the child uses it
        // (the fork generation changed, so cached slots are stale).
        unsafe { libc::munmap(base as *mut libc::c_void, SEGMENT_SIZE) };
    }
    STATE.store(UNINIT, Ordering::Release);
}

/// At exit: stamp the exit time and remove the segment (unless the launcher keeps it), and the
/// perf map the agent made for V8.
pub(crate) fn at_exit(now: u64) {
    if STATE.load(Ordering::Acquire) != READY {
        return;
    }
    let seg = Segment(BASE.load(Ordering::Acquire));
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    if seg.header().pid != pid {
        return;
    }
    seg.header().exited_ns.store(now, Ordering::Release);
    // Kept, or a seccomp filter of the program's own may forbid the removal (a sweep removes it).
    if CONFIG.get().is_some_and(|c| c.keep) || !crate::sys::core_allowed() {
        return;
    }
    if let Some(path) = own_path() {
        crate::sweep::remove_if_same(&path, DEV.load(Ordering::Relaxed), INO.load(Ordering::Relaxed));
    }
    crate::perfmap::remove_own(pid);
}
