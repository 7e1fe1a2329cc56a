//! The devices every microVM has — COM1 (IRQ 4 as an irqfd), the i8042 (reset, and a keyboard
//! on IRQ 1 for Ctrl-Alt-Del), the boot timer, and the lifecycle devices the ACPI tables
//! describe (power-management registers, pvpanic) — and the VMM loop's exit doorbells. None
//! depends on the guest's configuration, so a
//! prepared shell makes them ahead of time; create only points the console and the boot timer
//! at their consumers.

use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::event_loop::{Doorbell, ExitDoorbells};
use crate::exit::{VmExit, VmExitSignal};
use crate::layout::BOOT_TIMER_START;
use event_manager::MutEventSubscriber;
use kvm_ioctls::VmFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;
use wisp_abi::acpi::{PM1_EVT_PORT, PM_PORT_COUNT, PVPANIC_PORT};
use wisp_devices::acpi_pm::AcpiPm;
use wisp_devices::boot_timer::BootTimer;
use wisp_devices::i8042::{I8042, I8042_KBD_IRQ, I8042_PORT, I8042_PORT_COUNT};
use wisp_devices::pvpanic::PvPanic;
use wisp_devices::serial::{
    ConsoleOutput, ConsoleWatch, SerialConsole, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT,
};
use wisp_devices::trigger::EventFdTrigger;

/// What the VMM thread's event loop runs.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum LegacyDeviceError {
    #[error("cannot create {what}: {source}")]
    EventFd {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
}

fn eventfd(what: &'static str) -> Result<EventFd, LegacyDeviceError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(|source| LegacyDeviceError::EventFd { what, source })
}

/// A doorbell meaning `exit`, and the trigger for the device that rings it.
fn doorbell(
    what: &'static str,
    exit: VmExit,
) -> Result<(Doorbell, EventFdTrigger), LegacyDeviceError> {
    let fd = eventfd(what)?;
    let trigger = fd
        .try_clone()
        .map_err(|source| LegacyDeviceError::EventFd { what, source })?;
    Ok((Doorbell { fd, exit }, EventFdTrigger::new(trigger)))
}

/// An eventfd KVM turns into an edge on interrupt line `gsi` (an irqfd) for device `name`.
fn irqfd(vm: &VmFd, name: &'static str, gsi: u32) -> Result<EventFd, LegacyDeviceError> {
    let evt = eventfd("an interrupt eventfd")?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| DeviceManagerError::Kvm {
            name,
            what: "KVM_IRQFD",
            source,
        })?;
    Ok(evt)
}

/// The legacy devices, the VMM loop and how the VM's end is signalled.
pub struct LegacyDevices {
    pub serial: Arc<Mutex<SerialConsole>>,
    /// The i8042, for injecting keys (`SendCtrlAltDel`).
    pub i8042: Arc<Mutex<I8042>>,
    pub boot_timer: Arc<Mutex<BootTimer>>,
    /// The ACPI power-management registers (their state goes into a snapshot).
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
    /// What the console watches for (panic, halt) when asked to (legacy guests); its
    /// `panicked` flag is also set by pvpanic.
    pub watch: ConsoleWatch,
    pub exit: VmExitSignal,
    /// Wakes the VMM loop on an exit; added to the loop when the VM starts.
    pub doorbells: Subscriber,
}

impl LegacyDevices {
    /// Creates the devices, puts them on `devices`' buses and wires their IRQs into KVM.
    pub fn new(vm: &VmFd, devices: &mut DeviceManager) -> Result<Self, LegacyDeviceError> {
        let watch = ConsoleWatch {
            panicked: Arc::new(AtomicBool::new(false)),
            halted: Arc::new(eventfd("the guest halt doorbell")?),
        };
        let serial_irq = irqfd(vm, "serial", COM1_IRQ)?;
        // Output goes nowhere until the guest's console is known (`SerialConsole::set_output`).
        let serial = Arc::new(Mutex::new(SerialConsole::new(
            EventFdTrigger::new(serial_irq),
            ConsoleOutput::new(Box::new(std::io::sink()), None),
        )));
        devices.add_pio("serial", COM1_PORT, COM1_PORT_COUNT, serial.clone())?;
        let (i8042_reset, reset_trigger) = doorbell("the i8042 reset doorbell", VmExit::Reset)?;
        let kbd_irq = irqfd(vm, "i8042", I8042_KBD_IRQ)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(
            reset_trigger,
            Some(EventFdTrigger::new(kbd_irq)),
        )));
        devices.add_pio("i8042", I8042_PORT, I8042_PORT_COUNT, i8042.clone())?;
        let boot_timer = Arc::new(Mutex::new(BootTimer::new(Instant::now(), None)));
        devices.add_mmio("boot timer", BOOT_TIMER_START, 0x1000, boot_timer.clone())?;

        // What the ACPI tables (x86_64/acpi.rs) describe: power-off and reset registers, and
        // pvpanic, which sets `panicked` before it rings so a reset after it is a panic too.
        let (power_off, power_off_trigger) =
            doorbell("the ACPI power-off doorbell", VmExit::PowerOff)?;
        let (acpi_reset, acpi_reset_trigger) = doorbell("the ACPI reset doorbell", VmExit::Reset)?;
        let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(
            power_off_trigger,
            acpi_reset_trigger,
        )));
        devices.add_pio(
            "ACPI power management",
            PM1_EVT_PORT,
            PM_PORT_COUNT,
            acpi_pm.clone(),
        )?;
        let (panic, panic_trigger) = doorbell("the pvpanic doorbell", VmExit::GuestPanic)?;
        let pvpanic = PvPanic::new(watch.panicked.clone(), panic_trigger);
        devices.add_pio("pvpanic", PVPANIC_PORT, 1, Arc::new(Mutex::new(pvpanic)))?;

        let exit = VmExitSignal::new().map_err(|source| LegacyDeviceError::EventFd {
            what: "the VM exit doorbell",
            source,
        })?;
        let halted = watch
            .halted
            .try_clone()
            .map_err(|source| LegacyDeviceError::EventFd {
                what: "the guest halt doorbell",
                source,
            })?;
        let bells = vec![
            i8042_reset,
            power_off,
            acpi_reset,
            panic,
            Doorbell {
                fd: halted,
                exit: VmExit::Halted,
            },
        ];
        let doorbells: Subscriber = Arc::new(Mutex::new(ExitDoorbells::new(exit.clone(), bells)));
        Ok(LegacyDevices {
            serial,
            i8042,
            boot_timer,
            acpi_pm,
            watch,
            exit,
            doorbells,
        })
    }
}
