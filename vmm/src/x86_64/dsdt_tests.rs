//! The DSDT read back as a guest would: a small AML reader for the subset Wisp writes walks
//! the table byte by byte (every length must add up), and ACPICA's disassembler (`iasl -d`,
//! Debian's acpica-tools) must read the same table without complaint and show each
//! virtio-mmio device as Linux's driver expects it.

#![allow(clippy::unwrap_used)]

use super::acpi::{setup_acpi, VIRTIO_MMIO_HID};
use super::aml::{op, resource};
use crate::device_manager::MmioSlot;
use crate::layout::{IRQ_FIRST_DEVICE, MAX_VIRTIO_DEVICES, MMIO_SLOT_SIZE, VIRTIO_MMIO_START};
use crate::memory::create_guest_memory;
use std::collections::BTreeMap;
use std::process::Command;
use vm_memory::{Bytes, GuestAddress};
use wisp_abi::acpi::PVPANIC_PORT;

#[derive(Debug, PartialEq)]
enum Object {
    Int(u64),
    Str(String),
    Buf(Vec<u8>),
    Pkg(Vec<Object>),
}

/// Every `Name` in the table by its full path (`\_SB_.VR00._HID`), and every device path.
#[derive(Default)]
struct Namespace {
    names: BTreeMap<String, Object>,
    devices: Vec<String>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes[self.at];
        self.at += 1;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        s
    }

    fn le(&mut self, n: usize) -> u64 {
        self.take(n)
            .iter()
            .rev()
            .fold(0, |v, b| (v << 8) | u64::from(*b))
    }

    fn seg(&mut self) -> String {
        String::from_utf8(self.take(4).to_vec()).unwrap()
    }

    /// PkgLength: returns where the package ends.
    fn pkg_end(&mut self) -> usize {
        let start = self.at;
        let lead = self.byte();
        let extra = usize::from(lead >> 6);
        let len = if extra == 0 {
            usize::from(lead & 0x3f)
        } else {
            (0..extra).fold(usize::from(lead & 0xf), |v, i| {
                v | usize::from(self.byte()) << (4 + 8 * i)
            })
        };
        start + len
    }

    fn object(&mut self) -> Object {
        match self.byte() {
            op::ZERO => Object::Int(0),
            op::ONE => Object::Int(1),
            op::BYTE_PREFIX => Object::Int(self.le(1)),
            op::WORD_PREFIX => Object::Int(self.le(2)),
            op::DWORD_PREFIX => Object::Int(self.le(4)),
            op::QWORD_PREFIX => Object::Int(self.le(8)),
            op::STRING_PREFIX => {
                let end = self.bytes[self.at..].iter().position(|b| *b == 0).unwrap();
                let s = String::from_utf8(self.take(end).to_vec()).unwrap();
                assert_eq!(self.byte(), 0);
                Object::Str(s)
            }
            op::BUFFER => {
                let end = self.pkg_end();
                let Object::Int(len) = self.object() else {
                    panic!("buffer size is not an integer")
                };
                let data = self.take(len as usize).to_vec();
                assert_eq!(self.at, end, "buffer length and PkgLength disagree");
                Object::Buf(data)
            }
            op::PACKAGE => {
                let end = self.pkg_end();
                let count = self.byte();
                let items: Vec<Object> = (0..count).map(|_| self.object()).collect();
                assert_eq!(self.at, end, "package elements and PkgLength disagree");
                Object::Pkg(items)
            }
            other => panic!("unexpected AML byte {other:#04x} at {}", self.at - 1),
        }
    }

    /// The terms up to `end`, in scope `path`.
    fn terms(&mut self, end: usize, path: &str, ns: &mut Namespace) {
        while self.at < end {
            match self.byte() {
                op::NAME => {
                    let seg = self.seg();
                    let object = self.object();
                    let full = if path.is_empty() {
                        format!("\\{seg}")
                    } else {
                        format!("{path}.{seg}")
                    };
                    assert!(
                        ns.names.insert(full.clone(), object).is_none(),
                        "{full} twice"
                    );
                }
                op::SCOPE => {
                    let scope_end = self.pkg_end();
                    assert_eq!(self.byte(), op::ROOT_CHAR);
                    let scope = format!("\\{}", self.seg());
                    self.terms(scope_end, &scope, ns);
                }
                op::EXT_PREFIX => {
                    assert_eq!(self.byte(), op::DEVICE);
                    let device_end = self.pkg_end();
                    let device = format!("{path}.{}", self.seg());
                    ns.devices.push(device.clone());
                    self.terms(device_end, &device, ns);
                }
                other => panic!("unexpected AML term {other:#04x} at {}", self.at - 1),
            }
            assert!(self.at <= end, "a term runs past its scope");
        }
    }
}

/// The DSDT `setup_acpi` writes for `virtio`, found the way Linux finds it.
fn dsdt_for(virtio: &[MmioSlot]) -> Vec<u8> {
    let mem = create_guest_memory(16).unwrap();
    let rsdp = setup_acpi(&mem, 2, virtio).unwrap();
    let u64_at = |addr: u64| mem.read_obj::<u64>(GuestAddress(addr)).unwrap();
    let u32_at = |addr: u64| mem.read_obj::<u32>(GuestAddress(addr)).unwrap();
    let xsdt = u64_at(rsdp + 24);
    let fadt = u64_at(xsdt + 36);
    let dsdt = u64_at(fadt + 140);
    let mut table = vec![0u8; u32_at(dsdt + 4) as usize];
    mem.read_slice(&mut table, GuestAddress(dsdt)).unwrap();
    assert_eq!(&table[..4], b"DSDT");
    assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    table
}

fn namespace(dsdt: &[u8]) -> Namespace {
    let mut reader = Reader {
        bytes: dsdt,
        at: 36,
    };
    let mut ns = Namespace::default();
    reader.terms(dsdt.len(), "", &mut ns);
    assert_eq!(reader.at, dsdt.len());
    ns
}

/// Every slot the device manager can hand out (IRQ 5..23).
fn all_slots() -> Vec<MmioSlot> {
    (0..MAX_VIRTIO_DEVICES)
        .map(|i| MmioSlot {
            base: VIRTIO_MMIO_START + i as u64 * MMIO_SLOT_SIZE,
            irq: IRQ_FIRST_DEVICE + i as u32,
        })
        .collect()
}

#[test]
fn dsdt_declares_every_virtio_mmio_device_with_its_window_and_gsi() {
    let slots = all_slots();
    let ns = namespace(&dsdt_for(&slots));
    let virtio: Vec<&String> = ns
        .devices
        .iter()
        .filter(|d| d.starts_with("\\_SB_.VR"))
        .collect();
    assert_eq!(virtio.len(), MAX_VIRTIO_DEVICES, "{:?}", ns.devices);
    for (i, (device, slot)) in virtio.iter().zip(&slots).enumerate() {
        assert_eq!(**device, format!("\\_SB_.VR{i:02X}"));
        let name = |n: &str| ns.names.get(&format!("{device}.{n}")).unwrap();
        assert_eq!(name("_HID"), &Object::Str(VIRTIO_MMIO_HID.into()));
        assert_eq!(name("_UID"), &Object::Int(i as u64));
        let Object::Buf(crs) = name("_CRS") else {
            panic!("{device}._CRS is not a buffer")
        };
        // Memory32Fixed (ReadWrite, base, 4 KiB), then Interrupt (consumer, edge, active
        // high, exclusive) { gsi }, then the end tag: nothing else.
        assert_eq!(crs.len(), 12 + 9 + 2, "{device}: {crs:02x?}");
        assert_eq!(crs[..4], [resource::MEMORY32_FIXED, 9, 0, 1]);
        assert_eq!(
            u32::from_le_bytes(crs[4..8].try_into().unwrap()) as u64,
            slot.base
        );
        assert_eq!(
            u32::from_le_bytes(crs[8..12].try_into().unwrap()) as u64,
            MMIO_SLOT_SIZE
        );
        assert_eq!(crs[12..17], [resource::EXTENDED_INTERRUPT, 6, 0, 0b0011, 1]);
        assert_eq!(
            u32::from_le_bytes(crs[17..21].try_into().unwrap()),
            slot.irq
        );
        assert_eq!(crs[21..], [resource::END_TAG, 0]);
    }
    assert_eq!(virtio.last().unwrap().as_str(), "\\_SB_.VR12");
    assert_eq!(slots.last().unwrap().irq, 23);
    // The lifecycle devices are still there.
    assert_eq!(
        ns.names.get("\\_S5_"),
        Some(&Object::Pkg(vec![Object::Int(5), Object::Int(0)]))
    );
    assert_eq!(
        ns.names.get("\\_SB_.PEVT._HID"),
        Some(&Object::Str("QEMU0001".into()))
    );
}

#[test]
fn dsdt_without_virtio_devices_declares_none() {
    let ns = namespace(&dsdt_for(&[]));
    assert_eq!(ns.devices, ["\\_SB_.PEVT"]);
}

/// ACPICA's disassembler reads the table (checksum, lengths, AML) and prints each device
/// in ASL; what it prints is what a guest's ACPI interpreter sees.
#[test]
fn acpica_disassembles_the_dsdt_with_every_virtio_device() {
    let slots = all_slots();
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/wisp-dsdt-").unwrap();
    let dat = dir.as_path().join("dsdt.dat");
    std::fs::write(&dat, dsdt_for(&slots)).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&dat)
        .current_dir(dir.as_path())
        .output()
        .expect("run iasl (Debian acpica-tools: scripts/install-deps.sh)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d failed: {log}");
    assert!(!log.contains("Error") && !log.contains("Warning"), "{log}");
    let dsl = std::fs::read_to_string(dir.as_path().join("dsdt.dsl")).unwrap();
    // Compare ASL with its whitespace and comments squeezed out.
    let asl: String = dsl
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<String>()
        .split_whitespace()
        .collect();
    for (i, slot) in slots.iter().enumerate() {
        let uid = match i {
            0 => "Zero".to_string(),
            1 => "One".to_string(),
            n => format!("0x{n:02X}"),
        };
        let expected = format!(
            "Device(VR{i:02X}){{Name(_HID,\"{VIRTIO_MMIO_HID}\")Name(_UID,{uid})\
             Name(_CRS,ResourceTemplate(){{Memory32Fixed(ReadWrite,0x{base:08X},0x00001000,)\
             Interrupt(ResourceConsumer,Edge,ActiveHigh,Exclusive,,,){{0x{irq:08X},}}}})}}",
            base = slot.base,
            irq = slot.irq,
        );
        assert!(asl.contains(&expected), "no {expected} in\n{dsl}");
    }
    let pvpanic = format!("IO(Decode16,0x{PVPANIC_PORT:04X},0x{PVPANIC_PORT:04X},0x01,0x01,)");
    assert!(asl.contains(&pvpanic), "no {pvpanic} in\n{dsl}");
    assert!(asl.contains("Name(_S5,Package(0x02){0x05,Zero})"), "{dsl}");
}
