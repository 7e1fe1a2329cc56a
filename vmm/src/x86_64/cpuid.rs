//! CPUID for a vCPU: what KVM supports, with the topology and the few bits a guest must see
//! differently (Intel SDM Vol. 2A, CPUID; AMD APM Vol. 3, E.3).

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_THERMAL: u32 = 0x6;
const LEAF_PERFMON: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY: u32 = 0x1f;

/// CPUID.1:ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX bit 24: TSC deadline timer (KVM emulates it in the in-kernel LAPIC).
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:EDX bit 28: HTT, the logical-processor count in EBX[23:16] is valid.
const EDX_HTT: u32 = 1 << 28;
/// CPUID.6:ECX bit 3: energy/performance bias MSR, which we do not emulate.
const ECX_EPB: u32 = 1 << 3;

/// Adjusts `cpuid` (as returned by KVM_GET_SUPPORTED_CPUID) for vCPU `id` of `count`.
pub fn filter_cpuid(cpuid: &mut CpuId, id: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                // Initial APIC ID in EBX[31:24], logical processors per package in EBX[23:16].
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                entry.ecx |= ECX_HYPERVISOR | ECX_TSC_DEADLINE;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing the cache - 1.
                let cores = u32::from(count.max(1)) - 1;
                entry.eax = (entry.eax & 0x0000_3fff) | (cores << 26);
                let level = (entry.eax >> 5) & 0x7;
                if level >= 3 {
                    entry.eax |= cores << 14;
                }
            }
            LEAF_THERMAL => entry.ecx &= !ECX_EPB,
            // No virtual PMU: a guest that sees one would program counters we do not run.
            LEAF_PERFMON => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_EXT_TOPOLOGY => {
                // One thread per core, `count` cores per package; EDX is the x2APIC ID.
                entry.edx = u32::from(id);
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = 1 << 8;
                    }
                    1 => {
                        entry.eax = bits_for(count);
                        entry.ebx = u32::from(count);
                        entry.ecx = (2 << 8) | 1;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Number of APIC-ID bits needed to number `count` CPUs.
fn bits_for(count: u8) -> u32 {
    let n = u32::from(count.max(1));
    32 - (n - 1).leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn topology_reports_apic_id_and_cpu_count() {
        let mut cpuid = CpuId::from_entries(&[entry(1, 0), entry(0xb, 1), entry(0xa, 0)]).unwrap();
        cpuid.as_mut_slice()[2].eax = 0x0760_3004;
        filter_cpuid(&mut cpuid, 1, 2);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!((e[1].ebx, e[1].edx, e[1].eax), (2, 1, 1));
        assert_eq!(e[2].eax, 0);
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(255), 8);
    }
}
