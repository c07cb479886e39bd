//! Builds `liblooptop_agent.so` (probes/agent) and leaves it in OUT_DIR, where
//! `src/target/agent_lib.rs` embeds it: one self-contained looptop executable.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for p in ["probes/agent/src", "probes/agent/Cargo.toml", "probes/abi/src", "probes/abi/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let target = env::var("TARGET").unwrap();
    let target_dir = out.join("agent-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "-p", "looptop-agent", "--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        // The agent is built the same way whatever wraps the outer build (clippy, coverage):
        // optimised, frame pointers kept (the watchdog walks them), no debug info to ship.
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env("RUSTFLAGS", "-C force-frame-pointers=yes")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    let status = cmd.status().expect("run cargo to build the agent");
    assert!(status.success(), "building probes/agent failed");
    let built = target_dir.join(&target).join("release/liblooptop_agent.so");
    std::fs::copy(&built, out.join("liblooptop_agent.so")).expect("copy the agent library");
}
