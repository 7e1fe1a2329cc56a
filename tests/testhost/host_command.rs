//! Running the host tools the harness shells out to (apt-get, dpkg-deb, xz, cargo, ...), with
//! errors that name the command and carry its stderr.

use std::io;
use std::process::{Command, Output, Stdio};

/// A host command that could not be run or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}` (is it installed?): {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Renders a command as a shell-like line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion, capturing stdout and stderr; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let output = output(cmd)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(CommandError::Failed {
            command: describe(cmd),
            status: output.status,
            stderr: tail(&String::from_utf8_lossy(&output.stderr), 40),
        })
    }
}

/// Runs `cmd` to completion, capturing stdout and stderr, whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output, CommandError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Runs `cmd` and returns its stdout as text.
pub fn stdout(cmd: &mut Command) -> Result<String, CommandError> {
    Ok(String::from_utf8_lossy(&run(cmd)?.stdout).into_owned())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
