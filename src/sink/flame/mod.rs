//! Flamegraphs of sampled stacks: an SVG drawn by inferno, Brendan Gregg's folded text, or a
//! speedscope JSON file.
//!
//! The input is a [`Profile`]: a frame table and weighted stacks of indices into it
//! ([`build_profile`] makes one of a session's samples). Every format
//! is written by [`write()`] with [`Options`]; the folded lines are the common ground (the SVG is
//! inferno drawing them), so a frame looks the same in the folded file and in the SVG.

mod build;
mod folded;
mod speedscope;
mod svg;

pub use build::{build_profile, perf_rate, Draw, Time};

use crate::symbolize::Frame;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{BufWriter, Write};
use std::str::FromStr;

/// Stacks to draw: a frame table and weighted stacks of frame indices, root first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Headline, e.g. `looptop: node server.js`.
    pub title: String,
    /// Second line, e.g. `5.0 s · 4 980 samples · 3 stalls (stalls only)`.
    pub subtitle: String,
    /// The frames the stacks refer to.
    pub frames: Vec<Frame>,
    /// Each stack as frame ids root → leaf, with its weight (number of samples).
    pub stacks: Vec<(Vec<u32>, u64)>,
    /// The same samples thread by thread, in time order (speedscope's timelines).
    #[serde(default)]
    pub threads: Vec<Timeline>,
    /// When the drawn stretch began (monotonic ns), for times in the timelines.
    #[serde(default)]
    pub origin_ns: u64,
}

/// One thread's samples in time order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The thread's role and id, e.g. `main loop: node · thread 4242`.
    pub name: String,
    /// (when, stack root → leaf without the role, how long it stands for in ns).
    pub samples: Vec<(u64, Vec<u32>, u64)>,
}

impl Profile {
    /// Σ weights: the number of samples the profile holds.
    pub fn sample_count(&self) -> u64 {
        self.stacks.iter().fold(0u64, |n, (_, w)| n.saturating_add(*w))
    }

    /// Refuses a stack that names a frame the table does not have (a bug in whoever built it).
    fn check(&self) -> anyhow::Result<()> {
        let n = self.frames.len();
        for (i, (stack, _)) in self.stacks.iter().enumerate() {
            if let Some(bad) = stack.iter().find(|&&id| id as usize >= n) {
                anyhow::bail!("stack {i} refers to frame {bad}, but the profile has only {n} frames");
            }
        }
        Ok(())
    }
}

/// The file format [`write()`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// An interactive SVG flamegraph (inferno).
    #[default]
    Svg,
    /// Folded stacks, one `frame;frame;frame count` line per unique stack (Brendan Gregg).
    Folded,
    /// A speedscope JSON file (<https://www.speedscope.app>).
    Speedscope,
}

impl Format {
    /// The name used on the command line: `svg`, `folded` or `speedscope`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Folded => "folded",
            Format::Speedscope => "speedscope",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is none of `svg`, `folded`, `speedscope`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown flamegraph format '{0}': expected svg, folded or speedscope")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Format::Svg, Format::Folded, Format::Speedscope]
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// Default values for [`Options`].
pub mod defaults {
    use super::Format;

    /// SVG, the format a browser opens.
    pub const FORMAT: Format = Format::Svg;
    /// Fluid: the SVG fills the browser window (1200 px wide before its script runs).
    pub const WIDTH: Option<usize> = None;
    /// Roots at the bottom, like every flamegraph since Brendan Gregg's.
    pub const INVERTED: bool = false;
}

/// How to write a [`Profile`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The file format. [Default](defaults::FORMAT).
    pub format: Format,
    /// SVG width in pixels; `None` lets the SVG fill the window. [Default](defaults::WIDTH).
    pub width: Option<usize>,
    /// SVG only: draw an icicle graph, roots at the top. [Default](defaults::INVERTED).
    pub inverted: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { format: defaults::FORMAT, width: defaults::WIDTH, inverted: defaults::INVERTED }
    }
}

impl Options {
    /// Default options for `format`.
    pub fn new(format: Format) -> Self {
        Options { format, ..Options::default() }
    }
}

/// Writes `profile` to `out` in `options.format`. `out` need not be buffered.
pub fn write(profile: &Profile, options: &Options, out: impl Write) -> anyhow::Result<()> {
    profile.check()?;
    let mut out = BufWriter::new(out);
    match options.format {
        Format::Folded => folded::write(profile, &mut out),
        Format::Svg => svg::write(profile, options, &mut out),
        Format::Speedscope => speedscope::write(profile, &mut out),
    }
    .with_context(|| format!("writing the {} flamegraph", options.format))?;
    out.flush().with_context(|| format!("writing the {} flamegraph", options.format))?;
    Ok(())
}

#[cfg(test)]
mod testdata;

#[cfg(test)]
mod tests {
    use super::testdata::{js_frame, native_frame, profile};
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [Format::Svg, Format::Folded, Format::Speedscope] {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("SVG".parse::<Format>(), Ok(Format::Svg));
        let err = "png".parse::<Format>().unwrap_err();
        assert_eq!(err.to_string(), "unknown flamegraph format 'png': expected svg, folded or speedscope");
    }

    #[test]
    fn a_stack_naming_a_missing_frame_is_refused_in_every_format() {
        let p = profile(vec![js_frame("main", "/srv/a.js", 1, 1)], vec![(vec![0, 3], 2)]);
        for format in [Format::Svg, Format::Folded, Format::Speedscope] {
            let mut out = Vec::new();
            let err = write(&p, &Options::new(format), &mut out).unwrap_err();
            assert_eq!(err.to_string(), "stack 0 refers to frame 3, but the profile has only 1 frames");
            assert!(out.is_empty(), "{format}: nothing may be written for a bad profile");
        }
    }

    #[test]
    fn sample_count_sums_weights() {
        let p = profile(vec![native_frame("main")], vec![(vec![0], 3), (vec![0], 4), (vec![], 1)]);
        assert_eq!(p.sample_count(), 8);
        assert_eq!(Profile::default().sample_count(), 0);
    }
}
