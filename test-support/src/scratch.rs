//! Scratch space on the host for one test: a directory or a file under `$TMPDIR`, named for
//! the test and the process, and removed when dropped (also when the test fails).

use std::path::{Path, PathBuf};

/// A scratch directory (`$TMPDIR/wisp-<name>-<pid>`), emptied first and removed on drop.
///
/// `name` must be unique among the tests of one test binary: they run in parallel.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("wisp-{name}-{}", std::process::id()));
        // A directory left by an earlier run of a recycled pid is not this test's.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file (`$TMPDIR/wisp-test-<pid>-<name>`) holding `bytes`, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("wisp-test-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
