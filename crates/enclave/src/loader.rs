//! Loading an [`EnclaveImage`] through a [`Device`]: reserve a naturally aligned ELRANGE,
//! ENCLAVE_CREATE, ADD_PAGES (measured as the image says), INIT with the SIGSTRUCT, and map
//! every page at its address with its permissions — the sequence the kernel's selftests and
//! SDK loaders use.

use std::ffi::c_int;

use sgxemu_arch::{PAGE_SIZE, PageType, Secinfo, SecinfoFlags, Secs, Sigstruct};
use sgxemu_uapi::{
    SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_INIT, SGX_PAGE_MEASURE, SgxEnclaveAddPages,
    SgxEnclaveCreate, SgxEnclaveInit,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::device::{Device, EnclaveFile, Errno};
use crate::image::{EnclaveImage, ImagePage, PageData};

/// Pages per ADD_PAGES call: large enough to amortise the ioctl, small enough to report
/// progress often and keep each source buffer at 1 MiB.
const ADD_BATCH_PAGES: usize = 256;

/// Where loading stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The image cannot be an enclave (size not a power of two, pages outside ELRANGE…).
    #[error("invalid image: {0}")]
    Image(String),
    /// Reserving the address range failed.
    #[error("cannot reserve {size:#x} bytes of address space for the enclave: {errno}")]
    Reserve { size: u64, errno: Errno },
    /// An open/ioctl/mmap step failed.
    #[error("{step} failed: {errno}")]
    Device { step: &'static str, errno: Errno },
    /// ADD_PAGES stopped part-way.
    #[error("ENCLAVE_ADD_PAGES at offset {offset:#x} failed after {added:#x} bytes: {errno}")]
    AddPages { offset: u64, added: u64, errno: Errno },
    /// EINIT refused the SIGSTRUCT (the driver reports every EINIT error as EPERM).
    #[error(
        "ENCLAVE_INIT: EINIT refused the SIGSTRUCT (wrong MRENCLAVE, signature, attributes or \
         MISCSELECT; `sgxemu measure --sigstruct` tells which)"
    )]
    Init,
}

/// Progress of a load, reported after each batch of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadProgress {
    /// Pages added so far.
    pub pages_added: usize,
    /// Pages in the image.
    pub pages_total: usize,
}

/// A page-aligned page of bytes, for ADD_PAGES sources.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct AlignedPage([u8; PAGE_SIZE]);

/// The address range reserved for an enclave (released on drop).
#[derive(Debug)]
struct Reservation {
    addr: u64,
    len: u64,
}

impl Reservation {
    /// Reserves `2 * size` bytes and keeps the naturally aligned `size` bytes inside them;
    /// returns the reservation and the ELRANGE base.
    fn aligned(size: u64) -> Result<(Reservation, u64), LoadError> {
        let len = 2 * size;
        // SAFETY: a fresh anonymous PROT_NONE mapping at an address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(LoadError::Reserve {
                size,
                errno: Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
            });
        }
        let reservation = Reservation { addr: addr as u64, len };
        let base = reservation.addr.next_multiple_of(size);
        Ok((reservation, base))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range this value reserved (and the enclave mappings
        // placed over it, which are gone with the enclave).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len as usize) };
    }
}

/// A loaded, initialised enclave.
#[derive(Debug)]
pub struct Enclave {
    // Field order is drop order: after `Drop` unmapped ELRANGE, the reservation around it
    // goes before the file closes, so the driver releases the enclave on close.
    #[allow(dead_code, reason = "held for its Drop")]
    reservation: Reservation,
    file: EnclaveFile,
    base: u64,
    size: u64,
    tcs: Vec<u64>,
    mrenclave: [u8; 32],
}

fn device_step(step: &'static str) -> impl FnOnce(Errno) -> LoadError {
    move |errno| LoadError::Device { step, errno }
}

/// The host protection a page is mapped with: its SECINFO permissions, and RW for a TCS
/// (what the driver allows for TCS pages).
fn prot_of(page: &ImagePage) -> c_int {
    if page.page_type() == Some(PageType::Tcs) {
        return libc::PROT_READ | libc::PROT_WRITE;
    }
    let mut prot = libc::PROT_NONE;
    for (flag, bit) in
        [(SecinfoFlags::R, libc::PROT_READ), (SecinfoFlags::W, libc::PROT_WRITE), (SecinfoFlags::X, libc::PROT_EXEC)]
    {
        if page.flags.contains(flag) {
            prot |= bit;
        }
    }
    prot
}

fn check_image(image: &EnclaveImage) -> Result<(), LoadError> {
    image.check().map_err(|e| LoadError::Image(e.to_string()))
}

impl Enclave {
    /// Creates, adds, initialises and maps `image` with `sigstruct`; `progress` is called
    /// after each batch of added pages.
    ///
    /// # Errors
    /// The first step that failed, with the device's errno or EINIT's SGX error code.
    pub fn load(
        device: &Device,
        image: &EnclaveImage,
        sigstruct: &Sigstruct,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Enclave, LoadError> {
        check_image(image)?;
        let file = device.open().map_err(device_step("open /dev/sgx_enclave"))?;
        let (reservation, base) = Reservation::aligned(image.size)?;
        // Built first, so that a failure below still unmaps whatever was mapped (through the
        // device: the emulator must see it) before the file closes.
        let mut enclave =
            Enclave { reservation, file, base, size: image.size, tcs: Vec::new(), mrenclave: sigstruct.enclavehash };
        create(&enclave.file, image, base)?;
        add_pages(&enclave.file, image, progress)?;
        init(&enclave.file, sigstruct)?;
        map_pages(&enclave.file, image, base)?;
        enclave.tcs = image.tcs.iter().map(|offset| base + offset).collect();
        Ok(enclave)
    }

    /// The ELRANGE base address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The ELRANGE size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The linear addresses of the enclave's TCS pages, one per thread.
    pub fn tcs(&self) -> &[u64] {
        &self.tcs
    }

    /// Records a TCS added at run time ([`Enclave::add_thread`]).
    pub(crate) fn push_tcs(&mut self, tcs: u64) {
        self.tcs.push(tcs);
    }

    /// Drops the TCSs that `removed` selects ([`Enclave::trim`]).
    pub(crate) fn forget_tcs(&mut self, removed: impl Fn(u64) -> bool) {
        self.tcs.retain(|&tcs| !removed(tcs));
    }

    /// MRENCLAVE, as signed.
    pub fn mrenclave(&self) -> [u8; 32] {
        self.mrenclave
    }

    /// The enclave's file.
    pub fn file(&self) -> &EnclaveFile {
        &self.file
    }

    /// The device the enclave lives on.
    pub fn device(&self) -> &Device {
        self.file.device()
    }

    /// `mprotect` of the enclave pages at `range` (enclave offsets): the page-table half of
    /// permissions, which the driver bounds by each page's maximum (e.g. `PROT_EXEC` after
    /// the enclave extended a page to X with EMODPE, or read-only to catch stray writes).
    ///
    /// # Errors
    /// `EINVAL` for a range outside ELRANGE or not page aligned; the driver's errno
    /// (`EACCES` above a page's maximum).
    pub fn protect(&self, range: std::ops::Range<u64>, prot: c_int) -> Result<(), Errno> {
        let len = range.end.saturating_sub(range.start);
        if !self.check_range(range.start, len) {
            return Err(Errno(libc::EINVAL));
        }
        self.file.protect(self.base + range.start, len, prot)
    }

    /// Whether `[offset, offset + len)` is a non-empty page-aligned range inside ELRANGE.
    pub(crate) fn check_range(&self, offset: u64, len: u64) -> bool {
        let page = PAGE_SIZE as u64;
        len > 0
            && offset.is_multiple_of(page)
            && len.is_multiple_of(page)
            && offset.checked_add(len).is_some_and(|end| end <= self.size)
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        // Through the device, so the emulated driver sees the unmap too; the reservation
        // around ELRANGE goes next, then the file.
        // A failure leaves nothing to recover: the mappings go with the reservation anyway.
        let _ = self.file.unmap(self.base, self.size);
    }
}

fn create(file: &EnclaveFile, image: &EnclaveImage, base: u64) -> Result<(), LoadError> {
    let mut secs = Secs::new_zeroed();
    secs.baseaddr = base;
    secs.size = image.size;
    secs.ssaframesize = image.ssaframesize;
    secs.attributes = image.attributes;
    secs.miscselect = image.miscselect;
    let mut create = SgxEnclaveCreate { src: secs.as_bytes().as_ptr() as u64 };
    file.ioctl(SGX_IOC_ENCLAVE_CREATE, &mut create).map_err(device_step("ENCLAVE_CREATE"))
}

/// Adds the image's pages in runs of contiguous pages with the same flags and measurement.
///
/// Each run is first staged into a page-aligned buffer, ADD_PAGES' source. Staging reads
/// the image's pages from memory, where they have usually gone cold, while the ADD_PAGES
/// that follows is bound by hashing (EEXTEND), which leaves the memory system idle; so a
/// large image is staged by a helper thread one run ahead, into the other of two buffers.
/// Small images, or a failure to start the thread, take the plain sequential path.
fn add_pages(
    file: &EnclaveFile,
    image: &EnclaveImage,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<(), LoadError> {
    let total = usize::try_from(image.page_count()).unwrap_or(usize::MAX);
    let mut done = 0usize;
    let mut add = |buffer: &[AlignedPage], batch: &Batch<'_>| {
        let secinfo = Secinfo::new(batch.flags());
        let mut arg = SgxEnclaveAddPages {
            src: buffer.as_ptr() as u64,
            offset: batch.offset,
            length: batch.pages as u64 * PAGE_SIZE as u64,
            secinfo: secinfo.as_bytes().as_ptr() as u64,
            flags: if batch.measured() { SGX_PAGE_MEASURE } else { 0 },
            count: 0,
        };
        add_run(file, &mut arg)?;
        done = done.saturating_add(batch.pages);
        progress(LoadProgress { pages_added: done, pages_total: total });
        Ok(())
    };
    if batches(image).nth(STAGE_AHEAD_MIN_RUNS - 1).is_some() {
        let staged = std::thread::scope(|scope| stage_ahead(scope, image, &mut add));
        if let Some(result) = staged {
            return result;
        }
    }
    let mut buffer = new_buffer();
    for batch in batches(image) {
        stage(&mut buffer, &batch);
        add(&buffer, &batch)?;
    }
    Ok(())
}

/// Runs from which staging on a helper thread pays for starting it (a thread costs tens of
/// microseconds; staging a run, about a hundred).
const STAGE_AHEAD_MIN_RUNS: usize = 4;

/// An ADD_PAGES source buffer, a batch long.
type Buffer = Box<[AlignedPage]>;

/// Adds one batch, staged in the buffer given (ADD_PAGES, then progress).
type AddRun<'a> = dyn FnMut(&[AlignedPage], &Batch<'_>) -> Result<(), LoadError> + 'a;

fn new_buffer() -> Buffer {
    vec![AlignedPage([0; PAGE_SIZE]); ADD_BATCH_PAGES].into_boxed_slice()
}

/// Copies `batch`'s contents into the first pages of `buffer`.
fn stage(buffer: &mut [AlignedPage], batch: &Batch<'_>) {
    let page = PAGE_SIZE as u64;
    let end = batch.offset + batch.pages as u64 * page;
    let mut slots = buffer.iter_mut().take(batch.pages);
    for run in batch.runs {
        let pages_here = (run.end().min(end) - run.offset.max(batch.offset)) / page;
        for slot in slots.by_ref().take(pages_here as usize) {
            match &run.data {
                PageData::Zero => slot.0.fill(0),
                PageData::Bytes(bytes) => slot.0.copy_from_slice(&bytes[..]),
            }
        }
    }
}

/// Runs `f` (which starts a thread) with every signal blocked on the calling thread, so that
/// the new thread starts with them all blocked: the program's asynchronous signals are for
/// its own threads, never for a helper of the library that only copies memory.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, for which all-zero bytes are a valid value.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: sigfillset/pthread_sigmask on these locals and the calling thread's own mask.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let result = f();
    // SAFETY: puts back the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

/// Adds every run with `add`, each staged one run ahead by a helper thread in `scope`;
/// `None` if the thread could not start (nothing was added then).
fn stage_ahead<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    image: &'env EnclaveImage,
    add: &mut AddRun<'_>,
) -> Option<Result<(), LoadError>> {
    use std::sync::mpsc::sync_channel;
    // Two buffers circulate: empty ones to the stager, staged ones back.
    let (empty_tx, empty_rx) = sync_channel::<Buffer>(2);
    let (staged_tx, staged_rx) = sync_channel::<(Buffer, Batch<'env>)>(1);
    let stager = move || {
        for batch in batches(image) {
            let Ok(mut buffer) = empty_rx.recv() else { return };
            stage(&mut buffer, &batch);
            if staged_tx.send((buffer, batch)).is_err() {
                return;
            }
        }
    };
    with_signals_blocked(|| std::thread::Builder::new().name("sgxemu-stage".into()).spawn_scoped(scope, stager))
        .ok()?;
    for _ in 0..2 {
        let _ = empty_tx.send(new_buffer());
    }
    // The stager ends when the runs do, or when this side hangs up after an error.
    for (buffer, batch) in staged_rx.iter() {
        if let Err(e) = add(&buffer, &batch) {
            return Some(Err(e));
        }
        let _ = empty_tx.send(buffer);
    }
    Some(Ok(()))
}

/// One ADD_PAGES run, continued after partial progress on EINTR/EAGAIN (a pending signal or
/// a busy reclaimer), as the uapi documents.
fn add_run(file: &EnclaveFile, add: &mut SgxEnclaveAddPages) -> Result<(), LoadError> {
    let (offset, length, src) = (add.offset, add.length, add.src);
    let mut added = 0;
    loop {
        add.src = src + added;
        add.offset = offset + added;
        add.length = length - added;
        add.count = 0;
        let result = file.ioctl(SGX_IOC_ENCLAVE_ADD_PAGES, add);
        added += add.count;
        match result {
            Ok(()) if added >= length => return Ok(()),
            Ok(()) => {}
            Err(Errno(libc::EINTR | libc::EAGAIN)) => std::thread::yield_now(),
            Err(errno) => return Err(LoadError::AddPages { offset: offset + added, added, errno }),
        }
    }
}

/// Pages that one ADD_PAGES adds: contiguous, same flags and measurement, at most a buffer
/// long, taken from one or more consecutive runs of the image.
#[derive(Clone, Copy, Debug)]
struct Batch<'a> {
    /// The runs that overlap the batch, in order (the first may start before it, the last
    /// may end after it).
    runs: &'a [ImagePage],
    /// The first page's offset.
    offset: u64,
    /// Pages, 1 to [`ADD_BATCH_PAGES`].
    pages: usize,
}

impl Batch<'_> {
    fn flags(&self) -> SecinfoFlags {
        self.runs[0].flags
    }

    fn measured(&self) -> bool {
        self.runs[0].measured
    }
}

/// The image's pages cut into ADD_PAGES batches: maximal groups of runs that continue each
/// other (contiguous, same flags, same measurement), cut every [`ADD_BATCH_PAGES`] pages.
/// A run of a million zero pages is thousands of batches, made one at a time.
fn batches(image: &EnclaveImage) -> impl Iterator<Item = Batch<'_>> {
    let page = PAGE_SIZE as u64;
    image.pages.chunk_by(|a, b| a.end() == b.offset && a.flags == b.flags && a.measured == b.measured).flat_map(
        move |group| {
            let mut rest = group;
            let mut at = group.first().map_or(0, |r| r.offset);
            std::iter::from_fn(move || {
                // Drop the runs that end at or before `at`.
                while rest.first().is_some_and(|r| r.end() <= at) {
                    rest = &rest[1..];
                }
                let last = rest.last()?;
                let end = last.end().min(at.saturating_add(ADD_BATCH_PAGES as u64 * page));
                let overlapping = rest.partition_point(|r| r.offset < end);
                // At most ADD_BATCH_PAGES pages, so the cast is lossless.
                let batch = Batch { runs: &rest[..overlapping], offset: at, pages: ((end - at) / page) as usize };
                at = end;
                Some(batch)
            })
        },
    )
}

fn init(file: &EnclaveFile, sigstruct: &Sigstruct) -> Result<(), LoadError> {
    let mut init = SgxEnclaveInit { sigstruct: sigstruct.as_bytes().as_ptr() as u64 };
    file.ioctl(SGX_IOC_ENCLAVE_INIT, &mut init).map_err(|errno| match errno {
        Errno(libc::EPERM) => LoadError::Init,
        errno => LoadError::Device { step: "ENCLAVE_INIT", errno },
    })
}

/// Maps the whole ELRANGE: added pages with their permissions (runs of equal protection),
/// and everything else — guard holes and the dynamic area — RW, so that an access there
/// reaches the driver's fault handler (EAUG on SGX2).
fn map_pages(file: &EnclaveFile, image: &EnclaveImage, base: u64) -> Result<(), LoadError> {
    let hole = libc::PROT_READ | libc::PROT_WRITE;
    let mut at = 0;
    let mut pages = image.pages.iter().peekable();
    while at < image.size {
        let (prot, end) = match pages.peek() {
            Some(p) if p.offset == at => {
                let prot = prot_of(p);
                let mut end = at;
                while let Some(p) = pages.next_if(|p| p.offset == end && prot_of(p) == prot) {
                    end = p.end();
                }
                (prot, end)
            }
            Some(p) => (hole, p.offset),
            None => (hole, image.size),
        };
        file.map(base + at, end - at, prot).map_err(device_step("mmap of enclave pages"))?;
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = PAGE_SIZE as u64;

    fn rw() -> SecinfoFlags {
        (SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg)
    }

    fn bytes(fill: u8) -> PageData {
        PageData::Bytes(Box::new([fill; PAGE_SIZE]))
    }

    #[test]
    fn batches_join_continuing_runs_and_cut_long_ones() {
        let image = EnclaveImage::of_pages(vec![
            ImagePage::single(0, rw(), bytes(1), true),
            ImagePage::single(PAGE, rw(), bytes(2), true),
            ImagePage::zeros(2 * PAGE, 600, rw(), true),
            // Unmeasured: a batch of its own.
            ImagePage::zeros(602 * PAGE, 3, rw(), false),
        ]);
        let got: Vec<(u64, usize, usize)> = batches(&image).map(|b| (b.offset / PAGE, b.pages, b.runs.len())).collect();
        assert_eq!(got, [(0, 256, 3), (256, 256, 1), (512, 90, 1), (602, 3, 1)]);
        // Staging writes each page's contents in order.
        let mut buffer = new_buffer();
        let first = batches(&image).next().unwrap();
        buffer[2].0.fill(0xEE);
        stage(&mut buffer, &first);
        assert_eq!((buffer[0].0[0], buffer[1].0[4095], buffer[2].0[0], buffer[255].0[7]), (1, 2, 0, 0));
        assert_eq!(batches(&image).map(|b| b.pages as u64).sum::<u64>(), image.page_count());
    }

    #[test]
    fn a_huge_run_is_batched_lazily() {
        // 2^40 pages would be 2^32 batches: taking a few costs nothing.
        let image =
            EnclaveImage { size: 1 << 56, ..EnclaveImage::of_pages(vec![ImagePage::zeros(0, 1 << 40, rw(), false)]) };
        let first: Vec<u64> = batches(&image).take(3).map(|b| b.offset).collect();
        assert_eq!(first, [0, 256 * PAGE, 512 * PAGE]);
        assert_eq!(image.check(), Ok(()));
    }
}
