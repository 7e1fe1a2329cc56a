//! `MicroVm`: builds a VM from a `VmConfig` and runs it.

use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::event_loop::{ConsoleInput, ExitDoorbells};
use crate::exit::{VmExit, VmExitSignal};
use crate::layout::{BOOT_TIMER_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::loader::{self, LoaderError};
use crate::memory::{create_guest_memory, MemoryError};
use crate::vcpu::{BootEntry, Vcpu, VcpuError};
use crate::vm::{Vm, VmError};
use crate::x86_64::boot_params::{write_pvh_start_info, write_zero_page, BootParamsError};
use crate::x86_64::mptable::{setup_mptable, MptableError, MAX_CPUS};
use crate::x86_64::regs::EntryMode;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vm_device::device_manager::IoManager;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use wisp_api::VmConfig;
use wisp_devices::boot_timer::{BootTime, BootTimer};
use wisp_devices::i8042::{I8042, I8042_PORT, I8042_PORT_COUNT};
use wisp_devices::serial::{ConsoleOutput, SerialConsole, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT};
use wisp_devices::trigger::EventFdTrigger;

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum MicroVmError {
    #[error("no boot source: a kernel image is required")]
    NoBootSource,
    #[error("vcpu_count must be between 1 and {max}, not {got}")]
    VcpuCount { got: u8, max: u8 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vm(#[from] VmError),
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
    #[error("cannot create {what}: {source}")]
    EventFd {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot query KVM's supported CPUID: {0}")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("VMM event loop failed: {0}")]
    EventLoop(#[source] event_manager::Error),
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
}

/// A built microVM, ready to run.
pub struct MicroVm {
    // Field order is drop order: vCPUs and the VM fd go before the memory they map.
    vcpus: Vec<Vcpu>,
    io: Arc<IoManager>,
    events: EventManager<Subscriber>,
    exit: VmExitSignal,
    panicked: Arc<AtomicBool>,
    boot_time: BootTime,
    vm: Vm,
    mem: GuestMemoryMmap,
}

fn eventfd(what: &'static str) -> Result<EventFd, MicroVmError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(|source| MicroVmError::EventFd { what, source })
}

impl MicroVm {
    /// Creates the VM, loads the guest and plugs the devices. Nothing runs yet.
    pub fn build(config: &VmConfig, opts: MicroVmOptions) -> Result<MicroVm, MicroVmError> {
        let boot = config
            .boot_source
            .as_ref()
            .ok_or(MicroVmError::NoBootSource)?;
        let vcpu_count = config.machine_config.vcpu_count;
        if vcpu_count == 0 || vcpu_count > MAX_CPUS {
            return Err(MicroVmError::VcpuCount {
                got: vcpu_count,
                max: MAX_CPUS,
            });
        }
        let mem = create_guest_memory(config.machine_config.mem_size_mib)?;
        let vm = Vm::new()?;
        vm.register_memory(&mem)?;

        let kernel = loader::load_kernel(&mem, &boot.kernel_image_path)?;
        let initrd = match &boot.initrd_path {
            Some(path) => Some(loader::load_initrd(&mem, path, &kernel)?),
            None => None,
        };
        let cmdline = loader::new_cmdline(boot.boot_args.as_deref().unwrap_or(""))?;

        let mut devices = DeviceManager::new()?;
        let panicked = Arc::new(AtomicBool::new(false));
        let serial_irq = eventfd("the serial IRQ")?;
        vm.fd()
            .register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(|source| DeviceManagerError::Kvm {
                name: "serial",
                what: "KVM_IRQFD",
                source,
            })?;
        let serial = Arc::new(Mutex::new(SerialConsole::new(
            EventFdTrigger::new(serial_irq),
            ConsoleOutput::new(opts.console_out, panicked.clone()),
        )));
        devices.add_pio("serial", COM1_PORT, COM1_PORT_COUNT, serial.clone())?;
        let reset = eventfd("the i8042 reset doorbell")?;
        let reset_trigger = reset.try_clone().map_err(|source| MicroVmError::EventFd {
            what: "the i8042 reset doorbell",
            source,
        })?;
        devices.add_pio(
            "i8042",
            I8042_PORT,
            I8042_PORT_COUNT,
            Arc::new(Mutex::new(I8042::new(EventFdTrigger::new(reset_trigger)))),
        )?;
        let timer = BootTimer::new(opts.start, opts.on_boot);
        let boot_time = timer.boot_time();
        devices.add_mmio(
            "boot timer",
            BOOT_TIMER_START,
            0x1000,
            Arc::new(Mutex::new(timer)),
        )?;

        let cmdline_size = loader::write_cmdline(&mem, &cmdline)?;
        let boot_info = match kernel.mode {
            EntryMode::Pvh => {
                write_pvh_start_info(&mem, initrd)?;
                PVH_INFO_START
            }
            EntryMode::LongMode => {
                write_zero_page(&mem, kernel.setup_header, cmdline_size, initrd)?;
                ZERO_PAGE_START
            }
        };
        setup_mptable(&mem, vcpu_count)?;

        let supported = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(MicroVmError::Cpuid)?;
        let mut vcpus = Vec::with_capacity(usize::from(vcpu_count));
        for id in 0..vcpu_count {
            let vcpu = Vcpu::new(vm.fd(), id)?;
            let entry = (id == 0).then_some(BootEntry {
                mode: kernel.mode,
                entry: kernel.entry.0,
                boot_info,
            });
            vcpu.configure(&supported, vcpu_count, &mem, entry)?;
            vcpus.push(vcpu);
        }

        let exit = VmExitSignal::new().map_err(|source| MicroVmError::EventFd {
            what: "the VM exit doorbell",
            source,
        })?;
        let mut events: EventManager<Subscriber> =
            EventManager::new().map_err(MicroVmError::EventLoop)?;
        events.add_subscriber(Arc::new(Mutex::new(ExitDoorbells::new(
            exit.clone(),
            reset,
        ))));
        if let Some(input) = opts.console_in {
            events.add_subscriber(Arc::new(Mutex::new(ConsoleInput::new(input, serial))));
        }

        Ok(MicroVm {
            vcpus,
            io: devices.into_io(),
            events,
            exit,
            panicked,
            boot_time,
            vm,
            mem,
        })
    }

    /// The guest's RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The KVM VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// When the guest wrote the boot timer, in microseconds since the VMM started.
    pub fn boot_time(&self) -> BootTime {
        self.boot_time.clone()
    }

    /// Starts the vCPUs and serves the VM on this thread until the guest stops.
    pub fn run(mut self) -> Result<VmExit, MicroVmError> {
        for vcpu in self.vcpus.drain(..) {
            // The threads are detached: the VMM process ends with its VM.
            vcpu.start(self.io.clone(), self.exit.clone())?;
        }
        loop {
            self.events.run().map_err(MicroVmError::EventLoop)?;
            if let Some(exit) = self.exit.take() {
                if exit == VmExit::Reset && self.panicked.load(Ordering::Acquire) {
                    return Ok(VmExit::GuestPanic);
                }
                return Ok(exit);
            }
        }
    }
}
