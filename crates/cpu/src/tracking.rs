//! The TLB-tracking epoch model of spec §7.
//!
//! Each enclave has an epoch; every logical processor inside remembers the epoch it entered
//! at. ETRACK starts a new epoch once nobody from before the previous one is left; a page
//! blocked (or modified) at epoch `e` is *tracked* once the epoch moved past `e` and nobody
//! who entered at or before `e` is still inside.
//!
//! Writers (EENTER, ERESUME, EEXIT, AEX, ETRACK) serialize on a mutex and publish the two
//! numbers the per-page leaves need — the epoch and the oldest entry epoch inside — in
//! atomics, so EBLOCK, EMODPR, EMODT, EACCEPT and EREMOVE on different pages never contend.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::lp::LpId;

/// The ETRACK cycle could not start: someone from the previous cycle is still inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreviousTrackingIncomplete;

/// Another ETRACK holds the tracking state (spec §13.13: #GP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrackingBusy;

/// No logical processor inside.
const NOBODY: u64 = u64::MAX;

/// Writer-side state.
#[derive(Debug, Default)]
struct Inside {
    epoch: u64,
    /// Logical processors inside, with the epoch each entered at.
    lps: Vec<(LpId, u64)>,
}

impl Inside {
    fn oldest(&self) -> u64 {
        self.lps.iter().map(|&(_, entered)| entered).min().unwrap_or(NOBODY)
    }
}

/// Per-enclave tracking state.
#[derive(Debug)]
pub(crate) struct Tracking {
    inside: Mutex<Inside>,
    /// An ETRACK is running (a second one on the same SECS is #GP).
    etrack_busy: AtomicBool,
    epoch: AtomicU64,
    oldest_inside: AtomicU64,
}

impl Default for Tracking {
    fn default() -> Self {
        Self::with_epoch(0)
    }
}

impl Tracking {
    /// A tracking state restored with an epoch (after ELDU of a SECS; nobody is inside).
    pub(crate) fn with_epoch(epoch: u64) -> Self {
        Tracking {
            inside: Mutex::new(Inside { epoch, lps: Vec::new() }),
            etrack_busy: AtomicBool::new(false),
            epoch: AtomicU64::new(epoch),
            oldest_inside: AtomicU64::new(NOBODY),
        }
    }

    fn publish(&self, inside: &Inside) {
        self.epoch.store(inside.epoch, Ordering::Release);
        self.oldest_inside.store(inside.oldest(), Ordering::Release);
    }

    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// ETRACK (spec §4.8 steps 2 and 4).
    pub(crate) fn etrack(&self) -> Result<Result<(), PreviousTrackingIncomplete>, TrackingBusy> {
        if self.etrack_busy.swap(true, Ordering::AcqRel) {
            return Err(TrackingBusy);
        }
        let result = self.etrack_locked();
        self.etrack_busy.store(false, Ordering::Release);
        Ok(result)
    }

    fn etrack_locked(&self) -> Result<(), PreviousTrackingIncomplete> {
        let mut inside = self.inside.lock();
        if inside.oldest() < inside.epoch {
            return Err(PreviousTrackingIncomplete);
        }
        inside.epoch += 1;
        self.publish(&inside);
        Ok(())
    }

    /// Whether a page captured at `epoch` (EBLOCK's bepoch, EMODPR/EMODT's mod_epoch) is tracked.
    pub(crate) fn is_tracked(&self, captured: u64) -> bool {
        self.epoch() > captured && self.oldest_inside.load(Ordering::Acquire) > captured
    }

    /// EENTER/ERESUME: `lp` is now inside at the current epoch; returns that epoch.
    pub(crate) fn enter(&self, lp: LpId) -> u64 {
        let mut inside = self.inside.lock();
        let epoch = inside.epoch;
        inside.lps.push((lp, epoch));
        self.publish(&inside);
        epoch
    }

    /// EEXIT/AEX: `lp` left.
    pub(crate) fn leave(&self, lp: LpId) {
        let mut inside = self.inside.lock();
        if let Some(pos) = inside.lps.iter().position(|&(id, _)| id == lp) {
            inside.lps.swap_remove(pos);
        }
        self.publish(&inside);
    }

    /// `lp`, inside, is known to use no translation older than the current epoch: it counts
    /// as entered now, what an AEX and an immediate ERESUME do to tracking.
    pub(crate) fn reenter(&self, lp: LpId) {
        let mut inside = self.inside.lock();
        let epoch = inside.epoch;
        if let Some(entry) = inside.lps.iter_mut().find(|(id, _)| *id == lp) {
            entry.1 = epoch;
        }
        self.publish(&inside);
    }

    /// True if any logical processor is inside.
    pub(crate) fn anyone_inside(&self) -> bool {
        self.oldest_inside.load(Ordering::Acquire) != NOBODY
    }

    /// The logical processors inside (the targets of a driver's IPI).
    pub(crate) fn inside(&self) -> Vec<LpId> {
        self.inside.lock().lps.iter().map(|&(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_flow_needs_etrack_then_everyone_out() {
        let t = Tracking::default();
        t.enter(LpId(1));
        let bepoch = t.epoch(); // EBLOCK
        assert!(!t.is_tracked(bepoch), "EWB before ETRACK is NOT_TRACKED");
        t.etrack().unwrap().unwrap();
        assert!(!t.is_tracked(bepoch), "LP 1 entered before the ETRACK and is still inside");
        t.leave(LpId(1)); // the IPI forced an AEX
        assert!(t.is_tracked(bepoch));
    }

    #[test]
    fn lps_entering_after_etrack_do_not_block_tracking() {
        let t = Tracking::default();
        let captured = t.epoch();
        t.etrack().unwrap().unwrap();
        t.enter(LpId(2));
        assert!(t.is_tracked(captured));
        assert!(t.anyone_inside());
    }

    #[test]
    fn etrack_refuses_while_previous_cycle_is_incomplete() {
        let t = Tracking::default();
        t.enter(LpId(1));
        t.etrack().unwrap().unwrap();
        assert_eq!(t.etrack(), Ok(Err(PreviousTrackingIncomplete)));
        t.leave(LpId(1));
        t.etrack().unwrap().unwrap();
        assert_eq!(t.epoch(), 2);
        assert!(!t.anyone_inside());
    }

    #[test]
    fn a_reentered_lp_completes_the_epoch_and_stays_inside() {
        let t = Tracking::default();
        t.enter(LpId(1));
        let captured = t.epoch(); // EMODPR
        t.etrack().unwrap().unwrap();
        assert!(!t.is_tracked(captured));
        t.reenter(LpId(1));
        assert!(t.is_tracked(captured));
        assert_eq!(t.inside(), vec![LpId(1)]);
        t.reenter(LpId(2)); // not inside: nothing changes
        assert_eq!(t.inside(), vec![LpId(1)]);
        t.etrack().unwrap().unwrap();
    }

    #[test]
    fn concurrent_etrack_is_busy() {
        let t = Tracking::default();
        t.etrack_busy.store(true, Ordering::Relaxed);
        assert_eq!(t.etrack(), Err(TrackingBusy));
    }
}
