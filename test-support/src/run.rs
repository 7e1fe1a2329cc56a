//! Running a real process with a deadline: stdin fed once and then held open, stdout and
//! stderr captured whole, and the process killed (not waited on forever) when it overstays.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long `wisp_run` lets a guest run: a hang guard, not a speed target.
const WISP_RUN_DEADLINE: Duration = Duration::from_secs(20);

/// What a finished (or killed) run left behind.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when the run was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The exit code; `None` when the run was killed (by the deadline or a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn assert_success(&self) {
        assert_eq!(self.code(), Some(0), "the run did not exit 0: {self:#?}");
    }
}

/// Runs `cmd` with `input` on stdin, killing it after `deadline`.
///
/// Stdin stays open (no EOF) until the process is done: a guest console reading the host's
/// input must not see it end early.
pub fn run_with_deadline(mut cmd: Command, input: &[u8], deadline: Duration) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("a piped stdin");
    stdin.write_all(input).expect("write the run's stdin");
    let mut out = child.stdout.take().expect("a piped stdout");
    let mut err = child.stderr.take().expect("a piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the run") {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(stdin);
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Outcome {
        status,
        stdout: text(out_reader.join().expect("the stdout reader")),
        stderr: text(err_reader.join().expect("the stderr reader")),
    }
}

/// `WISP run --kernel KERNEL ARGS...` with nothing on stdin and a 20 s deadline; `wisp` is the
/// binary under test (`env!("CARGO_BIN_EXE_wisp")` in the root package's tests).
pub fn wisp_run(wisp: impl AsRef<Path>, kernel: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(wisp.as_ref());
    cmd.arg("run").arg("--kernel").arg(kernel).args(args);
    run_with_deadline(cmd, b"", WISP_RUN_DEADLINE)
}
