//! Version-array (PT_VA) page geometry (spec §1.9; SDM Vol. 3D §34.14).
//!
//! A VA page holds eight-byte version slots used by EWB/ELDB/ELDU for replay protection; a
//! slot value of 0 means "empty". Slot addresses must be 8-byte aligned (#GP otherwise).

use crate::PAGE_SIZE;

/// Size of one version slot in bytes.
pub const VA_SLOT_SIZE: usize = 8;

/// Number of version slots in a VA page.
pub const VA_SLOTS_PER_PAGE: usize = 512;

const _: () = assert!(VA_SLOT_SIZE * VA_SLOTS_PER_PAGE == PAGE_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_a_page() {
        assert_eq!(VA_SLOTS_PER_PAGE * VA_SLOT_SIZE, 4096);
    }
}
