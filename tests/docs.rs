//! The README and `docs/` against the real thing (issue 15, point 14): its example is what
//! `looptop report` prints of the committed recording, every `looptop …` command it shows parses,
//! and reports match the published JSON Schema.

use crate::util::*;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of docs/.
fn pages() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

#[test]
fn the_readme_shows_what_looptop_prints_of_its_recording() {
    let out = looptop().arg("report").arg(root().join("tests/data/example.rec")).env("NO_COLOR", "1").output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let shown = readme
        .split("$ looptop report tests/data/example.rec\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's example");
    assert_eq!(
        shown, printed,
        "README.md's example drifted from `looptop report tests/data/example.rec`: paste the output"
    );
    let json = looptop().args(["report", "--json"]).arg(root().join("tests/data/example.rec")).output_limited();
    assert_report_schema(&serde_json::from_slice(&json.stdout).unwrap());
}

/// The words of a command line as a shell would split them (quotes, `$(…)` and `$VAR` stand-ins).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut depth = 0;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') if depth == 0 => {
                quote = Some(c);
                any = true
            }
            (None, '(') if cur.ends_with('$') => {
                depth += 1;
                cur.push(c)
            }
            (None, ')') if depth > 0 => {
                depth -= 1;
                cur.push(c)
            }
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    // A pid from the shell ($!, $(pgrep …)) or a variable: any number will do.
    out.into_iter().map(|w| if w.starts_with('$') { "4242".into() } else { w }).collect()
}

#[test]
fn every_looptop_command_the_docs_show_parses() {
    let mut checked = 0;
    for (path, text) in pages() {
        // Inside a ```sh block every line is a command; inside any other only a `$ ` line is (the
        // rest is output).
        let mut block: Option<bool> = None;
        for line in text.lines() {
            if let Some(fence) = line.trim_start().strip_prefix("```") {
                block = if block.is_some() { None } else { Some(fence == "sh") };
                continue;
            }
            let Some(shell) = block else { continue };
            if !shell && !line.starts_with("$ ") {
                continue;
            }
            // `$ looptop …`, `sudo looptop …`, `looptop …` (a pipe or a comment ends it).
            let line = line.trim_start().trim_start_matches("$ ").trim_start_matches("sudo ");
            let Some(rest) = line.strip_prefix("looptop ") else { continue };
            let command = rest.split(" # ").next().unwrap().split(" | ").next().unwrap();
            // Two spaces and prose after a command: a description.
            let command = command.split("   ").next().unwrap().split(" &").next().unwrap();
            let mut argv = vec!["looptop".to_string()];
            argv.extend(words(command.trim()).into_iter().filter(|w| w != ">" && !w.starts_with("/etc/")));
            let parsed = looptop::cli::command().try_get_matches_from(&argv);
            assert!(parsed.is_ok(), "{}: `{}` does not parse: {}", path.display(), argv.join(" "), parsed.unwrap_err());
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} commands found in the docs");
}

#[test]
fn links_between_the_pages_lead_somewhere() {
    for (path, text) in pages() {
        for link in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            if link.starts_with("http") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() { path.clone() } else { path.parent().unwrap().join(file) };
            assert!(target.exists(), "{}: a link to {link}, which does not exist", path.display());
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let page = std::fs::read_to_string(&target).unwrap();
                let anchors: Vec<String> = page.lines().filter(|l| l.starts_with('#')).map(anchor_of).collect();
                assert!(
                    anchors.iter().any(|a| a == anchor),
                    "{}: no heading for #{anchor} in {}",
                    path.display(),
                    target.display()
                );
            }
        }
    }
}

/// GitHub's anchor of a heading.
fn anchor_of(heading: &str) -> String {
    let text = heading.trim_start_matches('#').trim().to_lowercase();
    text.chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .collect::<String>()
        .replace(' ', "-")
}
