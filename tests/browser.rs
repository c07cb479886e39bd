//! speedscope, the real thing (issue 15, point 5): a speedscope file looptop writes is opened by
//! speedscope's own web app in a headless Chromium, which must show the main loop's timeline.
//! Needs Debian's `chromium` and the `speedscope` npm package unpacked under
//! `target/speedscope/package` (`.ci/run` installs both); without them the test prints SKIP,
//! and fails instead when `LOOPTOP_REQUIRE_BROWSER=1` (CI sets it).

use crate::util::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// speedscope's built app, if it is there.
fn speedscope_app() -> Option<PathBuf> {
    let dir = std::env::var_os("LOOPTOP_SPEEDSCOPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/speedscope/package/dist/release"));
    dir.join("index.html").is_file().then_some(dir)
}

/// A Chromium on PATH, if there is one.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

#[test]
fn speedscope_opens_the_file_and_shows_the_main_loop() {
    let (Some(app), Some(browser)) = (speedscope_app(), chromium()) else {
        let why = "it needs chromium and speedscope under target/speedscope (see .ci/run)";
        if std::env::var("LOOPTOP_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("speedscope_opens_the_file_and_shows_the_main_loop: required (LOOPTOP_REQUIRE_BROWSER=1) but {why}");
        }
        println!("SKIP: speedscope_opens_the_file_and_shows_the_main_loop: {why}");
        return;
    };
    let dir = TempDir::new("speedscope");
    let file = dir.path("example.speedscope.json");
    let rec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/example.rec");
    let out =
        looptop().args(["flame", "--format", "speedscope", "-o"]).arg(&file).arg("--from").arg(&rec).output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    // speedscope's own way to open a local file (its CLI does the same): a script that hands
    // it the bytes, named in the page's hash.
    use base64_free::encode;
    let bytes = std::fs::read(&file).unwrap();
    let loader = dir.path("load.js");
    std::fs::write(
        &loader,
        format!("speedscope.loadFileFromBase64(\"example.speedscope.json\", \"{}\")", encode(&bytes)),
    )
    .unwrap();
    let url = format!("file://{}/index.html#localProfilePath={}", app.display(), loader.display());
    let out = std::process::Command::new(browser)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"])
        .args(["--virtual-time-budget=10000", "--dump-dom", &url])
        .env("HOME", &dir.0)
        .output_within(Duration::from_secs(90));
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<title>looptop: node blockers.js - speedscope"), "speedscope did not load the file:\n{dom}");
    let report = looptop().args(["report", "--json"]).arg(&rec).output_limited();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let tid = &report["loops"][0]["tid"];
    let main = format!("main loop: node · thread {tid}");
    assert!(dom.contains(&main), "the main loop's timeline ({main}) is not shown:\n{dom}");
}

/// Base64 without a dependency for one test.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
