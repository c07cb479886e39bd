//! `looptop check`'s outputs: budgets checked against a report ([`budget`]; from a TOML file,
//! [`budget_file`]), and the ways a result is told — the text summary ([`text`]), JUnit XML
//! ([`junit`]) and GitHub Actions annotations and job summary ([`github`]). All render the same
//! [`Verdict`].

pub mod budget;
pub mod budget_file;
pub mod github;
pub mod junit;
pub mod text;

use crate::analysis::report::{Report, Stall};
use crate::units::fmt_ms;
use budget::{Budget, Outcome};

/// Budgets checked against a report, with what explains each failure.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// One per budget, in the order given.
    pub outcomes: Vec<Outcome>,
    /// For each outcome, the evidence shown under it when it failed (worst stalls, pauses).
    pub evidence: Vec<Vec<Evidence>>,
    /// The warm-up left out (ms), 0 for none.
    pub warmup_ms: f64,
    /// What failed the check besides its budgets (a failing command, nothing observed).
    pub unmet: Vec<Unmet>,
}

/// A condition of every check, besides its budgets, that did not hold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unmet {
    /// Its name as a test case: `command` or `observation`.
    pub case: &'static str,
    /// What failed, in a few words ("the command failed").
    #[serde(skip)]
    pub title: &'static str,
    /// One sentence saying what happened and the way out.
    pub message: String,
    /// The exit code it calls for (1 a failed command, 3 nothing observed).
    #[serde(skip)]
    pub exit: u8,
}

impl Unmet {
    /// The command exited with a failure status of its own.
    pub fn command_failed(code: i32) -> Unmet {
        Unmet {
            case: "command",
            title: "the command failed",
            message: format!(
                "the command failed (exit status {code}), so the check fails whatever its budgets say; pass \
                 --ignore-exit-code to judge them anyway (a load script that exits non-zero on purpose)"
            ),
            exit: crate::error::exit::BUDGET,
        }
    }

    /// Threads waited for events but their agent had no slot left to time them: their stalls
    /// cannot be judged, so the check cannot pass.
    pub fn loops_unseen(threads: u64) -> Unmet {
        let s = if threads == 1 { "" } else { "s" };
        Unmet {
            case: "observation",
            title: "loops not observed",
            message: format!(
                "{threads} thread{s} waited for events but found no free loop slot (the agent keeps {} per process; \
                 the main thread always has one), so a stall there would go unseen and the check cannot pass; \
                 start the event loop's thread before the threads that poll, or run fewer polling threads",
                looptop_abi::LOOP_SLOTS
            ),
            exit: crate::error::exit::OBSERVE,
        }
    }

    /// A process's segment became unreadable mid-way: what came after was not seen.
    pub fn observation_lost(why: &str) -> Unmet {
        Unmet {
            case: "observation",
            title: "observation cut short",
            message: format!(
                "the observation was cut short while the process ran ({why}), so the budgets cannot be vouched for"
            ),
            exit: crate::error::exit::OBSERVE,
        }
    }

    /// No event loop was seen, so no budget can be judged.
    pub fn no_loop(launched: bool) -> Unmet {
        let what = if launched { "the command" } else { "the process" };
        Unmet {
            case: "observation",
            title: "no event loop was observed",
            message: format!(
                "no event loop was observed ({what} never waited in {}), so no budget can be judged; check that it \
                 starts your server and runs long enough to serve",
                crate::source::waits::NAMED
            ),
            exit: crate::error::exit::OBSERVE,
        }
    }

    /// The target is a Go program: there is no loop whose budgets could be judged.
    pub fn go_program(pid: u32) -> Unmet {
        Unmet {
            case: "observation",
            title: "a Go program has no event loop",
            message: format!(
                "process {pid} is a Go program: {}; loop budgets cannot be judged for it",
                crate::target::golang::NO_LOOP
            ),
            exit: crate::error::exit::OBSERVE,
        }
    }
}

/// One line of evidence under a failed budget, with a source location when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// What happened ("312.4 ms regex in validateEmail").
    pub what: String,
    /// `file:line:col`, where known.
    pub location: Option<String>,
    /// The source line there.
    pub source: Option<String>,
}

impl Verdict {
    /// Checks every budget against `report`.
    pub fn new(budgets: &[Budget], report: &Report, warmup_ms: f64, unmet: Vec<Unmet>) -> Verdict {
        let outcomes: Vec<Outcome> = budgets.iter().map(|b| b.check(report)).collect();
        let evidence = outcomes.iter().map(|o| if o.held { Vec::new() } else { evidence(report, o.metric) }).collect();
        Verdict { outcomes, evidence, warmup_ms, unmet }
    }

    /// Whether the check passed: every budget held and nothing else failed it.
    pub fn held(&self) -> bool {
        self.unmet.is_empty() && self.outcomes.iter().all(|o| o.held)
    }

    /// The exit code: the first unmet condition's, else 1 when a budget failed, else 0.
    pub fn exit_code(&self) -> u8 {
        match self.unmet.first() {
            Some(u) => u.exit,
            None if self.held() => crate::error::exit::OK,
            None => crate::error::exit::BUDGET,
        }
    }

    /// Budgets that failed.
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.held).count()
    }
}

/// How many stalls or pauses are shown under a failed budget.
const WORST: usize = 3;

/// What explains a failed budget on `metric`: the worst stalls for loop metrics, the longest
/// pauses for GC and allocator metrics, the pool's figures for pool metrics.
fn evidence(report: &Report, metric: &str) -> Vec<Evidence> {
    let family = metric.split('.').next().unwrap_or(metric);
    match family {
        "gc" => {
            let mut pauses: Vec<_> = report.gc.iter().flat_map(|g| &g.pauses).collect();
            pauses.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
            pauses
                .iter()
                .take(WORST)
                .map(|p| Evidence {
                    what: format!("{} {} GC pause at {:.2} s", fmt_ms(p.duration_ms), p.kind, p.start_ms / 1e3),
                    location: None,
                    source: None,
                })
                .collect()
        }
        "alloc" => {
            let mut pauses: Vec<_> = report.alloc.iter().flat_map(|a| &a.pauses).collect();
            pauses.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
            pauses
                .iter()
                .take(WORST)
                .map(|p| Evidence {
                    what: format!(
                        "{} in {} of {:.1} MB at {:.2} s (thread {})",
                        fmt_ms(p.duration_ms),
                        p.call,
                        p.size as f64 / 1048576.0,
                        p.start_ms / 1e3,
                        p.tid
                    ),
                    location: None,
                    source: None,
                })
                .collect()
        }
        "pool" => report
            .pool
            .iter()
            .map(|p| Evidence {
                what: format!(
                    "{} pool of {} workers: {} items, at most {} queued, wait p99 {} (max {})",
                    p.kind,
                    p.size,
                    p.items,
                    p.queued_max,
                    fmt_ms(p.wait_ms.p99),
                    fmt_ms(p.wait_ms.max)
                ),
                location: None,
                source: None,
            })
            .collect(),
        _ => worst_stalls(report).into_iter().take(WORST).map(stall_evidence).collect(),
    }
}

/// Every stall, longest first.
pub fn worst_stalls(report: &Report) -> Vec<&Stall> {
    let mut stalls: Vec<&Stall> = report.stalls().map(|(_, s)| s).collect();
    stalls.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    stalls
}

fn stall_evidence(s: &Stall) -> Evidence {
    let what = match &s.blocker {
        Some(b) => format!("{} {} in {} at {:.2} s", fmt_ms(s.duration_ms), b.kind, b.frame, s.start_ms / 1e3),
        None => format!("{} stall at {:.2} s (no stack sampled)", fmt_ms(s.duration_ms), s.start_ms / 1e3),
    };
    Evidence {
        what,
        location: s.blocker.as_ref().and_then(|b| b.location.clone()),
        source: s.blocker.as_ref().and_then(|b| b.source.clone()),
    }
}
