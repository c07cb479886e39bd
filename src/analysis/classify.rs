//! Naming the blocker of a stall from the stacks sampled during it: each sample gets the kind of
//! the innermost frame that matches a row of [`super::rules::RULES`] — unless that is work done on
//! behalf of an enclosing operation (a GC or allocator pause inside `JSON.parse` belongs to the
//! parse) — and the stall gets the most common kind, the share of samples that agree
//! (confidence) and the first user frame.

use super::rules::{BlockerKind, RULES, SYSCALLS};
use crate::event::OffCpu;
use crate::symbolize::{Frame, FrameKind};

/// The kind of one sample: the matching frame of the most specific rank (innermost among equals;
/// see [`rank`]), then the syscall it sleeps in, then `cpu` (on-CPU) or `sync-wait` (off-CPU).
/// `frames` are innermost first.
pub fn sample_kind(frames: &[&Frame], off_cpu: Option<&OffCpu>) -> (BlockerKind, bool) {
    let matched = frames.iter().filter_map(|f| RULES.iter().find(|r| r.matches(f))).map(|r| r.kind);
    // `min_by_key` keeps the first (innermost) of equal ranks.
    if let Some(kind) = matched.min_by_key(|k| rank(*k)) {
        return (kind, true);
    }
    match off_cpu {
        Some(off) => {
            let kind = off
                .syscall
                .and_then(|nr| SYSCALLS.iter().find(|(n, _)| *n == nr))
                .map_or(BlockerKind::SyncWait, |(_, k)| *k);
            (kind, true)
        }
        None => (BlockerKind::Cpu, false),
    }
}

/// How a kind ranks when frames of several kinds are on one stack (lower wins). An operation the
/// program asked for (regex, JSON, sync crypto/zlib/fs) is the blocker even when the sample
/// caught the GC it triggered by allocating, the allocator under it, or a lock the GC waits on;
/// a GC is the blocker of the allocator work and helper-thread waits inside it.
fn rank(kind: BlockerKind) -> u8 {
    match kind {
        BlockerKind::Gc => 1,
        BlockerKind::Alloc => 2,
        BlockerKind::SyncWait => 3,
        _ => 0,
    }
}

/// Whether a frame is the user's code rather than the runtime's: a JS function outside Node's
/// own `node:` modules, a Python function outside the standard library and installed packages,
/// or native code in `user_module` (the executable of a program that is not a runtime; its
/// libraries are not the user's code).
pub fn is_user_frame(f: &Frame, user_module: Option<&str>) -> bool {
    match f.kind {
        FrameKind::Js => f.file.as_deref().is_some_and(|file| {
            !file.is_empty()
                && !file.starts_with("node:")
                && !file.starts_with("internal/")
                // looptop's own runtime probe, which wraps the pool entry points.
                && !file.contains("liblooptop_agent")
                && f.line.is_some()
        }),
        FrameKind::Python => f.file.as_deref().is_some_and(crate::symbolize::python::is_user_file),
        FrameKind::Native => {
            user_module.is_some_and(|m| f.module.as_deref() == Some(m))
                && !f.name.starts_with('[')
                && !matches!(f.name.as_str(), "main" | "_start" | "__libc_start_main" | "__libc_start_call_main")
        }
        _ => false,
    }
}

/// Whether native code counts as the user's in a process running `exe`: not for runtimes whose
/// own frames are the interpreter (node, python, ruby …).
pub fn native_is_user(exe: &str) -> bool {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    !["node", "nodejs", "python", "pypy", "ruby", "deno", "bun", "java"].iter().any(|r| base.starts_with(r))
}

/// A sample as the stall classifier sees it.
pub struct ClassSample<'a> {
    /// Frames, innermost first.
    pub frames: Vec<&'a Frame>,
    /// Set when the thread was off-CPU.
    pub off_cpu: Option<&'a OffCpu>,
    /// The module whose native frames are the user's code (the program's executable, unless it
    /// is a runtime such as node or python).
    pub user_module: Option<&'a str>,
    /// Time the sample stands for (ns): kinds are weighed by time, not by sample count.
    pub weight_ns: u64,
}

/// What a stall was doing.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The blocker kind.
    pub kind: BlockerKind,
    /// Share of the stall's sampled time of that kind.
    pub confidence: f64,
    /// The frame to show: the first user frame of the samples of that kind, or the innermost frame
    /// that matched the rule, or the leaf.
    pub frame: Frame,
}

/// The least share of a stall's sampled time the samples that tell (matched a rule, or a whole
/// stack) must hold for their kind to win over the broken stacks that match nothing: enough for
/// CPython 3.11's `json.loads` attached (a sixth of its samples keep the scanner's frame), not
/// for one `write` among 190 samples of unnamed JIT code.
const MIN_TELLING_SHARE: f64 = 0.05;

/// Classifies a stall from its samples; `None` without samples (never a guess).
pub fn classify(samples: &[ClassSample]) -> Option<Verdict> {
    if samples.is_empty() {
        return None;
    }
    let kinds: Vec<(BlockerKind, bool)> = samples.iter().map(|s| sample_kind(&s.frames, s.off_cpu)).collect();
    let total = samples.iter().map(|s| s.weight_ns.max(1)).fold(0, u64::saturating_add);
    // A broken stack that matched nothing cannot tell `cpu` from an operation whose frames were
    // cut off: it votes only when no sample could tell.
    let tells = |(s, (_, matched)): &(&ClassSample, &(BlockerKind, bool))| *matched || !is_truncated(&s.frames);
    let tally = |all_vote: bool| {
        let mut counts: Vec<(BlockerKind, u64)> = Vec::new();
        for (s, (k, _)) in samples.iter().zip(&kinds).filter(|v| all_vote || tells(v)) {
            let w = s.weight_ns.max(1);
            match counts.iter_mut().find(|(c, _)| c == k) {
                Some((_, n)) => *n = n.saturating_add(w),
                None => counts.push((*k, w)),
            }
        }
        // Most samples wins; on a tie the specific kind (not cpu) wins, then table order.
        counts.sort_by(|a, b| {
            b.1.cmp(&a.1).then((a.0 == BlockerKind::Cpu).cmp(&(b.0 == BlockerKind::Cpu))).then(a.0.cmp(&b.0))
        });
        counts[0]
    };
    let (mut kind, mut n) = tally(!samples.iter().zip(&kinds).any(|v| tells(&v)));
    // A kind the broken stacks outvote many times over (one `write` at the end of a stall whose
    // other samples ran unnamed JIT code) is not what the stall did: they were running code.
    if (n as f64) < MIN_TELLING_SHARE * total as f64 {
        (kind, n) = tally(true);
    }
    let chosen: Vec<&ClassSample> = samples.iter().zip(&kinds).filter(|(_, k)| k.0 == kind).map(|(s, _)| s).collect();
    let frame = representative_frame(&chosen, samples, kind)?;
    Some(Verdict { kind, confidence: n as f64 / total as f64, frame })
}

/// Whether a stack was cut short: the frame-pointer walk ended at an address in no mapping, or
/// after a few frames without reaching a thread's start (code built without frame pointers).
fn is_truncated(frames: &[&Frame]) -> bool {
    const ROOTS: [&str; 7] =
        ["_start", "__libc_start_main", "__libc_start_call_main", "start_thread", "clone", "clone3", "__clone"];
    let Some(outer) = frames.last() else { return true };
    // The interpreter's own chain of Python frames is whole, whatever the native walk found.
    if frames.iter().any(|f| f.kind == FrameKind::Python) {
        return false;
    }
    let root = ROOTS
        .iter()
        .any(|r| outer.name.strip_prefix(r).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '@', '.'])));
    (outer.name == "[unknown]" && outer.module.is_none()) || (!root && frames.len() < 8)
}

/// The most common first user frame among `samples` (named after its callee when V8 ran that
/// callee unnamed, see [`named_callee`]); else the most common innermost Python frame; else the
/// most common innermost user-space frame that matched a rule; else the most common innermost
/// named user-space frame; else the same in the kernel (or the leaf). The kernel's functions
/// (`do_nanosleep`, `handle_mm_fault`) say how the thread waited, not whose code asked: they are
/// shown only when the stacks have nothing else. `all`: the stall's samples.
fn representative_frame(samples: &[&ClassSample], all: &[ClassSample], kind: BlockerKind) -> Option<Frame> {
    let user: Vec<(&Frame, bool)> =
        samples.iter().filter(|s| !dispatched(s, kind)).filter_map(|s| first_user(s)).collect();
    if let Some(f) = most_common(user.iter().map(|u| u.0)) {
        let hiding = user.iter().filter(|u| u.0.same_function(f) && u.1).count();
        if hiding * 2 > user.iter().filter(|u| u.0.same_function(f)).count() {
            if let Some(callee) = named_callee(all, f) {
                return Some(callee.clone());
            }
        }
        return Some(f.clone());
    }
    // Python code that is all library (a stall inside asyncio or a framework): its innermost
    // Python frame, which still says more than the interpreter's C function.
    let python = samples.iter().filter_map(|s| s.frames.iter().find(|f| f.kind == FrameKind::Python).copied());
    if let Some(f) = most_common(python) {
        return Some(f.clone());
    }
    let matches = |f: &&&Frame| RULES.iter().any(|r| r.kind == kind && r.matches(f));
    let named = |f: &&&Frame| !f.name.starts_with('[');
    let user_space = |f: &&&Frame| f.kind != FrameKind::Kernel;
    let innermost = |pick: &dyn Fn(&&&Frame) -> bool| {
        most_common(samples.iter().filter_map(|s| s.frames.iter().find(|f| pick(f)).copied())).cloned()
    };
    innermost(&|f| user_space(f) && matches(f))
        .or_else(|| innermost(&|f| user_space(f) && named(f)))
        .or_else(|| innermost(&matches))
        .or_else(|| innermost(&named))
        .or_else(|| most_common(samples.iter().filter_map(|s| s.frames.first().copied())).cloned())
}

/// Whether a sample's first user frame is native code of the executable that only dispatched
/// to another program's code which did the work of `kind`: between the frame that matched the
/// kind's rule and the executable's frame lie frames of a third module (nginx calling its perl
/// module, which runs Perl's regex engine; its njs module, which runs PCRE2). The executable's
/// frame is then no one's code to change; the frame that did the work says more. A program that
/// calls the library itself (its handler calling `regexec` or `pcre2_match`) keeps its frame.
fn dispatched(s: &ClassSample, kind: BlockerKind) -> bool {
    let Some(user) = s.frames.iter().position(|f| is_user_frame(f, s.user_module)) else { return false };
    if s.frames[user].kind != FrameKind::Native {
        return false;
    }
    let matched = s.frames[..user]
        .iter()
        .position(|f| f.kind != FrameKind::Kernel && RULES.iter().any(|r| r.kind == kind && r.matches(f)));
    let Some(m) = matched else { return false };
    let work = s.frames[m].module.as_deref();
    s.frames[m + 1..user].iter().any(|f| {
        f.kind == FrameKind::Native
            && f.module.as_deref() != work
            && !f.module.as_deref().is_some_and(is_system_library)
    })
}

/// The C and C++ runtime's own libraries, which any code calls through.
fn is_system_library(module: &str) -> bool {
    let base = module.rsplit('/').next().unwrap_or(module);
    ["libc.so", "libc-", "libm.so", "libpthread", "ld-linux", "libstdc++", "libgcc_s", "libdl", "librt", "[vdso]"]
        .iter()
        .any(|p| base.starts_with(p))
}

/// The first user frame of a sample, and whether V8 ran JavaScript without a name inside it.
fn first_user<'a>(s: &ClassSample<'a>) -> Option<(&'a Frame, bool)> {
    let i = s.frames.iter().position(|f| is_user_frame(f, s.user_module))?;
    Some((s.frames[i], s.frames[..i].iter().any(|f| is_unnamed_js(f))))
}

/// A frame of V8's generic interpreter: an interpreted function it resumed after a
/// deoptimization (or entered before its named trampoline copy existed) runs there, and the perf
/// map cannot say which.
fn is_unnamed_js(f: &Frame) -> bool {
    const GENERIC: [&str; 3] =
        ["InterpreterEntryTrampoline", "InterpreterEnterAtBytecode", "InterpreterEnterAtNextBytecode"];
    let name = f.name.strip_prefix("Builtins_").or_else(|| f.name.strip_prefix("Builtin:")).unwrap_or("");
    GENERIC.iter().any(|g| name.starts_with(g))
}

/// The function that ran unnamed inside `caller`, from the other samples of the stall: the most
/// common named user function they show called directly from `caller`.
fn named_callee<'a>(all: &[ClassSample<'a>], caller: &Frame) -> Option<&'a Frame> {
    let callees = all.iter().filter_map(|s| {
        let i = s.frames.iter().position(|f| is_user_frame(f, s.user_module))?;
        if s.frames[..i].iter().any(|f| is_unnamed_js(f)) {
            return None;
        }
        let outer = s.frames[i + 1..].iter().find(|f| is_user_frame(f, s.user_module))?;
        (outer.same_function(caller) && !s.frames[i].same_function(caller)).then_some(s.frames[i])
    });
    most_common(callees)
}

/// A function's count, and the count of each of its frames that knows the line running.
type Tally<'a> = (&'a Frame, usize, Vec<(&'a Frame, usize)>);

/// The most common function among `frames`, given as its most common frame that knows the line
/// that was running (V8 knows it for some samples only), else as the function.
fn most_common<'a>(frames: impl Iterator<Item = &'a Frame>) -> Option<&'a Frame> {
    let mut counts: Vec<Tally<'a>> = Vec::new();
    for f in frames {
        let i = match counts.iter().position(|(c, _, _)| c.same_function(f)) {
            Some(i) => i,
            None => {
                counts.push((f, 0, Vec::new()));
                counts.len() - 1
            }
        };
        let (_, n, lines) = &mut counts[i];
        *n += 1;
        if f.exec_line.is_some() {
            match lines.iter_mut().find(|(l, _)| *l == f) {
                Some((_, k)) => *k += 1,
                None => lines.push((f, 1)),
            }
        }
    }
    let (f, _, lines) = counts.into_iter().max_by_key(|(_, n, _)| *n)?;
    Some(lines.into_iter().max_by_key(|(_, k)| *k).map_or(f, |(l, _)| l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::rules::{On, Pat};

    fn frame(kind: FrameKind, name: &str) -> Frame {
        Frame { name: name.into(), kind, module: None, file: None, line: None, col: None, tier: None, exec_line: None }
    }

    fn js(name: &str, file: &str, line: u32) -> Frame {
        Frame { file: Some(file.into()), line: Some(line), col: Some(1), ..frame(FrameKind::Js, name) }
    }

    /// A frame each rule must match: built from the row's own pattern.
    fn example_for(rule: &crate::analysis::rules::Rule) -> Frame {
        let name = match rule.pat {
            Pat::Prefix(p) => format!("{p}Something"),
            Pat::Contains(p) => format!("ns::{p}Thing(int)"),
            Pat::Exact(p) => format!("{p} [clone .cold]"),
        };
        let kind = match rule.on {
            On::Js => FrameKind::Js,
            On::Code if name.starts_with("RegExp:") || name.starts_with("Builtin:") => FrameKind::V8Code,
            On::Code => FrameKind::Native,
            On::Kernel => FrameKind::Kernel,
            On::Python => FrameKind::Python,
        };
        Frame { file: Some("/app/x.js".into()), line: Some(1), ..frame(kind, &name) }
    }

    /// Every row of the table classifies a sample whose only frame it matches, and no row matches
    /// a frame of another sort (JS rows never match native frames and vice versa).
    #[test]
    fn every_rule_row_classifies_its_frame() {
        for rule in RULES {
            let f = example_for(rule);
            let (kind, matched) = sample_kind(&[&f], None);
            let first = RULES.iter().find(|r| r.matches(&f)).unwrap();
            assert!(matched, "{rule:?} did not match {f:?}");
            assert_eq!(kind, first.kind, "{rule:?}: an earlier row of another kind took {f:?}");
            assert_eq!(kind, rule.kind, "{rule:?} is shadowed by {first:?}");
            let other = Frame { kind: if f.kind == FrameKind::Js { FrameKind::Native } else { FrameKind::Js }, ..f };
            if rule.on != On::Js && rule.on != On::Code {
                continue;
            }
            assert!(!rule.matches(&other) || rule.on == On::Code && other.kind == FrameKind::V8Code);
        }
    }

    #[test]
    fn exact_rows_do_not_match_longer_names() {
        let f = frame(FrameKind::Native, "deflateInit2_");
        assert_eq!(sample_kind(&[&f], None), (BlockerKind::Cpu, false));
        let f = frame(FrameKind::Native, "deflate");
        assert_eq!(sample_kind(&[&f], None).0, BlockerKind::SyncZlib);
    }

    #[test]
    fn the_operation_owns_the_gc_it_triggers() {
        let gc = frame(FrameKind::Native, "v8::internal::Heap::CollectGarbage(v8::internal::AllocationSpace)");
        let parse = frame(FrameKind::Native, "v8::internal::JsonParser<unsigned char>::ParseJson()");
        let lock = frame(FrameKind::Native, "__futex_abstimed_wait_common64");
        let busy = js("churn", "/srv/app.js", 3);
        assert_eq!(sample_kind(&[&gc, &parse], None).0, BlockerKind::JsonParse);
        assert_eq!(sample_kind(&[&parse, &gc], None).0, BlockerKind::JsonParse);
        assert_eq!(sample_kind(&[&lock, &gc, &busy], None).0, BlockerKind::Gc);
        assert_eq!(sample_kind(&[&lock, &gc, &parse], None).0, BlockerKind::JsonParse);
    }

    #[test]
    fn the_frame_shown_is_in_user_space_unless_the_stacks_have_nothing_else() {
        let kernel = frame(FrameKind::Kernel, "do_nanosleep");
        let switch = frame(FrameKind::Kernel, "finish_task_switch.isra.0");
        let libc = Frame {
            module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()),
            ..frame(FrameKind::Native, "__GI___clock_nanosleep")
        };
        let unknown = frame(FrameKind::Unknown, "[unknown]");
        let off = OffCpu { syscall: Some(230), wchan: None };
        let sample = |frames| ClassSample { frames, off_cpu: Some(&off), user_module: None, weight_ns: 1 };
        let v = classify(&[sample(vec![&switch, &kernel, &libc, &unknown]), sample(vec![&kernel, &libc])]).unwrap();
        assert_eq!(v.kind, BlockerKind::SyncWait);
        assert_eq!(v.frame.name, "__GI___clock_nanosleep", "not the kernel's do_nanosleep");
        let v = classify(&[sample(vec![&switch, &kernel, &unknown])]).unwrap();
        assert_eq!(v.frame.name, "do_nanosleep", "the kernel's frame when the stack has nothing else");
    }

    #[test]
    fn innermost_of_two_operations_decides() {
        let regex = frame(FrameKind::Native, "v8::internal::IrregexpInterpreter::MatchInternal");
        let parse = frame(FrameKind::Native, "v8::internal::JsonParser<unsigned char>::ParseJson()");
        assert_eq!(sample_kind(&[&regex, &parse], None).0, BlockerKind::Regex);
        assert_eq!(sample_kind(&[&parse, &regex], None).0, BlockerKind::JsonParse);
    }

    #[test]
    fn off_cpu_samples_fall_back_to_their_syscall() {
        let leaf = frame(FrameKind::Native, "[unknown]");
        let futex = OffCpu { syscall: Some(202), wchan: None };
        assert_eq!(sample_kind(&[&leaf], Some(&futex)).0, BlockerKind::SyncWait);
        let read = OffCpu { syscall: Some(0), wchan: None };
        assert_eq!(sample_kind(&[&leaf], Some(&read)).0, BlockerKind::SyncFs);
        let unknown = OffCpu { syscall: None, wchan: None };
        assert_eq!(sample_kind(&[&leaf], Some(&unknown)).0, BlockerKind::SyncWait);
    }

    #[test]
    fn a_stall_takes_the_majority_kind_and_the_first_user_frame() {
        let regex = frame(FrameKind::Native, "v8::internal::IrregexpInterpreter::MatchInternal");
        let user = js("validateEmail", "/srv/app.js", 12);
        let internal = js("listOnTimeout", "node:internal/timers", 500);
        let busy = js("spin", "/srv/app.js", 3);
        let gc = frame(FrameKind::Native, "v8::internal::Scavenger::Process");
        let mut samples = Vec::new();
        for _ in 0..8 {
            samples.push(ClassSample {
                frames: vec![&regex, &user, &internal],
                off_cpu: None,
                user_module: None,
                weight_ns: 1,
            });
        }
        samples.push(ClassSample { frames: vec![&gc, &busy], off_cpu: None, user_module: None, weight_ns: 1 });
        samples.push(ClassSample { frames: vec![&busy, &internal], off_cpu: None, user_module: None, weight_ns: 1 });
        let v = classify(&samples).unwrap();
        assert_eq!(v.kind, BlockerKind::Regex);
        assert!((v.confidence - 0.8).abs() < 1e-9);
        assert_eq!(v.frame.name, "validateEmail");
        assert!(classify(&[]).is_none());
    }

    #[test]
    fn the_function_most_samples_show_is_named_at_the_line_most_of_those_that_know_one_show() {
        let regex = frame(FrameKind::Native, "v8::internal::IrregexpInterpreter::MatchInternal");
        let start = js("validateEmail", "/srv/app.js", 12);
        let at = |line| Frame { exec_line: Some(line), ..start.clone() };
        let (line14, line15) = (at(14), at(15));
        let other = js("spin", "/srv/app.js", 3);
        let other_running = Frame { exec_line: Some(4), ..other.clone() };
        let sample = |f| ClassSample { frames: vec![&regex, f], off_cpu: None, user_module: None, weight_ns: 1 };
        // validateEmail in 6 samples (3 with no line, 2 at 14, 1 at 15); spin in 4, all at line 4.
        let mut samples: Vec<ClassSample> = [&start, &start, &start, &line14, &line14, &line15].map(sample).into();
        samples.extend([&other_running, &other_running, &other_running, &other_running].map(sample));
        let v = classify(&samples).unwrap();
        assert_eq!(v.frame, line14, "the function with most samples, at its most common line");
        assert_eq!(v.frame.running_location().as_deref(), Some("/srv/app.js:14"));
        // No sample knows the line: the function's start.
        let v = classify(&[&start, &start].map(sample)).unwrap();
        assert_eq!((v.frame.exec_line, v.frame.running_location().as_deref()), (None, Some("/srv/app.js:12:1")));
    }

    #[test]
    fn a_busy_loop_with_a_little_gc_is_cpu() {
        let busy = js("spin", "/srv/app.js", 3);
        let gc = frame(FrameKind::Native, "v8::internal::Scavenger::Process");
        let start = frame(FrameKind::Native, "_start");
        let mut samples =
            vec![ClassSample { frames: vec![&gc, &busy, &start], off_cpu: None, user_module: None, weight_ns: 1 }];
        for _ in 0..5 {
            samples.push(ClassSample { frames: vec![&busy, &start], off_cpu: None, user_module: None, weight_ns: 1 });
        }
        let v = classify(&samples).unwrap();
        assert_eq!(v.kind, BlockerKind::Cpu);
        assert_eq!(v.frame.name, "spin");
    }

    /// Without frame pointers (CPython 3.11) a walk stops after a frame or two: those samples
    /// show where the CPU was, not for whom, and only the ones that match a rule decide.
    #[test]
    fn broken_stacks_that_match_nothing_do_not_vote_for_cpu() {
        let scan = frame(FrameKind::Native, "scan_once_unicode");
        let garbage = frame(FrameKind::Native, "[unknown]");
        let dict = frame(FrameKind::Native, "insertdict");
        let sample = |frames| ClassSample { frames, off_cpu: None, user_module: None, weight_ns: 1 };
        let mut samples = vec![sample(vec![&scan, &garbage]), sample(vec![&scan, &garbage])];
        for _ in 0..5 {
            samples.push(sample(vec![&dict, &garbage]));
            samples.push(sample(vec![&dict]));
        }
        let v = classify(&samples).unwrap();
        assert_eq!(v.kind, BlockerKind::JsonParse);
        assert!((v.confidence - 2.0 / 12.0).abs() < 1e-9, "a share of every sample: {}", v.confidence);
        // Only broken stacks and none matched: cpu, as before.
        let v = classify(&samples[2..]).unwrap();
        assert_eq!(v.kind, BlockerKind::Cpu);
        // One matched sample among many broken ones that match nothing: they were running code.
        let vfs_write = frame(FrameKind::Kernel, "vfs_write");
        let write = frame(FrameKind::Native, "__GI___libc_write");
        let mut jit = vec![sample(vec![&vfs_write, &write, &garbage])];
        jit.extend((0..190).map(|_| sample(vec![&garbage])));
        let v = classify(&jit).unwrap();
        assert_eq!(v.kind, BlockerKind::Cpu, "not sync-fs from 1 sample of 191");
        // A whole stack that matched nothing is plain CPU work and votes.
        let start = frame(FrameKind::Native, "__libc_start_call_main");
        let deep: Vec<&Frame> = vec![&dict, &dict, &dict, &start];
        samples.extend((0..3).map(|_| sample(deep.clone())));
        assert_eq!(classify(&samples).unwrap().kind, BlockerKind::Cpu);
    }

    /// V8 resumes a deoptimized function in its generic interpreter, which the perf map cannot
    /// name: the stall's other samples tell which function its caller was running.
    #[test]
    fn an_unnamed_interpreted_frame_is_named_by_the_stall_s_other_samples() {
        let gc = frame(FrameKind::Native, "v8::internal::Heap::CollectGarbage(v8::internal::AllocationSpace)");
        let trampoline = frame(FrameKind::V8Code, "Builtins_InterpreterEntryTrampoline");
        let caller = js("BLOCKERS", "/srv/app.js", 85);
        let churn = js("churn", "/srv/app.js", 63);
        let timers = js("listOnTimeout", "node:internal/timers", 500);
        let sample = |frames| ClassSample { frames, off_cpu: None, user_module: None, weight_ns: 1 };
        let mut samples: Vec<ClassSample> = (0..6).map(|_| sample(vec![&gc, &trampoline, &caller, &timers])).collect();
        samples.extend((0..2).map(|_| sample(vec![&churn, &caller, &timers])));
        let v = classify(&samples).unwrap();
        assert_eq!(v.kind, BlockerKind::Gc);
        assert_eq!(v.frame.name, "churn");
        // Without another sample to tell, the caller is the best there is.
        assert_eq!(classify(&samples[..6]).unwrap().frame.name, "BLOCKERS");
    }

    #[test]
    fn native_programs_name_their_own_function() {
        let libc = Frame { module: Some("/lib/libc.so.6".into()), ..frame(FrameKind::Native, "clock_gettime") };
        let leaf = Frame { module: Some("/srv/loop".into()), ..frame(FrameKind::Native, "burn_cpu") };
        let main = Frame { module: Some("/srv/loop".into()), ..frame(FrameKind::Native, "main") };
        let exe = native_is_user("/srv/loop").then_some("/srv/loop");
        let s = ClassSample { frames: vec![&libc, &leaf, &main], off_cpu: None, user_module: exe, weight_ns: 1 };
        let v = classify(&[s]).unwrap();
        assert_eq!((v.kind, v.frame.name.as_str()), (BlockerKind::Cpu, "burn_cpu"));
        assert!(!native_is_user("/usr/bin/node") && !native_is_user("/usr/bin/python3.11"));
    }

    /// nginx runs a Perl handler through its perl module: the regex is Perl's, and nginx's own
    /// frame that dispatched to the module is no one's code to change. A program that calls the
    /// regex library itself keeps its own frame.
    #[test]
    fn a_servers_frame_that_only_dispatched_to_a_module_is_not_the_blocker() {
        let native = |name: &str, module: &str| Frame { module: Some(module.into()), ..frame(FrameKind::Native, name) };
        let engine = native("Perl_regexec_flags", "/usr/lib/x86_64-linux-gnu/libperl.so.5.36");
        let ops = native("Perl_runops_standard", "/usr/lib/x86_64-linux-gnu/libperl.so.5.36");
        let module = native("ngx_http_perl_handle_request", "/usr/lib/nginx/modules/ngx_http_perl_module.so");
        let phase = native("ngx_http_core_content_phase", "/usr/sbin/nginx");
        let main = native("main", "/usr/sbin/nginx");
        let frames = vec![&engine, &ops, &module, &phase, &main];
        let s = ClassSample { frames, off_cpu: None, user_module: Some("/usr/sbin/nginx"), weight_ns: 1 };
        let v = classify(&[s]).unwrap();
        assert_eq!((v.kind, v.frame.name.as_str()), (BlockerKind::Regex, "Perl_regexec_flags"));

        let libc = native("regexec", "/lib/x86_64-linux-gnu/libc.so.6");
        let inner = native("re_search_internal", "/lib/x86_64-linux-gnu/libc.so.6");
        let handler = native("validate_input", "/srv/loop");
        let main = native("main", "/srv/loop");
        let frames = vec![&inner, &libc, &handler, &main];
        let s = ClassSample { frames, off_cpu: None, user_module: Some("/srv/loop"), weight_ns: 1 };
        let v = classify(&[s]).unwrap();
        assert_eq!((v.kind, v.frame.name.as_str()), (BlockerKind::Regex, "validate_input"));
    }
}
