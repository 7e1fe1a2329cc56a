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
    let code = match &cli.command {
        None if cli.api_sock.is_some() || cli.config_file.is_some() => {
            api_mode::run_api(start, cli.api_sock.as_deref(), cli.config_file.as_deref())
        }
        None => {
            report!("wisp: error: nothing to do: give a subcommand (run, demo, ctl), --api-sock or --config-file; see --help");
            run::EXIT_VMM_ERROR
        }
        Some(Command::Run(args)) => match run::config_from_args(args) {
            Ok(config) => run::run_vm(
                start,
                &config,
                args.boot_timer,
                args.legacy_console_lifecycle,
            ),
            Err(e) => {
                report!("wisp: error: {e}");
                run::EXIT_VMM_ERROR
            }
        },
        Some(Command::Demo) => demo::run_demo(start),
        Some(Command::Shell(args)) => shell::run_shell(start, args),
        Some(Command::Ctl(args)) => ctl::run_ctl(args),
    };
    std::process::exit(code);
}
