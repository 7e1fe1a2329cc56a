//! `wisp`: one VMM process per microVM.

mod cli;
mod demo;
mod run;
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
        Command::Run(args) => run::run_vm(start, &run::config_from_args(args), args.boot_timer),
        Command::Demo => demo::run_demo(start),
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
