//! `looptop check`: observe a command (or a pid for a while), check the budgets against the
//! report, and tell the result — text, `--json`, `--junit`, `--github` — with an exit code CI
//! can act on: 0 all held, 1 a budget failed or the command failed, 2 a malformed budget, 3 could
//! not observe (including a run in which no event loop was seen).

use crate::error::UserError;
use crate::observe::pipeline::Pipeline;
use crate::observe::{attach_and_observe, launch_and_observe, stall_floor, Collect, Flow};
use crate::plan::{CheckPlan, JsonTo, TargetSpec};
use crate::sink::check::budget::{self, Budget};
use crate::sink::check::budget_file;
use crate::sink::check::{github, junit, text, Unmet, Verdict};
use crate::sink::output::OutputFile;
use crate::source::now_ns;
use crate::target::launch::{self, LaunchPlan};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The budget file read when `--budget-file` is not given and it exists.
pub const DEFAULT_FILE: &str = "looptop.toml";

/// Runs `looptop check`.
pub fn execute(plan: CheckPlan) -> Result<u8> {
    let budgets = budgets(&plan)?;
    // Before anything starts: outputs that cannot be written are refused now, not after the run.
    if plan.github && plan.json == Some(JsonTo::Stdout) {
        return Err(UserError::usage("--github prints its annotations on stdout, where --json would print the report")
            .hint("write the JSON to a file instead: --json=report.json")
            .into());
    }
    let json_out = match &plan.json {
        Some(to) => Some(OutputFile::json(to, "the JSON report")?),
        None => None,
    };
    let junit_out =
        plan.junit.as_deref().map(|p| OutputFile::create(p, "the JUnit report", "--junit FILE")).transpose()?;
    let summary_out = match std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| plan.github && !p.is_empty()) {
        Some(p) => Some(OutputFile::append(Path::new(&p), "the job summary", "GITHUB_STEP_SUMMARY=FILE")?),
        None => None,
    };
    let collect = Collect::new(plan.observe.stall_threshold, plan.duration, plan.stacks);
    launch::forward_signals();
    let warmup_ns = plan.warmup.as_nanos() as u64;
    let mut counting = warmup_ns == 0;
    let start = now_ns();
    let mut on_poll = |p: &mut Pipeline| {
        let now = now_ns();
        if !counting && now >= start + warmup_ns {
            p.session.count_from(now);
            counting = true;
        }
        Flow::Go
    };
    let observed = match &plan.target {
        TargetSpec::Launch(command) => {
            let launch = LaunchPlan::inherited(command, stall_floor(collect.threshold));
            launch_and_observe(&launch, &collect, |_| {}, &mut on_poll)?
        }
        TargetSpec::Pid(pid) => attach_and_observe(*pid, &collect, &mut on_poll)?,
        TargetSpec::Recording(_) | TargetSpec::Missing => unreachable!("checked by budgets()"),
    };
    let mut observed = observed;
    if !counting {
        // The run ended inside the warm-up: nothing is left to judge.
        observed.session.count_from(start + warmup_ns);
        observed.warnings.push(format!(
            "the run ended within the {} warm-up: every budget is judged on nothing",
            crate::units::fmt_ms(plan.warmup.as_secs_f64() * 1e3)
        ));
        let end = observed.session.origin_ns() + (observed.report.wall_ms * 1e6) as u64;
        observed.report = observed.session.report(observed.report.target.clone(), end);
    }
    observed.tell();
    let report = &observed.report;
    let mut unmet = Vec::new();
    let failed_exit = report.target.exit_code.filter(|&c| c != 0 && !report.target.stopped);
    if let Some(code) = failed_exit.filter(|_| !plan.ignore_exit_code) {
        unmet.push(Unmet::command_failed(code));
    }
    if let (true, Some(&pid)) = (report.loops.is_empty(), observed.go_pids.first()) {
        unmet.push(Unmet::go_program(pid));
    } else if report.loops.is_empty() {
        unmet.push(Unmet::no_loop(matches!(plan.target, TargetSpec::Launch(_))));
    } else if observed.loops_without_slot > 0 {
        unmet.push(Unmet::loops_unseen(observed.loops_without_slot));
    }
    if let Some(why) = observed.lost.first() {
        unmet.push(Unmet::observation_lost(why));
    }
    let verdict = Verdict::new(&budgets, report, plan.warmup.as_secs_f64() * 1e3, unmet);
    let mut err = std::io::stderr().lock();
    text::write(report, &verdict, plan.observe.color && super::is_tty(2), &mut err)?;
    if let Some(code) = failed_exit.filter(|_| plan.ignore_exit_code) {
        eprintln!(
            "looptop: note: the command itself exited with status {code} (--ignore-exit-code); the budgets above \
             are judged on what was observed"
        );
    }
    if let Some(out) = &json_out {
        let mut value = serde_json::to_value(report)?;
        value["budgets"] = serde_json::to_value(&verdict.outcomes)?;
        value["passed"] = verdict.held().into();
        value["unmet"] = serde_json::to_value(&verdict.unmet)?;
        let text = serde_json::to_string_pretty(&value)? + "\n";
        out.write_with(|w| Ok(w.write_all(text.as_bytes())?))?;
    }
    if let Some(out) = &junit_out {
        let xml = junit::to_xml(report, &verdict).context("writing the JUnit report")?;
        out.write_with(|w| Ok(w.write_all(xml.as_bytes())?))?;
    }
    if plan.github {
        let root = std::env::var_os("GITHUB_WORKSPACE")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default();
        for line in github::annotations(&verdict, &root) {
            println!("{line}");
        }
        if let Some(out) = &summary_out {
            let summary = github::summary(report, &verdict);
            out.write_with(|w| Ok(w.write_all(summary.as_bytes())?))?;
        }
    }
    Ok(verdict.exit_code())
}

/// The budgets of the file (`--budget-file`, else `looptop.toml` when present) and the flags;
/// exits 2 on anything malformed, before anything runs.
fn budgets(plan: &CheckPlan) -> Result<Vec<Budget>> {
    if matches!(plan.target, TargetSpec::Recording(_) | TargetSpec::Missing) {
        return Err(UserError::usage("looptop check needs a target: a command after `--`, or --pid PID with -d DUR")
            .hint("e.g. looptop check --budget 'stalls==0' -- node test/load.js")
            .into());
    }
    if matches!(plan.target, TargetSpec::Pid(_)) && plan.duration.is_none() {
        return Err(UserError::usage("looptop check --pid needs -d DUR: how long to watch the process")
            .hint("e.g. looptop check --pid 4242 -d 30s --budget 'lag.p99<20ms'")
            .into());
    }
    let file = match &plan.budget_file {
        Some(f) => Some(f.clone()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    let mut out = Vec::new();
    if let Some(path) = &file {
        out.extend(from_file(path)?);
    }
    for expr in &plan.budgets {
        out.push(budget::parse(expr).map_err(|e| UserError::usage(e.to_string()).hint(budget::syntax_hint()))?);
    }
    if out.is_empty() {
        return Err(UserError::usage("no budget to check: give --budget EXPR or a budget file")
            .hint("e.g. --budget 'lag.p99<20ms' --budget 'stalls==0', or a looptop.toml with a [budgets] table")
            .into());
    }
    Ok(out)
}

/// The budgets of a TOML budget file.
fn from_file(path: &Path) -> Result<Vec<Budget>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::usage(format!("cannot read the budget file {}: {e}", path.display())).hint("check the path")
    })?;
    budget_file::parse(&text, path).map_err(|e| UserError { hint: e.hint(), ..UserError::usage(e.to_string()) }.into())
}
