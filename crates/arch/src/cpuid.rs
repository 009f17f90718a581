//! CPUID bits that enumerate SGX (spec §10.1, §10.2; SDM Vol. 3D §34.7.2, kernel
//! `cpu/scattered.c`, `sgx/arch.h`).

/// CPUID leaf that enumerates SGX capabilities (sub-leaf 0), settable attributes (sub-leaf
/// 1) and EPC sections (sub-leaves 2 and up).
pub const CPUID_SGX_LEAF: u32 = 0x12;

/// CPUID leaf 7 (structured extended features).
pub const CPUID_EXTENDED_FEATURES_LEAF: u32 = 0x7;

/// CPUID.(7,0).EBX bit 2: SGX supported.
pub const CPUID7_EBX_SGX: u32 = 1 << 2;

/// CPUID.(7,0).ECX bit 30: SGX launch control (writable LE public-key hash MSRs).
pub const CPUID7_ECX_SGX_LC: u32 = 1 << 30;

/// CPUID.(12h,0).EAX bit 0: SGX1 leaves supported.
pub const SGX1: u32 = 1 << 0;

/// CPUID.(12h,0).EAX bit 1: SGX2 (EDMM) leaves supported.
pub const SGX2: u32 = 1 << 1;

/// CPUID.(12h,0).EAX bit 5: ENCLV leaves supported (not modelled: report 0).
pub const ENCLV: u32 = 1 << 5;

/// CPUID.(12h,0).EAX bit 6: oversubscription leaves supported (not modelled: report 0).
pub const OVERSUB: u32 = 1 << 6;

/// CPUID.(12h,0).EAX bit 10: EUPDATESVN supported (not modelled: report 0).
pub const EUPDATESVN: u32 = 1 << 10;

/// CPUID.(12h,0).EAX bit 11: EDECCSSA supported (report 0 unless emulated).
pub const EDECCSSA: u32 = 1 << 11;

/// First EPC-section sub-leaf of leaf 0x12 (kernel `SGX_CPUID_EPC`).
pub const CPUID_SGX_FIRST_EPC_SUBLEAF: u32 = 2;

/// EAX\[3:0\] of an EPC-section sub-leaf: the sub-leaf type.
pub const EPC_SECTION_TYPE_MASK: u32 = 0xF;

/// Sub-leaf type 0: invalid, end of the EPC-section list.
pub const EPC_SECTION_TYPE_INVALID: u32 = 0;

/// Sub-leaf type 1: an EPC section.
pub const EPC_SECTION_TYPE_EPC: u32 = 1;

/// ECX\[3:0\] of an EPC-section sub-leaf: the section property.
pub const EPC_SECTION_PROPERTY_MASK: u32 = 0xF;

/// Section property 1: confidentiality and integrity protected.
pub const EPC_SECTION_PROPERTY_CI: u32 = 1;

/// Mask of address/size bits 31:12 in EAX (base) and ECX (size) of an EPC-section sub-leaf.
pub const EPC_SECTION_LOW_MASK: u32 = 0xFFFF_F000;

/// Mask of address/size bits 51:32 in EBX (base) and EDX (size) of an EPC-section sub-leaf.
pub const EPC_SECTION_HIGH_MASK: u32 = 0x000F_FFFF;

/// Splits a 52-bit physical address or size into the (low, high) register pair of an
/// EPC-section sub-leaf: low holds bits 31:12 in place, high holds bits 51:32 shifted down.
/// `type_or_property` goes into bits 3:0 of low.
#[must_use]
pub const fn epc_section_regs(value: u64, type_or_property: u32) -> (u32, u32) {
    let low = (value as u32 & EPC_SECTION_LOW_MASK) | (type_or_property & EPC_SECTION_TYPE_MASK);
    let high = (value >> 32) as u32 & EPC_SECTION_HIGH_MASK;
    (low, high)
}

/// The inverse of [`epc_section_regs`]: the 52-bit value encoded by a (low, high) pair.
#[must_use]
pub const fn epc_section_value(low: u32, high: u32) -> u64 {
    ((high & EPC_SECTION_HIGH_MASK) as u64) << 32 | (low & EPC_SECTION_LOW_MASK) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_values() {
        assert_eq!(CPUID7_EBX_SGX, 0x4);
        assert_eq!(CPUID7_ECX_SGX_LC, 0x4000_0000);
        assert_eq!(SGX1 | SGX2 | ENCLV | OVERSUB | EUPDATESVN | EDECCSSA, 0xC63);
    }

    #[test]
    fn epc_section_encoding_round_trips() {
        let base = 0x0000_0012_8000_0000_u64;
        let (eax, ebx) = epc_section_regs(base, EPC_SECTION_TYPE_EPC);
        assert_eq!((eax, ebx), (0x8000_0001, 0x12));
        assert_eq!(eax & EPC_SECTION_TYPE_MASK, EPC_SECTION_TYPE_EPC);
        assert_eq!(epc_section_value(eax, ebx), base);
        let size = 0x0600_0000_u64;
        let (ecx, edx) = epc_section_regs(size, EPC_SECTION_PROPERTY_CI);
        assert_eq!(ecx & EPC_SECTION_PROPERTY_MASK, EPC_SECTION_PROPERTY_CI);
        assert_eq!(epc_section_value(ecx, edx), size);
    }
}
