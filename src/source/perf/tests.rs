//! The perf source against real python3 processes and the real kernel.

use super::*;
use crate::event::{Sample, SampleOrigin, KERNEL_ADDRESS_MIN};
use crate::source::now_ns;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A source with `options`, or `None` after printing `SKIP: why` when perf is not permitted here
/// (a failure instead when `LOOPTOP_REQUIRE_PERF=1`).
fn source(options: PerfOptions) -> Option<PerfSource> {
    if let Err(e) = PerfSource::permitted() {
        if std::env::var("LOOPTOP_REQUIRE_PERF").is_ok_and(|v| v == "1") {
            panic!("LOOPTOP_REQUIRE_PERF=1 but perf is not permitted: {e}");
        }
        println!("SKIP: {e}");
        return None;
    }
    Some(PerfSource::new(options).expect("PerfSource::new after permitted()"))
}

/// What a run of a python3 program under the source gave.
struct Run {
    pid: u32,
    samples: Vec<Sample>,
    dropped: u64,
    /// Monotonic window: from before `add_process` to after the last poll.
    t0: u64,
    t1: u64,
    /// What the program printed after `ready`.
    output: String,
}

/// Runs `code` (which prints `ready` once set up), observing it from `ready` until it exits,
/// polling every 50 ms.
fn run_python(src: &mut PerfSource, code: &str) -> Run {
    let mut child = Command::new("python3").args(["-c", code]).stdout(Stdio::piped()).spawn().expect("python3 runs");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let t0 = now_ns();
    src.add_process(pid).expect("add_process");
    let mut events = Vec::new();
    loop {
        src.poll(&mut events);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    src.poll(&mut events);
    let t1 = now_ns();
    assert!(src.processes.is_empty(), "the exited process is dropped");
    let mut output = String::new();
    stdout.read_to_string(&mut output).unwrap();
    let mut samples = Vec::new();
    let mut dropped = 0;
    for e in events {
        match e {
            Event::Sample(s) => samples.push(s),
            Event::Dropped { count } => dropped += count,
            _ => {}
        }
    }
    Run { pid, samples, dropped, t0, t1, output }
}

fn on_cpu(samples: &[Sample]) -> impl Iterator<Item = &Sample> {
    samples.iter().filter(|s| s.origin == SampleOrigin::PerfCpu)
}

#[test]
fn busy_process_gets_cpu_samples_at_the_rate_and_loses_none() {
    let Some(mut src) = source(PerfOptions { off_cpu: false, ..PerfOptions::default() }) else { return };
    let run = run_python(
        &mut src,
        "import time
print('ready', flush=True)
c = time.process_time(); end = time.monotonic() + 1.0
while time.monotonic() < end: pass
print(time.process_time() - c)",
    );
    let cpu_s: f64 = run.output.trim().parse().unwrap();
    let expected = cpu_s * 997.0;
    let samples: Vec<&Sample> = on_cpu(&run.samples).collect();
    println!("cpu-clock: {} samples for {cpu_s:.3} s of CPU at 997 Hz (expected {expected:.0})", samples.len());
    assert!(samples.len() as f64 >= 0.5 * expected, "{} samples, expected {expected:.0}", samples.len());
    assert!(samples.len() as f64 <= 1.3 * expected + 10.0, "{} samples, expected {expected:.0}", samples.len());
    for s in &samples {
        assert_eq!((s.pid, s.tid), (run.pid, run.pid), "python's only thread");
        assert!(!s.ips.is_empty(), "callchain");
        assert!(s.ips.iter().all(|&ip| ip < sys::PERF_CONTEXT_MAX), "markers stripped");
        assert!((run.t0..=run.t1).contains(&s.t_ns), "{} outside [{}, {}]", s.t_ns, run.t0, run.t1);
        // cpu-clock turns 997 Hz into a fixed period of 1e9 / 997 ns.
        assert!((900_000..1_100_000).contains(&s.weight_ns), "period {}", s.weight_ns);
        assert_eq!(s.off_cpu, None);
    }
    assert!(samples.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "in time order");
    assert_eq!(src.lost(), 0);
    assert_eq!(run.dropped, 0);
}

#[test]
fn thread_started_after_add_process_is_sampled() {
    let Some(mut src) = source(PerfOptions { off_cpu: false, ..PerfOptions::default() }) else { return };
    let run = run_python(
        &mut src,
        "import threading, time
print('ready', flush=True)
time.sleep(0.3)
def busy():
    c = time.thread_time(); end = time.monotonic() + 0.7
    while time.monotonic() < end: pass
    print(threading.get_native_id(), time.thread_time() - c)
t = threading.Thread(target=busy); t.start(); t.join()",
    );
    let mut words = run.output.split_whitespace();
    let tid: u32 = words.next().unwrap().parse().unwrap();
    let cpu_s: f64 = words.next().unwrap().parse().unwrap();
    assert_ne!(tid, run.pid);
    let expected = cpu_s * 997.0;
    let n = on_cpu(&run.samples).filter(|s| s.tid == tid && s.pid == run.pid && !s.ips.is_empty()).count();
    println!("late thread: {n} samples for {cpu_s:.3} s of CPU at 997 Hz (expected {expected:.0})");
    // The thread is picked up at the first poll after it starts (≤ 50 ms of 700 ms missed).
    assert!(n as f64 >= 0.5 * expected, "{n} samples, expected {expected:.0}");
}

#[test]
fn sleeps_become_off_cpu_samples_weighing_the_sleep() {
    let Some(mut src) = source(PerfOptions::default()) else { return };
    let run = run_python(
        &mut src,
        "import time
print('ready', flush=True)
for _ in range(5): time.sleep(0.2)",
    );
    let off: Vec<&Sample> =
        run.samples.iter().filter(|s| s.origin == SampleOrigin::PerfOffCpu && s.tid == run.pid).collect();
    let sleeps: Vec<&&Sample> = off.iter().filter(|s| (150_000_000..250_000_000).contains(&s.weight_ns)).collect();
    let weights: Vec<f64> = sleeps.iter().map(|s| s.weight_ns as f64 / 1e6).collect();
    println!("off-CPU: {} samples, {} of them ~200 ms: {weights:.1?} ms", off.len(), sleeps.len());
    // The first sleep may begin before add_process.
    assert!(sleeps.len() >= 4, "{} sleeps of ~200 ms among {} off-CPU samples", sleeps.len(), off.len());
    for s in &sleeps {
        assert!(s.off_cpu.is_some());
        assert!((run.t0..=run.t1).contains(&s.t_ns));
        assert!(s.t_ns + s.weight_ns <= run.t1);
        assert!(s.ips.iter().any(|&ip| ip < KERNEL_ADDRESS_MIN), "user frames");
        if src.setup.kernel {
            assert!(s.ips[0] >= KERNEL_ADDRESS_MIN, "kernel frames first: {:x?}", s.ips);
        }
    }
    assert!(sleeps.windows(2).all(|w| w[1].t_ns - w[0].t_ns >= 190_000_000), "one sample per sleep");
    assert_eq!(src.lost(), 0);
}

#[test]
fn a_missing_pid_is_no_such_process() {
    let Some(mut src) = source(PerfOptions { off_cpu: false, ..PerfOptions::default() }) else { return };
    // Above the largest pid_max (2^22).
    let err = src.add_process(1 << 23).unwrap_err();
    assert!(matches!(err, PerfError::NoSuchProcess(pid) if pid == 1 << 23), "{err:?}");
    assert_eq!(err.to_string(), "no process with pid 8388608");
}

/// Polls every 20 ms for up to 2 s until `done`.
fn poll_until(src: &mut PerfSource, events: &mut Vec<Event>, mut done: impl FnMut(&PerfSource) -> bool) -> bool {
    for _ in 0..100 {
        src.poll(events);
        if done(src) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn an_exited_thread_is_drained_then_closed() {
    let Some(mut src) = source(PerfOptions::default()) else { return };
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, threading, time
def busy():
    end = time.monotonic() + 0.2
    while time.monotonic() < end: pass
t = threading.Thread(target=busy); t.start()
print(t.native_id, flush=True)
t.join()
sys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let tid: u32 = line.trim().parse().unwrap();
    src.add_process(pid).expect("add_process");
    let mut events = Vec::new();
    let gone = |tid| !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists();
    assert!(poll_until(&mut src, &mut events, |_| gone(tid)), "thread {tid} did not exit");
    src.poll(&mut events);
    let n = events.iter().filter(|e| matches!(e, Event::Sample(s) if s.tid == tid)).count();
    assert!(src.processes[&pid].threads.contains_key(&pid), "main thread still sampled");
    assert!(!src.processes[&pid].threads.contains_key(&tid), "exited thread closed");
    // Started before add_process, busy ~200 ms: most of its samples arrive, drained before closing.
    println!("exited thread: {n} samples");
    assert!(n >= 50, "{n} samples of the exited thread");
    drop(child.stdin.take());
    child.wait().unwrap();
    src.poll(&mut events);
    assert!(src.processes.is_empty());
}

#[test]
fn a_full_ring_is_counted_as_lost_and_dropped() {
    let Some(mut src) = source(PerfOptions::default()) else { return };
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import time
print('ready', flush=True)
for _ in range(20000): time.sleep(1e-6)
print('overflowed', flush=True)
time.sleep(0.2)
for _ in range(50): time.sleep(0.001)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    src.add_process(child.id()).expect("add_process");
    // Not polling while it switches 20 000 times: the off-CPU ring fills up. The kernel writes
    // the LOST record once there is room again, after the next poll.
    stdout.read_line(&mut line).unwrap();
    let mut events = Vec::new();
    while child.try_wait().unwrap().is_none() {
        src.poll(&mut events);
        std::thread::sleep(Duration::from_millis(20));
    }
    src.poll(&mut events);
    let dropped: u64 = events.iter().map(|e| if let Event::Dropped { count } = e { *count } else { 0 }).sum();
    println!("lost {} records, {dropped} reported as Dropped", src.lost());
    assert!(src.lost() > 0);
    assert_eq!(dropped, src.lost());
}
