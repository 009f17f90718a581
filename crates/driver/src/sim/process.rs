//! A simulated process: its VMAs, page tables, anonymous memory and file descriptors — the
//! user-space side the driver's `Task`, `AddressSpace` and `Vma` traits describe.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use sgxemu_arch::{PAGE_SIZE, PfErrorCode};
use sgxemu_cpu::{PageTable, Translation};

use crate::encl::Encl;
use crate::encls::Cpu;
use crate::errno::{Errno, KResult};
use crate::fault::FaultResult;
use crate::os::{AddressSpace, MmId, Prot, SourceVma, Task, Vma};
use crate::sgx::Sgx;

use super::page_table::PageTableMap;

const PAGE: u64 = PAGE_SIZE as u64;

fn page_of(addr: u64) -> u64 {
    addr & !(PAGE - 1)
}

/// `mmap` flags the simulation understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// MAP_SHARED (required for enclave files).
    Shared,
    /// MAP_PRIVATE.
    Private,
}

/// An open file.
#[derive(Clone, Debug)]
pub enum File {
    /// `/dev/sgx_enclave`.
    Enclave(Arc<Encl>),
    /// `/dev/sgx_provision`.
    Provision,
    /// Any other file (e.g. to pass a wrong fd to PROVISION).
    Other,
}

#[derive(Clone, Debug)]
enum VmaKind {
    Anon { may_exec: bool },
    Enclave(Option<Arc<Encl>>),
}

#[derive(Clone, Debug)]
struct Mapping {
    end: u64,
    prot: Prot,
    kind: VmaKind,
}

/// A PTE: where a page maps and with which protections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte {
    /// Physical address (EPC for enclave pages).
    pub pa: u64,
    /// Writable.
    pub writable: bool,
    /// Executable.
    pub executable: bool,
    /// Accessed bit.
    pub young: bool,
}

#[derive(Debug, Default)]
struct MmState {
    vmas: BTreeMap<u64, Mapping>,
    fds: FxHashMap<i32, File>,
    next_fd: i32,
    /// ioctls in flight per enclave (by address): each holds a reference to the open
    /// file, as `fdget` does, so a concurrent close cannot release the enclave under it.
    calls: FxHashMap<usize, usize>,
}

/// How the memory manager resolved a user fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultResolution {
    /// The access can be retried.
    Retry,
    /// SIGSEGV (bad area or access error, including every SGX-flagged #PF).
    Segv,
    /// SIGBUS (the enclave's fault handler refused).
    Bus,
    /// Out of memory.
    Oom,
}

static NEXT_MM: AtomicU64 = AtomicU64::new(1);

/// One simulated process (one address space).
#[derive(Debug)]
pub struct Process {
    id: MmId,
    sgx: Arc<Sgx>,
    /// The mmap lock: VMAs and the fd table.
    mm: RwLock<MmState>,
    /// The page-table lock.
    ptes: Mutex<PageTableMap>,
    /// Anonymous memory, by page.
    memory: Mutex<FxHashMap<u64, Box<[u8; PAGE_SIZE]>>>,
    alive: AtomicBool,
    /// A signal is pending (tests raise it to exercise ERESTARTSYS paths).
    pub signal_pending: AtomicBool,
    /// The personality has READ_IMPLIES_EXEC.
    pub read_implies_exec: AtomicBool,
    /// The kernel CPU final releases run on when no system call provides one (munmap).
    reaper: Mutex<Cpu>,
    /// The enclave program each TCS runs (keyed by the TCS's linear address).
    pub(crate) programs: Arc<Mutex<FxHashMap<u64, super::thread::Program>>>,
    /// Held shared by a thread for the duration of one instruction; a PTE zap takes it
    /// exclusively after removing the PTE — the TLB shootdown that waits until no
    /// instruction that translated through the old PTE is still in flight.
    pub(crate) shootdown: RwLock<()>,
}

impl Process {
    pub(crate) fn new(sgx: Arc<Sgx>) -> Self {
        let reaper = Mutex::new(sgx.new_cpu());
        Process {
            id: NEXT_MM.fetch_add(1, Ordering::Relaxed),
            sgx,
            mm: RwLock::new(MmState { next_fd: 3, ..MmState::default() }),
            ptes: Mutex::new(PageTableMap::default()),
            memory: Mutex::new(FxHashMap::default()),
            alive: AtomicBool::new(true),
            signal_pending: AtomicBool::new(false),
            read_implies_exec: AtomicBool::new(false),
            reaper,
            programs: Arc::new(Mutex::new(FxHashMap::default())),
            shootdown: RwLock::new(()),
        }
    }

    /// The driver this process talks to.
    pub fn sgx(&self) -> &Arc<Sgx> {
        &self.sgx
    }

    // ---- files -------------------------------------------------------------------------

    /// `open(path)`: `/dev/sgx_enclave` makes a new enclave object.
    pub fn open(&self, path: &str) -> KResult<i32> {
        let file = match path {
            "/dev/sgx_enclave" => File::Enclave(self.sgx.open_enclave()),
            "/dev/sgx_provision" => File::Provision,
            _ => File::Other,
        };
        let mut mm = self.mm.write();
        let fd = mm.next_fd;
        mm.next_fd += 1;
        mm.fds.insert(fd, file);
        Ok(fd)
    }

    /// The enclave behind `fd`.
    pub fn enclave(&self, fd: i32) -> Option<Arc<Encl>> {
        match self.mm.read().fds.get(&fd) {
            Some(File::Enclave(encl)) => Some(encl.clone()),
            _ => None,
        }
    }

    /// `close(fd)`: the enclave is released when no VMA maps it any more.
    pub fn close(&self, cpu: &mut Cpu, fd: i32) -> KResult<()> {
        let file = self.mm.write().fds.remove(&fd).ok_or(Errno(9))?;
        if let File::Enclave(encl) = file {
            self.release_if_unused(cpu, &encl);
        }
        Ok(())
    }

    /// Releases `encl` once no descriptor, VMA or call in flight refers to it (the last
    /// reference to its file).
    fn release_if_unused(&self, cpu: &mut Cpu, encl: &Arc<Encl>) {
        let mm = self.mm.read();
        let mapped = mm.vmas.values().any(|v| matches!(&v.kind, VmaKind::Enclave(Some(e)) if Arc::ptr_eq(e, encl)));
        let open = mm.fds.values().any(|f| matches!(f, File::Enclave(e) if Arc::ptr_eq(e, encl)));
        let in_call = mm.calls.contains_key(&(Arc::as_ptr(encl) as usize));
        drop(mm);
        if !mapped && !open && !in_call {
            encl.release(cpu);
        }
    }

    /// ioctl(2). The call holds a reference to the file until it returns.
    pub fn ioctl(&self, cpu: &mut Cpu, fd: i32, cmd: u32, arg: u64) -> KResult<()> {
        let encl = {
            let mut mm = self.mm.write();
            let encl = match mm.fds.get(&fd) {
                Some(File::Enclave(encl)) => encl.clone(),
                Some(_) => return Err(Errno::ENOTTY),
                None => return Err(Errno(9)),
            };
            *mm.calls.entry(Arc::as_ptr(&encl) as usize).or_default() += 1;
            encl
        };
        let result = encl.ioctl(cpu, &ProcessTask(self), cmd, arg);
        {
            let mut mm = self.mm.write();
            let key = Arc::as_ptr(&encl) as usize;
            if let Some(calls) = mm.calls.get_mut(&key) {
                *calls -= 1;
                if *calls == 0 {
                    mm.calls.remove(&key);
                }
            }
        }
        self.release_if_unused(cpu, &encl);
        result
    }

    // ---- memory map --------------------------------------------------------------------

    /// `mmap`: anonymous memory when `fd` is `None`, else a mapping of an enclave file at
    /// exactly `addr` (MAP_FIXED).
    pub fn mmap(self: &Arc<Self>, addr: u64, len: u64, prot: Prot, kind: MapKind, fd: Option<i32>) -> KResult<u64> {
        if !addr.is_multiple_of(PAGE) || len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = addr.checked_add(len.div_ceil(PAGE) * PAGE).ok_or(Errno::EINVAL)?;
        let vma_kind = match fd {
            None => VmaKind::Anon { may_exec: true },
            Some(fd) => {
                let encl = self.enclave(fd).ok_or(Errno::ENODEV)?;
                if kind == MapKind::Private {
                    return Err(Errno::EINVAL);
                }
                encl.may_map(addr, end, prot, self.read_implies_exec.load(Ordering::Relaxed))?;
                encl.mm_add(self.clone());
                VmaKind::Enclave(Some(encl))
            }
        };
        let mut mm = self.mm.write();
        Self::unmap_locked(&mut mm, &self.ptes, addr, end);
        mm.vmas.insert(addr, Mapping { end, prot, kind: vma_kind });
        Ok(addr)
    }

    /// Whether any mapping overlaps `[addr, addr + len)` (e.g. to place an ELRANGE).
    pub fn is_mapped(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        self.mm.read().vmas.range(..end).any(|(start, v)| v.end > addr && *start < end)
    }

    /// Marks the anonymous mapping containing `addr` as coming from a noexec mount.
    pub fn set_noexec(&self, addr: u64) {
        let mut mm = self.mm.write();
        if let Some((_, vma)) = mm.vmas.range_mut(..=addr).next_back()
            && let VmaKind::Anon { may_exec } = &mut vma.kind
        {
            *may_exec = false;
        }
    }

    /// `mprotect`: enclave ranges go through the driver's rules.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> KResult<()> {
        let end = addr + len.div_ceil(PAGE) * PAGE;
        let mut mm = self.mm.write();
        let enclaves: Vec<Arc<Encl>> = mm
            .vmas
            .range(..end)
            .filter(|(start, v)| v.end > addr && **start < end)
            .filter_map(|(_, v)| match &v.kind {
                VmaKind::Enclave(Some(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        for encl in enclaves {
            encl.may_map(addr, end, prot, self.read_implies_exec.load(Ordering::Relaxed))?;
        }
        Self::split(&mut mm, addr);
        Self::split(&mut mm, end);
        let starts: Vec<u64> = mm.vmas.range(addr..end).map(|(s, _)| *s).collect();
        for start in starts {
            if let Some(vma) = mm.vmas.get_mut(&start) {
                vma.prot = prot;
            }
        }
        self.ptes.lock().for_each_in_range(addr, end, |pte| {
            pte.writable = prot.contains(Prot::WRITE);
            pte.executable = prot.contains(Prot::EXEC);
        });
        Ok(())
    }

    /// `munmap`.
    /// Unmapping the last VMA of an enclave whose file is closed releases the enclave, as
    /// the kernel's final `fput` does (on the process's own kernel CPU).
    pub fn munmap(&self, addr: u64, len: u64) -> KResult<()> {
        let end = addr + len.div_ceil(PAGE) * PAGE;
        let unmapped: Vec<Arc<Encl>> = {
            let mut mm = self.mm.write();
            let enclaves = mm
                .vmas
                .range(..end)
                .filter(|(start, v)| v.end > addr && **start < end)
                .filter_map(|(_, v)| match &v.kind {
                    VmaKind::Enclave(Some(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            Self::unmap_locked(&mut mm, &self.ptes, addr, end);
            enclaves
        };
        for encl in unmapped {
            let mut reaper = self.reaper.lock();
            self.release_if_unused(&mut reaper, &encl);
        }
        Ok(())
    }

    fn split(mm: &mut MmState, at: u64) {
        let Some((&start, vma)) = mm.vmas.range(..at).next_back() else { return };
        if vma.end > at {
            let tail = vma.clone();
            mm.vmas.get_mut(&start).expect("exists").end = at;
            mm.vmas.insert(at, tail);
        }
    }

    fn unmap_locked(mm: &mut MmState, ptes: &Mutex<PageTableMap>, addr: u64, end: u64) {
        Self::split(mm, addr);
        Self::split(mm, end);
        let starts: Vec<u64> = mm.vmas.range(addr..end).map(|(s, _)| *s).collect();
        for start in starts {
            mm.vmas.remove(&start);
        }
        ptes.lock().remove_range(addr, end);
    }

    fn vma_at(mm: &MmState, addr: u64) -> Option<(u64, &Mapping)> {
        mm.vmas.range(..=addr).next_back().filter(|(_, v)| v.end > addr).map(|(s, v)| (*s, v))
    }

    // ---- user memory -------------------------------------------------------------------

    /// Writes the process's own memory (anonymous mappings; the test's "untrusted code").
    pub fn write_user(&self, addr: u64, data: &[u8]) -> KResult<()> {
        self.user_access(addr, data.len(), Prot::WRITE)?;
        let mut memory = self.memory.lock();
        for (i, byte) in data.iter().enumerate() {
            let at = addr + i as u64;
            let page = memory.entry(page_of(at)).or_insert_with(|| Box::new([0; PAGE_SIZE]));
            page[(at % PAGE) as usize] = *byte;
        }
        Ok(())
    }

    /// Reads the process's own memory.
    pub fn read_user(&self, addr: u64, buf: &mut [u8]) -> KResult<()> {
        self.user_access(addr, buf.len(), Prot::READ)?;
        let memory = self.memory.lock();
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = addr + i as u64;
            *byte = memory.get(&page_of(at)).map_or(0, |p| p[(at % PAGE) as usize]);
        }
        Ok(())
    }

    fn user_access(&self, addr: u64, len: usize, need: Prot) -> KResult<()> {
        let mm = self.mm.read();
        let mut at = addr;
        let end = addr.checked_add(len as u64).ok_or(Errno::EFAULT)?;
        while at < end {
            let (_, vma) = Self::vma_at(&mm, at).ok_or(Errno::EFAULT)?;
            if !vma.prot.contains(need) || !matches!(vma.kind, VmaKind::Anon { .. }) {
                return Err(Errno::EFAULT);
            }
            at = vma.end;
        }
        Ok(())
    }

    // ---- faults ------------------------------------------------------------------------

    /// The x86 fault path for a user-mode #PF at `addr` with error code `code`: SGX-flagged
    /// faults and access errors are SIGSEGV; enclave VMAs go to the driver's handler.
    pub fn handle_fault(self: &Arc<Self>, cpu: &mut Cpu, addr: u64, code: PfErrorCode) -> FaultResolution {
        if code.contains(PfErrorCode::SGX) {
            return FaultResolution::Segv;
        }
        let mm = self.mm.read();
        let Some((_, vma)) = Self::vma_at(&mm, addr) else { return FaultResolution::Segv };
        let needed = if code.contains(PfErrorCode::W) {
            Prot::WRITE
        } else if code.contains(PfErrorCode::I) {
            Prot::EXEC
        } else {
            Prot::READ
        };
        if !vma.prot.contains(needed) {
            return FaultResolution::Segv;
        }
        match &vma.kind {
            VmaKind::Anon { .. } => FaultResolution::Retry,
            VmaKind::Enclave(encl) => {
                let mut adapter = VmaAdapter { process: self, prot: vma.prot };
                let encl = encl.clone();
                match encl {
                    None => FaultResolution::Bus,
                    Some(encl) => match encl.fault(cpu, Some(&mut adapter), addr) {
                        FaultResult::NoPage => FaultResolution::Retry,
                        FaultResult::SigBus => FaultResolution::Bus,
                        FaultResult::Oom => FaultResolution::Oom,
                    },
                }
            }
        }
    }

    /// The PTE of `addr`, if any (tests).
    pub fn pte(&self, addr: u64) -> Option<Pte> {
        self.ptes.lock().get(page_of(addr)).copied()
    }

    /// Marks the process as exiting: driver walkers skip it.
    pub fn exit(&self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// The faulting VMA as the driver sees it.
struct VmaAdapter<'a> {
    process: &'a Process,
    prot: Prot,
}

impl Vma for VmaAdapter<'_> {
    fn prot(&self) -> Prot {
        self.prot
    }

    fn insert_pfn(&mut self, addr: u64, pa: u64) -> KResult<()> {
        let pte = Pte {
            pa,
            writable: self.prot.contains(Prot::WRITE),
            executable: self.prot.contains(Prot::EXEC),
            young: true,
        };
        self.process.ptes.lock().insert(page_of(addr), pte);
        Ok(())
    }

    fn clear_young(&mut self, addr: u64) {
        if let Some(pte) = self.process.ptes.lock().get_mut(page_of(addr)) {
            pte.young = false;
        }
    }
}

impl AddressSpace for Process {
    fn id(&self) -> MmId {
        self.id
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn zap(&self, addr: u64) {
        self.ptes.lock().remove(page_of(addr));
        // flush_tlb: wait for instructions that may still use the old translation. One that
        // translated through it took `shootdown` before the page-table lock we just took
        // after it, so a free lock seen now means none is in flight: skip the wait, which is
        // most of a zap's cost when no thread is inside.
        if self.shootdown.is_locked() {
            drop(self.shootdown.write());
        }
    }

    fn test_and_clear_young(&self, addr: u64) -> bool {
        match self.ptes.lock().get_mut(page_of(addr)) {
            Some(pte) => std::mem::replace(&mut pte.young, false),
            None => false,
        }
    }
}

impl PageTable for Process {
    fn translate(&self, la: u64) -> Translation {
        match self.ptes.lock().get_mut(page_of(la)) {
            Some(pte) => {
                pte.young = true;
                Translation::Present { pa: pte.pa, writable: pte.writable, executable: pte.executable }
            }
            None => Translation::NotPresent,
        }
    }
}

/// The calling task of an ioctl: this process.
struct ProcessTask<'a>(&'a Process);

impl Task for ProcessTask<'_> {
    fn copy_from_user(&self, addr: u64, buf: &mut [u8]) -> KResult<()> {
        self.0.read_user(addr, buf)
    }

    fn copy_to_user(&self, addr: u64, data: &[u8]) -> KResult<()> {
        self.0.write_user(addr, data)
    }

    fn source_vma(&self, addr: u64) -> Option<SourceVma> {
        let mm = self.0.mm.read();
        let (_, vma) = Process::vma_at(&mm, addr)?;
        let may_exec = match vma.kind {
            VmaKind::Anon { may_exec } => may_exec,
            VmaKind::Enclave(_) => true,
        };
        Some(SourceVma { may_exec })
    }

    fn signal_pending(&self) -> bool {
        self.0.signal_pending.load(Ordering::Relaxed)
    }

    fn read_implies_exec(&self) -> bool {
        self.0.read_implies_exec.load(Ordering::Relaxed)
    }

    fn is_provision_fd(&self, fd: i32) -> Option<bool> {
        match self.0.mm.read().fds.get(&fd) {
            None => None,
            Some(File::Provision) => Some(true),
            Some(_) => Some(false),
        }
    }
}
