//! Where the tick and off-CPU programs hook into the kernel. The wait calls use their syscall
//! tracepoints. `sched_switch` uses `tp_btf` (a raw tracepoint typed by the kernel's BTF) where
//! it loads, else the classic tracepoint: both run the same code (`looptop.bpf.c`), but the
//! classic one has the kernel format a record at every context switch on the machine before the
//! program can ignore it. (fentry/fexit on the wait calls' functions would spare the machine
//! the syscall tracepoints' slow path too; the kernels we test on refuse them, so they are not
//! used.)

use super::{chain, refused, BpfError};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf};

/// Hooks the wait calls' enters and exits.
pub fn attach_wait_calls(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    for wait in crate::source::waits::WAIT_CALLS {
        // An older kernel without epoll_pwait2, or an architecture without select, has no such
        // tracepoint: not a refusal.
        let required = wait.name != "epoll_pwait2" && wait.nr >= 0;
        attach_syscall(ebpf, wait.name, required, "attaching to a wait call")?;
    }
    Ok(())
}

/// Loads the futex wait programs: a pool worker's park is its idle (tokio's multi-thread
/// scheduler; the program counts only threads it finds to be a pool's workers).
pub fn load_parks(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    for dir in ["enter", "exit"] {
        syscall_program(ebpf, &format!("{dir}_futex"))?
            .load()
            .map_err(|e| refused("loading a tracepoint program")(chain(&e)))?;
    }
    Ok(())
}

/// Hooks the futex waits loaded by [`load_parks`]. They run for every futex call on the
/// machine, so only once a pool is likely.
pub fn attach_parks(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    for dir in ["enter", "exit"] {
        syscall_program(ebpf, &format!("{dir}_futex"))?
            .attach("syscalls", &format!("sys_{dir}_futex"))
            .map_err(|e| refused("attaching to futex waits")(chain(&e)))?;
    }
    Ok(())
}

/// Loads the programs `enter_CALL` and `exit_CALL` and attaches them to the system call's
/// tracepoints; a failed attach is a refusal (`what`) when `required`.
fn attach_syscall(ebpf: &mut Ebpf, call: &str, required: bool, what: &'static str) -> Result<(), BpfError> {
    for dir in ["enter", "exit"] {
        let prog = syscall_program(ebpf, &format!("{dir}_{call}"))?;
        prog.load().map_err(|e| refused("loading a tracepoint program")(chain(&e)))?;
        if let Err(e) = prog.attach("syscalls", &format!("sys_{dir}_{call}")) {
            if required {
                return Err(refused(what)(chain(&e)));
            }
        }
    }
    Ok(())
}

/// The tracepoint program `name`.
fn syscall_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, BpfError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| refused("the program")(format!("{name} is missing")))
}

/// The kernel's BTF for `tp_btf`, unless `LOOPTOP_BPF_HOOKS=tracepoints` asks for the classic
/// tracepoint (to compare the two, or to step around a kernel's bug).
fn kernel_btf() -> Option<Btf> {
    if std::env::var("LOOPTOP_BPF_HOOKS").is_ok_and(|v| v == "tracepoints") {
        return None;
    }
    Btf::from_sys_fs().ok()
}

/// Hooks `sched_switch` for off-CPU time in ticks: `tp_btf` when it loads, else the tracepoint.
pub fn attach_switch(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    if let Some(btf) = kernel_btf() {
        let prog: Option<&mut BtfTracePoint> = ebpf.program_mut("on_switch_btf").and_then(|p| p.try_into().ok());
        if let Some(prog) = prog {
            match prog
                .load("sched_switch", &btf)
                .map_err(|e| chain(&e))
                .and_then(|()| prog.attach().map_err(|e| chain(&e)))
            {
                Ok(_) => return Ok(()),
                // An older kernel (before 5.18 prev_state was not an argument), or no BTF.
                Err(_) => {
                    let _ = prog.unload();
                }
            }
        }
    }
    let prog: &mut TracePoint = ebpf
        .program_mut("on_switch")
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| refused("the program")("on_switch is missing".into()))?;
    prog.load().map_err(|e| refused("loading the off-CPU program")(chain(&e)))?;
    prog.attach("sched", "sched_switch").map_err(|e| refused("attaching to sched_switch")(chain(&e)))?;
    Ok(())
}
