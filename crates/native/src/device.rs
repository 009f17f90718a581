//! `/dev/sgx_enclave` and `/dev/sgx_provision` as the program sees them: real file
//! descriptors (of `/dev/null`, so fd numbers, `dup`-free `close` and `poll` behave), whose
//! ioctls, mmaps, munmaps and mprotects reach the driver with the kernel's results.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::c_int;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sgxemu_driver::os::{Prot, SourceVma, Task};
use sgxemu_driver::{Encl, Errno, KResult};

use crate::engine::Engine;
use crate::signals::{self, HeldSignals};
use crate::user_copy::Copier;

/// The device nodes the emulator provides.
pub const ENCLAVE_PATH: &str = "/dev/sgx_enclave";
/// The provisioning node.
pub const PROVISION_PATH: &str = "/dev/sgx_provision";

/// An open emulated device.
#[derive(Clone, Debug)]
pub enum DeviceFile {
    /// An enclave (one per open of `/dev/sgx_enclave`).
    Enclave(Arc<Encl>),
    /// `/dev/sgx_provision`.
    Provision,
}

/// The open emulated devices, by fd.
#[derive(Debug, Default)]
pub struct Devices {
    files: Mutex<FxHashMap<c_int, DeviceFile>>,
    count: AtomicUsize,
}

impl Devices {
    /// Records `fd` as an open device.
    pub fn insert(&self, fd: c_int, file: DeviceFile) {
        let mut files = self.files.lock();
        files.insert(fd, file);
        self.count.store(files.len(), Ordering::Release);
    }

    /// The device behind `fd`, if it is one of ours (lock-free when none is open).
    pub fn get(&self, fd: c_int) -> Option<DeviceFile> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.files.lock().get(&fd).cloned()
    }

    /// Forgets `fd`; returns what it was.
    pub fn remove(&self, fd: c_int) -> Option<DeviceFile> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut files = self.files.lock();
        let file = files.remove(&fd);
        self.count.store(files.len(), Ordering::Release);
        file
    }

    /// The descriptors of open devices in `[first, last]`.
    pub fn open_in(&self, first: c_int, last: c_int) -> Vec<c_int> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.files.lock().keys().copied().filter(|fd| (first..=last).contains(fd)).collect()
    }

    /// Whether any fd still refers to `encl`.
    pub fn refers_to(&self, encl: &Arc<Encl>) -> bool {
        self.files.lock().values().any(|f| matches!(f, DeviceFile::Enclave(e) if Arc::ptr_eq(e, encl)))
    }
}

/// Whether the process runs with READ_IMPLIES_EXEC (which the driver refuses for enclaves).
fn read_implies_exec() -> bool {
    // SAFETY: personality(0xffffffff) only queries.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    persona >= 0 && persona & libc::READ_IMPLIES_EXEC != 0
}

/// How often the driver's `signal_pending()` asks the kernel (one system call): every call
/// the first time, then every this many calls. The driver asks once per page in its loops,
/// where a system call would be a tenth of an EADD's cost; answering from the last look for
/// up to fifteen pages only makes an interrupted call stop a few pages later.
const SIGNAL_CHECK_INTERVAL: u32 = 16;

/// The calling thread as the driver's `Task`, for one system call, run while its
/// asynchronous signals are `held`.
struct NativeTask<'a> {
    engine: &'a Engine,
    copier: Copier,
    held: &'a HeldSignals,
    checks: Cell<u32>,
    /// The deliverable signals `signal_pending()` saw, once it saw any.
    interrupted_by: Cell<Option<libc::sigset_t>>,
}

impl<'a> NativeTask<'a> {
    fn new(engine: &'a Engine, held: &'a HeldSignals) -> Self {
        NativeTask {
            engine,
            // The hold leaves SIGSEGV and SIGBUS as the program had them: its mask decides.
            copier: Copier::for_mask(engine.pid, held.caller_mask()),
            held,
            checks: Cell::new(0),
            interrupted_by: Cell::new(None),
        }
    }
}

impl Task for NativeTask<'_> {
    fn copy_from_user(&self, addr: u64, buf: &mut [u8]) -> KResult<()> {
        self.copier.read(addr, buf).map_err(|_| Errno::EFAULT)
    }

    fn copy_to_user(&self, addr: u64, data: &[u8]) -> KResult<()> {
        self.copier.write(addr, data).map_err(|_| Errno::EFAULT)
    }

    fn source_vma(&self, _addr: u64) -> Option<SourceVma> {
        // No VMA lookup here: an unmapped source fails the copy that follows with the same
        // EFAULT, so probing first would only cost a system call per page. (VM_MAYEXEC is
        // not visible from user space; sources are taken as executable-mappable.)
        Some(SourceVma { may_exec: true })
    }

    fn prefetch_user(&self, addr: u64, len: usize) {
        crate::prefetch::lines(addr, len);
    }

    fn signal_pending(&self) -> bool {
        let checks = self.checks.get();
        self.checks.set(checks.wrapping_add(1));
        if self.interrupted_by.get().is_none() && checks.is_multiple_of(SIGNAL_CHECK_INTERVAL) {
            let deliverable = self.held.deliverable();
            if !signals::is_empty(&deliverable) {
                self.interrupted_by.set(Some(deliverable));
            }
        }
        self.interrupted_by.get().is_some()
    }

    fn read_implies_exec(&self) -> bool {
        read_implies_exec()
    }

    fn is_provision_fd(&self, fd: i32) -> Option<bool> {
        match self.engine.devices.get(fd) {
            Some(DeviceFile::Provision) => Some(true),
            Some(DeviceFile::Enclave(_)) => Some(false),
            // SAFETY: F_GETFD only queries the descriptor table.
            None => (unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).then_some(false),
        }
    }
}

impl Engine {
    /// After `open` of a device path returned `fd`: make it an emulated device.
    pub fn opened(&self, path: &str, fd: c_int) {
        let file =
            if path == PROVISION_PATH { DeviceFile::Provision } else { DeviceFile::Enclave(self.sgx.open_enclave()) };
        self.devices.insert(fd, file);
    }

    /// After `dup`, `dup2`, `dup3` or `fcntl(F_DUPFD…)` made `new` a second descriptor of
    /// `old`'s open file: a descriptor of a device is one too, of the same enclave. Whatever
    /// `new` named before (which the call closed) is closed here first.
    pub fn duplicated(&self, old: c_int, new: c_int) {
        if old == new {
            return;
        }
        self.closed(new);
        if let Some(file) = self.devices.get(old) {
            self.devices.insert(new, file);
        }
    }

    /// `close(fd)` of a device: the enclave is released once nothing maps it.
    pub fn closed(&self, fd: c_int) {
        if let Some(DeviceFile::Enclave(encl)) = self.devices.remove(fd) {
            let _held = HeldSignals::hold();
            self.release_if_unused(&encl);
        }
    }

    pub(crate) fn release_if_unused(&self, encl: &Arc<Encl>) {
        if !self.space.maps(encl) && !self.devices.refers_to(encl) {
            // `with_current`: a close may come from a destructor, after thread-locals are gone.
            crate::thread::with_current(&self.processor, |state| encl.release(&mut state.cpus().kcpu));
        }
    }

    /// ioctl on a device fd.
    pub fn ioctl(&self, fd: c_int, cmd: u32, arg: u64) -> KResult<()> {
        // Each round is one entry into the call, as the kernel's restart re-enters it.
        loop {
            let encl = match self.devices.get(fd) {
                Some(DeviceFile::Enclave(encl)) => encl,
                Some(DeviceFile::Provision) => return Err(Errno::ENOTTY),
                None => return Err(Errno(libc::EBADF)),
            };
            let held = HeldSignals::hold();
            let task = NativeTask::new(self, &held);
            let result = crate::thread::with_current(&self.processor, |state| {
                encl.ioctl(&mut state.cpus().kcpu, &task, cmd, arg)
            });
            let interrupted_by = task.interrupted_by.get();
            // The signals that waited are delivered here, their handlers run outside the
            // call; then the kernel's ERESTARTSYS rule decides.
            drop(held);
            match (result, interrupted_by) {
                (Err(Errno::ERESTARTSYS), Some(signals)) if signals::restarts_after(&signals) => continue,
                (Err(Errno::ERESTARTSYS), _) => return Err(Errno::EINTR),
                (other, _) => return other,
            }
        }
    }

    /// mmap of an enclave fd. Returns the address.
    pub fn mmap(&self, addr: u64, len: u64, prot: c_int, flags: c_int, fd: c_int) -> KResult<u64> {
        let Some(DeviceFile::Enclave(encl)) = self.devices.get(fd) else { return Err(Errno::ENODEV) };
        let _held = HeldSignals::hold();
        if len == 0 || !addr.is_multiple_of(4096) {
            return Err(Errno::EINVAL);
        }
        if flags & libc::MAP_SHARED == 0 {
            return Err(Errno::EINVAL);
        }
        let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
        let prot = prot_of(prot);
        let len = len.div_ceil(4096) * 4096;
        let read_implies_exec = read_implies_exec();
        if fixed {
            encl.may_map(addr, addr + len, prot, read_implies_exec)?;
            let start = self.space.map(addr, len, prot, encl.clone(), true).map_err(io_errno)?;
            encl.mm_add(self.space.clone());
            return Ok(start);
        }
        // The host picks the address; the driver's rules then apply to where it landed.
        let start = self.space.map(addr, len, prot, encl.clone(), false).map_err(io_errno)?;
        if let Err(e) = encl.may_map(start, start + len, prot, read_implies_exec) {
            let _ = self.space.unmap(start, len);
            return Err(e);
        }
        encl.mm_add(self.space.clone());
        Ok(start)
    }

    /// munmap of a range holding enclave mappings.
    pub fn munmap(&self, addr: u64, len: u64) -> KResult<()> {
        let _held = HeldSignals::hold();
        let touched = self.space.unmap(addr, len).map_err(io_errno)?;
        for encl in touched {
            self.release_if_unused(&encl);
        }
        Ok(())
    }

    /// mprotect of a range holding enclave mappings: the driver's per-page maximum applies.
    pub fn mprotect(&self, addr: u64, len: u64, prot: c_int) -> KResult<()> {
        let _held = HeldSignals::hold();
        let prot = prot_of(prot);
        let len = len.div_ceil(4096) * 4096;
        let read_implies_exec = read_implies_exec();
        for encl in self.space.enclaves_in(addr, len) {
            encl.may_map(addr, addr + len, prot, read_implies_exec)?;
        }
        self.space.protect(addr, len, prot).map_err(io_errno)
    }
}

fn prot_of(prot: c_int) -> Prot {
    Prot::from_bits_truncate((prot & 0x7) as u8)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::ENOMEM))
}
