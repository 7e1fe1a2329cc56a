//! Boot GDT entries (Intel SDM Vol. 3A §3.4.5) and their KVM segment forms.

use kvm_bindings::kvm_segment;

/// Flags|access for the segments we boot with (Linux boot protocol / PVH ABI).
pub const CODE64: u16 = 0xa09b; // present, ring 0, code, long mode, 4K granularity
pub const CODE32: u16 = 0xc09b; // present, ring 0, code, 32-bit, 4K granularity
pub const DATA: u16 = 0xc093; // present, ring 0, read/write data, 32-bit, 4K granularity
pub const TSS: u16 = 0x808b; // present, busy 32-bit TSS

/// Selectors of the entries in `boot_gdt`: null, code, data, TSS.
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// Builds one 8-byte GDT descriptor from flags|access, base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The GDT for booting: flat segments, 64-bit code for the Linux 64-bit protocol and 32-bit
/// code for PVH.
pub fn boot_gdt(long_mode: bool) -> [u64; 4] {
    let code = if long_mode { CODE64 } else { CODE32 };
    [
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(DATA, 0, 0xfffff),
        gdt_entry(TSS, 0, 0xfffff),
    ]
}

/// The KVM view of descriptor `entry` at GDT index `index`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let limit = ((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff);
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base: ((entry & 0xff00_0000_0000_0000) >> 32)
            | ((entry & 0x0000_00ff_0000_0000) >> 16)
            | ((entry & 0x0000_0000_ffff_0000) >> 16),
        // A 4K-granular limit covers whole pages.
        limit: if g == 1 {
            ((limit as u32) << 12) | 0xfff
        } else {
            limit as u32
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from((entry >> 47) & 1 == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_segment_round_trips() {
        let seg = kvm_segment_from_gdt(gdt_entry(CODE64, 0, 0xfffff), 1);
        assert_eq!(seg.base, 0);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.selector, CODE_SELECTOR);
        assert_eq!(
            (seg.type_, seg.present, seg.l, seg.g, seg.s),
            (0xb, 1, 1, 1, 1)
        );
        let data = kvm_segment_from_gdt(gdt_entry(DATA, 0, 0xfffff), 2);
        assert_eq!((data.type_, data.db, data.l), (0x3, 1, 0));
    }
}
