//! The symbolizer against real processes: this test binary, libc, node with a perf map, a
//! program whose file was deleted.

use super::*;
use crate::event::KERNEL_ADDRESS_MIN;
use crate::testdir::TempDir;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child killed (and its perf map removed) on drop.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Kills it and waits until it is gone.
    fn end(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.end();
        let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", self.pid()));
    }
}

/// Runs `script` in node with a perf map; returns once it printed `ready`.
fn node(script: &Path) -> Proc {
    let mut child = Command::new("node")
        .args(["--perf-basic-prof", "--interpreted-frames-native-stack"])
        .arg(script)
        // Node 20 with --perf-basic-prof also writes isolate-*-v8.log files where it runs.
        .current_dir(script.parent().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (20 or later) is needed for these tests");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "node did not start");
    Proc(child)
}

const BUSY_JS: &str = "\
function looptopBusyTarget(n) { let s = 0; for (let i = 0; i < n; i++) { s = (s + i * 7) | 0; } return s; }
let iterations = 0;
for (;;) {
  looptopBusyTarget(100000);
  if (++iterations === 300) process.stdout.write('ready\\n');
}
";

/// The newest perf-map entry of `pid` whose name contains `needle`: (start, size).
fn perf_map_entry(pid: u32, needle: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/tmp/perf-{pid}.map")).unwrap();
    let line = text.lines().rev().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle} in the map"));
    let mut it = line.split(' ');
    let start = u64::from_str_radix(it.next().unwrap(), 16).unwrap();
    let size = u64::from_str_radix(it.next().unwrap(), 16).unwrap();
    (start, size)
}

/// The address where `symbol` of executable file `file` is mapped in `pid`.
fn mapped_symbol(pid: u32, file: &Path, symbol: &str) -> u64 {
    mapped_symbol_all(pid, file, symbol)[0]
}

/// Every address where `symbol` of executable file `file` is mapped in `pid` (V8 maps its
/// embedded builtins a second time, next to JIT code).
fn mapped_symbol_all(pid: u32, file: &Path, symbol: &str) -> Vec<u64> {
    use blazesym::inspect::source::{Elf, Source};
    let inspector = blazesym::inspect::Inspector::new();
    let found = inspector.lookup(&Source::Elf(Elf::new(file)), &[symbol]).unwrap();
    let offset = found[0].first().and_then(|s| s.file_offset).unwrap_or_else(|| panic!("{symbol} not in {file:?}"));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut found = Vec::new();
    for l in maps.lines() {
        let f: Vec<&str> = l.split_ascii_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || !l.contains(file.to_str().unwrap()) {
            continue;
        }
        let (s, e) = f[0].split_once('-').unwrap();
        let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
        let off = u64::from_str_radix(f[2], 16).unwrap();
        if (off..off + (e - s)).contains(&offset) {
            found.push(s + offset - off);
        }
    }
    assert!(!found.is_empty(), "{symbol} of {file:?} is not mapped in {pid}");
    found
}

#[inline(never)]
fn looptop_symbolize_probe_fn(x: u64) -> u64 {
    // Nothing of the standard library inlined: its first instructions are this file's lines.
    x ^ 7
}

#[test]
fn names_native_code_of_this_process() {
    let mut s = Symbolizer::new();
    let pid = std::process::id();
    s.observe(pid);
    let probe = looptop_symbolize_probe_fn as fn(u64) -> u64 as usize as u64;
    let getpid = libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize as u64;
    let frames = s.symbolize(pid, &[probe + 1, getpid + 1, 0, 8]);
    assert_eq!(frames.len(), 4);

    let f = &frames[0];
    assert_eq!(f.kind, FrameKind::Native);
    assert!(f.name.ends_with("looptop_symbolize_probe_fn"), "{f:?}");
    assert_eq!(f.module.as_deref(), std::env::current_exe().ok().as_deref().and_then(Path::to_str));
    // This test binary has DWARF: the frame points at this file.
    assert!(f.file.as_deref().is_some_and(|p| p.ends_with("symbolize/tests.rs")), "{f:?}");
    assert!(f.line.is_some(), "{f:?}");

    let f = &frames[1];
    assert_eq!(f.kind, FrameKind::Native);
    assert!(f.name.contains("getpid"), "{f:?}");
    assert!(f.module.as_deref().is_some_and(|m| m.contains("libc")), "{f:?}");

    assert_eq!(frames[2], Frame::unknown(None));
    assert_eq!(frames[3], Frame::unknown(None));

    // Again, from the cache.
    assert_eq!(s.symbolize(pid, &[getpid + 1, probe + 1]), vec![frames[1].clone(), frames[0].clone()]);
}

#[test]
fn names_kernel_addresses() {
    let mut s = Symbolizer::new();
    let frames = s.symbolize(std::process::id(), &[u64::MAX - 1, KERNEL_ADDRESS_MIN]);
    for f in frames {
        assert_eq!(f.kind, FrameKind::Kernel);
        assert_eq!(f.module.as_deref(), Some("[kernel]"));
        assert!(!f.name.is_empty());
    }
}

#[test]
fn names_js_and_node_while_running_and_after_exit() {
    let dir = TempDir::new("symbolize node");
    let script = dir.path("busy: loop.js");
    std::fs::write(&script, BUSY_JS).unwrap();
    let mut node = node(&script);
    let pid = node.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let uv_run = mapped_symbol(pid, &exe, "uv_run");
    let json_parse = mapped_symbol_all(pid, &exe, "Builtins_JsonParse");
    let (start, size) = perf_map_entry(pid, "looptopBusyTarget");

    let check = |frames: &[Frame]| {
        let js = &frames[0];
        assert_eq!(js.kind, FrameKind::Js, "{js:?}");
        assert_eq!(js.name, "looptopBusyTarget");
        assert_eq!(js.file.as_deref(), script.to_str());
        assert_eq!(js.line, Some(1));
        assert!(js.tier.is_some());
        let native = &frames[1];
        assert_eq!(native.kind, FrameKind::Native, "{native:?}");
        assert_eq!(native.name, "uv_run");
        assert_eq!(native.module.as_deref(), exe.to_str());
    };

    // While it runs.
    let mut alive = Symbolizer::new();
    check(&alive.symbolize(pid, &[start + size / 2, uv_run + 4]));
    // Embedded builtins, wherever V8 maps them.
    for f in alive.symbolize(pid, &json_parse.iter().map(|a| a + 1).collect::<Vec<_>>()) {
        assert_eq!((f.name.as_str(), f.kind), ("Builtins_JsonParse", FrameKind::Native));
    }

    // Observed while it runs, asked only after it exited.
    let mut after = Symbolizer::new();
    after.observe(pid);
    node.end();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let (start, size) = perf_map_entry(pid, "looptopBusyTarget");
    check(&after.symbolize(pid, &[start + size - 1, uv_run + 5]));
    let source = after.source_line(pid, script.to_str().unwrap(), 1).unwrap();
    assert!(source.starts_with("function looptopBusyTarget(n)"), "{source}");
}

#[test]
fn a_new_perf_map_line_is_read_on_the_next_lookup() {
    let dir = TempDir::new("symbolize perfmap");
    // A process of ours with no perf map of its own: `sleep`.
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let mut p = Proc(child);
    let pid = p.pid();
    let mut s = Symbolizer::new();
    s.observe(pid);
    let path = format!("/tmp/perf-{pid}.map");
    let addr = 0x1000_0000_0000u64;
    assert_eq!(s.symbolize(pid, &[addr]), vec![Frame::unknown(None)]);
    std::fs::write(
        &path,
        format!("{addr:x} 100 JS:*late {}:3:4\n{:x} 10 Builtin:Part", dir.path("l.js").display(), addr + 0x100),
    )
    .unwrap();
    // Found by the next observation (a refresh does not look for a missing file every time).
    s.observe(pid);
    let f = &s.symbolize(pid, &[addr + 1])[0];
    assert_eq!((f.name.as_str(), f.kind, f.line, f.col), ("late", FrameKind::Js, Some(3), Some(4)));
    assert_eq!(f.module, Some(path.clone()));
    // The partial last line is not read yet; it is once complete.
    assert_eq!(s.symbolize(pid, &[addr + 0x100])[0], Frame::unknown(None));
    let append = |b: &[u8]| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b).unwrap();
    };
    append(b"\n");
    assert_eq!(s.symbolize(pid, &[addr + 0x100])[0].name, "Builtin:Part");
    // New code over old: the next observation (or lookup of an unknown address) reads it, and
    // the name cached for the old code is forgotten.
    append(format!("{:x} 80 JS:^newer /n.js:1:1\n", addr - 0x10).as_bytes());
    assert_eq!(s.symbolize(pid, &[addr + 1])[0].name, "late", "not read yet");
    s.observe(pid);
    assert_eq!(s.symbolize(pid, &[addr + 1])[0].name, "newer");
    append(format!("{addr:x} 10 JS:*newest /n.js:1:1\n").as_bytes());
    assert_eq!(s.symbolize(pid, &[addr + 0x200])[0], Frame::unknown(None), "an unknown address reads the map");
    assert_eq!(s.symbolize(pid, &[addr + 1])[0].name, "newest");
    p.end();
}

#[test]
fn names_code_of_a_deleted_file() {
    let dir = TempDir::new("symbolize deleted");
    let python = std::fs::canonicalize("/usr/bin/python3").expect("python3 is needed for this test");
    let copy = dir.path("python3 copy");
    std::fs::copy(&python, &copy).unwrap();
    let mut child = Command::new(&copy)
        .args(["-c", "import sys; print('ready', flush=True); sys.stdin.read()"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut p = Proc(child);
    let pid = p.pid();
    let addr = mapped_symbol(pid, &copy, "Py_RunMain");
    std::fs::remove_file(&copy).unwrap();
    let map_file = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .find(|l| l.contains("(deleted)") && l.contains(" r-xp "))
        .and_then(|l| {
            let (a, b) = l.split(' ').next()?.split_once('-')?;
            let hex = |s| u64::from_str_radix(s, 16).ok();
            Some(format!("/proc/{pid}/map_files/{:x}-{:x}", hex(a)?, hex(b)?))
        });
    if !map_file.is_some_and(|f| std::fs::File::open(f).is_ok()) {
        eprintln!("SKIP: /proc/{pid}/map_files is not readable here");
        return;
    }
    let mut s = Symbolizer::new();
    s.observe(pid);
    p.end();
    let f = &s.symbolize(pid, &[addr + 1])[0];
    assert_eq!(f.kind, FrameKind::Native, "{f:?}");
    assert_eq!(f.name, "Py_RunMain");
    assert_eq!(f.module.as_deref(), copy.to_str());
}

/// Function symbols of `file` mapped in `pid`: their addresses, `n` of them spread evenly.
fn mapped_functions(pid: u32, file: &Path, n: usize) -> Vec<u64> {
    use blazesym::inspect::source::{Elf, Source};
    let mut src = Elf::new(file);
    src.debug_syms = false;
    let mut offsets = Vec::new();
    blazesym::inspect::Inspector::new()
        .for_each(&Source::Elf(src), |s| {
            if s.sym_type == blazesym::SymType::Function && s.size.unwrap_or(0) > 8 {
                offsets.extend(s.file_offset);
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    offsets.sort();
    offsets.dedup();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let text: Vec<(u64, u64, u64)> = maps
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|p| p.contains('x')) && l.contains(file.to_str().unwrap()))
        .map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let (s, e) = f[0].split_once('-').unwrap();
            let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
            (s, e, u64::from_str_radix(f[2], 16).unwrap())
        })
        .collect();
    let addrs: Vec<u64> = offsets
        .iter()
        .filter_map(|&o| text.iter().find(|t| (t.2..t.2 + t.1 - t.0).contains(&o)).map(|t| t.0 + o - t.2 + 4))
        .collect();
    let step = (addrs.len() / n).max(1);
    addrs.into_iter().step_by(step).take(n).collect()
}

/// Times symbolizing 30 000 stacks of 30 frames drawn from `unique` addresses, with and without
/// DWARF lines. Run with `cargo test --release --lib measure_symbolization -- --ignored --nocapture`.
fn measure(label: &str, pid: u32, unique: &[u64]) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let stacks: Vec<Vec<u64>> =
        (0..30_000).map(|_| (0..30).map(|_| unique[(next() % unique.len() as u64) as usize]).collect()).collect();
    for lines in [false, true] {
        let mut s = Symbolizer::with_native_lines(lines);
        let t = std::time::Instant::now();
        s.observe(pid);
        let observe = t.elapsed();
        let t = std::time::Instant::now();
        let mut named = 0;
        for chunk in unique.chunks(30) {
            named += s.symbolize(pid, chunk).iter().filter(|f| f.kind != FrameKind::Unknown).count();
        }
        let first = t.elapsed();
        let t = std::time::Instant::now();
        let mut with_line = 0;
        for st in &stacks {
            with_line += s.symbolize(pid, st).iter().filter(|f| f.line.is_some()).count();
        }
        let all = t.elapsed();
        eprintln!(
            "{label}: lines={lines}: observe {observe:?}; {} unique addresses ({named} named) {first:?}; \
             30000×30 cached frames {all:?} ({with_line} with a line)",
            unique.len()
        );
    }
}

#[test]
#[ignore = "a measurement, not a test: run it in release with --nocapture"]
fn measure_symbolization() {
    let dir = TempDir::new("symbolize measure");
    let script = dir.path("busy.js");
    std::fs::write(&script, BUSY_JS).unwrap();
    let node = node(&script);
    let exe = std::fs::read_link(format!("/proc/{}/exe", node.pid())).unwrap();
    measure("node", node.pid(), &mapped_functions(node.pid(), &exe, 5000));
    let me = std::process::id();
    measure("this test binary", me, &mapped_functions(me, &std::env::current_exe().unwrap(), 5000));
    // Any ELF file, mapped executable whole by python3 (file offset = address - start).
    if let Some(elf) = std::env::var_os("LOOPTOP_MEASURE_ELF") {
        let mut child = Command::new("python3")
            .args(["-c", "import mmap,sys; f=open(sys.argv[1],'rb'); \
                m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ|mmap.PROT_EXEC); print('ready',flush=True); sys.stdin.read()"])
            .arg(&elf)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let p = Proc(child);
        measure(&elf.to_string_lossy(), p.pid(), &mapped_functions(p.pid(), Path::new(&elf), 5000));
    }
}
