//! Random sequences of leaves, valid and invalid, never panic, and after every step:
//! - the processor's own invariants hold (`check_invariants`: owners valid, child counts
//!   exact, PENDING/MODIFIED/PR/type/permission consistency, version slots unique);
//! - each EPC page is free or valid exactly as the leaves that succeeded say (a shadow
//!   model tracks it: only a successful EAUG/EPA/ELDx makes a page valid, only a successful
//!   EREMOVE/EWB frees it — a failing leaf changes nothing);
//! - and at the end the whole enclave can be torn down to an empty EPC.

use proptest::prelude::*;
use sgxemu_arch::{PAGE_SIZE, PageType, SecinfoFlags as F};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch};
use sgxemu_cpu::{AexEvent, Exception, Memory, Regs, Status};

const POOL: usize = 12;
const HEAP_PAGES: usize = 6;
const SLOTS: usize = 4;
const AEP: u64 = 0x40_1000;

#[derive(Clone, Debug)]
enum Op {
    Eaug { page: usize, heap: usize },
    Eadd { page: usize, heap: usize },
    Eremove { page: usize },
    Epa { page: usize },
    Eblock { page: usize },
    Etrack,
    Ewb { page: usize, va: usize, slot: usize },
    Eldu { blob: usize, page: usize, va: usize, slot: usize, blocked: bool },
    Emodpr { page: usize, perms: u8 },
    Emodt { page: usize, to_tcs: bool },
    Enter,
    Exit,
    Aex,
    Resume,
    Eaccept { heap: usize, shape: usize },
    Emodpe { heap: usize, perms: u8 },
    Eacceptcopy { dst: usize, src: usize, perms: u8 },
    Misaligned { page: usize, offset: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0..POOL + 7;
    let heap = 0..HEAP_PAGES;
    prop_oneof![
        4 => (page.clone(), heap.clone()).prop_map(|(page, heap)| Op::Eaug { page, heap }),
        1 => (page.clone(), heap.clone()).prop_map(|(page, heap)| Op::Eadd { page, heap }),
        3 => page.clone().prop_map(|page| Op::Eremove { page }),
        2 => page.clone().prop_map(|page| Op::Epa { page }),
        3 => page.clone().prop_map(|page| Op::Eblock { page }),
        2 => Just(Op::Etrack),
        3 => (page.clone(), page.clone(), 0..SLOTS).prop_map(|(page, va, slot)| Op::Ewb { page, va, slot }),
        3 => (0..8usize, page.clone(), page.clone(), 0..SLOTS, any::<bool>())
            .prop_map(|(blob, page, va, slot, blocked)| Op::Eldu { blob, page, va, slot, blocked }),
        2 => (page.clone(), 0..8u8).prop_map(|(page, perms)| Op::Emodpr { page, perms }),
        2 => (page.clone(), any::<bool>()).prop_map(|(page, to_tcs)| Op::Emodt { page, to_tcs }),
        2 => Just(Op::Enter),
        2 => Just(Op::Exit),
        1 => Just(Op::Aex),
        1 => Just(Op::Resume),
        4 => (heap.clone(), 0..SHAPES.len()).prop_map(|(heap, shape)| Op::Eaccept { heap, shape }),
        1 => (heap.clone(), 0..8u8).prop_map(|(heap, perms)| Op::Emodpe { heap, perms }),
        1 => (heap.clone(), heap, 0..8u8).prop_map(|(dst, src, perms)| Op::Eacceptcopy { dst, src, perms }),
        1 => (page, prop_oneof![Just(8u64), Just(0x800), Just(0xFFF)]).prop_map(|(page, offset)| Op::Misaligned { page, offset }),
    ]
}

/// SECINFO shapes EACCEPT is tried with (legal ones and an illegal one).
const SHAPES: [(PageType, u64); 6] = [
    (PageType::Reg, 0x0B),  // R|W|PENDING
    (PageType::Reg, 0x21),  // R|PR
    (PageType::Reg, 0x23),  // R|W|PR
    (PageType::Trim, 0x10), // MODIFIED
    (PageType::Tcs, 0x10),  // MODIFIED
    (PageType::Reg, 0x18),  // PENDING|MODIFIED: illegal shape
];

fn heap_la(base: u64, heap: usize) -> u64 {
    base + layout::HEAP + heap as u64 * PAGE_SIZE as u64
}

struct Blob {
    page: Vec<u8>,
    pcmd: Vec<u8>,
    linaddr: u64,
    child: bool,
}

struct World {
    h: Harness,
    e: TestEnclave,
    pages: Vec<u64>,
    shadow: Vec<bool>,
    blobs: Vec<Blob>,
    regs: Regs,
}

impl World {
    fn new() -> Self {
        let mut h = Harness::new();
        let e = TestEnclave::build(&mut h);
        let mut pages: Vec<u64> = e.pages.values().copied().collect();
        pages.push(e.secs);
        pages.extend((0..POOL).map(|_| h.alloc_page()));
        let shadow = pages.iter().map(|&p| h.cpu.epcm_view(h.cpu.epc_index(p).unwrap()).valid).collect();
        World { h, e, pages, shadow, blobs: Vec::new(), regs: Regs::default() }
    }

    /// Writes SECINFO flags into the enclave's data page, where ENCLU operands are read.
    fn put_enclave_secinfo(&mut self, flags: u64) -> u64 {
        let la = self.e.base + layout::DATA;
        let epc = self.h.cpu.epc_index(self.e.pages[&la]).unwrap();
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&flags.to_le_bytes());
        self.h.cpu.write_epc(epc, 0, &bytes);
        la
    }

    fn step(&mut self, op: &Op) {
        let h = &mut self.h;
        match *op {
            Op::Eaug { page, heap } => {
                let la = heap_la(self.e.base, heap);
                h.put_pageinfo(la, 0, 0, self.e.secs);
                if h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, self.pages[page]).is_ok() {
                    h.map(la, self.pages[page], true, true);
                    self.shadow[page] = true;
                }
            }
            Op::Eadd { page, heap } => {
                let la = heap_la(self.e.base, heap);
                let flags = (F::R | F::W).with_page_type(PageType::Reg);
                // The enclave is initialized: EADD must #GP (the harness picks a fresh target).
                let _ = page;
                let result = h.eadd(self.e.secs, la, flags, &[7; PAGE_SIZE]);
                assert_eq!(result, Err(Exception::Gp));
            }
            Op::Eremove { page } => {
                if h.cpu.eremove(&mut h.lp, self.pages[page]) == Ok(Status::Success) {
                    self.shadow[page] = false;
                }
            }
            Op::Epa { page } => {
                if h.cpu.epa(&mut h.lp, 3, self.pages[page]).is_ok() {
                    self.shadow[page] = true;
                }
            }
            Op::Eblock { page } => {
                let _ = h.cpu.eblock(&mut h.lp, self.pages[page]);
            }
            Op::Etrack => {
                let _ = h.cpu.etrack(&mut h.lp, self.e.secs);
            }
            Op::Ewb { page, va, slot } => {
                h.put_pageinfo(0, scratch::PAGE, scratch::SECINFO, 0);
                let slot_addr = self.pages[va] + slot as u64 * 8;
                let before = h.cpu.epcm_view(h.cpu.epc_index(self.pages[page]).unwrap());
                let result = h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, self.pages[page], slot_addr);
                if matches!(result, Ok(Status::Success | Status::Info(_))) {
                    let mut blob = Blob { page: vec![0; PAGE_SIZE], pcmd: vec![0; 128], linaddr: 0, child: false };
                    h.mem.read(scratch::PAGE, &mut blob.page).unwrap();
                    h.mem.read(scratch::SECINFO, &mut blob.pcmd).unwrap();
                    let mut linaddr = [0u8; 8];
                    h.mem.read(scratch::PAGEINFO, &mut linaddr).unwrap();
                    blob.linaddr = u64::from_le_bytes(linaddr);
                    blob.child = matches!(before.page_type, PageType::Reg | PageType::Tcs | PageType::Trim);
                    self.blobs.push(blob);
                    self.shadow[page] = false;
                }
            }
            Op::Eldu { blob, page, va, slot, blocked } => {
                let Some(b) = self.blobs.get(blob % self.blobs.len().max(1)) else { return };
                h.mem.write(scratch::PAGE, &b.page).unwrap();
                h.mem.write(scratch::SECINFO, &b.pcmd).unwrap();
                let secs = if b.child { self.e.secs } else { 0 };
                h.put_pageinfo(b.linaddr, scratch::PAGE, scratch::SECINFO, secs);
                let (linaddr, target, slot_addr) = (b.linaddr, self.pages[page], self.pages[va] + slot as u64 * 8);
                let result = if blocked {
                    h.cpu.eldb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, slot_addr)
                } else {
                    h.cpu.eldu(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, slot_addr)
                };
                if result == Ok(Status::Success) {
                    if linaddr != 0 {
                        h.map(linaddr, target, true, true);
                    }
                    self.shadow[page] = true;
                }
            }
            Op::Emodpr { page, perms } => {
                h.put_secinfo(F::from_bits_retain(u64::from(perms)));
                let _ = h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, self.pages[page]);
            }
            Op::Emodt { page, to_tcs } => {
                let ty = if to_tcs { PageType::Tcs } else { PageType::Trim };
                h.put_secinfo(F::empty().with_page_type(ty));
                let _ = h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, self.pages[page]);
            }
            Op::Enter => {
                let tcs = self.e.tcs;
                let _ = h.eenter(&mut self.regs, tcs, AEP);
            }
            Op::Exit => {
                let _ = h.eexit(&mut self.regs, 0x40_0000);
            }
            Op::Aex => {
                let _ = h.cpu.aex(&mut h.lp, &mut self.regs, AexEvent::interrupt());
            }
            Op::Resume => {
                let tcs = self.e.tcs;
                let _ = h.eresume(&mut self.regs, tcs, AEP);
            }
            Op::Eaccept { heap, shape } => {
                let (ty, bits) = SHAPES[shape];
                let secinfo = self.put_enclave_secinfo(F::from_bits_retain(bits).with_page_type(ty).bits());
                let la = heap_la(self.e.base, heap);
                let h = &mut self.h;
                let mut regs = Regs { rbx: secinfo, rcx: la, ..self.regs };
                let _ = h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt);
            }
            Op::Emodpe { heap, perms } => {
                let secinfo = self.put_enclave_secinfo(u64::from(perms));
                let la = heap_la(self.e.base, heap);
                let h = &mut self.h;
                let mut regs = Regs { rbx: secinfo, rcx: la, ..self.regs };
                let _ = h.cpu.emodpe(&mut h.lp, &mut regs, &h.pt);
            }
            Op::Eacceptcopy { dst, src, perms } => {
                let secinfo = self
                    .put_enclave_secinfo(F::from_bits_retain(u64::from(perms)).with_page_type(PageType::Reg).bits());
                let (dst, src) = (heap_la(self.e.base, dst), heap_la(self.e.base, src));
                let h = &mut self.h;
                let mut regs = Regs { rbx: secinfo, rcx: dst, rdx: src, ..self.regs };
                let _ = h.cpu.eacceptcopy(&mut h.lp, &mut regs, &h.pt);
            }
            Op::Misaligned { page, offset } => {
                let addr = self.pages[page] + offset;
                assert_eq!(h.cpu.eremove(&mut h.lp, addr), Err(Exception::Gp));
                assert_eq!(h.cpu.epa(&mut h.lp, 3, addr), Err(Exception::Gp));
                assert_eq!(h.cpu.eblock(&mut h.lp, addr), Err(Exception::Gp));
            }
        }
    }

    fn check(&self, step: usize, op: &Op) {
        if let Err(violation) = self.h.cpu.check_invariants() {
            panic!("after step {step} ({op:?}): {violation}");
        }
        for (i, &page) in self.pages.iter().enumerate() {
            let view = self.h.cpu.epcm_view(self.h.cpu.epc_index(page).unwrap());
            assert_eq!(view.valid, self.shadow[i], "after step {step} ({op:?}): page {i} validity {view:?}");
        }
    }

    /// Leaves the enclave and frees every page: children first, then the SECS.
    fn teardown(mut self) {
        let h = &mut self.h;
        if h.lp.in_enclave() {
            h.cpu.aex(&mut h.lp, &mut self.regs, AexEvent::interrupt()).unwrap();
        }
        for &page in &self.pages {
            if page != self.e.secs {
                assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Success), "child page {page:#x}");
            }
        }
        assert_eq!(h.cpu.eremove(&mut h.lp, self.e.secs), Ok(Status::Success), "SECS after its children");
        for &page in &self.pages {
            assert!(!h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).valid);
        }
        h.cpu.check_invariants().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_leaf_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut world = World::new();
        for (step, op) in ops.iter().enumerate() {
            world.step(op);
            world.check(step, op);
        }
        world.teardown();
    }
}
