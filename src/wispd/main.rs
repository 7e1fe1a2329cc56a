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
mod jail;
#[path = "../logger.rs"]
mod logger;
mod pool;
mod restore;
mod shell_process;
mod socket_path;
mod spawner;
mod vms;

use clap::Parser;
use daemon::{Daemon, Settings};
use helper::Helper;
use jail::JailSettings;
use shell_process::ShellPlan;
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
    /// Back every prepared shell's guest RAM with a sealed memfd (`wisp shell --mem-shared`),
    /// so that creates with virtio-fs shares take a prepared shell. Without it such a create
    /// gets a shell prepared for it (a cold start); other creates are served either way.
    #[arg(long)]
    shell_mem_shared: bool,
    /// Where consoles and VM API sockets go (default: a directory beside the socket, 0700).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The `wisp` binary (default: next to this one).
    #[arg(long)]
    wisp: Option<PathBuf>,
    /// Log level (off, error, warn, info, debug).
    #[arg(long, default_value = "warn", env = "WISP_LOG")]
    log_level: String,
    /// Run wispd and its shells without their seccomp filters (docs/seccomp.md). For debugging
    /// only.
    #[arg(long)]
    no_seccomp: bool,
    /// Start every shell through `wisp-jailer`, one jail per shell (docs/jailer.md).
    #[arg(long, requires_all = ["jail_uid", "jail_gid"])]
    jail: bool,
    /// The jailer binary (default: `wisp-jailer` next to this one).
    #[arg(long, requires = "jail")]
    jailer: Option<PathBuf>,
    /// The uid jailed shells run as (not 0).
    #[arg(long, requires = "jail")]
    jail_uid: Option<u32>,
    /// The gid jailed shells run as (not 0).
    #[arg(long, requires = "jail")]
    jail_gid: Option<u32>,
    /// Where the jails are built: <DIR>/<wisp's file name>/shell-<wispd pid>-<n>/root. Files a
    /// create names are hard-linked into the shell's root, so keep them on this filesystem
    /// (or under a --jail-bind directory).
    #[arg(long, requires = "jail", default_value = "/srv/wisp-jail")]
    chroot_base_dir: PathBuf,
    /// Bind a host file or directory into every jail, SRC:DST[:ro] (repeatable). A file a
    /// create names under SRC is given to the shell as DST/...: bind the kernels' directory
    /// read-only, and a dynamic `wisp` needs its libraries.
    #[arg(long = "jail-bind", value_name = "SRC:DST[:ro]", requires = "jail")]
    jail_binds: Vec<String>,
    /// A cgroup limit for every jailed shell, FILE=VALUE (cpu.max, memory.max, pids.max).
    #[arg(long = "jail-cgroup", value_name = "FILE=VALUE", requires = "jail")]
    jail_cgroups: Vec<String>,
    /// The per-shell cgroups' parent (the jailer's default: wisp).
    #[arg(long, requires = "jail")]
    jail_parent_cgroup: Option<String>,
    /// A resource limit for every jailed shell, no-file=N or fsize=BYTES (repeatable).
    #[arg(
        long = "jail-resource-limit",
        value_name = "RESOURCE=N",
        requires = "jail"
    )]
    jail_resource_limits: Vec<String>,
    /// The network namespace jailed shells join (where their taps are).
    #[arg(long, requires = "jail")]
    jail_netns: Option<PathBuf>,
}

impl Args {
    fn jail_settings(&self) -> Option<JailSettings> {
        if !self.jail {
            return None;
        }
        Some(JailSettings {
            jailer: self
                .jailer
                .clone()
                .unwrap_or_else(|| sibling("wisp-jailer")),
            uid: self.jail_uid.unwrap_or(0),
            gid: self.jail_gid.unwrap_or(0),
            base: self.chroot_base_dir.clone(),
            binds: self.jail_binds.clone(),
            cgroups: self.jail_cgroups.clone(),
            parent_cgroup: self.jail_parent_cgroup.clone(),
            resource_limits: self.jail_resource_limits.clone(),
            netns: self.jail_netns.clone(),
        })
    }
}

/// The binary `name` next to this one.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// wispd's own filter (docs/seccomp.md), on its one thread, once everything it opens at
/// start-up is open and before the first client is read. The spawner was forked before this and
/// stays unfiltered: a filter passes to every process exec'd under it, and shells need far more.
fn enter_seccomp(off: bool) -> Result<(), wisp_seccomp::SeccompError> {
    if off {
        wisp_seccomp::disable();
        return Ok(());
    }
    wisp_seccomp::enable(&wisp_seccomp::FilterParams {
        kick_signal: libc::SIGRTMIN(),
    })?;
    wisp_seccomp::enter(wisp_seccomp::ThreadKind::Wispd)
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
    if let Some(j) = args.jail_settings() {
        if j.uid == 0 || j.gid == 0 {
            report!("wispd: error: --jail-uid and --jail-gid must not be 0");
            std::process::exit(1);
        }
    }
    let plan = ShellPlan {
        wisp: args.wisp.clone().unwrap_or_else(|| sibling("wisp")),
        run_dir: run_dir.clone(),
        jail: args.jail_settings(),
        wispd_pid: std::process::id(),
        no_seccomp: args.no_seccomp,
    };
    // First, while wispd is one thread holding nothing: the spawner inherits no socket.
    let helper = match Helper::start(plan) {
        Ok(h) => h,
        Err(e) => {
            report!("wispd: error: {e}");
            std::process::exit(1);
        }
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
        pool: args.pool,
        shell_mem: args.shell_mem,
        shell_vcpus: args.shell_vcpus,
        shell_mem_shared: args.shell_mem_shared,
    };
    let outcome = Daemon::new(settings, listener, &signals, helper)
        .and_then(|d| match enter_seccomp(args.no_seccomp) {
            Ok(()) => Ok(d),
            Err(e) => Err(daemon::DaemonError::Seccomp(e)),
        })
        .and_then(|mut d| d.run());
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
