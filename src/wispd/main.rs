//! `wispd`: the split toolstack's daemon (LightVM's noxs on KVM, docs/design.md §5). It keeps a
//! pool of prepared `wisp shell` processes and turns each create request into one control-page
//! write and one doorbell ring. Requests arrive on a Unix SOCK_SEQPACKET socket as compact JSON
//! (`wisp ctl` is the client). Everything runs on one event loop (daemon.rs).

/// Like `eprintln!`, but a closed stderr is not worth a panic.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod clients;
mod daemon;
mod helper;
#[path = "../logger.rs"]
mod logger;
mod pool;
mod restore;
mod shell_process;
mod socket_path;
mod vms;

use clap::Parser;
use daemon::{Daemon, Settings};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "wispd",
    version,
    about = "Wisp's control-plane daemon: prepared VM shells"
)]
struct Args {
    /// Socket to serve requests on. An existing file there is never replaced, nor a socket
    /// something answers on; a dead socket is.
    #[arg(long, default_value = "/run/wispd.sock")]
    socket: PathBuf,
    /// Prepared shells to keep ready.
    #[arg(long, default_value_t = 4)]
    pool: usize,
    /// Guest memory each prepared shell reserves (MiB, lazily backed).
    #[arg(long, default_value_t = 128)]
    shell_mem: u32,
    /// vCPUs each prepared shell creates.
    #[arg(long, default_value_t = 1)]
    shell_vcpus: u8,
    /// Where consoles and VM API sockets go (default: a directory beside the socket, 0700).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The `wisp` binary (default: next to this one).
    #[arg(long)]
    wisp: Option<PathBuf>,
    /// Log level (off, error, warn, info, debug).
    #[arg(long, default_value = "warn", env = "WISP_LOG")]
    log_level: String,
}

fn sibling_wisp() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("wisp")))
        .unwrap_or_else(|| PathBuf::from("wisp"))
}

/// Creates the run directory (0700); true if it did. An existing one is used as it is, but the
/// default one beside the socket is made private again (an older wispd made it 0755).
fn make_run_dir(dir: &Path, default: bool) -> std::io::Result<bool> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("it exists and is not a directory"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        if default {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        } else {
            log::warn!(
                "wispd: {} is open to other users; guest consoles inside it are not",
                dir.display()
            );
        }
    }
    Ok(false)
}

/// Shells hold four fds each and every client one: the soft limit (often 1024) would cap wispd
/// at a few hundred VMs, so it is raised to the hard limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one rlimit, which `lim` is.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() {
    // First, so a SIGTERM from here on is read by the loop instead of killing wispd midway.
    let signals = match daemon::block_exit_signals() {
        Ok(set) => set,
        Err(e) => {
            report!("wispd: error: {e}");
            std::process::exit(1);
        }
    };
    let args = Args::parse();
    logger::init(&args.log_level);
    raise_fd_limit();
    let (run_dir, default_dir) = match &args.run_dir {
        Some(dir) => (dir.clone(), false),
        None => (PathBuf::from(format!("{}.d", args.socket.display())), true),
    };
    let (listener, claimed) = match socket_path::claim(&args.socket) {
        Ok(claimed) => claimed,
        Err(e) => {
            report!("wispd: error: {e}");
            std::process::exit(1);
        }
    };
    let made_run_dir = match make_run_dir(&run_dir, default_dir) {
        Ok(made) => made,
        Err(e) => {
            report!("wispd: error: cannot use {}: {e}", run_dir.display());
            claimed.release();
            std::process::exit(1);
        }
    };
    let settings = Settings {
        wisp: args.wisp.clone().unwrap_or_else(sibling_wisp),
        run_dir: run_dir.clone(),
        pool: args.pool,
        shell_mem: args.shell_mem,
        shell_vcpus: args.shell_vcpus,
    };
    let outcome = Daemon::new(settings, listener, &signals).and_then(|mut d| d.run());
    // The loop ended every shell (and removed their files); what is left is ours to remove.
    claimed.release();
    if made_run_dir {
        let _ = std::fs::remove_dir(&run_dir);
    }
    if let Err(e) = outcome {
        report!("wispd: error: {e}");
        std::process::exit(1);
    }
}
