//! Whole-EPCM invariants, checked by tests after every step of random leaf sequences and
//! by the driver's test platform at teardown.

use std::collections::{HashMap, HashSet};

use sgxemu_arch::{PageType, SecinfoFlags, VA_SLOTS_PER_PAGE};

use crate::epc::EpcIndex;
use crate::processor::Processor;

/// A broken invariant, naming the page.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    /// A valid child page has no owner, or its owner's SECS page does not hold that owner.
    #[error("EPC page {page:?}: owner SECS is not a valid SECS page holding this enclave")]
    DanglingOwner {
        /// The child page.
        page: EpcIndex,
    },
    /// A SECS's child counter differs from the number of valid pages it owns.
    #[error("SECS {secs:?}: child counter {counter} but {actual} valid children")]
    ChildCount {
        /// The SECS page.
        secs: EpcIndex,
        /// The counter.
        counter: u64,
        /// Valid children found.
        actual: u64,
    },
    /// PENDING, MODIFIED, PR, the page type and the permissions disagree.
    #[error("EPC page {page:?}: inconsistent EPCM state {flags:?}")]
    StateMix {
        /// The page.
        page: EpcIndex,
        /// Its SECINFO-style flags.
        flags: SecinfoFlags,
    },
    /// A SECS is held shared although no leaf is running (a leaked lock).
    #[error("SECS {secs:?}: held shared with no leaf running")]
    SecsHeld {
        /// The SECS page.
        secs: EpcIndex,
    },
    /// Two VA slots hold the same version.
    #[error("version {version:#x} is held by two VA slots")]
    DuplicateVersion {
        /// The duplicated version.
        version: u64,
    },
}

impl Processor {
    /// Checks every invariant over the EPC pages in use; the first violation found is
    /// returned. Not for concurrent use with leaves (it reads entries one at a time).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let mut children: HashMap<EpcIndex, u64> = HashMap::new();
        let mut versions = HashSet::new();
        for range in self.epcm.allocated_ranges().collect::<Vec<_>>() {
            for raw in range.filter(|&i| u64::from(i) < self.epc_pages()) {
                let page = EpcIndex(raw);
                let Some(entry) = self.epcm.snapshot(page) else {
                    continue;
                };
                if !entry.valid {
                    continue;
                }
                check_state(page, &entry)?;
                match entry.page_type {
                    PageType::Va => self.collect_versions(page, &mut versions)?,
                    PageType::Secs => {
                        if entry.secs.as_ref().is_some_and(|e| e.per_lp.any_secs_reader()) {
                            return Err(InvariantViolation::SecsHeld { secs: page });
                        }
                        children.entry(page).or_default();
                    }
                    _ => {
                        let owner = entry.owner.ok_or(InvariantViolation::DanglingOwner { page })?;
                        let secs_entry = self.epcm.snapshot(owner.secs).unwrap_or_default();
                        let same = secs_entry.valid
                            && secs_entry.page_type == PageType::Secs
                            && secs_entry.secs.as_ref().is_some_and(|e| e.reference() == owner && !e.is_retired());
                        if !same {
                            return Err(InvariantViolation::DanglingOwner { page });
                        }
                        *children.entry(owner.secs).or_default() += 1;
                    }
                }
            }
        }
        for (secs, actual) in children {
            let entry = self.epcm.snapshot(secs).unwrap_or_default();
            let counter = entry.secs.map_or(0, |e| e.child_count());
            if counter != actual {
                return Err(InvariantViolation::ChildCount { secs, counter, actual });
            }
        }
        Ok(())
    }

    fn collect_versions(&self, page: EpcIndex, versions: &mut HashSet<u64>) -> Result<(), InvariantViolation> {
        let mut bytes = vec![0u8; VA_SLOTS_PER_PAGE * 8];
        self.epc.read(page, 0, &mut bytes);
        for slot in bytes.chunks_exact(8) {
            let version = u64::from_le_bytes(slot.try_into().unwrap_or_default());
            if version != 0 && !versions.insert(version) {
                return Err(InvariantViolation::DuplicateVersion { version });
            }
        }
        Ok(())
    }
}

/// The per-entry rules: PENDING only on REG pages (not MODIFIED or PR); MODIFIED only on
/// TCS/TRIM pages with no permissions; PR only on REG pages; a tracked-change epoch only
/// with PR or MODIFIED (ELDU clears it and keeps PR/MODIFIED, spec §4.11 step 8); no
/// permissions on non-REG pages; W implies R.
fn check_state(page: EpcIndex, e: &crate::epcm::EpcmEntry) -> Result<(), InvariantViolation> {
    let reg = e.page_type == PageType::Reg;
    let ok = (!e.pending || (reg && !e.modified && !e.pr))
        && (!e.modified || (matches!(e.page_type, PageType::Tcs | PageType::Trim) && e.perms.is_empty() && !e.pr))
        && (!e.pr || (reg && !e.pending))
        && (e.mod_epoch.is_none() || e.pr || e.modified)
        && (reg || e.perms.is_empty())
        && (!e.perms.contains(SecinfoFlags::W) || e.perms.contains(SecinfoFlags::R));
    if ok { Ok(()) } else { Err(InvariantViolation::StateMix { page, flags: e.secinfo_flags() }) }
}
