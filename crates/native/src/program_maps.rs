//! Mappings the program makes over enclave mappings: an `mmap` with MAP_FIXED (anonymous or
//! of any file but an enclave's) or an `mremap` with MREMAP_FIXED whose target overlaps an
//! enclave mapping. On the kernel the new VMA simply replaces the enclave's there: the
//! enclave pages become unreachable at those addresses and the page is the program's own.
//! The emulator forgets its enclave mapping there in the same step, so it never touches
//! the program's page again (no placeholder from a reclaimer's zap, no EPC page from a
//! fault), and releases an enclave that nothing maps or names any more, as `munmap` does.

use std::io;

use crate::engine::Engine;
use crate::signals::HeldSignals;

impl Engine {
    /// Carries out `map`, a host call that makes a mapping of the program over
    /// `[addr, addr + len)`, forgetting the enclave mappings it replaces (see the module).
    pub fn replaced_by_program<T>(&self, addr: u64, len: u64, map: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let _held = HeldSignals::hold();
        let (made, touched) = self.space.replace(addr, len, map)?;
        for encl in touched {
            self.release_if_unused(&encl);
        }
        Ok(made)
    }
}

/// The engine whose enclave mappings a program's `mmap` with `flags` over
/// `[addr, addr + len)` (not of an enclave file) replaces, if any: MAP_FIXED without
/// MAP_FIXED_NOREPLACE, over an enclave mapping of this process.
pub fn replacing_engine(addr: u64, len: u64, flags: libc::c_int) -> Option<&'static Engine> {
    if flags & libc::MAP_FIXED == 0 || flags & libc::MAP_FIXED_NOREPLACE != 0 {
        return None;
    }
    crate::devices_fs::mapping_engine(addr, len)
}

/// The engine whose enclave mappings a program's `mremap` with `flags` to `new` replaces,
/// if any: MREMAP_FIXED onto an enclave mapping of this process.
pub fn remap_target_engine(new: u64, new_len: u64, flags: libc::c_int) -> Option<&'static Engine> {
    if flags & libc::MREMAP_FIXED == 0 {
        return None;
    }
    crate::devices_fs::mapping_engine(new, new_len)
}
