//! Where the Wisp unikernel (guest/) is: the root package's build.rs builds it into the
//! workspace's `target/guest`, whatever the outer build's target directory.

use std::path::{Path, PathBuf};

/// The unikernel's path under the workspace (root build.rs: its `GUEST_TARGET`, `release`,
/// `GUEST_BINARY`).
const BUILT_AT: &str = "target/guest/x86_64-unknown-linux-gnu/release/wisp-unikernel";

/// The Wisp unikernel; panics (naming the path) when it has not been built yet. Any build of
/// the root package (`cargo test` of its tests included) builds it first.
pub fn unikernel() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ is inside the workspace");
    let path = workspace.join(BUILT_AT);
    assert!(
        path.is_file(),
        "the unikernel {} is not built: build the root package (`cargo build`)",
        path.display()
    );
    path
}
