//! Reading the L1 console: the `### TESTHOST …` lines that l1_init.sh and l1_lib.sh print, and
//! the command runs they frame.

use std::collections::BTreeMap;

use super::qemu::ConsoleLine;

const PREFIX: &str = "### TESTHOST ";

/// One command that the test script ran with `run NAME TIMEOUT CMD…` inside L1.
#[derive(Debug, Clone, Default)]
pub struct CommandRun {
    pub name: String,
    /// The exit status; `None` when the run never finished (L1 died or timed out).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// L1 uptime (seconds) at the start and end of the run.
    pub started_s: Option<f64>,
    pub ended_s: Option<f64>,
}

impl CommandRun {
    /// True when the L1 `timeout` killed the command (SIGKILL: status 128 + 9).
    pub fn timed_out(&self) -> bool {
        self.exit_code == Some(137)
    }

    /// The value of the first `KEY=VALUE` word with this key in stdout or stderr.
    pub fn value(&self, key: &str) -> Option<&str> {
        let wanted = format!("{key}=");
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .flat_map(str::split_whitespace)
            .find_map(|word| word.strip_prefix(wanted.as_str()))
    }

    /// A readable account of the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "run `{}`: exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name, self.exit_code, self.stdout, self.stderr
        )
    }
}

/// What the harness read from the console.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub runs: BTreeMap<String, CommandRun>,
    /// L1 uptime (seconds, from /proc/uptime) when /init started and when /dev/kvm existed.
    pub init_s: Option<f64>,
    pub kvm_ready_s: Option<f64>,
    pub kvm_missing: bool,
    pub failed_modules: Vec<String>,
    pub script_exit: Option<i32>,
    pub done: bool,
}

fn word_value<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    let wanted = format!("{key}=");
    words
        .iter()
        .find_map(|word| word.strip_prefix(wanted.as_str()))
}

fn uptime(words: &[&str]) -> Option<f64> {
    word_value(words, "uptime")?.parse().ok()
}

enum Section {
    None,
    Stdout(String),
    Stderr(String),
}

/// Appends a console line to a section; the helper prints one extra newline after each
/// section, removed in `trim_section`.
fn push_line(text: &mut String, line: &str) {
    text.push_str(line);
    text.push('\n');
}

fn trim_section(text: &str) -> String {
    text.trim_end_matches('\n').to_owned()
}

/// Parses the console lines into a transcript.
pub fn parse(lines: &[ConsoleLine]) -> Transcript {
    let mut t = Transcript::default();
    let mut section = Section::None;
    for line in lines {
        // A marker may follow firmware output on the same line; a section's text may not
        // contain one (l1_lib.sh starts every marker on a fresh line).
        let Some(at) = line.text.find(PREFIX) else {
            match &mut section {
                Section::Stdout(name) | Section::Stderr(name) => {
                    let name = name.clone();
                    let run = t.runs.entry(name.clone()).or_default();
                    if matches!(section, Section::Stdout(_)) {
                        push_line(&mut run.stdout, &line.text);
                    } else {
                        push_line(&mut run.stderr, &line.text);
                    }
                }
                Section::None => {}
            }
            continue;
        };
        let words: Vec<&str> = line.text[at + PREFIX.len()..].split_whitespace().collect();
        let (Some(kind), name) = (words.first().copied(), words.get(1).copied()) else {
            continue;
        };
        section = Section::None;
        let name = name.unwrap_or_default().to_owned();
        match kind {
            "init" => t.init_s = uptime(&words),
            "kvm-ready" => t.kvm_ready_s = uptime(&words),
            "kvm-missing" => t.kvm_missing = true,
            "insmod-failed" => t.failed_modules.push(name),
            "script-exit" => t.script_exit = word_value(&words, "rc").and_then(|v| v.parse().ok()),
            "done" => t.done = true,
            "run-begin" => {
                let run = t.runs.entry(name.clone()).or_default();
                run.name = name;
                run.started_s = uptime(&words);
            }
            "stdout" => section = Section::Stdout(name),
            "stderr" => section = Section::Stderr(name),
            "run-end" => {
                let run = t.runs.entry(name.clone()).or_default();
                run.exit_code = word_value(&words, "rc").and_then(|v| v.parse().ok());
                run.ended_s = uptime(&words);
                run.stdout = trim_section(&run.stdout);
                run.stderr = trim_section(&run.stderr);
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lines(text: &str) -> Vec<ConsoleLine> {
        text.lines()
            .map(|l| ConsoleLine {
                at: Duration::ZERO,
                text: l.to_owned(),
            })
            .collect()
    }

    #[test]
    fn parses_markers_after_firmware_text_and_framed_runs() {
        let t = parse(&lines(
            "Booting from ROM..### TESTHOST init uptime=1.50\n\
             ### TESTHOST kvm-ready uptime=2.25\n\
             ### TESTHOST run-begin boot uptime=2.30\n\
             ### TESTHOST stdout boot\n\
             guest line 1\n\
             nproc=2\n\
             \n\
             ### TESTHOST stderr boot\n\
             boot-time-us=1234\n\
             ### TESTHOST run-end boot rc=3 uptime=4.00\n\
             ### TESTHOST run-begin hung uptime=4.10\n\
             ### TESTHOST done uptime=9.00",
        ));
        assert_eq!(t.init_s, Some(1.5));
        assert_eq!(t.kvm_ready_s, Some(2.25));
        assert!(t.done);
        let boot = &t.runs["boot"];
        assert_eq!(boot.exit_code, Some(3));
        assert_eq!(boot.stdout, "guest line 1\nnproc=2");
        assert_eq!(boot.stderr, "boot-time-us=1234");
        assert_eq!(boot.value("nproc"), Some("2"));
        assert_eq!(boot.value("boot-time-us"), Some("1234"));
        assert_eq!((boot.started_s, boot.ended_s), (Some(2.3), Some(4.0)));
        assert_eq!(t.runs["hung"].exit_code, None);
    }
}
