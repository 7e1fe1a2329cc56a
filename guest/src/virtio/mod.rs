//! virtio drivers over the MMIO transport: device discovery, the transport, split virtqueues
//! and the block, net, rng, vsock and balloon devices. An independent implementation of virtio 1.2,
//! written from the specification, so that it checks Wisp's devices against the spec rather
//! than against themselves.
//!
//! Devices are found on the noxs device page when the VMM provides one (no probing), else
//! from the `virtio_mmio.device=<size>@<base>:<irq>` words of the command line (the Linux
//! convention, also used by QEMU's microvm), probing each slot's DeviceID.

pub mod balloon;
pub mod blk;
pub mod blk_bench;
pub mod dma;
pub mod flood;
pub mod mmio;
pub mod net;
pub mod net_bench;
pub mod queue;
pub mod rng;
pub mod vsock;
pub mod vsock_bench;

use crate::noxs::DevicePage;
use crate::serial::println;
use core::fmt;
use mmio::MmioTransport;
use queue::Virtqueue;

/// virtio device IDs (virtio 1.2 §5).
pub const DEVICE_NET: u32 = 1;
pub const DEVICE_BLOCK: u32 = 2;
pub const DEVICE_RNG: u32 = 4;
pub const DEVICE_BALLOON: u32 = 5;
pub const DEVICE_VSOCK: u32 = 19;

/// The identity-mapped, uncached window where the boot stub lets MMIO live (`boot.rs`).
pub const MMIO_WINDOW_START: u64 = wisp_abi::memory_map::MMIO_GAP_START;
pub const MMIO_WINDOW_END: u64 = wisp_abi::memory_map::MMIO_GAP_END;

/// Most devices remembered from the command line (more are ignored).
const MAX_DEVICES: usize = 32;
const CMDLINE_PREFIX: &[u8] = b"virtio_mmio.device=";

/// What went wrong talking to a virtio device.
#[derive(Debug)]
pub enum VirtioError {
    /// No device of this type was listed.
    NotFound { device_type: u32 },
    /// A listed base is outside the MMIO window the unikernel maps.
    BaseOutsideMmioWindow { base: u64 },
    /// MagicValue is not "virt".
    BadMagic { base: u64, magic: u32 },
    /// Transport version other than 2 (1 is legacy, unsupported by this driver).
    UnsupportedVersion { base: u64, version: u32 },
    /// DeviceID 0: an empty slot.
    NoDevice { base: u64 },
    /// The noxs page listed a type the slot does not have.
    WrongDevice { base: u64, listed: u32, found: u32 },
    /// Status did not read back 0 after a reset.
    ResetTimeout,
    /// The device does not offer VIRTIO_F_VERSION_1.
    NoVersion1 { offered: u64 },
    /// The device cleared FEATURES_OK.
    FeaturesRejected { accepted: u64 },
    /// QueueReady was already set before we configured the queue.
    QueueInUse { index: u16 },
    /// QueueNumMax is 0: the queue does not exist.
    QueueMissing { index: u16 },
    /// The device set DEVICE_NEEDS_RESET.
    DeviceNeedsReset { status: u32 },
    /// ConfigGeneration kept changing while a field was read.
    ConfigUnstable,
    /// The DMA arena is exhausted.
    OutOfDma,
    /// A request with no buffers.
    EmptyRequest,
    /// No free descriptors for a request.
    QueueFull { index: u16 },
    /// The used index moved further than the ring has entries.
    BadUsedIndex { index: u16, used: u16, seen: u16 },
    /// The used ring named a descriptor that is not a request in flight.
    BadUsedId { index: u16, id: u32 },
    /// The device did not finish a request in time.
    Timeout { index: u16 },
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { device_type } => {
                write!(f, "no virtio device of type {device_type} listed")
            }
            Self::BaseOutsideMmioWindow { base } => write!(
                f,
                "virtio-mmio base {base:#x} is outside the MMIO window \
                 {MMIO_WINDOW_START:#x}..{MMIO_WINDOW_END:#x}"
            ),
            Self::BadMagic { base, magic } => {
                write!(f, "no virtio-mmio device at {base:#x}: magic is {magic:#x}")
            }
            Self::UnsupportedVersion { base, version } => write!(
                f,
                "virtio-mmio device at {base:#x}: transport version {version} is not supported \
                 (only 2, modern; QEMU needs -global virtio-mmio.force-legacy=false)"
            ),
            Self::NoDevice { base } => write!(f, "virtio-mmio slot at {base:#x} is empty"),
            Self::WrongDevice {
                base,
                listed,
                found,
            } => write!(
                f,
                "virtio-mmio device at {base:#x} has type {found}, the noxs page says {listed}"
            ),
            Self::ResetTimeout => write!(f, "device status did not return to 0 after a reset"),
            Self::NoVersion1 { offered } => {
                write!(
                    f,
                    "device does not offer VIRTIO_F_VERSION_1 (features {offered:#x})"
                )
            }
            Self::FeaturesRejected { accepted } => {
                write!(
                    f,
                    "device rejected features {accepted:#x} (FEATURES_OK cleared)"
                )
            }
            Self::QueueInUse { index } => write!(f, "queue {index} is already ready"),
            Self::QueueMissing { index } => write!(f, "queue {index} does not exist"),
            Self::DeviceNeedsReset { status } => {
                write!(f, "device needs a reset (status {status:#x})")
            }
            Self::ConfigUnstable => write!(f, "configuration generation kept changing"),
            Self::OutOfDma => write!(f, "out of DMA memory"),
            Self::EmptyRequest => write!(f, "request without buffers"),
            Self::QueueFull { index } => write!(f, "queue {index} has no free descriptors"),
            Self::BadUsedIndex { index, used, seen } => write!(
                f,
                "queue {index}: used index {used} is more than a ring ahead of {seen}"
            ),
            Self::BadUsedId { index, id } => {
                write!(
                    f,
                    "queue {index}: used ring names descriptor {id}, not a request in flight"
                )
            }
            Self::Timeout { index } => write!(f, "queue {index}: the device did not answer"),
        }
    }
}

/// One virtio-mmio device slot as listed by the noxs page or the command line.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// virtio device ID from the noxs page; 0 when it came from the command line (unknown
    /// until probed).
    pub device_type: u32,
    pub base: u64,
    pub irq: u32,
}

/// Where the device list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    NoxsPage,
    Cmdline,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoxsPage => "noxs page",
            Self::Cmdline => "command line",
        })
    }
}

/// The VM's virtio-mmio slots.
pub struct Slots {
    slots: [Slot; MAX_DEVICES],
    len: usize,
    source: Source,
}

impl Slots {
    /// The slots from the noxs page when it is valid, else from the command line.
    pub fn discover(cmdline: &[u8]) -> Self {
        let mut found = Slots {
            slots: [Slot {
                device_type: 0,
                base: 0,
                irq: 0,
            }; MAX_DEVICES],
            len: 0,
            source: Source::NoxsPage,
        };
        if let Ok(page) = DevicePage::read() {
            for entry in page.entries() {
                found.push(Slot {
                    device_type: entry.device_type,
                    base: entry.mmio_base,
                    irq: entry.irq,
                });
            }
            return found;
        }
        found.source = Source::Cmdline;
        for word in cmdline.split(|byte| byte.is_ascii_whitespace()) {
            if let Some(slot) = parse_cmdline_device(word) {
                found.push(slot);
            }
        }
        found
    }

    /// The `virtio` command: every listed slot and what a probe finds there.
    pub fn print(&self) {
        println!("virtio: {} slots (from the {})", self.len, self.source);
        for slot in &self.slots[..self.len] {
            match MmioTransport::probe(slot.base) {
                Ok((_, device_type)) => println!(
                    "virtio: base={:#x} irq={} type={device_type}",
                    slot.base, slot.irq
                ),
                Err(err) => println!("virtio: base={:#x} irq={}: {err}", slot.base, slot.irq),
            }
        }
    }

    fn push(&mut self, slot: Slot) {
        if let Some(free) = self.slots.get_mut(self.len) {
            *free = slot;
            self.len += 1;
        }
    }

    /// Opens the first device of `device_type`: probes it and negotiates `wanted` features
    /// (§3.1.1 steps 1-6), and prints `<name>: device at <base> irq <irq> (<source>)`.
    /// Returns the transport and the negotiated features; the caller sets up its queues with
    /// [`setup_queue`] and then calls `driver_ok`.
    pub fn open(
        &self,
        name: &str,
        device_type: u32,
        wanted: u64,
    ) -> Result<(MmioTransport, u64), VirtioError> {
        // Remember why the first unusable slot was unusable, to say so if nothing matches.
        let mut unusable = None;
        for slot in &self.slots[..self.len] {
            if self.source == Source::NoxsPage && slot.device_type != device_type {
                continue;
            }
            match MmioTransport::probe(slot.base) {
                Ok((mut transport, found)) if found == device_type => {
                    println!(
                        "{name}: device at {:#x} irq {} (from the {})",
                        slot.base, slot.irq, self.source
                    );
                    let features = transport.negotiate(wanted)?;
                    return Ok((transport, features));
                }
                Ok((_, found)) if self.source == Source::NoxsPage => {
                    unusable.get_or_insert(VirtioError::WrongDevice {
                        base: slot.base,
                        listed: slot.device_type,
                        found,
                    });
                }
                Ok(_) | Err(VirtioError::NoDevice { .. }) => {}
                Err(err) => {
                    unusable.get_or_insert(err);
                }
            }
        }
        Err(unusable.unwrap_or(VirtioError::NotFound { device_type }))
    }
}

/// Allocates queue `index` and hands it to the device (§4.2.3.2).
pub fn setup_queue(transport: &MmioTransport, index: u16) -> Result<Virtqueue, VirtioError> {
    let max = transport.queue_max(index)?;
    let queue = Virtqueue::new(index, max)?;
    transport.activate_queue(&queue);
    Ok(queue)
}

/// Parses `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` (Linux
/// `drivers/virtio/virtio_mmio.c`, `vm_cmdline_set`): size and base are `memparse` numbers
/// (decimal, `0x` hex or leading-0 octal, optional K/M/G suffix), irq is a number.
pub fn parse_cmdline_device(word: &[u8]) -> Option<Slot> {
    let spec = word.strip_prefix(CMDLINE_PREFIX)?;
    let (size, rest) = parse_memparse(spec)?;
    let rest = rest.strip_prefix(b"@")?;
    let (base, rest) = parse_memparse(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (irq, rest) = parse_number(rest)?;
    if size == 0 || !(rest.is_empty() || rest.starts_with(b":")) {
        return None;
    }
    Some(Slot {
        device_type: 0,
        base,
        irq: u32::try_from(irq).ok()?,
    })
}

/// A number with an optional binary size suffix, and the text after it.
fn parse_memparse(text: &[u8]) -> Option<(u64, &[u8])> {
    let (value, rest) = parse_number(text)?;
    let shift = match rest.first().map(u8::to_ascii_uppercase) {
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        _ => return Some((value, rest)),
    };
    Some((value.checked_mul(1 << shift)?, &rest[1..]))
}

/// An unsigned number in C notation (`0x` hex, leading-0 octal, else decimal), and the text
/// after it. `None` without digits or on overflow.
fn parse_number(text: &[u8]) -> Option<(u64, &[u8])> {
    let (radix, digits) = if let Some(hex) = text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))
    {
        (16, hex)
    } else if text.len() > 1 && text[0] == b'0' && text[1].is_ascii_digit() {
        (8, &text[1..])
    } else {
        (10, text)
    };
    let count = digits
        .iter()
        .take_while(|byte| (**byte as char).is_digit(radix))
        .count();
    if count == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for byte in &digits[..count] {
        let digit = (*byte as char).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    Some((value, &digits[count..]))
}
