//! `wisp`: one VMM process per microVM.

/// Like `eprintln!`, but a closed stderr is not worth a panic.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod api_mode;
mod cli;
mod ctl;
mod demo;
mod device_args;
mod logger;
mod run;
mod shell;
mod terminal;

use clap::Parser;
use cli::{Cli, Command};
use std::time::Instant;

fn main() {
    // The boot timer measures from here: as close to process start as we can get.
    let start = Instant::now();
    let cli = Cli::parse();
    logger::init(&cli.log_level);
    if let Err(e) = apply_firecracker_flags(&cli.firecracker) {
        report!("wisp: error: {e}");
        std::process::exit(run::EXIT_VMM_ERROR);
    }
    if let Some(code) = snapshot_flags(&cli.firecracker) {
        std::process::exit(code);
    }
    if runs_a_vmm(&cli) {
        if let Err(e) = choose_seccomp(cli.no_seccomp) {
            report!("wisp: error: {e}");
            std::process::exit(run::EXIT_VMM_ERROR);
        }
    }
    let code = match &cli.command {
        None if cli.api_sock.is_some() || cli.config_file.is_some() => {
            let args = api_mode::ApiModeArgs {
                api_sock: cli.api_sock.as_deref(),
                config_file: cli.config_file.as_deref(),
                api_sock_group: cli.api_sock_group,
                limits: run::host_limits_with(cli.allow_overcommit),
                firecracker: &cli.firecracker,
            };
            api_mode::run_api(start, &args)
        }
        None => {
            report!("wisp: error: nothing to do: give a subcommand (run, demo, ctl), --api-sock or --config-file; see --help");
            run::EXIT_VMM_ERROR
        }
        Some(Command::Run(args)) if args.restore.is_some() => run::restore_vm(
            start,
            args.restore.as_deref().unwrap_or(std::path::Path::new("")),
            run::host_limits_with(cli.allow_overcommit),
        ),
        Some(Command::Run(args)) => match run::config_from_args(args) {
            Ok(config) => run::run_vm_with(
                start,
                &config,
                args.boot_timer,
                args.legacy_console_lifecycle,
                run::host_limits_with(cli.allow_overcommit),
            ),
            Err(e) => {
                report!("wisp: error: {e}");
                run::EXIT_VMM_ERROR
            }
        },
        Some(Command::Demo(args)) => demo::run_demo(start, args),
        Some(Command::Shell(args)) => shell::run_shell(start, args),
        Some(Command::Ctl(args)) => ctl::run_ctl(args),
    };
    std::process::exit(code);
}

/// Firecracker's flags that act at once: refusals, the id on log lines, the startup logger.
fn apply_firecracker_flags(fc: &cli::FirecrackerFlags) -> Result<(), String> {
    if let Some(refusal) = fc.refused() {
        return Err(refusal);
    }
    if let Some(id) = &fc.id {
        wisp_api::validate::validate_id("--id", id).map_err(|e| e.to_string())?;
        logger::set_instance_id(id);
    }
    let level = match &fc.level {
        Some(name) => Some(logger::parse_level(name).ok_or_else(|| {
            format!("--level {name}: use Off, Error, Warning, Info, Debug or Trace")
        })?),
        None => None,
    };
    let config = wisp_api::Logger {
        log_path: fc.log_path.clone().unwrap_or_default(),
        level: level.unwrap_or_default(),
        show_level: fc.show_level,
        show_log_origin: fc.show_log_origin,
        module: fc.module.clone(),
    };
    if config.module.is_some() {
        wisp_api::resources::check_logger_module(&config).map_err(|e| e.to_string())?;
    }
    if let Some(path) = &fc.log_path {
        logger::configure(&config).map_err(|e| format!("--log-path {}: {e}", path.display()))?;
    } else if level.is_some() || config.module.is_some() || fc.show_log_origin {
        logger::configure_stderr(config.level, config.module, fc.show_log_origin);
    }
    log::info!("wisp {} starting", env!("CARGO_PKG_VERSION"));
    Ok(())
}

/// Firecracker's `--snapshot-version` and `--describe-snapshot PATH`: print a data format
/// version as `v<N>` and exit (Some(exit status)); None when neither flag was given.
fn snapshot_flags(fc: &cli::FirecrackerFlags) -> Option<i32> {
    use wisp_vmm::snapshot::{self, format::FORMAT_VERSION, SnapshotDir};
    if fc.snapshot_version {
        println!("v{FORMAT_VERSION}");
        return Some(0);
    }
    let path = fc.describe_snapshot.as_ref()?;
    // A snapshot directory (`wisp run --restore DIR`) names its state file `vm.state`.
    let state = if path.is_dir() {
        SnapshotDir::new(path).state()
    } else {
        path.clone()
    };
    // The whole file is checked (magic, version, length, CRC-32, payload, configuration), not
    // only its header: a version printed for a corrupt file would promise a restore that fails.
    match snapshot::load_state(&state) {
        Ok(_) => {
            println!("v{FORMAT_VERSION}");
            Some(0)
        }
        Err(e) => {
            report!("wisp: error: --describe-snapshot: {e}");
            Some(run::EXIT_VMM_ERROR)
        }
    }
}

/// Whether this invocation runs a VMM (and so its threads get seccomp filters); `wisp ctl` is
/// a client and runs none.
fn runs_a_vmm(cli: &Cli) -> bool {
    !matches!(cli.command, Some(Command::Ctl(_)))
}

/// Compiles the per-thread filters once, before any VMM, API or vCPU thread exists; each
/// thread installs its own (docs/seccomp.md). `--no-seccomp` leaves them off.
fn choose_seccomp(off: bool) -> Result<(), wisp_seccomp::SeccompError> {
    if off {
        wisp_seccomp::disable();
        return Ok(());
    }
    wisp_seccomp::enable(&wisp_seccomp::FilterParams {
        kick_signal: wisp_vmm::vcpu_control::kick_signal(),
    })
}
