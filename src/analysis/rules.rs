//! The blocker rule table: which frames mean which blocker kind, for V8/Node, CPython and native
//! code. Data, not code: [`RULES`] is read by [`super::classify`], and every row has a test.

use crate::symbolize::{Frame, FrameKind};
use serde::{Deserialize, Serialize};

/// What a stall was doing (DESIGN.md, "Blocker kinds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockerKind {
    /// Regex backtracking (ReDoS).
    Regex,
    /// JSON parsing.
    JsonParse,
    /// JSON serialising.
    JsonStringify,
    /// Garbage collection.
    Gc,
    /// Allocator internals and page faults.
    Alloc,
    /// Synchronous crypto.
    SyncCrypto,
    /// Synchronous compression.
    SyncZlib,
    /// Synchronous file I/O.
    SyncFs,
    /// The loop thread sleeps or waits off-CPU.
    SyncWait,
    /// Plain on-CPU code matching nothing above.
    Cpu,
}

impl BlockerKind {
    /// The name in reports (`regex`, `json-parse`, …).
    pub const fn name(self) -> &'static str {
        match self {
            BlockerKind::Regex => "regex",
            BlockerKind::JsonParse => "json-parse",
            BlockerKind::JsonStringify => "json-stringify",
            BlockerKind::Gc => "gc",
            BlockerKind::Alloc => "alloc",
            BlockerKind::SyncCrypto => "sync-crypto",
            BlockerKind::SyncZlib => "sync-zlib",
            BlockerKind::SyncFs => "sync-fs",
            BlockerKind::SyncWait => "sync-wait",
            BlockerKind::Cpu => "cpu",
        }
    }
}

/// How a rule matches a frame's name.
#[derive(Debug, Clone, Copy)]
pub enum Pat {
    /// The name starts with this.
    Prefix(&'static str),
    /// The name contains this.
    Contains(&'static str),
    /// The name is exactly this (for short C names such as `deflate`), ignoring a
    /// ` [clone …]` or `(…)` suffix.
    Exact(&'static str),
}

impl Pat {
    fn matches(self, name: &str) -> bool {
        match self {
            Pat::Prefix(p) => name.starts_with(p),
            Pat::Contains(p) => name.contains(p),
            Pat::Exact(p) => {
                let base = name.split(['(', ' ']).next().unwrap_or(name);
                base == p
            }
        }
    }
}

/// Which frames a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// JavaScript functions (perf-map `JS:` frames).
    Js,
    /// V8-generated non-JS code (`RegExp:`, `Builtin:` …) and native code: the runtime's own
    /// frames.
    Code,
    /// Kernel frames.
    Kernel,
    /// Python functions.
    Python,
}

impl On {
    fn applies(self, kind: FrameKind) -> bool {
        match self {
            On::Js => kind == FrameKind::Js,
            On::Code => matches!(kind, FrameKind::V8Code | FrameKind::Native),
            On::Kernel => kind == FrameKind::Kernel,
            On::Python => kind == FrameKind::Python,
        }
    }
}

/// One row: frames of this sort whose name matches mean this kind.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The blocker kind.
    pub kind: BlockerKind,
    /// Which frames.
    pub on: On,
    /// The name pattern.
    pub pat: Pat,
    /// Where the frame comes from, for the reader of the table.
    pub runtime: &'static str,
}

impl Rule {
    /// Whether this rule matches `frame`.
    pub fn matches(&self, frame: &Frame) -> bool {
        self.on.applies(frame.kind) && self.pat.matches(&frame.name)
    }
}

const fn r(kind: BlockerKind, runtime: &'static str, on: On, pat: Pat) -> Rule {
    Rule { kind, on, pat, runtime }
}

use BlockerKind::*;
use Pat::{Contains, Exact, Prefix};

/// The rule table. A sample takes the kind of the innermost frame that matches a row; rows are
/// tried in order for each frame.
pub const RULES: &[Rule] = &[
    // regex
    r(Regex, "v8", On::Code, Contains("IrregexpInterpreter")),
    r(Regex, "v8", On::Code, Contains("RegExpImpl")),
    r(Regex, "v8", On::Code, Contains("RegExpMacroAssembler")),
    r(Regex, "v8", On::Code, Contains("v8::internal::RegExp")),
    r(Regex, "v8", On::Code, Prefix("RegExp:")),
    r(Regex, "v8", On::Code, Prefix("Builtins_RegExp")),
    r(Regex, "v8", On::Code, Prefix("Builtin:RegExp")),
    r(Regex, "cpython", On::Code, Prefix("sre_")),
    r(Regex, "cpython", On::Code, Prefix("_sre_")),
    r(Regex, "cpython", On::Code, Prefix("pattern_")),
    r(Regex, "native", On::Code, Prefix("pcre2_match")),
    r(Regex, "native", On::Code, Prefix("pcre_exec")),
    r(Regex, "native", On::Code, Exact("regexec")),
    r(Regex, "native", On::Code, Contains("std::__detail::_Executor")),
    r(Regex, "native", On::Code, Prefix("regex::")),
    r(Regex, "native", On::Code, Prefix("regex_automata::")),
    r(Regex, "native", On::Code, Prefix("fancy_regex::")),
    r(Regex, "native", On::Code, Prefix("re2::")),
    r(Regex, "native", On::Code, Prefix("onig_")),
    r(Regex, "native", On::Code, Contains("icu::RegexMatcher")),
    // Perl (nginx's perl handlers, perl itself): the matcher and its helpers.
    r(Regex, "perl", On::Code, Prefix("Perl_regexec_flags")),
    r(Regex, "perl", On::Code, Prefix("Perl_re_intuit_start")),
    r(Regex, "perl", On::Code, Prefix("S_regmatch")),
    r(Regex, "perl", On::Code, Prefix("S_regtry")),
    // Java's compiled methods, named by the JVM's perf map (`jcmd PID Compiler.perfmap`).
    r(Regex, "jvm", On::Code, Contains("java.util.regex.")),
    r(Regex, "jvm", On::Code, Contains("java/util/regex/")),
    // Go: the regexp package's functions.
    r(Regex, "go", On::Code, Prefix("regexp.")),
    // json-parse
    r(JsonParse, "v8", On::Code, Contains("JsonParser")),
    r(JsonParse, "v8", On::Code, Contains("JsonParseInternalizer")),
    r(JsonParse, "v8", On::Code, Prefix("Builtins_JsonParse")),
    r(JsonParse, "v8", On::Code, Prefix("Builtin:JsonParse")),
    r(JsonParse, "cpython", On::Code, Prefix("scan_once_unicode")),
    r(JsonParse, "cpython", On::Code, Prefix("_parse_object_unicode")),
    r(JsonParse, "cpython", On::Code, Prefix("_parse_array_unicode")),
    r(JsonParse, "cpython", On::Code, Prefix("scanstring_unicode")),
    r(JsonParse, "cpython", On::Code, Prefix("py_scanstring")),
    r(JsonParse, "cpython", On::Code, Prefix("scanner_call")),
    // The json module's Python frames, for stacks whose C frames are lost (attached to a CPython
    // built without frame pointers): 3.11+ qualified names, 3.10 plain ones.
    r(JsonParse, "cpython", On::Python, Prefix("JSONDecoder.")),
    r(JsonParse, "cpython", On::Python, Exact("raw_decode")),
    r(JsonParse, "native", On::Code, Prefix("serde_json::de")),
    r(JsonParse, "native", On::Code, Contains("simdjson")),
    // json-stringify
    r(JsonStringify, "v8", On::Code, Contains("JsonStringifier")),
    r(JsonStringify, "v8", On::Code, Prefix("Builtins_JsonStringify")),
    r(JsonStringify, "v8", On::Code, Prefix("Builtin:JsonStringify")),
    r(JsonStringify, "cpython", On::Code, Prefix("encoder_listencode")),
    r(JsonStringify, "cpython", On::Code, Prefix("encoder_call")),
    r(JsonStringify, "cpython", On::Code, Prefix("py_encode_basestring")),
    r(JsonStringify, "cpython", On::Code, Prefix("escape_unicode")),
    r(JsonStringify, "cpython", On::Code, Prefix("ascii_escape_unicode")),
    r(JsonStringify, "cpython", On::Python, Prefix("JSONEncoder.")),
    r(JsonStringify, "cpython", On::Python, Exact("iterencode")),
    r(JsonStringify, "native", On::Code, Prefix("serde_json::ser")),
    // gc
    r(Gc, "v8", On::Code, Contains("Heap::CollectGarbage")),
    r(Gc, "v8", On::Code, Contains("Heap::PerformGarbageCollection")),
    r(Gc, "v8", On::Code, Contains("v8::internal::Scavenger")),
    r(Gc, "v8", On::Code, Contains("MarkCompactCollector")),
    r(Gc, "v8", On::Code, Contains("MinorMarkSweepCollector")),
    r(Gc, "v8", On::Code, Contains("IncrementalMarking::")),
    r(Gc, "v8", On::Code, Contains("GlobalHandles::")),
    r(Gc, "cpython", On::Code, Prefix("gc_collect_main")),
    r(Gc, "cpython", On::Code, Prefix("gc_collect_with_callback")),
    r(Gc, "cpython", On::Code, Prefix("gc_collect_generations")),
    r(Gc, "cpython", On::Code, Prefix("_PyGC_Collect")),
    // alloc
    r(Alloc, "kernel", On::Kernel, Prefix("exc_page_fault")),
    r(Alloc, "kernel", On::Kernel, Prefix("do_page_fault")),
    r(Alloc, "kernel", On::Kernel, Prefix("handle_mm_fault")),
    r(Alloc, "kernel", On::Kernel, Prefix("__x64_sys_munmap")),
    r(Alloc, "kernel", On::Kernel, Prefix("__x64_sys_mmap")),
    r(Alloc, "kernel", On::Kernel, Prefix("__x64_sys_madvise")),
    r(Alloc, "kernel", On::Kernel, Prefix("__x64_sys_brk")),
    r(Alloc, "native", On::Code, Exact("munmap")),
    r(Alloc, "native", On::Code, Exact("__munmap")),
    r(Alloc, "native", On::Code, Exact("mmap64")),
    r(Alloc, "native", On::Code, Exact("__mmap")),
    r(Alloc, "native", On::Code, Exact("madvise")),
    r(Alloc, "native", On::Code, Exact("__madvise")),
    r(Alloc, "native", On::Code, Exact("sysmalloc")),
    r(Alloc, "native", On::Code, Exact("malloc_consolidate")),
    r(Alloc, "native", On::Code, Exact("systrim")),
    // sync-crypto
    r(SyncCrypto, "node", On::Js, Exact("pbkdf2Sync")),
    r(SyncCrypto, "node", On::Js, Exact("scryptSync")),
    r(SyncCrypto, "node", On::Js, Exact("generateKeyPairSync")),
    r(SyncCrypto, "node", On::Js, Exact("hkdfSync")),
    r(SyncCrypto, "node", On::Js, Exact("randomFillSync")),
    r(SyncCrypto, "node", On::Code, Contains("node::crypto::")),
    r(SyncCrypto, "openssl", On::Code, Prefix("PKCS5_PBKDF2_HMAC")),
    r(SyncCrypto, "openssl", On::Code, Prefix("EVP_")),
    r(SyncCrypto, "openssl", On::Code, Prefix("HMAC_")),
    r(SyncCrypto, "openssl", On::Code, Prefix("SHA256_")),
    r(SyncCrypto, "openssl", On::Code, Prefix("SHA512_")),
    r(SyncCrypto, "openssl", On::Code, Prefix("sha256_block")),
    r(SyncCrypto, "openssl", On::Code, Prefix("sha512_block")),
    r(SyncCrypto, "openssl", On::Code, Prefix("scryptBlockMix")),
    r(SyncCrypto, "openssl", On::Code, Prefix("ossl_")),
    r(SyncCrypto, "cpython", On::Code, Prefix("_hashlib")),
    r(SyncCrypto, "cpython", On::Code, Prefix("pbkdf2_hmac")),
    // sync-zlib
    r(SyncZlib, "node", On::Js, Exact("zlibBufferSync")),
    r(SyncZlib, "node", On::Code, Contains("ZlibContext")),
    r(SyncZlib, "zlib", On::Code, Prefix("Cr_z_")),
    r(SyncZlib, "zlib", On::Code, Exact("deflate")),
    r(SyncZlib, "zlib", On::Code, Exact("deflate_slow")),
    r(SyncZlib, "zlib", On::Code, Exact("deflate_fast")),
    r(SyncZlib, "zlib", On::Code, Exact("deflate_stored")),
    r(SyncZlib, "zlib", On::Code, Exact("longest_match")),
    r(SyncZlib, "zlib", On::Code, Exact("inflate")),
    r(SyncZlib, "zlib", On::Code, Exact("inflate_fast")),
    r(SyncZlib, "zlib", On::Code, Exact("compress_block")),
    r(SyncZlib, "cpython", On::Code, Prefix("zlib_")),
    // sync-fs
    r(SyncFs, "node", On::Js, Exact("readFileSync")),
    r(SyncFs, "node", On::Js, Exact("writeFileSync")),
    r(SyncFs, "node", On::Js, Exact("readSync")),
    r(SyncFs, "node", On::Js, Exact("writeSync")),
    r(SyncFs, "node", On::Js, Exact("readdirSync")),
    r(SyncFs, "node", On::Js, Exact("statSync")),
    r(SyncFs, "node", On::Js, Exact("copyFileSync")),
    r(SyncFs, "node", On::Code, Contains("node::fs::")),
    r(SyncFs, "libuv", On::Code, Prefix("uv__fs_")),
    r(SyncFs, "kernel", On::Kernel, Prefix("ksys_read")),
    r(SyncFs, "kernel", On::Kernel, Prefix("ksys_write")),
    r(SyncFs, "kernel", On::Kernel, Prefix("vfs_read")),
    r(SyncFs, "kernel", On::Kernel, Prefix("vfs_write")),
    r(SyncFs, "kernel", On::Kernel, Prefix("do_sys_openat2")),
    r(SyncFs, "kernel", On::Kernel, Prefix("__x64_sys_fsync")),
    r(SyncFs, "cpython", On::Code, Prefix("_io_FileIO_read")),
    r(SyncFs, "cpython", On::Code, Prefix("_io_FileIO_write")),
    r(SyncFs, "cpython", On::Code, Prefix("os_read")),
    r(SyncFs, "cpython", On::Code, Prefix("os_write")),
    r(SyncFs, "cpython", On::Code, Prefix("_Py_read")),
    // sync-wait
    r(SyncWait, "node", On::Js, Exact("execSync")),
    r(SyncWait, "node", On::Js, Exact("execFileSync")),
    r(SyncWait, "node", On::Js, Exact("spawnSync")),
    r(SyncWait, "v8", On::Code, Contains("FutexEmulation::Wait")),
    r(SyncWait, "node", On::Code, Contains("node::SyncProcessRunner")),
    r(SyncWait, "cpython", On::Code, Prefix("time_sleep")),
    r(SyncWait, "cpython", On::Code, Prefix("pysleep")),
    r(SyncWait, "native", On::Code, Exact("nanosleep")),
    r(SyncWait, "native", On::Code, Exact("__nanosleep")),
    r(SyncWait, "native", On::Code, Exact("clock_nanosleep")),
    r(SyncWait, "native", On::Code, Prefix("__clock_nanosleep")),
    r(SyncWait, "native", On::Code, Exact("usleep")),
    r(SyncWait, "native", On::Code, Exact("sleep")),
    r(SyncWait, "native", On::Code, Prefix("__futex_abstimed_wait")),
    r(SyncWait, "native", On::Code, Prefix("pthread_cond_wait")),
    r(SyncWait, "native", On::Code, Prefix("pthread_cond_timedwait")),
    r(SyncWait, "native", On::Code, Prefix("___pthread_cond")),
    r(SyncWait, "native", On::Code, Exact("__wait4")),
    r(SyncWait, "native", On::Code, Exact("waitpid")),
    r(SyncWait, "kernel", On::Kernel, Prefix("futex_wait")),
    r(SyncWait, "kernel", On::Kernel, Prefix("do_nanosleep")),
    r(SyncWait, "kernel", On::Kernel, Prefix("hrtimer_nanosleep")),
    r(SyncWait, "kernel", On::Kernel, Prefix("do_wait")),
];

/// System calls (x86_64 numbers) whose off-CPU wait means each kind, for samples whose frames
/// matched nothing: a sleeping loop thread is waiting on something.
pub const SYSCALLS: &[(i64, BlockerKind)] = &[
    (0, SyncFs),     // read
    (1, SyncFs),     // write
    (2, SyncFs),     // open
    (17, SyncFs),    // pread64
    (18, SyncFs),    // pwrite64
    (19, SyncFs),    // readv
    (20, SyncFs),    // writev
    (74, SyncFs),    // fsync
    (75, SyncFs),    // fdatasync
    (257, SyncFs),   // openat
    (35, SyncWait),  // nanosleep
    (61, SyncWait),  // wait4
    (202, SyncWait), // futex
    (230, SyncWait), // clock_nanosleep
    (247, SyncWait), // waitid
    (11, Alloc),     // munmap
    (9, Alloc),      // mmap
    (28, Alloc),     // madvise
];
