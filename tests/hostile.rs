//! Issue 13, points 11–13: root's looptop against a hostile user on the same host. A throwaway
//! user (created and removed here) runs a real Node server and plants what a hostile user
//! would — perf maps naming root-only files, perf maps that are FIFOs, huge sparse files or links,
//! links where looptop keeps the agent — and looptop must show nothing the user could not read,
//! never hang, and never hand root a path the user can redirect. The checks hold whatever
//! `fs.protected_symlinks` / `fs.protected_regular` say (they are not relied on).

use crate::util::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// A Node server of the throwaway user that keeps its loop busy in a JavaScript function, killed
/// (and its perf map removed) on drop.
struct Server {
    /// Killed with its process group on drop, or when its time limit is up (the read of its
    /// "ready" line never waits longer).
    child: Guarded,
}

impl Server {
    /// Starts it (with V8's perf map when `perf_map`) and waits until it says it is ready.
    fn start(user: &Stranger, dir: &Path, perf_map: bool) -> Server {
        const JS: &str = "function spin(n) { let x = 0; for (let i = 0; i < n; i++) x += Math.sqrt(i); return x; }\n\
            setInterval(() => { const t = Date.now(); while (Date.now() - t < 150) spin(1e5); }, 200);\n\
            console.error('ready');";
        let mut cmd = user.command("node");
        if perf_map {
            cmd.arg("--perf-basic-prof");
        }
        // stdout: V8 logs code events there when it cannot write its log file in `dir`.
        let child = cmd
            .args(["-e", JS])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_within(SERVER_LIMIT);
        let mut server = Server { child };
        let mut err = BufReader::new(server.child.child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let _ = err.read_to_string(&mut line);
            panic!("node did not start: {line}");
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn map(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/perf-{}.map", self.pid()))
    }

    /// The code ranges of its perf map once V8 has compiled `spin` and stopped compiling for a
    /// second (so the names given below stay the newest while looptop records).
    fn map_ranges(&self) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = (0, Instant::now());
        loop {
            let text = std::fs::read_to_string(self.map()).unwrap_or_default();
            if text.len() != last.0 {
                last = (text.len(), Instant::now());
            } else if text.contains("spin") && last.1.elapsed() > Duration::from_secs(1) {
                return text
                    .lines()
                    .filter_map(|l| {
                        let mut f = l.splitn(3, ' ');
                        Some((f.next()?.to_string(), f.next()?.to_string()))
                    })
                    .collect();
            }
            assert!(Instant::now() < deadline, "node's perf map did not settle in 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How long a test's server may live.
const SERVER_LIMIT: Duration = Duration::from_secs(120);

impl Drop for Server {
    fn drop(&mut self) {
        // Its process group goes with `child` (Guarded's drop).
        let _ = std::fs::remove_file(self.map());
    }
}

/// `looptop record --mode perf --pid PID -d DUR -o REC` within its time limit; the recording's text
/// and the report's (text and JSON) with it.
fn record(pid: u32, rec: &Path, dur: &str, what: &str) -> (Output, String) {
    let out = looptop()
        .args(["record", "--mode", "perf", "--pid", &pid.to_string(), "-d", dur, "-o"])
        .arg(rec)
        .output_limited();
    assert!(out.status.success(), "{what}: record failed: {}", stderr(&out));
    let mut all = recording_text(rec);
    for json in [true, false] {
        let mut c = looptop();
        c.arg("report").args(json.then_some("--json")).arg(rec);
        let rep = c.output_limited();
        assert!(rep.status.success(), "{what}: report failed: {}", stderr(&rep));
        all.push_str(&String::from_utf8_lossy(&rep.stdout));
    }
    (out, all)
}

/// Appends a perf map line naming `name` for every code range in `lines`: the newest entry wins.
fn rename_all(map: &Path, lines: &[(String, String)], name: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(map).unwrap();
    let text: String = lines.iter().map(|(start, size)| format!("{start} {size} {name}\n")).collect();
    f.write_all(text.as_bytes()).unwrap();
}

/// A file of root's, readable by root alone, in a folder anyone may enter.
fn root_only(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn issue_13_a_perf_map_naming_root_only_files_shows_root_nothing() {
    let test = "issue_13_a_perf_map_naming_root_only_files_shows_root_nothing";
    if !perf_permitted(test) {
        return;
    }
    let _machine = machine_wide();
    let Some(user) = Stranger::new(test) else { return };
    let dir = TempDir::new("hostile-source");
    let secret = root_only(&dir, "secret.js", &"const key = 'LOOPTOP_SECRET_LINE';\n".repeat(100));
    let public = dir.path("public.js");
    std::fs::write(&public, "const x = 'LOOPTOP_PUBLIC_LINE';\n".repeat(100)).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&user, &dir.0, true);

    // The user's map names a file they can read: its line is shown (the lookup works).
    let lines = server.map_ranges();
    rename_all(&server.map(), &lines, &format!("JS:*spin {}:1:1", public.display()));
    let (_, seen) = record(server.pid(), &dir.path("public.rec"), "2s", "a file the user can read");
    assert!(seen.contains("LOOPTOP_PUBLIC_LINE"), "the readable file's line is shown:\n{seen}");

    // The same, naming root's file: named in frames, its line never shown nor recorded.
    let lines = server.map_ranges();
    rename_all(&server.map(), &lines, &format!("JS:*spin {}:1:1", secret.display()));
    let (_, seen) = record(server.pid(), &dir.path("secret.rec"), "2s", "a root-only file");
    assert!(seen.contains("secret.js"), "the frames name the file:\n{seen}");
    assert!(!seen.contains("LOOPTOP_SECRET_LINE"), "root's file was shown:\n{seen}");

    // The map replaced by a link to a map of root's whose names are secret: not followed.
    let roots_map = root_only(&dir, "roots.map", &{
        let text: String = lines.iter().map(|(s, n)| format!("{s} {n} JS:*LOOPTOP_SECRET_NAME x.js:1:1\n")).collect();
        text
    });
    std::fs::remove_file(server.map()).unwrap();
    std::os::unix::fs::symlink(&roots_map, server.map()).unwrap();
    user.own(&server.map());
    let (out, seen) = record(server.pid(), &dir.path("link.rec"), "2s", "a link to root's map");
    assert!(!seen.contains("LOOPTOP_SECRET_NAME"), "root's map was read through the link:\n{seen}");
    assert!(stderr(&out).contains("not read"), "a note says the map was not read: {}", stderr(&out));
}

#[test]
fn issue_13_b_a_fifo_or_huge_perf_map_never_hangs_perf_mode() {
    let test = "issue_13_b_a_fifo_or_huge_perf_map_never_hangs_perf_mode";
    if !perf_permitted(test) {
        return;
    }
    let _machine = machine_wide();
    let Some(user) = Stranger::new(test) else { return };
    let dir = TempDir::new("hostile-map");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&user, &dir.0, false);
    let map = server.map();

    // A FIFO nobody writes to: a plain open would wait forever.
    let c = std::ffi::CString::new(map.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    user.own(&map);
    let started = Instant::now();
    let (out, _) = record(server.pid(), &dir.path("fifo.rec"), "2s", "a FIFO as the perf map");
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    println!("FIFO: record took {:.1} s", started.elapsed().as_secs_f64());

    // A 200 GiB sparse file.
    std::fs::remove_file(&map).unwrap();
    let f = std::fs::File::create(&map).unwrap();
    f.set_len(200 << 30).unwrap();
    user.own(&map);
    let started = Instant::now();
    let (out, _) = record(server.pid(), &dir.path("sparse.rec"), "2s", "a 200 GiB sparse perf map");
    assert!(stderr(&out).contains("more than"), "{}", stderr(&out));
    println!("sparse: record took {:.1} s", started.elapsed().as_secs_f64());
}

/// Whether every folder from `/` to `path`'s is root's and no one else can rename what is in it.
fn only_root_can_change(path: &Path) -> Result<(), String> {
    for dir in path.ancestors().skip(1) {
        let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let writable = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
        if !m.is_dir() || m.uid() != 0 || writable {
            return Err(format!("{} (uid {}, mode {:o})", dir.display(), m.uid(), m.mode()));
        }
    }
    Ok(())
}

#[test]
fn issue_13_c_agent_path_never_goes_through_a_planted_link() {
    let test = "issue_13_c_agent_path_never_goes_through_a_planted_link";
    let Some(user) = Stranger::new(test) else { return };
    let dir = TempDir::new("hostile-agent");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A shared temporary folder of our own, like /tmp (root's, sticky, open to all).
    let tmp = dir.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The user's folder, and a folder of root's that others may read: both must stay as they are.
    let theirs = dir.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    user.own(&theirs);
    let roots = dir.path("roots");
    std::fs::create_dir(&roots).unwrap();
    let planted = tmp.join("looptop-0");
    let agent_path = |home: Option<&str>| {
        let mut c = looptop();
        c.args(["agent", "path"]).env_remove("XDG_CACHE_HOME").env("TMPDIR", &tmp);
        match home {
            Some(h) => c.env("HOME", h),
            None => c.env_remove("HOME"),
        };
        let out = c.output_limited();
        assert!(out.status.success(), "{}", stderr(&out));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };

    for (target, home) in [(&roots, None), (&theirs, Some("/nonexistent"))] {
        let _ = std::fs::remove_file(&planted);
        assert!(user.sh(&format!("ln -s {} {}", target.display(), planted.display())), "the user plants the link");
        let mode = std::fs::metadata(target).unwrap().mode();
        let agent = agent_path(home);
        assert_eq!(std::fs::canonicalize(&agent).unwrap(), agent, "a path through a link: {}", agent.display());
        assert!(!agent.starts_with(&planted) && !agent.starts_with(target), "{}", agent.display());
        assert_eq!(std::fs::metadata(target).unwrap().mode(), mode, "{} was chmodded", target.display());
        assert_eq!(std::fs::read_dir(target).unwrap().count(), 0, "looptop wrote into {}", target.display());
        only_root_can_change(&agent).unwrap_or_else(|e| panic!("{}: others can change {e}", agent.display()));
        let m = std::fs::symlink_metadata(&agent).unwrap();
        assert!(m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0, "{:o}", m.mode());

        // The user tries to put their own library in its place.
        let bytes = std::fs::read(&agent).unwrap();
        let folder = agent.parent().unwrap();
        let name = agent.file_name().unwrap().to_str().unwrap();
        std::fs::write(theirs.join(name), b"the user's library").unwrap();
        user.own(&theirs.join(name));
        let evil = theirs.join(name);
        assert!(user.sh(&format!("ln -sfn {} {}", theirs.display(), planted.display())), "the link can be repointed");
        assert!(!user.sh(&format!("cp {} {}", evil.display(), agent.display())));
        assert!(!user.sh(&format!("mv {} {}.x", folder.display(), folder.display())));
        assert!(!user.sh(&format!("rm -f {}", agent.display())));
        assert_eq!(std::fs::read(&agent).unwrap(), bytes, "the library root loads was replaced");
        std::fs::remove_file(&evil).unwrap();
    }

    // Without a link in the way, the usual name is used (as a real folder of root's, 0700).
    std::fs::remove_file(&planted).unwrap();
    let agent = agent_path(None);
    assert_eq!(agent.parent().unwrap(), planted.as_path());
    assert_eq!(std::fs::symlink_metadata(&planted).unwrap().mode() & 0o7777, 0o700);
}

/// Issue 18: the JVM's performance data file (`/tmp/hsperfdata_<user>/<pid>`) lies in a folder
/// anyone may write. A throwaway user plants, for root's JVM's pid, a FIFO and a copy of the real
/// file (its counters frozen) in folders of their own beside `hsperfdata_root`: root's looptop
/// must neither hang on the FIFO nor believe the copy (not the JVM's user's), and still place the
/// JVM's real GC pause.
#[test]
fn issue_18_planted_jvm_performance_data_never_hangs_or_fools_looptop() {
    let test = "issue_18_planted_jvm_performance_data_never_hangs_or_fools_looptop";
    if !perf_permitted(test) {
        return;
    }
    let Some(classes) = crate::java::java_classes(test) else { return };
    let Some(user) = Stranger::new(test) else { return };
    let _machine = machine_wide();
    let dir = TempDir::new("hostile-jvm");
    let port = free_port();
    let cmd = crate::java::server(&classes, port);
    let mut java = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .stdout(Stdio::null())
        .spawn_limited();
    assert!(get_when_up(port), "the Java server never answered");
    let pid = java.id();
    let real = PathBuf::from(format!("/tmp/hsperfdata_root/{pid}"));
    assert!(real.exists(), "the JVM keeps its performance data in {}", real.display());
    let (fifo_dir, copy_dir) = (
        PathBuf::from(format!("/tmp/hsperfdata_{}a", user.name)),
        PathBuf::from(format!("/tmp/hsperfdata_{}b", user.name)),
    );
    assert!(user.sh(&format!(
        "mkdir {} {} && mkfifo {}/{pid}",
        fifo_dir.display(),
        copy_dir.display(),
        fifo_dir.display()
    )));
    let copy = copy_dir.join(pid.to_string());
    std::fs::copy(&real, &copy).unwrap();
    user.own(&copy);

    let rec = dir.path("jvm.rec");
    let started = Instant::now();
    let lt = looptop()
        .args(["record", "-q", "--pid", &pid.to_string(), "-o", rec.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn_limited();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(http_get(port, "/gc/20").unwrap_or_default().contains(" 200 "), "/gc/20");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling the looptop and the JVM this test started.
    unsafe { libc::kill(lt.id() as i32, libc::SIGINT) };
    let out = lt.wait_with_output();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    java.wait();
    let _ = std::fs::remove_dir_all(&fifo_dir);
    let _ = std::fs::remove_dir_all(&copy_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20), "looptop took {:?}", started.elapsed());
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    let report: serde_json::Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let truth = read_truth(&dir.path("truth.jsonl"));
    let gc_ms = truth.iter().find_map(|t| t.gc_ms).expect("the JVM counted its collection");
    let full: Vec<f64> = report["gc"]["pauses"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["kind"] == "full").filter_map(|p| p["duration_ms"].as_f64()).collect())
        .unwrap_or_default();
    assert!(
        full.len() == 1 && (full[0] - gc_ms).abs() <= 2.0 + gc_ms * 0.1,
        "the JVM's own pause ({gc_ms} ms), from its own file: {:#}",
        report["gc"]
    );
}
