//! The simulated process's page table: PTEs in 512-entry leaves (one per 2 MiB of address
//! space), as a real page table holds them. Lookups of neighbouring pages share a leaf, so
//! walking an enclave's pages in order stays in cache — a flat hash map of every page
//! scattered them and dominated the platform's cost in the benchmarks.

use rustc_hash::FxHashMap;

use super::process::Pte;

const LEAF_PAGES: usize = 512;
const PAGE_SHIFT: u32 = 12;
const LEAF_SHIFT: u32 = PAGE_SHIFT + 9;

type Leaf = Box<[Option<Pte>; LEAF_PAGES]>;

/// Page-aligned address → PTE.
#[derive(Debug, Default)]
pub(super) struct PageTableMap {
    leaves: FxHashMap<u64, Leaf>,
}

fn split(page: u64) -> (u64, usize) {
    (page >> LEAF_SHIFT, ((page >> PAGE_SHIFT) as usize) % LEAF_PAGES)
}

impl PageTableMap {
    pub(super) fn get(&self, page: u64) -> Option<&Pte> {
        let (leaf, slot) = split(page);
        self.leaves.get(&leaf)?[slot].as_ref()
    }

    pub(super) fn get_mut(&mut self, page: u64) -> Option<&mut Pte> {
        let (leaf, slot) = split(page);
        self.leaves.get_mut(&leaf)?[slot].as_mut()
    }

    pub(super) fn insert(&mut self, page: u64, pte: Pte) {
        let (leaf, slot) = split(page);
        self.leaves.entry(leaf).or_insert_with(|| Box::new([None; LEAF_PAGES]))[slot] = Some(pte);
    }

    pub(super) fn remove(&mut self, page: u64) {
        let (leaf, slot) = split(page);
        if let Some(entries) = self.leaves.get_mut(&leaf) {
            entries[slot] = None;
        }
    }

    /// Calls `f` on every PTE in `[start, end)` (page aligned). The cost follows the smaller
    /// of the range's leaves and the leaves in use, so an mprotect over a whole 1 TiB ELRANGE
    /// costs what is mapped, and one over a page costs one lookup.
    pub(super) fn for_each_in_range(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut Pte)) {
        if start >= end {
            return;
        }
        let leaves = (start >> LEAF_SHIFT)..=((end - 1) >> LEAF_SHIFT);
        let mut visit = |leaf: u64, entries: &mut Leaf| {
            let leaf_start = leaf << LEAF_SHIFT;
            for (i, entry) in entries.iter_mut().enumerate() {
                let page = leaf_start + ((i as u64) << PAGE_SHIFT);
                if let Some(pte) = entry.as_mut().filter(|_| page >= start && page < end) {
                    f(pte);
                }
            }
        };
        let span = leaves.end() - leaves.start() + 1;
        if span <= self.leaves.len() as u64 {
            for leaf in leaves {
                if let Some(entries) = self.leaves.get_mut(&leaf) {
                    visit(leaf, entries);
                }
            }
        } else {
            for (&leaf, entries) in self.leaves.iter_mut().filter(|(leaf, _)| leaves.contains(leaf)) {
                visit(leaf, entries);
            }
        }
    }

    /// Removes every PTE in `[start, end)` (page aligned).
    pub(super) fn remove_range(&mut self, start: u64, end: u64) {
        self.leaves.retain(|&leaf, entries| {
            let leaf_start = leaf << LEAF_SHIFT;
            let leaf_end = leaf_start + (1 << LEAF_SHIFT);
            if leaf_end <= start || leaf_start >= end {
                return true;
            }
            for (i, entry) in entries.iter_mut().enumerate() {
                let page = leaf_start + ((i as u64) << PAGE_SHIFT);
                if page >= start && page < end {
                    *entry = None;
                }
            }
            entries.iter().any(Option::is_some)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pte(pa: u64) -> Pte {
        Pte { pa, writable: true, executable: false, young: false }
    }

    #[test]
    fn entries_across_leaves_and_range_removal() {
        let mut map = PageTableMap::default();
        let pages = [0x1000u64, 0x1f_f000, 0x20_0000, 0x7fff_f000, 0x8000_0000];
        for (i, &page) in pages.iter().enumerate() {
            map.insert(page, pte(i as u64));
        }
        for (i, &page) in pages.iter().enumerate() {
            assert_eq!(map.get(page).map(|p| p.pa), Some(i as u64));
        }
        assert!(map.get(0x2000).is_none());
        map.get_mut(0x20_0000).expect("present").young = true;
        assert!(map.get(0x20_0000).expect("present").young);
        // A visit of a range touches exactly its PTEs, walked by range or by leaf in use.
        let mut seen = Vec::new();
        map.for_each_in_range(0x1f_f000, 0x20_1000, |p| seen.push(p.pa));
        assert_eq!(seen, [1, 2]);
        seen.clear();
        map.for_each_in_range(0x1f_f000, 0x7fff_f000, |p| seen.push(p.pa));
        seen.sort_unstable();
        assert_eq!(seen, [1, 2]);
        seen.clear();
        map.for_each_in_range(0x2000, 0x1_0000_0000_0000, |p| seen.push(p.pa));
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3, 4]);
        map.for_each_in_range(0x1000, 0x1000, |_| panic!("an empty range"));
        map.remove_range(0x1f_f000, 0x8000_0000);
        assert_eq!(pages.map(|p| map.get(p).is_some()), [true, false, false, false, true]);
        map.remove(0x1000);
        assert!(map.get(0x1000).is_none());
        // Emptied leaves are dropped.
        map.remove_range(0, !0xfff);
        assert!(map.leaves.is_empty());
    }
}
