//! A statically linked `wisp` binary for the L1 initramfs, which has no libc of its own.
//!
//! Built with `-C target-feature=+crt-static` and an explicit `--target`, so that the flag
//! applies to `wisp` only and not to build scripts or proc-macros (which must stay dynamic), in
//! its own target directory (`target/static`) so it neither invalidates nor waits on the build
//! that is running the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::host_command::{self, CommandError};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Why the static `wisp` binary could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StaticWispError {
    #[error("cannot build the static wisp binary: {0}")]
    Build(#[source] CommandError),
    #[error("cannot build the static wisp binary (first attempt in this process): {0}")]
    Earlier(String),
    #[error("cargo reported success but {0} does not exist")]
    NoBinary(PathBuf),
}

/// The workspace root (this test file belongs to the root package).
pub fn workspace_root() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This module is compiled into the root package's tests and, through `#[path]`, into
    // wisp-bench (benches/): either way the static build belongs to the workspace's target/.
    if here.join("tests/testhost").is_dir() {
        here
    } else {
        here.parent().unwrap_or(here)
    }
}

/// Builds (once per process) and returns the path of the static release `wisp` binary, or
/// returns `$WISP_TESTHOST_WISP` (a static `wisp` built elsewhere) when that is set.
pub fn static_wisp() -> Result<PathBuf, StaticWispError> {
    if let Some(path) = std::env::var_os("WISP_TESTHOST_WISP") {
        return Ok(path.into());
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    // A failed build is reported to every caller, as text (errors are not Clone).
    let built = BUILT.get_or_init(|| build().map_err(|e| e.to_string()));
    match built {
        Ok(path) => Ok(path.clone()),
        Err(message) => Err(StaticWispError::Earlier(message.clone())),
    }
}

fn build() -> Result<PathBuf, StaticWispError> {
    let root = workspace_root();
    let target_dir = root.join("target/static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--bin", "wisp", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // The outer `cargo test` may have set these for its own build; they must not leak in.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    log::info!("testhost: {}", host_command::describe(&cmd));
    host_command::run(&mut cmd).map_err(StaticWispError::Build)?;
    let bin = target_dir.join(TARGET).join("release/wisp");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(StaticWispError::NoBinary(bin))
    }
}
