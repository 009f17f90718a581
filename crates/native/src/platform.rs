//! Machine-wide services for the driver in a native process: IPIs as signals to the
//! threads running enclave code, an in-memory backing store, and the reclaimer thread.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sgxemu_cpu::{LeafStats, LpId, Processor};
use sgxemu_driver::os::{Backing, Platform};
use sgxemu_driver::sim::MemoryBacking;
use sgxemu_driver::{Cpu, Sgx};

use crate::{sys, thread};

/// The signal that stands for an IPI: a thread running enclave code takes an AEX on it.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMAX() - 1
}

/// Bumped (and its waiters woken) by every thread that handled an IPI: the IPI's sender
/// sleeps on it instead of competing for a CPU with the threads it waits for.
static KICKS_HANDLED: AtomicU32 = AtomicU32::new(0);

/// Called by a thread's IPI handler once it took its AEX (or found no enclave code to
/// interrupt). Async-signal-safe.
pub fn acknowledge_kick() {
    KICKS_HANDLED.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake_all(&KICKS_HANDLED);
}

/// Platform services of this process.
#[derive(Debug)]
pub struct NativePlatform {
    processor: Arc<Processor>,
    sgx: OnceLock<Weak<Sgx>>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    ksgxd_pid: AtomicI32,
    /// The reclaimer thread's leaf counters (for `--stats`).
    ksgxd_stats: Arc<Mutex<LeafStats>>,
}

impl NativePlatform {
    /// Services for `processor`'s logical processors.
    pub fn new(processor: Arc<Processor>) -> Arc<Self> {
        Arc::new(NativePlatform {
            processor,
            sgx: OnceLock::new(),
            wake: Arc::new((Mutex::new(false), Condvar::new())),
            ksgxd_pid: AtomicI32::new(0),
            ksgxd_stats: Arc::new(Mutex::new(LeafStats::default())),
        })
    }

    /// Connects the driver the reclaimer thread works for.
    pub fn attach(&self, sgx: &Arc<Sgx>) {
        let _ = self.sgx.set(Arc::downgrade(sgx));
    }

    /// Starts ksgxd in this process unless it runs already (a fork child has none).
    fn ensure_ksgxd(&self) {
        let pid = sys::getpid();
        if self.ksgxd_pid.swap(pid, Ordering::AcqRel) == pid {
            return;
        }
        let Some(sgx) = self.sgx.get().and_then(Weak::upgrade) else { return };
        let wake = self.wake.clone();
        let stats = self.ksgxd_stats.clone();
        let mut cpu = Cpu::new(&self.processor);
        let spawned = std::thread::Builder::new().name("ksgxd".into()).spawn(move || {
            let (flag, condvar) = &*wake;
            loop {
                let mut pending = flag.lock().unwrap_or_else(|e| e.into_inner());
                while !*pending {
                    pending = condvar.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                *pending = false;
                drop(pending);
                sgx.ksgxd_run(&mut cpu);
                *stats.lock().unwrap_or_else(|e| e.into_inner()) = cpu.lp.stats().clone();
            }
        });
        if spawned.is_err() {
            self.ksgxd_pid.store(0, Ordering::Release);
        }
    }
}

impl NativePlatform {
    /// The reclaimer thread's leaf counters so far.
    pub fn ksgxd_stats(&self) -> LeafStats {
        self.ksgxd_stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Platform for NativePlatform {
    fn kick(&self, secs: u64, lps: &[LpId]) {
        let targets: Vec<&thread::ThreadState> =
            thread::all().into_iter().filter(|t| lps.contains(&t.lp_id) && t.tid != sys::gettid()).collect();
        let before: Vec<(u64, u64)> = targets
            .iter()
            .map(|t| (t.kicks_seen.load(Ordering::Acquire), t.kick_aexes.load(Ordering::Acquire)))
            .collect();
        for target in &targets {
            crate::stats::count(&crate::stats::IPIS);
            target.ipis_sent.fetch_add(1, Ordering::Relaxed);
            let _ = sys::tgkill(target.tid, kick_signal());
        }
        // Wait until each LP has taken its AEX, or is out of the enclave. As on hardware the
        // AEX itself completes the tracking epoch: a thread that goes straight back in with
        // ERESUME (one spinning on a lock the caller holds, say) does not hold the caller up.
        // A thread that took the IPI in the instant between the model's EENTER and its own
        // bookkeeping saw no enclave code to interrupt: it gets another.
        let deadline = Instant::now() + Duration::from_secs(5);
        for (target, (mut seen, aexes)) in targets.iter().zip(before) {
            loop {
                let handled = KICKS_HANDLED.load(Ordering::Acquire);
                if target.kick_aexes.load(Ordering::Acquire) != aexes
                    || !self.processor.lps_inside(secs).contains(&target.lp_id)
                    || Instant::now() >= deadline
                {
                    break;
                }
                let now = target.kicks_seen.load(Ordering::Acquire);
                if now != seen {
                    seen = now;
                    target.ipis_sent.fetch_add(1, Ordering::Relaxed);
                    let _ = sys::tgkill(target.tid, kick_signal());
                }
                // A thread that leaves by EEXIT acknowledges nothing: look again now and then.
                sys::futex_wait(&KICKS_HANDLED, handled, Duration::from_micros(200));
            }
        }
    }

    /// Completes the epoch without an IPI: the host mappings enclave code runs on follow
    /// every EPCM and PTE change as the leaf makes it (`Space`), and the host kernel's
    /// mprotect and munmap are shootdowns of their own, so no thread inside can hold a stale
    /// translation. Waiting instead for each thread inside to take an AEX would hold the
    /// ioctl up for as long as the host leaves those threads off a CPU: with more threads
    /// than CPUs, spinning on a lock the ioctl's caller holds (Intel's EMM), that was most of
    /// the time. A preempted thread on hardware has taken its AEX already.
    fn flush_translations(&self, secs: u64, lps: &[LpId]) {
        self.processor.retire_translations(secs, lps);
    }

    fn wake_reclaimer(&self) {
        self.ensure_ksgxd();
        let (flag, condvar) = &*self.wake;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        condvar.notify_one();
    }

    fn new_backing(&self, _size: u64) -> Box<dyn Backing> {
        Box::new(MemoryBacking::default())
    }

    /// The emulated EWB (AES-GCM in software, IPIs as signals) keeps a page away far
    /// longer than hardware's, so SGX2 ioctls give the reclaimer up to a second per page
    /// before reporting EAGAIN.
    fn log_warning(&self, message: &str) {
        sys::stderr_line(&format!("sgxemu: driver warning: {message}\n"));
    }

    fn sgx2_ioctl_patience(&self) -> Duration {
        Duration::from_secs(1)
    }
}
