//! speedscope's file format (<https://www.speedscope.app/file-format-schema.json>): one `sampled`
//! profile over the shared frame table, stacks as they are (speedscope merges them itself).

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
    profiles: [Sampled<'a>; 1],
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
    start_value: u64,
    end_value: u64,
    samples: Vec<&'a [u32]>,
    weights: Vec<u64>,
}

/// Writes `profile` as a speedscope file, followed by a newline.
pub(super) fn write(profile: &Profile, out: &mut impl Write) -> anyhow::Result<()> {
    let name = if profile.title.trim().is_empty() { "looptop" } else { profile.title.as_str() };
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames: profile.frames.iter().map(frame).collect() },
        profiles: [Sampled {
            kind: "sampled",
            name,
            // Weights count samples, which speedscope has no unit for.
            unit: "none",
            start_value: 0,
            end_value: profile.sample_count(),
            samples: profile.stacks.iter().map(|(stack, _)| stack.as_slice()).collect(),
            weights: profile.stacks.iter().map(|(_, weight)| *weight).collect(),
        }],
        name,
        active_profile_index: 0,
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
