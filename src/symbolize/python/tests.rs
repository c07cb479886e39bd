use super::*;
use crate::testdir::TempDir;

/// The prefix of the newest pyenv build of CPython 3.`minor`, if installed.
fn pyenv(minor: u32) -> Option<std::path::PathBuf> {
    let home = std::env::var("HOME").ok()?;
    let mut found: Vec<_> = std::fs::read_dir(format!("{home}/.pyenv/versions"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("3.{minor}."))))
        .collect();
    found.sort();
    found.pop()
}

/// Each installed CPython 3.10–3.13: its own `co_lines()` against our reading of the table.
#[test]
fn line_tables_read_as_cpython_reads_them() {
    const SCRIPT: &str = r#"
import json
def f(a, b=2):
    x = a + b
    if x > 3:
        y = [i * x for i in range(3)]
    else:
        y = {
            "k": x,
        }
    try:
        z = json.dumps(y)
    except Exception:
        z = None
    return z
for co in (f.__code__, json.loads.__code__):
    print(json.dumps({"table": co.co_linetable.hex(), "first": co.co_firstlineno,
                      "lines": [[s, e, l] for s, e, l in co.co_lines()]}))
"#;
    let home = std::env::var("HOME").unwrap_or_default();
    let mut checked = 0;
    for minor in [10u32, 11, 12, 13] {
        let Some(py) = std::fs::read_dir(format!("{home}/.pyenv/versions")).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("3.{minor}."))))
        }) else {
            continue;
        };
        let out = std::process::Command::new(py.join("bin/python3")).args(["-c", SCRIPT]).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let table: Vec<u8> = (0..v["table"].as_str().unwrap().len() / 2)
                .map(|i| u8::from_str_radix(&v["table"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let first = v["first"].as_u64().unwrap() as u32;
            for r in v["lines"].as_array().unwrap() {
                let (start, end, want) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap(), r[2].as_u64());
                for byte in (start..end).step_by(2) {
                    let got = if minor == 10 {
                        lines::line_310(&table, first, byte)
                    } else {
                        lines::line_311(&table, first, byte / 2)
                    };
                    assert_eq!(got.map(u64::from), want, "3.{minor}: byte {byte} of {line}");
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} instructions checked");
}

fn native(name: &str, module: &str) -> Frame {
    Frame { module: Some(module.into()), ..Frame::unknown(None).renamed(name.into()) }
}

fn py(name: &str) -> Frame {
    frame_of(
        &Code {
            name: name.into(),
            file: "/app/a.py".into(),
            first_line: 1,
            table: vec![],
            bytecode: None,
            first_traceable: 0,
        },
        2,
    )
}

#[test]
fn python_frames_replace_the_interpreter_frames_that_ran_them() {
    let lib = "/usr/lib/libpython3.12.so";
    let n = [
        native("sre_ucs1_match", lib),
        native(EVAL_FRAME, lib),
        native("_PyObject_Call", lib),
        native("ext_callback", "/app/ext.so"),
        native(EVAL_FRAME, lib),
        native("main", "/usr/bin/python3"),
    ];
    let p = [(py("check"), false), (py("handle"), true), (py("<module>"), true)];
    let native: Vec<&Frame> = n.iter().collect();
    use Spliced::*;
    assert_eq!(splice(&native, &p), [Native(0), Python(0), Python(1), Native(3), Python(2), Native(5)]);
    // One interpreter frame too few (a walk cut short): the Python frames after the innermost
    // native ones, and nothing guessed past them.
    assert_eq!(splice(&native[..2], &p), [Native(0), Python(0), Python(1), Python(2)]);
}

#[test]
fn only_the_programs_own_files_are_user_code() {
    assert!(is_user_file("/srv/app/handlers.py"));
    assert!(!is_user_file("/root/.pyenv/versions/3.12.1/lib/python3.12/asyncio/base_events.py"));
    assert!(!is_user_file("/usr/lib/python3/dist-packages/gunicorn/workers/sync.py"));
    assert!(!is_user_file("/srv/venv/lib/python3.11/site-packages/starlette/routing.py"));
    assert!(!is_user_file("<frozen importlib._bootstrap>"));
    assert_eq!(minor_from_name("/usr/lib/x86_64-linux-gnu/libpython3.10.so.1.0"), Some(10));
    assert_eq!(minor_from_name("/usr/bin/python3.13"), Some(13));
    assert_eq!(minor_from_name("/usr/bin/node"), None);
}

/// The layouts of the ABI crate are those of the installed versions' own headers.
#[test]
fn layouts_match_each_installed_versions_headers() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/c/python_offsets.c");
    let dir = TempDir::new("python offsets");
    let mut checked = 0;
    for l in abi::LAYOUTS {
        let Some(root) = pyenv(l.minor) else { continue };
        let bin = dir.path(&format!("off{}", l.minor));
        let inc = root.join(format!("include/python3.{}", l.minor));
        let cc = std::process::Command::new("gcc").arg("-I").arg(&inc).arg(&src).arg("-o").arg(&bin).output().unwrap();
        assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
        let out = std::process::Command::new(&bin).output().unwrap();
        let got: HashMap<String, u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let (k, v) = line.split_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        let want = |k: &str, v: Option<u64>| {
            if let Some(v) = v {
                assert_eq!(got.get(k), Some(&v), "3.{}: {k}", l.minor);
            }
        };
        want("runtime.interpreters_head", Some(l.runtime_interpreters_head));
        want("interp.next", Some(l.interp_next));
        want("interp.threads_head", Some(l.interp_threads_head));
        want("tstate.next", Some(l.tstate_next));
        want("tstate.native_thread_id", l.tstate_native_thread_id);
        want("tstate.thread_id", Some(l.tstate_thread_id));
        let frame_key = match l.minor {
            10 => "tstate.frame",
            11 | 12 => "tstate.cframe",
            _ => "tstate.current_frame",
        };
        want(frame_key, Some(l.tstate_frame));
        want("cframe.current_frame", l.cframe_current_frame);
        want("frame.code", Some(l.frame_code));
        want("frame.previous", Some(l.frame_previous));
        want("frame.instr", Some(l.frame_instr));
        want("frame.owner", l.frame_owner);
        want("frame.is_entry", l.frame_is_entry);
        want("code.filename", Some(l.code_filename));
        want("code.name", Some(l.code_name));
        want("code.qualname", l.code_qualname);
        want("code.firstlineno", Some(l.code_firstlineno));
        want("code.linetable", Some(l.code_linetable));
        want("code.code_adaptive", l.code_adaptive);
        want("code.firsttraceable", l.code_firsttraceable);
        want("sizeof.ascii", Some(l.unicode_ascii_size));
        want("sizeof.compact", Some(l.unicode_compact_size));
        want("unicode.state", Some(abi::UNICODE_STATE));
        want("unicode.length", Some(abi::UNICODE_LENGTH));
        want("bytes.size", Some(abi::BYTES_SIZE));
        want("bytes.sval", Some(abi::BYTES_DATA));
        checked += 1;
    }
    println!("{checked} layouts checked");
}
