//! Errors users cause: one clear sentence, the fix, the exit code of DESIGN.md.

use crate::util::*;

#[test]
fn run_without_a_command_is_a_usage_error() {
    let out = looptop().arg("run").output_limited();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("CMD"), "{}", stderr(&out));
}

#[test]
fn a_command_that_does_not_exist() {
    let out = looptop().args(["run", "--", "no-such-command-looptop"]).output_limited();
    assert_eq!(out.status.code(), Some(3));
    let e = stderr(&out);
    assert!(e.contains("no such command 'no-such-command-looptop'"), "{e}");
    assert!(e.contains("fix:"), "{e}");
}

#[test]
fn a_bad_threshold_points_at_the_value() {
    let out = looptop().args(["run", "--stall-threshold", "50 parsecs", "--", "true"]).output_limited();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("'50 parsecs'"), "{}", stderr(&out));
}

#[test]
fn unwritable_segment_folder_leaves_the_target_running_and_says_why() {
    // /proc refuses new files even to root: the agent cannot create its segment there.
    let out = looptop()
        .args(["run", "--", "node", "-e", "setTimeout(() => console.log('still ran'), 20); process.exitCode = 4"])
        .env("LOOPTOP_SHM_DIR", "/proc")
        .output_limited();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still ran\n", "the target must run normally");
    assert_eq!(out.status.code(), Some(3));
    let e = stderr(&out);
    assert!(e.contains("could not create its segment /proc/looptop-"), "{e}");
    assert!(e.contains("exited 4"), "{e}");
    assert!(e.contains("fix:"), "{e}");
}

#[test]
fn a_statically_linked_program_is_explained() {
    let dir = TempDir::new("static");
    let src = dir.path("s.c");
    std::fs::write(&src, "int main(void){return 5;}\n").unwrap();
    let bin = dir.path("s");
    let st = std::process::Command::new("cc").arg("-static").arg("-o").arg(&bin).arg(&src).status_limited();
    if !st.success() {
        // No static libc on this machine: the explanation is covered by the segment test above.
        eprintln!("SKIP: cc -static is not available");
        return;
    }
    let out = looptop().args(["run", "--"]).arg(&bin).output_limited();
    assert_eq!(out.status.code(), Some(3));
    let e = stderr(&out);
    assert!(e.contains("was not loaded") && e.contains("exited 5"), "{e}");
}

#[test]
fn a_segment_of_an_unknown_layout_is_refused_clearly() {
    let dir = TempDir::new("version");
    // A live pid (our own) with a segment of layout version 99.
    let mut bytes = vec![0u8; 4096];
    bytes[..8].copy_from_slice(b"LOOPTOP\0");
    bytes[8..12].copy_from_slice(&99u32.to_ne_bytes());
    std::fs::write(dir.path(&format!("looptop-{}", std::process::id())), bytes).unwrap();
    let out = looptop().args(["ps", "--window", "0ms"]).env("LOOPTOP_SHM_DIR", &dir.0).output_limited();
    assert_eq!(out.status.code(), Some(0));
    let e = stderr(&out);
    assert!(
        e.contains("layout version 99") && e.contains(&format!("reads version {}", looptop_abi::LAYOUT_VERSION)),
        "{e}"
    );
}
