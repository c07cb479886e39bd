//! The time limit every integration test puts on the processes it starts: a hung command fails
//! its test, with what it printed, and leaves nothing running.

use crate::util::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_command_over_its_limit_fails_the_test_and_its_whole_group_is_killed() {
    let t0 = Instant::now();
    let caught = std::panic::catch_unwind(|| {
        // A grandchild that would keep the pipes open for a minute.
        Command::new("sh").args(["-c", "sleep 60 & echo $!; wait"]).output_within(Duration::from_secs(1))
    });
    let message = match caught {
        Ok(out) => panic!("a command over its limit returned: {out:?}"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(t0.elapsed() < Duration::from_secs(20), "the limit did not stop the wait: {:?}", t0.elapsed());
    assert!(message.contains("did not finish within 1 s"), "{message}");
    let sleeper: u32 = message
        .split("--- stdout so far:\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("the output so far is in the message: {message}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(sleeper) {
        assert!(Instant::now() < deadline, "the grandchild {sleeper} outlived the limit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_command_within_its_limit_gives_its_output() {
    let out = Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]).output_within(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}
