//! The recording reader on arbitrary bytes, and everything `looptop report` and `looptop flame
//! --from` then do with what it read: the report, its text and JSON forms, and the flamegraph
//! profile in every format (SVG only for the profile of every sample: inferno is the slow part).
#![no_main]

use libfuzzer_sys::fuzz_target;
use looptop::sink::{flame, json, summary};
use looptop::source::recording;

fuzz_target!(|data: &[u8]| {
    let Ok(replay) = recording::read_from(data) else { return };
    let report = replay.report(std::path::Path::new("fuzz.rec"));
    json::write(&report, std::io::sink()).unwrap();
    summary::write(&report, &summary::Options::new(false), std::io::sink()).unwrap();
    for stalls_only in [false, true] {
        let draw = flame::Draw::new(0, replay.end_ns(), replay.header.rate_hz, stalls_only);
        let profile = flame::build_profile(&replay.session, &replay.header.command, &draw);
        let svg = (!stalls_only).then_some(flame::Format::Svg);
        for format in [flame::Format::Folded, flame::Format::Speedscope].into_iter().chain(svg) {
            flame::write(&profile, &flame::Options::new(format), std::io::sink()).unwrap();
        }
    }
});
