//! Running a long build step with its output logged and its progress shown.
//!
//! Kbuild prints one short line per step (`  CC      kernel/fork.o`). On a terminal
//! the latest step is shown on one updating stderr line; otherwise (CI logs) a
//! summary line is printed every [`PERIOD`], so a slow build is visibly alive.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often progress is printed when stderr is not a terminal.
const PERIOD: Duration = Duration::from_secs(30);

/// Errors running a logged command.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("cannot open build log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Is this line a kbuild step (`  CC      path`, `  LD      vmlinux`, ...)?
pub fn kbuild_step(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if trimmed.len() == line.len() {
        return None;
    }
    let verb = trimmed.split_whitespace().next()?;
    let is_step = verb
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && verb.bytes().next().is_some_and(|b| b.is_ascii_uppercase());
    is_step.then_some(trimmed)
}

/// Runs `cmd` with stdout and stderr appended to `log`, showing progress labelled
/// `label` when `show` is set. Returns the exit status.
pub fn run_logged(
    cmd: &mut Command,
    log: &Path,
    label: &str,
    show: bool,
) -> Result<ExitStatus, ProgressError> {
    let command = format!("{cmd:?}");
    let mut log_file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ProgressError::Log {
            path: log.to_path_buf(),
            source,
        })?;
    let spawn_err = |source| ProgressError::Spawn {
        command: command.clone(),
        source,
    };
    let _ = writeln!(log_file, "$ {command}");
    let (reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let writer2 = writer.try_clone().map_err(spawn_err)?;
    let mut child = cmd
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .map_err(spawn_err)?;
    // Drop our copies of the write end (held by `cmd`) so EOF arrives at exit.
    let _ = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());

    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut steps = 0u64;
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log_file, "{line}");
        let Some(step) = kbuild_step(&line) else {
            continue;
        };
        steps += 1;
        if !show {
            continue;
        }
        let secs = start.elapsed().as_secs();
        if tty {
            let mut short: String = step.split_whitespace().collect::<Vec<_>>().join(" ");
            short.truncate(60);
            eprint!("\r\x1b[Ktinyx: {label} [{secs}s, {steps} steps] {short}");
        } else if last_print.elapsed() >= PERIOD {
            last_print = Instant::now();
            eprintln!("tinyx: {label}: {secs}s, {steps} steps, at: {step}");
        }
    }
    let status = child.wait().map_err(spawn_err)?;
    if show && tty && steps > 0 {
        eprintln!();
    }
    Ok(status)
}

/// The last `n` lines of a log file, for error reports.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_kbuild_steps_only() {
        assert_eq!(
            kbuild_step("  CC      kernel/fork.o"),
            Some("CC      kernel/fork.o")
        );
        assert_eq!(kbuild_step("  LD      vmlinux"), Some("LD      vmlinux"));
        assert_eq!(
            kbuild_step("  HOSTCC  scripts/basic/fixdep"),
            Some("HOSTCC  scripts/basic/fixdep")
        );
        assert_eq!(kbuild_step("make[1]: Entering directory"), None);
        assert_eq!(kbuild_step("Kernel: arch/x86/boot/bzImage is ready"), None);
        assert_eq!(kbuild_step("  warning: something"), None);
    }

    #[test]
    fn output_and_status_are_captured_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let status = run_logged(
            Command::new("sh").args(["-c", "echo '  CC      a.o'; echo oops >&2; exit 3"]),
            &log,
            "test",
            false,
        )
        .unwrap();
        assert_eq!(status.code(), Some(3));
        let tail = log_tail(&log, 2);
        assert_eq!(tail, "  CC      a.o\noops");
    }
}
