//! Smoke runs of the real `wisp-bench` binary against the real `wisp`, QEMU and /dev/kvm.
//! No timing thresholds: benchmarks report, they do not fail on speed. These tests check that
//! every run counted and that the outputs are complete and consistent.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use wisp_bench::results::{Results, SuiteOutcome};

const BENCH: &str = env!("CARGO_BIN_EXE_wisp-bench");

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ is inside the workspace")
}

/// The `wisp` binary of this build, with `wispd` beside it (`cargo test --workspace` builds
/// both beside wisp-bench); when either is missing (`cargo test -p wisp-bench` alone), both
/// are built in their own target directory (this test's cargo holds the lock on its own),
/// which also builds the unikernel. Built once per test process.
fn wisp_binary() -> PathBuf {
    static WISP: OnceLock<PathBuf> = OnceLock::new();
    WISP.get_or_init(|| {
        let beside = Path::new(BENCH).with_file_name("wisp");
        let unikernel = wisp_bench::setup::default_unikernel();
        if beside.is_file() && beside.with_file_name("wispd").is_file() && unikernel.is_file() {
            return beside;
        }
        let target_dir = workspace_root().join("target/wisp-bench-wisp");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--release", "--bin", "wisp", "--bin", "wispd"])
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo to build wisp and wispd");
        assert!(status.success(), "building wisp and wispd failed: {status}");
        let wisp = target_dir.join("release/wisp");
        assert!(
            wisp.with_file_name("wispd").is_file(),
            "no wispd in {target_dir:?}"
        );
        wisp
    })
    .clone()
}

/// QEMU, a project dependency (scripts/install-deps.sh): the peer every run compares with.
fn qemu() -> PathBuf {
    wisp_bench::setup::find_program("qemu-system-x86_64")
        .expect("qemu-system-x86_64 is not on PATH: run scripts/install-deps.sh")
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
        // The outcome never comes after the console closes (the teardown helper holds it).
        assert!(exit <= run["gone_us"], "{run:?}");
        // The boot timer is written after the line is sent, and measured from the same start.
        assert!(timer > 0.0 && timer <= exit, "{run:?}");
        assert!(run["max_rss_kib"] > 0.0);
    }
    // The QEMU peer boots the same guest to its line, every run.
    let qemu_version = results.machine.qemu_version.as_deref().unwrap_or_default();
    assert!(
        qemu_version.starts_with("QEMU emulator version ")
            && qemu_version.ends_with(&format!("({})", qemu().display())),
        "the machine block names another QEMU: {qemu_version:?}"
    );
    let qemu = cold.vmms.iter().find(|v| v.name == "qemu-microvm").unwrap();
    assert!(
        qemu.failures.is_empty(),
        "QEMU runs failed: {:?}",
        qemu.failures
    );
    assert_eq!(qemu.runs.len(), 2);
    for run in &qemu.runs {
        assert!(run["first_line_us"] > 0.0 && run["first_line_us"] <= run["exit_us"]);
        assert!(!run.contains_key("boot_timer_us"), "{run:?}");
    }

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("## cold"));
    assert!(md.contains("| VMM | n | min | median | p99 | max |"));
    assert!(md.contains("| wisp | 2 |"), "{md}");
    assert!(md.contains("| qemu-microvm | 2 |"), "{md}");
    assert!(md.contains("| wisp / qemu-microvm |"), "{md}");
    for plot in [
        "cold-first_line_us.svg",
        "cold-exit_us.svg",
        "cold-gone_us.svg",
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
    // The test host's retries of a stalled L1 go to wisp-bench's stderr; pass them on
    // straight to ours (not `eprintln!`, which the harness swallows for passing tests), so
    // every log shows them as it does for the tests/linux_* suites.
    for line in String::from_utf8_lossy(&run.stderr).lines() {
        if line.starts_with("testhost:") {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    if wisp_vmm::host_kvm::HostKvm::detect().boots_linux() {
        assert!(md.contains("## linux\n\nskipped: "), "{md}");
    } else {
        // One row per VMM, one table per kernel and measure; Firecracker only when given.
        assert!(
            md.contains("### vmlinux: VMM spawn → Tinyx /init line"),
            "{md}"
        );
        assert!(
            md.contains("### bzimage: VMM spawn → Tinyx /init line"),
            "{md}"
        );
        assert!(md.contains("| wisp | 1 |"), "{md}");
        if std::env::var_os("FIRECRACKER").is_none() {
            assert!(md.contains("Firecracker not compared"), "{md}");
        }
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

/// A peer that fails every run (here `false`, standing in for a Firecracker that refuses its
/// config) is reported once with its first error, and the run exits non-zero.
#[test]
fn a_peer_that_fails_every_run_is_reported_once_and_fails_the_run() {
    let out = out_dir("broken-peer");
    let run = bench(
        &[
            "cold",
            "--runs",
            "3",
            "--qemu",
            "none",
            "--firecracker",
            "/bin/false",
        ],
        &out,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "a suite without its peer passed: {stderr}"
    );
    assert!(
        stderr.contains("[cold] run 1/3 firecracker: failed: "),
        "{stderr}"
    );
    for later in ["run 2/3 firecracker", "run 3/3 firecracker"] {
        assert!(!stderr.contains(later), "reported per run: {stderr}");
    }
    assert!(
        stderr.contains("[cold] run 3/3 wisp: first line"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "error: a VMM failed every run, so the tables lack it:\n  cold: firecracker: every \
             run failed (3 failed, none counted); the first: run 1/3: "
        ),
        "{stderr}"
    );
    // The outputs are still written, with the failure in them once.
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| wisp | 3 |"), "{md}");
    assert_eq!(
        md.matches("firecracker: every run failed").count(),
        1,
        "{md}"
    );
    assert!(!md.contains("run 2/3"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// Runs one suite with two runs and returns its comparison; the suite must run (its
/// interface is in this build) and exit cleanly.
fn run_suite(suite: &str) -> wisp_bench::results::Comparison {
    let out = out_dir(suite);
    let run = bench(&[suite, "--runs", "2"], &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = Results::read_json(&out.join("results.json")).expect("results.json");
    let outcome = results
        .suites
        .into_iter()
        .next()
        .expect("one suite")
        .outcome;
    std::fs::remove_dir_all(&out).expect("remove the output directory");
    match outcome {
        SuiteOutcome::Comparison(c) => c,
        other => panic!("{suite} did not run: {other:?}"),
    }
}

#[test]
fn api_configures_and_starts_the_guest_over_rest() {
    let api = run_suite("api");
    let wisp = api.vmms.iter().find(|v| v.name == "wisp").unwrap();
    assert!(wisp.failures.is_empty(), "{:?}", wisp.failures);
    assert_eq!(wisp.runs.len(), 2);
    for run in &wisp.runs {
        assert!(run["socket_ready_us"] < run["first_line_us"], "{run:?}");
        assert!(run["configure_us"] > 0.0 && run["start_to_line_us"] > 0.0);
    }
}

#[test]
fn warm_creates_from_wispd_shells() {
    let warm = run_suite("warm");
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

/// `density --max-vms 50`: 50 unikernels from wispd shells kept running together, every create
/// counted and memory sampled up to 50 (no thresholds: the figures are reported).
#[test]
fn density_smoke_runs_fifty_vms() {
    let out = out_dir("density");
    let run = bench(&["density", "--max-vms", "50"], &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = Results::read_json(&out.join("results.json")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let SuiteOutcome::Density(d) = &results.suites[0].outcome else {
        panic!("density did not run: {:?}", results.suites[0].outcome)
    };
    assert_eq!(d.stopped_early, None, "{d:?}");
    assert_eq!(d.creates.len(), 50);
    let last = d.memory.last().expect("memory samples");
    assert_eq!(last.running, 50);
    assert!(last.total_pss_kib > 0);
}
