//! Per-logical-processor leaf counters (kept per LP so counting never contends).

use sgxemu_arch::{Encls, Enclu};

/// How many times each leaf ran (successfully or not) on one logical processor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeafStats {
    /// Per ENCLS leaf number.
    pub encls: [u64; 16],
    /// Per ENCLU leaf number.
    pub enclu: [u64; 8],
    /// Asynchronous enclave exits.
    pub aex: u64,
}

impl LeafStats {
    pub(crate) fn count_encls(&mut self, leaf: Encls) {
        self.encls[leaf as usize] += 1;
    }

    pub(crate) fn count_enclu(&mut self, leaf: Enclu) {
        self.enclu[leaf as usize] += 1;
    }

    /// Adds another LP's counters to these.
    pub fn merge(&mut self, other: &LeafStats) {
        self.encls.iter_mut().zip(other.encls).for_each(|(a, b)| *a += b);
        self.enclu.iter_mut().zip(other.enclu).for_each(|(a, b)| *a += b);
        self.aex += other.aex;
    }
}
