//! The layout convention: where a program's segments, the threads' stacks, TCSs and SSA
//! frames, the heap and the room for dynamic memory go inside ELRANGE.
//!
//! This is the contract between the image builder ([`crate::elf::image_from_elf`]) and the
//! enclave programs (the sample enclaves follow it). Offsets are from the enclave base;
//! `PAGE` is 4096 bytes.
//!
//! ```text
//! 0                     the program's PT_LOAD segments, at their p_vaddr
//! image_end             page-aligned end of the highest segment
//! for each thread i = 0 .. threads:
//!   +0                  1 guard page: a hole, never added
//!   +PAGE               stack_pages RW zero pages (measured); the stack grows down
//!   tcs_i               1 TCS page (measured)          <- the thread's initial stack top
//!   tcs_i + PAGE        nssa × ssaframesize RW zero pages: the SSA frames (measured)
//! heap_guard            1 guard page: a hole
//! heap_start            heap_pages RW zero pages (measured iff measure_heap)
//! dynamic_start         = end of the heap: [dynamic_start, size) is left for EAUG
//! size                  ELRANGE size, a power of two
//! ```
//!
//! * **Stack.** A thread's stack top *is* its TCS address: EENTER leaves the TCS address in
//!   RBX, the enclave's entry code does `mov rsp, rbx`, and the stack grows down through the
//!   `stack_pages` pages below the TCS into the guard hole, where an overflow faults.
//! * **TCS.** OSSA = `tcs + PAGE`, NSSA = `nssa`, OENTRY = the ELF's `e_entry`,
//!   FSLIMIT = GSLIMIT = `0xFFFF_FFFF`, OFSBASE = OGSBASE = 0 (FS and GS point at the
//!   enclave base on entry), every other field zero. The page is added with SECINFO page
//!   type TCS and no R/W/X bits, which is what `SGX_IOC_ENCLAVE_ADD_PAGES` requires
//!   (driver spec §3.2 step 6: a TCS with R/W/X set is -EINVAL), and is measured.
//! * **Heap.** The heap is added as RW zero pages. By default they are *not* EEXTENDed:
//!   their contents are zero, which nothing outside the enclave can change before EINIT, so
//!   measuring them buys nothing and costs 16 EEXTENDs per page. Each heap page still has
//!   an EADD record in MRENCLAVE (with its offset and RW flags), so the heap's position and
//!   size are measured either way. Set [`Layout::measure_heap`] for the hardware-style
//!   "measure everything" layout; it changes MRENCLAVE.
//! * **Size.** An explicit [`Layout::size`] must be a power of two of at least two pages that
//!   holds everything above plus `dynamic_pages` pages. Without one, the size is the
//!   smallest power of two that holds `dynamic_start + dynamic_pages × PAGE`, and at least
//!   [`MIN_AUTO_SIZE`] (2 MiB). Whatever lies between `dynamic_start` and `size` is free for
//!   EDMM (EAUG on fault, new TCSs), so `dynamic_pages` is a *minimum*.
//!
//! * **Limits.** The size must stay below the maximum enclave size (2^56 in 64-bit mode;
//!   [`crate::ecreate_checks`]): ECREATE accepts exactly the maximum, but a naturally aligned
//!   ELRANGE of 2^56 bytes cannot be placed in a Linux process, whose user space ends below
//!   2^56. MISCSELECT, XFRM and the SSA frame size are checked as ECREATE checks them, and
//!   `threads` is at most [`MAX_THREADS`] (each TCS is a page of the image in memory).
//!
//! Everything here is a pure function of the [`Layout`] and the image end, so MRENCLAVE
//! depends only on the program and the layout, never on where the enclave is loaded.

use sgxemu_arch::{Attributes, AttributesFlags, PAGE_SIZE};

/// [`PAGE_SIZE`] as a `u64`.
const PAGE: u64 = PAGE_SIZE as u64;

/// The smallest ELRANGE size the automatic rule picks (2 MiB).
pub const MIN_AUTO_SIZE: u64 = 2 << 20;

/// The smallest ELRANGE size ECREATE accepts: two pages (SECS.SIZE ≥ 0x2000).
pub const MIN_SIZE: u64 = 2 * PAGE;

/// The most threads a layout may have: each thread's TCS is a page the image holds in
/// memory (4 KiB each, so 256 MiB at most), unlike stacks and SSA frames, which are runs.
pub const MAX_THREADS: u32 = 1 << 16;

/// The TCS of the layout convention for a thread whose TCS page is at `tcs` (its SSA
/// frames follow it): OSSA = `tcs + PAGE`, NSSA = `nssa`, OENTRY = `entry`, FS/GS limits
/// 0xFFFF_FFFF, everything else zero. Also what a TCS added at run time (REG → TCS) holds.
pub fn thread_tcs(tcs: u64, nssa: u32, entry: u64) -> sgxemu_arch::Tcs {
    sgxemu_arch::Tcs {
        ossa: tcs + PAGE,
        nssa,
        oentry: entry,
        fslimit: 0xFFFF_FFFF,
        gslimit: 0xFFFF_FFFF,
        ..sgxemu_arch::Tcs::default()
    }
}

/// Why a [`Layout`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `threads` is 0.
    #[error("the layout needs at least one thread (threads = 0)")]
    NoThreads,
    /// `stack_pages` is 0: the entry code's first push would hit the guard page.
    #[error("the layout needs at least one stack page per thread (stack_pages = 0)")]
    NoStack,
    /// `nssa` is 0: EENTER needs a free SSA frame.
    #[error("the layout needs at least one SSA frame per thread (nssa = 0)")]
    NoSsaFrames,
    /// `ssaframesize` is 0: ECREATE refuses SSAFRAMESIZE 0.
    #[error("the SSA frame size must be at least one page (ssaframesize = 0)")]
    ZeroSsaFrameSize,
    /// The explicit size is not a power of two or smaller than two pages.
    #[error("the enclave size {size:#x} is not a power of two of at least {MIN_SIZE:#x} bytes")]
    BadSize {
        /// The requested size.
        size: u64,
    },
    /// The explicit size cannot hold the laid-out enclave plus `dynamic_pages`.
    #[error("image needs {needed:#x} bytes but the enclave size is {size:#x}")]
    TooSmall {
        /// Bytes needed: `dynamic_start + dynamic_pages × 4096`.
        needed: u64,
        /// The requested size.
        size: u64,
    },
    /// More threads than [`MAX_THREADS`].
    #[error("{threads} threads is more than this tool lays out ({MAX_THREADS})")]
    TooManyThreads {
        /// The requested count.
        threads: u32,
    },
    /// The size (explicit, or what the layout needs) reaches the maximum enclave size.
    #[error(
        "the enclave size {size:#x} is not below the maximum enclave size {max:#x}: an ELRANGE that large cannot be placed in a Linux process"
    )]
    SizeNotBelowMax {
        /// The size.
        size: u64,
        /// The maximum enclave size for the layout's mode.
        max: u64,
    },
    /// SECS fields ECREATE would refuse (MISCSELECT, XFRM, SSAFRAMESIZE).
    #[error(transparent)]
    Secs(#[from] crate::ecreate_checks::SecsError),
    /// The layout does not fit in 64 bits (absurd page counts).
    #[error("the layout overflows the 64-bit address space (image end {image_end:#x})")]
    Overflow {
        /// The image end the layout was computed for.
        image_end: u64,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, LayoutError>;

/// The configurable parts of the layout convention (see the module docs for where each
/// region goes). `Layout::default()` is what the sample enclaves use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of threads, i.e. TCS pages (default 2). At least 1.
    pub threads: u32,
    /// Stack pages per thread, below its TCS (default 16 = 64 KiB). At least 1.
    pub stack_pages: u64,
    /// SSA frames per thread, TCS.NSSA (default 2: one for the normal entry, one for an
    /// exception handler entered after an AEX). At least 1.
    pub nssa: u32,
    /// SECS.SSAFRAMESIZE in pages (default 1, enough for XFRM = x87|SSE). At least 1.
    pub ssaframesize: u32,
    /// Heap pages (default 256 = 1 MiB); may be 0.
    pub heap_pages: u64,
    /// Whether the heap pages are EEXTENDed (default false; see the module docs).
    pub measure_heap: bool,
    /// ELRANGE size; `None` picks the smallest power of two that fits (module docs).
    pub size: Option<u64>,
    /// Pages that must stay free after the heap for EDMM (default 0).
    pub dynamic_pages: u64,
    /// SECS.ATTRIBUTES requested (default MODE64BIT, XFRM 0x3). INIT must be clear.
    pub attributes: Attributes,
    /// Adds [`AttributesFlags::DEBUG`] to the attributes (default false).
    pub debug: bool,
    /// SECS.MISCSELECT requested (default 0).
    pub miscselect: u32,
    /// The program applies its own relative relocations when it first runs (default
    /// false): its `R_X86_64_RELATIVE` and RELR relocations are then accepted — checked to
    /// be ones it can apply, into its writable segments — instead of refused. They are
    /// never applied by the loader, so MRENCLAVE stays independent of the load address.
    pub self_relocating: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            threads: 2,
            stack_pages: 16,
            nssa: 2,
            ssaframesize: 1,
            heap_pages: 256,
            measure_heap: false,
            size: None,
            dynamic_pages: 0,
            attributes: Attributes::new(AttributesFlags::MODE64BIT, 0x3),
            debug: false,
            miscselect: 0,
            self_relocating: false,
        }
    }
}

/// Where one thread's pages go (offsets from the enclave base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadLayout {
    /// The guard hole below the stack (one page, never added).
    pub guard: u64,
    /// Lowest stack page; the stack is `[stack_bottom, tcs)`.
    pub stack_bottom: u64,
    /// The TCS page, which is also the initial stack top.
    pub tcs: u64,
    /// The first SSA frame (TCS.OSSA).
    pub ssa: u64,
    /// End of the SSA frames: `ssa + nssa × ssaframesize × 4096`.
    pub end: u64,
}

/// A [`Layout`] applied to an image end: every region's offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutPlan {
    /// Page-aligned end of the program's segments.
    pub image_end: u64,
    /// One entry per thread, ascending.
    pub threads: Vec<ThreadLayout>,
    /// The guard hole below the heap (one page, never added).
    pub heap_guard: u64,
    /// First heap page.
    pub heap_start: u64,
    /// End of the heap, where dynamic memory starts.
    pub dynamic_start: u64,
    /// ELRANGE size.
    pub size: u64,
}

impl Layout {
    /// Checks the fields that do not depend on the image: thread, stack and SSA counts and
    /// the shape of an explicit size.
    pub fn validate(&self) -> Result<()> {
        if self.threads == 0 {
            return Err(LayoutError::NoThreads);
        }
        if self.threads > MAX_THREADS {
            return Err(LayoutError::TooManyThreads { threads: self.threads });
        }
        if self.stack_pages == 0 {
            return Err(LayoutError::NoStack);
        }
        if self.nssa == 0 {
            return Err(LayoutError::NoSsaFrames);
        }
        if self.ssaframesize == 0 {
            return Err(LayoutError::ZeroSsaFrameSize);
        }
        if let Some(size) = self.size
            && (!size.is_power_of_two() || size < MIN_SIZE)
        {
            return Err(LayoutError::BadSize { size });
        }
        if let Some(size) = self.size {
            self.check_below_max(size)?;
        }
        let attributes = self.effective_attributes();
        let frame_checked_size = self.size.unwrap_or_else(|| self.max_size());
        crate::ecreate_checks::check_secs(frame_checked_size, self.ssaframesize, attributes, self.miscselect)?;
        Ok(())
    }

    /// The maximum enclave size for this layout's mode.
    fn max_size(&self) -> u64 {
        crate::ecreate_checks::max_enclave_size(self.effective_attributes())
    }

    /// Refuses a size at or above the maximum enclave size (module docs, "Limits").
    fn check_below_max(&self, size: u64) -> Result<()> {
        let max = self.max_size();
        if size >= max {
            return Err(LayoutError::SizeNotBelowMax { size, max });
        }
        Ok(())
    }

    /// SECS.ATTRIBUTES: [`attributes`](Self::attributes), plus DEBUG if
    /// [`debug`](Self::debug) is set.
    #[must_use]
    pub fn effective_attributes(&self) -> Attributes {
        let mut attributes = self.attributes;
        if self.debug {
            attributes.flags |= AttributesFlags::DEBUG.bits();
        }
        attributes
    }

    /// SSA pages per thread: `nssa × ssaframesize`.
    #[must_use]
    pub fn ssa_pages(&self) -> u64 {
        u64::from(self.nssa) * u64::from(self.ssaframesize)
    }

    /// Lays out the threads, heap and dynamic room after a program whose segments end at
    /// `image_end` (rounded up to a page here), and picks or checks the size.
    pub fn plan(&self, image_end: u64) -> Result<LayoutPlan> {
        self.validate()?;
        let overflow = LayoutError::Overflow { image_end };
        let pages = |n: u64| n.checked_mul(PAGE).ok_or(overflow.clone());
        let add = |a: u64, b: u64| a.checked_add(b).ok_or(overflow.clone());

        let mut cursor = add(image_end, PAGE - 1)? & !(PAGE - 1);
        let aligned_end = cursor;
        let stack_bytes = pages(self.stack_pages)?;
        let ssa_bytes = pages(self.ssa_pages())?;
        let mut threads = Vec::with_capacity(self.threads as usize);
        for _ in 0..self.threads {
            let guard = cursor;
            let stack_bottom = add(guard, PAGE)?;
            let tcs = add(stack_bottom, stack_bytes)?;
            let ssa = add(tcs, PAGE)?;
            let end = add(ssa, ssa_bytes)?;
            threads.push(ThreadLayout { guard, stack_bottom, tcs, ssa, end });
            cursor = end;
        }
        let heap_guard = cursor;
        let heap_start = add(heap_guard, PAGE)?;
        let dynamic_start = add(heap_start, pages(self.heap_pages)?)?;
        let needed = add(dynamic_start, pages(self.dynamic_pages)?)?;
        let size = match self.size {
            Some(size) if size < needed => return Err(LayoutError::TooSmall { needed, size }),
            Some(size) => size,
            None => needed.checked_next_power_of_two().ok_or(overflow)?.max(MIN_AUTO_SIZE),
        };
        self.check_below_max(size)?;
        crate::ecreate_checks::check_secs(size, self.ssaframesize, self.effective_attributes(), self.miscselect)?;
        Ok(LayoutPlan { image_end: aligned_end, threads, heap_guard, heap_start, dynamic_start, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let l = Layout::default();
        assert_eq!((l.threads, l.stack_pages, l.nssa, l.ssaframesize), (2, 16, 2, 1));
        assert_eq!((l.heap_pages, l.measure_heap, l.size, l.dynamic_pages), (256, false, None, 0));
        assert_eq!(l.attributes, Attributes { flags: AttributesFlags::MODE64BIT.bits(), xfrm: 3 });
        assert_eq!(l.effective_attributes(), l.attributes);
        assert_eq!((l.debug, l.miscselect), (false, 0));
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn debug_adds_the_debug_attribute() {
        let l = Layout { debug: true, ..Layout::default() };
        assert_eq!(l.effective_attributes().flags, (AttributesFlags::MODE64BIT | AttributesFlags::DEBUG).bits());
        assert_eq!(l.effective_attributes().xfrm, 3);
    }

    #[test]
    fn default_plan_offsets() {
        let plan = Layout::default().plan(0x2345).unwrap();
        assert_eq!(plan.image_end, 0x3000);
        // Thread 0: guard 0x3000, stack 0x4000..0x14000, TCS 0x14000, SSA 0x15000..0x17000.
        assert_eq!(
            plan.threads[0],
            ThreadLayout { guard: 0x3000, stack_bottom: 0x4000, tcs: 0x14000, ssa: 0x15000, end: 0x17000 }
        );
        assert_eq!(
            plan.threads[1],
            ThreadLayout { guard: 0x17000, stack_bottom: 0x18000, tcs: 0x28000, ssa: 0x29000, end: 0x2b000 }
        );
        assert_eq!(plan.threads.len(), 2);
        assert_eq!(plan.heap_guard, 0x2b000);
        assert_eq!(plan.heap_start, 0x2c000);
        assert_eq!(plan.dynamic_start, 0x2c000 + 256 * 0x1000);
        assert_eq!(plan.size, MIN_AUTO_SIZE);
    }

    #[test]
    fn automatic_size_is_the_next_power_of_two_with_dynamic_room() {
        let base = Layout { heap_pages: 0, ..Layout::default() };
        let plan = base.plan(0x10_0000).unwrap();
        assert_eq!(plan.size, MIN_AUTO_SIZE);
        // Exactly filling 2 MiB keeps 2 MiB; one page more doubles it.
        let room = (MIN_AUTO_SIZE - plan.dynamic_start) / PAGE;
        let fits = Layout { dynamic_pages: room, ..base.clone() }.plan(0x10_0000).unwrap();
        assert_eq!(fits.size, MIN_AUTO_SIZE);
        let over = Layout { dynamic_pages: room + 1, ..base.clone() }.plan(0x10_0000).unwrap();
        assert_eq!(over.size, 2 * MIN_AUTO_SIZE);
        // A big image rounds up to its own power of two.
        let big = base.plan(0x30_0000).unwrap();
        assert_eq!(big.size, 0x40_0000);
    }

    #[test]
    fn explicit_size() {
        let l = Layout { size: Some(0x100_0000), ..Layout::default() };
        assert_eq!(l.plan(0x1000).unwrap().size, 0x100_0000);
        let small = Layout { size: Some(0x10_0000), ..Layout::default() };
        let needed = Layout::default().plan(0x1000).unwrap().dynamic_start;
        assert_eq!(small.plan(0x1000), Err(LayoutError::TooSmall { needed, size: 0x10_0000 }));
        assert_eq!(
            LayoutError::TooSmall { needed: 0x123_4000, size: 0x100_0000 }.to_string(),
            "image needs 0x1234000 bytes but the enclave size is 0x1000000"
        );
        // dynamic_pages counts against an explicit size too.
        let exact = Layout { size: Some(0x20_0000), heap_pages: 0, ..Layout::default() };
        let plan = exact.plan(0).unwrap();
        let room = (0x20_0000 - plan.dynamic_start) / PAGE;
        assert!(Layout { dynamic_pages: room, ..exact.clone() }.plan(0).is_ok());
        assert!(matches!(
            Layout { dynamic_pages: room + 1, ..exact }.plan(0),
            Err(LayoutError::TooSmall { size: 0x20_0000, .. })
        ));
    }

    #[test]
    fn validation_errors() {
        let d = Layout::default;
        assert_eq!(Layout { threads: 0, ..d() }.validate(), Err(LayoutError::NoThreads));
        assert_eq!(Layout { stack_pages: 0, ..d() }.validate(), Err(LayoutError::NoStack));
        assert_eq!(Layout { nssa: 0, ..d() }.validate(), Err(LayoutError::NoSsaFrames));
        assert_eq!(Layout { ssaframesize: 0, ..d() }.validate(), Err(LayoutError::ZeroSsaFrameSize));
        for size in [0, 0x1000, 0x3000, 0x10_0001] {
            assert_eq!(Layout { size: Some(size), ..d() }.validate(), Err(LayoutError::BadSize { size }));
            assert_eq!(Layout { size: Some(size), ..d() }.plan(0), Err(LayoutError::BadSize { size }));
        }
        assert_eq!(Layout { threads: 0, ..d() }.plan(0), Err(LayoutError::NoThreads));
    }

    #[test]
    fn absurd_sizes_overflow_instead_of_panicking() {
        let image_end = 0x1000;
        for l in [
            Layout { stack_pages: u64::MAX, ..Layout::default() },
            Layout { heap_pages: u64::MAX / PAGE, ..Layout::default() },
            Layout { dynamic_pages: u64::MAX / PAGE - 0x100, ..Layout::default() },
            Layout { heap_pages: (1 << 51) + 1, ..Layout::default() },
        ] {
            assert_eq!(l.plan(image_end), Err(LayoutError::Overflow { image_end }), "{l:?}");
        }
        assert_eq!(Layout::default().plan(u64::MAX - 5), Err(LayoutError::Overflow { image_end: u64::MAX - 5 }));
    }

    #[test]
    fn ssa_frames_scale_with_frame_size() {
        let l = Layout { threads: 1, nssa: 3, ssaframesize: 2, ..Layout::default() };
        let t = l.plan(0).unwrap().threads[0];
        assert_eq!(t.end - t.ssa, 6 * PAGE);
        assert_eq!(t.ssa, t.tcs + PAGE);
        assert_eq!(t.tcs - t.stack_bottom, 16 * PAGE);
        assert_eq!(t.guard, 0);
    }

    #[test]
    fn sizes_reaching_the_maximum_enclave_size_are_refused() {
        use crate::ecreate_checks::SecsError;
        let max = 1u64 << 56;
        for size in [max, max << 1, 1 << 62, 1 << 63] {
            assert_eq!(
                Layout { size: Some(size), ..Layout::default() }.validate(),
                Err(LayoutError::SizeNotBelowMax { size, max })
            );
        }
        assert_eq!(Layout { size: Some(max >> 1), ..Layout::default() }.validate(), Ok(()));
        // A layout that needs the maximum (a 2^55-byte heap) is refused the same way.
        let huge_heap = Layout { heap_pages: (1 << 55) / PAGE, ..Layout::default() };
        assert_eq!(huge_heap.plan(0x1000), Err(LayoutError::SizeNotBelowMax { size: max, max }));
        // 1 TiB of heap is fine: it is one run in the image.
        assert_eq!(
            Layout { heap_pages: (1 << 40) / PAGE, ..Layout::default() }.plan(0x1000).map(|p| p.size),
            Ok(1 << 41)
        );
        // MISCSELECT: EXINFO only; SSA frames as ECREATE checks them.
        assert_eq!(
            Layout { miscselect: 2, ..Layout::default() }.validate(),
            Err(LayoutError::Secs(SecsError::Miscselect { miscselect: 2 }))
        );
        assert_eq!(Layout { miscselect: 1, ..Layout::default() }.validate(), Ok(()));
        assert!(matches!(
            Layout { ssaframesize: u32::MAX, size: Some(0x100_0000), ..Layout::default() }.validate(),
            Err(LayoutError::Secs(SecsError::SsaFrameTooLarge { .. }))
        ));
    }

    #[test]
    fn thread_counts_are_capped() {
        assert_eq!(Layout { threads: MAX_THREADS, ..Layout::default() }.validate(), Ok(()));
        for threads in [MAX_THREADS + 1, u32::MAX] {
            assert_eq!(
                Layout { threads, ..Layout::default() }.validate(),
                Err(LayoutError::TooManyThreads { threads })
            );
        }
    }
}
