//! Man pages in `man/` are generated from the clap definitions and must be current.
//! `LOOPTOP_BLESS=1 cargo test man` rewrites them.

use crate::util::TempDir;
use std::path::Path;

#[test]
fn man_pages_are_current() {
    let tmp = TempDir::new("man");
    clap_mangen::generate_to(looptop::cli::command(), &tmp.0).unwrap();
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let bless = std::env::var_os("LOOPTOP_BLESS").is_some_and(|v| v == "1");
    let mut generated: Vec<String> =
        std::fs::read_dir(&tmp.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    generated.sort();
    if bless {
        let _ = std::fs::remove_dir_all(&man);
        std::fs::create_dir_all(&man).unwrap();
    }
    for name in &generated {
        let fresh = std::fs::read(tmp.0.join(name)).unwrap();
        if bless {
            std::fs::write(man.join(name), &fresh).unwrap();
            continue;
        }
        let old = std::fs::read(man.join(name)).unwrap_or_default();
        assert!(old == fresh, "man/{name} is stale: run `LOOPTOP_BLESS=1 cargo test man` and commit man/");
    }
    let mut committed: Vec<String> =
        std::fs::read_dir(&man).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    committed.sort();
    assert_eq!(committed, generated, "man/ has pages for commands that no longer exist");
    for page in ["looptop.1", "looptop-run.1", "looptop-ps.1", "looptop-demo.1", "looptop-agent-path.1"] {
        assert!(generated.iter().any(|g| g == page), "{page} missing from {generated:?}");
    }
}
