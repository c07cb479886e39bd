//! `--github`: GitHub Actions workflow commands — an `::error` annotation per failed budget at
//! the source location of its worst stall, and one for a failing command or a run with no loop
//! observed — and a Markdown job summary.

use super::Verdict;
use crate::analysis::report::Report;
use std::path::Path;

/// The annotation lines, one per failed budget. `root` is the workspace that file paths are
/// made relative to (`GITHUB_WORKSPACE`, else the working directory).
pub fn annotations(verdict: &Verdict, root: &Path) -> Vec<String> {
    let unmet = verdict.unmet.iter().map(|u| {
        format!(
            "::error title={}::{}",
            escape_property(&format!("looptop check: {}", u.title)),
            escape_data(&u.message)
        )
    });
    unmet
        .chain(verdict.outcomes.iter().zip(&verdict.evidence).filter(|(o, _)| !o.held).map(|(o, evidence)| {
            let title = format!("looptop budget {} failed", o.expr);
            let mut message = format!("{}: observed {}", o.expr, o.shown);
            for e in evidence {
                message.push_str(&format!("\n{}", e.what));
                if let Some(src) = &e.source {
                    message.push_str(&format!(": {}", src.trim()));
                }
            }
            let place = evidence.iter().find_map(|e| e.location.as_deref().and_then(|l| split_location(l, root)));
            let props = match place {
                Some((file, line, col)) => {
                    let col = col.map(|c| format!(",col={c}")).unwrap_or_default();
                    format!("file={},line={line}{col},title={}", escape_property(&file), escape_property(&title))
                }
                None => format!("title={}", escape_property(&title)),
            };
            format!("::error {props}::{}", escape_data(&message))
        }))
        .collect()
}

/// The job summary (Markdown).
pub fn summary(report: &Report, verdict: &Verdict) -> String {
    let (n, failed) = (verdict.outcomes.len(), verdict.failed());
    let mut md = match verdict.unmet.first() {
        Some(u) => format!("### looptop check: {}\n\n", u.title),
        None if failed == 0 => format!("### looptop check: all {n} budgets held\n\n"),
        None => format!("### looptop check: {failed} of {n} budgets failed\n\n"),
    };
    for u in &verdict.unmet {
        md.push_str(&format!("❌ {}\n\n", u.message));
    }
    md.push_str(&format!(
        "`{}` (pid {}, {}), observed for {:.1} s\n\n| | budget | observed |\n|---|---|---|\n",
        report.target.command.join(" ").replace('`', "'"),
        report.target.pid,
        report.target.runtime,
        report.wall_ms / 1e3
    ));
    for (o, evidence) in verdict.outcomes.iter().zip(&verdict.evidence) {
        md.push_str(&format!("| {} | `{}` | {} |\n", if o.held { "✅" } else { "❌" }, o.expr, o.shown));
        for e in evidence {
            let at = e.location.as_deref().map(|l| format!(" `{l}`")).unwrap_or_default();
            md.push_str(&format!("| | ↳ {}{at} | |\n", e.what.replace('|', "\\|")));
        }
    }
    md
}

/// `file:line[:col]` (a path or a `file://` URL) as (path relative to `root`, line, col).
fn split_location(loc: &str, root: &Path) -> Option<(String, u32, Option<u32>)> {
    let loc = loc.strip_prefix("file://").unwrap_or(loc);
    let mut parts = loc.rsplitn(3, ':');
    let last: u32 = parts.next()?.parse().ok()?;
    let mid = parts.next()?;
    let (file, line, col) = match (mid.parse::<u32>(), parts.next()) {
        (Ok(line), Some(file)) => (file, line, Some(last)),
        _ => (loc.rsplit_once(':')?.0, last, None),
    };
    let rel = Path::new(file).strip_prefix(root).map(|p| p.to_string_lossy().into_owned());
    Some((rel.unwrap_or_else(|_| file.to_string()), line, col))
}

/// Escapes the message of a workflow command.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a property of a workflow command.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_relative_paths() {
        let root = Path::new("/home/runner/work/app");
        assert_eq!(
            split_location("/home/runner/work/app/src/server.js:12:3", root),
            Some(("src/server.js".into(), 12, Some(3)))
        );
        assert_eq!(split_location("file:///srv/x.js:7:1", root), Some(("/srv/x.js".into(), 7, Some(1))));
        assert_eq!(split_location("main.c:15", root), Some(("main.c".into(), 15, None)));
        assert_eq!(split_location("node", root), None);
    }

    #[test]
    fn workflow_commands_are_escaped() {
        assert_eq!(escape_data("50% of\nit"), "50%25 of%0Ait");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }
}
