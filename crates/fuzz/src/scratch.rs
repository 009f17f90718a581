//! A fuzzing thread's scratch memory: where argument structures, the objects they point to
//! (SECS, SECINFO, SIGSTRUCT) and ADD_PAGES sources are placed — in readable memory, in
//! read-only memory, or half into a PROT_NONE page — and where the enclave leaves its EACCEPT
//! result.

use sgxemu_arch::PAGE_SIZE;

use crate::ops::{ArgPtr, ObjPtr};
use crate::oracle;
use crate::sys;

const PAGE: u64 = PAGE_SIZE as u64;

/// A kernel-half address: never user memory.
pub const KERNEL_ADDRESS: u64 = 0xFFFF_8000_0000_1000;

/// 16 read-write pages: ADD_PAGES sources (and a straddling object's readable part).
pub const SRC_RW: u64 = 0;
/// PROT_NONE, right after SRC_RW.
pub const GUARD: u64 = 16;
/// An execute-only page.
pub const EXEC: u64 = 17;
/// 16 read-only pattern pages.
pub const RO_SRC: u64 = 18;
/// A read-only page for argument structures.
pub const ARG_RO: u64 = 34;
/// A read-only page for SECS, SECINFO and SIGSTRUCT.
pub const OBJ_RO: u64 = 35;
/// The read-write argument page.
pub const ARG: u64 = 36;
/// The read-write object page.
pub const OBJ: u64 = 37;
/// Where the enclave stores its EACCEPT result.
pub const CELL: u64 = 38;
/// Pages in all.
pub const PAGES: u64 = 39;
/// One thread's scratch mapping.
#[derive(Debug)]
pub struct Scratch {
    base: u64,
}

impl Scratch {
    /// Maps the pages and gives each its protection and contents.
    pub fn new() -> Result<Scratch, String> {
        let base = sys::anonymous(PAGES * PAGE, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("scratch memory: errno {e}"))?;
        let page = |n: u64| base + n * PAGE;
        for i in 0..16u8 {
            // SAFETY: the RO_SRC pages are part of the fresh scratch mapping, read-write until
            // the mprotect below.
            unsafe { sys::write_bytes(page(RO_SRC + u64::from(i)), &oracle::pattern_page(0x5A, i)) };
        }
        // SAFETY: the EXEC page is part of the scratch mapping, still read-write.
        unsafe { sys::write_bytes(page(EXEC), &oracle::pattern_page(0x11, 0)) };
        let protect = |n: u64, pages: u64, p: i32| {
            sys::mprotect(page(n), pages * PAGE, p).map_err(|e| format!("mprotect scratch: errno {e}"))
        };
        protect(GUARD, 1, libc::PROT_NONE)?;
        protect(EXEC, 1, libc::PROT_EXEC)?;
        protect(RO_SRC, 16, libc::PROT_READ)?;
        protect(ARG_RO, 2, libc::PROT_READ)?;
        Ok(Scratch { base })
    }

    /// The address of scratch page `n`.
    pub fn addr(&self, n: u64) -> u64 {
        self.base + n * PAGE
    }

    /// Puts `bytes` where `ptr` says (in `rw_page` or `ro_page` when it is readable); the
    /// address to pass.
    fn place(&mut self, ptr: ArgPtr, bytes: &[u8], rw_page: u64, ro_page: u64) -> u64 {
        let len = bytes.len() as u64;
        match ptr {
            ArgPtr::Valid => {
                let at = self.addr(rw_page);
                // SAFETY: `rw_page` is a read-write scratch page, `len` ≤ a page.
                unsafe { sys::write_bytes(at, bytes) };
                at
            }
            ArgPtr::Null => 0,
            ArgPtr::Kernel => KERNEL_ADDRESS,
            ArgPtr::ProtNone => self.addr(GUARD),
            ArgPtr::Straddle => {
                // Half of the structure readable, the rest in the PROT_NONE page.
                let at = self.addr(GUARD) - (len / 2).max(1);
                let readable = (self.addr(GUARD) - at) as usize;
                // SAFETY: [at, GUARD) is the tail of the read-write SRC_RW area.
                unsafe { sys::write_bytes(at, &bytes[..readable.min(bytes.len())]) };
                at
            }
            ArgPtr::ReadOnly => {
                let at = self.addr(ro_page);
                sys::mprotect(at, PAGE, libc::PROT_READ | libc::PROT_WRITE).expect("mprotect of our own scratch page");
                // SAFETY: the page was just made writable; it belongs to this scratch mapping.
                unsafe { sys::write_bytes(at, bytes) };
                sys::mprotect(at, PAGE, libc::PROT_READ).expect("mprotect of our own scratch page");
                at
            }
        }
    }

    /// Places an ioctl's argument structure.
    pub fn place_arg(&mut self, ptr: ArgPtr, bytes: &[u8]) -> u64 {
        self.place(ptr, bytes, ARG, ARG_RO)
    }

    /// Places an object an argument points to.
    pub fn place_obj(&mut self, ptr: ObjPtr, bytes: &[u8]) -> u64 {
        let as_arg = match ptr {
            ObjPtr::Valid => ArgPtr::Valid,
            ObjPtr::ReadOnly => ArgPtr::ReadOnly,
            ObjPtr::Null => ArgPtr::Null,
            ObjPtr::Kernel => ArgPtr::Kernel,
            ObjPtr::ProtNone => ArgPtr::ProtNone,
            ObjPtr::Straddle => ArgPtr::Straddle,
        };
        self.place(as_arg, bytes, OBJ, OBJ_RO)
    }

    /// Reads the argument structure back (meaningful after `ArgPtr::Valid`).
    pub fn read_arg<T: zerocopy::FromBytes>(&self) -> T {
        // SAFETY: the ARG page is a readable scratch page.
        let bytes = unsafe { sys::read_bytes(self.addr(ARG), size_of::<T>()) };
        T::read_from_bytes(&bytes).expect("exact size")
    }

    /// Writes `bytes` at `at`, which must lie in the read-write SRC_RW area or be the CELL.
    pub fn write(&mut self, at: u64, bytes: &[u8]) {
        let rw = self.addr(SRC_RW)..self.addr(GUARD);
        let cell = self.addr(CELL)..self.addr(CELL + 1);
        let end = at + bytes.len() as u64;
        assert!(
            (rw.contains(&at) && end <= rw.end) || (cell.contains(&at) && end <= cell.end),
            "scratch write out of bounds"
        );
        // SAFETY: checked just above: the range lies in read-write pages of this mapping.
        unsafe { sys::write_bytes(at, bytes) };
    }

    /// Reads 8 bytes at the CELL.
    pub fn read_cell(&self) -> u64 {
        // SAFETY: the CELL page is a readable scratch page.
        u64::from_le_bytes(unsafe { sys::read_bytes(self.addr(CELL), 8) }.try_into().expect("8 bytes"))
    }

    /// Unmaps the pages.
    pub fn release(&mut self) {
        let _ = sys::munmap(self.base, PAGES * PAGE);
    }
}
