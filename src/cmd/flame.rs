//! `looptop flame`: a flamegraph of a launched process, a running one or a recording — of every
//! sample, or (`--stalls-only`) of the samples taken while a loop was stalled.

use crate::cli::FlameFormat;
use crate::error::UserError;
use crate::observe::{observe_target, replay, Collect};
use crate::plan::{FlamePlan, TargetSpec};
use crate::sink::flame::{self, build_profile, perf_rate, Format};
use crate::sink::output::OutputFile;
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
    let (session, command, end_ns, rate_hz) = match &plan.target {
        TargetSpec::Recording(path) => {
            let replay = replay(path, None)?;
            let end = replay.end_ns();
            let rate = replay.header.rate_hz;
            (replay.session, replay.header.command.clone(), end, rate)
        }
        target => {
            let collect = Collect::new(plan.observe.stall_threshold, plan.duration, plan.stacks);
            let observed = observe_target(target, &collect, plan.observe.quiet, "flame")?;
            observed.tell();
            let end = observed.session.origin_ns() + (observed.report.wall_ms * 1e6) as u64;
            let rate = perf_rate(&observed.session, plan.stacks.rate_hz);
            (observed.session, observed.report.target.command, end, rate)
        }
    };
    let draw = flame::Draw { time: plan.time, ..flame::Draw::new(0, end_ns, rate_hz, plan.stalls_only) };
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
        } else if matches!(plan.target, TargetSpec::Recording(_)) {
            "the recording holds no stack sample".into()
        } else {
            "no stack was sampled: perf is not permitted and no stall happened (the agent samples stalls only)".into()
        };
        eprintln!("looptop: warning: the flamegraph is empty: {why}");
    }
    Ok(crate::error::exit::OK)
}
