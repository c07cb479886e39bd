//! `--junit FILE`: one JUnit test case per budget (quick-junit); a failed budget carries its
//! message and the stalls or pauses that explain it. A failing command or a run with no loop
//! observed is one more failed case (`command`, `observation`).

use super::Verdict;
use crate::analysis::report::Report;
use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

/// The JUnit XML of a verdict.
pub fn to_xml(report: &Report, verdict: &Verdict) -> Result<String, quick_junit::SerializeError> {
    let command = report.target.command.join(" ");
    let mut suite = TestSuite::new(format!("looptop check: {command}"));
    suite.set_time(Duration::from_secs_f64(report.wall_ms.max(0.0) / 1e3));
    suite.add_property(Property::new("pid", report.target.pid.to_string()));
    suite.add_property(Property::new("runtime", report.target.runtime));
    if let Some(code) = report.target.exit_code {
        suite.add_property(Property::new("exit_code", code.to_string()));
    }
    for (o, evidence) in verdict.outcomes.iter().zip(&verdict.evidence) {
        let status = if o.held {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(format!("{}: observed {}", o.expr, o.shown));
            s.set_type("budget");
            let lines: Vec<String> = evidence
                .iter()
                .map(|e| {
                    let at = e.location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
                    let src = e.source.as_deref().map(|s| format!("\n    {}", s.trim())).unwrap_or_default();
                    format!("{}{at}{src}", e.what)
                })
                .collect();
            if !lines.is_empty() {
                s.set_description(lines.join("\n"));
            }
            s
        };
        let mut case = TestCase::new(o.expr.clone(), status);
        case.set_classname("looptop.budget");
        suite.add_test_case(case);
    }
    for u in &verdict.unmet {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(u.message.clone());
        s.set_type(u.case);
        let mut case = TestCase::new(u.case, s);
        case.set_classname("looptop.check");
        suite.add_test_case(case);
    }
    let mut xml = quick_junit::Report::new("looptop");
    xml.add_test_suite(suite);
    xml.to_string()
}
