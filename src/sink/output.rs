//! Output files the user named (`run -o`, `record -o`, `flame -o`, `check --json/--junit`, the
//! GitHub job summary): opened before anything is launched or attached, so a path that cannot be
//! written is refused at once (exit 2) with the fix, and written at the end (or, for a recording,
//! as the session goes) through the same handle. A write that fails later (a full disk) is one
//! sentence and the fix, exit 3.

use crate::error::UserError;
use crate::safefs::{self, OutputRefused};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// An output file, open, not yet written.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    file: File,
    /// Created by looptop (removed again if nothing was ever written to it).
    created: bool,
    append: bool,
    /// What it holds ("the report"), for messages.
    what: &'static str,
    /// How the user named it ("-o FILE", "GITHUB_STEP_SUMMARY=FILE"), for the fix.
    flag: &'static str,
    started: AtomicBool,
}

impl OutputFile {
    /// Opens `path` for `what` (e.g. "the recording"), named by `flag` (e.g. "-o FILE"): a usage error
    /// (exit 2) with the fix when it cannot be written. An existing file is emptied only when it
    /// is written.
    pub fn create(path: &Path, what: &'static str, flag: &'static str) -> Result<OutputFile, UserError> {
        Self::open(path, what, flag, false)
    }

    /// Where `--json[=FILE]` sends `what`: FILE, or stdout.
    pub fn json(to: &crate::plan::JsonTo, what: &'static str) -> Result<OutputFile, UserError> {
        Self::create(to.path(), what, "--json=FILE")
    }

    /// The same, for a file that is appended to.
    pub fn append(path: &Path, what: &'static str, flag: &'static str) -> Result<OutputFile, UserError> {
        Self::open(path, what, flag, true)
    }

    fn open(path: &Path, what: &'static str, flag: &'static str, append: bool) -> Result<OutputFile, UserError> {
        if is_stdout(path) {
            // `-`: stdout, written where it stands (never emptied: it may be a file the shell
            // opened for more than this).
            let file = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .map_err(|e| UserError::usage(format!("cannot write {what} to stdout: {e}")))?;
            let started = AtomicBool::new(false);
            return Ok(OutputFile {
                path: path.to_path_buf(),
                file,
                created: false,
                append: true,
                what,
                flag,
                started,
            });
        }
        let opened = safefs::open_output(path, 0o666, append).map_err(|e| refused(what, flag, path, e))?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            file: opened.file,
            created: opened.created,
            append,
            what,
            flag,
            started: AtomicBool::new(false),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It is stdout (`-`): no "wrote FILE" note.
    pub fn is_stdout(&self) -> bool {
        is_stdout(&self.path)
    }

    /// "wrote FILE", unless it is stdout or `quiet`.
    pub fn tell_written(&self, quiet: bool) {
        if !quiet && !self.is_stdout() {
            eprintln!("looptop: wrote {}", self.path.display());
        }
    }

    /// A handle to write it from the start (an existing regular file is emptied now, unless it is
    /// appended to).
    pub fn writer(&self) -> Result<File, UserError> {
        self.started.store(true, Ordering::Relaxed);
        let start = || -> io::Result<File> {
            if !self.append && self.file.metadata()?.is_file() {
                self.file.set_len(0)?;
            }
            self.file.try_clone()
        };
        start().map_err(|e| self.failed(&e))
    }

    /// Writes it through `write` (into a buffer, flushed); a failed write is one sentence and the
    /// fix (exit 3).
    pub fn write_with(&self, write: impl FnOnce(&mut dyn io::Write) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut out = io::BufWriter::new(self.writer()?);
        write(&mut out).and_then(|()| Ok(io::Write::flush(&mut out)?)).map_err(|e| {
            match e.chain().find_map(|c| c.downcast_ref::<io::Error>()) {
                // `looptop … -o - | head`: the reader had enough; not a failure to explain.
                Some(io) if io.kind() == io::ErrorKind::BrokenPipe && self.is_stdout() => e,
                Some(io) => self.failed(io).into(),
                None => e,
            }
        })
    }

    /// A write of it failed (exit 3).
    pub fn failed(&self, e: &io::Error) -> UserError {
        write_failed(self.what, &self.path, self.flag, e)
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        // Nothing was written to a file created for it (the target could not be observed): leave
        // no empty file behind — if the name still is that file.
        if self.created && !self.started.load(Ordering::Relaxed) {
            use std::os::unix::fs::MetadataExt;
            let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
            if let (Ok(ours), Ok(there)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
                if same(&ours, &there) {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
    }
}

/// `-` names stdout wherever looptop takes an output file.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// `what` at `path` could not be written (exit 3): the sentence and the fix.
pub fn write_failed(what: &str, path: &Path, flag: &str, e: &io::Error) -> UserError {
    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    UserError::observe(format!("cannot write {what} {}: {e}", path.display())).hint(if full {
        format!("free space on that disk, or write it elsewhere with {flag}")
    } else {
        format!("write it elsewhere with {flag}")
    })
}

/// Why an output path is refused before anything runs (exit 2), with the fix.
fn refused(what: &str, flag: &str, path: &Path, e: OutputRefused) -> UserError {
    let shown = path.display();
    let elsewhere = format!("or choose another path with {flag}");
    let Some(err) = e.os_error() else {
        // Planted in a shared folder, maybe by another user.
        return UserError::usage(format!("refusing to write {what} to {e}"))
            .hint(format!("remove {shown} if you trust it, {elsewhere}"));
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder = parent.display();
    let (why, fix) = match err.raw_os_error() {
        Some(libc::ENOENT) if !parent.is_dir() => {
            (format!("the folder {folder} does not exist"), format!("create it (mkdir -p {folder}) {elsewhere}"))
        }
        Some(libc::ENOENT) => {
            (format!("{folder} does not take new files"), format!("choose a folder you can write to with {flag}"))
        }
        Some(libc::ENOTDIR) => (format!("{folder} is not a folder"), format!("choose another path with {flag}")),
        Some(libc::EISDIR) => {
            (format!("{shown} is a folder"), format!("give a file name in it, e.g. {}", path.join("NAME").display()))
        }
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            (err.to_string(), format!("choose a folder you can write to with {flag}"))
        }
        Some(libc::ENXIO) => {
            (format!("{shown} is a FIFO or socket nobody reads"), format!("start its reader first, {elsewhere}"))
        }
        _ => (err.to_string(), format!("choose another path with {flag}")),
    };
    UserError::usage(format!("cannot write {what} to {shown}: {why}")).hint(fix)
}
