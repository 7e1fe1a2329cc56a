//! Where the tests find virtiofsd: `$WISP_VIRTIOFSD`, the copy scripts/install-deps.sh
//! installs (`cargo install --locked virtiofsd` into ~/.cache/wisp/virtiofsd), or PATH.

use std::path::{Path, PathBuf};

/// The virtiofsd binary; panics with what to run when there is none.
pub fn virtiofsd() -> PathBuf {
    if let Some(p) = std::env::var_os("WISP_VIRTIOFSD") {
        return p.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let cached = Path::new(&home).join(".cache/wisp/virtiofsd/bin/virtiofsd");
    if cached.is_file() {
        return cached;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("virtiofsd"))
                .find(|p| p.is_file())
        })
        .expect("virtiofsd not found: run scripts/install-deps.sh (or set WISP_VIRTIOFSD)")
}
