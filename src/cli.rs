//! Command-line interface of `wisp`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Kernel command line used when none is given: console on COM1, reset through the i8042
/// (the only reset a microVM has), reboot at once on panic so the VMM sees it, no PCI probing.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off nomodule";

#[derive(Parser, Debug)]
#[command(
    name = "wisp",
    version,
    about = "Wisp: a lightweight KVM microVM monitor"
)]
pub struct Cli {
    /// Log level for the VMM's own messages (off, error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "WISP_LOG")]
    pub log_level: String,

    /// Run without the per-thread seccomp filters (docs/seccomp.md). For debugging only.
    #[arg(long, global = true)]
    pub no_seccomp: bool,

    /// Serve the REST API (Firecracker's resources) on this Unix socket; boot on InstanceStart.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,

    /// Boot at once from this JSON configuration (the API's schema, as one document).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Let the API socket's group connect too (mode 0660 with this group id instead of 0600).
    #[arg(long, value_name = "GID", requires = "api_sock")]
    pub api_sock_group: Option<u32>,

    /// Accept guests with more memory than this host has (refused by default).
    #[arg(long, global = true)]
    pub allow_overcommit: bool,

    #[command(flatten)]
    pub firecracker: FirecrackerFlags,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Firecracker's command-line flags, with Firecracker's meaning, so that tools that start
/// `firecracker` can start `wisp` (SDKs, the jailer's command line).
#[derive(Args, Debug, Default)]
pub struct FirecrackerFlags {
    /// MicroVM id: reported by `GET /` and written on every log line (1-64 of A-Z a-z 0-9 -).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// With --config-file: serve no API at all (Wisp serves none unless --api-sock is given).
    #[arg(long, requires = "config_file", conflicts_with = "api_sock")]
    pub no_api: bool,

    /// Log to this file from the start (as `PUT /logger` would).
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<PathBuf>,

    /// Log level with Firecracker's names: Off, Error, Warning, Info, Debug, Trace.
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,

    /// Only log records from this module path (e.g. wisp_http::server).
    #[arg(long, value_name = "MODULE")]
    pub module: Option<String>,

    /// Write the level on each log line.
    #[arg(long)]
    pub show_level: bool,

    /// Write the source file and line on each log line.
    #[arg(long)]
    pub show_log_origin: bool,

    /// Write metrics to this file from the start (as `PUT /metrics` would).
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,

    /// Log the guest's boot time (its write to the boot timer device) at Info.
    #[arg(long)]
    pub boot_timer: bool,

    /// Largest API request body, in bytes (default 51200).
    #[arg(long, value_name = "BYTES")]
    pub http_api_max_payload_size: Option<usize>,

    /// A compiled Firecracker seccomp filter file: refused (Wisp installs its own filters).
    #[arg(long, value_name = "PATH")]
    pub seccomp_filter: Option<PathBuf>,

    /// MMDS data store limit: refused (MMDS is not supported by Wisp).
    #[arg(long, value_name = "BYTES")]
    pub mmds_size_limit: Option<u64>,

    /// Check a snapshot's VM state file (or a snapshot directory's `vm.state`): magic, length,
    /// CRC-32 and payload; print its data format version (`v1`) and exit. A file that is not
    /// a valid snapshot of this Wisp's format: the reason on stderr, exit status 1.
    #[arg(long, value_name = "PATH")]
    pub describe_snapshot: Option<PathBuf>,

    /// Print the snapshot data format version this Wisp writes and reads (`v1`) and exit.
    #[arg(long)]
    pub snapshot_version: bool,

    /// PCIe transport: refused (Wisp's devices are virtio-mmio).
    #[arg(long)]
    pub enable_pci: bool,

    /// Set by Firecracker's jailer (its start time); accepted and unused.
    #[arg(long, value_name = "US", hide = true)]
    pub start_time_us: Option<u64>,
    /// Set by Firecracker's jailer; accepted and unused.
    #[arg(long, value_name = "US", hide = true)]
    pub start_time_cpu_us: Option<u64>,
    /// Set by Firecracker's jailer; accepted and unused.
    #[arg(long, value_name = "US", hide = true)]
    pub parent_cpu_time_us: Option<u64>,
}

impl FirecrackerFlags {
    /// The first flag Wisp refuses on purpose, with the reason.
    pub fn refused(&self) -> Option<String> {
        let why =
            |flag: &str, reason: &str| Some(format!("{flag} is not supported by Wisp: {reason}"));
        if self.seccomp_filter.is_some() {
            return why(
                "--seccomp-filter",
                "Wisp compiles and installs its own per-thread filters (docs/seccomp.md); \
                 run without the flag, or with --no-seccomp to debug",
            );
        }
        if self.mmds_size_limit.is_some() {
            return why("--mmds-size-limit", "MMDS is out of scope for now");
        }
        if self.enable_pci {
            return why("--enable-pci", "Wisp's devices are virtio-mmio only");
        }
        None
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a guest now, with its console on this terminal.
    Run(RunArgs),
    /// Boot the demo microVM (the Wisp unikernel) and show its console and boot time.
    Demo(crate::demo::DemoArgs),
    /// A prepared VM shell driven by wispd over a control page (internal).
    #[command(hide = true)]
    Shell(ShellArgs),
    /// Talk to wispd: create, list, pause, resume, destroy VMs, show a console.
    Ctl(CtlArgs),
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// The control page memfd.
    #[arg(long)]
    pub control: i32,
    /// Eventfd wispd rings.
    #[arg(long)]
    pub doorbell: i32,
    /// Eventfd the shell rings.
    #[arg(long)]
    pub ack: i32,
    /// Guest memory to reserve, MiB.
    #[arg(long, default_value_t = wisp_api::config::DEFAULT_MEM_SIZE_MIB)]
    pub mem: u32,
    /// vCPUs to create.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Back guest memory with a sealed memfd that vhost-user backends can map (needed for
    /// configurations with fs devices).
    #[arg(long)]
    pub mem_shared: bool,
    /// Where the guest's console output goes.
    #[arg(long)]
    pub console: Option<PathBuf>,
    /// Serve the VM's REST API on this socket once it runs.
    #[arg(long)]
    pub api_sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// wispd's socket.
    #[arg(long, default_value = "/run/wispd.sock")]
    pub socket: PathBuf,
    /// Id sent with the request and returned with its answer (default: generated), to follow
    /// it through wispd's log; 1-64 characters of A-Z a-z 0-9 . _ : -
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Create a VM from a JSON configuration (the REST API's schema); prints its id and timing.
    Create {
        #[arg(long)]
        config: PathBuf,
        /// Wait until the guest writes the boot timer and report that time too.
        #[arg(long)]
        wait_boot: bool,
    },
    /// List the VMs.
    List,
    /// Destroy a VM.
    Destroy { id: String },
    /// Pause a VM's vCPUs.
    Pause { id: String },
    /// Resume a paused VM.
    Resume { id: String },
    /// Print a VM's console output so far.
    Console { id: String },
    /// Prepared shells and running VMs.
    Status,
    /// Restore a snapshot directory (`vm.state`, `vm.mem`) into a prepared shell and resume it.
    Restore {
        #[arg(long, value_name = "DIR")]
        snapshot: PathBuf,
    },
    /// Restore one snapshot into COUNT prepared shells at once: clones sharing the memory
    /// file's pages copy-on-write, each told on its noxs page that it is a new copy.
    Clone {
        #[arg(long, value_name = "DIR")]
        snapshot: PathBuf,
        #[arg(long, value_name = "COUNT", default_value_t = 1)]
        count: u32,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kernel image: an ELF vmlinux (PVH or 64-bit entry) or a bzImage.
    #[arg(long, required_unless_present = "restore")]
    pub kernel: Option<PathBuf>,
    /// Restore the snapshot in DIR (`vm.state` and `vm.mem`, as `PUT /snapshot/create` or
    /// `wisp ctl` wrote them) and resume it, instead of booting a kernel; the VM's devices
    /// come from the snapshot.
    #[arg(long, value_name = "DIR", conflicts_with = "kernel")]
    pub restore: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = wisp_api::config::DEFAULT_MEM_SIZE_MIB)]
    pub mem: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = wisp_api::config::DEFAULT_VCPU_COUNT)]
    pub vcpus: u8,
    /// Print `boot-time-us=N` on stderr when the guest writes the boot timer.
    #[arg(long)]
    pub boot_timer: bool,
    /// A virtio-blk disk: `path=FILE[,ro][,id=NAME][,root]` (repeatable).
    #[arg(long = "disk", value_name = "SPEC")]
    pub disks: Vec<String>,
    /// A virtio-net interface on a tap device: `tap=NAME[,mac=MAC]` (repeatable).
    #[arg(long = "net", value_name = "SPEC")]
    pub nets: Vec<String>,
    /// A virtio-vsock device, host side on a Unix socket: `cid=N,uds=PATH`.
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,
    /// A virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// A virtio-fs share served by a vhost-user backend (virtiofsd):
    /// `tag=TAG,socket=PATH[,queue-size=N][,num-queues=N][,id=NAME]` (repeatable; implies
    /// --mem-shared).
    #[arg(long = "fs", value_name = "SPEC")]
    pub fs: Vec<String>,
    /// Back guest memory with a sealed memfd (`MAP_SHARED`) that a vhost-user backend can map.
    #[arg(long)]
    pub mem_shared: bool,
    /// For legacy guests without ACPI (e.g. Linux with `acpi=off`): also end the VM when
    /// Linux prints its halt/power-off line, and report a reset after its panic banner as a
    /// panic. Off by default: console text from any guest process would decide the VM's fate.
    #[arg(long)]
    pub legacy_console_lifecycle: bool,
}
