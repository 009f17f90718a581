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

/// The open emulated devices, by fd, and the calls in flight on them.
#[derive(Debug, Default)]
pub struct Devices {
    table: Mutex<Table>,
    /// Open descriptors (read without the lock, to answer "not ours" quickly).
    count: AtomicUsize,
}

/// What [`Devices`] guards.
#[derive(Debug, Default)]
struct Table {
    files: FxHashMap<c_int, DeviceFile>,
    /// Descriptors being closed: still open in the host until its close returns, but
    /// already gone for the program (a racing call finds EBADF, as the kernel's fd table
    /// would answer, not the ENOTTY of the `/dev/null` underneath).
    closing: rustc_hash::FxHashSet<c_int>,
    /// Calls in flight per enclave (keyed by its address). Each holds a reference to the
    /// open file, as the kernel's `fdget` does for an ioctl or mmap: a `close` during the
    /// call drops only the descriptor's reference, and the enclave is released when the
    /// last reference goes.
    calls: FxHashMap<usize, usize>,
}

impl Table {
    fn refers_to(&self, encl: &Arc<Encl>) -> bool {
        self.calls.contains_key(&key(encl))
            || self.files.values().any(|f| matches!(f, DeviceFile::Enclave(e) if Arc::ptr_eq(e, encl)))
    }
}

fn key(encl: &Arc<Encl>) -> usize {
    Arc::as_ptr(encl) as usize
}

impl Devices {
    /// Records `fd` as an open device.
    pub fn insert(&self, fd: c_int, file: DeviceFile) {
        let mut table = self.table.lock();
        table.files.insert(fd, file);
        table.closing.remove(&fd);
        self.count.store(table.files.len(), Ordering::Release);
    }

    /// The device behind `fd`, if it is one of ours (lock-free when none is open).
    pub fn get(&self, fd: c_int) -> Option<DeviceFile> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.table.lock().files.get(&fd).cloned()
    }

    /// Forgets `fd`; returns what it was.
    pub fn remove(&self, fd: c_int) -> Option<DeviceFile> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut table = self.table.lock();
        let file = table.files.remove(&fd);
        table.closing.remove(&fd);
        self.count.store(table.files.len(), Ordering::Release);
        file
    }

    /// The descriptors of open devices in `[first, last]`.
    pub fn open_in(&self, first: c_int, last: c_int) -> Vec<c_int> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.table.lock().files.keys().copied().filter(|fd| (first..=last).contains(fd)).collect()
    }

    /// Marks `fd` as being closed (before the host's close); true if it is one of ours.
    fn begin_close(&self, fd: c_int) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut table = self.table.lock();
        let ours = table.files.contains_key(&fd);
        if ours {
            table.closing.insert(fd);
        }
        ours
    }

    /// Forgets `fd` after the host closed it, unless an open meanwhile reused the number.
    fn end_close(&self, fd: c_int) -> Option<DeviceFile> {
        let mut table = self.table.lock();
        if !table.closing.remove(&fd) {
            return None;
        }
        let file = table.files.remove(&fd);
        self.count.store(table.files.len(), Ordering::Release);
        file
    }

    /// Whether any fd, or any call in flight, still refers to `encl`.
    pub fn refers_to(&self, encl: &Arc<Encl>) -> bool {
        self.table.lock().refers_to(encl)
    }

    /// The device behind `fd` for the duration of one call: an enclave is held (counted in
    /// flight) until [`Devices::end_call`], in the same critical section that finds it, so
    /// a concurrent `close` cannot release it in between.
    fn begin_call(&self, fd: c_int) -> Option<DeviceFile> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut table = self.table.lock();
        if table.closing.contains(&fd) {
            return None;
        }
        let file = table.files.get(&fd).cloned()?;
        if let DeviceFile::Enclave(encl) = &file {
            *table.calls.entry(key(encl)).or_default() += 1;
        }
        Some(file)
    }

    /// Ends a call begun by [`Devices::begin_call`]; true if nothing refers to `encl` any
    /// more (its descriptors were closed meanwhile).
    fn end_call(&self, encl: &Arc<Encl>) -> bool {
        let mut table = self.table.lock();
        if let Some(calls) = table.calls.get_mut(&key(encl)) {
            *calls -= 1;
            if *calls == 0 {
                table.calls.remove(&key(encl));
            }
        }
        !table.refers_to(encl)
    }
}

/// One ioctl or mmap in flight on an enclave: its reference to the open file, dropped (and
/// the enclave released, if that was the last reference) when the call ends.
struct Call<'a> {
    engine: &'a Engine,
    encl: Arc<Encl>,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.engine.devices.end_call(&self.encl) {
            let _held = HeldSignals::hold();
            self.engine.release_if_unused(&self.encl);
        }
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
    /// A mapping known readable to `get_user_pages` (ADD_PAGES sources), from and until.
    readable: Cell<(u64, u64)>,
    /// `/proc/self/maps`, opened at the first source check (-1: could not be).
    maps: Cell<Option<c_int>>,
}

impl Drop for NativeTask<'_> {
    fn drop(&mut self) {
        if let Some(fd) = self.maps.get().filter(|&fd| fd >= 0) {
            let _ = crate::sys::close(fd);
        }
    }
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
            readable: Cell::new((0, 0)),
            maps: Cell::new(None),
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

    fn source_vma(&self, addr: u64) -> Option<SourceVma> {
        // The kernel pins the source with get_user_pages, which needs VM_READ: a page this
        // CPU can read but whose mapping lacks PROT_READ (execute-only) is EFAULT, as an
        // unmapped one is. The mapping is asked of the kernel once per call and mapping
        // (PROCMAP_QUERY); where the kernel cannot answer, each page is pinned once.
        // VM_MAYEXEC is not visible from user space: sources count as executable-mappable.
        let (from, until) = self.readable.get();
        if (from..until).contains(&addr) {
            return Some(SourceVma { may_exec: true });
        }
        let maps = match self.maps.get() {
            Some(fd) => fd,
            None => {
                let fd = crate::sys::open_own_maps().unwrap_or(-1);
                self.maps.set(Some(fd));
                fd
            }
        };
        let vma = if maps >= 0 { crate::sys::query_vma(maps, addr).ok() } else { None };
        let readable = match vma {
            Some(Some((start, end, readable))) => {
                if readable {
                    self.readable.set((start, end));
                }
                readable
            }
            Some(None) => false,
            None => crate::sys::page_readable(self.engine.pid, addr & !4095),
        };
        readable.then_some(SourceVma { may_exec: true })
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

    /// Before the host closes `fd`: from now on calls on it find EBADF. Returns whether it
    /// is a device descriptor ([`Engine::close_done`] must follow the host's close).
    pub fn close_begin(&self, fd: c_int) -> bool {
        self.devices.begin_close(fd)
    }

    /// After the host closed `fd` (marked by [`Engine::close_begin`]): the descriptor's
    /// reference to the file goes; the enclave is released if it was the last.
    pub fn close_done(&self, fd: c_int) {
        if let Some(DeviceFile::Enclave(encl)) = self.devices.end_close(fd) {
            let _held = HeldSignals::hold();
            self.release_if_unused(&encl);
        }
    }

    /// `fd` no longer names a device (closed, or replaced by `dup2`): the enclave is
    /// released once nothing else refers to it.
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
        if is_vfs_ioctl(cmd) {
            return vfs_ioctl(fd, cmd, arg);
        }
        // Each round is one entry into the call, as the kernel's restart re-enters it.
        loop {
            let call = match self.devices.begin_call(fd) {
                Some(DeviceFile::Enclave(encl)) => Call { engine: self, encl },
                Some(DeviceFile::Provision) => return Err(Errno::ENOTTY),
                None => return Err(Errno(libc::EBADF)),
            };
            let held = HeldSignals::hold();
            let task = NativeTask::new(self, &held);
            let result = crate::thread::with_current(&self.processor, |state| {
                call.encl.ioctl(&mut state.cpus().kcpu, &task, cmd, arg)
            });
            drop(call);
            let interrupted_by = task.interrupted_by.get();
            drop(task);
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

    /// mmap of an enclave fd at file offset 0. Returns the address.
    pub fn mmap(&self, addr: u64, len: u64, prot: c_int, flags: c_int, fd: c_int) -> KResult<u64> {
        self.mmap_at(addr, len, prot, flags, fd, 0)
    }

    /// mmap of an enclave fd, in the kernel's order of checks: an unaligned `offset`
    /// (EINVAL, x86's `sys_mmap`), length, MAP_PRIVATE (the driver's
    /// `get_unmapped_area`: EINVAL), an unaligned MAP_FIXED address (EINVAL; a hint is
    /// only rounded), MAP_FIXED_NOREPLACE over a mapping (EEXIST), the descriptor's access
    /// mode (EACCES: shared writable needs a writable open, any mapping a readable one),
    /// then the driver's `sgx_encl_may_map`. The offset is otherwise ignored, as the
    /// driver ignores it. Returns the address.
    pub fn mmap_at(&self, addr: u64, len: u64, prot: c_int, flags: c_int, fd: c_int, offset: u64) -> KResult<u64> {
        let encl = match self.devices.begin_call(fd) {
            Some(DeviceFile::Enclave(encl)) => encl,
            Some(DeviceFile::Provision) => return Err(Errno::ENODEV),
            // Closed by another thread since the call was routed here.
            None => return Err(Errno(libc::EBADF)),
        };
        let call = Call { engine: self, encl };
        let encl = &call.encl;
        let _held = HeldSignals::hold();
        if !offset.is_multiple_of(4096) || len == 0 {
            return Err(Errno::EINVAL);
        }
        let len = len.checked_next_multiple_of(4096).ok_or(Errno::ENOMEM)?;
        if flags & libc::MAP_SHARED == 0 {
            return Err(Errno::EINVAL);
        }
        let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
        if fixed && !addr.is_multiple_of(4096) {
            return Err(Errno::EINVAL);
        }
        let noreplace = flags & libc::MAP_FIXED_NOREPLACE != 0 && flags & libc::MAP_FIXED == 0;
        if noreplace {
            // Reserve the range only if nothing is mapped there (the host says EEXIST
            // otherwise); the enclave mapping then replaces the reservation.
            let reserve = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
            let at = crate::sys::mmap(addr, len, libc::PROT_NONE, reserve, -1, 0).map_err(io_errno)?;
            if at != addr {
                // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
                let _ = crate::sys::munmap(at, len);
                return Err(Errno(libc::EEXIST));
            }
        }
        let prot_bits = prot;
        let prot = prot_of(prot);
        let read_implies_exec = read_implies_exec();
        if fixed {
            let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
            let mapped = check_access_mode(fd, prot_bits).and_then(|may_write| {
                encl.may_map(addr, end, prot, read_implies_exec)?;
                self.space.map(addr, len, prot, encl.clone(), true, may_write).map_err(io_errno)
            });
            return match mapped {
                Ok(start) => {
                    encl.mm_add(self.space.clone());
                    Ok(start)
                }
                Err(e) => {
                    if noreplace {
                        // Nothing was there: leave nothing there.
                        let _ = crate::sys::munmap(addr, len);
                    }
                    Err(e)
                }
            };
        }
        let may_write = check_access_mode(fd, prot_bits)?;
        // The host picks the address (rounding a hint); the driver's rules then apply to
        // where it landed.
        let hint = addr & !4095;
        let start = self.space.map(hint, len, prot, encl.clone(), false, may_write).map_err(io_errno)?;
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

    /// mprotect of a range holding enclave mappings, as the kernel's `do_mprotect_pkey`:
    /// an unaligned start or unknown protection bits are EINVAL; then VMA by VMA in address
    /// order, each changed before the next is looked at — an enclave VMA only if the
    /// driver's `may_map` allows its part of the range, ordinary memory by the host — so a
    /// failure leaves the VMAs before it changed and those after it as they were.
    pub fn mprotect(&self, addr: u64, len: u64, prot: c_int) -> KResult<()> {
        let _held = HeldSignals::hold();
        if !addr.is_multiple_of(4096) {
            return Err(Errno::EINVAL);
        }
        let known = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC | PROT_SEM;
        if prot & !known != 0 {
            // (PROT_GROWSDOWN/UP need a stack VMA at the start: enclave VMAs are none.)
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let len = len.checked_next_multiple_of(4096).ok_or(Errno::ENOMEM)?;
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        let host_prot = prot;
        let prot = prot_of(prot);
        let read_implies_exec = read_implies_exec();
        let mut at = addr;
        for (range, encl, may_write) in self.space.enclave_vmas_in(addr, end) {
            if at < range.start {
                crate::sys::mprotect(at, range.start - at, host_prot).map_err(io_errno)?;
            }
            // mprotect_fixup's VM_MAY* check comes before the driver's own.
            if prot.contains(Prot::WRITE) && !may_write {
                return Err(Errno::EACCES);
            }
            encl.may_map(range.start, range.end, prot, read_implies_exec)?;
            self.space.protect(range.start, range.end - range.start, prot).map_err(io_errno)?;
            at = range.end;
        }
        if at < end {
            crate::sys::mprotect(at, end - at, host_prot).map_err(io_errno)?;
        }
        Ok(())
    }
}

/// The ioctls the kernel's `do_vfs_ioctl` answers for every file before the driver sees
/// the call: close-on-exec, non-blocking and async flags, FIOQSIZE and the block size.
fn is_vfs_ioctl(cmd: u32) -> bool {
    const FIGETBSZ: u32 = 2;
    [libc::FIOCLEX, libc::FIONCLEX, libc::FIONBIO, libc::FIOASYNC, libc::FIOQSIZE].iter().any(|&c| c as u32 == cmd)
        || cmd == FIGETBSZ
}

/// A `do_vfs_ioctl` command on a device fd, on the descriptor itself (a descriptor of a
/// character device, as the device node's is), which keeps its flags where `fcntl` and
/// `exec` look for them.
fn vfs_ioctl(fd: c_int, cmd: u32, arg: u64) -> KResult<()> {
    // SAFETY: one of the generic ioctls above on a descriptor the program owns; `arg` is
    // the program's pointer, which the kernel checks.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, fd as libc::c_long, cmd as libc::c_long, arg) };
    if ret < 0 { Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))) } else { Ok(()) }
}

/// The file-mode checks of the kernel's `do_mmap` for a shared mapping of `fd`: writable
/// needs FMODE_WRITE, and any mapping FMODE_READ (EACCES). Returns VM_MAYWRITE: whether the
/// descriptor is open for writing.
fn check_access_mode(fd: c_int, prot: c_int) -> KResult<bool> {
    // SAFETY: F_GETFL only reads the descriptor's status flags.
    let flags = unsafe { libc::syscall(libc::SYS_fcntl, fd as libc::c_long, libc::F_GETFL as libc::c_long) } as c_int;
    if flags < 0 {
        return Err(Errno(libc::EBADF));
    }
    let access = flags & libc::O_ACCMODE;
    let readable = access == libc::O_RDONLY || access == libc::O_RDWR;
    let writable = access == libc::O_WRONLY || access == libc::O_RDWR;
    if (prot & libc::PROT_WRITE != 0 && !writable) || !readable {
        return Err(Errno::EACCES);
    }
    Ok(writable)
}

/// PROT_SEM (mman-common.h; not in the libc crate for x86-64): accepted by mprotect.
const PROT_SEM: c_int = 0x8;

fn prot_of(prot: c_int) -> Prot {
    Prot::from_bits_truncate((prot & 0x7) as u8)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::ENOMEM))
}
