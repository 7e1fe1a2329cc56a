//! `MicroVm`: a prepared VM configured with a guest and its devices, its vCPU threads, and
//! its teardown. It is driven by `controller::Controller` on the VMM thread; the event loop
//! that serves its devices is `vmm_loop::VmmLoop`'s.
//!
//! Teardown order is the point of this type: dropping a `MicroVm` first finishes and joins
//! every vCPU thread, then removes its memory slots from KVM, and only then lets the VM fd and
//! the guest memory mapping go (`Drop`). No vCPU can be inside KVM_RUN, and no slot can point
//! at host memory, once the mapping may be reused.

use crate::device_manager::DeviceManagerError;
use crate::event_loop::ConsoleInput;
use crate::exit::{VmExit, VmExitSignal};
use crate::layout::{NOXS_PAGE_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::legacy_devices::LegacyDevices;
use crate::loader::{self, LoaderError};
use crate::prepared::{PrepareError, PreparedVm};
use crate::vcpu::{BootEntry, Vcpu, VcpuError};
use crate::vcpu_control::{ControlError, FirstEntryHook};
use crate::vcpu_thread::{VcpuThread, VcpuThreadError, Vcpus};
use crate::virtio_devices::{attach_virtio_devices, subscribers, VirtioHandle, VirtioSetupError};
use crate::vm::{Vm, VmError};
use crate::x86_64::acpi::{guest_reads_dsdt, setup_acpi, AcpiError};
use crate::x86_64::boot_params::{write_pvh_start_info, write_zero_page, BootParamsError};
use crate::x86_64::mptable::{setup_mptable, MptableError};
use crate::x86_64::regs::EntryMode;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_device::device_manager::IoManager;
use vm_memory::GuestMemoryMmap;
use wisp_api::VmConfig;
use wisp_devices::acpi_pm::AcpiPm;
use wisp_devices::boot_timer::BootTimer;
use wisp_devices::i8042::{I8042Error, I8042};
use wisp_devices::noxs_page::{NoxsEntry, NoxsPage, SysctlWord, VmGeneration, NOXS_PAGE_SIZE};
use wisp_devices::serial::{ConsoleOutput, ConsoleWatch, SerialConsole};

pub use crate::legacy_devices::Subscriber;

#[derive(Debug, thiserror::Error)]
pub enum MicroVmError {
    #[error("no boot source: a kernel image is required")]
    NoBootSource,
    #[error("the guest asks for {want} but this VM shell holds only {have}")]
    DoesNotFitShell { want: String, have: String },
    #[error(
        "the configuration needs shared guest memory (mem_shared or an fs device), and this \
         shell's memory is anonymous: prepare it with --mem-shared"
    )]
    NotSharedShell,
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
    #[error(transparent)]
    Mptable(#[from] MptableError),
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Virtio(#[from] VirtioSetupError),
    #[error(transparent)]
    VcpuThread(#[from] VcpuThreadError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the {0} lock is poisoned")]
    Poisoned(&'static str),
    #[error("Ctrl-Alt-Del not delivered: {0}")]
    Keyboard(#[from] I8042Error),
}

/// What the host side of a microVM is wired to.
pub struct MicroVmOptions {
    /// When the VMM process started; the boot timer measures from here.
    pub start: Instant,
    /// Where the guest's console output goes.
    pub console_out: Box<dyn Write + Send>,
    /// Host input for the guest's console, if any.
    pub console_in: Option<File>,
    /// Called once, on a vCPU thread, when the guest writes the boot timer.
    pub on_boot: Option<Box<dyn FnOnce(u64) + Send>>,
    /// Called once, on the boot vCPU's thread, just before it first enters the guest.
    pub on_first_entry: Option<FirstEntryHook>,
    /// For legacy guests without ACPI and pvpanic (Linux with `acpi=off`, old kernels): also
    /// take Linux's halt/power-off lines on the console as a clean end, and its panic banner
    /// before a reset as a panic. Off by default: then any guest process could end the VM by
    /// printing those lines; the lifecycle comes from devices (ACPI power-off and reset
    /// registers, pvpanic, the i8042 reset, vCPU exits).
    pub legacy_console_lifecycle: bool,
}

/// How long pause and resume wait for every vCPU's acknowledgement.
pub const VCPU_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// A configured microVM: its vCPUs (parked until `start`, then owned threads), devices, KVM
/// VM and guest memory.
pub struct MicroVm {
    // Drop runs `shutdown` first; the fields then go in this order.
    pub(crate) vcpus: Vcpus,
    pub(crate) unstarted: Vec<(Vcpu, VcpuThread)>,
    pub(crate) first_entry: Option<FirstEntryHook>,
    pub(crate) serial: Arc<Mutex<SerialConsole>>,
    pub(crate) boot_timer: Arc<Mutex<BootTimer>>,
    pub(crate) watch: ConsoleWatch,
    pub(crate) io: Arc<IoManager>,
    /// Event-loop subscribers (exit doorbells, console input, virtio queues) not yet handed to
    /// the VMM loop.
    pub(crate) subscribers: Vec<Subscriber>,
    pub(crate) exit: VmExitSignal,
    pub(crate) sysctl: SysctlWord,
    /// The noxs page's VM generation word (new after a snapshot restore).
    pub(crate) generation: VmGeneration,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    pub(crate) acpi_pm: Arc<Mutex<AcpiPm>>,
    pub(crate) panicked: Arc<AtomicBool>,
    pub(crate) virtio: Vec<VirtioHandle>,
    pub(crate) memory_registered: bool,
    /// Guest RAM is a snapshot's memory file mapped `MAP_PRIVATE` (a restored VM).
    pub(crate) memory_from_file: bool,
    pub(crate) vm: Vm,
    pub(crate) mem: GuestMemoryMmap,
}

impl MicroVm {
    /// Prepares a VM of exactly the configured size and configures it.
    pub fn build(config: &VmConfig) -> Result<MicroVm, MicroVmError> {
        // Validate what needs no KVM first, so bad input fails fast and touches nothing.
        if config.boot_source.is_none() {
            return Err(MicroVmError::NoBootSource);
        }
        let mc = &config.machine_config;
        let shell = PreparedVm::prepare_backed(
            mc.mem_size_mib,
            mc.vcpu_count,
            mc.huge_pages,
            mc.track_dirty_pages,
            config.needs_shared_memory(),
        )?;
        MicroVm::configure(shell, config)
    }

    /// Loads the guest into a prepared VM, plugs the devices and sets up the boot vCPU.
    pub fn configure(shell: PreparedVm, config: &VmConfig) -> Result<MicroVm, MicroVmError> {
        let boot = config
            .boot_source
            .as_ref()
            .ok_or(MicroVmError::NoBootSource)?;
        let mc = &config.machine_config;
        if mc.mem_size_mib > shell.mem_mib() || mc.vcpu_count > shell.vcpu_count() {
            return Err(MicroVmError::DoesNotFitShell {
                want: format!("{} MiB and {} vCPUs", mc.mem_size_mib, mc.vcpu_count),
                have: format!("{} MiB and {} vCPUs", shell.mem_mib(), shell.vcpu_count()),
            });
        }
        if mc.track_dirty_pages && !shell.vm.dirty_log() {
            return Err(MicroVmError::DoesNotFitShell {
                want: "track_dirty_pages".into(),
                have: "a shell prepared without dirty-page logging".into(),
            });
        }
        if config.needs_shared_memory() && !shell.mem_shared() {
            return Err(MicroVmError::NotSharedShell);
        }
        let ram_size = u64::from(mc.mem_size_mib) << 20;
        let PreparedVm {
            vcpus,
            threads,
            mut devices,
            legacy,
            supported_cpuid,
            vm,
            mem,
            ..
        } = shell;
        let LegacyDevices {
            serial,
            i8042,
            boot_timer,
            acpi_pm,
            watch,
            exit,
            doorbells,
        } = legacy;

        let kernel = loader::load_kernel(&mem, ram_size, &boot.kernel_image_path)?;
        let initrd = match &boot.initrd_path {
            Some(path) => Some(loader::load_initrd(&mem, ram_size, path, &kernel)?),
            None => None,
        };
        let boot_args = boot.boot_args.as_deref().unwrap_or("");
        let mut cmdline = loader::new_cmdline(boot_args)?;
        // The DSDT declares every virtio device; only a guest told to ignore ACPI needs them
        // on its command line (and then gets them only there: no device is probed twice).
        devices.set_virtio_on_cmdline(!guest_reads_dsdt(boot_args));

        let virtio = attach_virtio_devices(&mut devices, vm.fd(), &mem, &mut cmdline, config)?;

        let (sysctl, generation) = add_noxs_page(&mut devices)?;

        let cmdline_size = loader::write_cmdline(&mem, &cmdline)?;
        // Both: Linux prefers the ACPI tables (MADT, FADT power-off), the unikernel and
        // `acpi=off` guests read the MP table.
        setup_mptable(&mem, mc.vcpu_count)?;
        let virtio_slots: Vec<_> = devices.attached().iter().map(|d| d.slot).collect();
        let rsdp = setup_acpi(&mem, mc.vcpu_count, &virtio_slots)?;
        let boot_info = match kernel.mode {
            EntryMode::Pvh => {
                write_pvh_start_info(&mem, ram_size, initrd, rsdp)?;
                PVH_INFO_START
            }
            EntryMode::LongMode => {
                let header = kernel.setup_header;
                write_zero_page(&mem, ram_size, header, cmdline_size, initrd, rsdp)?;
                ZERO_PAGE_START
            }
        };

        // A shell may hold more vCPUs than this guest gets; the extra ones never run.
        let mut vcpus: Vec<Vcpu> = vcpus.into_iter().take(usize::from(mc.vcpu_count)).collect();
        for vcpu in vcpus.iter_mut() {
            vcpu.configure_cpu(&supported_cpuid, mc.vcpu_count)?;
        }
        if let Some(bsp) = vcpus.first() {
            bsp.set_boot_entry(
                &mem,
                BootEntry {
                    mode: kernel.mode,
                    entry: kernel.entry.0,
                    boot_info,
                },
            )?;
        }

        let mut subs = vec![doorbells];
        subs.extend(subscribers(&virtio));
        let unstarted = vcpus.into_iter().zip(threads).collect();
        Ok(MicroVm {
            vcpus: Vcpus::default(),
            unstarted,
            first_entry: None,
            serial,
            boot_timer,
            watch: watch.clone(),
            io: devices.into_io(),
            subscribers: subs,
            exit,
            sysctl,
            generation,
            i8042,
            acpi_pm,
            panicked: watch.panicked,
            virtio,
            memory_registered: true,
            memory_from_file: false,
            vm,
            mem,
        })
    }

    /// Connects the VM to its host side: console output and input, the boot-timer report and
    /// the first-entry stamp. Infallible, so a failed configuration spends none of them.
    pub fn attach_host(&mut self, opts: MicroVmOptions) {
        if let Ok(mut com1) = self.serial.lock() {
            let watch = opts.legacy_console_lifecycle.then(|| self.watch.clone());
            com1.set_output(ConsoleOutput::new(opts.console_out, watch));
        }
        match self.boot_timer.lock() {
            Ok(mut timer) => timer.arm(opts.start, opts.on_boot),
            Err(_) => log::error!("the boot timer's lock is poisoned: no boot-time report"),
        }
        if let Some(input) = opts.console_in {
            let serial = self.serial.clone();
            self.subscribers
                .push(Arc::new(Mutex::new(ConsoleInput::new(input, serial))));
        }
        self.first_entry = opts.on_first_entry;
    }

    /// The virtio devices, in attach order.
    pub fn virtio_devices(&self) -> &[VirtioHandle] {
        &self.virtio
    }

    /// The event-loop subscribers the VMM loop must serve for this VM (taken once).
    pub fn take_subscribers(&mut self) -> Vec<Subscriber> {
        std::mem::take(&mut self.subscribers)
    }

    /// Starts the vCPU threads (once); the guest begins to run.
    pub fn start(&mut self) -> Result<(), MicroVmError> {
        self.launch_vcpus(false)
    }

    /// Starts the vCPU threads paused (a restored snapshot not yet resumed): no guest
    /// instruction runs before `resume`.
    pub fn start_paused(&mut self) -> Result<(), MicroVmError> {
        self.launch_vcpus(true)
    }

    fn launch_vcpus(&mut self, paused: bool) -> Result<(), MicroVmError> {
        // The PIT, created beside the rest of the setup, exists before the guest runs.
        self.vm.finish_setup()?;
        let mut first_entry = self.first_entry.take();
        let mut handles = Vec::with_capacity(self.unstarted.len());
        for (vcpu, thread) in self.unstarted.drain(..) {
            // The boot vCPU (the first) stamps the first entry; APs wait for INIT/SIPI.
            let hook = first_entry.take();
            let (io, exit) = (self.io.clone(), self.exit.clone());
            handles.push(thread.launch(vcpu, io, exit, hook, paused)?);
        }
        if !handles.is_empty() {
            self.vcpus = Vcpus::new(handles);
        }
        Ok(())
    }

    /// Parks every vCPU outside the guest; returns once each has acknowledged.
    pub fn pause(&self) -> Result<(), MicroVmError> {
        Ok(self.vcpus.pause(VCPU_ACK_TIMEOUT)?)
    }

    /// Lets every vCPU enter the guest again; returns once each has acknowledged.
    pub fn resume(&self) -> Result<(), MicroVmError> {
        Ok(self.vcpus.resume(VCPU_ACK_TIMEOUT)?)
    }

    /// How many vCPU threads are still running.
    pub fn live_vcpus(&self) -> usize {
        self.vcpus.live()
    }

    /// Presses and releases Ctrl-Alt-Del on the guest's keyboard (IRQ 1). A Linux guest with
    /// the i8042/atkbd drivers and VT restarts (or signals init) — with `reboot=k` the VM ends.
    pub fn send_ctrl_alt_del(&self) -> Result<(), MicroVmError> {
        let mut i8042 = self
            .i8042
            .lock()
            .map_err(|_| MicroVmError::Poisoned("i8042"))?;
        Ok(i8042.send_ctrl_alt_del()?)
    }

    /// The noxs page's sysctl word, for host requests to the guest.
    pub fn sysctl(&self) -> &SysctlWord {
        &self.sysctl
    }

    /// Ends the VM from the host side: the VMM loop sees `VmExit::Stopped`.
    pub fn request_stop(&self) {
        self.exit.send(VmExit::Stopped)
    }

    /// The reason the VM ended, once a vCPU, a device or the host reported one (taken once).
    /// A reset after the guest reported a panic (pvpanic, or the banner of a legacy guest
    /// watched on its console) is a panic.
    pub fn take_exit(&self) -> Option<VmExit> {
        let exit = self.exit.take()?;
        if exit == VmExit::Reset && self.panicked.load(Ordering::Acquire) {
            return Some(VmExit::GuestPanic);
        }
        Some(exit)
    }

    /// Finishes and joins every vCPU thread, then removes guest memory from KVM. Idempotent;
    /// `Drop` calls it too. Afterwards KVM holds no reference to the mapping.
    pub fn shutdown(&mut self) {
        self.vcpus.finish();
        self.unstarted.clear();
        if self.memory_registered {
            if let Err(e) = self.vm.unregister_memory(&self.mem) {
                log::error!("cannot remove guest memory from KVM: {e}");
            }
            self.memory_registered = false;
        }
    }

    /// The KVM VM (for tests that check what KVM still holds after `shutdown`).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

/// Adds the noxs page, listing every virtio device attached so far (so it comes after them);
/// returns its sysctl and generation words.
pub(crate) fn add_noxs_page(
    devices: &mut crate::device_manager::DeviceManager,
) -> Result<(SysctlWord, VmGeneration), MicroVmError> {
    let sysctl = SysctlWord::default();
    let generation = VmGeneration::default();
    let listed: Vec<NoxsEntry> = devices
        .attached()
        .iter()
        .map(|d| NoxsEntry {
            device_type: d.device_type,
            irq: d.slot.irq,
            base: d.slot.base,
        })
        .collect();
    let page = NoxsPage::new(&listed, sysctl.clone()).with_generation(generation.clone());
    devices.add_mmio(
        "noxs page",
        NOXS_PAGE_START,
        NOXS_PAGE_SIZE,
        Arc::new(Mutex::new(page)),
    )?;
    Ok((sysctl, generation))
}

impl Drop for MicroVm {
    fn drop(&mut self) {
        self.shutdown();
    }
}
