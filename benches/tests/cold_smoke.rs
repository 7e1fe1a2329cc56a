//! Smoke runs of the real `wisp-bench` binary against the real `wisp`, QEMU and /dev/kvm.
//! No timing thresholds: benchmarks report, they do not fail on speed. These tests check that
//! every run counted and that the outputs are complete and consistent.

use std::path::{Path, PathBuf};
use std::process::Command;
use wisp_bench::results::{Results, SuiteOutcome};

const BENCH: &str = env!("CARGO_BIN_EXE_wisp-bench");

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ is inside the workspace")
}

/// The `wisp` binary of this build (`cargo test --workspace` builds it beside wisp-bench);
/// when it is missing (`cargo test -p wisp-bench` alone), it is built in its own target
/// directory, which also builds the unikernel.
fn wisp_binary() -> PathBuf {
    let beside = Path::new(BENCH)
        .parent()
        .expect("wisp-bench is in a target directory")
        .join("wisp");
    let unikernel = wisp_bench::setup::default_unikernel();
    if beside.is_file() && unikernel.is_file() {
        return beside;
    }
    let target_dir = workspace_root().join("target/wisp-bench-wisp");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--bin", "wisp", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo to build wisp");
    assert!(status.success(), "building wisp failed: {status}");
    target_dir.join("release/wisp")
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wisp-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn bench(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(BENCH)
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--wisp")
        .arg(wisp_binary())
        .output()
        .expect("run wisp-bench")
}

#[test]
fn cold_with_two_runs_measures_wisp_and_qemu_and_writes_every_output() {
    let out = out_dir("cold");
    let run = bench(&["cold", "--runs", "2"], &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "wisp-bench failed: {stderr}");
    assert!(
        stderr.contains("[cold] run 2/2 wisp"),
        "no progress shown: {stderr}"
    );

    let results = Results::read_json(&out.join("results.json")).unwrap();
    assert_eq!(results.runs, 2);
    assert!(!results.machine.host_kvm.is_empty());
    assert!(!results.machine.cpu_model.is_empty());
    let [suite] = results.suites.as_slice() else {
        panic!("expected one suite: {:?}", results.suites)
    };
    let SuiteOutcome::Comparison(cold) = &suite.outcome else {
        panic!("cold did not run: {:?}", suite.outcome)
    };
    let wisp = cold.vmms.iter().find(|v| v.name == "wisp").unwrap();
    assert!(
        wisp.failures.is_empty(),
        "wisp runs failed: {:?}",
        wisp.failures
    );
    assert_eq!(wisp.runs.len(), 2);
    for run in &wisp.runs {
        let (line, timer, exit) = (run["first_line_us"], run["boot_timer_us"], run["exit_us"]);
        assert!(line > 0.0 && line <= exit, "{run:?}");
        // The boot timer is written after the line is sent, and measured from the same start.
        assert!(timer > 0.0 && timer <= exit, "{run:?}");
        assert!(run["max_rss_kib"] > 0.0);
    }
    // QEMU is installed by scripts/install-deps.sh; it must boot the same guest to its line.
    if wisp_bench::setup::find_program("qemu-system-x86_64").is_some() {
        let qemu = cold.vmms.iter().find(|v| v.name == "qemu-microvm").unwrap();
        assert!(
            qemu.failures.is_empty(),
            "QEMU runs failed: {:?}",
            qemu.failures
        );
        assert_eq!(qemu.runs.len(), 2);
        assert!(!qemu.runs[0].contains_key("boot_timer_us"));
    }

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("## cold"));
    assert!(md.contains("| VMM | n | min | median | p99 | max |"));
    assert!(md.contains("| wisp | 2 |"), "{md}");
    for plot in [
        "cold-first_line_us.svg",
        "cold-exit_us.svg",
        "cold-max_rss_kib.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"), "{plot}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// On PVM the `linux` suite boots the real-KVM test host and times Tinyx inside it; on
/// hardware KVM it says why it is skipped. Either way it reports, and never fakes a number.
#[test]
fn linux_suite_times_tinyx_in_the_test_host_or_says_why_not() {
    let out = out_dir("linux");
    let run = bench(&["linux", "--runs", "1"], &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    if wisp_vmm::host_kvm::HostKvm::detect().boots_linux() {
        assert!(md.contains("## linux\n\nskipped: "), "{md}");
    } else {
        assert!(md.contains("| wisp (vmlinux-pvh) | 1 |"), "{md}");
        assert!(md.contains("| wisp (bzimage) | 1 |"), "{md}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_missing_guest_is_a_clear_error() {
    let out = out_dir("noguest");
    let run = bench(
        &["cold", "--unikernel", "/nonexistent/wisp-unikernel"],
        &out,
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("the unikernel /nonexistent/wisp-unikernel does not exist"),
        "{stderr}"
    );
    assert!(!out.join("results.json").exists());
}

/// Runs one suite with two runs; returns its comparison, or `None` when it was skipped
/// because `wisp --help` does not offer `needle` (an interface not in this build).
fn run_suite(suite: &str, needle: &str) -> Option<wisp_bench::results::Comparison> {
    let out = out_dir(suite);
    let run = bench(&[suite, "--runs", "2"], &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = Results::read_json(&out.join("results.json")).expect("results.json");
    let offered = wisp_bench::setup::help_mentions(&wisp_binary(), &[], needle);
    let outcome = results
        .suites
        .into_iter()
        .next()
        .expect("one suite")
        .outcome;
    std::fs::remove_dir_all(&out).expect("remove the output directory");
    match outcome {
        SuiteOutcome::Comparison(c) => {
            assert!(offered, "{suite} ran although wisp does not offer {needle}");
            Some(c)
        }
        SuiteOutcome::Skipped { reason } => {
            assert!(
                !offered,
                "{suite} skipped although wisp offers {needle}: {reason}"
            );
            None
        }
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn api_configures_and_starts_the_guest_over_rest_when_wisp_serves_it() {
    let Some(api) = run_suite("api", "--api-sock") else {
        return;
    };
    let wisp = api.vmms.iter().find(|v| v.name == "wisp").unwrap();
    assert!(wisp.failures.is_empty(), "{:?}", wisp.failures);
    assert_eq!(wisp.runs.len(), 2);
    for run in &wisp.runs {
        assert!(run["socket_ready_us"] < run["first_line_us"], "{run:?}");
        assert!(run["configure_us"] > 0.0 && run["start_to_line_us"] > 0.0);
    }
}

#[test]
fn warm_creates_from_wispd_shells_when_wispd_is_built() {
    if !Path::new(BENCH).with_file_name("wispd").is_file() {
        return;
    }
    let Some(warm) = run_suite("warm", "ctl") else {
        return;
    };
    let wisp = &warm.vmms[0];
    assert!(wisp.failures.is_empty(), "{:?}", wisp.failures);
    assert_eq!(wisp.runs.len(), 2);
    for run in &wisp.runs {
        assert!(
            run["create_us"] > 0.0 && run["create_us"] < run["ctl_round_trip_us"],
            "{run:?}"
        );
    }
}
