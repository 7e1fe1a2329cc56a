//! Command line of `wisp-bench`.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "wisp-bench",
    version,
    about = "Boot-time benchmarks: Wisp side by side with QEMU microvm and Firecracker"
)]
pub struct Cli {
    /// Which suite to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Runs per VMM (cold, api, warm, virtio).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Output directory [default: target/wisp-bench/<UTC timestamp>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The guest: the Wisp unikernel (PVH ELF) [default: the workspace's build of it].
    #[arg(long)]
    pub unikernel: Option<PathBuf>,
    /// The `wisp` binary [default: beside wisp-bench, else target/release/wisp].
    #[arg(long)]
    pub wisp: Option<PathBuf>,
    /// Another `wisp` binary (a build before a change) run as a peer named `wisp-baseline`
    /// where the suite runs Wisp's own command (cold), for before/after in the same run.
    #[arg(long)]
    pub baseline_wisp: Option<PathBuf>,
    /// A Firecracker binary (or any taking its `--no-api --config-file` flags) to compare with.
    #[arg(long, env = "FIRECRACKER")]
    pub firecracker: Option<PathBuf>,
    /// The QEMU binary to compare with; "none" leaves QEMU out.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Density: the most VMs to run at once (1 → 10 → 100 by default; 1000 must be asked for).
    #[arg(long, default_value_t = 100)]
    pub max_vms: usize,
    /// Warm: prepared shells `wispd` keeps.
    #[arg(long, default_value_t = 4)]
    pub pool: usize,
    /// Cold and warm: also run Wisp jailed (`wisp-jailer`, `wispd --jail`) with its seccomp
    /// filters, and Wisp with neither (`--no-seccomp`), interleaved with the rest.
    #[arg(long)]
    pub jail: bool,
    /// Warm: also run `wispd --shell-mem-shared` (memfd-backed shells, as virtio-fs needs),
    /// interleaved with the default pool.
    #[arg(long)]
    pub mem_shared: bool,
    /// Seconds a single VMM run may take before it is killed and counted as failed.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Process start → first serial line / boot timer / exit, per VMM.
    Cold,
    /// REST API: socket ready, configure-and-start to the first line.
    Api,
    /// `wispd` creates from prepared shells.
    Warm,
    /// Create time and host memory as running VMs grow.
    Density,
    /// The Tinyx Linux guest inside the real-KVM test host.
    Linux,
    /// virtio-blk, vsock and net throughput from the unikernel against the host.
    Virtio,
    /// Snapshot create and load side by side with Firecracker.
    Snapshot,
    /// Restore into prepared shells and clones through `wispd`.
    SnapshotWispd,
    /// Every suite above.
    All,
}

impl Suite {
    pub fn expand(self) -> Vec<Suite> {
        match self {
            Suite::All => vec![
                Suite::Cold,
                Suite::Api,
                Suite::Warm,
                Suite::Density,
                Suite::Linux,
                Suite::Virtio,
                Suite::Snapshot,
                Suite::SnapshotWispd,
            ],
            one => vec![one],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Suite::Cold => "cold",
            Suite::Api => "api",
            Suite::Warm => "warm",
            Suite::Density => "density",
            Suite::Linux => "linux",
            Suite::Virtio => "virtio",
            Suite::Snapshot => "snapshot",
            Suite::SnapshotWispd => "snapshot-wispd",
            Suite::All => "all",
        }
    }
}
