//! `sgxemu run --stats`: what the emulator did for the program, printed to stderr when it
//! exits — every ENCLS and ENCLU leaf, AEXes, the faults the emulator resolved and the
//! pages the reclaimer moved.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use sgxemu_arch::{Encls, Enclu};
use sgxemu_cpu::LeafStats;

/// Enclave page faults the driver's fault handler resolved (ELDU, EAUG or a mapping).
pub static DRIVER_FAULTS: AtomicU64 = AtomicU64::new(0);
/// Faults reported to the program (vDSO exception path or a signal).
pub static REPORTED_EXCEPTIONS: AtomicU64 = AtomicU64::new(0);
/// Asynchronous signals that interrupted enclave code (AEX, then delivered at the AEP).
pub static REQUEUED_SIGNALS: AtomicU64 = AtomicU64::new(0);
/// Enclave-mode code found outside ELRANGE (#GP for the fetch).
pub static FETCHES_OUTSIDE: AtomicU64 = AtomicU64::new(0);
/// Patched enclave instructions the emulator carried out (the XSAVE family under XFRM,
/// PAUSE with pause-loop exiting): each one cost a trap.
pub static EMULATED_INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);
/// IPIs sent to threads running enclave code.
pub static IPIS: AtomicU64 = AtomicU64::new(0);

/// Counts one event.
pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The report for `leaves` (merged over every logical processor).
pub fn render(leaves: &LeafStats) -> String {
    let mut out = String::from("sgxemu: statistics\n");
    let mut line = |name: &str, n: u64| {
        if n > 0 {
            let _ = writeln!(out, "sgxemu:   {name:<12} {n:>12}");
        }
    };
    for leaf in Encls::ALL {
        line(leaf.name(), leaves.encls[leaf.raw() as usize]);
    }
    for leaf in Enclu::ALL {
        line(leaf.name(), leaves.enclu[leaf.raw() as usize]);
    }
    line("AEX", leaves.aex);
    line("faults", DRIVER_FAULTS.load(Ordering::Relaxed));
    line("exceptions", REPORTED_EXCEPTIONS.load(Ordering::Relaxed));
    line("IPIs", IPIS.load(Ordering::Relaxed));
    line("outside", FETCHES_OUTSIDE.load(Ordering::Relaxed));
    line("emulated", EMULATED_INSTRUCTIONS.load(Ordering::Relaxed));
    line("signals+AEX", REQUEUED_SIGNALS.load(Ordering::Relaxed));
    line("reclaimed", leaves.encls[Encls::Ewb.raw() as usize]);
    line("reloaded", leaves.encls[Encls::Eldu.raw() as usize] + leaves.encls[Encls::Eldb.raw() as usize]);
    out
}

/// Every logical processor's counters in this process, merged: the threads' own and the
/// reclaimer's.
pub fn collect() -> LeafStats {
    let mut total = crate::thread::retired_stats();
    for state in crate::thread::all() {
        total.merge(state.cpus().lp.stats());
        total.merge(state.cpus().kcpu.lp.stats());
    }
    if let Some(engine) = crate::Engine::get() {
        total.merge(&engine.platform.ksgxd_stats());
    }
    total
}

/// Prints the report (called at exit when `SGXEMU_STATS` is set) — only in a process that
/// used the emulated platform, and once.
pub extern "C" fn print_at_exit() {
    static PRINTED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    let pid = crate::sys::getpid();
    if crate::Engine::get().is_some() && PRINTED.swap(pid, Ordering::AcqRel) != pid {
        crate::sys::stderr_line(&render(&collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_leaves_that_ran_and_derived_counts() {
        let mut leaves = LeafStats::default();
        leaves.encls[Encls::Ewb.raw() as usize] = 3;
        leaves.enclu[Enclu::Eenter.raw() as usize] = 2;
        leaves.aex = 1;
        let text = render(&leaves);
        assert!(text.contains("EWB"), "{text}");
        assert!(text.contains("EENTER"), "{text}");
        assert!(text.contains("AEX"), "{text}");
        assert!(text.lines().any(|l| l.contains("reclaimed") && l.trim_end().ends_with(" 3")), "{text}");
        assert!(!text.contains("ECREATE"), "leaves that never ran are left out: {text}");
    }
}
