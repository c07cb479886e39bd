//! Budget expressions (`lag.p99<20ms`, `stalls==0`, `gc.total<2%`): the metric table, the
//! parser with errors that point at the offending character, and evaluation against a report.

use crate::analysis::report::Report;

/// What a metric measures, which decides the units its limit may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A duration: the limit needs `us`, `ms` or `s`.
    Time,
    /// A count: a plain number.
    Count,
    /// A share: a plain number from 0 to 1, or a percentage.
    Ratio,
    /// A total time: a duration, or a percentage of the observed wall time.
    TimeOrShare,
}

/// One metric a budget can name.
pub struct Metric {
    /// Its name in expressions.
    pub name: &'static str,
    /// What it measures.
    pub measure: Measure,
    /// What it is, for `--help` and messages.
    pub what: &'static str,
    /// Its value in a report (ms for times, 0..1 for ratios); `None` where the source cannot see it.
    get: fn(&Report) -> Option<f64>,
}

fn worst_loop(r: &Report, f: fn(&crate::analysis::report::LoopReport) -> f64) -> Option<f64> {
    Some(r.loops.iter().map(f).fold(0.0, f64::max))
}

/// Every metric: rows of data, not a chain of `if`s.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "lag.p50",
        measure: Measure::Time,
        what: "median lag of the worst loop",
        get: |r| worst_loop(r, |l| l.lag_ms.p50),
    },
    Metric {
        name: "lag.p90",
        measure: Measure::Time,
        what: "90th percentile lag",
        get: |r| worst_loop(r, |l| l.lag_ms.p90),
    },
    Metric {
        name: "lag.p99",
        measure: Measure::Time,
        what: "99th percentile lag",
        get: |r| worst_loop(r, |l| l.lag_ms.p99),
    },
    Metric {
        name: "lag.p999",
        measure: Measure::Time,
        what: "99.9th percentile lag",
        get: |r| worst_loop(r, |l| l.lag_ms.p999),
    },
    Metric { name: "lag.max", measure: Measure::Time, what: "longest lag", get: |r| worst_loop(r, |l| l.lag_ms.max) },
    Metric { name: "tick.p50", measure: Measure::Time, what: "median tick", get: |r| worst_loop(r, |l| l.tick_ms.p50) },
    Metric {
        name: "tick.p90",
        measure: Measure::Time,
        what: "90th percentile tick",
        get: |r| worst_loop(r, |l| l.tick_ms.p90),
    },
    Metric {
        name: "tick.p99",
        measure: Measure::Time,
        what: "99th percentile tick",
        get: |r| worst_loop(r, |l| l.tick_ms.p99),
    },
    Metric {
        name: "tick.max",
        measure: Measure::Time,
        what: "longest tick",
        get: |r| worst_loop(r, |l| l.tick_ms.max),
    },
    Metric {
        name: "stalls",
        measure: Measure::Count,
        what: "stalls of all loops",
        get: |r| Some(r.stalls().count() as f64),
    },
    Metric {
        name: "stall.max",
        measure: Measure::Time,
        what: "longest stall (0 without stalls)",
        get: |r| Some(r.stalls().map(|(_, s)| s.duration_ms).fold(0.0, f64::max)),
    },
    Metric {
        name: "stall.total",
        measure: Measure::TimeOrShare,
        what: "time spent in stalls",
        get: |r| Some(r.stalls().map(|(_, s)| s.duration_ms).sum()),
    },
    Metric {
        name: "utilization",
        measure: Measure::Ratio,
        what: "busy share of the busiest loop",
        get: |r| worst_loop(r, |l| l.utilization),
    },
    Metric {
        name: "gc.max",
        measure: Measure::Time,
        what: "longest GC pause",
        get: |r| r.gc.as_ref().map(|g| g.max_ms),
    },
    Metric {
        name: "gc.total",
        measure: Measure::TimeOrShare,
        what: "time in GC pauses",
        get: |r| r.gc.as_ref().map(|g| g.total_ms),
    },
    Metric {
        name: "gc.count",
        measure: Measure::Count,
        what: "GC pauses",
        get: |r| r.gc.as_ref().map(|g| g.count as f64),
    },
    Metric {
        name: "pool.wait.p50",
        measure: Measure::Time,
        what: "median wait for a pool worker",
        get: |r| r.pool.as_ref().map(|p| p.wait_ms.p50),
    },
    Metric {
        name: "pool.wait.p99",
        measure: Measure::Time,
        what: "99th percentile pool wait",
        get: |r| r.pool.as_ref().map(|p| p.wait_ms.p99),
    },
    Metric {
        name: "pool.wait.max",
        measure: Measure::Time,
        what: "longest pool wait",
        get: |r| r.pool.as_ref().map(|p| p.wait_ms.max),
    },
    Metric {
        name: "pool.queued.max",
        measure: Measure::Count,
        what: "most items queued at once",
        get: |r| r.pool.as_ref().map(|p| p.queued_max as f64),
    },
    Metric {
        name: "pool.busy.max",
        measure: Measure::Count,
        what: "most workers busy at once",
        get: |r| r.pool.as_ref().map(|p| p.busy_max as f64),
    },
    Metric {
        name: "alloc.max",
        measure: Measure::Time,
        what: "longest allocator pause",
        get: |r| r.alloc.as_ref().map(|a| a.max_ms),
    },
    Metric {
        name: "alloc.total",
        measure: Measure::TimeOrShare,
        what: "time in allocator pauses",
        get: |r| r.alloc.as_ref().map(|a| a.total_ms),
    },
    Metric {
        name: "alloc.count",
        measure: Measure::Count,
        what: "allocator pauses",
        get: |r| r.alloc.as_ref().map(|a| a.count as f64),
    },
];

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Op {
    /// As written.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }

    fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
            Op::Eq => (observed - limit).abs() < 1e-9,
        }
    }
}

/// The unit a limit was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// No unit.
    None,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
    /// Percent.
    Percent,
}

/// A parsed budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The expression as written (trimmed).
    pub expr: String,
    /// The metric's name.
    pub metric: &'static str,
    /// The comparison.
    pub op: Op,
    /// The limit as written.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
}

/// A malformed budget: what is wrong and at which character (0-based, in `expr`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("budget '{expr}': {what}\n    {expr}\n    {caret}^", caret = " ".repeat(*.at))]
pub struct BudgetError {
    /// The expression.
    pub expr: String,
    /// Where (character index).
    pub at: usize,
    /// What is wrong.
    pub what: String,
}

/// Parses one budget expression.
pub fn parse(expr: &str) -> Result<Budget, BudgetError> {
    let chars: Vec<char> = expr.chars().collect();
    let err = |at: usize, what: String| BudgetError { expr: expr.to_string(), at, what };
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i == chars.len() {
        return Err(err(0, "the budget is empty; write METRIC OP VALUE, e.g. lag.p99<20ms".into()));
    }
    let name_at = i;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
        i += 1;
    }
    let name: String = chars[name_at..i].iter().collect();
    if name.is_empty() {
        return Err(err(i, format!("expected a metric name, found '{}'", chars[i])));
    }
    let Some(metric) = METRICS.iter().find(|m| m.name == name) else {
        return Err(err(name_at, format!("unknown metric '{name}'{}", suggestion(&name))));
    };
    skip_ws(&mut i);
    let op_at = i;
    let next = |k: usize| chars.get(k).copied();
    let op = match (next(i), next(i + 1)) {
        (Some('<'), Some('=')) => Some((Op::Le, 2)),
        (Some('>'), Some('=')) => Some((Op::Ge, 2)),
        (Some('='), Some('=')) => Some((Op::Eq, 2)),
        (Some('<'), _) => Some((Op::Lt, 1)),
        (Some('>'), _) => Some((Op::Gt, 1)),
        _ => None,
    };
    let Some((op, len)) = op else {
        let found = next(i).map_or("the end".to_string(), |c| format!("'{c}'"));
        return Err(err(op_at, format!("expected an operator (<, <=, >, >=, ==) after '{name}', found {found}")));
    };
    i += len;
    skip_ws(&mut i);
    let num_at = i;
    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
        i += 1;
    }
    let num: String = chars[num_at..i].iter().collect();
    let Ok(value) = num.parse::<f64>() else {
        let found = next(num_at).map_or("the end".to_string(), |c| format!("'{c}'"));
        return Err(err(num_at, format!("expected a number after '{}', found {found}", op.symbol())));
    };
    let unit_at = i;
    while i < chars.len() && (chars[i].is_ascii_alphabetic() || chars[i] == '%') {
        i += 1;
    }
    let unit_text: String = chars[unit_at..i].iter().collect();
    let unit = match unit_text.as_str() {
        "" => Unit::None,
        "us" | "µs" => Unit::Us,
        "ms" => Unit::Ms,
        "s" => Unit::S,
        "%" => Unit::Percent,
        other => return Err(err(unit_at, format!("unknown unit '{other}' (us, ms, s or %)"))),
    };
    skip_ws(&mut i);
    if i < chars.len() {
        let rest: String = chars[i..].iter().collect();
        return Err(err(i, format!("unexpected '{rest}' after the limit")));
    }
    let allowed = match metric.measure {
        Measure::Time => matches!(unit, Unit::Us | Unit::Ms | Unit::S),
        Measure::Count => unit == Unit::None,
        Measure::Ratio => matches!(unit, Unit::None | Unit::Percent),
        Measure::TimeOrShare => unit != Unit::None,
    };
    if !allowed {
        let what = match metric.measure {
            Measure::Time => {
                format!("{} is a time: give the limit a unit (us, ms or s), e.g. {}20ms", metric.name, op.symbol())
            }
            Measure::Count => format!("{} is a count: the limit is a plain number, e.g. {}3", metric.name, op.symbol()),
            Measure::Ratio => format!(
                "{} is a share: a number from 0 to 1 or a percentage, e.g. {}0.8 or {}80%",
                metric.name,
                op.symbol(),
                op.symbol()
            ),
            Measure::TimeOrShare => format!(
                "{} is a total time: give a unit (us, ms, s) or a percentage of the run, e.g. {}2%",
                metric.name,
                op.symbol()
            ),
        };
        return Err(err(unit_at, what));
    }
    if metric.measure == Measure::Ratio && unit == Unit::None && value > 1.0 {
        return Err(err(num_at, format!("{} is a share from 0 to 1 (or write {value}%)", metric.name)));
    }
    let expr = expr.trim().to_string();
    Ok(Budget { expr, metric: metric.name, op, value, unit })
}

/// How a budget is written, with every metric: the fix under a malformed budget.
pub fn syntax_hint() -> String {
    let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    format!(
        "a budget is METRIC OP VALUE[UNIT], OP one of < <= > >= ==, UNIT us ms s or %; metrics: {}",
        names.join(", ")
    )
}

fn suggestion(name: &str) -> String {
    let close: Vec<&str> = METRICS
        .iter()
        .map(|m| m.name)
        .filter(|m| m.split('.').next() == name.split('.').next() || edit_distance(m, name) <= 2)
        .collect();
    let list = if close.is_empty() { METRICS.iter().map(|m| m.name).collect() } else { close };
    format!(" (known: {})", list.join(", "))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A budget checked against a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The expression.
    pub expr: String,
    /// The metric.
    pub metric: &'static str,
    /// The operator.
    pub op: &'static str,
    /// The limit in the metric's own scale (ms, count, 0..1; for a percentage of the run, ms).
    pub limit: f64,
    /// The observed value in the same scale; `null` where the source could not see it.
    pub observed: Option<f64>,
    /// Whether it held (a budget on something not observed does not).
    pub held: bool,
    /// The observed value for people (`12.3 ms`, `3`, `62%`).
    pub shown: String,
}

impl Budget {
    /// Checks the budget against `report`.
    pub fn check(&self, report: &Report) -> Outcome {
        let metric = METRICS.iter().find(|m| m.name == self.metric).expect("parsed budgets name known metrics");
        let observed = (metric.get)(report);
        let wall_ms = report.wall_ms.max(f64::MIN_POSITIVE);
        // The limit in the metric's scale.
        let limit = match self.unit {
            Unit::Us => self.value / 1e3,
            Unit::Ms => self.value,
            Unit::S => self.value * 1e3,
            Unit::Percent if metric.measure == Measure::Ratio => self.value / 100.0,
            Unit::Percent => self.value / 100.0 * wall_ms,
            Unit::None => self.value,
        };
        let shown = match (observed, metric.measure, self.unit) {
            (None, _, _) => "not observed".to_string(),
            (Some(v), Measure::Count, _) => format!("{v:.0}"),
            (Some(v), Measure::Ratio, _) => format!("{:.1}%", v * 100.0),
            (Some(v), Measure::TimeOrShare, Unit::Percent) => {
                format!("{:.2}% ({})", v / wall_ms * 100.0, crate::units::fmt_ms(v))
            }
            (Some(v), _, _) => crate::units::fmt_ms(v),
        };
        Outcome {
            expr: self.expr.clone(),
            metric: metric.name,
            op: self.op.symbol(),
            limit,
            observed,
            held: observed.is_some_and(|v| self.op.holds(v, limit)),
            shown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_and_operator_parses() {
        for m in METRICS {
            let value = match m.measure {
                Measure::Time => "20ms",
                Measure::Count => "3",
                Measure::Ratio => "0.8",
                Measure::TimeOrShare => "2%",
            };
            for op in ["<", "<=", ">", ">=", "=="] {
                let b = parse(&format!(" {} {op} {value} ", m.name)).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(b.metric, m.name);
                assert_eq!(b.op.symbol(), op);
            }
        }
        assert_eq!(parse("tick.max<=1.5s").unwrap().unit, Unit::S);
        assert_eq!(parse("lag.p99<500us").unwrap().unit, Unit::Us);
        assert_eq!(parse("utilization<80%").unwrap().unit, Unit::Percent);
        assert_eq!(parse("gc.total<250ms").unwrap().unit, Unit::Ms);
    }

    #[test]
    fn malformed_budgets_point_at_the_offending_character() {
        let cases: [(&str, usize, &str); 12] = [
            ("", 0, "empty"),
            ("   ", 0, "empty"),
            ("lag.p98<20ms", 0, "unknown metric 'lag.p98'"),
            ("lag.p99<<20ms", 8, "expected a number"),
            ("lag.p99 20ms", 8, "expected an operator"),
            ("lag.p99", 7, "found the end"),
            ("lag.p99<20mss", 10, "unknown unit 'mss'"),
            ("lag.p99<20ms junk", 13, "unexpected 'junk'"),
            ("lag.p99<20", 10, "is a time"),
            ("stalls==0ms", 9, "is a count"),
            ("utilization<1.5", 12, "share from 0 to 1"),
            ("=20ms", 0, "expected a metric name"),
        ];
        for (expr, at, what) in cases {
            let e = parse(expr).expect_err(expr);
            assert_eq!(e.at, at, "{expr}: {e}");
            assert!(e.what.contains(what), "{expr}: {e}");
            let text = e.to_string();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[2].len() - 4 - 1, at, "the caret sits under the character:\n{text}");
        }
        assert!(parse("lag.p98<20ms").unwrap_err().what.contains("lag.p99"), "close names suggested");
    }
}
