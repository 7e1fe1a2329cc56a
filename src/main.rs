//! `wisp`: one VMM process per microVM.

mod cli;
mod ctl;
mod demo;
mod device_args;
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
    init_logging(&cli.log_level);
    let code = match &cli.command {
        Command::Run(args) => match run::config_from_args(args) {
            Ok(config) => run::run_vm(start, &config, args.boot_timer),
            Err(e) => {
                eprintln!("wisp: error: {e}");
                run::EXIT_VMM_ERROR
            }
        },
        Command::Demo => demo::run_demo(start),
        Command::Shell(args) => shell::run_shell(start, args),
        Command::Ctl(args) => ctl::run_ctl(args),
    };
    std::process::exit(code);
}

fn init_logging(level: &str) {
    let filter = level.parse().unwrap_or(log::LevelFilter::Warn);
    env_logger::Builder::new()
        .filter_level(filter)
        .format_timestamp_micros()
        .target(env_logger::Target::Stderr)
        .init();
}
