//! An enclave's page records by linear address (the kernel's `encl->page_array`, an
//! xarray indexed by page frame number).
//!
//! Records live in 512-entry leaves, one per 2 MiB of address space, found through a hash
//! map: a lookup is a hash probe and an index, and the SGX2 ioctls, which look up every page
//! of a range a few times each, walk one leaf after another. The leaf the last lookup found
//! is remembered, so those repeated lookups of one page, and of its neighbours, skip even
//! the hash. A B-tree keyed by address did the same job at several times the cost per lookup
//! and moved whole nodes on every removal. Range walks (mmap's permission check, teardown)
//! stay in address order through an ordered set of the leaves in use, which changes only
//! when a leaf is created or emptied.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ops::Range;

use rustc_hash::FxHashMap;
use sgxemu_arch::PAGE_SIZE;

use crate::encl::EnclPage;

const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
/// Records per leaf.
const LEAF_RECORDS: usize = 512;
const LEAF_SHIFT: u32 = LEAF_RECORDS.trailing_zeros();

/// The records of one 2 MiB-aligned stretch of address space.
#[derive(Debug)]
struct Leaf {
    /// Its leaf number (address >> 21).
    number: u64,
    records: Box<[Option<EnclPage>]>,
    /// Records present (the leaf is dropped when it reaches zero).
    len: usize,
}

impl Leaf {
    fn new(number: u64) -> Self {
        Leaf { number, records: std::iter::repeat_with(|| None).take(LEAF_RECORDS).collect(), len: 0 }
    }
}

/// Page-aligned linear address → the driver's record of that enclave page.
#[derive(Debug, Default)]
pub(crate) struct PageArray {
    /// The leaves in use, in no particular order.
    leaves: Vec<Leaf>,
    /// Leaf number → position in `leaves`.
    positions: FxHashMap<u64, usize>,
    /// The numbers of the leaves in use, in order.
    leaf_order: BTreeSet<u64>,
    /// (leaf number, position) of the leaf the last lookup found.
    last_found: Cell<Option<(u64, usize)>>,
    len: usize,
}

/// (leaf number, slot within the leaf) of a page-aligned address.
fn locate(addr: u64) -> (u64, usize) {
    debug_assert!(addr.is_multiple_of(PAGE_SIZE as u64), "page records are keyed by page address");
    let frame = addr >> PAGE_SHIFT;
    (frame >> LEAF_SHIFT, (frame as usize) % LEAF_RECORDS)
}

/// The address of slot `slot` of leaf `leaf`.
fn address_of(leaf: u64, slot: usize) -> u64 {
    ((leaf << LEAF_SHIFT) | slot as u64) << PAGE_SHIFT
}

impl PageArray {
    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Where leaf `number` is in `leaves`, if it is in use.
    fn position(&self, number: u64) -> Option<usize> {
        if let Some((last, position)) = self.last_found.get()
            && last == number
        {
            return Some(position);
        }
        let position = *self.positions.get(&number)?;
        self.last_found.set(Some((number, position)));
        Some(position)
    }

    pub(crate) fn get(&self, addr: u64) -> Option<&EnclPage> {
        let (leaf, slot) = locate(addr);
        self.leaves[self.position(leaf)?].records[slot].as_ref()
    }

    pub(crate) fn get_mut(&mut self, addr: u64) -> Option<&mut EnclPage> {
        let (leaf, slot) = locate(addr);
        let position = self.position(leaf)?;
        self.leaves[position].records[slot].as_mut()
    }

    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.get(addr).is_some()
    }

    /// Stores `page` at `addr`; returns the record it replaced, if any.
    pub(crate) fn insert(&mut self, addr: u64, page: EnclPage) -> Option<EnclPage> {
        let (leaf_number, slot) = locate(addr);
        let position = self.position(leaf_number).unwrap_or_else(|| self.add_leaf(leaf_number));
        let leaf = &mut self.leaves[position];
        let old = leaf.records[slot].replace(page);
        if old.is_none() {
            leaf.len += 1;
            self.len += 1;
        }
        old
    }

    /// Takes the record at `addr` out; a leaf left empty is freed.
    pub(crate) fn remove(&mut self, addr: u64) -> Option<EnclPage> {
        let (leaf_number, slot) = locate(addr);
        let position = self.position(leaf_number)?;
        let leaf = &mut self.leaves[position];
        let old = leaf.records[slot].take()?;
        leaf.len -= 1;
        self.len -= 1;
        if leaf.len == 0 {
            self.drop_leaf(position);
        }
        Some(old)
    }

    /// Puts a new, empty leaf in use; returns its position.
    fn add_leaf(&mut self, number: u64) -> usize {
        let position = self.leaves.len();
        self.leaves.push(Leaf::new(number));
        self.positions.insert(number, position);
        self.leaf_order.insert(number);
        position
    }

    /// Frees the (empty) leaf at `position`; the last leaf moves into its place.
    fn drop_leaf(&mut self, position: usize) {
        let number = self.leaves.swap_remove(position).number;
        self.positions.remove(&number);
        self.leaf_order.remove(&number);
        if let Some(moved) = self.leaves.get(position) {
            self.positions.insert(moved.number, position);
        }
        self.last_found.set(None);
    }

    /// The records with addresses in `range`, in address order.
    pub(crate) fn range(&self, range: Range<u64>) -> impl Iterator<Item = (u64, &EnclPage)> {
        let Range { start, end } = range;
        let first_leaf = start >> (PAGE_SHIFT + LEAF_SHIFT);
        let leaves = if start < end { self.leaf_order.range(first_leaf..) } else { self.leaf_order.range(0..0) };
        leaves
            .map_while(move |&number| {
                (address_of(number, 0) < end).then(|| (number, &self.leaves[self.positions[&number]]))
            })
            .flat_map(|(number, leaf)| {
                leaf.records
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, record)| record.as_ref().map(|record| (address_of(number, slot), record)))
            })
            .filter(move |&(addr, _)| addr >= start && addr < end)
    }

    /// Every record, in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &EnclPage)> {
        self.range(0..u64::MAX)
    }

    /// Empties the array, handing back every record in address order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u64, EnclPage)> + use<> {
        let mut leaves = std::mem::take(&mut self.leaves);
        leaves.sort_unstable_by_key(|leaf| leaf.number);
        *self = PageArray::default();
        leaves.into_iter().flat_map(|leaf| {
            let number = leaf.number;
            leaf.records
                .into_iter()
                .enumerate()
                .filter_map(move |(slot, record)| record.map(|record| (address_of(number, slot), record)))
        })
    }
}

#[cfg(test)]
mod tests {
    use sgxemu_arch::PageType;

    use super::*;
    use crate::os::Prot;

    const PAGE: u64 = PAGE_SIZE as u64;
    const LEAF_SPAN: u64 = PAGE << LEAF_SHIFT;

    fn record(tag: u8) -> EnclPage {
        EnclPage::new(Prot::from_bits_truncate(tag), PageType::Reg)
    }

    fn tag(page: &EnclPage) -> u8 {
        page.max_prot.bits()
    }

    /// Addresses on both sides of leaf boundaries, the first and last slots, and far apart.
    fn spread() -> Vec<u64> {
        vec![0, PAGE, LEAF_SPAN - PAGE, LEAF_SPAN, 7 * LEAF_SPAN + 3 * PAGE, 0x7fff_ffff_f000, !(PAGE - 1)]
    }

    #[test]
    fn insert_get_replace_and_count() {
        let mut array = PageArray::default();
        for (i, &addr) in spread().iter().enumerate() {
            assert!(array.insert(addr, record(i as u8 % 8)).is_none());
        }
        assert_eq!(array.len(), spread().len());
        for (i, &addr) in spread().iter().enumerate() {
            assert_eq!(array.get(addr).map(tag), Some(i as u8 % 8));
            assert!(array.contains(addr));
        }
        assert!(array.get(2 * PAGE).is_none() && !array.contains(LEAF_SPAN + PAGE));
        array.get_mut(LEAF_SPAN).expect("present").max_prot = Prot::EXEC;
        assert_eq!(array.get(LEAF_SPAN).map(tag), Some(Prot::EXEC.bits()));
        let old = array.insert(PAGE, record(7)).expect("replaced");
        assert_eq!(tag(&old), 1);
        assert_eq!(array.len(), spread().len(), "replacing does not count twice");
    }

    #[test]
    fn removal_frees_emptied_leaves_and_keeps_neighbours() {
        let mut array = PageArray::default();
        for &addr in &spread() {
            array.insert(addr, record(1));
        }
        assert_eq!(array.remove(LEAF_SPAN).map(|p| tag(&p)), Some(1));
        assert!(array.remove(LEAF_SPAN).is_none(), "already gone");
        assert!(array.remove(3 * LEAF_SPAN).is_none(), "never there");
        assert!(array.get(LEAF_SPAN - PAGE).is_some(), "the neighbour in the previous leaf stays");
        assert_eq!(array.len(), spread().len() - 1);
        for &addr in &spread() {
            array.remove(addr);
        }
        assert_eq!(array.len(), 0);
        assert!(
            array.leaves.is_empty() && array.positions.is_empty() && array.leaf_order.is_empty(),
            "every emptied leaf is freed"
        );
        array.insert(LEAF_SPAN, record(2));
        assert_eq!(array.get(LEAF_SPAN).map(tag), Some(2), "a freed leaf comes back on insert");
    }

    #[test]
    fn ranges_are_ordered_half_open_and_cross_leaves() {
        let mut array = PageArray::default();
        let addrs = spread();
        // Insert out of order: walks must still come back sorted.
        for &addr in addrs.iter().rev() {
            array.insert(addr, record(0));
        }
        let walk = |range: Range<u64>| array.range(range).map(|(addr, _)| addr).collect::<Vec<_>>();
        assert_eq!(array.iter().map(|(addr, _)| addr).collect::<Vec<_>>(), addrs);
        assert_eq!(walk(PAGE..LEAF_SPAN + PAGE), vec![PAGE, LEAF_SPAN - PAGE, LEAF_SPAN]);
        assert_eq!(walk(PAGE..LEAF_SPAN), vec![PAGE, LEAF_SPAN - PAGE], "the end is exclusive");
        assert_eq!(walk(2 * PAGE..LEAF_SPAN - PAGE), Vec::<u64>::new(), "a gap inside a leaf");
        assert_eq!(walk(2 * LEAF_SPAN..7 * LEAF_SPAN), Vec::<u64>::new(), "a gap of whole leaves");
        assert_eq!(walk(LEAF_SPAN + PAGE..u64::MAX), addrs[4..].to_vec());
        assert_eq!(walk(LEAF_SPAN..LEAF_SPAN), Vec::<u64>::new(), "empty range");
        assert_eq!(walk(Range { start: LEAF_SPAN, end: PAGE }), Vec::<u64>::new(), "reversed range");
    }

    #[test]
    fn drain_hands_back_everything_in_order() {
        let mut array = PageArray::default();
        for (i, &addr) in spread().iter().enumerate().rev() {
            array.insert(addr, record(i as u8 % 8));
        }
        let drained: Vec<(u64, u8)> = array.drain().map(|(addr, page)| (addr, tag(&page))).collect();
        let expected: Vec<(u64, u8)> = spread().iter().enumerate().map(|(i, &addr)| (addr, i as u8 % 8)).collect();
        assert_eq!(drained, expected);
        assert_eq!(array.len(), 0);
        assert!(array.iter().next().is_none());
        array.insert(PAGE, record(3));
        assert_eq!(array.len(), 1, "usable after draining");
    }

    /// One operation of the model test.
    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u8),
        Remove(u64),
        Get(u64),
        Range(u64, u64),
    }

    /// Addresses in a few leaves (so leaves fill, empty and come back) plus far ones.
    fn address() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![(0u64..4 * LEAF_RECORDS as u64).prop_map(|i| i * PAGE), any::<u64>().prop_map(|a| a & !(PAGE - 1))]
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (address(), 0u8..8).prop_map(|(addr, tag)| Op::Insert(addr, tag)),
            2 => address().prop_map(Op::Remove),
            2 => address().prop_map(Op::Get),
            1 => (address(), address()).prop_map(|(a, b)| Op::Range(a, b)),
        ]
    }

    proptest::proptest! {
        /// The array behaves as an ordered map of address to record.
        #[test]
        fn matches_an_ordered_map(ops in proptest::collection::vec(op(), 1..300)) {
            let mut array = PageArray::default();
            let mut model = std::collections::BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(addr, t) => {
                        let old = array.insert(addr, record(t)).map(|p| tag(&p));
                        proptest::prop_assert_eq!(old, model.insert(addr, t));
                    }
                    Op::Remove(addr) => {
                        proptest::prop_assert_eq!(array.remove(addr).map(|p| tag(&p)), model.remove(&addr));
                    }
                    Op::Get(addr) => {
                        proptest::prop_assert_eq!(array.get(addr).map(tag), model.get(&addr).copied());
                    }
                    Op::Range(start, end) => {
                        let got: Vec<(u64, u8)> = array.range(start..end).map(|(a, p)| (a, tag(p))).collect();
                        let want: Vec<(u64, u8)> =
                            if start < end { model.range(start..end).map(|(&a, &t)| (a, t)).collect() } else { Vec::new() };
                        proptest::prop_assert_eq!(got, want);
                    }
                }
                proptest::prop_assert_eq!(array.len(), model.len());
                proptest::prop_assert_eq!(array.leaves.len(), array.leaf_order.len());
                proptest::prop_assert_eq!(array.leaves.len(), array.positions.len());
                for (position, leaf) in array.leaves.iter().enumerate() {
                    proptest::prop_assert_eq!(array.positions[&leaf.number], position);
                }
            }
            let all: Vec<(u64, u8)> = array.drain().map(|(a, p)| (a, tag(&p))).collect();
            proptest::prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }
}
