//! Go programs. The Go runtime has no event loop in DESIGN.md's sense: goroutines run on a pool
//! of threads, and its network poller waits for all of them at once, in raw system calls made by
//! whichever thread is free. No thread's iterations are the ticks of a loop, so looptop times no
//! loop in a Go process rather than invent one (its runtime threads would read as loops with
//! false stalls: sysmon's `usleep`, a parked thread's `futex`); its CPU stacks are still sampled.

use object::{Object, ObjectSection};
use std::path::Path;

/// What looptop says about a Go process, after "process N is a Go program: ".
pub const NO_LOOP: &str = "the Go runtime has no event loop (goroutines run on a pool of threads, and its \
     network poller waits for all of them at once through raw system calls), so looptop times no loop in it; \
     its CPU stacks are still sampled (`looptop flame` draws them)";

/// Whether process `pid` runs a Go executable (false when its executable cannot be read).
pub fn is_go(pid: u32) -> bool {
    is_go_file(Path::new(&format!("/proc/{pid}/exe")))
}

/// Whether the ELF file at `path` was built by Go: it has the section Go's linker writes the
/// build information into (`.go.buildinfo`, Go 1.13+, kept by `strip`) or Go's build-id note.
/// Reads the file's headers and section names only.
pub fn is_go_file(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else { return false };
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else { return false };
    let is_go = elf.sections().any(|s| matches!(s.name(), Ok(".go.buildinfo" | ".note.go.buildid")));
    is_go
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_and_a_shell_are_not_go() {
        assert!(!is_go(std::process::id()));
        assert!(!is_go_file(Path::new("/bin/sh")));
        assert!(!is_go_file(Path::new("/nonexistent")));
        assert!(!is_go_file(Path::new("/proc/self/status")), "not an ELF file");
    }
}
