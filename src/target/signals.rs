//! Signals of a launched command: it starts with the signal mask and dispositions looptop itself
//! was started with, and SIGINT/SIGTERM/SIGHUP sent to looptop are passed on to it.
//!
//! Two things change looptop's own signal state before it launches anything: Rust's runtime
//! ignores SIGPIPE before `main`, and [`forward_signals`] blocks SIGINT, SIGTERM and SIGHUP in
//! every thread (a `sigwaitinfo` thread receives them). A child inherits its parent's mask and
//! ignored signals, and std's `Command` resets SIGPIPE to the default but leaves the mask alone, so
//! without care a program under `looptop run` would start with those signals blocked: Ctrl-C and
//! SIGTERM would do nothing. So the state is read at process start, by a constructor in
//! `.init_array` that runs before Rust's runtime, and restored in the child between `fork` and
//! `exec` with raw system calls (async-signal-safe; glibc's wrappers hide its two internal
//! real-time signals, which must be restored too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Signals blocked when looptop started (bit `n - 1` for signal `n`).
static START_BLOCKED: AtomicU64 = AtomicU64::new(0);
/// Signals ignored when looptop started (same bits).
static START_IGNORED: AtomicU64 = AtomicU64::new(0);
/// Whether the two above were read at start.
static READ_AT_START: AtomicBool = AtomicBool::new(false);

/// Runs before `main` (and so before Rust's runtime ignores SIGPIPE): reads the signal state
/// looptop was started with.
#[used]
#[link_section = ".init_array"]
static READ_AT_START_CTOR: extern "C" fn() = read_at_start;

extern "C" fn read_at_start() {
    let (blocked, ignored) = current();
    START_BLOCKED.store(blocked, Ordering::Relaxed);
    START_IGNORED.store(ignored, Ordering::Relaxed);
    READ_AT_START.store(true, Ordering::Release);
}

/// The kernel's `struct sigaction` is at most this many words on Linux (handler, flags, restorer,
/// mask on x86_64 and aarch64); only the handler is read or set, the rest stays zero.
type KernelSigaction = [u64; 8];
/// Size of the kernel's signal set (64 signals).
const SIGSET_SIZE: usize = 8;
/// The highest signal number.
const NSIG: libc::c_int = 64;

/// The calling thread's blocked and ignored signals, as bit sets.
fn current() -> (u64, u64) {
    let mut blocked = 0u64;
    // SAFETY: rt_sigprocmask with no new set only writes the old one into `blocked`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut blocked as *mut u64,
            SIGSET_SIZE,
        )
    };
    let mut ignored = 0u64;
    for sig in 1..=NSIG {
        let mut old: KernelSigaction = [0; 8];
        // SAFETY: rt_sigaction with no new action only writes the old one into `old`, which is
        // larger than the kernel's structure.
        let r = unsafe {
            libc::syscall(libc::SYS_rt_sigaction, sig, std::ptr::null::<u64>(), old.as_mut_ptr(), SIGSET_SIZE)
        };
        if r == 0 && old[0] as usize == libc::SIG_IGN {
            ignored |= 1 << (sig - 1);
        }
    }
    (blocked, ignored)
}

/// The signal state a launched command starts with: looptop's own at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inherited {
    /// Blocked signals (bit `n - 1` for signal `n`).
    pub blocked: u64,
    /// Ignored signals.
    pub ignored: u64,
}

impl Inherited {
    /// The state looptop was started with. Should the constructor not have run, the state now,
    /// less what looptop itself changed (SIGPIPE ignored, the forwarded signals blocked).
    pub fn at_start() -> Inherited {
        // Reading the constructor's slot keeps it linked in whatever object it lands in.
        std::hint::black_box(&READ_AT_START_CTOR);
        if READ_AT_START.load(Ordering::Acquire) {
            return Inherited {
                blocked: START_BLOCKED.load(Ordering::Relaxed),
                ignored: START_IGNORED.load(Ordering::Relaxed),
            };
        }
        let (blocked, ignored) = current();
        let ours = FORWARDED.iter().fold(0u64, |m, &s| m | bit(s));
        Inherited { blocked: blocked & !ours, ignored: ignored & !bit(libc::SIGPIPE) }
    }

    /// Whether `sig` was ignored.
    pub fn ignores(&self, sig: libc::c_int) -> bool {
        self.ignored & bit(sig) != 0
    }

    /// Sets every signal's disposition (ignored or default) and the mask to this state. Called in
    /// the child between `fork` and `exec`: raw system calls only, no allocation, no lock.
    pub fn restore(&self) {
        for sig in 1..=NSIG {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut act: KernelSigaction = [0; 8];
            act[0] = if self.ignores(sig) { libc::SIG_IGN } else { libc::SIG_DFL } as u64;
            // SAFETY: rt_sigaction with a zeroed action but for its handler (no flags, empty
            // mask); failures (a signal the kernel does not let us set) change nothing.
            unsafe {
                libc::syscall(libc::SYS_rt_sigaction, sig, act.as_ptr(), std::ptr::null_mut::<u64>(), SIGSET_SIZE)
            };
        }
        // SAFETY: rt_sigprocmask with a valid 64-bit set and no old set.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.blocked as *const u64,
                std::ptr::null_mut::<u64>(),
                SIGSET_SIZE,
            )
        };
    }
}

fn bit(sig: libc::c_int) -> u64 {
    1u64 << (sig - 1)
}

/// Set once a SIGINT/SIGTERM/SIGHUP reached looptop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Where signals go: the launched command once it runs; until then, those that came.
static FORWARD: Mutex<Forward> = Mutex::new(Forward { pid: 0, pending: Vec::new() });
/// Every signal that would end looptop by default and that a user may send on purpose: passed on
/// to the command, so that looptop never dies of one and leaves the command it started running
/// unobserved (`kill -USR1` meant for the program reaches it).
const FORWARDED: [libc::c_int; 7] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM];
/// Those of them that ask looptop to stop.
const STOPPING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

struct Forward {
    /// The launched command (0: none yet).
    pid: libc::pid_t,
    /// Signals that came before it started: a fast program can be signalled (through looptop)
    /// before `spawn` has returned its pid to us.
    pending: Vec<libc::c_int>,
}

/// True once the user asked looptop to stop (Ctrl-C, SIGTERM, SIGHUP).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Forwards the signals that reach looptop to `pid` (the launched command), starting with those
/// that came while it was being started.
pub fn forward_to(pid: u32) {
    let pending = {
        let mut f = FORWARD.lock().unwrap_or_else(|e| e.into_inner());
        f.pid = pid as libc::pid_t;
        std::mem::take(&mut f.pending)
    };
    for sig in pending {
        // SAFETY: signalling the command we launched.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Blocks the forwarded signals in every thread and starts one thread that receives them with
/// `sigwaitinfo` and passes them on. Call before any other thread starts.
///
/// A signal the terminal sent (Ctrl-C) already reached the target, which shares our process
/// group, so it is not sent twice; one sent by a process (`kill`) is forwarded, also when it came
/// while the command was being started ([`forward_to`] passes it on). A signal looptop
/// was started with ignored (`nohup looptop …`, a background job's SIGINT) stays ignored: it is
/// neither blocked nor waited for (a blocked signal is queued even when ignored). Only the first
/// call does anything.
pub fn forward_signals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(start_forwarding);
}

fn start_forwarding() {
    let start = Inherited::at_start();
    let wanted: Vec<libc::c_int> = FORWARDED.iter().copied().filter(|&s| !start.ignores(s)).collect();
    if wanted.is_empty() {
        return;
    }
    // SAFETY: plain signal-mask calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in &wanted {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::Builder::new()
            .name("looptop-signals".into())
            .spawn(move || loop {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let sig = libc::sigwaitinfo(&set, &mut info);
                if sig < 0 {
                    continue;
                }
                if STOPPING.contains(&sig) {
                    INTERRUPTED.store(true, Ordering::Relaxed);
                }
                if info.si_code == libc::SI_KERNEL {
                    continue;
                }
                let mut f = FORWARD.lock().unwrap_or_else(|e| e.into_inner());
                if f.pid > 0 {
                    libc::kill(f.pid, sig);
                } else if !f.pending.contains(&sig) {
                    f.pending.push(sig);
                }
            })
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_at_start_was_read_before_rusts_runtime_ignored_sigpipe() {
        assert!(READ_AT_START.load(Ordering::Acquire), "the .init_array constructor did not run");
        // The test harness runs with SIGPIPE ignored by Rust's runtime; it was started by cargo,
        // whose own children get SIGPIPE at its default.
        assert!(current().1 & bit(libc::SIGPIPE) != 0);
        assert!(!Inherited::at_start().ignores(libc::SIGPIPE));
    }

    #[test]
    fn bits_are_signal_numbers_minus_one() {
        assert_eq!(bit(libc::SIGHUP), 1);
        assert_eq!(bit(libc::SIGINT) | bit(libc::SIGTERM) | bit(libc::SIGHUP), 0x4003);
        let s = Inherited { blocked: 0, ignored: bit(libc::SIGHUP) };
        assert!(s.ignores(libc::SIGHUP) && !s.ignores(libc::SIGINT));
    }
}
