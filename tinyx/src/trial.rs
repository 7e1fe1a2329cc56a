//! Trial runs of an application image on the build host: the image tree as a chroot, in
//! private network, PID and mount namespaces (`unshare`), so the application's port and
//! processes are its own and nothing outlives the trial. Used for the build's smoke run
//! (does the application stay up?) and by [`crate::image_min`] (which files does it open,
//! recorded with `strace -f -e trace=%file,execve`, and does it still pass its check?).

use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = include_str!("../scripts/trial.sh");

/// Errors running a trial.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("cannot run a trial (unshare, chroot{strace}): {source}")]
    Spawn {
        strace: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the trial runner printed no verdict ({status}): {output}")]
    NoVerdict { status: String, output: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One trial.
#[derive(Debug, Clone)]
pub struct Trial<'a> {
    pub root: &'a Path,
    /// Shell command run in the chroot.
    pub command: &'a str,
    /// Ready only once this TCP port accepts a connection.
    pub port: Option<u16>,
    /// Ready only once this host shell command succeeds (it gets `TINYX_GUEST=127.0.0.1`).
    pub check: Option<&'a str>,
    /// Record the file system calls of the application here.
    pub trace: Option<&'a Path>,
    /// How long to wait for readiness (or, with neither port nor check, for an early exit).
    pub seconds: u32,
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialOutcome {
    /// Port open and check passed (or, with neither, still running at the end).
    Ready { output: String },
    /// The application exited first.
    Exited { status: String, output: String },
    /// Still running, but never ready.
    NotReady { output: String },
}

/// Runs one trial.
pub fn run(t: &Trial) -> Result<TrialOutcome, TrialError> {
    let dir = tempfile_dir()?;
    let log = dir.join("app.log");
    let out = Command::new("unshare")
        .args(["--net", "--pid", "--mount", "--fork", "--kill-child"])
        .args(["sh", "-c", SCRIPT, "tinyx-trial"])
        .arg(t.root)
        .arg(t.port.map(|p| p.to_string()).unwrap_or_default())
        .arg(t.seconds.to_string())
        .arg(t.check.unwrap_or(""))
        .arg(t.trace.map(|p| p.as_os_str()).unwrap_or_default())
        .arg(&log)
        .env("TINYX_RUN", t.command)
        .output()
        .map_err(|source| TrialError::Spawn {
            strace: if t.trace.is_some() { ", strace" } else { "" },
            source,
        });
    let app_output = tail(&std::fs::read_to_string(&log).unwrap_or_default(), 15);
    let check_output = tail(
        &std::fs::read_to_string(log.with_extension("log.check")).unwrap_or_default(),
        5,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdict = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("tinyx-trial: "))
        .map(str::to_string);
    let mut output = app_output;
    if !check_output.is_empty() {
        output.push_str(&format!("\n(check) {check_output}"));
    }
    match verdict.as_deref() {
        Some("ready") => Ok(TrialOutcome::Ready { output }),
        Some("not-ready") => Ok(TrialOutcome::NotReady { output }),
        Some(v) if v.starts_with("exited ") => Ok(TrialOutcome::Exited {
            status: v.trim_start_matches("exited ").to_string(),
            output,
        }),
        _ => Err(TrialError::NoVerdict {
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        }),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A private temporary directory for one trial's logs.
fn tempfile_dir() -> Result<PathBuf, TrialError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tinyx-trial-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|source| TrialError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}
