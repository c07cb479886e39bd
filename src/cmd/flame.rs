//! `looptop flame`: a flamegraph of a launched process, a running one or a recording — of every
//! sample, or (`--stalls-only`) of the samples taken while a loop was stalled.

use crate::cli::FlameFormat;
use crate::error::UserError;
use crate::observe::{observe_target, replay, Collect};
use crate::plan::{FlamePlan, TargetSpec};
use crate::sink::flame::{self, build_profile, perf_rate, Format};
use crate::sink::output::OutputFile;
use crate::source::recording::Load;
use anyhow::Result;

/// Runs `looptop flame`.
pub fn execute(plan: FlamePlan) -> Result<u8> {
    if let Some(ext) = &plan.unknown_extension {
        return Err(UserError::usage(format!(
            "looptop cannot write a .{ext} flamegraph ({}): it writes SVG (.svg), folded stacks (.folded, .txt) \
             and speedscope JSON (.json)",
            plan.output.display()
        ))
        .hint(format!(
            "name the file {} (an SVG opens in any browser), or give --format to write that format under this name",
            plan.output.with_extension("svg").display()
        ))
        .into());
    }
    // Before anything starts: a flamegraph that cannot be written is refused now.
    let out = OutputFile::create(&plan.output, "the flamegraph", "-o FILE")?;
    // A speedscope profile holds every sample in its thread's timeline: none is folded.
    let keep_all = plan.format == FlameFormat::Speedscope;
    let (session, command, since_ns, end_ns, rate_hz) = match &plan.target {
        TargetSpec::Recording(path) => {
            let window = window(&plan)?;
            let replay = replay(path, &Load { window, keep_all, ..Load::default() })?;
            let origin = replay.header.origin_ns;
            let (since, end) = match window {
                Some((since, until)) => (origin + since, replay.end_ns().min(origin.saturating_add(until))),
                None => (0, replay.end_ns()),
            };
            let rate = replay.header.rate_hz;
            (replay.session, replay.header.command.clone(), since, end, rate)
        }
        target => {
            let collect = Collect {
                keep_all_samples: keep_all,
                ..Collect::new(plan.observe.stall_threshold, plan.duration, plan.stacks)
            };
            let observed = observe_target(target, &collect, plan.observe.quiet, "flame")?;
            observed.tell();
            let end = observed.session.origin_ns() + (observed.report.wall_ms * 1e6) as u64;
            let rate = perf_rate(&observed.session, plan.stacks.rate_hz);
            (observed.session, observed.report.target.command, 0, end, rate)
        }
    };
    let draw = flame::Draw { time: plan.time, ..flame::Draw::new(since_ns, end_ns, rate_hz, plan.stalls_only) };
    let profile = build_profile(&session, &command, &draw);
    let format = match plan.format {
        FlameFormat::Svg => Format::Svg,
        FlameFormat::Folded => Format::Folded,
        FlameFormat::Speedscope => Format::Speedscope,
    };
    let options = flame::Options { format, ..flame::Options::default() };
    let samples = profile.sample_count();
    out.write_with(|w| flame::write(&profile, &options, w))?;
    if !plan.observe.quiet && !out.is_stdout() {
        eprintln!("looptop: wrote {} ({})", plan.output.display(), profile.subtitle);
    }
    if samples == 0 && !plan.observe.quiet {
        let wall = flame::Draw { time: Some(flame::Time::Wall), ..draw };
        let why = if draw.time() != flame::Time::Wall && build_profile(&session, &command, &wall).sample_count() > 0 {
            format!("no sample is of {} time (--time wall draws the others)", draw.time().name())
        } else if plan.stalls_only {
            "no stack was sampled inside a stall (no stall, or no stack source during it)".into()
        } else if matches!(plan.target, TargetSpec::Recording(_)) && (plan.since.is_some() || plan.until.is_some()) {
            "the recording holds no stack sample in that window".into()
        } else if matches!(plan.target, TargetSpec::Recording(_)) {
            "the recording holds no stack sample".into()
        } else {
            "no stack was sampled: perf is not permitted and no stall happened (the agent samples stalls only)".into()
        };
        eprintln!("looptop: warning: the flamegraph is empty: {why}");
    }
    Ok(crate::error::exit::OK)
}

/// The window `--since`/`--until` ask for (ns from the recording's start), if any.
fn window(plan: &FlamePlan) -> Result<Option<(u64, u64)>> {
    if plan.since.is_none() && plan.until.is_none() {
        return Ok(None);
    }
    let since = plan.since.unwrap_or_default();
    let until = plan.until.unwrap_or(std::time::Duration::MAX);
    if until <= since {
        return Err(UserError::usage(format!(
            "--until {} is not after --since {}: the window would be empty",
            crate::units::fmt_ms(until.as_secs_f64() * 1e3),
            crate::units::fmt_ms(since.as_secs_f64() * 1e3)
        ))
        .hint("give an --until later than --since, both counted from the recording's start (e.g. --since 10m --until 12m)")
        .into());
    }
    let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Ok(Some((ns(since), ns(until))))
}
