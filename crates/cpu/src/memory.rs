//! Memory outside the EPC, as a leaf sees it.
//!
//! ENCLS leaves read and write ordinary kernel memory (PAGEINFO, SECINFO, source pages,
//! PCMD, SIGSTRUCT, tokens) through [`Memory`]; ENCLU leaves and enclave-mode accesses
//! translate linear addresses through the process's [`PageTable`]. Both are supplied by the
//! caller, so the model stays free of any particular OS (DESIGN.md, "cpu").

use std::collections::BTreeMap;

use sgxemu_arch::{PAGE_SIZE, PfErrorCode};

use crate::fault::Exception;
use crate::regs::is_canonical;

/// Linear memory outside the EPC, as ring-0 code sees it.
pub trait Memory {
    /// Reads `buf.len()` bytes at `addr`; an unmapped address is an ordinary #PF.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Exception>;
    /// Writes `data` at `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception>;
    /// The `len` bytes at `addr` in place, where this memory can lend them (a kernel's own
    /// buffers), so a leaf can copy them straight to their destination; `None` (the
    /// default) makes the leaf read them with [`Memory::read`].
    fn lend(&self, _addr: u64, _len: usize) -> Option<&[u8]> {
        None
    }
}

/// What a page-table walk finds for a linear address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// No present PTE.
    NotPresent,
    /// A present user PTE.
    Present {
        /// Physical address of the page (page aligned).
        pa: u64,
        /// PTE.W.
        writable: bool,
        /// Not PTE.NX.
        executable: bool,
    },
}

/// The process's page tables, as the executing logical processor walks them.
pub trait PageTable {
    /// Translates the page containing `la`.
    fn translate(&self, la: u64) -> Translation;
}

/// The kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Execute,
}

impl AccessKind {
    /// The error-code bits of an ordinary user-mode #PF for this access.
    pub fn pf_bits(self) -> PfErrorCode {
        match self {
            AccessKind::Read => PfErrorCode::U,
            AccessKind::Write => PfErrorCode::U | PfErrorCode::W,
            AccessKind::Execute => PfErrorCode::U | PfErrorCode::I,
        }
    }
}

/// Walks `pt` for an access of `kind` at `la`: the ordinary paging checks of spec §6.1
/// step 1. Returns the physical address of the page or an ordinary #PF (no SGX bit).
pub fn walk(pt: &dyn PageTable, la: u64, kind: AccessKind) -> Result<u64, Exception> {
    if !is_canonical(la) {
        return Err(Exception::Gp);
    }
    match pt.translate(la) {
        Translation::NotPresent => Err(Exception::Pf { addr: la, code: kind.pf_bits() }),
        Translation::Present { writable, executable, pa } => {
            let denied = match kind {
                AccessKind::Read => false,
                AccessKind::Write => !writable,
                AccessKind::Execute => !executable,
            };
            if denied { Err(Exception::Pf { addr: la, code: kind.pf_bits() | PfErrorCode::P }) } else { Ok(pa) }
        }
    }
}

/// Sparse ordinary memory: every canonical address is backed, pages appear on first write
/// and read as zero before. Used by tests and by the in-process platform as "kernel memory".
#[derive(Debug, Default)]
pub struct SparseMemory {
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE]>>,
    /// Page numbers that fault as not present (to exercise ordinary #PF paths).
    unmapped: std::collections::BTreeSet<u64>,
}

impl SparseMemory {
    /// Empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the page containing `addr` fault (ordinary not-present #PF) on any access.
    pub fn unmap(&mut self, addr: u64) {
        self.unmapped.insert(addr / PAGE_SIZE as u64);
    }

    fn check(&self, addr: u64, len: usize, write: bool) -> Result<(), Exception> {
        let end = addr.checked_add(len as u64).ok_or(Exception::Gp)?;
        if !is_canonical(addr) || (len > 0 && !is_canonical(end - 1)) {
            return Err(Exception::Gp);
        }
        let first = addr / PAGE_SIZE as u64;
        let last = (end.max(addr + 1) - 1) / PAGE_SIZE as u64;
        if let Some(&page) = self.unmapped.range(first..=last).next() {
            let fault_addr = (page * PAGE_SIZE as u64).max(addr);
            let code = if write { PfErrorCode::W } else { PfErrorCode::empty() };
            return Err(Exception::Pf { addr: fault_addr, code });
        }
        Ok(())
    }
}

impl Memory for SparseMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        self.check(addr, buf.len(), false)?;
        let mut done = 0;
        while done < buf.len() {
            let a = addr + done as u64;
            let off = (a % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - off).min(buf.len() - done);
            match self.pages.get(&(a / PAGE_SIZE as u64)) {
                Some(page) => buf[done..done + n].copy_from_slice(&page[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception> {
        self.check(addr, data.len(), true)?;
        let mut done = 0;
        while done < data.len() {
            let a = addr + done as u64;
            let off = (a % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - off).min(data.len() - done);
            let page = self.pages.entry(a / PAGE_SIZE as u64).or_insert_with(|| Box::new([0; PAGE_SIZE]));
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

/// A page table given as an explicit map from linear page to translation (tests, scripts).
#[derive(Debug, Default, Clone)]
pub struct MapPageTable {
    entries: BTreeMap<u64, Translation>,
}

impl MapPageTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps the page at `la` to physical `pa` with the given PTE permissions.
    pub fn map(&mut self, la: u64, pa: u64, writable: bool, executable: bool) {
        let page = la & !(PAGE_SIZE as u64 - 1);
        self.entries.insert(page, Translation::Present { pa: pa & !(PAGE_SIZE as u64 - 1), writable, executable });
    }

    /// Removes the PTE for the page at `la`.
    pub fn unmap(&mut self, la: u64) {
        self.entries.remove(&(la & !(PAGE_SIZE as u64 - 1)));
    }
}

impl PageTable for MapPageTable {
    fn translate(&self, la: u64) -> Translation {
        self.entries.get(&(la & !(PAGE_SIZE as u64 - 1))).copied().unwrap_or(Translation::NotPresent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_memory_round_trips_across_pages() {
        let mut mem = SparseMemory::new();
        let data: Vec<u8> = (0..6000).map(|i| i as u8).collect();
        mem.write(0x1000_0F00, &data).unwrap();
        let mut back = vec![0; 6000];
        mem.read(0x1000_0F00, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn unmapped_pages_fault_and_non_canonical_is_gp() {
        let mut mem = SparseMemory::new();
        mem.unmap(0x5000);
        let mut buf = [0u8; 16];
        assert_eq!(mem.read(0x4FF8, &mut buf), Err(Exception::Pf { addr: 0x5000, code: PfErrorCode::empty() }));
        assert_eq!(mem.write(0x5008, &buf), Err(Exception::Pf { addr: 0x5008, code: PfErrorCode::W }));
        assert_eq!(mem.read(0x8000_0000_0000, &mut buf), Err(Exception::Gp));
    }

    #[test]
    fn walk_reports_ordinary_fault_codes() {
        let mut pt = MapPageTable::new();
        pt.map(0x1000, 0x9000, false, false);
        assert_eq!(walk(&pt, 0x1010, AccessKind::Read), Ok(0x9000));
        let pf = |addr, code| Err(Exception::Pf { addr, code });
        assert_eq!(walk(&pt, 0x1010, AccessKind::Write), pf(0x1010, PfErrorCode::P | PfErrorCode::W | PfErrorCode::U));
        assert_eq!(
            walk(&pt, 0x1010, AccessKind::Execute),
            pf(0x1010, PfErrorCode::P | PfErrorCode::I | PfErrorCode::U)
        );
        assert_eq!(walk(&pt, 0x2000, AccessKind::Read), pf(0x2000, PfErrorCode::U));
    }
}
