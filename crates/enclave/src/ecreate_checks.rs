//! What ECREATE would refuse, checked offline: the SECS fields an image or a layout fixes
//! (SIZE, SSAFRAMESIZE, MISCSELECT, XFRM), against the emulated part's defaults
//! (`sgxemu_cpu::PlatformConfig::default()`: CPUID.(12h,0).EDX = 0x381F, MISCSELECT EXINFO).
//!
//! `measure`, `sign` and the readers run these, so a file or option ECREATE would answer with
//! #GP is refused with a message instead of measured into a MRENCLAVE nothing can have.
//! The checks follow spec §4.1 step 5 (`Processor::validate_secs`), with one offline rule
//! added: an SSA frame larger than ELRANGE can hold no frame, so no thread could ever enter.

use sgxemu_arch::{Attributes, AttributesFlags, GPRSGX_SIZE, Miscselect, PAGE_SIZE, xfrm_is_consistent, xsave_size};

/// [`PAGE_SIZE`] as a `u64`.
const PAGE: u64 = PAGE_SIZE as u64;

/// log2 of the largest 64-bit enclave (CPUID.(12h,0).EDX\[15:8\] of the emulated part).
pub const MAX_ENCLAVE_SIZE_64_LOG2: u32 = 56;

/// log2 of the largest enclave outside 64-bit mode (CPUID.(12h,0).EDX\[7:0\]).
pub const MAX_ENCLAVE_SIZE_32_LOG2: u32 = 31;

/// MISCSELECT bits an SGX2 part supports: EXINFO only (CPUID.(12h,0).EBX).
pub const SUPPORTED_MISCSELECT: u32 = Miscselect::EXINFO.bits();

/// Why ECREATE would refuse these SECS fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecsError {
    /// SIZE is not a power of two of at least two pages.
    #[error("enclave size {size:#x} is not a power of two of at least 0x2000 bytes")]
    SizeShape {
        /// SECS.SIZE.
        size: u64,
    },
    /// SIZE is above CPUID's maximum for the enclave's mode.
    #[error("enclave size {size:#x} exceeds the maximum enclave size {max:#x} (2^{log2})")]
    SizeAboveMax {
        /// SECS.SIZE.
        size: u64,
        /// The maximum.
        max: u64,
        /// Its log2.
        log2: u32,
    },
    /// MISCSELECT asks for a bit the part does not support.
    #[error("MISCSELECT {miscselect:#x} has bits the part does not support (only bit 0, EXINFO, is valid)")]
    Miscselect {
        /// SECS.MISCSELECT.
        miscselect: u32,
    },
    /// XFRM lacks x87/SSE or has an inconsistent set of components.
    #[error(
        "XFRM {xfrm:#x} is invalid: x87 and SSE (bits 0 and 1) are required and components must come in their groups"
    )]
    Xfrm {
        /// SECS.ATTRIBUTES.XFRM.
        xfrm: u64,
    },
    /// The SSA frame cannot hold the XSAVE area, GPRSGX and the MISCSELECT area.
    #[error("SSAFRAMESIZE {ssaframesize} pages is too small: XFRM {xfrm:#x} and MISCSELECT need {needed} pages")]
    SsaFrameTooSmall {
        /// SECS.SSAFRAMESIZE.
        ssaframesize: u32,
        /// XFRM.
        xfrm: u64,
        /// Pages needed.
        needed: u32,
    },
    /// One SSA frame is larger than the whole enclave.
    #[error("SSAFRAMESIZE {ssaframesize} pages is larger than the enclave ({size:#x} bytes): no SSA frame fits")]
    SsaFrameTooLarge {
        /// SECS.SSAFRAMESIZE.
        ssaframesize: u32,
        /// SECS.SIZE.
        size: u64,
    },
}

/// The largest enclave ECREATE accepts in the mode `attributes` select.
#[must_use]
pub fn max_enclave_size(attributes: Attributes) -> u64 {
    1 << max_log2(attributes)
}

fn max_log2(attributes: Attributes) -> u32 {
    if attributes.flags().contains(AttributesFlags::MODE64BIT) {
        MAX_ENCLAVE_SIZE_64_LOG2
    } else {
        MAX_ENCLAVE_SIZE_32_LOG2
    }
}

/// Checks SECS.SIZE: a power of two, at least two pages, at most the maximum for the mode
/// (equal to it is allowed, as on hardware).
pub fn check_size(size: u64, attributes: Attributes) -> Result<(), SecsError> {
    if !size.is_power_of_two() || size < 2 * PAGE {
        return Err(SecsError::SizeShape { size });
    }
    let log2 = max_log2(attributes);
    if size > 1 << log2 {
        return Err(SecsError::SizeAboveMax { size, max: 1 << log2, log2 });
    }
    Ok(())
}

/// The SSA frame size, in pages, that XFRM and MISCSELECT need: the XSAVE area, GPRSGX, and
/// EXINFO if selected (`needed` of spec §4.1 step 5, rounded up to pages).
#[must_use]
pub fn min_ssaframesize(xfrm: u64, miscselect: u32) -> u32 {
    let exinfo = if miscselect & Miscselect::EXINFO.bits() != 0 { sgxemu_arch::EXINFO_SIZE } else { 0 };
    let needed = (xsave_size(xfrm) + GPRSGX_SIZE + exinfo) as u64;
    // xsave_size is at most a few pages, so the count fits a u32.
    u32::try_from(needed.div_ceil(PAGE)).unwrap_or(u32::MAX)
}

/// Checks every SECS field an image fixes, as ECREATE would (see the module docs).
pub fn check_secs(size: u64, ssaframesize: u32, attributes: Attributes, miscselect: u32) -> Result<(), SecsError> {
    check_size(size, attributes)?;
    if miscselect & !SUPPORTED_MISCSELECT != 0 {
        return Err(SecsError::Miscselect { miscselect });
    }
    let xfrm = attributes.xfrm;
    if xfrm & 0x3 != 0x3 || !xfrm_is_consistent(xfrm) {
        return Err(SecsError::Xfrm { xfrm });
    }
    let needed = min_ssaframesize(xfrm, miscselect);
    if ssaframesize < needed {
        return Err(SecsError::SsaFrameTooSmall { ssaframesize, xfrm, needed });
    }
    if u64::from(ssaframesize) * PAGE > size {
        return Err(SecsError::SsaFrameTooLarge { ssaframesize, size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode64() -> Attributes {
        Attributes::new(AttributesFlags::MODE64BIT, 0x3)
    }

    #[test]
    fn sizes_up_to_the_maximum_pass_and_above_fail() {
        assert_eq!(check_size(1 << 56, mode64()), Ok(()));
        assert_eq!(check_size(0x2000, mode64()), Ok(()));
        for log2 in [57, 62, 63] {
            assert_eq!(
                check_size(1 << log2, mode64()),
                Err(SecsError::SizeAboveMax { size: 1 << log2, max: 1 << 56, log2: 56 })
            );
        }
        let mode32 = Attributes::new(AttributesFlags::empty(), 0x3);
        assert_eq!(check_size(1 << 31, mode32), Ok(()));
        assert!(matches!(check_size(1 << 32, mode32), Err(SecsError::SizeAboveMax { log2: 31, .. })));
        for size in [0, 0x1000, 0x3000, u64::MAX] {
            assert_eq!(check_size(size, mode64()), Err(SecsError::SizeShape { size }));
        }
    }

    #[test]
    fn ssa_frames_must_hold_the_state_and_fit_the_enclave() {
        assert_eq!(min_ssaframesize(0x3, 0), 1);
        assert_eq!(check_secs(0x2000, 1, mode64(), 1), Ok(()));
        assert_eq!(check_secs(0x2000, 2, mode64(), 0), Ok(()));
        assert_eq!(
            check_secs(0x2000, 3, mode64(), 0),
            Err(SecsError::SsaFrameTooLarge { ssaframesize: 3, size: 0x2000 })
        );
        assert_eq!(
            check_secs(0x10_0000, u32::MAX, mode64(), 0),
            Err(SecsError::SsaFrameTooLarge { ssaframesize: u32::MAX, size: 0x10_0000 })
        );
        assert_eq!(
            check_secs(0x2000, 0, mode64(), 0),
            Err(SecsError::SsaFrameTooSmall { ssaframesize: 0, xfrm: 3, needed: 1 })
        );
        // AVX-512 (XFRM 0xE7) needs a 2.7 KiB XSAVE area: still one page with GPRSGX.
        let avx512 = Attributes::new(AttributesFlags::MODE64BIT, 0xE7);
        assert_eq!(min_ssaframesize(0xE7, 1), 1);
        assert_eq!(check_secs(0x2000, 1, avx512, 1), Ok(()));
    }

    #[test]
    fn miscselect_and_xfrm_are_checked() {
        for miscselect in [2, 0x8000_0000, u32::MAX] {
            assert_eq!(check_secs(0x2000, 1, mode64(), miscselect), Err(SecsError::Miscselect { miscselect }));
        }
        for xfrm in [0, 1, 0x5] {
            let attributes = Attributes::new(AttributesFlags::MODE64BIT, xfrm);
            assert_eq!(check_secs(0x2000, 1, attributes, 0), Err(SecsError::Xfrm { xfrm }));
        }
    }
}
