//! `wisp-bench`: the command line over the library. Measures Wisp and its peers (QEMU `-M
//! microvm`, Firecracker) on the same guest in the same run, interleaved, and writes
//! results.json (raw samples and the machine), results.md (tables) and SVG plots. Exits
//! non-zero when a suite's VMM failed every run (the outputs are still written).

use clap::Parser;
use std::process::ExitCode;
use wisp_bench::cli::{Cli, Suite};
use wisp_bench::results::{Results, SuiteOutcome, SuiteResult};
use wisp_bench::setup::Setup;
use wisp_bench::{l1_timer, machine, plots, report_md, suites};

fn main() -> ExitCode {
    // Inside the test host, the `linux` suite runs this binary as its timer.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(l1_timer::SUBCOMMAND) {
        return l1_timer::main(&args[2..]);
    }
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("WISP_BENCH_LOG", "warn"))
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wisp-bench: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let setup = Setup::resolve(cli).map_err(|e| e.to_string())?;
    let machine = machine::MachineInfo::detect(
        &setup.wisp,
        setup.qemu.as_deref(),
        setup.firecracker.as_deref(),
    );
    eprintln!(
        "wisp-bench: {} on {} ({}), output in {}",
        cli.suite.name(),
        machine.cpu_model,
        machine.host_kvm,
        setup.out.display()
    );
    let mut results = Results {
        started_utc: setup.started_utc.clone(),
        runs: setup.runs,
        machine,
        suites: Vec::new(),
    };
    // VMMs that failed every run of a suite: the run fails, so nobody reads a table whose
    // comparison is missing.
    let mut broken = Vec::new();
    for suite in cli.suite.expand() {
        eprintln!("wisp-bench: suite {}", suite.name());
        let outcome = match suite {
            Suite::Cold => suites::cold::run(&setup),
            Suite::Api => suites::api::run(&setup),
            Suite::Warm => suites::warm::run(&setup),
            Suite::Density => suites::density::run(&setup),
            Suite::Linux => suites::linux::run(&setup),
            Suite::Virtio => suites::virtio::run(&setup),
            Suite::Snapshot => suites::snapshot::run(&setup),
            Suite::SnapshotWispd => suites::snapshot_wispd::run(&setup),
            Suite::All => continue,
        };
        if let SuiteOutcome::Skipped { reason } = &outcome {
            eprintln!("wisp-bench: {}: skipped: {reason}", suite.name());
        }
        let result = SuiteResult {
            suite: suite.name().to_string(),
            outcome,
        };
        for failed in result.vmms_that_failed_every_run() {
            eprintln!("wisp-bench: {}: {failed}", suite.name());
            broken.push(format!("{}: {failed}", suite.name()));
        }
        results.suites.push(result);
        // Written after every suite, so a long `all` leaves what it has if interrupted.
        write_outputs(&setup, &results)?;
    }
    eprintln!(
        "wisp-bench: wrote {}",
        setup.out.join("results.md").display()
    );
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "a VMM failed every run, so the tables lack it:\n  {}",
            broken.join("\n  ")
        ))
    }
}

fn write_outputs(setup: &Setup, results: &Results) -> Result<(), String> {
    results
        .write_json(&setup.out.join("results.json"))
        .map_err(|e| e.to_string())?;
    let md_path = setup.out.join("results.md");
    std::fs::write(&md_path, report_md::render(results))
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    for suite in &results.suites {
        let drawn = match &suite.outcome {
            SuiteOutcome::Comparison(c) => plots::comparison(&setup.out, &suite.suite, c),
            SuiteOutcome::Density(d) => plots::density(&setup.out, d),
            SuiteOutcome::Skipped { .. } => Ok(Vec::new()),
        };
        drawn.map_err(|e| e.to_string())?;
    }
    Ok(())
}
