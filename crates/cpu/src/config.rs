//! The emulated part: what CPUID leaf 0x12 enumerates and the platform secrets.

use sgxemu_arch::xsave::{XFEATURE_AMX, XFEATURE_AVX, XFEATURE_AVX512, XFEATURE_PKRU, XFRM_LEGACY};
use sgxemu_arch::{AttributesFlags, Miscselect, PAGE_SIZE, cpuid, msr};

/// Default EPC size: 128 MiB, a common client-part size.
pub const DEFAULT_EPC_SIZE: u64 = 128 << 20;
/// Largest EPC the model accepts (64 GiB, a large server part); storage is lazy.
pub const MAX_EPC_SIZE: u64 = 64 << 30;
/// Physical base address of the single EPC section the model enumerates.
pub const DEFAULT_EPC_BASE: u64 = 0x80_0000_0000;

/// log2 of the default maximum 64-bit enclave size: 2^56, what an Ice Lake-SP server part
/// reports in CPUID.(12h,0).EDX\[15:8\]. ELRANGE costs nothing until pages are added.
pub const DEFAULT_MAX_ENCLAVE_SIZE_64_LOG2: u8 = 56;
/// log2 of the default maximum enclave size outside 64-bit mode (CPUID.(12h,0).EDX\[7:0\]).
pub const DEFAULT_MAX_ENCLAVE_SIZE_32_LOG2: u8 = 31;
/// The XFRM components the default part offers (CPUID.(12h,1).EDX:ECX): x87, SSE, AVX,
/// AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM), PKRU and AMX (XTILECFG, XTILEDATA), as a server
/// part with AMX reports. A host layer intersects it with what its OS enabled in XCR0.
pub const DEFAULT_XFRM: u64 = XFRM_LEGACY | XFEATURE_AVX | XFEATURE_AVX512 | XFEATURE_PKRU | XFEATURE_AMX;

/// Configuration errors: every field is checked before a [`crate::Processor`] exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// EPC size not a positive multiple of 4 KiB, or above [`MAX_EPC_SIZE`].
    #[error("EPC size of {size} bytes is invalid: use a multiple of 4 KiB between 4 KiB and 64 GiB")]
    EpcSize {
        /// The rejected size in bytes.
        size: u64,
    },
    /// EPC base not page aligned or the section would pass 2^52.
    #[error("EPC base {base:#x} is invalid: use a 4 KiB-aligned physical address below 2^52 - size")]
    EpcBase {
        /// The rejected base.
        base: u64,
    },
    /// The XFRM mask lacks x87/SSE or is not XSETBV-consistent.
    #[error("XFRM mask {xfrm:#x} is invalid: it must include x87|SSE (0x3) and be XSETBV-consistent")]
    Xfrm {
        /// The rejected mask.
        xfrm: u64,
    },
    /// A maximum enclave size (CPUID.(12h,0).EDX) outside what the address space allows.
    #[error("maximum enclave size 2^{log2} is invalid: 64-bit enclaves allow 2^13 to 2^63, 32-bit ones 2^13 to 2^32")]
    MaxEnclaveSize {
        /// The rejected log2.
        log2: u8,
    },
    /// Settable attributes include INIT or reserved bits.
    #[error("settable attribute mask {mask:#x} includes INIT or reserved bits")]
    Attributes {
        /// The rejected mask.
        mask: u64,
    },
}

/// Everything that distinguishes one emulated SGX platform from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformConfig {
    /// EPC size in bytes (one section).
    pub epc_size: u64,
    /// Physical base of the EPC section.
    pub epc_base: u64,
    /// SGX2 (EDMM) leaves available: EAUG, EMODPR, EMODT, EACCEPT, EACCEPTCOPY, EMODPE.
    pub sgx2: bool,
    /// MISCSELECT bits the part supports (CPUID.(12h,0).EBX).
    pub miscselect: Miscselect,
    /// Settable SECS.ATTRIBUTES.FLAGS bits (CPUID.(12h,1).EBX:EAX).
    pub attributes: AttributesFlags,
    /// Settable XFRM bits (CPUID.(12h,1).EDX:ECX).
    pub xfrm: u64,
    /// log2 of the maximum enclave size in 64-bit mode (CPUID.(12h,0).EDX\[15:8\]).
    pub max_enclave_size_64_log2: u8,
    /// log2 of the maximum enclave size outside 64-bit mode (CPUID.(12h,0).EDX\[7:0\]).
    pub max_enclave_size_32_log2: u8,
    /// Flexible launch control: IA32_SGXLEPUBKEYHASH0..3 writable (CPUID.7.ECX\[30\] and
    /// IA32_FEATURE_CONTROL.SGX_LC_ENABLE). Linux requires it.
    pub flexible_launch_control: bool,
    /// Platform root secrets; `None` draws fresh random ones (a "power cycle").
    pub secrets: Option<crate::secrets::PlatformSecrets>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            epc_size: DEFAULT_EPC_SIZE,
            epc_base: DEFAULT_EPC_BASE,
            sgx2: true,
            miscselect: Miscselect::EXINFO,
            attributes: AttributesFlags::DEBUG
                | AttributesFlags::MODE64BIT
                | AttributesFlags::PROVISIONKEY
                | AttributesFlags::EINITTOKENKEY
                | AttributesFlags::KSS,
            xfrm: DEFAULT_XFRM,
            max_enclave_size_64_log2: DEFAULT_MAX_ENCLAVE_SIZE_64_LOG2,
            max_enclave_size_32_log2: DEFAULT_MAX_ENCLAVE_SIZE_32_LOG2,
            flexible_launch_control: true,
            secrets: None,
        }
    }
}

impl PlatformConfig {
    /// Checks every field; a processor is only built from a valid configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let page = PAGE_SIZE as u64;
        if self.epc_size == 0 || !self.epc_size.is_multiple_of(page) || self.epc_size > MAX_EPC_SIZE {
            return Err(ConfigError::EpcSize { size: self.epc_size });
        }
        let end = self.epc_base.checked_add(self.epc_size);
        if !self.epc_base.is_multiple_of(page) || end.is_none_or(|end| end > 1 << 52) {
            return Err(ConfigError::EpcBase { base: self.epc_base });
        }
        if self.xfrm & 0x3 != 0x3 || !sgxemu_arch::xfrm_is_consistent(self.xfrm) {
            return Err(ConfigError::Xfrm { xfrm: self.xfrm });
        }
        let min_log2 = (2 * PAGE_SIZE).trailing_zeros() as u8;
        for (log2, max) in [(self.max_enclave_size_64_log2, 63), (self.max_enclave_size_32_log2, 32)] {
            if !(min_log2..=max).contains(&log2) {
                return Err(ConfigError::MaxEnclaveSize { log2 });
            }
        }
        if self.attributes.contains(AttributesFlags::INIT)
            || AttributesFlags::from_bits(self.attributes.bits()).is_none()
        {
            return Err(ConfigError::Attributes { mask: self.attributes.bits() });
        }
        Ok(())
    }

    /// Number of EPC pages.
    pub fn epc_pages(&self) -> u64 {
        self.epc_size / PAGE_SIZE as u64
    }

    /// CPUID leaf 0x12, sub-leaf `subleaf`, as EAX, EBX, ECX, EDX (spec §10.2).
    pub fn cpuid_leaf12(&self, subleaf: u32) -> [u32; 4] {
        match subleaf {
            0 => {
                let mut eax = cpuid::SGX1;
                if self.sgx2 {
                    eax |= cpuid::SGX2;
                }
                let edx = u32::from(self.max_enclave_size_32_log2) | (u32::from(self.max_enclave_size_64_log2) << 8);
                [eax, self.miscselect.bits(), 0, edx]
            }
            1 => {
                let attrs = self.attributes.bits();
                [attrs as u32, (attrs >> 32) as u32, self.xfrm as u32, (self.xfrm >> 32) as u32]
            }
            2 => {
                let base = self.epc_base;
                let size = self.epc_size;
                [
                    (base as u32 & 0xFFFF_F000) | cpuid::EPC_SECTION_TYPE_EPC,
                    (base >> 32) as u32 & 0xF_FFFF,
                    (size as u32 & 0xFFFF_F000) | cpuid::EPC_SECTION_PROPERTY_CI,
                    (size >> 32) as u32 & 0xF_FFFF,
                ]
            }
            _ => [0; 4],
        }
    }

    /// The SGX bits of CPUID leaf 7 sub-leaf 0: (EBX bits to set, ECX bits to set).
    pub fn cpuid_leaf7_sgx_bits(&self) -> (u32, u32) {
        let lc = if self.flexible_launch_control { cpuid::CPUID7_ECX_SGX_LC } else { 0 };
        (cpuid::CPUID7_EBX_SGX, lc)
    }

    /// IA32_FEATURE_CONTROL as firmware left it: locked, SGX enabled, and launch control
    /// enabled when the part has it.
    pub fn feature_control(&self) -> u64 {
        let mut value = msr::FEATURE_CONTROL_LOCK | msr::FEATURE_CONTROL_SGX_ENABLE;
        if self.flexible_launch_control {
            value |= msr::FEATURE_CONTROL_SGX_LC_ENABLE;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_enumerates_one_section() {
        let cfg = PlatformConfig::default();
        cfg.validate().unwrap();
        let [eax, ebx, _, edx] = cfg.cpuid_leaf12(0);
        assert_eq!(eax & 0x3, 0x3);
        assert_eq!(ebx, 1);
        assert_eq!(edx, 0x381F, "MaxEnclaveSize_Not64 = 31, MaxEnclaveSize_64 = 56, as Ice Lake-SP");
        let [_, _, ecx, edx] = cfg.cpuid_leaf12(1);
        assert_eq!((ecx, edx), (0x0006_02E7, 0), "x87|SSE|AVX|AVX-512|PKRU|AMX");
        let [eax, _, ecx, edx] = cfg.cpuid_leaf12(2);
        assert_eq!(eax & 0xF, 1);
        assert_eq!(u64::from(ecx & 0xFFFF_F000) | (u64::from(edx) << 32), DEFAULT_EPC_SIZE);
        assert_eq!(cfg.cpuid_leaf12(3), [0; 4]);
    }

    #[test]
    fn large_epc_sizes_encode_high_bits() {
        let cfg = PlatformConfig { epc_size: 64 << 30, ..Default::default() };
        cfg.validate().unwrap();
        let [_, _, ecx, edx] = cfg.cpuid_leaf12(2);
        assert_eq!(u64::from(ecx & 0xFFFF_F000) | (u64::from(edx) << 32), 64 << 30);
    }

    #[test]
    fn sgx1_part_clears_the_sgx2_bit() {
        let cfg = PlatformConfig { sgx2: false, ..Default::default() };
        assert_eq!(cfg.cpuid_leaf12(0)[0] & 0x3, 0x1);
    }

    #[test]
    fn bad_configs_are_rejected() {
        for size in [0, 4095, (64 << 30) + 4096] {
            let cfg = PlatformConfig { epc_size: size, ..Default::default() };
            assert_eq!(cfg.validate(), Err(ConfigError::EpcSize { size }));
        }
        let cfg = PlatformConfig { xfrm: 0x1, ..Default::default() };
        assert_eq!(cfg.validate(), Err(ConfigError::Xfrm { xfrm: 0x1 }));
        for (log2_64, log2_32, bad) in [(64, 31, 64), (12, 31, 12), (56, 33, 33), (56, 0, 0)] {
            let cfg = PlatformConfig {
                max_enclave_size_64_log2: log2_64,
                max_enclave_size_32_log2: log2_32,
                ..Default::default()
            };
            assert_eq!(cfg.validate(), Err(ConfigError::MaxEnclaveSize { log2: bad }));
        }
        let cfg = PlatformConfig { attributes: AttributesFlags::INIT, ..Default::default() };
        assert!(matches!(cfg.validate(), Err(ConfigError::Attributes { .. })));
    }
}
