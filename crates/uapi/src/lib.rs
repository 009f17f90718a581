//! The Linux SGX driver's user-space ABI (`arch/x86/include/uapi/asm/sgx.h`), identical in
//! numbers and layouts to the kernel's: the ioctl command numbers, their argument structs,
//! `struct sgx_enclave_run` of the vDSO entry point, and the constants user space passes.
//!
//! Shared by the driver (which implements the ioctls) and the enclave library (which issues
//! them to a real or emulated `/dev/sgx_enclave`). Every struct consists of `u64`s only (the
//! run struct excepted), has no padding, and has its size and field offsets checked at
//! compile time against the kernel's.

#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// ioctl "type" byte of every SGX command.
pub const SGX_MAGIC: u32 = 0xA4;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// The x86 `_IOC` encoding: `dir << 30 | size << 16 | type << 8 | nr`.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `_IOW(0xA4, 0x00, struct sgx_enclave_create)`: create the enclave (ECREATE).
pub const SGX_IOC_ENCLAVE_CREATE: u32 = ioc(IOC_WRITE, SGX_MAGIC, 0x00, size_of::<SgxEnclaveCreate>());
/// `_IOWR(0xA4, 0x01, struct sgx_enclave_add_pages)`: EADD (and EEXTEND) pages before INIT.
pub const SGX_IOC_ENCLAVE_ADD_PAGES: u32 = ioc(IOC_WRITE | IOC_READ, SGX_MAGIC, 0x01, size_of::<SgxEnclaveAddPages>());
/// `_IOW(0xA4, 0x02, struct sgx_enclave_init)`: EINIT.
pub const SGX_IOC_ENCLAVE_INIT: u32 = ioc(IOC_WRITE, SGX_MAGIC, 0x02, size_of::<SgxEnclaveInit>());
/// `_IOW(0xA4, 0x03, struct sgx_enclave_provision)`: allow PROVISIONKEY (between CREATE and INIT).
pub const SGX_IOC_ENCLAVE_PROVISION: u32 = ioc(IOC_WRITE, SGX_MAGIC, 0x03, size_of::<SgxEnclaveProvision>());
/// `_IO(0xA4, 0x04)` on `/dev/sgx_vepc`: EREMOVE every page of a virtual EPC.
pub const SGX_IOC_VEPC_REMOVE_ALL: u32 = ioc(0, SGX_MAGIC, 0x04, 0);
/// `_IOWR(0xA4, 0x05, struct sgx_enclave_restrict_permissions)` (SGX2): EMODPR + ETRACK per page.
pub const SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS: u32 =
    ioc(IOC_WRITE | IOC_READ, SGX_MAGIC, 0x05, size_of::<SgxEnclaveRestrictPermissions>());
/// `_IOWR(0xA4, 0x06, struct sgx_enclave_modify_types)` (SGX2): EMODT + ETRACK per page.
pub const SGX_IOC_ENCLAVE_MODIFY_TYPES: u32 =
    ioc(IOC_WRITE | IOC_READ, SGX_MAGIC, 0x06, size_of::<SgxEnclaveModifyTypes>());
/// `_IOWR(0xA4, 0x07, struct sgx_enclave_remove_pages)` (SGX2): EREMOVE of accepted TRIM pages.
pub const SGX_IOC_ENCLAVE_REMOVE_PAGES: u32 =
    ioc(IOC_WRITE | IOC_READ, SGX_MAGIC, 0x07, size_of::<SgxEnclaveRemovePages>());

/// `ADD_PAGES.flags` bit: EEXTEND the whole page (16 × 256 bytes). Other bits are ignored.
pub const SGX_PAGE_MEASURE: u64 = 0x01;

/// SECINFO / `permissions` bit R.
pub const SGX_SECINFO_R: u64 = 0x01;
/// SECINFO / `permissions` bit W.
pub const SGX_SECINFO_W: u64 = 0x02;
/// SECINFO / `permissions` bit X.
pub const SGX_SECINFO_X: u64 = 0x04;
/// The permission bits.
pub const SGX_SECINFO_PERMISSION_MASK: u64 = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_X;
/// Page type field of SECINFO.flags (bits 15:8).
pub const SGX_SECINFO_PAGE_TYPE_MASK: u64 = 0xFF << 8;
/// Flag bits the driver accepts in an ADD_PAGES SECINFO (RWX and the page type).
pub const SGX_SECINFO_RESERVED_MASK: u64 = !(SGX_SECINFO_PERMISSION_MASK | SGX_SECINFO_PAGE_TYPE_MASK);

/// `enum sgx_page_type`: SECS.
pub const SGX_PAGE_TYPE_SECS: u64 = 0x00;
/// TCS.
pub const SGX_PAGE_TYPE_TCS: u64 = 0x01;
/// Regular page.
pub const SGX_PAGE_TYPE_REG: u64 = 0x02;
/// Version array.
pub const SGX_PAGE_TYPE_VA: u64 = 0x03;
/// Trimmed page.
pub const SGX_PAGE_TYPE_TRIM: u64 = 0x04;
/// Mask of `page_type`.
pub const SGX_PAGE_TYPE_MASK: u64 = 0xFF;

/// Attributes allowed at INIT without any token: DEBUG | MODE64BIT | KSS | AEXNOTIFY.
pub const SGX_ATTR_UNPRIV_MASK: u64 = 0x486;
/// Privileged attributes: PROVISIONKEY | EINITTOKENKEY.
pub const SGX_ATTR_PRIV_MASK: u64 = 0x30;
/// PROVISIONKEY, added to an enclave's allowed attributes by SGX_IOC_ENCLAVE_PROVISION.
pub const SGX_ATTR_PROVISIONKEY: u64 = 0x10;
/// Attribute bits no part defines: 3, 6, 8, 9, 11..63.
pub const SGX_ATTR_RESERVED_MASK: u64 = 0xFFFF_FFFF_FFFF_FB48;
/// MISCSELECT bits no part defines (all but EXINFO).
pub const SGX_MISC_RESERVED_MASK: u64 = !0x1;

/// ENCLU leaf EENTER, as `sgx_enclave_run.function` reports it.
pub const EENTER: u32 = 2;
/// ENCLU leaf ERESUME.
pub const ERESUME: u32 = 3;
/// ENCLU leaf EEXIT.
pub const EEXIT: u32 = 4;

/// `struct sgx_enclave_create`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveCreate {
    /// User address of a 4096-byte SECS image.
    pub src: u64,
}

/// `struct sgx_enclave_add_pages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveAddPages {
    /// User address of the source data (page aligned).
    pub src: u64,
    /// Offset of the first page in ELRANGE.
    pub offset: u64,
    /// Bytes to add (a non-zero multiple of 4096).
    pub length: u64,
    /// User address of a 64-byte SECINFO.
    pub secinfo: u64,
    /// [`SGX_PAGE_MEASURE`] or 0.
    pub flags: u64,
    /// Out: bytes added.
    pub count: u64,
}

/// `struct sgx_enclave_init`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveInit {
    /// User address of a SIGSTRUCT.
    pub sigstruct: u64,
}

/// `struct sgx_enclave_provision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveProvision {
    /// A file descriptor of `/dev/sgx_provision` (low 32 bits used).
    pub fd: u64,
}

/// `struct sgx_enclave_restrict_permissions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveRestrictPermissions {
    /// Offset of the first page in ELRANGE.
    pub offset: u64,
    /// Bytes (a non-zero multiple of 4096).
    pub length: u64,
    /// New EPCM permissions (R/W/X bits).
    pub permissions: u64,
    /// Out (0 on input): the SGX code of a failing EMODPR.
    pub result: u64,
    /// Out (0 on input): bytes changed.
    pub count: u64,
}

/// `struct sgx_enclave_modify_types`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveModifyTypes {
    /// Offset of the first page in ELRANGE.
    pub offset: u64,
    /// Bytes (a non-zero multiple of 4096).
    pub length: u64,
    /// New type: [`SGX_PAGE_TYPE_TCS`] or [`SGX_PAGE_TYPE_TRIM`].
    pub page_type: u64,
    /// Out (0 on input): the SGX code of a failing EMODT.
    pub result: u64,
    /// Out (0 on input): bytes changed.
    pub count: u64,
}

/// `struct sgx_enclave_remove_pages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveRemovePages {
    /// Offset of the first page in ELRANGE.
    pub offset: u64,
    /// Bytes (a non-zero multiple of 4096).
    pub length: u64,
    /// Out (0 on input): bytes removed.
    pub count: u64,
}

/// `struct sgx_enclave_run`, the 7th argument of `__vdso_sgx_enter_enclave`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SgxEnclaveRun {
    /// Linear address of the TCS.
    pub tcs: u64,
    /// Out: the last ENCLU leaf (EEXIT on a normal exit; EAX at the exception otherwise).
    pub function: u32,
    /// Out: trap number of an exception.
    pub exception_vector: u16,
    /// Out: low 16 bits of its error code.
    pub exception_error_code: u16,
    /// Out: fault address (CR2 for #PF).
    pub exception_addr: u64,
    /// Optional user exit handler, 0 for none.
    pub user_handler: u64,
    /// Opaque to the vDSO.
    pub user_data: u64,
    /// Must be zero.
    pub reserved: [u64; 27],
}

impl Default for SgxEnclaveRun {
    fn default() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }
}

/// Size and offset checks against the kernel's layouts.
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<SgxEnclaveCreate>() == 8);
    assert!(size_of::<SgxEnclaveAddPages>() == 48);
    assert!(offset_of!(SgxEnclaveAddPages, secinfo) == 24);
    assert!(offset_of!(SgxEnclaveAddPages, flags) == 32);
    assert!(offset_of!(SgxEnclaveAddPages, count) == 40);
    assert!(size_of::<SgxEnclaveInit>() == 8);
    assert!(size_of::<SgxEnclaveProvision>() == 8);
    assert!(size_of::<SgxEnclaveRestrictPermissions>() == 40);
    assert!(offset_of!(SgxEnclaveRestrictPermissions, permissions) == 16);
    assert!(offset_of!(SgxEnclaveRestrictPermissions, result) == 24);
    assert!(offset_of!(SgxEnclaveRestrictPermissions, count) == 32);
    assert!(size_of::<SgxEnclaveModifyTypes>() == 40);
    assert!(offset_of!(SgxEnclaveModifyTypes, page_type) == 16);
    assert!(offset_of!(SgxEnclaveModifyTypes, result) == 24);
    assert!(offset_of!(SgxEnclaveModifyTypes, count) == 32);
    assert!(size_of::<SgxEnclaveRemovePages>() == 24);
    assert!(offset_of!(SgxEnclaveRemovePages, count) == 16);
    assert!(size_of::<SgxEnclaveRun>() == 256);
    assert!(offset_of!(SgxEnclaveRun, function) == 8);
    assert!(offset_of!(SgxEnclaveRun, exception_vector) == 12);
    assert!(offset_of!(SgxEnclaveRun, exception_error_code) == 14);
    assert!(offset_of!(SgxEnclaveRun, exception_addr) == 16);
    assert!(offset_of!(SgxEnclaveRun, user_handler) == 24);
    assert!(offset_of!(SgxEnclaveRun, user_data) == 32);
    assert!(offset_of!(SgxEnclaveRun, reserved) == 40);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The numeric values of the kernel's table (driver spec §1.2).
    #[test]
    fn ioctl_numbers_equal_the_kernels() {
        assert_eq!(SGX_IOC_ENCLAVE_CREATE, 0x4008_A400);
        assert_eq!(SGX_IOC_ENCLAVE_ADD_PAGES, 0xC030_A401);
        assert_eq!(SGX_IOC_ENCLAVE_INIT, 0x4008_A402);
        assert_eq!(SGX_IOC_ENCLAVE_PROVISION, 0x4008_A403);
        assert_eq!(SGX_IOC_VEPC_REMOVE_ALL, 0x0000_A404);
        assert_eq!(SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, 0xC028_A405);
        assert_eq!(SGX_IOC_ENCLAVE_MODIFY_TYPES, 0xC028_A406);
        assert_eq!(SGX_IOC_ENCLAVE_REMOVE_PAGES, 0xC018_A407);
    }

    #[test]
    fn masks_equal_the_kernels() {
        assert_eq!(SGX_ATTR_RESERVED_MASK, 0xFFFF_FFFF_FFFF_FB48);
        assert_eq!(SGX_ATTR_UNPRIV_MASK & SGX_ATTR_PRIV_MASK, 0);
        assert_eq!(SGX_SECINFO_RESERVED_MASK, 0xFFFF_FFFF_FFFF_00F8);
    }

    #[test]
    fn run_struct_round_trips_through_bytes() {
        let run = SgxEnclaveRun { tcs: 0x1000, function: EEXIT, exception_vector: 14, ..SgxEnclaveRun::default() };
        let bytes = run.as_bytes();
        assert_eq!(bytes.len(), 256);
        assert_eq!(&bytes[8..12], &4u32.to_le_bytes());
        assert_eq!(SgxEnclaveRun::read_from_bytes(bytes).unwrap(), run);
    }
}
