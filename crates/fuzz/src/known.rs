//! Differences from the kernel that are known and being fixed elsewhere.
//!
//! The oracle always predicts the *kernel's* answer. An operation it tags with a [`Known`]
//! whose entry is in [`KNOWN_MISMATCHES`] and that gets another answer is counted as
//! "known", not as a mismatch; every such count is printed, so nothing is accepted
//! silently. When an entry's operations start matching the kernel, the fuzzer says so, and
//! the entry should be deleted from the list — after which a regression is a mismatch again.

/// A class of operations where sgxemu is known to answer differently from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Known {
    /// CREATE with SECS.SIZE = 2^63: the kernel's backing file size overflows → EINVAL.
    CreateSize2p63,
    /// ADD_PAGES from an execute-only source page: get_user_pages needs VM_READ → EFAULT.
    AddExecOnlySource,
    /// FIOCLEX, FIONCLEX, FIONBIO, FIOASYNC, FIGETBSZ: the VFS handles them → 0.
    VfsFileIoctl,
    /// mmap MAP_FIXED_NOREPLACE over an existing mapping → EEXIST.
    MmapFixedNoReplace,
    /// mmap with a file offset that is not page aligned → EINVAL.
    MmapUnalignedOffset,
    /// mmap PROT_WRITE | MAP_SHARED of an O_RDONLY descriptor → EACCES.
    MmapWriteOfReadOnlyFd,
    /// mmap with an unaligned hint and no MAP_FIXED: the kernel rounds it → success.
    MmapUnalignedHint,
    /// mprotect with an unaligned start → EINVAL.
    MprotectUnalignedStart,
    /// mprotect with unknown protection bits → EINVAL.
    MprotectUnknownBits,
    /// mprotect over a range that spans enclave and ordinary memory: each VMA in turn.
    MprotectSpanning,
    /// mprotect adding PROT_WRITE to a MAP_SHARED mapping of an O_RDONLY descriptor: mmap
    /// cleared VM_MAYWRITE, so the kernel answers EACCES (found by this fuzzer; sgxemu lets it
    /// through).
    MprotectWriteOfReadOnlyFd,
}

/// The known differences that are still open (none: every class above gets the kernel's
/// answer). Add an entry when a difference is found and not fixed at once; delete it when the
/// fix lands.
///
/// Not generated at all, because each has a test of its own (`crates/cli/tests/run.rs`):
/// `close()` racing an ioctl on the same enclave (each thread closes only its own
/// descriptors, never while it has an ioctl in flight), and EPC exhaustion with nothing
/// reclaimable (the fuzzer keeps its enclaves small).
pub const KNOWN_MISMATCHES: &[Known] = &[];

/// Whether `known` is still on the list.
pub fn is_open(known: Known) -> bool {
    KNOWN_MISMATCHES.contains(&known)
}
