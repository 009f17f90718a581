//! mmap, mprotect and munmap of the enclave file, and the mapping checks entries need.

use super::*;

impl World {
    /// Pages `page .. page + npages` clamped to the reservation, or `None` if any of them is
    /// someone else's.
    pub(super) fn clamp(&self, slot: u8, page: u16, npages: u16) -> Option<(u16, u16)> {
        let start = page.min(RESERVATION_PAGES - 1);
        let end = (start + npages).min(RESERVATION_PAGES);
        let maps = &self.slots[usize::from(slot)].maps;
        (!maps[usize::from(start)..usize::from(end)].contains(&Mapping::Foreign)).then_some((start, end))
    }

    pub(super) fn mmap(
        &mut self,
        slot: u8,
        page: u16,
        npages: u16,
        prot_bits: u8,
        kind: MapKind,
    ) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let Some((start, end)) = self.clamp(slot, page, npages) else { return Ok(Step::Skipped) };
        let s = usize::from(slot);
        let base = self.bases[s];
        let addr = base + u64::from(start) * PAGE;
        let len = u64::from(end - start) * PAGE;
        let rdonly = self.slots[s].rdonly;
        let encl = self.slots[s].encl.as_ref();
        let wants_write = prot_bits & W != 0;
        let fixed_check = || -> Result<(), Errno> {
            if rdonly && wants_write {
                return Err(libc::EACCES);
            }
            oracle::may_map(encl, u64::from(start), u64::from(end), prot_bits)
        };
        let anywhere_check = || -> Result<(), Errno> {
            if rdonly && wants_write {
                return Err(libc::EACCES);
            }
            // The kernel picks an address outside our reservations, so outside ELRANGE.
            if encl.is_some_and(|e| e.initialized) { Err(libc::EACCES) } else { Ok(()) }
        };
        let (flags, map_addr, map_len, offset, expected, mut known): (
            i32,
            u64,
            u64,
            i64,
            Result<(), Errno>,
            Option<Known>,
        ) = match kind {
            MapKind::SharedFixed => (libc::MAP_SHARED | libc::MAP_FIXED, addr, len, 0, fixed_check(), None),
            MapKind::SharedValidateFixed => {
                (libc::MAP_SHARED_VALIDATE | libc::MAP_FIXED, addr, len, 0, fixed_check(), None)
            }
            MapKind::Private => (libc::MAP_PRIVATE | libc::MAP_FIXED, addr, len, 0, Err(EINVAL), None),
            MapKind::Anywhere => (libc::MAP_SHARED, 0, len, 0, anywhere_check(), None),
            MapKind::ZeroLength => (libc::MAP_SHARED | libc::MAP_FIXED, addr, 0, 0, Err(EINVAL), None),
            MapKind::FixedNoReplace => (
                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                addr,
                len,
                0,
                Err(libc::EEXIST),
                Some(Known::MmapFixedNoReplace),
            ),
            MapKind::UnalignedOffset => {
                (libc::MAP_SHARED | libc::MAP_FIXED, addr, len, 8, Err(EINVAL), Some(Known::MmapUnalignedOffset))
            }
            MapKind::UnalignedHint => {
                (libc::MAP_SHARED, addr + 8, len, 0, anywhere_check(), Some(Known::MmapUnalignedHint))
            }
        };
        if rdonly && wants_write && matches!(expected, Err(libc::EACCES)) && known.is_none() {
            known = Some(Known::MmapWriteOfReadOnlyFd);
        }
        let ret = sys::mmap(map_addr, map_len, prot(prot_bits), flags, fd, offset);
        let got = ret.map(|_| ());
        let outcome = if got == expected {
            Ok(())
        } else {
            Err(Mismatch(format!("mmap({kind:?}, prot {prot_bits}): kernel answers {expected:?}; got {ret:?}")))
        };
        // Follow what happened, whatever the kernel would have done.
        let reservation = base..base + u64::from(RESERVATION_PAGES) * PAGE;
        match ret {
            Ok(at) if reservation.contains(&at) => {
                let first = ((at - base) / PAGE) as usize;
                let last = (first + map_len.div_ceil(PAGE) as usize).min(usize::from(RESERVATION_PAGES));
                let slot_ref = &mut self.slots[s];
                let vma = slot_ref.new_vma();
                for m in &mut slot_ref.maps[first..last] {
                    *m = Mapping::Enclave { prot: prot_bits, vma, may_write: !rdonly };
                }
            }
            Ok(at) => {
                if let Err(e) = sys::munmap(at, map_len) {
                    return Err(Mismatch(format!("munmap of an enclave mapping the kernel placed: errno {e}")));
                }
            }
            Err(_) => {}
        }
        self.judge(known, outcome)
    }

    pub(super) fn mprotect(
        &mut self,
        slot: u8,
        page: u16,
        npages: u16,
        prot_bits: u8,
        kind: ProtectKind,
    ) -> Result<Step, Mismatch> {
        let Some((start, end)) = self.clamp(slot, page, npages) else { return Ok(Step::Skipped) };
        let s = usize::from(slot);
        let base = self.bases[s];
        let maps = &self.slots[s].maps[usize::from(start)..usize::from(end)];
        let any_enclave = maps.iter().any(|m| matches!(m, Mapping::Enclave { .. }));
        let any_reserved = maps.contains(&Mapping::Reserved);
        if !any_enclave {
            // Only our own anonymous memory: not the driver's business.
            return Ok(Step::Skipped);
        }
        // A shared mapping of an O_RDONLY descriptor lacks VM_MAYWRITE: mprotect cannot add
        // PROT_WRITE to it.
        let read_only_vma =
            prot_bits & W != 0 && maps.iter().any(|m| matches!(m, Mapping::Enclave { may_write: false, .. }));
        let mut known = if read_only_vma {
            Some(Known::MprotectWriteOfReadOnlyFd)
        } else {
            (any_enclave && any_reserved).then_some(Known::MprotectSpanning)
        };
        let (addr, p) = match kind {
            ProtectKind::Plain => (base + u64::from(start) * PAGE, prot(prot_bits)),
            ProtectKind::UnalignedStart => {
                known = Some(Known::MprotectUnalignedStart);
                (base + u64::from(start) * PAGE + 8, prot(prot_bits))
            }
            ProtectKind::UnknownBits => {
                known = Some(Known::MprotectUnknownBits);
                (base + u64::from(start) * PAGE, prot(prot_bits) | 0x10)
            }
        };
        // The kernel's walk: VMA by VMA, stopping at the first one refused.
        let mut predicted = self.slots[s].maps.clone();
        let expected = if kind != ProtectKind::Plain {
            Err(EINVAL)
        } else {
            let encl = self.slots[s].encl.as_ref();
            let mut result = Ok(());
            let mut i = start;
            while i < end {
                let here = predicted[usize::from(i)];
                let mut j = i + 1;
                while j < end && predicted[usize::from(j)] == here {
                    j += 1;
                }
                if let Mapping::Enclave { vma, may_write, .. } = here {
                    let _ = vma;
                    if prot_bits & W != 0 && !may_write {
                        result = Err(libc::EACCES);
                        break;
                    }
                    if let Err(e) = oracle::may_map(encl, u64::from(i), u64::from(j), prot_bits) {
                        result = Err(e);
                        break;
                    }
                    for m in &mut predicted[usize::from(i)..usize::from(j)] {
                        if let Mapping::Enclave { prot, .. } = m {
                            *prot = prot_bits;
                        }
                    }
                }
                i = j;
            }
            result
        };
        let len = u64::from(end - start) * PAGE;
        let ret = sys::mprotect(addr, len, p);
        let outcome = if ret == expected {
            Ok(())
        } else {
            Err(Mismatch(format!(
                "mprotect(pages {start}..{end}, prot {prot_bits}, {kind:?}): kernel answers {expected:?}; got {ret:?}"
            )))
        };
        if outcome.is_ok() {
            // Each changed part of a VMA becomes a VMA of its own (enclave VMAs never merge).
            let old = self.slots[s].maps.clone();
            let mut i = usize::from(start);
            while i < usize::from(end) {
                let mut j = i + 1;
                while j < usize::from(end) && old[j] == old[i] {
                    j += 1;
                }
                if predicted[i] != old[i] {
                    let vma = self.slots[s].new_vma();
                    for m in &mut predicted[i..j] {
                        if let Mapping::Enclave { prot, may_write, .. } = *m {
                            *m = Mapping::Enclave { prot, vma, may_write };
                        }
                    }
                }
                i = j;
            }
            self.slots[s].maps = predicted;
        } else if known.is_some() {
            // Follow the emulator: a protection change it made, or not, is unknown per page
            // (an unaligned start may reach one page further); give the range back to the
            // reservation so nothing relies on it.
            let last = (end + 1).min(RESERVATION_PAGES);
            if self.clamp(slot, start, last - start).is_some() {
                self.unmap_range(slot, start, last - start, true)?;
            } else {
                self.unmap_range(slot, start, end - start, true)?;
            }
        }
        self.judge(known, outcome)
    }

    pub(super) fn munmap(&mut self, slot: u8, page: u16, npages: u16, overmap: bool) -> Result<Step, Mismatch> {
        let Some((start, end)) = self.clamp(slot, page, npages) else { return Ok(Step::Skipped) };
        self.unmap_range(slot, start, end - start, overmap)?;
        Ok(Step::Done)
    }

    /// Returns pages to the slot's PROT_NONE reservation: munmap and refill, or an anonymous
    /// mapping right over them.
    pub(super) fn unmap_range(&mut self, slot: u8, start: u16, npages: u16, overmap: bool) -> Result<(), Mismatch> {
        let s = usize::from(slot);
        let addr = self.bases[s] + u64::from(start) * PAGE;
        let len = u64::from(npages) * PAGE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let mut foreign = false;
        for i in start..start + npages {
            foreign |= self.slots[s].maps[usize::from(i)] == Mapping::Foreign;
        }
        if foreign {
            // Someone else's memory lies in the range: leave it alone, page by page.
            for i in start..start + npages {
                if self.slots[s].maps[usize::from(i)] != Mapping::Foreign {
                    self.unmap_range(slot, i, 1, overmap)?;
                }
            }
            return Ok(());
        }
        if overmap {
            sys::mmap(addr, len, libc::PROT_NONE, anon | libc::MAP_FIXED, -1, 0)
                .map_err(|e| Mismatch(format!("anonymous mmap over an enclave mapping: errno {e}")))?;
        } else {
            sys::munmap(addr, len).map_err(|e| Mismatch(format!("munmap of an enclave mapping: errno {e}")))?;
            if sys::mmap(addr, len, libc::PROT_NONE, anon | libc::MAP_FIXED_NOREPLACE, -1, 0).is_err() {
                // Another thread's mapping landed in the moment's hole: never touch it.
                for m in &mut self.slots[s].maps[usize::from(start)..usize::from(start + npages)] {
                    *m = Mapping::Foreign;
                }
                self.slots[s].release_if_unreferenced();
                return Ok(());
            }
        }
        for m in &mut self.slots[s].maps[usize::from(start)..usize::from(start + npages)] {
            *m = Mapping::Reserved;
        }
        self.slots[s].release_if_unreferenced();
        Ok(())
    }

    /// Whether page `page` of slot `s` is mapped with protections that include `need` and
    /// that its maximum protections allow (so the fault handler maps it).
    pub(super) fn mapped_for(&self, s: usize, page: u64, need: u8) -> bool {
        let Some(encl) = self.slots[s].encl.as_ref() else { return false };
        let Some(Mapping::Enclave { prot, .. }) = self.slots[s].maps.get(page as usize).copied() else { return false };
        match encl.pages.get(&page) {
            Some(p) => prot & need == need && prot & !p.max_prot == 0,
            None => prot & need == need,
        }
    }
}
