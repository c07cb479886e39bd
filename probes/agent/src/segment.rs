//! The writer's side of the shared-memory segment: creation (once per process image, lazily
//! again after a fork), exit stamping and removal, and reporting why it could not be created.

use looptop_abi::{Header, LoopSlot, LAYOUT_VERSION, LOOP_SLOTS, MAGIC, SEGMENT_PREFIX, SEGMENT_SIZE};
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::OnceLock;

/// Settings read from the environment by the constructor (inherited by fork children).
struct Config {
    dir: PathBuf,
    run_dir: Option<PathBuf>,
    session: u64,
    keep: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
static BASE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static STATE: AtomicU32 = AtomicU32::new(UNINIT);
const UNINIT: u32 = 0;
const CREATING: u32 = 1;
const READY: u32 = 2;
const FAILED: u32 = 3;

/// A mapped segment of this process.
#[derive(Clone, Copy)]
pub(crate) struct Segment(*mut u8);

// SAFETY: the mapping is shared by every thread of the process and only accessed through atomics.
unsafe impl Send for Segment {}

impl Segment {
    /// The header.
    pub(crate) fn header(self) -> &'static Header {
        // SAFETY: the mapping is SEGMENT_SIZE bytes, page aligned, and lives until exit or fork.
        unsafe { &*(self.0 as *const Header) }
    }

    /// The agent's event ring.
    pub(crate) fn events(self) -> &'static [looptop_abi::Record] {
        // SAFETY: the ring lies inside the mapping, 8-byte aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.0.add(looptop_abi::EVENT_OFFSET) as *const looptop_abi::Record,
                looptop_abi::EVENT_RING,
            )
        }
    }

    /// The watchdog's stack sample ring.
    pub(crate) fn samples(self) -> &'static [looptop_abi::SampleEntry] {
        // SAFETY: the ring lies inside the mapping, 8-byte aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.0.add(looptop_abi::SAMPLE_OFFSET) as *const looptop_abi::SampleEntry,
                looptop_abi::SAMPLE_RING,
            )
        }
    }

    /// The loop slots.
    pub(crate) fn slots(self) -> &'static [LoopSlot] {
        // SAFETY: as above; slots follow the header, 8-byte aligned.
        unsafe { std::slice::from_raw_parts(self.0.add(looptop_abi::slot_offset(0)) as *const LoopSlot, LOOP_SLOTS) }
    }
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
    let _ = CONFIG.set(Config {
        dir: var(looptop_abi::ENV_SHM_DIR).map(PathBuf::from).unwrap_or_else(|| looptop_abi::DEFAULT_SHM_DIR.into()),
        run_dir: var(looptop_abi::ENV_RUN_DIR).map(PathBuf::from),
        session: var(looptop_abi::ENV_SESSION).and_then(|v| v.to_str()?.parse().ok()).unwrap_or(0),
        keep: var(looptop_abi::ENV_KEEP_SEGMENT).is_some_and(|v| v == "1"),
    });
}

fn path_for(pid: u32) -> Option<PathBuf> {
    Some(CONFIG.get()?.dir.join(format!("{SEGMENT_PREFIX}{pid}")))
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

fn create() -> Result<*mut u8, Failure> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let path = path_for(pid).ok_or(("configure", PathBuf::new(), 0))?;
    let fail = |step: &'static str| (step, path.clone(), errno());
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| ("path", path.clone(), libc::EINVAL))?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: plain syscalls on a NUL-terminated path and the fd they return.
    unsafe {
        let mut fd = libc::open(c_path.as_ptr(), flags, 0o600 as libc::c_uint);
        if fd < 0 && errno() == libc::EEXIST {
            // Left by an earlier image of this pid (exec) or a dead process whose pid was reused.
            libc::unlink(c_path.as_ptr());
            fd = libc::open(c_path.as_ptr(), flags, 0o600 as libc::c_uint);
        }
        if fd < 0 {
            return Err(fail("create"));
        }
        if libc::ftruncate(fd, SEGMENT_SIZE as libc::off_t) != 0 {
            let e = fail("size");
            libc::close(fd);
            libc::unlink(c_path.as_ptr());
            return Err(e);
        }
        let base =
            libc::mmap(ptr::null_mut(), SEGMENT_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        let e = fail("map");
        libc::close(fd);
        if base == libc::MAP_FAILED {
            libc::unlink(c_path.as_ptr());
            return Err(e);
        }
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

/// Tells `looptop run` why this process runs unobserved (a file in its run folder).
fn report_failure(step: &str, path: &std::path::Path, errno: i32) {
    let Some(dir) = CONFIG.get().and_then(|c| c.run_dir.as_ref()) else { return };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if let Ok(mut f) = std::fs::File::create(dir.join(format!("agent-error-{pid}"))) {
        let _ = writeln!(f, "{step}\t{errno}\t{}", path.display());
    }
}

/// In a fork child: the inherited mapping is the parent's; drop it and start over lazily.
pub(crate) fn forget_after_fork() {
    let base = BASE.swap(ptr::null_mut(), Ordering::AcqRel);
    if STATE.load(Ordering::Acquire) == READY && !base.is_null() {
        // SAFETY: unmapping our own mapping in the child only; no thread of the child uses it
        // (the fork generation changed, so cached slots are stale).
        unsafe { libc::munmap(base as *mut libc::c_void, SEGMENT_SIZE) };
    }
    STATE.store(UNINIT, Ordering::Release);
}

/// At exit: stamp the exit time and remove the segment (unless the launcher keeps it).
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
    if CONFIG.get().is_some_and(|c| c.keep) {
        return;
    }
    if let Some(path) = path_for(pid) {
        let _ = std::fs::remove_file(path);
    }
}
