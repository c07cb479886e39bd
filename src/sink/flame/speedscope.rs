//! speedscope's file format (<https://www.speedscope.app/file-format-schema.json>): one `sampled`
//! profile per thread over the shared frame table, its samples in time order weighted by the
//! time each stands for (milliseconds), so speedscope's time-order view is each thread's
//! timeline; the main loop's profile is the one shown first. A profile without timelines (built
//! by hand) is one profile of merged stacks weighted by sample counts (unit `none`).

use super::Profile;
use crate::symbolize::{Frame, FrameKind};
use serde::Serialize;
use std::io::Write;

const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared<'a>,
    profiles: Vec<Sampled<'a>>,
    name: &'a str,
    active_profile_index: u32,
    exporter: String,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<SpeedscopeFrame<'a>>,
}

#[derive(Serialize)]
struct SpeedscopeFrame<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    col: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sampled<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    unit: &'static str,
    start_value: serde_json::Number,
    end_value: serde_json::Number,
    samples: Vec<&'a [u32]>,
    weights: Vec<serde_json::Number>,
}

/// A number as JSON: whole where it is whole (a count), else a float.
fn number(x: f64) -> serde_json::Number {
    if x.fract() == 0.0 && (0.0..9e15).contains(&x) {
        serde_json::Number::from(x as u64)
    } else {
        serde_json::Number::from_f64(x).unwrap_or_else(|| serde_json::Number::from(0))
    }
}

/// Writes `profile` as a speedscope file, followed by a newline.
pub(super) fn write(profile: &Profile, out: &mut impl Write) -> anyhow::Result<()> {
    let name = if profile.title.trim().is_empty() { "looptop" } else { profile.title.as_str() };
    let profiles: Vec<Sampled> = if profile.threads.is_empty() {
        vec![Sampled {
            kind: "sampled",
            name,
            // Weights count samples, which speedscope has no unit for.
            unit: "none",
            start_value: number(0.0),
            end_value: number(profile.sample_count() as f64),
            samples: profile.stacks.iter().map(|(stack, _)| stack.as_slice()).collect(),
            weights: profile.stacks.iter().map(|(_, weight)| number(*weight as f64)).collect(),
        }]
    } else {
        profile
            .threads
            .iter()
            .map(|t| {
                let ms = |ns: u64| ns as f64 / 1e6;
                let total: f64 = t.samples.iter().map(|s| ms(s.2)).sum();
                Sampled {
                    kind: "sampled",
                    name: &t.name,
                    unit: "milliseconds",
                    start_value: number(0.0),
                    end_value: number(total),
                    samples: t.samples.iter().map(|s| s.1.as_slice()).collect(),
                    weights: t.samples.iter().map(|s| number(ms(s.2))).collect(),
                }
            })
            .collect()
    };
    let main = profiles.iter().position(|p| p.name.starts_with("main loop")).unwrap_or(0);
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames: profile.frames.iter().map(frame).collect() },
        profiles,
        name,
        active_profile_index: main as u32,
        // The format's recommended `name@version`.
        exporter: format!("looptop@{}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut *out, &file)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// speedscope shows `name file:line:col`; a native frame's `file` is its ELF file (the line of a
/// native frame is the sampled instruction's, not the function's, so it is left out).
fn frame(frame: &Frame) -> SpeedscopeFrame<'_> {
    let name = if frame.name.trim().is_empty() { "[unknown]" } else { frame.name.as_str() };
    let source = frame.file.as_deref().filter(|_| matches!(frame.kind, FrameKind::Js | FrameKind::Python));
    match source {
        Some(file) => SpeedscopeFrame { name, file: Some(file), line: frame.line, col: frame.col },
        None => SpeedscopeFrame { name, file: frame.module.as_deref(), line: None, col: None },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{self, js_frame, native_frame, profile};
    use super::super::{Format, Options};
    use super::*;
    use serde_json::Value;

    /// speedscope's published JSON schema, vendored from jlfwong/speedscope (see
    /// tests/data/README.md).
    fn validator() -> jsonschema::Validator {
        let schema: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/speedscope-schema.json"
        )))
        .unwrap();
        jsonschema::draft6::new(&schema).unwrap()
    }

    fn speedscope(p: &Profile) -> Value {
        let mut out = Vec::new();
        super::super::write(p, &Options::new(Format::Speedscope), &mut out).unwrap();
        assert!(out.ends_with(b"}\n"));
        serde_json::from_slice(&out).unwrap()
    }

    /// Validates against the schema, then checks what the schema cannot say: indices are frame
    /// ids, one weight per sample, `endValue` covers the weights.
    fn assert_valid(doc: &Value) {
        let errors: Vec<String> = validator().iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
        let frames = doc["shared"]["frames"].as_array().unwrap().len() as u64;
        let profile = &doc["profiles"][0];
        let samples = profile["samples"].as_array().unwrap();
        let weights = profile["weights"].as_array().unwrap();
        assert_eq!(samples.len(), weights.len());
        for s in samples {
            assert!(s.as_array().unwrap().iter().all(|i| i.as_u64().unwrap() < frames), "{s}");
        }
        let total: u64 = weights.iter().map(|w| w.as_u64().unwrap()).sum();
        assert_eq!(profile["endValue"].as_u64(), Some(total));
    }

    #[test]
    fn a_node_stall_validates_against_the_speedscope_schema() {
        let p = testdata::node_stall();
        let doc = speedscope(&p);
        assert_valid(&doc);
        assert_eq!(doc["$schema"], SCHEMA);
        assert_eq!(doc["name"], "looptop: node server.js");
        assert_eq!(doc["exporter"], format!("looptop@{}", env!("CARGO_PKG_VERSION")));
        let profile = &doc["profiles"][0];
        assert_eq!(profile["type"], "sampled");
        assert_eq!(profile["unit"], "none");
        assert_eq!(profile["name"], "looptop: node server.js");
        assert_eq!(profile["endValue"], 151);
        let frames = doc["shared"]["frames"].as_array().unwrap();
        assert_eq!(frames.len(), p.frames.len());
        let validate = frames.iter().find(|f| f["name"] == "validateEmail").unwrap();
        assert_eq!(
            validate,
            &serde_json::json!({"name": "validateEmail", "file": "/srv/app/server.js", "line": 12, "col": 17})
        );
        let uv_run = frames.iter().find(|f| f["name"] == "uv_run").unwrap();
        assert_eq!(uv_run, &serde_json::json!({"name": "uv_run", "file": "/usr/bin/node"}));
        // Stacks are frame ids root first, exactly as given.
        let (stack, weight) = &p.stacks[0];
        assert_eq!(profile["samples"][0], serde_json::json!(stack));
        assert_eq!(profile["weights"][0], *weight);
    }

    /// Timelines: a profile per thread, in milliseconds, samples in time order, the main loop's
    /// shown first; valid against the schema.
    #[test]
    fn each_thread_is_a_timeline_in_milliseconds() {
        use super::super::Timeline;
        let mut p = profile(vec![native_frame("main"), js_frame("spin", "/srv/a.js", 3, 1)], vec![]);
        p.threads = vec![
            Timeline { name: "libuv thread pool · thread 7".into(), samples: vec![(5, vec![0], 1_000_000)] },
            Timeline {
                name: "main loop: node · thread 6".into(),
                samples: vec![(1, vec![0, 1], 1_000_000), (2, vec![0], 2_500_000)],
            },
        ];
        let doc = speedscope(&p);
        let errors: Vec<String> =
            validator().iter_errors(&doc).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(doc["profiles"].as_array().unwrap().len(), 2);
        assert_eq!(doc["activeProfileIndex"], 1);
        let main = &doc["profiles"][1];
        assert_eq!(main["unit"], "milliseconds");
        assert_eq!(main["samples"], serde_json::json!([[0, 1], [0]]));
        assert_eq!(main["weights"], serde_json::json!([1, 2.5]));
        assert_eq!(main["endValue"], serde_json::json!(3.5));
    }

    #[test]
    fn an_empty_profile_validates_too() {
        assert_valid(&speedscope(&Profile::default()));
        assert_eq!(speedscope(&Profile::default())["name"], "looptop");
        assert_valid(&speedscope(&profile(vec![native_frame("main")], vec![(vec![], 1), (vec![0], 0)])));
    }

    #[test]
    fn the_schema_is_really_checked() {
        // A file missing what the schema requires must fail, or the tests above prove nothing.
        let mut doc = speedscope(&profile(vec![js_frame("a", "/srv/a.js", 1, 1)], vec![(vec![0], 1)]));
        assert!(validator().is_valid(&doc));
        doc["profiles"][0]["unit"] = "samples".into();
        assert!(!validator().is_valid(&doc));
        doc["profiles"][0]["unit"] = "none".into();
        doc["shared"]["frames"][0].as_object_mut().unwrap().remove("name");
        assert!(!validator().is_valid(&doc));
    }

    #[test]
    fn a_real_node_profile_validates_against_the_speedscope_schema() {
        let p = testdata::node_demo();
        let doc = speedscope(&p);
        assert_valid(&doc);
        assert_eq!(doc["profiles"][0]["endValue"], 2075);
        let frames = doc["shared"]["frames"].as_array().unwrap();
        assert!(frames.contains(
            &serde_json::json!({"name": "validateSearch", "file": "/tmp/flame-demo/server.js", "line": 47, "col": 24})
        ));
        assert!(frames.contains(&serde_json::json!({"name": "(garbage collector)"})));
    }
}
