//! Profiles for the flame tests, shaped like what looptop sees of a Node server.

use super::Profile;
use crate::symbolize::{Frame, FrameKind, JsTier};

/// A frame of `kind` with only a name.
pub fn frame(name: &str, kind: FrameKind) -> Frame {
    Frame { name: name.into(), kind, module: None, file: None, line: None, col: None, tier: None, exec_line: None }
}

/// A native frame in the node executable.
pub fn native_frame(name: &str) -> Frame {
    Frame { module: Some("/usr/bin/node".into()), ..frame(name, FrameKind::Native) }
}

/// A JS function at `file:line:col`, as V8's perf map names it.
pub fn js_frame(name: &str, file: &str, line: u32, col: u32) -> Frame {
    Frame {
        module: Some("/tmp/perf-4242.map".into()),
        file: Some(file.into()),
        line: Some(line),
        col: Some(col),
        tier: Some(JsTier::Interpreted),
        ..frame(name, FrameKind::Js)
    }
}

/// A profile titled like `looptop flame` titles one.
pub fn profile(frames: Vec<Frame>, stacks: Vec<(Vec<u32>, u64)>) -> Profile {
    Profile {
        title: "looptop: node server.js".into(),
        subtitle: "5.0 s · 151 samples · 1 stall (stalls only)".into(),
        frames,
        stacks,
        ..Profile::default()
    }
}

/// A ReDoS stall of a Node HTTP server: the stacks perf sees (root first) for ~150 ms at 997 Hz
/// while `validateEmail` backtracks, with a timer interrupt, a scavenge and a `JSON.parse` beside.
pub fn node_stall() -> Profile {
    let frames = vec![
        native_frame("_start"), // 0
        Frame { module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()), ..native_frame("__libc_start_main") }, // 1
        native_frame("node::Start"), // 2
        native_frame("node::NodeMainInstance::Run"), // 3
        native_frame("node::SpinEventLoop"), // 4
        native_frame("uv_run"), // 5
        native_frame("uv__io_poll"), // 6
        native_frame("uv__stream_io"), // 7
        native_frame("node::LibuvStreamWrap::OnUvRead"), // 8
        native_frame("node::InternalMakeCallback"), // 9
        frame("Builtin:JSEntry", FrameKind::V8Code), // 10
        js_frame("onStreamRead", "node:internal/stream_base_commons", 166, 20), // 11
        js_frame("socketOnData", "node:_http_server", 837, 22), // 12
        native_frame("node::(anonymous namespace)::Parser::Execute"), // 13
        js_frame("parserOnHeadersComplete", "node:_http_common", 72, 35), // 14
        js_frame("parserOnIncoming", "node:_http_server", 1047, 26), // 15
        js_frame("emit", "node:events", 509, 44), // 16
        js_frame("(anonymous)", "/srv/app/server.js", 30, 25), // 17
        js_frame("handleSignup", "/srv/app/server.js", 20, 22), // 18
        js_frame("validateEmail", "/srv/app/server.js", 12, 17), // 19
        frame("Builtin:RegExpPrototypeTest", FrameKind::V8Code), // 20
        frame("RegExp:^([a-z0-9]+)+@", FrameKind::V8Code), // 21
        native_frame("v8::internal::IrregexpInterpreter::MatchInternal"), // 22
        frame("asm_sysvec_apic_timer_interrupt", FrameKind::Kernel), // 23
        frame("__sysvec_apic_timer_interrupt", FrameKind::Kernel), // 24
        native_frame("v8::internal::Heap::CollectGarbage"), // 25
        native_frame("v8::internal::ScavengerCollector::CollectGarbage"), // 26
        js_frame("importUsers", "/srv/app/server.js", 50, 21), // 27
        frame("Builtin:JsonParse", FrameKind::V8Code), // 28
        native_frame("v8::internal::JsonParser<unsigned char>::ParseJson"), // 29
        Frame::unknown(Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into())), // 30
    ];
    let request: Vec<u32> = (0..=18).collect();
    let with = |tail: &[u32]| request.iter().chain(tail).copied().collect::<Vec<u32>>();
    let mut json: Vec<u32> = request[..=17].to_vec();
    json.extend([27, 28, 29]);
    let stacks = vec![
        (with(&[19, 20, 21]), 88),
        (with(&[19, 20, 22]), 41),
        (with(&[19, 20, 21, 23, 24]), 3),
        (with(&[19]), 2),
        (with(&[19, 20, 21]), 5), // the same stack again: merged in the folded output
        (with(&[19, 20, 25, 26]), 4),
        (json.clone(), 6),
        ([json, vec![30]].concat(), 2),
    ];
    profile(frames, stacks)
}

/// `samples` samples over thousands of distinct stacks: a loop's native base, then random walks
/// through a tree of JS functions (three callees each) ending in JS, V8, native or kernel code.
/// Deterministic: the same arguments give the same profile.
pub fn large(samples: u64, stacks: usize) -> Profile {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut frames: Vec<Frame> =
        ["_start", "__libc_start_main", "node::Start", "node::SpinEventLoop", "uv_run", "uv__io_poll"]
            .into_iter()
            .map(native_frame)
            .collect();
    let base = frames.len() as u32;
    let js = 2000u32;
    for i in 0..js {
        frames.push(js_frame(
            &format!("handler{i}"),
            &format!("/srv/app/lib/module{}.js", i % 40),
            i % 700 + 1,
            i % 60 + 1,
        ));
    }
    let leaves = frames.len() as u32;
    for name in ["Builtin:RegExpPrototypeTest", "Builtin:JsonParse", "Builtin:ArrayPrototypeMap"] {
        frames.push(frame(name, FrameKind::V8Code));
    }
    for name in ["v8::internal::Heap::CollectGarbage", "v8::internal::JsonParser<unsigned char>::ParseJson", "memcpy"] {
        frames.push(native_frame(name));
    }
    for name in ["asm_exc_page_fault", "do_syscall_64", "asm_sysvec_apic_timer_interrupt"] {
        frames.push(frame(name, FrameKind::Kernel));
    }
    let leaf_count = frames.len() as u32 - leaves;
    let per_stack = samples / stacks as u64;
    let mut out = Vec::with_capacity(stacks);
    for s in 0..stacks {
        let mut stack: Vec<u32> = (0..base).collect();
        let depth = 4 + next() % 28;
        // Node n of the call tree calls 3n+1 … 3n+3; the tree is wider than the functions.
        let mut node = next() % 8;
        for _ in 0..depth {
            stack.push(base + (node % js as u64) as u32);
            node = node * 3 + 1 + next() % 3;
        }
        stack.push(leaves + (next() % leaf_count as u64) as u32);
        let weight = if s == 0 { samples - per_stack * (stacks as u64 - 1) } else { per_stack };
        out.push((stack, weight));
    }
    Profile { frames, stacks: out, ..profile(Vec::new(), Vec::new()) }
}

/// A real profile: `node --cpu-prof` of the demo server (fixtures/demo/server.js) answering each
/// blocking route twice, converted by tests/data/cpuprofile-to-profile.js (tests/data/README.md).
pub fn node_demo() -> Profile {
    let json = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/node-demo.profile.json"));
    serde_json::from_str(json).expect("tests/data/node-demo.profile.json is a Profile")
}
