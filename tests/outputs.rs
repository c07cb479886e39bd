//! Output files (issue 13, point 16): a path that cannot be written is refused before the
//! command starts (exit 2, the sentence and the fix); what another user planted in a shared
//! folder is never written through; a write that fails mid-way (a full disk) stops the command
//! looptop launched, keeps what was recorded, and exits 3.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Output};

/// Every command that writes a file, with `path` as the file; the command it launches creates
/// `marker`.
fn writers(path: &Path, marker: &Path) -> Vec<(String, Command)> {
    let p = path.to_str().unwrap();
    // It lives a moment: a process that exits at once may have its segment removed as dead by
    // another looptop starting meanwhile, before this one read it.
    let touch = ["sh".to_string(), "-c".into(), format!("touch {}; sleep 0.3", marker.display())];
    let mut out = Vec::new();
    let json_p = format!("--json={p}");
    for args in [
        vec!["run", "-q", "-o", p],
        vec!["record", "-o", p],
        // (`--format`: these paths end in .out, which names no format of flame's)
        vec!["flame", "--format", "svg", "-o", p],
        vec!["check", "-b", "stalls==0", &json_p],
        vec!["check", "-b", "stalls==0", "--junit", p],
    ] {
        let mut c = looptop();
        c.args(&args).args(["--rate", "0", "--"]).args(&touch);
        out.push((args.join(" "), c));
    }
    let mut c = looptop();
    c.args(["check", "-b", "stalls==0", "--github", "--rate", "0", "--"]).args(&touch).env("GITHUB_STEP_SUMMARY", p);
    out.push(("check --github, GITHUB_STEP_SUMMARY".into(), c));
    out
}

fn refused_before_start(out: &Output, what: &str, marker: &Path, wants: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: a bad output path is a usage error: {err}");
    assert!(!marker.exists(), "{what}: the command ran although its output cannot be written");
    for w in wants {
        assert!(err.contains(w), "{what}: {w:?} missing from: {err}");
    }
    assert!(err.contains("fix: "), "{what}: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("looptop: ")).count(), 1, "{what}: one sentence: {err}");
}

#[test]
fn an_output_path_that_cannot_be_written_is_refused_before_anything_starts() {
    let dir = TempDir::new("out-bad");
    let marker = dir.path("ran");
    for (path, wants) in [
        (dir.path("missing/x.out"), &["missing does not exist", "mkdir -p"][..]),
        (dir.0.clone(), &["is a folder"][..]),
        // Not even root may create files in /proc.
        ("/proc/looptop-x.out".into(), &["/proc does not take new files"][..]),
    ] {
        for (what, mut cmd) in writers(&path, &marker) {
            let out = cmd.output_limited();
            refused_before_start(&out, &format!("{what} ({})", path.display()), &marker, wants);
        }
    }
}

#[test]
fn a_link_or_file_another_user_planted_in_a_shared_folder_is_refused() {
    let Some(stranger) = Stranger::new("a_link_or_file_another_user_planted_in_a_shared_folder_is_refused") else {
        return;
    };
    let shared = shared_dir("out-planted");
    let mine = TempDir::new("out-victim");
    let victim = mine.path("victim");
    std::fs::write(&victim, "keep").unwrap();
    let marker = mine.path("ran");
    let link = shared.path("link.out");
    let plant = |args: &[&str]| assert!(stranger.command(args[0]).args(&args[1..]).status_limited().success());
    plant(&["ln", "-s", victim.to_str().unwrap(), link.to_str().unwrap()]);
    let file = shared.path("file.out");
    plant(&["touch", file.to_str().unwrap()]);
    let fifo = shared.path("fifo.out");
    plant(&["mkfifo", fifo.to_str().unwrap()]);
    let uid = format!("uid {}", stranger.uid);
    for (path, wants) in [
        (&link, vec!["is a symbolic link that belongs to", &uid, "in a folder others can write to"]),
        (&file, vec!["belongs to", &uid]),
        // Nobody reads it: refused at once, never blocking.
        (&fifo, vec!["nobody reads"]),
    ] {
        for (what, mut cmd) in writers(path, &marker) {
            let out = cmd.output_limited();
            refused_before_start(&out, &format!("{what} ({})", path.display()), &marker, &wants);
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "written through the planted link");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
}

#[test]
fn the_users_own_files_are_overwritten_and_kept_when_nothing_could_be_observed() {
    let dir = TempDir::new("out-own");
    let report = dir.path("report.json");
    std::fs::write(&report, "previous report").unwrap();
    // A command that cannot start: the report is not written, so the old one stays.
    let out = looptop().args(["run", "-q", "-o"]).arg(&report).args(["--", "/nonexistent/cmd"]).output_limited();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "previous report");
    // A new file that was never written is not left behind empty.
    let fresh = dir.path("fresh.json");
    let out = looptop().args(["run", "-q", "-o"]).arg(&fresh).args(["--", "/nonexistent/cmd"]).output_limited();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!fresh.exists(), "an empty report was left behind");
    // Observed: the old file is replaced, as with a shell's `>`, through the user's own link.
    std::os::unix::fs::symlink(&report, dir.path("latest.json")).unwrap();
    let out = looptop()
        .args(["run", "-q", "--json", "--rate", "0", "-o"])
        .arg(dir.path("latest.json"))
        .args(["--", "python3", "-c", "pass"])
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["schema"], "looptop.report/1");
}

#[test]
fn a_recording_that_fills_the_disk_stops_the_command_and_exits_3() {
    let marker = format!("looptop-test-sleeper-{}", std::process::id());
    let t0 = std::time::Instant::now();
    let out = looptop()
        .args(["record", "-o", "/dev/full", "--rate", "0", "--", "python3", "-c", "import time; time.sleep(60)"])
        .arg(&marker)
        .output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot write the recording /dev/full: No space left on device"), "{err}");
    assert!(err.contains("was stopped") && err.contains("fix: free space on that disk"), "{err}");
    assert!(t0.elapsed().as_secs() < 30, "the command was not stopped: {:?}", t0.elapsed());
    assert!(!running_with(&marker), "the launched command was left running");
}

#[test]
fn a_full_disk_mid_way_keeps_the_recording_so_far_and_leaves_no_process() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: a_full_disk_mid_way_keeps_the_recording_so_far_and_leaves_no_process: mounting a tiny tmpfs needs root");
        return;
    }
    let marker = format!("looptop-test-filler-{}", std::process::id());
    let script = format!(
        "mount -t tmpfs -o size=4k none /mnt || exit 99; \
         {bin} record --rate 0 -o /mnt/x.rec -- python3 {fixture} {marker}; echo \"record=$?\"; \
         {bin} report --json /mnt/x.rec",
        bin = env!("CARGO_BIN_EXE_looptop"),
        fixture = fixture("python/asyncio_stalls.py").display(),
    );
    let out = Command::new("unshare").args(["-m", "sh", "-c", &script]).output_limited();
    if out.status.code() == Some(99) {
        println!("SKIP: a_full_disk_mid_way_keeps_the_recording_so_far_and_leaves_no_process: cannot mount tmpfs here");
        return;
    }
    let (text, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("record=3"), "record must exit 3: {text}\n{err}");
    assert!(err.contains("cannot write the recording /mnt/x.rec: No space left on device"), "{err}");
    assert!(err.contains("it keeps what was written until then"), "{err}");
    assert!(err.contains("ends early"), "report reads the recording up to the failure: {err}");
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).expect("report JSON");
    assert_eq!(report["schema"], "looptop.report/1");
    assert!(!running_with(&marker), "the launched command was left running");
}

#[test]
fn reports_that_cannot_be_written_at_the_end_exit_3_with_the_fix() {
    let dir = TempDir::new("out-end");
    let marker = dir.path("ran");
    for (what, mut cmd) in writers(Path::new("/dev/full"), &marker) {
        let out = cmd.output_limited();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(err.contains("/dev/full: No space left on device") && err.contains("fix: free space"), "{what}: {err}");
        let _ = std::fs::remove_file(&marker);
    }
}

#[test]
fn a_recording_that_fills_the_disk_while_attached_exits_3_and_leaves_the_process_alone() {
    let agent = String::from_utf8(looptop().args(["agent", "path"]).output_limited().stdout).unwrap();
    let mut target = Command::new("python3")
        .args(["-c", "import time; print('ready', flush=True); time.sleep(60)"])
        .env("LD_PRELOAD", agent.trim())
        .stdout(std::process::Stdio::piped())
        .spawn_limited();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(target.child.stdout.take().unwrap()), &mut ready).unwrap();
    let out = looptop()
        .args(["record", "--mode", "agent", "--rate", "0", "-o", "/dev/full", "--pid", &target.id().to_string()])
        .output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot write the recording /dev/full: No space left on device"), "{err}");
    assert!(err.contains("fix: free space on that disk"), "{err}");
    assert!(alive(target.id()), "an attached process is not looptop's to stop");
}
