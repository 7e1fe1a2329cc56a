//! `MicroVm`: a prepared VM configured with a guest and its devices, and its run loop.

use crate::device_manager::DeviceManagerError;
use crate::event_loop::ConsoleInput;
use crate::exit::{VmExit, VmExitSignal};
use crate::layout::{NOXS_PAGE_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::legacy_devices::LegacyDevices;
use crate::loader::{self, LoaderError};
use crate::prepared::{PrepareError, PreparedVm};
use crate::vcpu::{BootEntry, Vcpu, VcpuError, VcpuThread};
use crate::vcpu_control::{ControlError, FirstEntryHook, VcpuControl};
use crate::virtio_devices::{attach_virtio_devices, subscribers, VirtioHandle, VirtioSetupError};
use crate::vm::Vm;
use crate::x86_64::boot_params::{write_pvh_start_info, write_zero_page, BootParamsError};
use crate::x86_64::mptable::{setup_mptable, MptableError};
use crate::x86_64::regs::EntryMode;
use event_manager::{EventManager, SubscriberOps};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_device::device_manager::IoManager;
use vm_memory::GuestMemoryMmap;
use wisp_api::VmConfig;
use wisp_devices::i8042::{I8042Error, I8042};
use wisp_devices::noxs_page::{NoxsEntry, NoxsPage, SysctlWord, NOXS_PAGE_SIZE};
use wisp_devices::serial::ConsoleOutput;

pub use crate::legacy_devices::Subscriber;

#[derive(Debug, thiserror::Error)]
pub enum MicroVmError {
    #[error("no boot source: a kernel image is required")]
    NoBootSource,
    #[error("the guest asks for {want} but this VM shell holds only {have}")]
    DoesNotFitShell { want: String, have: String },
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
    #[error(transparent)]
    Mptable(#[from] MptableError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Virtio(#[from] VirtioSetupError),
    #[error("VMM event loop failed: {0}")]
    EventLoop(#[source] event_manager::Error),
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
}

/// A handle for pausing, resuming and stopping a running VM from the VMM thread.
#[derive(Clone)]
pub struct VmController {
    control: VcpuControl,
    exit: VmExitSignal,
    sysctl: SysctlWord,
    i8042: Arc<Mutex<I8042>>,
}

impl VmController {
    pub fn pause(&self) -> Result<(), ControlError> {
        self.control.pause(Duration::from_secs(2))
    }

    pub fn resume(&self) {
        self.control.resume()
    }

    /// Ends the VM from the host side.
    pub fn stop(&self) {
        self.exit.send(VmExit::Stopped)
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
}

/// A configured microVM, ready to run.
pub struct MicroVm {
    // Field order is drop order: vCPUs and the VM fd go before the memory they map.
    vcpus: Vec<Vcpu>,
    threads: Vec<VcpuThread>,
    io: Arc<IoManager>,
    events: EventManager<Subscriber>,
    controller: VmController,
    panicked: Arc<AtomicBool>,
    virtio: Vec<VirtioHandle>,
    // Owned for as long as the VM runs: the vCPUs use the VM fd, KVM maps the memory.
    _vm: Vm,
    _mem: GuestMemoryMmap,
}

impl MicroVm {
    /// Prepares a VM of exactly the configured size and configures it.
    pub fn build(config: &VmConfig, opts: MicroVmOptions) -> Result<MicroVm, MicroVmError> {
        // Validate what needs no KVM first, so bad input fails fast and touches nothing.
        if config.boot_source.is_none() {
            return Err(MicroVmError::NoBootSource);
        }
        let mc = &config.machine_config;
        let shell = PreparedVm::prepare(mc.mem_size_mib, mc.vcpu_count)?;
        MicroVm::configure(shell, config, opts)
    }

    /// Loads the guest into a prepared VM, plugs the devices and sets up the boot vCPU.
    pub fn configure(
        shell: PreparedVm,
        config: &VmConfig,
        opts: MicroVmOptions,
    ) -> Result<MicroVm, MicroVmError> {
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
            watch,
            exit,
            mut events,
        } = legacy;

        let kernel = loader::load_kernel(&mem, ram_size, &boot.kernel_image_path)?;
        let initrd = match &boot.initrd_path {
            Some(path) => Some(loader::load_initrd(&mem, ram_size, path, &kernel)?),
            None => None,
        };
        let mut cmdline = loader::new_cmdline(boot.boot_args.as_deref().unwrap_or(""))?;

        if let Ok(mut com1) = serial.lock() {
            com1.set_output(ConsoleOutput::new(opts.console_out, watch.clone()));
        }
        match boot_timer.lock() {
            Ok(mut timer) => timer.arm(opts.start, opts.on_boot),
            Err(_) => return Err(MicroVmError::Poisoned("boot timer")),
        }

        let virtio = attach_virtio_devices(&mut devices, vm.fd(), &mem, &mut cmdline, config)?;

        // The noxs page lists every virtio device, so it is built after they are attached.
        let sysctl = SysctlWord::default();
        let listed: Vec<NoxsEntry> = devices
            .attached()
            .iter()
            .map(|d| NoxsEntry {
                device_type: d.device_type,
                irq: d.slot.irq,
                base: d.slot.base,
            })
            .collect();
        devices.add_mmio(
            "noxs page",
            NOXS_PAGE_START,
            NOXS_PAGE_SIZE,
            Arc::new(Mutex::new(NoxsPage::new(&listed, sysctl.clone()))),
        )?;

        let cmdline_size = loader::write_cmdline(&mem, &cmdline)?;
        let boot_info = match kernel.mode {
            EntryMode::Pvh => {
                write_pvh_start_info(&mem, ram_size, initrd)?;
                PVH_INFO_START
            }
            EntryMode::LongMode => {
                write_zero_page(&mem, ram_size, kernel.setup_header, cmdline_size, initrd)?;
                ZERO_PAGE_START
            }
        };
        setup_mptable(&mem, mc.vcpu_count)?;

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

        if let Some(input) = opts.console_in {
            events.add_subscriber(Arc::new(Mutex::new(ConsoleInput::new(input, serial))));
        }
        for sub in subscribers(&virtio) {
            events.add_subscriber(sub);
        }

        let control = VcpuControl::default();
        if let Some(hook) = opts.on_first_entry {
            control.on_first_entry(hook);
        }
        Ok(MicroVm {
            vcpus,
            threads,
            io: devices.into_io(),
            events,
            controller: VmController {
                control,
                exit,
                sysctl,
                i8042,
            },
            panicked: watch.panicked,
            virtio,
            _vm: vm,
            _mem: mem,
        })
    }

    /// The virtio devices, in attach order.
    pub fn virtio_devices(&self) -> &[VirtioHandle] {
        &self.virtio
    }

    /// Pause, resume and stop, for front ends (REST API, control page).
    pub fn controller(&self) -> VmController {
        self.controller.clone()
    }

    /// Adds a front end (or device backend) to the VMM thread's event loop.
    pub fn add_subscriber(&mut self, subscriber: Subscriber) {
        self.events.add_subscriber(subscriber);
    }

    /// Starts the vCPU threads (once); the guest begins to run.
    pub fn start(&mut self) -> Result<(), MicroVmError> {
        if self.vcpus.is_empty() {
            return Ok(());
        }
        // The threads are detached: the VMM process ends with its VM.
        for (vcpu, thread) in self.vcpus.drain(..).zip(self.threads.drain(..)) {
            thread.launch(
                vcpu,
                self.io.clone(),
                self.controller.exit.clone(),
                self.controller.control.clone(),
            )?;
        }
        Ok(())
    }

    /// Starts the vCPUs if needed and serves the VM on this thread until the guest stops.
    pub fn run(mut self) -> Result<VmExit, MicroVmError> {
        self.start()?;
        loop {
            self.events.run().map_err(MicroVmError::EventLoop)?;
            if let Some(exit) = self.controller.exit.take() {
                if exit == VmExit::Reset && self.panicked.load(Ordering::Acquire) {
                    return Ok(VmExit::GuestPanic);
                }
                return Ok(exit);
            }
        }
    }
}
