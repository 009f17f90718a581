//! The processor shared by threads (spec §0.4): one `Processor`, one `Lp` and one kernel
//! memory per thread. Lock conflicts are legal only where leaves actually overlap, so the race
//! tests run many bounded rounds, release both threads together with a `Barrier`, and assert
//! that *every* observed pair of outcomes is one §0.4's table allows and that the EPCM
//! invariants hold after each round (no sleeps; whether a given round overlaps is up to the
//! scheduler, which is why only the set of allowed outcomes is asserted).
//!
//! Coverage:
//! - `Processor: Sync`, `Lp: Send`: `processor_is_shareable`
//! - leaves on different pages run in parallel and all succeed (EPA, EAUG, EBLOCK, ETRACK,
//!   EWB, ELDU, EREMOVE on disjoint pages of one enclave, 4 threads):
//!   `disjoint_pages_from_four_threads_all_succeed`
//! - EBLOCK (target shared / SGX_EPC_PAGE_CONFLICT) vs EWB (target exclusive / #GP):
//!   `eblock_races_ewb_on_one_page`
//! - EBLOCK vs EREMOVE (target exclusive / #GP): `eblock_races_eremove_on_one_page`
//! - EMODT (SGX_EPC_PAGE_CONFLICT) vs EMODPR (vs SGX2 leaves: SGX_EPC_PAGE_CONFLICT):
//!   `emodt_races_emodpr_on_one_page`; EMODPR vs EMODPR: `emodpr_races_emodpr_on_one_page`
//! - EADD vs EADD into one target (target exclusive / #GP, else the loser sees VALID → #PF):
//!   `eadd_races_eadd_into_one_target`; EAUG vs EAUG likewise: `eaug_races_eaug_into_one_target`;
//!   EPA vs EPA: `epa_races_epa_on_one_page`
//! - EREMOVE vs EREMOVE of one page (#GP or a no-op success, child count exact):
//!   `eremove_races_eremove_on_one_page`
//! - ETRACK vs ETRACK on one SECS (#GP, spec §13.13): `etrack_races_etrack_on_one_secs`
//! - The same conflicts made deterministic: a leaf parked inside kernel memory (a `Memory`
//!   that blocks) while it holds its locks, and the other leaves run against it:
//!   `leaves_meeting_an_ewb_in_progress` (EBLOCK → SGX_EPC_PAGE_CONFLICT, EREMOVE/EWB/EPA/
//!   EAUG/EDBGRD → #GP, EMODPR vs an SGX1 holder → #GP, EMODT → SGX_EPC_PAGE_CONFLICT, VA page
//!   shared with another EWB, EENTER on a TCS being evicted → #GP),
//!   `leaves_meeting_an_eldu_in_progress` (target busy for EAUG/EPA/EREMOVE/ELDU → #GP, SECS
//!   held shared: EREMOVE/EWB of it → #GP, ETRACK and EAUG proceed),
//!   `leaves_meeting_an_ewb_of_the_secs` (SECS held exclusive: EAUG, ELDU of a child,
//!   ETRACK, EREMOVE → #GP, EBLOCK → SGX_EPC_PAGE_CONFLICT, also from an LP that had the
//!   enclave cached; once the SECS is gone such an LP gets #PF),
//!   `leaves_meeting_an_eadd_in_progress` (EADD into the same target → #GP, SECS shared).
//!   EMODT itself never parks (it touches no kernel memory while locked): EMODPR meeting an
//!   EMODT → SGX_EPC_PAGE_CONFLICT is covered by the race test above and by the unit test
//!   `epcm::tests::an_exclusive_sgx2_holder_is_told_apart_from_an_sgx1_one`.
//! - EENTER vs EENTER on one TCS: exactly one gets in, the other #GP (TCS active):
//!   `two_threads_entering_one_tcs_exactly_one_gets_in`; different TCSs both get in:
//!   `two_threads_on_two_tcs_both_get_in`

use std::collections::BTreeMap;
use std::sync::Barrier;

use sgxemu_arch::{Enclu, ErrorCode, PAGE_SIZE, PageType, Pageinfo, Secinfo, SecinfoFlags as F};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image, tcs_image};
use sgxemu_cpu::{Exception, LeafResult, Lp, Memory, Processor, Regs, SparseMemory, Status};
use zerocopy::IntoBytes;

const AEP: u64 = 0x40_1000;
const ROUNDS: usize = 300;

fn processor_shareable<T: Sync + Send>() {}
fn lp_movable<T: Send>() {}

#[test]
fn processor_is_shareable() {
    processor_shareable::<Processor>();
    lp_movable::<Lp>();
    lp_movable::<SparseMemory>();
}

/// Runs `a` and `b` on two threads, each with its own LP and kernel memory. Each closure
/// prepares its operands, then calls `go.wait()` right before its leaf so both start together.
fn race<RA: Send, RB: Send>(
    cpu: &Processor,
    a: impl FnOnce(&mut Lp, &mut SparseMemory, &Barrier) -> RA + Send,
    b: impl FnOnce(&mut Lp, &mut SparseMemory, &Barrier) -> RB + Send,
) -> (RA, RB) {
    let go = Barrier::new(2);
    std::thread::scope(|s| {
        let ta = s.spawn(|| a(&mut cpu.new_lp(), &mut SparseMemory::new(), &go));
        let tb = s.spawn(|| b(&mut cpu.new_lp(), &mut SparseMemory::new(), &go));
        (ta.join().expect("thread a"), tb.join().expect("thread b"))
    })
}

/// Counts outcome pairs, for the `--nocapture` log (which ones occur is up to the scheduler).
fn tally<K: Ord + std::fmt::Debug>(name: &str, seen: BTreeMap<K, usize>) {
    eprintln!("{name}: {seen:?}");
}

fn valid(h: &Harness, page: u64) -> bool {
    h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).valid
}

fn put_pageinfo(mem: &mut SparseMemory, at: u64, info: Pageinfo) {
    mem.write(at, info.as_bytes()).unwrap();
}

fn put_secinfo(mem: &mut SparseMemory, at: u64, flags: F) {
    mem.write(at, Secinfo::new(flags).as_bytes()).unwrap();
}

fn eaug_at(h: &mut Harness, secs: u64, la: u64, page: u64) {
    h.put_pageinfo(la, 0, 0, secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page).expect("EAUG");
}

fn gp<T>() -> Result<T, Exception> {
    Err(Exception::Gp)
}

const CONFLICT: LeafResult = Ok(Status::Error(ErrorCode::EpcPageConflict));
const SUCCESS: LeafResult = Ok(Status::Success);

// ---------------------------------------------------------------------------------------------
// (a) Disjoint pages in parallel

#[test]
fn disjoint_pages_from_four_threads_all_succeed() {
    const THREADS: u64 = 4;
    const PAGES: u64 = 16;
    let mut h = Harness::new();
    let e = TestEnclave::build_with(&mut h, secs_image(0x10_0000_0000, 1 << 22));
    let plan: Vec<(u64, Vec<u64>)> =
        (0..THREADS).map(|_| (h.alloc_page(), (0..PAGES).map(|_| h.alloc_page()).collect())).collect();
    let cpu = &h.cpu;
    let (phase, secs, base) = (Barrier::new(THREADS as usize), e.secs, e.base);
    std::thread::scope(|s| {
        for (t, (va, pages)) in plan.iter().enumerate() {
            let phase = &phase;
            s.spawn(move || {
                let mut lp = cpu.new_lp();
                let mut mem = SparseMemory::new();
                let la = |i: usize| base + layout::HEAP + ((t * PAGES as usize + i) * PAGE_SIZE) as u64;
                let content = |i: usize| [(t * 16 + i) as u8 ^ 0xA5; PAGE_SIZE];
                cpu.epa(&mut lp, 3, *va).expect("EPA");
                for (i, &page) in pages.iter().enumerate() {
                    put_pageinfo(&mut mem, scratch::PAGEINFO, Pageinfo { linaddr: la(i), srcpge: 0, secinfo: 0, secs });
                    cpu.eaug(&mut lp, &mut mem, scratch::PAGEINFO, page).expect("EAUG");
                    cpu.write_epc(cpu.epc_index(page).unwrap(), 0, &content(i));
                    assert_eq!(cpu.eblock(&mut lp, page), SUCCESS);
                }
                if phase.wait().is_leader() {
                    assert_eq!(cpu.etrack(&mut lp, secs), SUCCESS);
                }
                phase.wait();
                for (i, &page) in pages.iter().enumerate() {
                    let (backing, pcmd) = (0x6000_0000 + i as u64 * 0x2000, 0x6000_1000 + i as u64 * 0x2000);
                    let slot = va + 8 * i as u64;
                    put_pageinfo(
                        &mut mem,
                        scratch::PAGEINFO,
                        Pageinfo { linaddr: 0, srcpge: backing, secinfo: pcmd, secs: 0 },
                    );
                    assert_eq!(cpu.ewb(&mut lp, &mut mem, scratch::PAGEINFO, page, slot), SUCCESS, "EWB");
                    put_pageinfo(
                        &mut mem,
                        scratch::PAGEINFO,
                        Pageinfo { linaddr: la(i), srcpge: backing, secinfo: pcmd, secs },
                    );
                    assert_eq!(cpu.eldu(&mut lp, &mut mem, scratch::PAGEINFO, page, slot), SUCCESS, "ELDU");
                    let mut back = vec![0u8; PAGE_SIZE];
                    cpu.read_epc(cpu.epc_index(page).unwrap(), 0, &mut back);
                    assert_eq!(back, content(i), "contents");
                    assert_eq!(cpu.eremove(&mut lp, page), SUCCESS, "EREMOVE");
                }
                assert_eq!(cpu.eremove(&mut lp, *va), SUCCESS);
            });
        }
    });
    for (va, pages) in &plan {
        assert!(!valid(&h, *va));
        assert!(pages.iter().all(|&p| !valid(&h, p)));
    }
    h.cpu.check_invariants().unwrap();
    // The enclave is intact: its own pages are still there and it can be entered.
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    h.eexit(&mut regs, 0).unwrap();
}

// ---------------------------------------------------------------------------------------------
// (b) Conflicting leaves on one page

#[test]
fn eblock_races_ewb_on_one_page() {
    let (mut h, e) = {
        let mut h = Harness::new();
        let e = TestEnclave::build(&mut h);
        (h, e)
    };
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let page = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        eaug_at(&mut h, e.secs, e.base + layout::HEAP, page);
        assert_eq!(h.cpu.eblock(&mut h.lp, page), SUCCESS);
        assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), SUCCESS);
        let slot = va + 8 * (round % 512) as u64;
        h.cpu.write_epc(h.cpu.epc_index(va).unwrap(), (slot % 4096) as usize, &[0; 8]);
        let cpu = &h.cpu;
        let (block, ewb) = race(
            cpu,
            |lp, _, go| {
                go.wait();
                cpu.eblock(lp, page)
            },
            |lp, mem, go| {
                put_pageinfo(
                    mem,
                    scratch::PAGEINFO,
                    Pageinfo { linaddr: 0, srcpge: scratch::PAGE, secinfo: scratch::SECINFO, secs: 0 },
                );
                go.wait();
                cpu.ewb(lp, mem, scratch::PAGEINFO, page, slot)
            },
        );
        let allowed = match ewb {
            // EBLOCK ran before (already blocked), after (page gone) or during EWB's exclusive hold.
            SUCCESS => [Ok(Status::Info(ErrorCode::Blkstate)), Ok(Status::Error(ErrorCode::PgInvld)), CONFLICT]
                .contains(&block),
            // EWB found the page held shared by EBLOCK.
            Err(Exception::Gp) => block == Ok(Status::Info(ErrorCode::Blkstate)),
            _ => false,
        };
        assert!(allowed, "round {round}: EBLOCK {block:?}, EWB {ewb:?}");
        assert_eq!(valid(&h, page), ewb != SUCCESS, "round {round}: EPCM agrees with EWB's outcome");
        if valid(&h, page) {
            assert!(h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).blocked);
            assert_eq!(h.cpu.eremove(&mut h.lp, page), SUCCESS);
        }
        h.cpu.check_invariants().unwrap();
        *seen.entry(format!("{block:?} / {ewb:?}")).or_insert(0) += 1;
    }
    tally("EBLOCK / EWB", seen);
}

#[test]
fn eblock_races_eremove_on_one_page() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let page = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        eaug_at(&mut h, e.secs, e.base + layout::HEAP, page);
        let cpu = &h.cpu;
        let (block, remove) = race(
            cpu,
            |lp, _, go| {
                go.wait();
                cpu.eblock(lp, page)
            },
            |lp, _, go| {
                go.wait();
                cpu.eremove(lp, page)
            },
        );
        let allowed = match remove {
            SUCCESS => [SUCCESS, Ok(Status::Error(ErrorCode::PgInvld)), CONFLICT].contains(&block),
            Err(Exception::Gp) => block == SUCCESS,
            _ => false,
        };
        assert!(allowed, "round {round}: EBLOCK {block:?}, EREMOVE {remove:?}");
        assert_eq!(valid(&h, page), remove != SUCCESS, "round {round}");
        if valid(&h, page) {
            assert!(h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).blocked);
            assert_eq!(h.cpu.eremove(&mut h.lp, page), SUCCESS);
        }
        h.cpu.check_invariants().unwrap();
        *seen.entry(format!("{block:?} / {remove:?}")).or_insert(0) += 1;
    }
    tally("EBLOCK / EREMOVE", seen);
}

/// An accepted RW heap page, ready for EMODPR/EMODT.
fn accepted_page(h: &mut Harness, e: &TestEnclave, page: u64) {
    let la = e.base + layout::HEAP;
    eaug_at(h, e.secs, la, page);
    h.map(la, page, true, false);
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let secinfo_la = e.base + layout::DATA;
    let data = h.cpu.epc_index(e.pages[&secinfo_la]).unwrap();
    h.cpu.write_epc(data, 0, Secinfo::new((F::R | F::W | F::PENDING).with_page_type(PageType::Reg)).as_bytes());
    regs.rbx = secinfo_la;
    regs.rcx = la;
    assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), SUCCESS);
    h.eexit(&mut regs, 0).unwrap();
}

#[test]
fn emodt_races_emodpr_on_one_page() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let page = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        accepted_page(&mut h, &e, page);
        let cpu = &h.cpu;
        let (emodt, emodpr) = race(
            cpu,
            |lp, mem, go| {
                put_secinfo(mem, scratch::SECINFO, F::from(PageType::Trim));
                go.wait();
                cpu.emodt(lp, mem, scratch::SECINFO, page)
            },
            |lp, mem, go| {
                put_secinfo(mem, scratch::SECINFO, F::R);
                go.wait();
                cpu.emodpr(lp, mem, scratch::SECINFO, page)
            },
        );
        let flags = h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).flags;
        let allowed = match emodt {
            // EMODPR before EMODT, during it (SGX2 vs SGX2 → conflict), or after (MODIFIED).
            SUCCESS => {
                [SUCCESS, CONFLICT, Ok(Status::Error(ErrorCode::PageNotModifiable))].contains(&emodpr)
                    && flags == F::MODIFIED.with_page_type(PageType::Trim)
            }
            CONFLICT => emodpr == SUCCESS && flags == (F::R | F::PR).with_page_type(PageType::Reg),
            _ => false,
        };
        assert!(allowed, "round {round}: EMODT {emodt:?}, EMODPR {emodpr:?}, EPCM {flags:?}");
        assert_eq!(h.cpu.eremove(&mut h.lp, page), SUCCESS);
        h.cpu.check_invariants().unwrap();
        *seen.entry(format!("{emodt:?} / {emodpr:?}")).or_insert(0) += 1;
    }
    tally("EMODT / EMODPR", seen);
}

#[test]
fn emodpr_races_emodpr_on_one_page() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let page = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        accepted_page(&mut h, &e, page);
        let cpu = &h.cpu;
        let emodpr = |perms: F| {
            move |lp: &mut Lp, mem: &mut SparseMemory, go: &Barrier| {
                put_secinfo(mem, scratch::SECINFO, perms);
                go.wait();
                cpu.emodpr(lp, mem, scratch::SECINFO, page)
            }
        };
        let (a, b) = race(cpu, emodpr(F::R), emodpr(F::R | F::W));
        let flags = h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).flags;
        let expect_flags = match (a, b) {
            (SUCCESS, SUCCESS) | (SUCCESS, CONFLICT) => Some(F::R | F::PR),
            (CONFLICT, SUCCESS) => Some(F::R | F::W | F::PR),
            _ => None,
        };
        assert_eq!(Some(flags), expect_flags.map(|f| f.with_page_type(PageType::Reg)), "round {round}: {a:?} / {b:?}");
        assert_eq!(h.cpu.eremove(&mut h.lp, page), SUCCESS);
        h.cpu.check_invariants().unwrap();
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    tally("EMODPR / EMODPR", seen);
}

#[test]
fn eadd_races_eadd_into_one_target() {
    let mut h = Harness::new();
    let base = 0x20_0000_0000;
    let secs = h.ecreate(&secs_image(base, 1 << 20)).unwrap();
    let target = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        let cpu = &h.cpu;
        let eadd = |la: u64, tcs: bool| {
            move |lp: &mut Lp, mem: &mut SparseMemory, go: &Barrier| {
                let (flags, data) = if tcs {
                    (F::from(PageType::Tcs), tcs_image(0x1000, 1, 0, 0))
                } else {
                    ((F::R | F::W).with_page_type(PageType::Reg), [0x77; PAGE_SIZE])
                };
                mem.write(scratch::PAGE, &data).unwrap();
                put_secinfo(mem, scratch::SECINFO, flags);
                put_pageinfo(
                    mem,
                    scratch::PAGEINFO,
                    Pageinfo { linaddr: la, srcpge: scratch::PAGE, secinfo: scratch::SECINFO, secs },
                );
                go.wait();
                cpu.eadd(lp, mem, scratch::PAGEINFO, target)
            }
        };
        let (a, b) = race(cpu, eadd(base, true), eadd(base + 0x1000, false));
        let loser_ok = |r: Result<(), Exception>| r == Err(Exception::Gp) || r == Err(Exception::epcm_pf(target, true));
        let view = h.cpu.epcm_view(h.cpu.epc_index(target).unwrap());
        let winner = match (a, b) {
            (Ok(()), other) if loser_ok(other) => (base, PageType::Tcs),
            (other, Ok(())) if loser_ok(other) => (base + 0x1000, PageType::Reg),
            _ => panic!("round {round}: EADD {a:?} / EADD {b:?}: exactly one must succeed"),
        };
        assert_eq!((view.valid, view.enclave_address, view.page_type), (true, winner.0, winner.1), "round {round}");
        h.cpu.check_invariants().unwrap();
        assert_eq!(h.cpu.eremove(&mut h.lp, target), SUCCESS);
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    tally("EADD / EADD", seen);
}

#[test]
fn eaug_races_eaug_into_one_target() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let target = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        let cpu = &h.cpu;
        let eaug = |la: u64| {
            move |lp: &mut Lp, mem: &mut SparseMemory, go: &Barrier| {
                put_pageinfo(mem, scratch::PAGEINFO, Pageinfo { linaddr: la, srcpge: 0, secinfo: 0, secs: e.secs });
                go.wait();
                cpu.eaug(lp, mem, scratch::PAGEINFO, target)
            }
        };
        let (la_a, la_b) = (e.base + layout::HEAP, e.base + layout::HEAP + 0x1000);
        let (a, b) = race(cpu, eaug(la_a), eaug(la_b));
        let loser_ok = |r: Result<(), Exception>| r == Err(Exception::Gp) || r == Err(Exception::epcm_pf(target, true));
        let winner = match (a, b) {
            (Ok(()), other) if loser_ok(other) => la_a,
            (other, Ok(())) if loser_ok(other) => la_b,
            _ => panic!("round {round}: EAUG {a:?} / EAUG {b:?}: exactly one must succeed"),
        };
        assert_eq!(h.cpu.epcm_view(h.cpu.epc_index(target).unwrap()).enclave_address, winner);
        h.cpu.check_invariants().unwrap();
        assert_eq!(h.cpu.eremove(&mut h.lp, target), SUCCESS);
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    tally("EAUG / EAUG", seen);
}

#[test]
fn epa_races_epa_on_one_page() {
    let mut h = Harness::new();
    let page = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        let cpu = &h.cpu;
        let epa = |lp: &mut Lp, _: &mut SparseMemory, go: &Barrier| {
            go.wait();
            cpu.epa(lp, 3, page)
        };
        let (a, b) = race(cpu, epa, epa);
        let loser_ok = |r: Result<(), Exception>| r == Err(Exception::Gp) || r == Err(Exception::epcm_pf(page, true));
        let one = (a.is_ok() && loser_ok(b)) || (b.is_ok() && loser_ok(a));
        assert!(one, "round {round}: EPA {a:?} / EPA {b:?}");
        assert!(valid(&h, page));
        assert_eq!(h.cpu.eremove(&mut h.lp, page), SUCCESS);
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    h.cpu.check_invariants().unwrap();
    tally("EPA / EPA", seen);
}

#[test]
fn eremove_races_eremove_on_one_page() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let page = h.alloc_page();
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        eaug_at(&mut h, e.secs, e.base + layout::HEAP, page);
        let cpu = &h.cpu;
        let eremove = |lp: &mut Lp, _: &mut SparseMemory, go: &Barrier| {
            go.wait();
            cpu.eremove(lp, page)
        };
        let (a, b) = race(cpu, eremove, eremove);
        // Both succeed (the second finds the page free: a no-op), or one found it locked.
        let allowed =
            matches!((a, b), (SUCCESS, SUCCESS) | (SUCCESS, Err(Exception::Gp)) | (Err(Exception::Gp), SUCCESS));
        assert!(allowed, "round {round}: EREMOVE {a:?} / EREMOVE {b:?}");
        assert!(!valid(&h, page));
        h.cpu.check_invariants().expect("the child count dropped exactly once");
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    // Only the six EADDed pages are left: EREMOVE of the SECS still reports them.
    assert_eq!(h.cpu.eremove(&mut h.lp, e.secs), Ok(Status::Error(ErrorCode::ChildPresent)));
    for &epc in e.pages.values() {
        assert_eq!(h.cpu.eremove(&mut h.lp, epc), SUCCESS);
    }
    assert_eq!(h.cpu.eremove(&mut h.lp, e.secs), SUCCESS);
    tally("EREMOVE / EREMOVE", seen);
}

#[test]
fn etrack_races_etrack_on_one_secs() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        let cpu = &h.cpu;
        let etrack = |lp: &mut Lp, _: &mut SparseMemory, go: &Barrier| {
            go.wait();
            cpu.etrack(lp, e.secs)
        };
        let (a, b) = race(cpu, etrack, etrack);
        let allowed =
            matches!((a, b), (SUCCESS, SUCCESS) | (SUCCESS, Err(Exception::Gp)) | (Err(Exception::Gp), SUCCESS));
        assert!(allowed, "round {round}: ETRACK {a:?} / ETRACK {b:?}");
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), SUCCESS, "tracking state not left locked");
    tally("ETRACK / ETRACK", seen);
}

// ---------------------------------------------------------------------------------------------
// (b') Deterministic overlaps: a leaf parked inside kernel memory while it holds its locks

/// Kernel memory that parks the leaf using it at its first access to `at` (between the two
/// barriers), so the test can run other leaves while it holds its page locks.
struct Parking<'a> {
    mem: SparseMemory,
    at: u64,
    parked: &'a Barrier,
    release: &'a Barrier,
    done: std::cell::Cell<bool>,
}

impl Parking<'_> {
    fn park(&self, addr: u64) {
        if addr == self.at && !self.done.replace(true) {
            self.parked.wait();
            self.release.wait();
        }
    }
}

impl Memory for Parking<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        self.park(addr);
        self.mem.read(addr, buf)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception> {
        self.park(addr);
        self.mem.write(addr, data)
    }
}

/// Runs `leaf` on another thread over `mem`, parked at its first access to `at`; runs
/// `during` on this thread (with its own LP and memory) while the leaf is parked.
fn while_parked<R: Send>(
    cpu: &Processor,
    mem: SparseMemory,
    at: u64,
    leaf: impl FnOnce(&mut Lp, &mut dyn Memory) -> R + Send,
    during: impl FnOnce(&mut Lp, &mut SparseMemory),
) -> R {
    let (parked, release) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        let (parked, release) = (&parked, &release);
        let thread = s.spawn(move || {
            let mut mem = Parking { mem, at, parked, release, done: std::cell::Cell::new(false) };
            leaf(&mut cpu.new_lp(), &mut mem)
        });
        parked.wait();
        during(&mut cpu.new_lp(), &mut SparseMemory::new());
        release.wait();
        thread.join().expect("parked leaf")
    })
}

fn pageinfo_mem(info: Pageinfo) -> SparseMemory {
    let mut mem = SparseMemory::new();
    put_pageinfo(&mut mem, scratch::PAGEINFO, info);
    mem
}

#[test]
fn leaves_meeting_an_ewb_in_progress() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let (data, rodata, tcs) = (e.pages[&(e.base + layout::DATA)], e.pages[&(e.base + layout::RODATA)], e.pages[&e.tcs]);
    for page in [data, rodata, tcs] {
        assert_eq!(h.cpu.eblock(&mut h.lp, page), SUCCESS);
    }
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), SUCCESS);
    let out =
        |i: u64| Pageinfo { linaddr: 0, srcpge: 0x6000_0000 + i * 0x2000, secinfo: 0x6000_1000 + i * 0x2000, secs: 0 };
    let cpu = &h.cpu;
    // EWB of the data page parks at its first output write (step 9), holding the page
    // exclusive and the VA page shared.
    let ewb = while_parked(
        cpu,
        pageinfo_mem(out(0)),
        out(0).srcpge,
        |lp, mem| cpu.ewb(lp, mem, scratch::PAGEINFO, data, va),
        |lp, mem| {
            assert_eq!(cpu.eblock(lp, data), CONFLICT, "EBLOCK: target shared / SGX_EPC_PAGE_CONFLICT");
            assert_eq!(cpu.eremove(lp, data), gp(), "EREMOVE: target exclusive / #GP");
            put_pageinfo(mem, scratch::PAGEINFO, out(1));
            assert_eq!(cpu.ewb(lp, mem, scratch::PAGEINFO, data, va + 8), gp(), "EWB: target exclusive / #GP");
            put_secinfo(mem, scratch::SECINFO, F::R);
            assert_eq!(cpu.emodpr(lp, mem, scratch::SECINFO, data), gp(), "EMODPR vs an SGX1 leaf: #GP");
            put_secinfo(mem, scratch::SECINFO, F::from(PageType::Trim));
            assert_eq!(cpu.emodt(lp, mem, scratch::SECINFO, data), CONFLICT, "EMODT: SGX_EPC_PAGE_CONFLICT");
            assert_eq!(cpu.edbgrd(lp, data), gp(), "EDBGRD: target shared / #GP");
            assert_eq!(cpu.epa(lp, 3, data), gp(), "EPA: target exclusive / #GP");
            put_pageinfo(
                mem,
                scratch::PAGEINFO,
                Pageinfo { linaddr: e.base + layout::HEAP, srcpge: 0, secinfo: 0, secs: e.secs },
            );
            assert_eq!(cpu.eaug(lp, mem, scratch::PAGEINFO, data), gp(), "EAUG: target exclusive / #GP");
            // The VA page is held shared: exclusive users fail, another EWB into it proceeds.
            assert_eq!(cpu.eremove(lp, va), gp(), "EREMOVE of the VA page");
            assert_eq!(cpu.epa(lp, 3, va), gp(), "EPA of the VA page");
            put_pageinfo(mem, scratch::PAGEINFO, out(2));
            assert_eq!(cpu.ewb(lp, mem, scratch::PAGEINFO, rodata, va + 16), SUCCESS, "VA shared with another EWB");
        },
    );
    assert_eq!(ewb, SUCCESS);
    assert!(!valid(&h, data) && !valid(&h, rodata));
    // An EENTER that meets an EWB of its TCS takes #GP (step 3, before the EPCM checks of step 4).
    let eenter = while_parked(
        cpu,
        pageinfo_mem(out(3)),
        out(3).srcpge,
        |lp, mem| cpu.ewb(lp, mem, scratch::PAGEINFO, tcs, va + 24),
        |lp, _| {
            let mut regs = Regs { rax: Enclu::Eenter as u64, rbx: e.tcs, rcx: AEP, ..Regs::default() };
            assert_eq!(cpu.eenter(lp, &mut regs, &h.pt), Err(Exception::Gp), "EENTER: TCS busy / #GP");
        },
    );
    assert_eq!(eenter, SUCCESS);
    let mut regs = Regs::default();
    assert_eq!(h.eenter(&mut regs, e.tcs, AEP), Err(Exception::epcm_pf_user(e.tcs, true)), "TCS evicted");
    h.cpu.check_invariants().unwrap();
}

#[test]
fn leaves_meeting_an_eldu_in_progress() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let data = e.pages[&(e.base + layout::DATA)];
    assert_eq!(h.cpu.eblock(&mut h.lp, data), SUCCESS);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), SUCCESS);
    h.put_pageinfo(0, scratch::PAGE, 0x7000_0400, 0);
    assert_eq!(h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, data, va), SUCCESS);
    let mut blob = vec![0u8; PAGE_SIZE + 128];
    h.mem.read(scratch::PAGE, &mut blob[..PAGE_SIZE]).unwrap();
    h.mem.read(0x7000_0400, &mut blob[PAGE_SIZE..]).unwrap();
    let load = Pageinfo { linaddr: e.base + layout::DATA, srcpge: scratch::PAGE, secinfo: 0x7000_0400, secs: e.secs };
    let mut mem = pageinfo_mem(load);
    mem.write(scratch::PAGE, &blob[..PAGE_SIZE]).unwrap();
    mem.write(0x7000_0400, &blob[PAGE_SIZE..]).unwrap();
    let (target, other) = (h.alloc_page(), h.alloc_page());
    let cpu = &h.cpu;
    // ELDU parks reading the ciphertext (step 6): target exclusive, VA and SECS shared.
    let eldu = while_parked(
        cpu,
        mem,
        scratch::PAGE,
        |lp, mem| cpu.eldu(lp, mem, scratch::PAGEINFO, target, va),
        |lp, mem| {
            let aug = |la: u64| Pageinfo { linaddr: la, srcpge: 0, secinfo: 0, secs: e.secs };
            put_pageinfo(mem, scratch::PAGEINFO, aug(e.base + layout::HEAP));
            assert_eq!(cpu.eaug(lp, mem, scratch::PAGEINFO, target), gp(), "EAUG: target busy / #GP");
            assert_eq!(cpu.epa(lp, 3, target), gp(), "EPA: target busy / #GP");
            assert_eq!(cpu.eremove(lp, target), gp(), "EREMOVE of the target");
            mem.write(scratch::PAGE, &blob[..PAGE_SIZE]).unwrap();
            mem.write(0x7000_0400, &blob[PAGE_SIZE..]).unwrap();
            put_pageinfo(mem, scratch::PAGEINFO, load);
            assert_eq!(cpu.eldu(lp, mem, scratch::PAGEINFO, target, va), gp(), "ELDU: target exclusive / #GP");
            assert_eq!(cpu.eremove(lp, e.secs), gp(), "EREMOVE of the SECS held shared");
            put_pageinfo(
                mem,
                scratch::PAGEINFO,
                Pageinfo { linaddr: 0, srcpge: 0x6000_0000, secinfo: 0x6000_1000, secs: 0 },
            );
            assert_eq!(cpu.ewb(lp, mem, scratch::PAGEINFO, e.secs, va + 8), gp(), "EWB of the SECS held shared");
            assert_eq!(cpu.eremove(lp, va), gp(), "EREMOVE of the VA page held shared");
            // Shared users of the SECS go ahead.
            assert_eq!(cpu.etrack(lp, e.secs), SUCCESS, "ETRACK: SECS shared");
            put_pageinfo(mem, scratch::PAGEINFO, aug(e.base + layout::HEAP + 0x1000));
            assert_eq!(cpu.eaug(lp, mem, scratch::PAGEINFO, other), Ok(()), "EAUG: SECS shared");
        },
    );
    assert_eq!(eldu, SUCCESS);
    assert!(valid(&h, target) && valid(&h, other));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn leaves_meeting_an_ewb_of_the_secs() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    // Evict every child (the data page's blob is kept for an ELDU attempt).
    let children: Vec<(u64, u64)> = e.pages.iter().map(|(&la, &epc)| (la, epc)).collect();
    for &(_, epc) in &children {
        assert_eq!(h.cpu.eblock(&mut h.lp, epc), SUCCESS);
    }
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), SUCCESS);
    let data_la = e.base + layout::DATA;
    let mut blob = vec![0u8; PAGE_SIZE + 128];
    for (i, &(la, epc)) in children.iter().enumerate() {
        h.put_pageinfo(0, scratch::PAGE, 0x7000_0400, 0);
        assert_eq!(h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, epc, va + 8 * i as u64), SUCCESS);
        if la == data_la {
            h.mem.read(scratch::PAGE, &mut blob[..PAGE_SIZE]).unwrap();
            h.mem.read(0x7000_0400, &mut blob[PAGE_SIZE..]).unwrap();
        }
    }
    let data_slot = va + 8 * children.iter().position(|&(la, _)| la == data_la).unwrap() as u64;
    let (target, other) = (h.alloc_page(), h.alloc_page());
    let out = Pageinfo { linaddr: 0, srcpge: 0x6000_0000, secinfo: 0x6000_1000, secs: 0 };
    let load = Pageinfo { linaddr: data_la, srcpge: scratch::PAGE, secinfo: 0x7000_0400, secs: e.secs };
    // An LP that used the enclave just before (its cache holds it) meets the SECS the same way.
    let mut warm = h.cpu.new_lp();
    assert_eq!(h.cpu.etrack(&mut warm, e.secs), SUCCESS);
    let cpu = &h.cpu;
    // EWB of the now childless SECS parks at its first output write, holding the SECS exclusive.
    let ewb = while_parked(
        cpu,
        pageinfo_mem(out),
        out.srcpge,
        |lp, mem| cpu.ewb(lp, mem, scratch::PAGEINFO, e.secs, va + 8 * 100),
        |lp, mem| {
            put_pageinfo(
                mem,
                scratch::PAGEINFO,
                Pageinfo { linaddr: e.base + layout::HEAP, srcpge: 0, secinfo: 0, secs: e.secs },
            );
            assert_eq!(cpu.eaug(lp, mem, scratch::PAGEINFO, target), gp(), "EAUG: SECS busy / #GP");
            mem.write(scratch::PAGE, &blob[..PAGE_SIZE]).unwrap();
            mem.write(0x7000_0400, &blob[PAGE_SIZE..]).unwrap();
            put_pageinfo(mem, scratch::PAGEINFO, load);
            assert_eq!(cpu.eldu(lp, mem, scratch::PAGEINFO, other, data_slot), gp(), "ELDU: SECS busy / #GP");
            assert_eq!(cpu.etrack(lp, e.secs), gp(), "ETRACK: SECS busy / #GP");
            assert_eq!(cpu.eblock(lp, e.secs), CONFLICT, "EBLOCK: SGX_EPC_PAGE_CONFLICT");
            assert_eq!(cpu.eremove(lp, e.secs), gp(), "EREMOVE: SECS busy / #GP");
            assert_eq!(cpu.eldu(&mut warm, mem, scratch::PAGEINFO, other, data_slot), gp(), "ELDU, warm LP");
            assert_eq!(cpu.etrack(&mut warm, e.secs), gp(), "ETRACK, warm LP");
            let heap = Pageinfo { linaddr: e.base + layout::HEAP, srcpge: 0, secinfo: 0, secs: e.secs };
            put_pageinfo(mem, scratch::PAGEINFO, heap);
            assert_eq!(cpu.eaug(&mut warm, mem, scratch::PAGEINFO, target), gp(), "EAUG, warm LP");
        },
    );
    assert_eq!(ewb, SUCCESS);
    // The SECS has left its page: an LP whose cache still holds the enclave sees that.
    let not_a_secs = Err(Exception::epcm_pf(e.secs, false));
    assert_eq!(h.cpu.etrack(&mut warm, e.secs), not_a_secs);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), not_a_secs);
    assert!(!valid(&h, e.secs) && !valid(&h, target) && !valid(&h, other));
    // Nothing the failed leaves did stuck: the data page's slot still holds its version.
    let mut slot = [0u8; 8];
    h.cpu.read_epc(h.cpu.epc_index(va).unwrap(), (data_slot % 4096) as usize, &mut slot);
    assert_ne!(u64::from_le_bytes(slot), 0);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn leaves_meeting_an_eadd_in_progress() {
    let mut h = Harness::new();
    let base = 0x20_0000_0000;
    let secs = h.ecreate(&secs_image(base, 1 << 20)).unwrap();
    let (target, other) = (h.alloc_page(), h.alloc_page());
    let add = |la: u64| Pageinfo { linaddr: la, srcpge: scratch::PAGE, secinfo: scratch::SECINFO, secs };
    let operands = |mem: &mut SparseMemory, la: u64| {
        put_pageinfo(mem, scratch::PAGEINFO, add(la));
        put_secinfo(mem, scratch::SECINFO, (F::R | F::W).with_page_type(PageType::Reg));
        mem.write(scratch::PAGE, &[0x33; PAGE_SIZE]).unwrap();
    };
    let mut mem = SparseMemory::new();
    operands(&mut mem, base);
    let cpu = &h.cpu;
    // EADD parks reading its source page (step 6): target exclusive, SECS shared.
    let eadd = while_parked(
        cpu,
        mem,
        scratch::PAGE,
        |lp, mem| cpu.eadd(lp, mem, scratch::PAGEINFO, target),
        |lp, mem| {
            operands(mem, base + 0x1000);
            assert_eq!(
                cpu.eadd(lp, mem, scratch::PAGEINFO, target),
                Err(Exception::Gp),
                "EADD: target exclusive / #GP"
            );
            assert_eq!(cpu.eremove(lp, target), Err(Exception::Gp), "EREMOVE of the target");
            assert_eq!(cpu.eremove(lp, secs), Err(Exception::Gp), "EREMOVE of the SECS held shared");
            assert_eq!(cpu.eadd(lp, mem, scratch::PAGEINFO, other), Ok(()), "EADD elsewhere: SECS shared");
        },
    );
    assert_eq!(eadd, Ok(()));
    let view = h.cpu.epcm_view(h.cpu.epc_index(target).unwrap());
    assert_eq!((view.valid, view.enclave_address), (true, base));
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// (c) One TCS, two threads

fn eenter_then_eexit(h: &Harness, tcs: u64, lp: &mut Lp, go: &Barrier, entered: &Barrier) -> Result<(), Exception> {
    let mut regs = Regs { rax: Enclu::Eenter as u64, rbx: tcs, rcx: AEP, rip: 0x40_0000, ..Regs::default() };
    go.wait();
    let result = h.cpu.eenter(lp, &mut regs, &h.pt);
    // Both have tried before anyone leaves, so the loser cannot slip in after an EEXIT.
    entered.wait();
    if result.is_ok() {
        assert_eq!(h.cpu.lps_inside(h.cpu.epc_addr(lp.active_secs().unwrap())), vec![lp.id()]);
        regs.rbx = 0x40_0003;
        h.cpu.eexit(lp, &mut regs).unwrap();
    }
    result
}

#[test]
fn two_threads_entering_one_tcs_exactly_one_gets_in() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        let entered = Barrier::new(2);
        let h = &h;
        let enter = |lp: &mut Lp, _: &mut SparseMemory, go: &Barrier| eenter_then_eexit(h, e.tcs, lp, go, &entered);
        let (a, b) = race(&h.cpu, enter, enter);
        let one = matches!((a, b), (Ok(()), Err(Exception::Gp)) | (Err(Exception::Gp), Ok(())));
        assert!(one, "round {round}: EENTER {a:?} / EENTER {b:?}");
        assert!(h.cpu.lps_inside(e.secs).is_empty());
        *seen.entry(format!("{a:?} / {b:?}")).or_insert(0) += 1;
    }
    tally("EENTER / EENTER (one TCS)", seen);
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, AEP).expect("TCS left inactive");
    h.eexit(&mut regs, 0).unwrap();
    h.cpu.check_invariants().unwrap();
}

#[test]
fn two_threads_on_two_tcs_both_get_in() {
    let mut h = Harness::new();
    let e = TestEnclave::build_with_threads(&mut h, secs_image(0x10_0000_0000, 1 << 20), 2);
    for round in 0..ROUNDS / 3 {
        let entered = Barrier::new(2);
        let h = &h;
        let (a, b) = race(
            &h.cpu,
            |lp, _, go| eenter_then_eexit_both(h, e.threads[0], lp, go, &entered),
            |lp, _, go| eenter_then_eexit_both(h, e.threads[1], lp, go, &entered),
        );
        assert_eq!((a, b), (Ok(2), Ok(2)), "round {round}");
    }
    h.cpu.check_invariants().unwrap();
}

/// Enters, waits until the other thread entered too, reports how many LPs were inside, exits.
fn eenter_then_eexit_both(
    h: &Harness,
    tcs: u64,
    lp: &mut Lp,
    go: &Barrier,
    entered: &Barrier,
) -> Result<usize, Exception> {
    let mut regs = Regs { rax: Enclu::Eenter as u64, rbx: tcs, rcx: AEP, rip: 0x40_0000, ..Regs::default() };
    go.wait();
    h.cpu.eenter(lp, &mut regs, &h.pt)?;
    entered.wait();
    let inside = h.cpu.lps_inside(h.cpu.epc_addr(lp.active_secs().unwrap())).len();
    entered.wait();
    regs.rbx = 0x40_0003;
    h.cpu.eexit(lp, &mut regs)?;
    Ok(inside)
}
