//! Machine-wide services of the in-process platform: IPIs to simulated logical processors,
//! an in-memory backing store, and a reclaimer that runs when woken.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use sgxemu_arch::PAGE_SIZE;
use sgxemu_cpu::LpId;

use crate::errno::KResult;
use crate::os::{Backing, Platform};

use super::thread::UserContext;

/// Backing storage in memory, page-granular and sparse (the kernel's shmem file).
#[derive(Debug, Default)]
pub struct MemoryBacking {
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE]>>,
}

impl Backing for MemoryBacking {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let within = (at % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - within).min(buf.len() - done);
            match self.pages.get(&(at / PAGE_SIZE as u64)) {
                Some(page) => buf[done..done + n].copy_from_slice(&page[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> KResult<()> {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let within = (at % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - within).min(data.len() - done);
            let page = self.pages.entry(at / PAGE_SIZE as u64).or_insert_with(|| Box::new([0; PAGE_SIZE]));
            page[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn drop_page(&mut self, offset: u64) {
        self.pages.remove(&(offset / PAGE_SIZE as u64));
    }

    fn stored_bytes(&self) -> u64 {
        (self.pages.len() * PAGE_SIZE) as u64
    }
}

/// The simulated machine's services.
#[derive(Debug, Default)]
pub struct SimPlatform {
    /// User contexts of the simulated threads, by the LP they enter enclaves on.
    threads: Mutex<FxHashMap<LpId, Weak<Mutex<UserContext>>>>,
    /// Times the reclaimer was woken.
    wakeups: Mutex<u64>,
    /// IPIs sent (one per target LP).
    ipis: Mutex<u64>,
    /// A test runs its own ksgxd thread: faulting threads must not run it inline.
    external_ksgxd: std::sync::atomic::AtomicBool,
}

impl SimPlatform {
    pub(crate) fn register(&self, lp: LpId, user: &Arc<Mutex<UserContext>>) {
        self.threads.lock().insert(lp, Arc::downgrade(user));
    }

    /// Whether faulting threads run the reclaimer before retrying (the default).
    pub fn inline_ksgxd(&self) -> bool {
        !self.external_ksgxd.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Declares that a test runs ksgxd on a thread of its own.
    pub fn set_external_ksgxd(&self, external: bool) {
        self.external_ksgxd.store(external, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reclaimer wake-ups so far.
    pub fn wakeups(&self) -> u64 {
        *self.wakeups.lock()
    }

    /// IPIs delivered so far.
    pub fn ipis(&self) -> u64 {
        *self.ipis.lock()
    }
}

impl Platform for SimPlatform {
    fn kick(&self, _secs: u64, lps: &[LpId]) {
        for lp in lps {
            let target = self.threads.lock().get(lp).and_then(Weak::upgrade);
            if let Some(user) = target {
                // A thread inside an enclave never waits for the kernel while holding its
                // user context, so this lock is short; the AEX is what the IPI causes.
                user.lock().interrupt();
                *self.ipis.lock() += 1;
            }
        }
    }

    fn wake_reclaimer(&self) {
        *self.wakeups.lock() += 1;
    }

    fn new_backing(&self, _size: u64) -> Box<dyn Backing> {
        Box::new(MemoryBacking::default())
    }
}
