//! The TLB-tracking epoch model of spec §7.
//!
//! Each enclave has an epoch; every logical processor inside remembers the epoch it entered
//! at. ETRACK starts a new epoch once nobody from before the previous one is left; a page
//! blocked (or modified) at epoch `e` is *tracked* once the epoch moved past `e` and nobody
//! who entered at or before `e` is still inside.

use crate::lp::LpId;

/// The ETRACK cycle could not start: someone from the previous cycle is still inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreviousTrackingIncomplete;

/// Per-enclave tracking state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tracking {
    /// Current epoch (starts at 0).
    pub(crate) epoch: u64,
    /// Logical processors inside, with the epoch each entered at.
    inside: Vec<(LpId, u64)>,
}

impl Tracking {
    /// A tracking state restored with an epoch (after ELDU of a SECS; nobody is inside).
    pub(crate) fn with_epoch(epoch: u64) -> Self {
        Tracking { epoch, inside: Vec::new() }
    }

    /// ETRACK (spec §4.8 step 4).
    pub(crate) fn etrack(&mut self) -> Result<(), PreviousTrackingIncomplete> {
        if self.inside.iter().any(|&(_, entered)| entered < self.epoch) {
            return Err(PreviousTrackingIncomplete);
        }
        self.epoch += 1;
        Ok(())
    }

    /// Whether a page captured at `epoch` (EBLOCK's bepoch, EMODPR/EMODT's mod_epoch) is tracked.
    pub(crate) fn is_tracked(&self, captured: u64) -> bool {
        self.epoch > captured && !self.inside.iter().any(|&(_, entered)| entered <= captured)
    }

    /// EENTER/ERESUME: `lp` is now inside at the current epoch; returns that epoch.
    pub(crate) fn enter(&mut self, lp: LpId) -> u64 {
        self.inside.push((lp, self.epoch));
        self.epoch
    }

    /// EEXIT/AEX: `lp` left.
    pub(crate) fn leave(&mut self, lp: LpId) {
        if let Some(pos) = self.inside.iter().position(|&(id, _)| id == lp) {
            self.inside.swap_remove(pos);
        }
    }

    /// True if any logical processor is inside.
    pub(crate) fn anyone_inside(&self) -> bool {
        !self.inside.is_empty()
    }

    /// The logical processors inside (the targets of a driver's IPI).
    pub(crate) fn inside(&self) -> impl Iterator<Item = LpId> + '_ {
        self.inside.iter().map(|&(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_flow_needs_etrack_then_everyone_out() {
        let mut t = Tracking::default();
        t.enter(LpId(1));
        let bepoch = t.epoch; // EBLOCK
        assert!(!t.is_tracked(bepoch), "EWB before ETRACK is NOT_TRACKED");
        t.etrack().unwrap();
        assert!(!t.is_tracked(bepoch), "LP 1 entered before the ETRACK and is still inside");
        t.leave(LpId(1)); // the IPI forced an AEX
        assert!(t.is_tracked(bepoch));
    }

    #[test]
    fn lps_entering_after_etrack_do_not_block_tracking() {
        let mut t = Tracking::default();
        let captured = t.epoch;
        t.etrack().unwrap();
        t.enter(LpId(2));
        assert!(t.is_tracked(captured));
    }

    #[test]
    fn etrack_refuses_while_previous_cycle_is_incomplete() {
        let mut t = Tracking::default();
        t.enter(LpId(1));
        t.etrack().unwrap();
        assert_eq!(t.etrack(), Err(PreviousTrackingIncomplete));
        t.leave(LpId(1));
        t.etrack().unwrap();
        assert_eq!(t.epoch, 2);
    }
}
