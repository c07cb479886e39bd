//! The time per Python stack, read from outside (`Symbolizer::python_stack`: the thread's state
//! looked up, its frames walked with one `process_vm_readv` each, `/proc/PID/task/TID/syscall`
//! read to tell it is not back in its wait) and named (`Symbolizer::python_frames`, code objects
//! already read), on a `python3` spinning 40 calls deep. The agent's watchdog walks the same way
//! inside the process, without the lookup (its thread state is kept) and the `/proc` read.
//! Run: `cargo bench --bench python_walk` (benches/python_cost.sh does).

use looptop::symbolize::Symbolizer;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = "
import sys
def deep(n):
    if n:
        return deep(n - 1)
    print('ready', flush=True)
    while True:
        pass
deep(40)
";

fn main() {
    let mut child = match Command::new("python3").args(["-c", SCRIPT]).stdout(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return println!("python_walk: SKIP: no python3 ({e})"),
    };
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line);
    let pid = child.id();
    let mut sym = Symbolizer::new();
    sym.observe(pid);
    let words = sym.python_stack(pid, pid);
    if words.is_empty() {
        let _ = child.kill();
        return println!("python_walk: SKIP: no Python frames read (not CPython 3.10-3.13, or not permitted)");
    }
    let time = |f: &mut dyn FnMut()| {
        let n = 2000;
        let t0 = Instant::now();
        for _ in 0..n {
            f();
        }
        t0.elapsed() / n
    };
    let read = time(&mut || {
        std::hint::black_box(sym.python_stack(pid, pid));
    });
    let name = time(&mut || {
        std::hint::black_box(sym.python_frames(pid, &words));
    });
    let _ = child.kill();
    let _ = child.wait();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "python_walk: {} frames: read from outside {:.1} µs per stack ({:.2} µs per frame), named {:.1} µs",
        words.len(),
        us(read),
        us(read) / words.len() as f64,
        us(name)
    );
}
