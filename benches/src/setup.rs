//! Everything a suite needs to know before it runs: where the binaries and the guest are, the
//! output directory, and the limits. Resolved once from the command line.

use crate::cli::Cli;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The workspace root: benches/ is one level below it.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the root package's build script leaves the unikernel (see the root build.rs).
pub fn default_unikernel() -> PathBuf {
    workspace_root().join("target/guest/x86_64-unknown-linux-gnu/release/wisp-unikernel")
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the unikernel {0} does not exist: build the workspace (`cargo build --release`) or pass --unikernel")]
    NoUnikernel(PathBuf),
    #[error("cannot find the wisp binary (looked at {0}): run `cargo build --release --bin wisp` or pass --wisp")]
    NoWisp(String),
    #[error("the Firecracker binary {0} does not exist")]
    NoFirecracker(PathBuf),
    #[error("cannot create the output directory {path}: {source}")]
    Out {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct Setup {
    pub wisp: PathBuf,
    pub unikernel: PathBuf,
    pub qemu: Option<PathBuf>,
    /// Why QEMU is not compared, when it is not.
    pub qemu_missing: Option<String>,
    pub firecracker: Option<PathBuf>,
    /// `--baseline-wisp`: a second wisp, measured as the peer `wisp-baseline`.
    pub baseline_wisp: Option<PathBuf>,
    pub out: PathBuf,
    pub runs: usize,
    pub max_vms: usize,
    pub pool: usize,
    pub timeout: Duration,
    pub started_utc: String,
    /// `--jail`: cold and warm add Wisp jailed + filtered and Wisp with neither.
    pub jail: bool,
    /// `--mem-shared`: warm adds `wispd --shell-mem-shared`.
    pub mem_shared: bool,
}

impl Setup {
    pub fn resolve(cli: &Cli) -> Result<Setup, SetupError> {
        let unikernel = cli.unikernel.clone().unwrap_or_else(default_unikernel);
        if !unikernel.is_file() {
            return Err(SetupError::NoUnikernel(unikernel));
        }
        let wisp = find_wisp(cli.wisp.as_deref())?;
        let (qemu, qemu_missing) = if cli.qemu == "none" {
            (None, Some("left out with --qemu none".to_string()))
        } else {
            match find_program(&cli.qemu) {
                Some(path) => (Some(path), None),
                None => (None, Some(format!("{} not found", cli.qemu))),
            }
        };
        if let Some(fc) = &cli.firecracker {
            if !fc.is_file() {
                return Err(SetupError::NoFirecracker(fc.clone()));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let out = cli.out.clone().unwrap_or_else(|| {
            workspace_root()
                .join("target/wisp-bench")
                .join(compact_utc(now))
        });
        std::fs::create_dir_all(&out).map_err(|source| SetupError::Out {
            path: out.clone(),
            source,
        })?;
        Ok(Setup {
            wisp,
            unikernel,
            qemu,
            qemu_missing,
            firecracker: cli.firecracker.clone(),
            baseline_wisp: cli.baseline_wisp.clone(),
            out,
            runs: cli.runs.max(1),
            max_vms: cli.max_vms.max(1),
            pool: cli.pool.max(1),
            timeout: Duration::from_secs(cli.timeout.max(1)),
            started_utc: iso_utc(now),
            jail: cli.jail,
            mem_shared: cli.mem_shared,
        })
    }

    /// A sibling binary of `wisp` (e.g. `wispd`), if it was built.
    pub fn sibling(&self, name: &str) -> Option<PathBuf> {
        let path = self.wisp.parent()?.join(name);
        path.is_file().then_some(path)
    }
}

fn find_wisp(given: Option<&Path>) -> Result<PathBuf, SetupError> {
    let mut candidates = Vec::new();
    match given {
        Some(path) => candidates.push(path.to_path_buf()),
        None => {
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
            {
                candidates.push(dir.join("wisp"));
            }
            candidates.push(workspace_root().join("target/release/wisp"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            SetupError::NoWisp(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// `name` itself when it holds a slash, else the first match on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn utc_parts(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// 2026-11-25T13:05:00Z
pub fn iso_utc(secs: u64) -> String {
    let (y, m, d, h, min, s) = utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

/// 20261125T130500Z, for directory names.
pub fn compact_utc(secs: u64) -> String {
    let (y, m, d, h, min, s) = utc_parts(secs);
    format!("{y:04}{m:02}{d:02}T{h:02}{min:02}{s:02}Z")
}

/// Whether `program [args] --help` mentions `needle`: how a suite finds out whether an
/// interface that is still being written (a flag, a subcommand) exists in this build.
pub fn help_mentions(program: &Path, args: &[&str], needle: &str) -> bool {
    std::process::Command::new(program)
        .args(args)
        .arg("--help")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout).contains(needle)
                || String::from_utf8_lossy(&out.stderr).contains(needle)
        })
        .unwrap_or(false)
}

/// A path inside the workspace.
pub fn workspace_file(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day in a year divisible by 400) 12:34:56.
        assert_eq!(iso_utc(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(compact_utc(1_795_611_900), "20261125T130500Z");
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-wisp-bench").is_none());
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
    }

    #[test]
    fn default_unikernel_is_under_the_workspace_target() {
        let path = default_unikernel();
        assert!(path.ends_with("target/guest/x86_64-unknown-linux-gnu/release/wisp-unikernel"));
        assert!(path
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .ends_with("target"));
    }
}
