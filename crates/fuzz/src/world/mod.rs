//! One fuzzing thread's world: its enclave slots, their address reservations, its scratch
//! memory, and the executor that carries an [`Op`] out against the device and compares the
//! answer with the oracle's — ioctls in `ioctls`, mmap/mprotect/munmap in `mappings`,
//! enclave entries and the shared enclave's racing operations in `entry`.

mod entry;
mod ioctls;
mod mappings;

use std::collections::BTreeMap;

use libc::{EAGAIN, EBUSY, EINVAL, ENOTTY};
use sgxemu_arch::{FromZeros, IntoBytes, PAGE_SIZE, Secs, Sigstruct};
use sgxemu_crypto::SigningKey;
use sgxemu_uapi::*;

use crate::enclave_program;
use crate::known::{Known, is_open};
use crate::model::{Encl, Mapping, PageType, R, RESERVATION_PAGES, Slot, W, X};
use crate::ops::*;
use crate::oracle::{self, AddRequest, Expect, Sgx2Request, Transient};
use crate::scratch::{self, KERNEL_ADDRESS, Scratch};
use crate::shared::SharedEnclave;
use crate::sys::{self, Errno, Vdso};

const PAGE: u64 = PAGE_SIZE as u64;

/// The largest ELRANGE the fuzzer creates (4 MiB); slot bases are aligned to it. Only the
/// first 2 MiB of it lie in the slot's reservation (and get mapped); the rest is only ever
/// EADDed, which needs no mapping.
const MAX_ELRANGE: u64 = 4 << 20;

/// Counts of one world's run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Operations carried out.
    pub executed: u64,
    /// Operations that did not apply to the state they met.
    pub skipped: u64,
    /// Known differences seen, per class.
    pub known: BTreeMap<Known, u64>,
    /// Operations of a known class that got the kernel's answer.
    pub known_passed: BTreeMap<Known, u64>,
    /// The first difference seen per known class (what the kernel answers, what came back).
    pub known_example: BTreeMap<Known, String>,
    /// Transient answers (EAGAIN/EBUSY of a page the reclaimer held) seen.
    pub transient: u64,
    /// Notable successes (what the deep paths reached): INITs, EENTERs, EAUGs, accepted
    /// EACCEPTs, pages restricted, retyped and removed.
    pub events: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.executed += other.executed;
        self.skipped += other.skipped;
        self.transient += other.transient;
        for (k, v) in &other.known {
            *self.known.entry(*k).or_default() += v;
        }
        for (k, v) in &other.known_passed {
            *self.known_passed.entry(*k).or_default() += v;
        }
        for (k, v) in &other.known_example {
            self.known_example.entry(*k).or_insert_with(|| v.clone());
        }
        for (k, v) in &other.events {
            *self.events.entry(k).or_default() += v;
        }
    }

    fn event(&mut self, what: &'static str, n: u64) {
        if n > 0 {
            *self.events.entry(what).or_default() += n;
        }
    }
}

/// An answer that is not the kernel's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// What an operation came to.
enum Step {
    /// Done and as predicted.
    Done,
    /// Not applicable to the current state.
    Skipped,
}

/// One thread's world.
pub struct World {
    sgx2: bool,
    vdso: Vdso,
    key: SigningKey,
    slots: Vec<Slot>,
    bases: Vec<u64>,
    reservation_starts: Vec<u64>,
    scratch: Scratch,
    devnull_fd: i32,
    shared: SharedEnclave,
    thread: u16,
    /// Counts so far.
    pub stats: Stats,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("thread", &self.thread).field("bases", &self.bases).finish_non_exhaustive()
    }
}

/// The prot bits of the model as PROT_* (they are the same numbers).
fn prot(bits: u8) -> i32 {
    i32::from(bits)
}

fn compare(
    what: &str,
    expected: &Expect,
    ret: Result<i32, Errno>,
    count: Option<u64>,
    result: Option<u64>,
) -> Result<(), Mismatch> {
    let got = ret.map(|_| ());
    if got != expected.ret
        || (expected.count.is_some() && count.is_some() && expected.count != count)
        || (expected.result.is_some() && result.is_some() && expected.result != result)
    {
        return Err(Mismatch(format!(
            "{what}: kernel answers {:?} count {:?} result {:?}; got {:?} count {:?} result {:?}",
            expected.ret, expected.count, expected.result, got, count, result
        )));
    }
    Ok(())
}

impl World {
    /// A world for fuzzing thread `thread`.
    pub fn new(sgx2: bool, vdso: Vdso, shared: SharedEnclave, thread: u16) -> Result<World, String> {
        let mut bases = Vec::new();
        let mut reservation_starts = Vec::new();
        for _ in 0..SLOTS {
            let (base, start) = sys::reserve_aligned(u64::from(RESERVATION_PAGES), MAX_ELRANGE)?;
            bases.push(base);
            reservation_starts.push(start);
        }
        let scratch = Scratch::new()?;
        let devnull_fd = sys::open(c"/dev/null", libc::O_RDWR).map_err(|e| format!("/dev/null: errno {e}"))?;
        Ok(World {
            sgx2,
            vdso,
            key: enclave_program::signing_key(),
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
            bases,
            reservation_starts,
            scratch,
            devnull_fd,
            shared,
            thread,
            stats: Stats::default(),
        })
    }

    /// Carries `op` out; `Err` if the answer is not the kernel's.
    pub fn step(&mut self, op: &Op) -> Result<(), Mismatch> {
        let step = match *op {
            Op::Open { slot, rdonly } => self.open(slot, rdonly),
            Op::Dup { slot } => self.dup(slot),
            Op::Close { slot, which } => self.close(slot, which),
            Op::Create { slot, arg, secs, secs_ptr, size_log2, attrs } => {
                self.create(slot, arg, secs, secs_ptr, size_log2, attrs)
            }
            Op::AddPages { slot, arg, src, shape, page, npages, secinfo, flags } => {
                self.add_pages(slot, &AddRequest { arg, src, shape, page, npages, secinfo, flags })
            }
            Op::Init { slot, arg, sig } => self.init(slot, arg, sig),
            Op::Provision { slot, arg, fd } => self.provision(slot, arg, fd),
            Op::Restrict { slot, arg, shape, page, npages, perms, out } => {
                self.sgx2_ioctl(slot, Sgx2Kind::Restrict(perms), &Sgx2Request { arg, shape, page, npages, out })
            }
            Op::Modify { slot, arg, shape, page, npages, page_type, out } => {
                self.sgx2_ioctl(slot, Sgx2Kind::Modify(page_type), &Sgx2Request { arg, shape, page, npages, out })
            }
            Op::Remove { slot, arg, shape, page, npages, out } => {
                self.sgx2_ioctl(slot, Sgx2Kind::Remove, &Sgx2Request { arg, shape, page, npages, out })
            }
            Op::NearMiss { slot, cmd } => self.near_miss(slot, cmd),
            Op::Mmap { slot, page, npages, prot, kind } => self.mmap(slot, page, npages, prot, kind),
            Op::Mprotect { slot, page, npages, prot, kind } => self.mprotect(slot, page, npages, prot, kind),
            Op::Munmap { slot, page, npages, overmap } => self.munmap(slot, page, npages, overmap),
            Op::Enter { slot, tcs, action } => self.enter(slot, tcs, action),
            Op::Shared(shared) => self.shared_op(shared),
        }?;
        match step {
            Step::Done => self.stats.executed += 1,
            Step::Skipped => self.stats.skipped += 1,
        }
        Ok(())
    }

    /// Compares, letting a [`Known`] difference through (counted) while it is on the list.
    fn judge(&mut self, known: Option<Known>, outcome: Result<(), Mismatch>) -> Result<Step, Mismatch> {
        match (known, outcome) {
            (Some(k), Ok(())) => {
                *self.stats.known_passed.entry(k).or_default() += 1;
                Ok(Step::Done)
            }
            (Some(k), Err(m)) if is_open(k) => {
                *self.stats.known.entry(k).or_default() += 1;
                self.stats.known_example.entry(k).or_insert(m.0);
                Ok(Step::Done)
            }
            (_, Err(m)) => Err(m),
            (None, Ok(())) => Ok(Step::Done),
        }
    }

    fn fd(&self, slot: u8) -> Option<i32> {
        self.slots[usize::from(slot)].fds.first().copied()
    }

    fn open(&mut self, slot: u8, rdonly: bool) -> Result<Step, Mismatch> {
        let s = usize::from(slot);
        if !self.slots[s].fds.is_empty() {
            return Ok(Step::Skipped);
        }
        // What a closed enclave's mappings kept alive goes first.
        if self.slots[s].encl.is_some() {
            self.unmap_range(slot, 0, RESERVATION_PAGES, false)?;
        }
        let flags = if rdonly { libc::O_RDONLY } else { libc::O_RDWR };
        let fd =
            sys::open(c"/dev/sgx_enclave", flags).map_err(|e| Mismatch(format!("open /dev/sgx_enclave: errno {e}")))?;
        let s = &mut self.slots[s];
        s.fds.push(fd);
        s.rdonly = rdonly;
        s.encl = Some(Encl::default());
        Ok(Step::Done)
    }

    fn dup(&mut self, slot: u8) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let s = &mut self.slots[usize::from(slot)];
        if s.fds.len() >= 4 {
            return Ok(Step::Skipped);
        }
        let new = sys::dup(fd).map_err(|e| Mismatch(format!("dup: errno {e}")))?;
        s.fds.push(new);
        Ok(Step::Done)
    }

    fn close(&mut self, slot: u8, which: u8) -> Result<Step, Mismatch> {
        let s = &mut self.slots[usize::from(slot)];
        if s.fds.is_empty() {
            return Ok(Step::Skipped);
        }
        let fd = s.fds.remove(usize::from(which) % s.fds.len());
        sys::close(fd).map_err(|e| Mismatch(format!("close: errno {e}")))?;
        s.release_if_unreferenced();
        Ok(Step::Done)
    }

    /// Closes every descriptor and returns every reservation and scratch page.
    pub fn teardown(&mut self) {
        for s in 0..self.slots.len() {
            for fd in std::mem::take(&mut self.slots[s].fds) {
                let _ = sys::close(fd);
            }
            let start = self.reservation_starts[s];
            let _ = sys::munmap(start, u64::from(RESERVATION_PAGES) * PAGE + MAX_ELRANGE);
            self.slots[s] = Slot::new();
        }
        self.scratch.release();
        let _ = sys::close(self.devnull_fd);
    }
}

enum Sgx2Kind {
    Restrict(u64),
    Modify(u64),
    Remove,
}
