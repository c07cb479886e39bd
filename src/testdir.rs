//! A private temporary folder for unit tests: made fresh with mode 0700 (never a folder someone
//! planted in the shared temporary folder), removed on drop.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// The folder.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A new folder whose name carries `tag` (spaces allowed: some tests want them).
    pub(crate) fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = std::env::temp_dir().join(format!("looptop-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside it.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
