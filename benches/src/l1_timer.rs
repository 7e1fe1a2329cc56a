//! `wisp-bench l1-time MARKER CMD [ARGS...]`: the timer the `linux` suite runs inside the test
//! host, beside each VMM it starts there. It times one VMM process from the moment before
//! `spawn` to the guest's `MARKER` line on the VMM's stdout and to the process's exit (the
//! launcher the other suites use, `launch.rs`), and prints `marker-us=N exit-us=N` for the
//! harness, which reads `KEY=VALUE` words from the run's output (tests/testhost/console.rs).
//! Timing inside L1 is what makes Wisp and Firecracker comparable there: L1's uptime has a
//! 10 ms resolution, and the two VMMs' own boot timers sit at different guest addresses.

use crate::launch::{Input, Launched};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The first argument that selects this mode.
pub const SUBCOMMAND: &str = "l1-time";

/// How long one VMM may run; the suite's `run` wrapper in L1 has its own, longer, deadline.
const TIMEOUT: Duration = Duration::from_secs(170);

/// Runs `args` = MARKER CMD [ARGS...]; exits with the child's status (1 if it had none).
pub fn main(args: &[String]) -> ExitCode {
    let [marker, program, rest @ ..] = args else {
        eprintln!("usage: wisp-bench {SUBCOMMAND} MARKER CMD [ARGS...]");
        return ExitCode::from(2);
    };
    // One process, one marker: leaking it gives the launcher the 'static it wants.
    let marker: &'static [u8] = Box::leak(marker.clone().into_bytes().into_boxed_slice());
    let mut cmd = Command::new(program);
    cmd.args(rest);
    let finished = match Launched::spawn(cmd, Input::Null, marker).and_then(|l| l.finish(TIMEOUT)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{SUBCOMMAND}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut line = String::new();
    if let Some(at) = finished.first_line {
        line.push_str(&format!("marker-us={} ", at.as_micros()));
    }
    line.push_str(&format!("exit-us={}", finished.exit.as_micros()));
    if let Some(us) = finished.boot_timer_us {
        line.push_str(&format!(" boot-timer-us={us}"));
    }
    println!("{line}");
    if !finished.is_clean() {
        eprintln!("{SUBCOMMAND}: {}", finished.failure());
    }
    match finished.exit_code {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(1),
    }
}
