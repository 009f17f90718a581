//! `Processor::check_access`: enclave-mode and non-enclave memory accesses (spec §6.1, §6.2).
//!
//! Coverage (spec §6.1 order of checks, then §6.2):
//! * 1 ordinary paging first, a failure is an ordinary #PF without the SGX bit:
//!   `not_present_pte_is_an_ordinary_pf` (P=0, U, W / I by access kind; inside and outside ELRANGE,
//!   in and out of enclave mode), `read_only_pte_write_is_an_ordinary_pf`,
//!   `nx_pte_fetch_is_an_ordinary_pf` (both on pages the EPCM would refuse as well, so paging
//!   provably comes first), `non_canonical_address_is_gp` (§3.4).
//! * 2 enclave-mode fetch outside ELRANGE → #GP (even when it maps EPC), after paging:
//!   `enclave_fetch_outside_elrange_is_gp`.
//! * 3 inside ELRANGE: not EPC, invalid EPC page, another enclave's page, wrong slot (alias of two
//!   linear pages to one EPC page), TCS / VA / SECS / TRIM (accepted) pages, PENDING, MODIFIED,
//!   BLOCKED, missing EPCM permission (write to R, fetch from RW, read of a no-permission page) →
//!   #PF with P|SGX|U and W / I by kind: `enclave_access_epcm_failures` (one case per condition and
//!   access kind); allowed accesses → `Access::Enclave{page, offset}`:
//!   `allowed_enclave_accesses_land_on_the_epc_page`; PR=1 alone does not block:
//!   `pr_alone_does_not_block_access`.
//! * 4 enclave-mode data access outside ELRANGE: normal memory → `Access::Normal{pa}`, EPC →
//!   `Access::AbortPage`: `enclave_data_access_outside_elrange`.
//! * §6.2 not in enclave mode: EPC → `AbortPage`, normal memory → `Normal{pa}`:
//!   `non_enclave_accesses`.

use sgxemu_arch::{IntoBytes, PageType, PfErrorCode, Secinfo, SecinfoFlags};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image};
use sgxemu_cpu::{Access, AccessKind, Exception, Regs, Status};

const AEP: u64 = 0x40_1000;
/// Unmapped (until a test maps it) address inside ELRANGE.
const HOLE: u64 = 0x9000;
/// A user address outside ELRANGE.
const OUTSIDE: u64 = 0x50_0000;
/// Ordinary memory the outside address maps to.
const NORMAL_PA: u64 = scratch::PAGE;

const KINDS: [AccessKind; 3] = [AccessKind::Read, AccessKind::Write, AccessKind::Execute];

fn setup() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    (h, e)
}

fn enter(h: &mut Harness, e: &TestEnclave) -> Regs {
    let mut regs = Regs { rsp: 0x7fff_0000, rip: 0x40_0000, ..Regs::default() };
    h.eenter(&mut regs, e.tcs, AEP).expect("EENTER");
    regs
}

fn check(h: &Harness, la: u64, kind: AccessKind) -> Result<Access, Exception> {
    h.cpu.check_access(&h.lp, &h.pt, la, kind)
}

/// The error code of an EPCM-induced fault for `kind`: P | SGX | U (| W | I).
fn epcm_code(kind: AccessKind) -> PfErrorCode {
    PfErrorCode::P | PfErrorCode::SGX | kind.pf_bits()
}

fn reg(flags: SecinfoFlags) -> SecinfoFlags {
    flags.with_page_type(PageType::Reg)
}

/// Maps `la` to `pa` with a fully permissive PTE (RWX), so that only the EPCM can refuse.
fn open_pte(h: &mut Harness, la: u64, pa: u64) {
    h.map(la, pa, true, true);
}

fn eaug(h: &mut Harness, e: &TestEnclave, offset: u64) -> u64 {
    let epc = h.alloc_page();
    h.put_pageinfo(e.base + offset, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, epc).expect("EAUG");
    h.map(e.base + offset, epc, true, true);
    epc
}

/// EACCEPT from inside (the harness LP enters and leaves).
fn accept(h: &mut Harness, e: &TestEnclave, offset: u64, flags: SecinfoFlags) {
    let mut regs = enter(h, e);
    let si = e.base + layout::DATA;
    h.cpu.write_epc(h.cpu.epc_index(e.pages[&si]).unwrap(), 0, Secinfo::new(flags).as_bytes());
    regs.rbx = si;
    regs.rcx = e.base + offset;
    assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), Ok(Status::Success));
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

fn modify(h: &mut Harness, epc: u64, page_type: PageType) {
    h.put_secinfo(SecinfoFlags::from(page_type));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

// ---------------------------------------------------------------------------------------------

#[test]
fn not_present_pte_is_an_ordinary_pf() {
    let (mut h, e) = setup();
    let expect = |la: u64, kind: AccessKind| Err(Exception::Pf { addr: la, code: kind.pf_bits() });
    for kind in KINDS {
        assert_eq!(
            check(&h, e.base + HOLE + 0x10, kind),
            expect(e.base + HOLE + 0x10, kind),
            "outside enclave mode, {kind:?}"
        );
    }
    let mut regs = enter(&mut h, &e);
    for kind in KINDS {
        for la in [e.base + HOLE + 0x10, OUTSIDE + 0x20] {
            let result = check(&h, la, kind);
            assert_eq!(result, expect(la, kind), "{la:#x} {kind:?}");
            assert!(!result.unwrap_err().is_sgx_pf());
        }
    }
    assert_eq!(AccessKind::Read.pf_bits(), PfErrorCode::U);
    assert_eq!(AccessKind::Write.pf_bits(), PfErrorCode::U | PfErrorCode::W);
    assert_eq!(AccessKind::Execute.pf_bits(), PfErrorCode::U | PfErrorCode::I);
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

#[test]
fn read_only_pte_write_is_an_ordinary_pf() {
    let (mut h, e) = setup();
    let data = e.base + layout::DATA;
    h.map(data, e.pages[&data], false, false);
    let rodata = e.base + layout::RODATA;
    let mut regs = enter(&mut h, &e);
    let code = PfErrorCode::P | PfErrorCode::U | PfErrorCode::W;
    // DATA: the EPCM would allow the write; RODATA: the EPCM would refuse it too.
    for la in [data + 8, rodata + 8] {
        assert_eq!(check(&h, la, AccessKind::Write), Err(Exception::Pf { addr: la, code }), "{la:#x}");
        assert!(check(&h, la, AccessKind::Read).is_ok());
    }
    h.eexit(&mut regs, 0x40_0003).unwrap();
    assert_eq!(check(&h, data, AccessKind::Write), Err(Exception::Pf { addr: data, code }), "outside enclave mode");
}

#[test]
fn nx_pte_fetch_is_an_ordinary_pf() {
    let (mut h, e) = setup();
    h.map(OUTSIDE, NORMAL_PA, true, false);
    let mut regs = enter(&mut h, &e);
    let code = PfErrorCode::P | PfErrorCode::U | PfErrorCode::I;
    // DATA (EPCM RW, so the EPCM would refuse a fetch as well) and an outside page (step 1
    // precedes the ELRANGE #GP of step 2).
    for la in [e.base + layout::DATA + 4, OUTSIDE + 4] {
        assert_eq!(check(&h, la, AccessKind::Execute), Err(Exception::Pf { addr: la, code }), "{la:#x}");
    }
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

#[test]
fn non_canonical_address_is_gp() {
    let (mut h, e) = setup();
    for kind in KINDS {
        assert_eq!(check(&h, 0x8000_0000_0000, kind), Err(Exception::Gp));
    }
    let mut regs = enter(&mut h, &e);
    assert_eq!(check(&h, 0xFFFF_0000_0000_0000, AccessKind::Read), Err(Exception::Gp));
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

#[test]
fn enclave_fetch_outside_elrange_is_gp() {
    let (mut h, e) = setup();
    h.map(OUTSIDE, NORMAL_PA, true, true);
    h.map(OUTSIDE + 0x1000, e.pages[&(e.base + layout::CODE)], true, true);
    h.map(e.base + e.size, NORMAL_PA, true, true);
    h.map(e.base - 0x1000, NORMAL_PA, true, true);
    let mut regs = enter(&mut h, &e);
    for la in [OUTSIDE + 0x10, OUTSIDE + 0x1010, e.base + e.size, e.base - 0x1000 + 0xFFF] {
        assert_eq!(check(&h, la, AccessKind::Execute), Err(Exception::Gp), "{la:#x}");
    }
    // The same fetch outside enclave mode is an ordinary access.
    h.eexit(&mut regs, 0x40_0003).unwrap();
    assert_eq!(check(&h, OUTSIDE + 0x10, AccessKind::Execute), Ok(Access::Normal { pa: NORMAL_PA + 0x10 }));
}

#[test]
fn enclave_access_epcm_failures() {
    use AccessKind::{Execute, Read, Write};
    type Prepare = fn(&mut Harness, &TestEnclave) -> u64;
    let all: &[AccessKind] = &[Read, Write, Execute];
    let cases: [(&str, Prepare, &[AccessKind]); 15] = [
        (
            "not_epc",
            |h, e| {
                open_pte(h, e.base + HOLE, NORMAL_PA);
                e.base + HOLE
            },
            all,
        ),
        (
            "invalid_epc_page",
            |h, e| {
                let fresh = h.alloc_page();
                open_pte(h, e.base + HOLE, fresh);
                e.base + HOLE
            },
            all,
        ),
        (
            "other_enclave",
            |h, e| {
                let other = TestEnclave::build_with(h, secs_image(0x20_0000_0000, 1 << 20));
                let page = other.pages[&(other.base + layout::DATA)];
                open_pte(h, e.base + HOLE, page);
                e.base + HOLE
            },
            all,
        ),
        (
            "wrong_slot_alias",
            |h, e| {
                open_pte(h, e.base + HOLE, e.pages[&(e.base + layout::DATA)]);
                e.base + HOLE
            },
            all,
        ),
        (
            "tcs",
            |h, e| {
                open_pte(h, e.tcs, e.pages[&e.tcs]);
                e.tcs
            },
            all,
        ),
        (
            "va",
            |h, e| {
                let va = h.alloc_page();
                h.cpu.epa(&mut h.lp, 3, va).unwrap();
                open_pte(h, e.base + HOLE, va);
                e.base + HOLE
            },
            all,
        ),
        (
            "secs",
            |h, e| {
                open_pte(h, e.base + HOLE, e.secs);
                e.base + HOLE
            },
            all,
        ),
        (
            "trim_accepted",
            |h, e| {
                let epc = eaug(h, e, HOLE);
                accept(h, e, HOLE, reg(SecinfoFlags::R | SecinfoFlags::W | SecinfoFlags::PENDING));
                modify(h, epc, PageType::Trim);
                assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
                accept(h, e, HOLE, SecinfoFlags::from(PageType::Trim) | SecinfoFlags::MODIFIED);
                e.base + HOLE
            },
            all,
        ),
        (
            "pending",
            |h, e| {
                eaug(h, e, HOLE);
                e.base + HOLE
            },
            all,
        ),
        (
            "modified",
            |h, e| {
                let data = e.base + layout::DATA;
                open_pte(h, data, e.pages[&data]);
                modify(h, e.pages[&data], PageType::Trim);
                data
            },
            all,
        ),
        (
            "modified_tcs",
            |h, e| {
                let data = e.base + layout::DATA;
                open_pte(h, data, e.pages[&data]);
                modify(h, e.pages[&data], PageType::Tcs);
                data
            },
            all,
        ),
        (
            "blocked",
            |h, e| {
                let data = e.base + layout::DATA;
                open_pte(h, data, e.pages[&data]);
                assert_eq!(h.cpu.eblock(&mut h.lp, e.pages[&data]), Ok(Status::Success));
                data
            },
            all,
        ),
        (
            "write_to_r_page",
            |h, e| {
                let ro = e.base + layout::RODATA;
                open_pte(h, ro, e.pages[&ro]);
                ro
            },
            &[Write, Execute],
        ),
        (
            "fetch_from_rw_page",
            |h, e| {
                let data = e.base + layout::DATA;
                open_pte(h, data, e.pages[&data]);
                data
            },
            &[Execute],
        ),
        (
            "no_permissions",
            |h, e| {
                let ro = e.base + layout::RODATA;
                open_pte(h, ro, e.pages[&ro]);
                h.put_secinfo(reg(SecinfoFlags::empty()));
                assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, e.pages[&ro]), Ok(Status::Success));
                ro
            },
            all,
        ),
    ];
    for (name, prepare, failing) in cases {
        let (mut h, e) = setup();
        let page = prepare(&mut h, &e);
        let mut regs = enter(&mut h, &e);
        for kind in KINDS {
            let la = page + 0x234;
            let result = check(&h, la, kind);
            if failing.contains(&kind) {
                assert_eq!(result, Err(Exception::Pf { addr: la, code: epcm_code(kind) }), "case {name}, {kind:?}");
            } else {
                assert!(matches!(result, Ok(Access::Enclave { .. })), "case {name}, {kind:?}: {result:?}");
            }
        }
        h.eexit(&mut regs, 0x40_0003).unwrap();
    }
}

#[test]
fn allowed_enclave_accesses_land_on_the_epc_page() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let at = |offset: u64| h.cpu.epc_index(e.pages[&(e.base + offset)]).unwrap();
    for (offset, kind, within) in [
        (layout::DATA, AccessKind::Read, 0x123usize),
        (layout::DATA, AccessKind::Write, 0xFFF),
        (layout::RODATA, AccessKind::Read, 0),
        (layout::CODE, AccessKind::Execute, 3),
        (layout::CODE, AccessKind::Read, 0x800),
        (layout::SSA, AccessKind::Write, 0xF48),
    ] {
        let la = e.base + offset + within as u64;
        assert_eq!(check(&h, la, kind), Ok(Access::Enclave { page: at(offset), offset: within }), "{la:#x} {kind:?}");
    }
    // The access really lands there: a write through the reported page is visible to EPC reads.
    let Ok(Access::Enclave { page, offset }) = check(&h, e.base + layout::DATA + 0x40, AccessKind::Write) else {
        panic!("allowed")
    };
    h.cpu.write_epc(page, offset, &[0xAB; 4]);
    let mut back = [0u8; 8];
    h.cpu.read_epc(at(layout::DATA), 0x3E, &mut back);
    assert_eq!(back, [0x11, 0x11, 0xAB, 0xAB, 0xAB, 0xAB, 0x11, 0x11]);
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

#[test]
fn pr_alone_does_not_block_access() {
    let (mut h, e) = setup();
    let data = e.base + layout::DATA;
    // EMODPR to the permissions the page already has: only PR changes.
    h.put_secinfo(reg(SecinfoFlags::R | SecinfoFlags::W));
    assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, e.pages[&data]), Ok(Status::Success));
    let view = h.cpu.epcm_view(h.cpu.epc_index(e.pages[&data]).unwrap());
    assert!(view.flags.contains(SecinfoFlags::PR));
    let mut regs = enter(&mut h, &e);
    assert!(matches!(check(&h, data, AccessKind::Read), Ok(Access::Enclave { .. })));
    assert!(matches!(check(&h, data, AccessKind::Write), Ok(Access::Enclave { .. })));
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

#[test]
fn enclave_data_access_outside_elrange() {
    let (mut h, e) = setup();
    h.map(OUTSIDE, NORMAL_PA, true, false);
    h.map(OUTSIDE + 0x1000, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    for kind in [AccessKind::Read, AccessKind::Write] {
        assert_eq!(check(&h, OUTSIDE + 0x18, kind), Ok(Access::Normal { pa: NORMAL_PA + 0x18 }), "{kind:?}");
        assert_eq!(check(&h, OUTSIDE + 0x1018, kind), Ok(Access::AbortPage), "{kind:?}: EPC seen from outside ELRANGE");
    }
    h.eexit(&mut regs, 0x40_0003).unwrap();
}

#[test]
fn non_enclave_accesses() {
    let (mut h, e) = setup();
    h.map(OUTSIDE, NORMAL_PA, true, true);
    assert!(!h.lp.in_enclave());
    for kind in KINDS {
        // The enclave's own pages, at their own addresses, read as the abort page.
        for offset in [layout::TCS, layout::DATA, layout::CODE] {
            let la = e.base + offset + 0x10;
            h.map(la, e.pages[&(e.base + offset)], true, true);
            assert_eq!(check(&h, la, kind), Ok(Access::AbortPage), "{la:#x} {kind:?}");
        }
        assert_eq!(check(&h, OUTSIDE + 0x7F8, kind), Ok(Access::Normal { pa: NORMAL_PA + 0x7F8 }), "{kind:?}");
    }
    // A SECS or an invalid EPC page is just as opaque.
    h.map(OUTSIDE + 0x1000, e.secs, true, false);
    assert_eq!(check(&h, OUTSIDE + 0x1000, AccessKind::Read), Ok(Access::AbortPage));
    let fresh = h.alloc_page();
    h.map(OUTSIDE + 0x2000, fresh, true, false);
    assert_eq!(check(&h, OUTSIDE + 0x2000, AccessKind::Write), Ok(Access::AbortPage));
    h.cpu.check_invariants().unwrap();
}
