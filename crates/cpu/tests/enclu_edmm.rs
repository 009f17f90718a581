//! The SGX2 ENCLU leaves: EACCEPT, EACCEPTCOPY and EMODPE (spec §5.7–§5.9, tracking §7).
//!
//! SECINFO operands live in the test enclave's data page (written through
//! `Processor::write_epc`); EAUG'd pages come from the heap part of ELRANGE. ENCLS leaves
//! (EAUG, EMODPR, EMODT, ETRACK, EBLOCK) run on a separate "kernel" logical processor.
//!
//! Coverage:
//!
//! **EACCEPT (§5.7)**
//! * §3.3 outside enclave mode → #GP: `eaccept_outside_enclave_is_gp`.
//! * 1 SECINFO misaligned / outside ELRANGE → #GP: `eaccept_secinfo_alignment_and_elrange_are_gp`;
//!   SECINFO page not mapped (ordinary #PF), not EPC, not R, PENDING, MODIFIED, BLOCKED, not
//!   PT_REG, wrong address, other enclave → #PF(RBX): `eaccept_secinfo_page_checks_are_pf`.
//! * 2 SECINFO reserved bits / bytes → #GP: `eaccept_reserved_secinfo_bits_are_gp` (also shows 2
//!   precedes 3).
//! * 3 target misaligned / outside ELRANGE → #GP: `eaccept_target_alignment_and_elrange_are_gp`;
//!   not mapped → ordinary #PF with error code exactly U (0x4): `eaccept_unmapped_target_is_a_plain_user_read_fault`;
//!   not EPC → #PF(RCX) with the SGX bit: `eaccept_target_in_normal_memory_is_sgx_pf`; 1 precedes 3:
//!   `eaccept_secinfo_checks_precede_target_checks`.
//! * 4 illegal request shapes → #GP: `eaccept_illegal_request_shapes_are_gp` (also 4 before 5).
//! * 5 target invalid / BLOCKED / not REG-TCS-TRIM / other enclave → #PF(RCX):
//!   `eaccept_target_epcm_checks_are_pf`.
//! * 6 target busy → #GP: a lock race only; `concurrent_sgx2_leaves_on_one_page` runs two LPs
//!   against one page and asserts exactly one acceptance and only #GP or
//!   SGX_PAGE_ATTRIBUTES_MISMATCH for the loser.
//! * 7 ENCLAVEADDRESS / PENDING / MODIFIED / R / W / X / PT mismatch → SGX_PAGE_ATTRIBUTES_MISMATCH
//!   (19), PR not compared: `eaccept_attribute_mismatches`, `eaccept_does_not_compare_pr`; 7 before 8:
//!   `eaccept_mismatch_precedes_tracking`.
//! * 8 SGX_NOT_TRACKED (11): `eaccept_after_emodpr_needs_etrack`, `eaccept_after_emodt_needs_etrack`,
//!   `eaccept_by_a_caller_that_entered_before_etrack_is_not_tracked` (the caller must re-enter),
//!   `eaccept_waits_for_other_lps_that_entered_before_etrack`; plain EAUG acceptance never needs
//!   tracking: `eaccept_of_an_eaug_page_needs_no_tracking`.
//! * 9 new TCS: reserved area / DBGOPTIN / AEP / STATE → #GP:
//!   `eaccept_of_a_malformed_new_tcs_is_gp`; 8 before 9: `eaccept_tracking_precedes_the_tcs_checks`;
//!   a well-formed one is accepted and enterable: `eaccept_of_a_new_tcs_makes_it_enterable`; an
//!   all-zero page converted to a TCS (CSSA = NSSA = 0) is accepted, as on hardware, and EENTER
//!   refuses it: `eaccept_of_a_zeroed_page_converted_to_a_tcs_succeeds`.
//! * The SECINFOs Intel's sgx-emm passes — PT_REG | PENDING | RW (commit), PT_REG | PR | R
//!   (restrict), PT_TCS | MODIFIED, PT_TRIM | MODIFIED — are accepted: `eaccept_success_effects`.
//! * 10 success clears PENDING/MODIFIED/PR, RAX=0/ZF=0, RIP advanced: `eaccept_success_effects`
//!   (EAUG, EMODPR, EMODT-to-TRIM acceptances), `eaccept_through_enclu`.
//!
//! **EACCEPTCOPY (§5.8)**
//! * §3.3: `eacceptcopy_outside_enclave_is_gp`.
//! * 1 alignment / ELRANGE → #GP: `eacceptcopy_alignment_and_elrange_are_gp`; translations
//!   (RBX, RCX, RDX in order) → #PF: `eacceptcopy_translation_faults`; all #GP checks before any
//!   #PF and the SECINFO EPCM check after the three translations: `eacceptcopy_step_1_order`;
//!   SECINFO page checks → #PF(RBX): `eacceptcopy_secinfo_page_checks_are_pf`.
//! * 2 SECINFO reserved (FLAGS 7:6, 63:16, bytes 8..63) / W without R / PT≠REG → #GP:
//!   `eacceptcopy_invalid_secinfo_is_gp` (also 2 before 3); PENDING/MODIFIED/PR are ignored, so
//!   sgx-emm's PT_REG | PENDING | permissions works: `eacceptcopy_accepts_the_secinfo_sgx_emm_passes`.
//! * 3 source not R / PENDING / MODIFIED / BLOCKED / not REG / wrong address / other enclave →
//!   #PF(RDX): `eacceptcopy_source_checks_are_pf` (also 3 before 4).
//! * 4 destination not PENDING / MODIFIED / not REG / other enclave / wrong address →
//!   SGX_PAGE_ATTRIBUTES_MISMATCH: `eacceptcopy_destination_mismatches`. "EPCM RWX ≠ RW-" cannot be
//!   produced through the API (EAUG creates RW pages and neither EMODPR nor EMODPE accepts a
//!   PENDING page), so that re-check is covered only by code reading. Busy → #GP: race test above.
//! * 5 copy, RWX := SECINFO, PENDING cleared: `eacceptcopy_copies_and_sets_permissions`.
//!
//! **EMODPE (§5.9)**
//! * §3.3: `emodpe_outside_enclave_is_gp`.
//! * 1 alignment / ELRANGE → #GP, translations → #PF, then SECINFO page checks → #PF(RBX):
//!   `emodpe_alignment_and_elrange_are_gp`, `emodpe_translation_faults`, `emodpe_step_1_order`,
//!   `emodpe_secinfo_page_checks_are_pf`.
//! * 2 SECINFO reserved (FLAGS 7:6, 63:16, bytes 8..63) → #GP: `emodpe_reserved_secinfo_bits_are_gp`;
//!   only RWX is read, so sgx-emm's PT_REG | PR | permissions works, and PENDING, MODIFIED and
//!   the page type are ignored too: `emodpe_accepts_the_secinfo_sgx_emm_passes`.
//! * 3 target PENDING / MODIFIED / not REG / BLOCKED / other enclave / wrong address → #PF(RCX):
//!   `emodpe_target_checks_are_pf` (also 2 before 3); busy → #GP: race test above.
//! * 4 EPCM.R=0 and W without R → #GP: `emodpe_write_without_read_is_gp`.
//! * 5 permissions ORed, no tracking, RIP advanced, no RAX/flags change: `emodpe_extends_permissions`.

use sgxemu_arch::{Enclu, ErrorCode, IntoBytes, PAGE_SIZE, PageType, PfErrorCode, Secinfo, SecinfoFlags, Tcs};
use sgxemu_cpu::regs::{ARITH_FLAGS, RFLAGS_ZF};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image};
use sgxemu_cpu::{Access, AccessKind, AexEvent, Exception, LeafResult, Lp, Regs, Status};

const AEP: u64 = 0x40_1000;
const ENCLU_RIP: u64 = 0x40_0000;
/// SECINFO slot in the data page.
const SI: u64 = layout::DATA;
/// EAUG'd pages.
const HEAP: u64 = layout::HEAP;
const HEAP2: u64 = layout::HEAP + 0x1000;
/// An ELRANGE address that is never mapped.
const HOLE: u64 = 0x9000;

const R: SecinfoFlags = SecinfoFlags::R;
const W: SecinfoFlags = SecinfoFlags::W;
const X: SecinfoFlags = SecinfoFlags::X;
const PENDING: SecinfoFlags = SecinfoFlags::PENDING;
const MODIFIED: SecinfoFlags = SecinfoFlags::MODIFIED;
const PR: SecinfoFlags = SecinfoFlags::PR;

// ---------------------------------------------------------------------------------------------
// Helpers

fn setup() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    (h, e)
}

fn reg(flags: SecinfoFlags) -> SecinfoFlags {
    flags.with_page_type(PageType::Reg)
}

fn outside_regs() -> Regs {
    Regs { rsp: 0x7fff_0000, rbp: 0x7fff_0100, rip: ENCLU_RIP, rflags: 0x202, ..Regs::default() }
}

fn enter(h: &mut Harness, e: &TestEnclave) -> Regs {
    let mut regs = outside_regs();
    h.eenter(&mut regs, e.tcs, AEP).expect("EENTER");
    regs
}

fn enter_lp(h: &Harness, lp: &mut Lp, tcs: u64) -> Regs {
    let mut regs = Regs { rbx: tcs, rcx: AEP, ..outside_regs() };
    h.cpu.eenter(lp, &mut regs, &h.pt).expect("EENTER");
    regs
}

fn leave(h: &mut Harness, regs: &mut Regs) {
    h.eexit(regs, ENCLU_RIP + 3).expect("EEXIT");
}

fn la_epc(h: &Harness, e: &TestEnclave, la: u64) -> sgxemu_cpu::EpcIndex {
    h.cpu.epc_index(e.pages[&(la & !(PAGE_SIZE as u64 - 1))]).expect("EPC")
}

/// Writes a SECINFO with `flags` (and optionally a non-zero reserved byte) at `la`, which
/// must be one of the enclave's EADDed pages.
fn put_secinfo_raw(h: &Harness, e: &TestEnclave, la: u64, bytes: &[u8; 64]) {
    h.cpu.write_epc(la_epc(h, e, la), (la % PAGE_SIZE as u64) as usize, bytes);
}

fn put_secinfo(h: &Harness, e: &TestEnclave, la: u64, flags: SecinfoFlags) {
    let mut bytes = [0u8; 64];
    bytes.copy_from_slice(Secinfo::new(flags).as_bytes());
    put_secinfo_raw(h, e, la, &bytes);
}

fn eaccept(h: &mut Harness, regs: &mut Regs, secinfo: u64, target: u64) -> LeafResult {
    regs.rax = Enclu::Eaccept as u64;
    regs.rbx = secinfo;
    regs.rcx = target;
    h.cpu.eaccept(&mut h.lp, regs, &h.pt)
}

fn eacceptcopy(h: &mut Harness, regs: &mut Regs, secinfo: u64, dest: u64, src: u64) -> LeafResult {
    regs.rax = Enclu::Eacceptcopy as u64;
    regs.rbx = secinfo;
    regs.rcx = dest;
    regs.rdx = src;
    h.cpu.eacceptcopy(&mut h.lp, regs, &h.pt)
}

fn emodpe(h: &mut Harness, regs: &mut Regs, secinfo: u64, target: u64) -> Result<(), Exception> {
    regs.rax = Enclu::Emodpe as u64;
    regs.rbx = secinfo;
    regs.rcx = target;
    h.cpu.emodpe(&mut h.lp, regs, &h.pt)
}

/// EAUG of a fresh page at BASE+`offset`, mapped read/write. Returns its EPC address.
fn eaug(h: &mut Harness, e: &TestEnclave, offset: u64) -> u64 {
    let epc = h.alloc_page();
    h.put_pageinfo(e.base + offset, 0, 0, e.secs);
    let mut k = h.cpu.new_lp();
    h.cpu.eaug(&mut k, &mut h.mem, scratch::PAGEINFO, epc).expect("EAUG");
    h.map(e.base + offset, epc, true, false);
    epc
}

fn emodpr(h: &mut Harness, epc: u64, perms: SecinfoFlags) {
    h.put_secinfo(reg(perms));
    let mut k = h.cpu.new_lp();
    assert_eq!(h.cpu.emodpr(&mut k, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

fn emodt(h: &mut Harness, epc: u64, page_type: PageType) {
    h.put_secinfo(SecinfoFlags::from(page_type));
    let mut k = h.cpu.new_lp();
    assert_eq!(h.cpu.emodt(&mut k, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

fn etrack(h: &Harness, e: &TestEnclave) {
    let mut k = h.cpu.new_lp();
    assert_eq!(h.cpu.etrack(&mut k, e.secs), Ok(Status::Success));
}

fn eblock(h: &Harness, epc: u64) {
    let mut k = h.cpu.new_lp();
    assert_eq!(h.cpu.eblock(&mut k, epc), Ok(Status::Success));
}

/// EAUG at `offset` and accept it (RW) from inside; leaves the LP outside.
fn eaug_accepted(h: &mut Harness, e: &TestEnclave, offset: u64) -> u64 {
    let epc = eaug(h, e, offset);
    let mut regs = enter(h, e);
    put_secinfo(h, e, e.base + SI, reg(R | W | PENDING));
    assert_eq!(eaccept(h, &mut regs, e.base + SI, e.base + offset), Ok(Status::Success));
    leave(h, &mut regs);
    epc
}

fn flags_of(h: &Harness, epc: u64) -> SecinfoFlags {
    h.cpu.epcm_view(h.cpu.epc_index(epc).unwrap()).flags
}

fn sgx_pf(addr: u64, write: bool) -> Exception {
    Exception::epcm_pf_user(addr, write)
}

fn pf(addr: u64, code: PfErrorCode) -> Exception {
    Exception::Pf { addr, code }
}

fn err(code: ErrorCode) -> LeafResult {
    Ok(Status::Error(code))
}

/// Another enclave on the same platform, for "wrong owner" cases.
fn other_enclave(h: &mut Harness) -> TestEnclave {
    TestEnclave::build_with(h, secs_image(0x20_0000_0000, 1 << 20))
}

// ---------------------------------------------------------------------------------------------
// EACCEPT

#[test]
fn eaccept_outside_enclave_is_gp() {
    let (mut h, e) = setup();
    let epc = eaug(&mut h, &e, HEAP);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    let mut regs = outside_regs();
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Err(Exception::Gp));
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    assert_eq!(regs.rip, ENCLU_RIP);
    assert_eq!(flags_of(&h, epc), reg(R | W | PENDING));
}

#[test]
fn eaccept_secinfo_alignment_and_elrange_are_gp() {
    let (mut h, e) = setup();
    let epc = eaug(&mut h, &e, HEAP);
    let below = e.base - 0x1000;
    h.map(below, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    for (name, secinfo) in [
        ("offset_8", e.base + SI + 8),
        ("offset_32", e.base + SI + 32),
        ("below_elrange", below),
        ("past_elrange", e.base + e.size),
    ] {
        assert_eq!(eaccept(&mut h, &mut regs, secinfo, e.base + HEAP), Err(Exception::Gp), "case {name}");
    }
    assert_eq!(flags_of(&h, epc), reg(R | W | PENDING), "nothing accepted");
    leave(&mut h, &mut regs);
}

/// Conditions that make a page unusable as an enclave-page operand; each returns the linear
/// address (in ELRANGE) to use, with `page_offset` added.
type BadPage = fn(&mut Harness, &TestEnclave) -> u64;

fn bad_operand_pages() -> [(&'static str, BadPage); 9] {
    [
        ("normal_memory", |h, e| {
            h.map(e.base + HOLE, scratch::PAGE, true, false);
            e.base + HOLE
        }),
        ("no_read", |h, e| {
            let la = e.base + layout::RODATA;
            h.map(la, e.pages[&la], true, false);
            emodpr(h, e.pages[&la], SecinfoFlags::empty());
            la
        }),
        ("pending", |h, e| {
            eaug(h, e, HEAP2);
            e.base + HEAP2
        }),
        ("modified", |h, e| {
            let epc = eaug_accepted(h, e, HEAP2);
            emodt(h, epc, PageType::Trim);
            e.base + HEAP2
        }),
        ("blocked", |h, e| {
            let la = e.base + layout::RODATA;
            eblock(h, e.pages[&la]);
            la
        }),
        ("tcs_page", |_, e| e.tcs),
        ("wrong_address", |h, e| {
            h.map(e.base + HOLE, e.pages[&(e.base + layout::DATA)], true, false);
            e.base + HOLE
        }),
        ("other_enclave", |h, e| {
            let other = other_enclave(h);
            h.map(e.base + HOLE, other.pages[&(other.base + layout::DATA)], true, false);
            e.base + HOLE
        }),
        ("secs_page", |h, e| {
            h.map(e.base + HOLE, e.secs, true, false);
            e.base + HOLE
        }),
    ]
}

#[test]
fn eaccept_secinfo_page_checks_are_pf() {
    let mut cases: Vec<(&str, BadPage)> = vec![("not_present", |_, e| e.base + HOLE)];
    cases.extend(bad_operand_pages());
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let target = eaug(&mut h, &e, HEAP);
        let secinfo = prepare(&mut h, &e) + 0x40;
        let mut regs = enter(&mut h, &e);
        let expected = if name == "not_present" { pf(secinfo, PfErrorCode::U) } else { sgx_pf(secinfo, false) };
        assert_eq!(eaccept(&mut h, &mut regs, secinfo, e.base + HEAP), Err(expected), "case {name}");
        assert_eq!(flags_of(&h, target), reg(R | W | PENDING), "case {name}: nothing accepted");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn eaccept_reserved_secinfo_bits_are_gp() {
    let (mut h, e) = setup();
    let target = eaug(&mut h, &e, HEAP);
    let mut regs = enter(&mut h, &e);
    let good = reg(R | W | PENDING).bits();
    let mut cases: Vec<(String, [u8; 64])> = Vec::new();
    for bit in [6u32, 7, 16, 40, 63] {
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&(good | 1 << bit).to_le_bytes());
        cases.push((format!("flags_bit_{bit}"), bytes));
    }
    for byte in [8usize, 33, 63] {
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&good.to_le_bytes());
        bytes[byte] = 1;
        cases.push((format!("reserved_byte_{byte}"), bytes));
    }
    for (name, bytes) in cases {
        put_secinfo_raw(&h, &e, e.base + SI, &bytes);
        let before = regs;
        assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Err(Exception::Gp), "case {name}");
        assert_eq!(regs.rip, before.rip, "case {name}");
        // Step 2 comes before the target checks of step 3.
        assert_eq!(
            eaccept(&mut h, &mut regs, e.base + SI, e.base + HOLE),
            Err(Exception::Gp),
            "case {name}, unmapped target"
        );
    }
    assert_eq!(flags_of(&h, target), reg(R | W | PENDING));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_target_alignment_and_elrange_are_gp() {
    let (mut h, e) = setup();
    eaug(&mut h, &e, HEAP);
    let below = e.base - 0x1000;
    h.map(below, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    for (name, target) in [
        ("offset_0x800", e.base + HEAP + 0x800),
        ("offset_8", e.base + HEAP + 8),
        ("below", below),
        ("past_end", e.base + e.size),
    ] {
        assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, target), Err(Exception::Gp), "case {name}");
    }
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_unmapped_target_is_a_plain_user_read_fault() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    let target = e.base + HOLE;
    let result = eaccept(&mut h, &mut regs, e.base + SI, target);
    assert_eq!(result, Err(pf(target, PfErrorCode::U)));
    let Err(Exception::Pf { code, .. }) = result else { unreachable!() };
    assert_eq!(code.bits(), 0x4, "the kernel-cannot-EAUG signature");
    // The Linux flow: AEX, the kernel EAUGs and maps, ERESUME retries the EACCEPT.
    regs.rip = e.base + layout::CODE;
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(result.unwrap_err())).unwrap();
    eaug(&mut h, &e, HOLE);
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, target), Ok(Status::Success));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_target_in_normal_memory_is_sgx_pf() {
    let (mut h, e) = setup();
    h.map(e.base + HOLE, scratch::PAGE, true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HOLE), Err(sgx_pf(e.base + HOLE, false)));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_secinfo_checks_precede_target_checks() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let bad_secinfo = e.base + HOLE;
    assert_eq!(eaccept(&mut h, &mut regs, bad_secinfo, e.base + HEAP + 8), Err(pf(bad_secinfo, PfErrorCode::U)));
    assert_eq!(eaccept(&mut h, &mut regs, e.tcs, e.base + e.size), Err(sgx_pf(e.tcs, false)));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_illegal_request_shapes_are_gp() {
    let t = |flags: SecinfoFlags, pt: PageType| flags.with_page_type(pt);
    let cases = [
        ("reg_without_pending_or_pr", t(R | W, PageType::Reg)),
        ("reg_pending_modified", t(R | W | PENDING | MODIFIED, PageType::Reg)),
        ("reg_pr_modified", t(R | PR | MODIFIED, PageType::Reg)),
        ("reg_modified", t(MODIFIED, PageType::Reg)),
        ("tcs_without_modified", t(SecinfoFlags::empty(), PageType::Tcs)),
        ("tcs_modified_pending", t(MODIFIED | PENDING, PageType::Tcs)),
        ("tcs_modified_pr", t(MODIFIED | PR, PageType::Tcs)),
        ("trim_without_modified", t(SecinfoFlags::empty(), PageType::Trim)),
        ("trim_modified_pending", t(MODIFIED | PENDING, PageType::Trim)),
        ("trim_modified_pr", t(MODIFIED | PR, PageType::Trim)),
        ("secs", t(PENDING, PageType::Secs)),
        ("va", t(PENDING, PageType::Va)),
        ("ss_first", SecinfoFlags::from_bits_retain((R | W | PENDING).bits() | 5 << 8)),
        ("unknown_type", SecinfoFlags::from_bits_retain((R | W | PENDING).bits() | 0x42 << 8)),
    ];
    let (mut h, e) = setup();
    let target = eaug(&mut h, &e, HEAP);
    let invalid = h.alloc_page();
    h.map(e.base + HOLE, invalid, true, false);
    let mut regs = enter(&mut h, &e);
    for (name, flags) in cases {
        put_secinfo(&h, &e, e.base + SI, flags);
        assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Err(Exception::Gp), "case {name}");
        // Step 4 precedes the target's EPCM checks (step 5 would #PF on an invalid page).
        assert_eq!(
            eaccept(&mut h, &mut regs, e.base + SI, e.base + HOLE),
            Err(Exception::Gp),
            "case {name}, invalid target"
        );
    }
    assert_eq!(flags_of(&h, target), reg(R | W | PENDING));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_target_epcm_checks_are_pf() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> u64;
    let cases: [(&str, Prepare); 5] = [
        ("invalid", |h, e| {
            let fresh = h.alloc_page();
            h.map(e.base + HOLE, fresh, true, false);
            e.base + HOLE
        }),
        ("blocked", |h, e| {
            let epc = eaug(h, e, HOLE);
            eblock(h, epc);
            e.base + HOLE
        }),
        ("other_enclave", |h, e| {
            let other = other_enclave(h);
            let epc = eaug(h, &other, HEAP);
            h.map(e.base + HOLE, epc, true, false);
            e.base + HOLE
        }),
        ("secs", |h, e| {
            h.map(e.base + HOLE, e.secs, true, false);
            e.base + HOLE
        }),
        ("va", |h, e| {
            let va = h.alloc_page();
            h.cpu.epa(&mut h.lp, 3, va).unwrap();
            h.map(e.base + HOLE, va, true, false);
            e.base + HOLE
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let target = prepare(&mut h, &e);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
        assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, target), Err(sgx_pf(target, false)), "case {name}");
        leave(&mut h, &mut regs);
        h.cpu.check_invariants().unwrap();
    }
}

#[test]
fn eaccept_attribute_mismatches() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> (u64, SecinfoFlags);
    let cases: [(&str, Prepare); 7] = [
        ("enclave_address", |h, e| {
            let epc = eaug(h, e, HEAP);
            h.map(e.base + HOLE, epc, true, false);
            (e.base + HOLE, reg(R | W | PENDING))
        }),
        ("pending", |h, e| {
            eaug(h, e, HEAP);
            (e.base + HEAP, reg(R | W | PR))
        }),
        ("modified", |_, e| (e.tcs, SecinfoFlags::from(PageType::Tcs) | MODIFIED)),
        ("r", |h, e| {
            eaug(h, e, HEAP);
            (e.base + HEAP, reg(W | PENDING))
        }),
        ("w", |h, e| {
            eaug(h, e, HEAP);
            (e.base + HEAP, reg(R | PENDING))
        }),
        ("x", |h, e| {
            eaug(h, e, HEAP);
            (e.base + HEAP, reg(R | W | X | PENDING))
        }),
        ("page_type", |h, e| {
            let epc = eaug_accepted(h, e, HEAP);
            emodt(h, epc, PageType::Trim);
            etrack(h, e);
            (e.base + HEAP, SecinfoFlags::from(PageType::Tcs) | MODIFIED)
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let (target, flags) = prepare(&mut h, &e);
        let epc = e.pages.get(&target).copied();
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, flags);
        let before_flags = epc.map(|p| flags_of(&h, p));
        regs.rflags = 0x202 | ARITH_FLAGS;
        let rip = regs.rip;
        assert_eq!(
            eaccept(&mut h, &mut regs, e.base + SI, target),
            err(ErrorCode::PageAttributesMismatch),
            "case {name}"
        );
        assert_eq!((regs.rax, regs.rflags, regs.rip), (19, 0x202 | RFLAGS_ZF, rip + 3), "case {name}");
        assert_eq!(epc.map(|p| flags_of(&h, p)), before_flags, "case {name}: EPCM unchanged");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn eaccept_does_not_compare_pr() {
    let (mut h, e) = setup();
    let epc = eaug(&mut h, &e, HEAP);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING | PR));
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Ok(Status::Success));
    assert_eq!(flags_of(&h, epc), reg(R | W));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_mismatch_precedes_tracking() {
    let (mut h, e) = setup();
    let rodata = e.base + layout::RODATA;
    // Restrict RODATA (R) to R: PR=1, tracking needed; accept with a wrong permission set.
    emodpr(&mut h, e.pages[&rodata], R);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PR));
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, rodata), err(ErrorCode::PageAttributesMismatch));
    put_secinfo(&h, &e, e.base + SI, reg(R | PR));
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, rodata), err(ErrorCode::NotTracked));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_after_emodpr_needs_etrack() {
    let (mut h, e) = setup();
    let rodata = e.base + layout::RODATA;
    let epc = e.pages[&rodata];
    emodpr(&mut h, epc, R);
    assert_eq!(flags_of(&h, epc), reg(R | PR));
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | PR));
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, rodata), err(ErrorCode::NotTracked));
    assert_eq!(regs.rax, 11);
    leave(&mut h, &mut regs);
    etrack(&h, &e);
    let mut regs = enter(&mut h, &e);
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, rodata), Ok(Status::Success));
    assert_eq!(flags_of(&h, epc), reg(R), "PR cleared");
    leave(&mut h, &mut regs);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eaccept_after_emodt_needs_etrack() {
    let (mut h, e) = setup();
    let epc = eaug_accepted(&mut h, &e, HEAP);
    emodt(&mut h, epc, PageType::Trim);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, SecinfoFlags::from(PageType::Trim) | MODIFIED);
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), err(ErrorCode::NotTracked));
    leave(&mut h, &mut regs);
    etrack(&h, &e);
    let mut regs = enter(&mut h, &e);
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Ok(Status::Success));
    assert_eq!(flags_of(&h, epc), SecinfoFlags::from(PageType::Trim));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_by_a_caller_that_entered_before_etrack_is_not_tracked() {
    let (mut h, e) = setup();
    let rodata = e.base + layout::RODATA;
    emodpr(&mut h, e.pages[&rodata], R);
    let mut regs = enter(&mut h, &e);
    etrack(&h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | PR));
    assert_eq!(
        eaccept(&mut h, &mut regs, e.base + SI, rodata),
        err(ErrorCode::NotTracked),
        "still in since before ETRACK"
    );
    // An AEX + ERESUME (what the driver's IPI causes) refreshes the caller's entry epoch.
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, rodata), Ok(Status::Success));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_waits_for_other_lps_that_entered_before_etrack() {
    let mut h = Harness::new();
    let e = TestEnclave::build_with_threads(&mut h, secs_image(0x10_0000_0000, 1 << 20), 2);
    let rodata = e.base + layout::RODATA;
    let mut other = h.cpu.new_lp();
    let mut other_regs = enter_lp(&h, &mut other, e.threads[1]);
    emodpr(&mut h, e.pages[&rodata], R);
    etrack(&h, &e);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | PR));
    assert_eq!(
        eaccept(&mut h, &mut regs, e.base + SI, rodata),
        err(ErrorCode::NotTracked),
        "another LP entered before the ETRACK is still inside"
    );
    h.cpu.aex(&mut other, &mut other_regs, AexEvent::interrupt()).unwrap();
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, rodata), Ok(Status::Success));
    leave(&mut h, &mut regs);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eaccept_of_an_eaug_page_needs_no_tracking() {
    let mut h = Harness::new();
    let e = TestEnclave::build_with_threads(&mut h, secs_image(0x10_0000_0000, 1 << 20), 2);
    let mut other = h.cpu.new_lp();
    let mut other_regs = enter_lp(&h, &mut other, e.threads[1]);
    let epc = eaug(&mut h, &e, HEAP);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Ok(Status::Success), "no ETRACK at all");
    assert_eq!(flags_of(&h, epc), reg(R | W));
    leave(&mut h, &mut regs);
    other_regs.rbx = ENCLU_RIP;
    h.cpu.eexit(&mut other, &mut other_regs).unwrap();
}

/// A page at HEAP that will become a TCS: EAUG, accepted as RW, filled with `tcs` from
/// inside, then EMODT'd to PT_TCS. Returns its EPC address.
fn tcs_candidate(h: &mut Harness, e: &TestEnclave, tcs: &Tcs) -> u64 {
    let epc = eaug_accepted(h, e, HEAP);
    h.cpu.write_epc(h.cpu.epc_index(epc).unwrap(), 0, tcs.as_bytes());
    emodt(h, epc, PageType::Tcs);
    epc
}

fn good_new_tcs() -> Tcs {
    // One SSA frame: the second frame page of the main TCS's SSA stack.
    Tcs {
        ossa: layout::SSA + 0x1000,
        nssa: 1,
        oentry: layout::CODE,
        ofsbase: layout::DATA,
        ogsbase: layout::DATA,
        ..Tcs::default()
    }
}

#[test]
fn eaccept_of_a_malformed_new_tcs_is_gp() {
    let mut reserved_first = good_new_tcs();
    reserved_first.reserved[0] = 1;
    let mut reserved_last = good_new_tcs();
    reserved_last.reserved[4023] = 0x80;
    let cases = [
        ("reserved_first", reserved_first),
        ("reserved_last", reserved_last),
        ("dbgoptin", Tcs { flags: 1, ..good_new_tcs() }),
        ("aep", Tcs { aep: 0x40_1000, ..good_new_tcs() }),
        ("state", Tcs { state: 1, ..good_new_tcs() }),
    ];
    for (name, tcs) in cases {
        let (mut h, e) = setup();
        let epc = tcs_candidate(&mut h, &e, &tcs);
        etrack(&h, &e);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, SecinfoFlags::from(PageType::Tcs) | MODIFIED);
        assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Err(Exception::Gp), "case {name}");
        assert_eq!(flags_of(&h, epc), SecinfoFlags::from(PageType::Tcs) | MODIFIED, "case {name}: still MODIFIED");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn eaccept_of_a_zeroed_page_converted_to_a_tcs_succeeds() {
    // Intel's EMM tests EMODT a freshly committed (all-zero) page to a TCS and expect the
    // EACCEPT to succeed on hardware, although CSSA = NSSA = 0; the model follows the
    // hardware, and only EENTER refuses such a TCS.
    let (mut h, e) = setup();
    let epc = tcs_candidate(&mut h, &e, &Tcs::default());
    etrack(&h, &e);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, SecinfoFlags::from(PageType::Tcs) | MODIFIED);
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Ok(Status::Success));
    assert_eq!(flags_of(&h, epc), SecinfoFlags::from(PageType::Tcs), "MODIFIED cleared");
    leave(&mut h, &mut regs);
    let mut probe = outside_regs();
    assert_eq!(h.eenter(&mut probe, e.base + HEAP, AEP), Err(Exception::Gp), "CSSA ≥ NSSA at EENTER");
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eaccept_tracking_precedes_the_tcs_checks() {
    let (mut h, e) = setup();
    tcs_candidate(&mut h, &e, &Tcs { aep: 1, ..good_new_tcs() });
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, SecinfoFlags::from(PageType::Tcs) | MODIFIED);
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), err(ErrorCode::NotTracked));
    leave(&mut h, &mut regs);
}

#[test]
fn eaccept_of_a_new_tcs_makes_it_enterable() {
    let (mut h, e) = setup();
    let epc = tcs_candidate(&mut h, &e, &good_new_tcs());
    // Not enterable while MODIFIED.
    let mut probe = outside_regs();
    assert_eq!(h.eenter(&mut probe, e.base + HEAP, AEP), Err(sgx_pf(e.base + HEAP, true)));
    etrack(&h, &e);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, SecinfoFlags::from(PageType::Tcs) | MODIFIED);
    assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, e.base + HEAP), Ok(Status::Success));
    assert_eq!(flags_of(&h, epc), SecinfoFlags::from(PageType::Tcs), "MODIFIED cleared, RWX 000");
    leave(&mut h, &mut regs);
    let mut regs = outside_regs();
    h.eenter(&mut regs, e.base + HEAP, AEP).unwrap();
    assert_eq!(regs.rip, e.base + layout::CODE);
    leave(&mut h, &mut regs);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eaccept_success_effects() {
    let (mut h, e) = setup();
    // EAUG acceptance.
    let aug = eaug(&mut h, &e, HEAP);
    // Permission restriction of RODATA to nothing.
    let rodata = e.base + layout::RODATA;
    emodpr(&mut h, e.pages[&rodata], SecinfoFlags::empty());
    // Type change of an accepted page to TRIM.
    let trim = eaug_accepted(&mut h, &e, HEAP2);
    emodt(&mut h, trim, PageType::Trim);
    etrack(&h, &e);
    let mut regs = enter(&mut h, &e);
    for (name, flags, target, epc, after) in [
        ("eaug", reg(R | W | PENDING), e.base + HEAP, aug, reg(R | W)),
        ("emodpr", reg(PR), rodata, e.pages[&rodata], reg(SecinfoFlags::empty())),
        (
            "emodt_trim",
            SecinfoFlags::from(PageType::Trim) | MODIFIED,
            e.base + HEAP2,
            trim,
            SecinfoFlags::from(PageType::Trim),
        ),
    ] {
        put_secinfo(&h, &e, e.base + SI, flags);
        regs.rflags = 0x202 | ARITH_FLAGS;
        let rip = regs.rip;
        assert_eq!(eaccept(&mut h, &mut regs, e.base + SI, target), Ok(Status::Success), "case {name}");
        assert_eq!((regs.rax, regs.rflags, regs.rip), (0, 0x202, rip + 3), "case {name}");
        assert_eq!(flags_of(&h, epc), after, "case {name}");
    }
    // The accepted EAUG page is now usable; the TRIM page is not.
    let data = h.cpu.check_access(&h.lp, &h.pt, e.base + HEAP, AccessKind::Write).unwrap();
    assert_eq!(data, Access::Enclave { page: h.cpu.epc_index(aug).unwrap(), offset: 0 });
    assert!(h.cpu.check_access(&h.lp, &h.pt, e.base + HEAP2, AccessKind::Read).unwrap_err().is_sgx_pf());
    assert!(h.cpu.check_access(&h.lp, &h.pt, rodata, AccessKind::Read).unwrap_err().is_sgx_pf());
    leave(&mut h, &mut regs);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eaccept_through_enclu() {
    let (mut h, e) = setup();
    eaug(&mut h, &e, HEAP);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    regs.rax = Enclu::Eaccept as u64;
    regs.rbx = e.base + SI;
    regs.rcx = e.base + HEAP;
    let rip = regs.rip;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!((regs.rax, regs.rip), (0, rip + 3));
    // Second time: no longer PENDING.
    regs.rax = Enclu::Eaccept as u64;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!((regs.rax, regs.rflags & RFLAGS_ZF, regs.rip), (19, RFLAGS_ZF, rip + 6));
    leave(&mut h, &mut regs);
}

// ---------------------------------------------------------------------------------------------
// Concurrency (step 6 of EACCEPT, step 4 of EACCEPTCOPY, step 3 of EMODPE)

#[test]
fn concurrent_sgx2_leaves_on_one_page() {
    let mut h = Harness::new();
    let e = TestEnclave::build_with_threads(&mut h, secs_image(0x10_0000_0000, 1 << 20), 2);
    put_secinfo(&h, &e, e.base + SI, reg(R | W | PENDING));
    put_secinfo(&h, &e, e.base + SI + 0x40, reg(R | W));
    let mut lps = [h.cpu.new_lp(), h.cpu.new_lp()];
    let mut regs = [enter_lp(&h, &mut lps[0], e.threads[0]), enter_lp(&h, &mut lps[1], e.threads[1])];
    for round in 0..48u64 {
        let offset = HEAP + round * 0x1000;
        eaug(&mut h, &e, offset);
        let target = e.base + offset;
        // LP 0 always EACCEPTs; LP 1 alternates between EACCEPT and EACCEPTCOPY.
        let copy = round % 2 == 1;
        let (cpu, pt) = (&h.cpu, &h.pt);
        let [lp0, lp1] = &mut lps;
        let [r0, r1] = &mut regs;
        let (a, b) = std::thread::scope(|s| {
            let t0 = s.spawn(|| {
                r0.rbx = e.base + SI;
                r0.rcx = target;
                cpu.eaccept(lp0, r0, pt)
            });
            let t1 = s.spawn(|| {
                if copy {
                    r1.rbx = e.base + SI + 0x40;
                    r1.rcx = target;
                    r1.rdx = e.base + layout::RODATA;
                    cpu.eacceptcopy(lp1, r1, pt)
                } else {
                    r1.rbx = e.base + SI;
                    r1.rcx = target;
                    cpu.eaccept(lp1, r1, pt)
                }
            });
            (t0.join().unwrap(), t1.join().unwrap())
        });
        let winners = [a, b].iter().filter(|r| **r == Ok(Status::Success)).count();
        assert_eq!(winners, 1, "round {round}: exactly one acceptance ({a:?}, {b:?})");
        for r in [a, b] {
            assert!(
                matches!(
                    r,
                    Ok(Status::Success) | Ok(Status::Error(ErrorCode::PageAttributesMismatch)) | Err(Exception::Gp)
                ),
                "round {round}: unexpected outcome {r:?}"
            );
        }
    }
    // Two concurrent EMODPEs: each succeeds or loses the page with #GP; the union of what
    // succeeded is what the page ends up with.
    put_secinfo(&h, &e, e.base + SI + 0x80, reg(X));
    for round in 0..32 {
        let (cpu, pt) = (&h.cpu, &h.pt);
        let [lp0, lp1] = &mut lps;
        let [r0, r1] = &mut regs;
        let target = e.base + HEAP + round * 0x1000;
        let (a, b) = std::thread::scope(|s| {
            let t0 = s.spawn(|| {
                r0.rbx = e.base + SI + 0x80;
                r0.rcx = target;
                cpu.emodpe(lp0, r0, pt)
            });
            let t1 = s.spawn(|| {
                r1.rbx = e.base + SI + 0x80;
                r1.rcx = target;
                cpu.emodpe(lp1, r1, pt)
            });
            (t0.join().unwrap(), t1.join().unwrap())
        });
        for r in [a, b] {
            assert!(matches!(r, Ok(()) | Err(Exception::Gp)), "round {round}: {r:?}");
        }
        assert!(a.is_ok() || b.is_ok(), "round {round}: two EMODPEs cannot both lose: only SGX2 leaves conflict");
    }
    for (lp, r) in lps.iter_mut().zip(regs.iter_mut()) {
        r.rbx = ENCLU_RIP;
        h.cpu.eexit(lp, r).unwrap();
    }
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EACCEPTCOPY

const SRC: u64 = layout::RODATA;

#[test]
fn eacceptcopy_outside_enclave_is_gp() {
    let (mut h, e) = setup();
    let epc = eaug(&mut h, &e, HEAP);
    put_secinfo(&h, &e, e.base + SI, reg(R | X));
    let mut regs = outside_regs();
    assert_eq!(eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + HEAP, e.base + SRC), Err(Exception::Gp));
    assert_eq!(flags_of(&h, epc), reg(R | W | PENDING));
}

#[test]
fn eacceptcopy_alignment_and_elrange_are_gp() {
    let (mut h, e) = setup();
    let epc = eaug(&mut h, &e, HEAP);
    let below = e.base - 0x1000;
    h.map(below, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | X));
    let (si, dst, src) = (e.base + SI, e.base + HEAP, e.base + SRC);
    for (name, a, b, c) in [
        ("secinfo_misaligned", si + 16, dst, src),
        ("dest_misaligned", si, dst + 0x10, src),
        ("src_misaligned", si, dst, src + 0x800),
        ("secinfo_outside", below, dst, src),
        ("dest_outside", si, e.base + e.size, src),
        ("src_outside", si, dst, below),
    ] {
        assert_eq!(eacceptcopy(&mut h, &mut regs, a, b, c), Err(Exception::Gp), "case {name}");
    }
    assert_eq!(flags_of(&h, epc), reg(R | W | PENDING));
    leave(&mut h, &mut regs);
}

#[test]
fn eacceptcopy_translation_faults() {
    let (mut h, e) = setup();
    eaug(&mut h, &e, HEAP);
    h.map(e.base + 0xA000, scratch::PAGE, true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | X));
    let (si, dst, src, hole, normal) = (e.base + SI, e.base + HEAP, e.base + SRC, e.base + HOLE, e.base + 0xA000);
    let u = PfErrorCode::U;
    let uw = PfErrorCode::U | PfErrorCode::W;
    for (name, a, b, c, expected) in [
        ("secinfo_not_present", hole, dst, src, pf(hole, u)),
        ("dest_not_present", si, hole, src, pf(hole, uw)),
        ("src_not_present", si, dst, hole, pf(hole, u)),
        ("secinfo_normal_memory", normal, dst, src, sgx_pf(normal, false)),
        ("dest_normal_memory", si, normal, src, sgx_pf(normal, true)),
        ("src_normal_memory", si, dst, normal, sgx_pf(normal, false)),
        ("rbx_before_rcx", hole, normal, src, pf(hole, u)),
        ("rcx_before_rdx", si, hole, normal, pf(hole, uw)),
    ] {
        assert_eq!(eacceptcopy(&mut h, &mut regs, a, b, c), Err(expected), "case {name}");
    }
    leave(&mut h, &mut regs);
}

#[test]
fn eacceptcopy_step_1_order() {
    let (mut h, e) = setup();
    eaug(&mut h, &e, HEAP);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | X));
    let hole = e.base + HOLE;
    // Every alignment/ELRANGE #GP comes before any translation #PF.
    assert_eq!(eacceptcopy(&mut h, &mut regs, hole, e.base + HEAP + 8, e.base + SRC), Err(Exception::Gp));
    assert_eq!(eacceptcopy(&mut h, &mut regs, hole, e.base + HEAP, e.base - 0x1000), Err(Exception::Gp));
    // The SECINFO page's EPCM checks come after all three translations.
    assert_eq!(
        eacceptcopy(&mut h, &mut regs, e.tcs, hole, e.base + SRC),
        Err(pf(hole, PfErrorCode::U | PfErrorCode::W))
    );
    assert_eq!(eacceptcopy(&mut h, &mut regs, e.tcs, e.base + HEAP, hole), Err(pf(hole, PfErrorCode::U)));
    assert_eq!(eacceptcopy(&mut h, &mut regs, e.tcs, e.base + HEAP, e.base + SRC), Err(sgx_pf(e.tcs, false)));
    leave(&mut h, &mut regs);
}

#[test]
fn eacceptcopy_secinfo_page_checks_are_pf() {
    for (name, prepare) in bad_operand_pages() {
        if name == "normal_memory" {
            continue; // a translation fault, covered by eacceptcopy_translation_faults
        }
        let (mut h, e) = setup();
        let dest = eaug(&mut h, &e, HEAP);
        let secinfo = prepare(&mut h, &e) + 0x40;
        let mut regs = enter(&mut h, &e);
        // The source is the data page here (RODATA may be the broken page).
        let result = eacceptcopy(&mut h, &mut regs, secinfo, e.base + HEAP, e.base + layout::DATA);
        assert_eq!(result, Err(sgx_pf(secinfo, false)), "case {name}");
        assert_eq!(flags_of(&h, dest), reg(R | W | PENDING), "case {name}");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn eacceptcopy_invalid_secinfo_is_gp() {
    let (mut h, e) = setup();
    let dest = eaug(&mut h, &e, HEAP);
    // A source that would fail step 3 (#PF): step 2 must fire first.
    let bad_src = e.tcs;
    let mut regs = enter(&mut h, &e);
    let mut cases: Vec<(String, [u8; 64])> = Vec::new();
    let flags_case = |name: &str, flags: u64| {
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&flags.to_le_bytes());
        (name.to_string(), bytes)
    };
    let rx = reg(R | X).bits();
    cases.push(flags_case("bit6", rx | 1 << 6));
    cases.push(flags_case("bit20", rx | 1 << 20));
    cases.push(flags_case("w_without_r", reg(W).bits()));
    cases.push(flags_case("wx_without_r", reg(W | X).bits()));
    cases.push(flags_case("pt_tcs", SecinfoFlags::from(PageType::Tcs).bits()));
    cases.push(flags_case("pt_trim", (R | W).with_page_type(PageType::Trim).bits()));
    cases.push(flags_case("pt_secs", (R | W).with_page_type(PageType::Secs).bits()));
    let mut reserved_byte = flags_case("reserved_byte", rx);
    reserved_byte.1[40] = 1;
    cases.push(reserved_byte);
    for (name, bytes) in cases {
        put_secinfo_raw(&h, &e, e.base + SI, &bytes);
        assert_eq!(
            eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + HEAP, e.base + SRC),
            Err(Exception::Gp),
            "case {name}"
        );
        assert_eq!(
            eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + HEAP, bad_src),
            Err(Exception::Gp),
            "case {name}, bad source"
        );
    }
    assert_eq!(flags_of(&h, dest), reg(R | W | PENDING));
    leave(&mut h, &mut regs);
}

#[test]
fn eacceptcopy_accepts_the_secinfo_sgx_emm_passes() {
    // sgx-emm's commit-with-data passes PT_REG | PENDING | permissions; EACCEPTCOPY reads
    // RWX and the page type only, so MODIFIED and PR are ignored as well (spec §1.7, §5.8).
    for (name, flags) in [
        ("sgx-emm: PENDING | RX", reg(R | X | PENDING)),
        ("PENDING | RW", reg(R | W | PENDING)),
        ("MODIFIED", reg(R | X | MODIFIED)),
        ("PR", reg(R | X | PR)),
        ("all state bits", reg(R | X | SecinfoFlags::STATE_MASK)),
    ] {
        let (mut h, e) = setup();
        let dest = eaug(&mut h, &e, HEAP);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, flags);
        assert_eq!(
            eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + HEAP, e.base + SRC),
            Ok(Status::Success),
            "{name}"
        );
        assert_eq!(flags_of(&h, dest), reg(flags.perms()), "{name}: RWX from SECINFO, PENDING cleared");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn eacceptcopy_source_checks_are_pf() {
    for (name, prepare) in bad_operand_pages() {
        if name == "normal_memory" {
            continue; // a translation fault, covered by eacceptcopy_translation_faults
        }
        let (mut h, e) = setup();
        let dest = eaug(&mut h, &e, HEAP);
        let src = prepare(&mut h, &e);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, reg(R | X));
        assert_eq!(
            eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + HEAP, src),
            Err(sgx_pf(src, false)),
            "case {name}"
        );
        // Step 3 precedes step 4: a non-pending destination still gives the source #PF.
        assert_eq!(
            eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + layout::DATA, src),
            Err(sgx_pf(src, false)),
            "case {name}, accepted destination"
        );
        assert_eq!(flags_of(&h, dest), reg(R | W | PENDING), "case {name}");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn eacceptcopy_destination_mismatches() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> u64;
    let cases: [(&str, Prepare); 6] = [
        ("not_pending", |_, e| e.base + layout::DATA),
        ("accepted_eaug", |h, e| {
            eaug_accepted(h, e, HEAP);
            e.base + HEAP
        }),
        ("modified_trim", |h, e| {
            let epc = eaug_accepted(h, e, HEAP);
            emodt(h, epc, PageType::Trim);
            e.base + HEAP
        }),
        ("tcs", |_, e| e.tcs),
        ("other_enclave", |h, e| {
            let other = other_enclave(h);
            let epc = eaug(h, &other, HEAP);
            h.map(e.base + HOLE, epc, true, false);
            e.base + HOLE
        }),
        ("wrong_address", |h, e| {
            let epc = eaug(h, e, HEAP);
            h.map(e.base + HOLE, epc, true, false);
            e.base + HOLE
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let dest = prepare(&mut h, &e);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, reg(R | X));
        regs.rflags = 0x202 | ARITH_FLAGS;
        let rip = regs.rip;
        let result = eacceptcopy(&mut h, &mut regs, e.base + SI, dest, e.base + SRC);
        assert_eq!(result, err(ErrorCode::PageAttributesMismatch), "case {name}");
        assert_eq!((regs.rax, regs.rflags, regs.rip), (19, 0x202 | RFLAGS_ZF, rip + 3), "case {name}");
        leave(&mut h, &mut regs);
    }
    // The data page was not overwritten by the refused copy.
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(R | X));
    let _ = eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + layout::DATA, e.base + SRC);
    let mut page = vec![0u8; PAGE_SIZE];
    h.cpu.read_epc(la_epc(&h, &e, e.base + layout::DATA), 0, &mut page);
    assert!(page[0x100..].iter().all(|&b| b == 0x11));
    leave(&mut h, &mut regs);
}

#[test]
fn eacceptcopy_copies_and_sets_permissions() {
    for (name, perms) in [("r", R), ("rx", R | X), ("rw", R | W), ("rwx", R | W | X), ("none", SecinfoFlags::empty())] {
        let (mut h, e) = setup();
        let dest = eaug(&mut h, &e, HEAP);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, reg(perms));
        regs.rflags = 0x202 | ARITH_FLAGS;
        let rip = regs.rip;
        assert_eq!(
            eacceptcopy(&mut h, &mut regs, e.base + SI, e.base + HEAP, e.base + SRC),
            Ok(Status::Success),
            "{name}"
        );
        assert_eq!((regs.rax, regs.rflags, regs.rip), (0, 0x202, rip + 3), "{name}");
        assert_eq!(flags_of(&h, dest), reg(perms), "case {name}: RWX from SECINFO, PENDING cleared");
        let mut page = vec![0u8; PAGE_SIZE];
        h.cpu.read_epc(h.cpu.epc_index(dest).unwrap(), 0, &mut page);
        assert_eq!(page, vec![0x22; PAGE_SIZE], "case {name}: 4 KiB copied");
        for (kind, bit) in [(AccessKind::Read, R), (AccessKind::Write, W), (AccessKind::Execute, X)] {
            if kind == AccessKind::Execute {
                h.map(e.base + HEAP, dest, true, true);
            }
            let access = h.cpu.check_access(&h.lp, &h.pt, e.base + HEAP + 8, kind);
            assert_eq!(access.is_ok(), perms.contains(bit), "case {name}: {kind:?}");
        }
        leave(&mut h, &mut regs);
        h.cpu.check_invariants().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// EMODPE

#[test]
fn emodpe_outside_enclave_is_gp() {
    let (mut h, e) = setup();
    put_secinfo(&h, &e, e.base + SI, reg(X));
    let mut regs = outside_regs();
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, e.base + layout::DATA), Err(Exception::Gp));
    assert_eq!(regs.rip, ENCLU_RIP);
    assert_eq!(flags_of(&h, e.pages[&(e.base + layout::DATA)]), reg(R | W));
}

#[test]
fn emodpe_alignment_and_elrange_are_gp() {
    let (mut h, e) = setup();
    let below = e.base - 0x1000;
    h.map(below, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(X));
    let data = e.base + layout::DATA;
    for (name, si, target) in [
        ("secinfo_misaligned", e.base + SI + 8, data),
        ("target_misaligned", e.base + SI, data + 0x40),
        ("secinfo_outside", below, data),
        ("target_outside", e.base + SI, below),
    ] {
        assert_eq!(emodpe(&mut h, &mut regs, si, target), Err(Exception::Gp), "case {name}");
    }
    assert_eq!(flags_of(&h, e.pages[&data]), reg(R | W));
    leave(&mut h, &mut regs);
}

#[test]
fn emodpe_translation_faults() {
    let (mut h, e) = setup();
    h.map(e.base + 0xA000, scratch::PAGE, true, false);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(X));
    let (hole, normal, data) = (e.base + HOLE, e.base + 0xA000, e.base + layout::DATA);
    for (name, si, target, expected) in [
        ("secinfo_not_present", hole, data, pf(hole, PfErrorCode::U)),
        ("target_not_present", e.base + SI, hole, pf(hole, PfErrorCode::U)),
        ("secinfo_normal_memory", normal, data, sgx_pf(normal, false)),
        ("target_normal_memory", e.base + SI, normal, sgx_pf(normal, false)),
        ("rbx_before_rcx", hole, normal, pf(hole, PfErrorCode::U)),
    ] {
        assert_eq!(emodpe(&mut h, &mut regs, si, target), Err(expected), "case {name}");
    }
    leave(&mut h, &mut regs);
}

#[test]
fn emodpe_step_1_order() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let hole = e.base + HOLE;
    // #GP for the target's alignment before the SECINFO's translation #PF.
    assert_eq!(emodpe(&mut h, &mut regs, hole, e.base + layout::DATA + 8), Err(Exception::Gp));
    // The target's translation before the SECINFO page's EPCM checks.
    assert_eq!(emodpe(&mut h, &mut regs, e.tcs, hole), Err(pf(hole, PfErrorCode::U)));
    assert_eq!(emodpe(&mut h, &mut regs, e.tcs, e.base + layout::DATA), Err(sgx_pf(e.tcs, false)));
    leave(&mut h, &mut regs);
}

#[test]
fn emodpe_secinfo_page_checks_are_pf() {
    for (name, prepare) in bad_operand_pages() {
        if name == "normal_memory" {
            continue; // a translation fault, covered by emodpe_translation_faults
        }
        let (mut h, e) = setup();
        let secinfo = prepare(&mut h, &e) + 0x40;
        let mut regs = enter(&mut h, &e);
        let data = e.base + layout::DATA;
        assert_eq!(emodpe(&mut h, &mut regs, secinfo, data), Err(sgx_pf(secinfo, false)), "case {name}");
        assert_eq!(flags_of(&h, e.pages[&data]), reg(R | W), "case {name}");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn emodpe_reserved_secinfo_bits_are_gp() {
    let (mut h, e) = setup();
    let pending = eaug(&mut h, &e, HEAP);
    let mut regs = enter(&mut h, &e);
    let x = reg(X).bits();
    let mut cases: Vec<(String, [u8; 64])> = Vec::new();
    for (name, flags) in [("bit6", x | 1 << 6), ("bit7", x | 1 << 7), ("bit16", x | 1 << 16), ("bit63", x | 1 << 63)] {
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&flags.to_le_bytes());
        cases.push((name.into(), bytes));
    }
    let mut bytes = [0u8; 64];
    bytes[..8].copy_from_slice(&x.to_le_bytes());
    bytes[63] = 1;
    cases.push(("reserved_byte".into(), bytes));
    let data = e.base + layout::DATA;
    for (name, bytes) in cases {
        put_secinfo_raw(&h, &e, e.base + SI, &bytes);
        assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, data), Err(Exception::Gp), "case {name}");
        // Step 2 precedes the target checks of step 3.
        assert_eq!(
            emodpe(&mut h, &mut regs, e.base + SI, e.base + HEAP),
            Err(Exception::Gp),
            "case {name}, pending target"
        );
    }
    assert_eq!(flags_of(&h, e.pages[&data]), reg(R | W));
    assert_eq!(flags_of(&h, pending), reg(R | W | PENDING));
    leave(&mut h, &mut regs);
}

#[test]
fn emodpe_accepts_the_secinfo_sgx_emm_passes() {
    // sgx-emm extends permissions with SECINFO.FLAGS = PT_REG << 8 | PR | new permissions, and
    // that works on hardware: EMODPE reads only R, W and X (spec §1.7, §5.9).
    for (name, flags) in [
        ("sgx-emm: PT_REG | PR | RWX", reg(R | W | X | PR)),
        ("PT_REG | PENDING | X", reg(X | PENDING)),
        ("PT_REG | MODIFIED | X", reg(X | MODIFIED)),
        ("all state bits, no page type", X | SecinfoFlags::STATE_MASK),
        ("PT_TCS | X", X.with_page_type(PageType::Tcs)),
    ] {
        let (mut h, e) = setup();
        let data = e.base + layout::DATA;
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, flags);
        assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, data), Ok(()), "{name}");
        assert_eq!(flags_of(&h, e.pages[&data]), reg(R | W | X), "{name}: RW extended by X, no state bits");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn emodpe_target_checks_are_pf() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> u64;
    let cases: [(&str, Prepare); 7] = [
        ("pending", |h, e| {
            eaug(h, e, HEAP);
            e.base + HEAP
        }),
        ("modified_trim", |h, e| {
            let epc = eaug_accepted(h, e, HEAP);
            emodt(h, epc, PageType::Trim);
            e.base + HEAP
        }),
        ("tcs", |_, e| e.tcs),
        ("blocked", |h, e| {
            eblock(h, e.pages[&(e.base + layout::RODATA)]);
            e.base + layout::RODATA
        }),
        ("other_enclave", |h, e| {
            let other = other_enclave(h);
            h.map(e.base + HOLE, other.pages[&(other.base + layout::DATA)], true, false);
            e.base + HOLE
        }),
        ("wrong_address", |h, e| {
            h.map(e.base + HOLE, e.pages[&(e.base + layout::RODATA)], true, false);
            e.base + HOLE
        }),
        ("invalid", |h, e| {
            let fresh = h.alloc_page();
            h.map(e.base + HOLE, fresh, true, false);
            e.base + HOLE
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let target = prepare(&mut h, &e);
        let mut regs = enter(&mut h, &e);
        put_secinfo(&h, &e, e.base + SI, reg(R | X));
        let rip = regs.rip;
        assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, target), Err(sgx_pf(target, false)), "case {name}");
        assert_eq!(regs.rip, rip, "case {name}");
        leave(&mut h, &mut regs);
    }
}

#[test]
fn emodpe_write_without_read_is_gp() {
    let (mut h, e) = setup();
    let code = e.base + layout::CODE;
    let epc = e.pages[&code];
    // Restrict the code page (RX) to execute-only (EPCM R=0); PR=1 does not matter to EMODPE.
    emodpr(&mut h, epc, X);
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(W));
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, code), Err(Exception::Gp));
    put_secinfo(&h, &e, e.base + SI, reg(W | X));
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, code), Err(Exception::Gp));
    assert_eq!(flags_of(&h, epc), reg(X | PR));
    // With R in the request, or R already in the EPCM, W is fine.
    put_secinfo(&h, &e, e.base + SI, reg(R | W));
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, code), Ok(()));
    assert_eq!(flags_of(&h, epc), reg(R | W | X | PR));
    leave(&mut h, &mut regs);
    let rodata = e.base + layout::RODATA;
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    put_secinfo(&h, &e, e.base + SI, reg(W));
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, rodata), Ok(()), "EPCM already has R");
    assert_eq!(flags_of(&h, e.pages[&rodata]), reg(R | W));
    leave(&mut h, &mut regs);
}

#[test]
fn emodpe_extends_permissions() {
    let (mut h, e) = setup();
    let data = e.base + layout::DATA;
    let rodata = e.base + layout::RODATA;
    h.map(data, e.pages[&data], true, true);
    h.map(rodata, e.pages[&rodata], true, false);
    let mut regs = enter(&mut h, &e);
    assert!(h.cpu.check_access(&h.lp, &h.pt, data, AccessKind::Execute).unwrap_err().is_sgx_pf());
    assert!(h.cpu.check_access(&h.lp, &h.pt, rodata, AccessKind::Write).unwrap_err().is_sgx_pf());
    // No ETRACK, no EACCEPT: extension takes effect at once.
    put_secinfo(&h, &e, e.base + SI, reg(X));
    regs.rflags = 0x202 | ARITH_FLAGS;
    let before = Regs { rax: Enclu::Emodpe as u64, rbx: e.base + SI, rcx: data, ..regs };
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, data), Ok(()));
    assert_eq!(regs, Regs { rip: before.rip + 3, ..before }, "no RAX or flags output");
    assert_eq!(flags_of(&h, e.pages[&data]), reg(R | W | X));
    assert!(h.cpu.check_access(&h.lp, &h.pt, data, AccessKind::Execute).is_ok());
    put_secinfo(&h, &e, e.base + SI, reg(W));
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, rodata), Ok(()));
    assert!(h.cpu.check_access(&h.lp, &h.pt, rodata, AccessKind::Write).is_ok());
    // Asking for less than the page has changes nothing.
    put_secinfo(&h, &e, e.base + SI, reg(SecinfoFlags::empty()));
    assert_eq!(emodpe(&mut h, &mut regs, e.base + SI, data), Ok(()));
    assert_eq!(flags_of(&h, e.pages[&data]), reg(R | W | X));
    // Through ENCLU.
    put_secinfo(&h, &e, e.base + SI, reg(X));
    regs.rax = Enclu::Emodpe as u64;
    regs.rbx = e.base + SI;
    regs.rcx = rodata;
    let rip = regs.rip;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!((regs.rax, regs.rip), (Enclu::Emodpe as u64, rip + 3));
    assert_eq!(flags_of(&h, e.pages[&rodata]), reg(R | W | X));
    leave(&mut h, &mut regs);
    h.cpu.check_invariants().unwrap();
}
