//! The words on the kernel command line that the unikernel acts on. Everything else is
//! ignored here (the `virtio_mmio.device=` entries are read by `virtio::Slots::discover`).

/// One action requested on the command line, run in command-line order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `smp`: start every CPU listed in the MP table and print how many came online.
    Smp,
    /// `mem`: print the RAM size from the PVH memory map.
    Mem,
    /// `cmdline`: print the whole command line the VMM gave (e.g. its `root=` entry).
    Cmdline,
    /// `triple-fault`: crash the CPU so the VMM must report a triple fault.
    TripleFault,
    /// `panic`: panic, so the panic handler's output and halt can be tested.
    Panic,
    /// `echo`: echo serial input back until a `q`.
    Echo,
    /// `idle`: stay up without spinning (interrupts off, `hlt`), so a VM keeps running until
    /// the host stops it; used for density and control-plane tests.
    Idle,
    /// `count`: count forever in a word of guest memory (its address printed first), and print
    /// the count every 2^12 steps: a guest that keeps running and exiting to the VMM, for
    /// pause/resume and teardown tests.
    Count,
    /// `await-restore`: wait until the VM is restored from a snapshot (the noxs page's VM
    /// generation turns non-zero), then print the generation: each clone its own.
    AwaitRestore,
    /// `blk-restored`: `blk`, waiting for a restore (as `await-restore`) just before its
    /// write, so the write goes through a device that was live in the snapshot.
    BlkRestored,
    /// `noxs`: print the devices listed on the noxs device page.
    Noxs,
    /// `virtio`: print the virtio-mmio slots found and what each holds.
    Virtio,
    /// `blk`: capacity, serial, sector 0 and a write check on the first block device.
    Blk,
    /// `blk-bench`: sequential read/write and random 4 KiB read throughput of the first block
    /// device, timed with the TSC.
    BlkBench,
    /// `blk-hog`: 1 MiB reads of the first block device, four in flight, over and over
    /// forever; one line per pass over the disk with its TSC-timed rate (a guest that tries
    /// to monopolise the VMM's event loop, and a rate-limiter measurement).
    BlkHog,
    /// `mmio-flood`: write a read-only register of the first virtio device in a loop for 3 s
    /// (a guest that tries to flood the host's log).
    MmioFlood,
    /// `rng`: 32 bytes from the entropy device.
    Rng,
    /// `net`: ARP for 10.0.2.1 on the first network device.
    Net,
    /// `net-echo`: send received frames back until a `quit` frame.
    NetEcho,
    /// `net-bench`: send 10,000 full-size frames to the tap, timed with the TSC.
    NetBench,
    /// `vsock`: a stream to host port 1234, one exchange.
    Vsock,
    /// `vsock-bench`: stream 64 MiB to host port 1235, timed with the TSC.
    VsockBench,
    /// `balloon`: touch the RAM above 32 MiB, then serve the balloon device's target forever
    /// (inflate, deflate, statistics, deflate on OOM with `balloon_need_mib=N`).
    Balloon,
}

impl Command {
    fn from_word(word: &[u8]) -> Option<Self> {
        match word {
            b"smp" => Some(Self::Smp),
            b"mem" => Some(Self::Mem),
            b"cmdline" => Some(Self::Cmdline),
            b"triple-fault" => Some(Self::TripleFault),
            b"panic" => Some(Self::Panic),
            b"echo" => Some(Self::Echo),
            b"noxs" => Some(Self::Noxs),
            b"virtio" => Some(Self::Virtio),
            b"blk" => Some(Self::Blk),
            b"blk-bench" => Some(Self::BlkBench),
            b"blk-hog" => Some(Self::BlkHog),
            b"mmio-flood" => Some(Self::MmioFlood),
            b"rng" => Some(Self::Rng),
            b"net" => Some(Self::Net),
            b"net-echo" => Some(Self::NetEcho),
            b"net-bench" => Some(Self::NetBench),
            b"vsock" => Some(Self::Vsock),
            b"vsock-bench" => Some(Self::VsockBench),
            b"balloon" => Some(Self::Balloon),
            b"idle" => Some(Self::Idle),
            b"count" => Some(Self::Count),
            b"await-restore" => Some(Self::AwaitRestore),
            b"blk-restored" => Some(Self::BlkRestored),
            _ => None,
        }
    }
}

/// The commands in `cmdline`, in order; words are separated by ASCII whitespace.
pub fn commands(cmdline: &[u8]) -> impl Iterator<Item = Command> + '_ {
    cmdline
        .split(|byte| byte.is_ascii_whitespace())
        .filter_map(Command::from_word)
}
