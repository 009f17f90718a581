//! EREMOVE (spec §4.5 with the §13.1 reading) and the debug leaves EDBGRD/EDBGWR (§4.6).
//!
//! Coverage, per leaf and numbered check (spec check → test):
//!
//! **EREMOVE (§4.5)**
//! 1. RCX not 4K-aligned → #GP (before the EPC check): `eremove_misaligned_page_is_gp`; not in
//!    EPC → #PF(RCX, P|W|SGX): `eremove_page_outside_epc_is_pf_on_it`.
//! 2. Page in use by another leaf → #GP: `concurrent_eremove_and_edbgrd_only_see_allowed_outcomes`
//!    (a lock race needs threads; only success/#GP for EREMOVE and success/#GP/#PF for the
//!    concurrent EDBGRD are accepted).
//! 3. VALID = 0 → success, no-op (also a second EREMOVE): `eremove_invalid_page_is_a_successful_no_op`.
//! 4. PT_VA → invalidated, success, no ENCLAVE_ACT check (even holding versions, LP inside):
//!    `eremove_va_page_succeeds_even_with_versions_and_lps_inside`; accepted PT_TRIM (MODIFIED = 0)
//!    while an LP is inside → success: `eremove_accepted_trim_page_succeeds_while_an_lp_is_inside`.
//! 5. SECS with children (REG, TCS, EAUG'd PENDING, accepted TRIM; VA pages are not children) →
//!    SGX_CHILD_PRESENT, counted down to zero → success:
//!    `eremove_secs_with_children_is_child_present_until_the_last_child_is_gone`; childless SECS →
//!    success and the page is reusable: `eremove_secs_without_children_succeeds_and_the_page_is_reusable`.
//! 6. REG/TCS (and unaccepted TRIM) while an LP is inside → SGX_ENCLAVE_ACT with no state change:
//!    `eremove_reg_or_tcs_page_while_an_lp_is_inside_is_enclave_act`,
//!    `eremove_unaccepted_trim_page_while_an_lp_is_inside_is_enclave_act`; only LPs inside *this*
//!    enclave count, and AEX leaves like EEXIT: `eremove_after_aex_succeeds_and_other_enclaves_do_not_count`.
//! 7. After EEXIT → success: the three tests of step 6.
//!
//! **EDBGRD / EDBGWR (§4.6)**
//! 1. Misaligned (8 in 64-bit mode, 4 otherwise) → #GP: `edbg_misaligned_address_is_gp`,
//!    `edbg_outside_64bit_mode_moves_four_bytes_at_four_byte_alignment`; not in EPC → #PF(RCX)
//!    (W for EDBGWR): `edbg_address_outside_epc_is_pf_on_it`; busy → #GP:
//!    `concurrent_eremove_and_edbgrd_only_see_allowed_outcomes`; VALID = 0 → #PF(RCX):
//!    `edbg_invalid_page_is_pf_on_the_address`.
//! 2. Wrong type (SECS; VA for EDBGWR; TRIM, also before the MODIFIED check) → #PF(RCX):
//!    `edbg_wrong_page_type_is_pf_on_the_address`.
//! 3. PENDING (EAUG'd) or MODIFIED (EMODT'd) → SGX_PAGE_NOT_DEBUGGABLE, nothing written; PR pages
//!    stay debuggable: `edbg_pending_or_modified_page_is_page_not_debuggable`; checked before the
//!    DEBUG attribute: `edbg_pending_page_of_non_debug_enclave_is_page_not_debuggable_before_debug_check`.
//! 4. TCS: EDBGRD offset ≥ 72 → #GP, < 72 fine: `edbgrd_tcs_beyond_architectural_fields_is_gp`;
//!    EDBGWR only FLAGS at 8: `edbgwr_tcs_only_flags_is_writable`; DBGOPTIN written that way takes
//!    effect at EENTER (TF kept): `edbgwr_dbgoptin_makes_eenter_keep_the_trap_flag`.
//! 5. Non-debug enclave → #GP (REG and TCS, both leaves; VA pages need no DEBUG):
//!    `edbg_on_non_debug_enclave_is_gp`; VA slot reads all-ones when in use, 0 when empty (the
//!    slot value with its low 3 bits masked decides, as §1.9 and the SDM pseudo-code say):
//!    `edbgrd_va_slot_reads_all_ones_when_in_use_and_zero_when_empty`.
//! 6. The read/write itself, ignoring EPCM RWX, values equal to what EADD put:
//!    `edbgrd_returns_what_eadd_put`, `edbgwr_writes_ignoring_epcm_permissions_and_edbgrd_reads_it_back`,
//!    `edbg_outside_64bit_mode_moves_four_bytes_at_four_byte_alignment`.

use std::thread;

use sgxemu_arch::{AttributesFlags, ErrorCode, IntoBytes, PageType, PfErrorCode, SecinfoFlags};
use sgxemu_cpu::regs::RFLAGS_TF;
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image};
use sgxemu_cpu::{Access, AccessKind, AexEvent, Exception, LeafResult, Memory, Regs, Status};

const AEP: u64 = 0x40_1000;

fn sgx_pf(addr: u64) -> Exception {
    Exception::Pf { addr, code: PfErrorCode::P | PfErrorCode::SGX }
}

fn sgx_pf_w(addr: u64) -> Exception {
    Exception::Pf { addr, code: PfErrorCode::P | PfErrorCode::W | PfErrorCode::SGX }
}

fn error(code: ErrorCode) -> LeafResult {
    Ok(Status::Error(code))
}

fn valid(h: &Harness, epc: u64) -> bool {
    h.cpu.epcm_view(h.cpu.epc_index(epc).unwrap()).valid
}

fn reg(perms: SecinfoFlags) -> SecinfoFlags {
    perms.with_page_type(PageType::Reg)
}

fn page_of(e: &TestEnclave, offset: u64) -> u64 {
    e.pages[&(e.base + offset)]
}

fn regs() -> Regs {
    Regs { rsp: 0x7fff_0000, rbp: 0x7fff_0100, rip: 0x40_0000, ..Regs::default() }
}

/// A harness with the default (debug) TestEnclave.
fn debug_enclave() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    (h, e)
}

/// A harness with a TestEnclave whose SECS lacks ATTRIBUTES.DEBUG.
fn production_enclave() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let mut image = secs_image(0x10_0000_0000, 1 << 20);
    image.attributes.flags &= !AttributesFlags::DEBUG.bits();
    let e = TestEnclave::build_with(&mut h, image);
    (h, e)
}

/// EAUG of the page at HEAP + `offset` (PENDING, RW); mapped; returns its EPC page.
fn eaug(h: &mut Harness, e: &TestEnclave, offset: u64) -> u64 {
    let la = e.base + layout::HEAP + offset;
    let page = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page).expect("EAUG");
    h.map(la, page, true, false);
    page
}

/// EACCEPT (from inside: `regs` belong to an LP in the enclave) of `la` with SECINFO
/// `flags`, the SECINFO living at the start of the data page.
fn eaccept(h: &mut Harness, e: &TestEnclave, regs: &mut Regs, la: u64, flags: SecinfoFlags) -> LeafResult {
    let mut bytes = [0u8; 64];
    bytes[..8].copy_from_slice(&flags.bits().to_le_bytes());
    let data = h.cpu.epc_index(page_of(e, layout::DATA)).unwrap();
    h.cpu.write_epc(data, 0, &bytes);
    regs.rbx = e.base + layout::DATA;
    regs.rcx = la;
    h.cpu.eaccept(&mut h.lp, regs, &h.pt)
}

fn emodt(h: &mut Harness, page: u64, pt: PageType) -> LeafResult {
    h.put_secinfo(SecinfoFlags::from(pt));
    h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, page)
}

/// An EAUG'd page that went through EACCEPT, EMODT(TRIM), ETRACK and EACCEPT(TRIM): an
/// accepted trim page. Leaves the harness LP inside the enclave; returns the page.
fn accepted_trim_with_lp_inside(h: &mut Harness, e: &TestEnclave, regs: &mut Regs) -> u64 {
    let page = eaug(h, e, 0);
    let la = e.base + layout::HEAP;
    h.eenter(regs, e.tcs, AEP).unwrap();
    assert_eq!(
        eaccept(h, e, regs, la, reg(SecinfoFlags::R | SecinfoFlags::W | SecinfoFlags::PENDING)),
        Ok(Status::Success)
    );
    h.eexit(regs, 0).unwrap();
    assert_eq!(emodt(h, page, PageType::Trim), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    h.eenter(regs, e.tcs, AEP).unwrap();
    assert_eq!(eaccept(h, e, regs, la, SecinfoFlags::MODIFIED.with_page_type(PageType::Trim)), Ok(Status::Success));
    page
}

// ---------------------------------------------------------------------------------------------
// EREMOVE (§4.5, §13.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn eremove_misaligned_page_is_gp() {
    let (mut h, e) = debug_enclave();
    let data = page_of(&e, layout::DATA);
    for addr in [data + 8, data + 0x800, data + 0xFFF, 0x1008] {
        assert_eq!(h.cpu.eremove(&mut h.lp, addr), Err(Exception::Gp), "{addr:#x}");
    }
    assert!(valid(&h, data));
}

#[test]
fn eremove_page_outside_epc_is_pf_on_it() {
    let mut h = Harness::new();
    let end = h.cpu.config().epc_base + h.cpu.config().epc_size;
    for addr in [0x1000, h.cpu.config().epc_base - 0x1000, end] {
        assert_eq!(h.cpu.eremove(&mut h.lp, addr), Err(sgx_pf_w(addr)), "{addr:#x}");
    }
}

#[test]
fn eremove_invalid_page_is_a_successful_no_op() {
    let (mut h, e) = debug_enclave();
    let never_used = h.alloc_page();
    assert_eq!(h.cpu.eremove(&mut h.lp, never_used), Ok(Status::Success));
    assert!(!valid(&h, never_used));
    // Removing twice: the second is a no-op, and does not count the SECS's children down again.
    let data = page_of(&e, layout::DATA);
    assert_eq!(h.cpu.eremove(&mut h.lp, data), Ok(Status::Success));
    assert_eq!(h.cpu.eremove(&mut h.lp, data), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eremove_va_page_succeeds_even_with_versions_and_lps_inside() {
    let (mut h, e) = debug_enclave();
    let empty_va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, empty_va).unwrap();
    assert_eq!(h.cpu.eremove(&mut h.lp, empty_va), Ok(Status::Success));
    assert!(!valid(&h, empty_va));
    // A VA page holding a version, removed while an LP runs in the enclave.
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let data = page_of(&e, layout::DATA);
    evict_into(&mut h, &e, data, va);
    let mut regs = regs();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let mut lp2 = h.cpu.new_lp();
    assert_eq!(h.cpu.eremove(&mut lp2, va), Ok(Status::Success));
    assert!(!valid(&h, va));
    h.eexit(&mut regs, 0).unwrap();
    h.cpu.check_invariants().unwrap();
}

/// EBLOCK, ETRACK and EWB of `page` into the VA slot at `slot`.
fn evict_into(h: &mut Harness, e: &TestEnclave, page: u64, slot: u64) {
    assert_eq!(h.cpu.eblock(&mut h.lp, page), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    h.put_pageinfo(0, scratch::PAGE, scratch::SECINFO, 0);
    assert_eq!(h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page, slot), Ok(Status::Success));
}

#[test]
fn eremove_accepted_trim_page_succeeds_while_an_lp_is_inside() {
    let (mut h, e) = debug_enclave();
    let mut regs = regs();
    let trim = accepted_trim_with_lp_inside(&mut h, &e, &mut regs);
    assert!(h.lp.in_enclave());
    assert_eq!(h.cpu.lps_inside(e.secs), vec![h.lp.id()]);
    let mut lp2 = h.cpu.new_lp();
    assert_eq!(h.cpu.eremove(&mut lp2, trim), Ok(Status::Success));
    assert!(!valid(&h, trim));
    // The enclave keeps running.
    assert!(h.cpu.check_access(&h.lp, &h.pt, e.base + layout::DATA, AccessKind::Read).is_ok());
    h.eexit(&mut regs, 0).unwrap();
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eremove_unaccepted_trim_page_while_an_lp_is_inside_is_enclave_act() {
    let (mut h, e) = debug_enclave();
    let data = page_of(&e, layout::DATA);
    let rodata = page_of(&e, layout::RODATA);
    // EMODT'd to TRIM, not yet accepted: MODIFIED = 1, so it is an ordinary child (step 7).
    assert_eq!(emodt(&mut h, rodata, PageType::Trim), Ok(Status::Success));
    let mut regs = regs();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let mut lp2 = h.cpu.new_lp();
    assert_eq!(h.cpu.eremove(&mut lp2, rodata), error(ErrorCode::EnclaveAct));
    assert!(valid(&h, rodata));
    h.eexit(&mut regs, 0).unwrap();
    assert_eq!(h.cpu.eremove(&mut lp2, rodata), Ok(Status::Success));
    assert!(valid(&h, data));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eremove_secs_with_children_is_child_present_until_the_last_child_is_gone() {
    let (mut h, e) = debug_enclave();
    // An EAUG'd page and an accepted TRIM page count as children too.
    let pending = eaug(&mut h, &e, 0x1000);
    let mut regs = regs();
    let trim = accepted_trim_with_lp_inside(&mut h, &e, &mut regs);
    h.eexit(&mut regs, 0).unwrap();
    let mut children: Vec<u64> = e.pages.values().copied().collect();
    children.push(pending);
    children.push(trim);
    // A VA page is not a child.
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    for child in children {
        assert_eq!(h.cpu.eremove(&mut h.lp, e.secs), error(ErrorCode::ChildPresent));
        assert!(valid(&h, e.secs), "SECS untouched");
        assert_eq!(h.cpu.eremove(&mut h.lp, child), Ok(Status::Success));
        h.cpu.check_invariants().unwrap();
    }
    assert_eq!(h.cpu.eremove(&mut h.lp, e.secs), Ok(Status::Success));
    assert!(!valid(&h, e.secs));
    assert!(valid(&h, va));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eremove_secs_without_children_succeeds_and_the_page_is_reusable() {
    let mut h = Harness::new();
    let image = secs_image(0x10_0000_0000, 1 << 20);
    let secs = h.ecreate(&image).unwrap();
    assert_eq!(h.cpu.eremove(&mut h.lp, secs), Ok(Status::Success));
    assert!(!valid(&h, secs));
    assert_eq!(h.cpu.mrenclave_so_far(secs), None);
    h.mem.write(scratch::SECS, image.as_bytes()).unwrap();
    h.put_secinfo(SecinfoFlags::from(PageType::Secs));
    h.put_pageinfo(0, scratch::SECS, scratch::SECINFO, 0);
    assert_eq!(h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, secs), Ok(()));
    assert!(valid(&h, secs));
}

#[test]
fn eremove_reg_or_tcs_page_while_an_lp_is_inside_is_enclave_act() {
    let (mut h, e) = debug_enclave();
    let mut regs = regs();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let mut lp2 = h.cpu.new_lp();
    for (name, page) in [
        ("REG data", page_of(&e, layout::DATA)),
        ("TCS", page_of(&e, layout::TCS)),
        ("REG code", page_of(&e, layout::CODE)),
    ] {
        assert_eq!(h.cpu.eremove(&mut lp2, page), error(ErrorCode::EnclaveAct), "{name}");
        assert!(valid(&h, page), "{name}: no state change");
    }
    // The SECS still reports its children first.
    assert_eq!(h.cpu.eremove(&mut lp2, e.secs), error(ErrorCode::ChildPresent));
    assert!(h.cpu.check_access(&h.lp, &h.pt, e.base + layout::DATA, AccessKind::Write).is_ok());
    // After EEXIT nobody is inside: the removal goes through.
    h.eexit(&mut regs, 0).unwrap();
    assert_eq!(h.cpu.eremove(&mut lp2, page_of(&e, layout::DATA)), Ok(Status::Success));
    assert_eq!(h.cpu.eremove(&mut lp2, page_of(&e, layout::TCS)), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eremove_after_aex_succeeds_and_other_enclaves_do_not_count() {
    let mut h = Harness::new();
    let a = TestEnclave::build(&mut h);
    let b = TestEnclave::build_with(&mut h, secs_image(0x20_0000_0000, 1 << 20));
    let mut regs = regs();
    // An LP inside enclave B does not make A "active".
    h.eenter(&mut regs, b.tcs, AEP).unwrap();
    let mut lp2 = h.cpu.new_lp();
    assert_eq!(h.cpu.eremove(&mut lp2, page_of(&a, layout::RODATA)), Ok(Status::Success));
    assert_eq!(h.cpu.eremove(&mut lp2, page_of(&b, layout::RODATA)), error(ErrorCode::EnclaveAct));
    // AEX leaves enclave mode like EEXIT does.
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert!(!h.lp.in_enclave());
    assert_eq!(h.cpu.eremove(&mut lp2, page_of(&b, layout::RODATA)), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn concurrent_eremove_and_edbgrd_only_see_allowed_outcomes() {
    let (h, e) = debug_enclave();
    let cpu = &h.cpu;
    let pages: Vec<u64> =
        [layout::DATA, layout::RODATA, layout::CODE, layout::SSA].iter().map(|&o| page_of(&e, o)).collect();
    for &page in &pages {
        thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut lp = cpu.new_lp();
                (0..200).map(|_| cpu.edbgrd(&mut lp, page + 8)).collect::<Vec<_>>()
            });
            let remover = s.spawn(move || {
                let mut lp = cpu.new_lp();
                let mut results = Vec::new();
                // Retry while the page is busy (#GP), as a driver would; bounded, and yielding
                // so a preempted reader that holds the page can finish.
                for _ in 0..100_000 {
                    let r = cpu.eremove(&mut lp, page);
                    results.push(r);
                    if r == Ok(Status::Success) {
                        break;
                    }
                    thread::yield_now();
                }
                results
            });
            let reads = reader.join().unwrap();
            let removes = remover.join().unwrap();
            assert_eq!(removes.last(), Some(&Ok(Status::Success)));
            assert!(removes.iter().all(|r| *r == Ok(Status::Success) || *r == Err(Exception::Gp)), "{removes:?}");
            for r in reads {
                match r {
                    Ok((Status::Success, _)) | Err(Exception::Gp) => {}
                    Err(pf) => assert_eq!(pf, sgx_pf(page + 8)),
                    other => panic!("unexpected EDBGRD outcome {other:?}"),
                }
            }
        });
    }
    cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EDBGRD / EDBGWR (§4.6)
// ---------------------------------------------------------------------------------------------

fn rd(h: &mut Harness, addr: u64) -> Result<(Status, u64), Exception> {
    h.cpu.edbgrd(&mut h.lp, addr)
}

fn wr(h: &mut Harness, addr: u64, value: u64) -> LeafResult {
    h.cpu.edbgwr(&mut h.lp, addr, value)
}

#[test]
fn edbgrd_returns_what_eadd_put() {
    let (mut h, e) = debug_enclave();
    let ok = |v: u64| Ok((Status::Success, v));
    let data = page_of(&e, layout::DATA);
    let rodata = page_of(&e, layout::RODATA);
    let code = page_of(&e, layout::CODE);
    let ssa = page_of(&e, layout::SSA + 0x1000);
    for off in [0, 8, 0x800, 4088] {
        assert_eq!(rd(&mut h, data + off), ok(0x1111_1111_1111_1111), "data +{off:#x}");
        assert_eq!(rd(&mut h, rodata + off), ok(0x2222_2222_2222_2222), "rodata +{off:#x}");
        assert_eq!(rd(&mut h, ssa + off), ok(0), "ssa +{off:#x}");
    }
    assert_eq!(rd(&mut h, code), ok(u64::from_le_bytes([0x0f, 0x01, 0xd7, 0xcc, 0, 0, 0, 0])));
    // The TCS's architectural fields (layout of TestEnclave's TCS).
    let tcs = page_of(&e, layout::TCS);
    let expected_tcs = [
        (0, 0),                              // STATE
        (8, 0),                              // FLAGS
        (16, layout::SSA),                   // OSSA
        (24, u64::from(layout::NSSA) << 32), // CSSA | NSSA
        (32, layout::CODE),                  // OENTRY
        (40, 0),                             // AEP
        (48, layout::DATA),                  // OFSBASE
        (56, layout::DATA),                  // OGSBASE
        (64, 0),                             // FSLIMIT | GSLIMIT
    ];
    for (off, value) in expected_tcs {
        assert_eq!(rd(&mut h, tcs + off), ok(value), "TCS +{off}");
    }
}

#[test]
fn edbgwr_writes_ignoring_epcm_permissions_and_edbgrd_reads_it_back() {
    let (mut h, e) = debug_enclave();
    // A read-only and an executable page: EPCM RWX does not apply to the debug leaves.
    for offset in [layout::RODATA, layout::CODE, layout::DATA] {
        let page = page_of(&e, offset);
        let (_, neighbour) = rd(&mut h, page + 8).unwrap();
        assert_eq!(wr(&mut h, page + 0x10, 0x0123_4567_89AB_CDEF), Ok(Status::Success));
        assert_eq!(rd(&mut h, page + 0x10), Ok((Status::Success, 0x0123_4567_89AB_CDEF)));
        let mut bytes = [0u8; 8];
        h.cpu.read_epc(h.cpu.epc_index(page).unwrap(), 0x10, &mut bytes);
        assert_eq!(bytes, 0x0123_4567_89AB_CDEFu64.to_le_bytes());
        assert_eq!(rd(&mut h, page + 8), Ok((Status::Success, neighbour)), "neighbour untouched");
    }
    // The enclave sees the debugger's write.
    let mut regs = regs();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let acc = h.cpu.check_access(&h.lp, &h.pt, e.base + layout::DATA + 0x10, AccessKind::Read).unwrap();
    assert!(matches!(acc, Access::Enclave { offset: 0x10, .. }));
    let mut seen = [0u8; 8];
    h.cpu.read_epc(h.cpu.epc_index(page_of(&e, layout::DATA)).unwrap(), 0x10, &mut seen);
    assert_eq!(u64::from_le_bytes(seen), 0x0123_4567_89AB_CDEF);
    h.eexit(&mut regs, 0).unwrap();
}

#[test]
fn edbg_outside_64bit_mode_moves_four_bytes_at_four_byte_alignment() {
    let (mut h, e) = debug_enclave();
    let data = page_of(&e, layout::DATA);
    h.lp.mode64 = false;
    assert_eq!(rd(&mut h, data + 4), Ok((Status::Success, 0x1111_1111)));
    assert_eq!(wr(&mut h, data + 4, 0xFFFF_FFFF_AABB_CCDD), Ok(Status::Success));
    assert_eq!(rd(&mut h, data + 4), Ok((Status::Success, 0xAABB_CCDD)));
    assert_eq!(rd(&mut h, data + 8), Ok((Status::Success, 0x1111_1111)), "only 4 bytes written");
    for off in [1, 2, 6] {
        assert_eq!(rd(&mut h, data + off), Err(Exception::Gp), "+{off}");
        assert_eq!(wr(&mut h, data + off, 0), Err(Exception::Gp), "+{off}");
    }
    // A TCS read at 68 (GSLIMIT) is inside the architectural fields.
    assert_eq!(rd(&mut h, page_of(&e, layout::TCS) + 68), Ok((Status::Success, 0)));
    h.lp.mode64 = true;
    assert_eq!(rd(&mut h, data), Ok((Status::Success, 0xAABB_CCDD_1111_1111)));
}

#[test]
fn edbg_misaligned_address_is_gp() {
    let (mut h, e) = debug_enclave();
    let data = page_of(&e, layout::DATA);
    for off in [1, 4, 7, 0xFFC] {
        assert_eq!(rd(&mut h, data + off), Err(Exception::Gp), "EDBGRD +{off:#x}");
        assert_eq!(wr(&mut h, data + off, 0), Err(Exception::Gp), "EDBGWR +{off:#x}");
    }
    // Alignment before "not in EPC".
    assert_eq!(rd(&mut h, 0x1004), Err(Exception::Gp));
    assert_eq!(rd(&mut h, data), Ok((Status::Success, 0x1111_1111_1111_1111)), "no write happened");
}

#[test]
fn edbg_address_outside_epc_is_pf_on_it() {
    let mut h = Harness::new();
    let end = h.cpu.config().epc_base + h.cpu.config().epc_size;
    for addr in [0x1000, end + 8] {
        assert_eq!(rd(&mut h, addr), Err(sgx_pf(addr)));
        assert_eq!(wr(&mut h, addr, 0), Err(sgx_pf_w(addr)));
    }
}

#[test]
fn edbg_invalid_page_is_pf_on_the_address() {
    let (mut h, e) = debug_enclave();
    let never_used = h.alloc_page();
    assert_eq!(rd(&mut h, never_used + 0x18), Err(sgx_pf(never_used + 0x18)));
    assert_eq!(wr(&mut h, never_used + 0x18, 1), Err(sgx_pf_w(never_used + 0x18)));
    let removed = page_of(&e, layout::RODATA);
    assert_eq!(h.cpu.eremove(&mut h.lp, removed), Ok(Status::Success));
    assert_eq!(rd(&mut h, removed), Err(sgx_pf(removed)));
    assert_eq!(wr(&mut h, removed, 1), Err(sgx_pf_w(removed)));
}

#[test]
fn edbg_wrong_page_type_is_pf_on_the_address() {
    let (mut h, e) = debug_enclave();
    // SECS: neither leaf.
    assert_eq!(rd(&mut h, e.secs + 8), Err(sgx_pf(e.secs + 8)));
    assert_eq!(wr(&mut h, e.secs + 8, 1), Err(sgx_pf_w(e.secs + 8)));
    // VA: readable, not writable.
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    assert_eq!(wr(&mut h, va + 16, 1), Err(sgx_pf_w(va + 16)));
    assert_eq!(rd(&mut h, va + 16), Ok((Status::Success, 0)), "the slot was not written");
    // TRIM (MODIFIED, not yet accepted): the type check (step 2) precedes the MODIFIED
    // check (step 3).
    let rodata = page_of(&e, layout::RODATA);
    assert_eq!(emodt(&mut h, rodata, PageType::Trim), Ok(Status::Success));
    assert_eq!(rd(&mut h, rodata), Err(sgx_pf(rodata)));
    assert_eq!(wr(&mut h, rodata, 1), Err(sgx_pf_w(rodata)));
    // An accepted TRIM page too.
    let mut regs = regs();
    let trim = accepted_trim_with_lp_inside(&mut h, &e, &mut regs);
    h.eexit(&mut regs, 0).unwrap();
    assert_eq!(rd(&mut h, trim), Err(sgx_pf(trim)));
    assert_eq!(wr(&mut h, trim, 1), Err(sgx_pf_w(trim)));
}

#[test]
fn edbg_pending_or_modified_page_is_page_not_debuggable() {
    let (mut h, e) = debug_enclave();
    let pending = eaug(&mut h, &e, 0);
    assert_eq!(rd(&mut h, pending), Ok((Status::Error(ErrorCode::PageNotDebuggable), 0)));
    assert_eq!(wr(&mut h, pending, 0x55), error(ErrorCode::PageNotDebuggable));
    let mut bytes = [0xAAu8; 8];
    h.cpu.read_epc(h.cpu.epc_index(pending).unwrap(), 0, &mut bytes);
    assert_eq!(bytes, [0; 8], "EAUG zeroed it and EDBGWR did not write");
    // EMODT to TCS: type TCS is debuggable, but MODIFIED = 1.
    let data = page_of(&e, layout::SSA + 0x1000);
    assert_eq!(emodt(&mut h, data, PageType::Tcs), Ok(Status::Success));
    assert_eq!(rd(&mut h, data), Ok((Status::Error(ErrorCode::PageNotDebuggable), 0)));
    assert_eq!(wr(&mut h, data + 8, 1), error(ErrorCode::PageNotDebuggable));
    // EMODPR'd (PR = 1) pages are neither PENDING nor MODIFIED: still debuggable.
    let rw = page_of(&e, layout::DATA);
    h.put_secinfo(reg(SecinfoFlags::R));
    assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, rw), Ok(Status::Success));
    assert_eq!(rd(&mut h, rw), Ok((Status::Success, 0x1111_1111_1111_1111)));
    // After EACCEPT the pending page becomes debuggable.
    let mut regs = regs();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let flags = reg(SecinfoFlags::R | SecinfoFlags::W | SecinfoFlags::PENDING);
    assert_eq!(eaccept(&mut h, &e, &mut regs, e.base + layout::HEAP, flags), Ok(Status::Success));
    h.eexit(&mut regs, 0).unwrap();
    assert_eq!(wr(&mut h, pending, 0x55), Ok(Status::Success));
    assert_eq!(rd(&mut h, pending), Ok((Status::Success, 0x55)));
}

#[test]
fn edbg_pending_page_of_non_debug_enclave_is_page_not_debuggable_before_debug_check() {
    let (mut h, e) = production_enclave();
    let pending = eaug(&mut h, &e, 0);
    assert_eq!(rd(&mut h, pending), Ok((Status::Error(ErrorCode::PageNotDebuggable), 0)));
    assert_eq!(wr(&mut h, pending, 1), error(ErrorCode::PageNotDebuggable));
}

#[test]
fn edbgrd_tcs_beyond_architectural_fields_is_gp() {
    let (mut h, e) = debug_enclave();
    let tcs = page_of(&e, layout::TCS);
    for off in (0..72).step_by(8) {
        assert!(matches!(rd(&mut h, tcs + off), Ok((Status::Success, _))), "+{off}");
    }
    for off in [72, 80, 0x800, 4088] {
        assert_eq!(rd(&mut h, tcs + off), Err(Exception::Gp), "+{off}");
    }
}

#[test]
fn edbgwr_tcs_only_flags_is_writable() {
    let (mut h, e) = debug_enclave();
    let tcs = page_of(&e, layout::TCS);
    for off in [0, 16, 24, 32, 40, 64, 72, 4088] {
        assert_eq!(wr(&mut h, tcs + off, 0), Err(Exception::Gp), "+{off}");
    }
    assert_eq!(rd(&mut h, tcs + 16), Ok((Status::Success, layout::SSA)), "OSSA untouched");
    assert_eq!(wr(&mut h, tcs + 8, 1), Ok(Status::Success));
    assert_eq!(rd(&mut h, tcs + 8), Ok((Status::Success, 1)));
}

#[test]
fn edbgwr_dbgoptin_makes_eenter_keep_the_trap_flag() {
    let (mut h, e) = debug_enclave();
    let tcs = page_of(&e, layout::TCS);
    let mut regs = regs();
    regs.rflags = 0x2 | RFLAGS_TF;
    // Opted out (EADD forced DBGOPTIN = 0): single-stepping is suppressed inside.
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rflags & RFLAGS_TF, 0);
    h.eexit(&mut regs, 0).unwrap();
    assert_eq!(regs.rflags & RFLAGS_TF, RFLAGS_TF, "restored on EEXIT");
    // The debugger opts the thread in.
    assert_eq!(wr(&mut h, tcs + 8, sgxemu_arch::TcsFlags::DBGOPTIN.bits()), Ok(Status::Success));
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rflags & RFLAGS_TF, RFLAGS_TF);
    h.eexit(&mut regs, 0).unwrap();
}

#[test]
fn edbg_on_non_debug_enclave_is_gp() {
    let (mut h, e) = production_enclave();
    for offset in [layout::DATA, layout::CODE, layout::TCS] {
        let page = page_of(&e, offset);
        let addr = page + 8;
        assert_eq!(rd(&mut h, addr), Err(Exception::Gp), "EDBGRD {offset:#x}");
        assert_eq!(wr(&mut h, addr, 1), Err(Exception::Gp), "EDBGWR {offset:#x}");
    }
    let mut bytes = [0u8; 8];
    h.cpu.read_epc(h.cpu.epc_index(page_of(&e, layout::DATA)).unwrap(), 8, &mut bytes);
    assert_eq!(bytes, [0x11; 8], "nothing written");
    // VA pages belong to no enclave: readable on any platform.
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    assert_eq!(rd(&mut h, va), Ok((Status::Success, 0)));
}

#[test]
fn edbgrd_va_slot_reads_all_ones_when_in_use_and_zero_when_empty() {
    let (mut h, e) = debug_enclave();
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    assert_eq!(rd(&mut h, va), Ok((Status::Success, 0)), "fresh VA page: every slot empty");
    // Evict the data page into slot i and load it back, over and over: every EWB takes a
    // fresh version, never one whose bits above the low three are all clear.
    let mut data = page_of(&e, layout::DATA);
    for slot in 0..10u64 {
        let slot_addr = va + 8 * slot;
        evict_into(&mut h, &e, data, slot_addr);
        let mut raw = [0u8; 8];
        h.cpu.read_epc(h.cpu.epc_index(va).unwrap(), 8 * slot as usize, &mut raw);
        let version = u64::from_le_bytes(raw);
        assert_ne!(version, 0, "EWB stored a version");
        // §1.9 / SDM EDBGRD: the slot value with its low 3 bits masked decides; the version
        // itself is never disclosed.
        assert_ne!(version & !0x7, 0, "versions start above 7, so an in-use slot never reads as empty");
        let expected = u64::MAX;
        assert_eq!(rd(&mut h, slot_addr), Ok((Status::Success, expected)), "slot {slot}, version {version}");
        assert_eq!(rd(&mut h, slot_addr + 8), Ok((Status::Success, 0)), "next slot empty");
        h.lp.mode64 = false;
        assert_eq!(rd(&mut h, slot_addr), Ok((Status::Success, 0xFFFF_FFFF)), "4-byte read of a used slot");
        h.lp.mode64 = true;
        // ELDU empties the slot again.
        let target = h.alloc_page();
        h.put_pageinfo(e.base + layout::DATA, scratch::PAGE, scratch::SECINFO, e.secs);
        assert_eq!(h.cpu.eldu(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, slot_addr), Ok(Status::Success));
        assert_eq!(rd(&mut h, slot_addr), Ok((Status::Success, 0)), "slot {slot} emptied by ELDU");
        assert_eq!(rd(&mut h, target + 8), Ok((Status::Success, 0x1111_1111_1111_1111)));
        data = target;
    }
    assert_eq!(rd(&mut h, va + 4088), Ok((Status::Success, 0)), "last slot never used");
    h.cpu.check_invariants().unwrap();
}
