//! The few AML encodings (ACPI 6.5 §20) and resource descriptors (§6.4) Wisp's DSDT is made
//! of: names, strings, integers, packages, buffers, devices and scopes, and the `_CRS`
//! descriptors for an I/O port, a fixed 32-bit memory window and an interrupt. Each function
//! returns the encoded bytes; acpi.rs puts them together.

/// AML opcodes and prefixes (ACPI 6.5 §20.2).
pub mod op {
    pub const ZERO: u8 = 0x00;
    pub const ONE: u8 = 0x01;
    pub const NAME: u8 = 0x08;
    pub const BYTE_PREFIX: u8 = 0x0a;
    pub const WORD_PREFIX: u8 = 0x0b;
    pub const DWORD_PREFIX: u8 = 0x0c;
    pub const STRING_PREFIX: u8 = 0x0d;
    pub const QWORD_PREFIX: u8 = 0x0e;
    pub const SCOPE: u8 = 0x10;
    pub const BUFFER: u8 = 0x11;
    pub const PACKAGE: u8 = 0x12;
    pub const EXT_PREFIX: u8 = 0x5b;
    pub const DEVICE: u8 = 0x82;
    pub const ROOT_CHAR: u8 = 0x5c;
}

/// Resource descriptor tags (ACPI 6.5 §6.4.2, §6.4.3).
pub mod resource {
    /// Small: I/O port (decodes 16 bits), end tag.
    pub const IO_PORT: u8 = 0x47;
    pub const IO_DECODE_16: u8 = 1;
    pub const END_TAG: u8 = 0x79;
    /// Large: fixed-location 32-bit memory range (§6.4.3.4), 9 bytes of data.
    pub const MEMORY32_FIXED: u8 = 0x86;
    pub const MEMORY32_FIXED_LEN: u16 = 9;
    pub const MEMORY_READ_WRITE: u8 = 1;
    /// Large: extended interrupt (§6.4.3.6), 6 bytes of data for one interrupt.
    pub const EXTENDED_INTERRUPT: u8 = 0x89;
    pub const EXTENDED_INTERRUPT_LEN: u16 = 6;
    /// Interrupt flags: bit 0 consumer, bit 1 edge (HE), bit 2 active low (LL), bit 3 shared.
    pub const INTERRUPT_CONSUMER: u8 = 1 << 0;
    pub const INTERRUPT_EDGE: u8 = 1 << 1;
}

/// PkgLength (ACPI 6.5 §20.2.4) for `body` bytes that follow it: the encoding counts itself.
/// One byte up to 63, then a lead byte with the low nibble and 1–3 more bytes.
pub fn pkg_length(body: usize) -> Vec<u8> {
    if body + 1 < 0x40 {
        return vec![(body + 1) as u8];
    }
    let (extra, total) = (1..=3)
        .map(|extra| (extra, body + 1 + extra))
        .find(|(extra, total)| *total < 1 << (4 + 8 * extra))
        .unwrap_or((3, body + 4));
    let mut out = vec![((extra as u8) << 6) | (total & 0xf) as u8];
    out.extend((0..extra).map(|i| (total >> (4 + 8 * i)) as u8));
    out
}

/// `op PkgLength body`.
pub fn with_length(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = op.to_vec();
    out.extend(pkg_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// `Name (seg, object)`.
pub fn name(seg: &[u8; 4], object: &[u8]) -> Vec<u8> {
    let mut out = vec![op::NAME];
    out.extend_from_slice(seg);
    out.extend_from_slice(object);
    out
}

/// A string constant.
pub fn string(s: &str) -> Vec<u8> {
    let mut out = vec![op::STRING_PREFIX];
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out
}

/// An integer constant in its shortest encoding.
pub fn integer(n: u64) -> Vec<u8> {
    match n {
        0 => vec![op::ZERO],
        1 => vec![op::ONE],
        n if n <= 0xff => vec![op::BYTE_PREFIX, n as u8],
        n if n <= 0xffff => [&[op::WORD_PREFIX][..], &(n as u16).to_le_bytes()].concat(),
        n if n <= 0xffff_ffff => [&[op::DWORD_PREFIX][..], &(n as u32).to_le_bytes()].concat(),
        n => [&[op::QWORD_PREFIX][..], &n.to_le_bytes()].concat(),
    }
}

/// `Package (n) { elements }`; `elements` holds `count` encoded objects.
pub fn package(count: u8, elements: &[u8]) -> Vec<u8> {
    let mut body = vec![count];
    body.extend_from_slice(elements);
    with_length(&[op::PACKAGE], &body)
}

/// `Buffer () { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    with_length(&[op::BUFFER], &body)
}

/// `Device (seg) { body }`.
pub fn device(seg: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut all = seg.to_vec();
    all.extend_from_slice(body);
    with_length(&[op::EXT_PREFIX, op::DEVICE], &all)
}

/// `Scope (\seg) { body }`, `seg` under the root.
pub fn root_scope(seg: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut all = vec![op::ROOT_CHAR];
    all.extend_from_slice(seg);
    all.extend_from_slice(body);
    with_length(&[op::SCOPE], &all)
}

/// `ResourceTemplate () { descriptors }`: a buffer ending in the end tag (checksum 0, "treat
/// as correct").
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes: Vec<u8> = descriptors.concat();
    bytes.extend_from_slice(&[resource::END_TAG, 0]);
    buffer(&bytes)
}

/// `IO (Decode16, port, port, 1, 1)`: one I/O port.
pub fn io_port(port: u16) -> Vec<u8> {
    let [lo, hi] = port.to_le_bytes();
    vec![
        resource::IO_PORT,
        resource::IO_DECODE_16,
        lo,
        hi,
        lo,
        hi,
        1,
        1,
    ]
}

/// `Memory32Fixed (ReadWrite, base, len)`.
pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
    let mut out = vec![resource::MEMORY32_FIXED];
    out.extend_from_slice(&resource::MEMORY32_FIXED_LEN.to_le_bytes());
    out.push(resource::MEMORY_READ_WRITE);
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// `Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }`: how a virtio-mmio
/// device's irqfd drives its IOAPIC pin.
pub fn edge_interrupt(gsi: u32) -> Vec<u8> {
    let mut out = vec![resource::EXTENDED_INTERRUPT];
    out.extend_from_slice(&resource::EXTENDED_INTERRUPT_LEN.to_le_bytes());
    out.push(resource::INTERRUPT_CONSUMER | resource::INTERRUPT_EDGE);
    out.push(1); // one interrupt number follows
    out.extend_from_slice(&gsi.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_counts_itself_and_grows_past_63_bytes() {
        assert_eq!(pkg_length(0), [1]);
        assert_eq!(pkg_length(62), [63]);
        // 63 bytes of body + 2 bytes of length = 65 = 0x41: lead 0x41 (one more byte, low
        // nibble 1), then 0x04.
        assert_eq!(pkg_length(63), [0x41, 0x04]);
        assert_eq!(pkg_length(4000), [0x42, 0xfa]);
        // Past 4095 the length takes three bytes.
        assert_eq!(pkg_length(5000), [0x8b, 0x38, 0x01]);
    }

    #[test]
    fn integers_take_their_shortest_form() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(18), [0x0a, 18]);
        assert_eq!(integer(0x1234), [0x0b, 0x34, 0x12]);
        assert_eq!(integer(0xd000_2000), [0x0c, 0x00, 0x20, 0x00, 0xd0]);
        assert_eq!(integer(1 << 32)[0], 0x0e);
    }

    #[test]
    fn resource_descriptors_match_the_spec_layouts() {
        assert_eq!(
            memory32_fixed(0xd000_2000, 0x1000),
            [0x86, 9, 0, 1, 0x00, 0x20, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00]
        );
        // Consumer, edge, active high, exclusive; one GSI.
        assert_eq!(edge_interrupt(23), [0x89, 6, 0, 0b0011, 1, 23, 0, 0, 0]);
        assert_eq!(io_port(0x505), [0x47, 1, 5, 5, 5, 5, 1, 1]);
    }
}
