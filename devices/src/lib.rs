//! Devices of a Wisp microVM: legacy PC devices (serial, i8042, boot timer), the lifecycle
//! devices ACPI describes (power-management registers, pvpanic) and virtio over MMIO.
//!
//! Devices know nothing of KVM: they are driven through `vm-device`'s `MutDeviceMmio` /
//! `MutDevicePio` traits, raise interrupts by writing an `EventFd` (the VMM wires it to an
//! irqfd) and receive queue notifications as `EventFd`s (the VMM wires them to ioeventfds).

pub mod acpi_pm;
pub mod boot_timer;
pub mod i8042;
pub mod log_limiter;
pub mod noxs_page;
pub mod pvpanic;
pub mod rate_limiter;
pub mod serial;
pub mod trigger;
pub mod virtio;
