//! The operating-system services the driver consumes, as small traits. The deterministic
//! in-process platform (`crate::sim`) implements them for tests; the native engine
//! implements them over the real process.

use bitflags::bitflags;
use sgxemu_cpu::LpId;

use crate::errno::KResult;

bitflags! {
    /// VMA protections, and a page's maximum protections (`vm_max_prot_bits`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Prot: u8 {
        /// VM_READ.
        const READ = 1;
        /// VM_WRITE.
        const WRITE = 2;
        /// VM_EXEC.
        const EXEC = 4;
    }
}

impl Prot {
    /// The protections SECINFO's R/W/X bits stand for.
    pub fn from_secinfo_perms(flags: u64) -> Prot {
        Prot::from_bits_truncate((flags & 0x7) as u8)
    }
}

/// Identifies an address space.
pub type MmId = u64;

/// One address space ("mm") that has the enclave mapped.
pub trait AddressSpace: Send + Sync {
    /// A stable identity (equal for the same mm).
    fn id(&self) -> MmId;
    /// False once the address space is exiting (walkers skip it).
    fn alive(&self) -> bool;
    /// Removes every PTE mapping the enclave page at `addr` (`sgx_zap_enclave_ptes`).
    fn zap(&self, addr: u64);
    /// Tests and clears the accessed bit of the PTE mapping `addr`, if any.
    fn test_and_clear_young(&self, addr: u64) -> bool;
}

/// The faulting VMA, as the fault handler sees it.
pub trait Vma {
    /// The VMA's protections (vm_flags R/W/X).
    fn prot(&self) -> Prot;
    /// Installs a PTE for `addr` pointing at the EPC page at physical `pa`, with the VMA's
    /// protections (`vmf_insert_pfn`). Called with the enclave lock held.
    fn insert_pfn(&mut self, addr: u64, pa: u64) -> KResult<()>;
    /// Clears the accessed bit of the just-installed PTE (the reclaimer's aging hint).
    fn clear_young(&mut self, addr: u64);
}

/// Flags of the user mapping an ADD_PAGES source lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceVma {
    /// VM_MAYEXEC: false for mappings of noexec mounts.
    pub may_exec: bool,
}

/// The calling task: its user memory, signals and personality.
pub trait Task {
    /// copy_from_user: EFAULT if any byte is not readable.
    fn copy_from_user(&self, addr: u64, buf: &mut [u8]) -> KResult<()>;
    /// copy_to_user: EFAULT if any byte is not writable.
    fn copy_to_user(&self, addr: u64, data: &[u8]) -> KResult<()>;
    /// The VMA containing `addr`, if any (ADD_PAGES' source check).
    fn source_vma(&self, addr: u64) -> Option<SourceVma>;
    /// A signal is pending for the task.
    fn signal_pending(&self) -> bool;
    /// A hint that `len` bytes of user memory at `addr` will be copied in soon: a task
    /// whose memory the emulator reaches directly brings them into the cache. Never fails
    /// and never faults, whatever the address.
    fn prefetch_user(&self, _addr: u64, _len: usize) {}
    /// The task's personality has READ_IMPLIES_EXEC.
    fn read_implies_exec(&self) -> bool;
    /// Whether `fd` is an open file of `/dev/sgx_provision`: `None` if `fd` is not an
    /// open file at all.
    fn is_provision_fd(&self, fd: i32) -> Option<bool>;
}

/// Per-enclave backing storage (the kernel's shmem file): encrypted pages and PCMDs.
pub trait Backing: Send + Sync {
    /// Reads bytes at `offset`; never-written bytes read as zero.
    fn read(&self, offset: u64, buf: &mut [u8]);
    /// Writes bytes at `offset` (ENOMEM if storage is exhausted).
    fn write(&mut self, offset: u64, data: &[u8]) -> KResult<()>;
    /// Drops the 4 KiB page at `offset` (truncate).
    fn drop_page(&mut self, offset: u64);
    /// Bytes currently stored.
    fn stored_bytes(&self) -> u64;
}

/// Machine-wide services.
pub trait Platform: Send + Sync {
    /// Sends an IPI to each logical processor in `lps` (those inside the enclave whose SECS
    /// is at `secs`) and waits until each has handled it: one that is inside an enclave
    /// takes an AEX (spec §7 "IPI").
    fn kick(&self, secs: u64, lps: &[LpId]);
    /// The IPIs after an SGX2 ioctl's ETRACK (`sgx_enclave_etrack`): each logical processor
    /// in `lps` must stop using translations from before the epoch that ETRACK ended. On
    /// hardware that is an IPI and its AEX (`kick`, the default). A platform whose
    /// translations are never stale may complete the epoch without interrupting anyone; the
    /// reclaimer's IPIs stay `kick`s, because there the AEX must save the thread's state
    /// before EWB takes its pages away.
    fn flush_translations(&self, secs: u64, lps: &[LpId]) {
        self.kick(secs, lps);
    }
    /// Wakes the reclaimer thread (ksgxd) if the platform runs one.
    fn wake_reclaimer(&self);
    /// Backing storage for a new enclave of `size` bytes.
    fn new_backing(&self, size: u64) -> Box<dyn Backing>;
    /// How long an SGX2 ioctl waits for a page the reclaimer holds (or for a free EPC page
    /// to reload into) before it returns EAGAIN. The kernel never waits (zero, the
    /// default); a platform whose reclaimer is much slower than hardware's may, so that
    /// callers that, like the kernel's selftests, never expect the race still see no
    /// EAGAIN — a timing the kernel could also produce.
    fn sgx2_ioctl_patience(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// A kernel warning (WARN_ON, "EPC page leaked") as it would reach the kernel log.
    fn log_warning(&self, _message: &str) {}
}
