//! The budget expression parser (`--budget`) and the TOML budget file parser (`--budget-file`,
//! `looptop.toml`) on arbitrary text; what parses is checked against an empty report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use looptop::sink::check::budget;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match budget::parse(text) {
        Ok(b) => {
            assert_eq!(b.expr, text.trim());
            let _ = b.check(&empty_report());
        }
        // The caret points into the expression.
        Err(e) => assert!(e.at <= text.chars().count(), "{e}"),
    }
    if let Ok(budgets) = looptop::sink::check::budget_file::parse(text, std::path::Path::new("fuzz.toml")) {
        for b in budgets {
            let _ = b.check(&empty_report());
        }
    }
});

fn empty_report() -> looptop::analysis::report::Report {
    let target = looptop::analysis::report::Target {
        pid: 1,
        command: vec![],
        runtime: "native",
        exit_code: None,
        stopped: false,
    };
    looptop::analysis::Session::new(0, 50_000_000).report(target, 1_000_000_000)
}
