//! Builds the Wisp unikernel (guest/) so the `wisp` binary and the integration tests can find it
//! through `env!("WISP_UNIKERNEL")`.
//!
//! The guest is a separate cargo project (freestanding, static, its own linker script and
//! rustflags in guest/.cargo/config.toml), so it is built by a nested `cargo build --release`
//! run from guest/ (where that config applies) into target/guest (its own build lock, so it
//! does not wait on the outer build). The outer cargo's environment is scrubbed first: its
//! RUSTFLAGS, wrappers (clippy-driver, sccache), target selection, jobserver and the
//! per-package variables it sets for this build script would otherwise leak into the guest
//! build and break it.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// The guest's target triple (guest/.cargo/config.toml `build.target`).
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
const GUEST_BINARY: &str = "wisp-unikernel";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let guest_dir = manifest_dir.join("guest");
    let target_dir = manifest_dir.join("target").join("guest");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    println!("cargo:rerun-if-changed=guest");
    // The guest ABI crate the unikernel depends on.
    println!("cargo:rerun-if-changed=abi");

    let mut command = Command::new(&cargo);
    command
        .current_dir(&guest_dir)
        .arg("build")
        .arg("--release")
        .arg("--target-dir")
        .arg(&target_dir);
    // Share the outer build's parallelism setting (its jobserver itself is not inherited).
    if let Some(jobs) = env::var_os("NUM_JOBS") {
        command.arg("--jobs").arg(jobs);
    }
    for (name, _) in env::vars_os() {
        if leaks_into_nested_cargo(&name) {
            command.env_remove(&name);
        }
    }

    let output = match command.output() {
        Ok(output) => output,
        Err(err) => fail(&format!(
            "cannot run {} to build the unikernel in {}: {err}",
            Path::new(&cargo).display(),
            guest_dir.display()
        )),
    };
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        fail(&format!(
            "building the unikernel in {} failed ({})",
            guest_dir.display(),
            output.status
        ));
    }

    let elf = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(GUEST_BINARY);
    if !elf.is_file() {
        fail(&format!(
            "the unikernel build succeeded but {} does not exist",
            elf.display()
        ));
    }
    println!("cargo:rustc-env=WISP_UNIKERNEL={}", elf.display());
}

/// Whether an environment variable set by (or for) the outer cargo must not reach the nested
/// one. Kept: CARGO_HOME (registry and config location) and network/terminal settings.
fn leaks_into_nested_cargo(name: &OsString) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    const KEEP: [&str; 4] = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_TERM_"];
    const DROP_EXACT: [&str; 12] = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "CLIPPY_ARGS",
    ];
    if KEEP.iter().any(|keep| name.starts_with(keep)) {
        return false;
    }
    // CARGO_* covers CARGO_ENCODED_RUSTFLAGS, CARGO_TARGET_DIR, CARGO_BUILD_*, CARGO_MAKEFLAGS,
    // CARGO_TARGET_<triple>_*, CARGO_PROFILE_*, CARGO_PKG_*, CARGO_CFG_*, CARGO_FEATURE_*, and
    // CARGO (the nested cargo is that binary; it sets CARGO for its own children). RUSTC*
    // covers RUSTC, RUSTC_WRAPPER, RUSTC_WORKSPACE_WRAPPER and RUSTC_LINKER.
    name == "CARGO"
        || name.starts_with("CARGO_")
        || name.starts_with("__CARGO")
        || name.starts_with("RUSTC")
        || name.starts_with("RUSTDOC")
        || DROP_EXACT.contains(&name)
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    exit(1)
}
