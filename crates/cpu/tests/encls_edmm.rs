//! SGX2 ENCLS leaves against spec §4.12–§4.14, and the SGX2 EPCM state machine end to end
//! (§2, §5.7–§5.9, §6.1, §7, §8). Every numbered check of the spec and the test(s) covering it:
//!
//! EAUG (§4.12) — table `eaug_operand_checks_in_order` runs each case and names it:
//! - 1 RBX not 32-aligned / RCX not 4K-aligned → #GP; RCX not in EPC → #PF(RCX)
//! - 2 SECS / LINADDR not 4K-aligned → #GP; SRCPGE ≠ 0 → #GP; SECINFO ≠ 0 → #GP (no shadow
//!   stacks on this part; the kernel passes SECINFO = 0, as `eaug_adds_a_zeroed_pending_rw_page` does)
//! - 3 SECS not in EPC → #PF(SECS); target VALID → #PF(RCX)
//! - 4 SECS invalid / not PT_SECS → #PF(SECS); LINADDR outside ELRANGE → #GP
//! - order between the steps: the "x before y" rows of the same table
//! - 3/4 target or SECS busy → #GP: `concurrency.rs` `leaves_meeting_an_ewb_in_progress`,
//!   `leaves_meeting_an_eldu_in_progress` (target), `leaves_meeting_an_ewb_of_the_secs` (SECS),
//!   all deterministic; `eaug_races_eaug_into_one_target`
//! - 4 enclave not initialized → #GP: `eaug_into_uninitialized_enclave_is_gp`
//! - 5 zeroed PENDING RW REG page at LINADDR, owned by SECS: `eaug_adds_a_zeroed_pending_rw_page`
//! - SGX1 part → #GP for every SGX2 leaf (direct and via `encls`/`enclu`):
//!   `sgx1_part_rejects_every_sgx2_leaf`
//!
//! EMODPR (§4.13)
//! - 1 RBX not 64-aligned / RCX not 4K-aligned → #GP, RCX not in EPC → #PF; 2 SECINFO reserved
//!   bits (FLAGS 7:6, 63:16) / bytes → #GP, W without R → #GP; 3 VALID = 0 → #PF;
//!   with their order: `emodpr_operand_checks_in_order` (table)
//! - 2 only RWX is read: the kernel's SECINFO (new RWX, page type 0) restricts
//!   (`emodpr_restricts_and_sets_pr`); PENDING/MODIFIED/PR and a page type are ignored:
//!   `emodpr_ignores_secinfo_state_bits_and_page_type`
//! - 3 busy with SGX1 leaves → #GP: `concurrency.rs` `leaves_meeting_an_ewb_in_progress`
//!   (deterministic); 4 busy with SGX2 leaves → SGX_EPC_PAGE_CONFLICT: lock races
//!   `emodt_races_emodpr_on_one_page`, `emodpr_races_emodpr_on_one_page` and the unit test
//!   `epcm::tests::an_exclusive_sgx2_holder_is_told_apart_from_an_sgx1_one`
//! - 5 PENDING → SGX_PAGE_NOT_MODIFIABLE (20): `emodpr_of_pending_page_is_not_modifiable`
//! - 5 MODIFIED (after EMODT to TCS or TRIM) → 20, before the type check:
//!   `emodpr_of_modified_page_is_not_modifiable`
//! - 6 PT ≠ REG (TCS, accepted TRIM, SECS, VA) → #PF: `emodpr_of_non_reg_page_is_pf`
//! - 5-before-6, the REMOVE_PAGES probe (trimmed-not-accepted → 20, trimmed-accepted → #PF):
//!   `trim_eaccept_eremove_with_the_remove_pages_probe`
//! - 7 owner not initialized → #GP (and 6 before 7): `emodpr_in_uninitialized_enclave`
//! - 8 PR := 1, RWX &= SECINFO, more permissions is a no-op: `emodpr_restricts_and_sets_pr`
//! - tracking: EACCEPT is SGX_NOT_TRACKED until ETRACK and re-entry:
//!   `emodpr_needs_etrack_before_eaccept`
//!
//! EMODT (§4.14)
//! - 1 alignment → #GP, not in EPC → #PF; 2 reserved SECINFO bits / bytes → #GP,
//!   PT ∉ {TCS, TRIM} → #GP; 3 VALID = 0 → #PF; with their order: `emodt_operand_checks_in_order`
//! - 2 only PT is read: the kernel's SECINFO (PT << 8 alone) in
//!   `emodt_allowed_transitions_set_modified_and_clear_rwx_and_pr`; RWX and PENDING/MODIFIED/PR
//!   are ignored: `emodt_ignores_secinfo_permissions_and_state_bits`
//! - 3 conflict → SGX_EPC_PAGE_CONFLICT: `concurrency.rs` `leaves_meeting_an_ewb_in_progress`
//!   (SGX1 holder, deterministic), `emodt_races_emodpr_on_one_page` (SGX2 holder)
//! - 4 SECS / VA / TRIM sources, TCS→TCS, TRIM→TCS → #PF: `emodt_disallowed_transitions_are_pf`
//! - 5 PENDING / MODIFIED → 20: `emodt_of_pending_or_modified_page_is_not_modifiable`
//! - 6 not initialized → #GP (and 4 before 6): `emodt_in_uninitialized_enclave`
//! - 7 MODIFIED := 1, RWX := 0, PR := 0, PT := new for REG→TCS, REG→TRIM, TCS→TRIM:
//!   `emodt_allowed_transitions_set_modified_and_clear_rwx_and_pr`
//!
//! End to end: `eaug_eaccept_emodpr_emodpe_state_machine` (EAUG → SGX #PF on access →
//! EACCEPT → RW → EMODPR(R) → ETRACK → IPI/re-entry → EACCEPT(PR) → write faults → EMODPE(W)),
//! `reg_to_tcs_via_emodt_then_eenter_on_the_new_tcs`, `trim_eaccept_eremove_with_the_remove_pages_probe`.

use sgxemu_arch::{Encls, Enclu, ErrorCode, PAGE_SIZE, PageType, Pageinfo, PfErrorCode, Secinfo, SecinfoFlags as F};
use sgxemu_cpu::regs::{ARITH_FLAGS, RFLAGS_CF, RFLAGS_ZF};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image, tcs_image};
use sgxemu_cpu::{AccessKind, AexEvent, EpcmView, Exception, LeafResult, Lp, Memory, PlatformConfig, Regs, Status};
use zerocopy::IntoBytes;

const AEP: u64 = 0x40_1000;
/// A page-aligned kernel address outside the EPC.
const NOT_EPC: u64 = 0x7000_8000;
/// Where enclave-side SECINFOs (EACCEPT, EMODPE) live: inside the RW data page.
const SECINFO_OFFSET: u64 = layout::DATA + 0xF00;

// ---------------------------------------------------------------------------------------------
// Helpers

fn pf(addr: u64, write: bool) -> Exception {
    Exception::epcm_pf(addr, write)
}

/// The #PF an enclave access gets from the EPCM (§6.1 step 3).
fn access_pf(la: u64, kind: AccessKind) -> Exception {
    Exception::Pf { addr: la, code: PfErrorCode::P | PfErrorCode::SGX | kind.pf_bits() }
}

fn view(h: &Harness, epc: u64) -> EpcmView {
    h.cpu.epcm_view(h.cpu.epc_index(epc).expect("EPC address"))
}

fn reg(perms: F) -> F {
    perms.with_page_type(PageType::Reg)
}

fn heap(e: &TestEnclave, i: u64) -> u64 {
    e.base + layout::HEAP + i * PAGE_SIZE as u64
}

fn setup() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    (h, e)
}

/// EAUG of a fresh EPC page at `la`, mapped RWX in the page table (the EPCM decides).
fn eaug(h: &mut Harness, e: &TestEnclave, la: u64) -> u64 {
    let page = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page).expect("EAUG");
    h.map(la, page, true, true);
    page
}

fn emodpr(h: &mut Harness, target: u64, flags: F) -> LeafResult {
    h.put_secinfo(flags);
    h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, target)
}

fn emodt(h: &mut Harness, target: u64, page_type: PageType) -> LeafResult {
    h.put_secinfo(F::from(page_type));
    h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, target)
}

/// A logical processor executing inside the enclave (the harness LP keeps running ENCLS).
struct Inside {
    lp: Lp,
    regs: Regs,
}

fn enter(h: &Harness, tcs: u64) -> Inside {
    let mut lp = h.cpu.new_lp();
    let mut regs = Regs { rax: Enclu::Eenter as u64, rbx: tcs, rcx: AEP, rip: 0x40_0000, ..Regs::default() };
    h.cpu.eenter(&mut lp, &mut regs, &h.pt).expect("EENTER");
    Inside { lp, regs }
}

fn exit(h: &Harness, mut inside: Inside) {
    inside.regs.rax = Enclu::Eexit as u64;
    inside.regs.rbx = 0x40_0003;
    h.cpu.eexit(&mut inside.lp, &mut inside.regs).expect("EEXIT");
}

/// The driver's IPI: AEX, then the untrusted runtime ERESUMEs (refreshing the entry epoch).
fn ipi_and_resume(h: &Harness, inside: &mut Inside) {
    h.cpu.aex(&mut inside.lp, &mut inside.regs, AexEvent::interrupt()).expect("in enclave mode");
    h.cpu.eresume(&mut inside.lp, &mut inside.regs, &h.pt).expect("ERESUME");
}

/// Writes SECINFO `flags` where the enclave keeps it (bypassing the EPCM, like an enclave store).
fn put_enclave_secinfo(h: &Harness, e: &TestEnclave, flags: F) -> u64 {
    let la = e.base + SECINFO_OFFSET;
    let epc = h.cpu.epc_index(e.pages[&(e.base + layout::DATA)]).unwrap();
    h.cpu.write_epc(epc, (SECINFO_OFFSET % PAGE_SIZE as u64) as usize, Secinfo::new(flags).as_bytes());
    la
}

fn eaccept(h: &Harness, e: &TestEnclave, inside: &mut Inside, la: u64, flags: F) -> LeafResult {
    inside.regs.rbx = put_enclave_secinfo(h, e, flags);
    inside.regs.rcx = la;
    h.cpu.eaccept(&mut inside.lp, &mut inside.regs, &h.pt)
}

fn emodpe(h: &Harness, e: &TestEnclave, inside: &mut Inside, la: u64, flags: F) -> Result<(), Exception> {
    inside.regs.rbx = put_enclave_secinfo(h, e, flags);
    inside.regs.rcx = la;
    h.cpu.emodpe(&mut inside.lp, &mut inside.regs, &h.pt)
}

fn access(h: &Harness, inside: &Inside, la: u64, kind: AccessKind) -> Result<(), Exception> {
    h.cpu.check_access(&inside.lp, &h.pt, la, kind).map(drop)
}

/// Asserts RAX and the flag convention of spec §3.2 after a code-returning ENCLS.
fn encls_code(h: &mut Harness, leaf: Encls, rbx: u64, rcx: u64) -> Result<(u64, bool, bool), Exception> {
    let mut regs = Regs { rax: leaf as u64, rbx, rcx, rflags: ARITH_FLAGS | 2, ..Regs::default() };
    h.cpu.encls(&mut h.lp, &mut regs, &mut h.mem)?;
    assert_eq!(regs.rflags & ARITH_FLAGS & !(RFLAGS_CF | RFLAGS_ZF), 0, "PF/AF/SF/OF cleared");
    Ok((regs.rax, regs.rflags & RFLAGS_ZF != 0, regs.rflags & RFLAGS_CF != 0))
}

/// An enclave that was created and had pages added but was never initialized.
fn uninitialized(h: &mut Harness) -> (u64, u64, u64) {
    let base = 0x20_0000_0000;
    let secs = h.ecreate(&secs_image(base, 1 << 20)).unwrap();
    let reg_page = h.eadd(secs, base + 0x1000, reg(F::R | F::W), &[0; PAGE_SIZE]).unwrap();
    let tcs_page = h.eadd(secs, base, F::from(PageType::Tcs), &tcs_image(0x1000, 1, 0, 0)).unwrap();
    (secs, reg_page, tcs_page)
}

// ---------------------------------------------------------------------------------------------
// EAUG

/// Name, PAGEINFO address, PAGEINFO, target, expected outcome.
type EaugCase = (&'static str, u64, Pageinfo, u64, Result<(), Exception>);

#[test]
fn eaug_operand_checks_in_order() {
    let (mut h, e) = setup();
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let target = h.alloc_page();
    let invalid = h.alloc_page();
    let rodata = e.pages[&(e.base + layout::RODATA)];
    let tcs = e.pages[&e.tcs];
    let la = heap(&e, 0);
    let good = Pageinfo { linaddr: la, srcpge: 0, secinfo: 0, secs: e.secs };
    let with = |f: &dyn Fn(&mut Pageinfo)| {
        let mut p = good;
        f(&mut p);
        p
    };
    let gp = Err(Exception::Gp);
    let pi = scratch::PAGEINFO;
    let cases: Vec<EaugCase> = vec![
        // Step 1.
        ("PAGEINFO not 32-aligned", pi + 16, good, target, gp),
        ("target not 4K-aligned", pi, good, target + 0x100, gp),
        ("target not in EPC", pi, good, NOT_EPC, Err(pf(NOT_EPC, true))),
        // Step 2.
        ("SECS not 4K-aligned", pi, with(&|p| p.secs += 8), target, gp),
        ("LINADDR not 4K-aligned", pi, with(&|p| p.linaddr += 0x10), target, gp),
        ("SRCPGE != 0", pi, with(&|p| p.srcpge = scratch::PAGE), target, gp),
        ("SECINFO != 0", pi, with(&|p| p.secinfo = scratch::SECINFO), target, gp),
        // Step 3.
        ("SECS not in EPC", pi, with(&|p| p.secs = NOT_EPC), target, Err(pf(NOT_EPC, false))),
        ("SECS = 0", pi, with(&|p| p.secs = 0), target, Err(pf(0, false))),
        ("target valid", pi, good, rodata, Err(pf(rodata, true))),
        // Step 4.
        ("SECS page invalid", pi, with(&|p| p.secs = invalid), target, Err(pf(invalid, false))),
        ("SECS operand is a REG page", pi, with(&|p| p.secs = rodata), target, Err(pf(rodata, false))),
        ("SECS operand is a TCS page", pi, with(&|p| p.secs = tcs), target, Err(pf(tcs, false))),
        ("SECS operand is a VA page", pi, with(&|p| p.secs = va), target, Err(pf(va, false))),
        ("LINADDR below ELRANGE", pi, with(&|p| p.linaddr = e.base - 0x1000), target, gp),
        ("LINADDR at BASEADDR + SIZE", pi, with(&|p| p.linaddr = e.base + e.size), target, gp),
        ("LINADDR far outside", pi, with(&|p| p.linaddr = 0x7000_0000), target, gp),
        // Order.
        (
            "1 before 2: target outside EPC, SECS misaligned",
            pi,
            with(&|p| p.secs += 8),
            NOT_EPC,
            Err(pf(NOT_EPC, true)),
        ),
        (
            "2 before 3: SRCPGE != 0, SECS outside EPC",
            pi,
            with(&|p| {
                p.srcpge = 0x1000;
                p.secs = NOT_EPC
            }),
            target,
            gp,
        ),
        ("3: SECS outside EPC before target valid", pi, with(&|p| p.secs = NOT_EPC), rodata, Err(pf(NOT_EPC, false))),
        ("3 before 4: target valid, SECS not a SECS", pi, with(&|p| p.secs = invalid), rodata, Err(pf(rodata, true))),
        (
            "4: SECS invalid before ELRANGE",
            pi,
            with(&|p| {
                p.secs = invalid;
                p.linaddr = 0
            }),
            target,
            Err(pf(invalid, false)),
        ),
    ];
    for (name, at, pageinfo, target_op, expect) in cases {
        h.mem.write(at, pageinfo.as_bytes()).unwrap();
        assert_eq!(h.cpu.eaug(&mut h.lp, &mut h.mem, at, target_op), expect, "case: {name}");
        assert!(!view(&h, target).valid, "case {name}: target still invalid");
        assert_eq!(view(&h, rodata).flags, reg(F::R), "case {name}: valid page untouched");
    }
    h.cpu.check_invariants().unwrap();
    h.mem.write(pi, good.as_bytes()).unwrap();
    assert_eq!(h.cpu.eaug(&mut h.lp, &mut h.mem, pi, target), Ok(()));
}

#[test]
fn eaug_into_uninitialized_enclave_is_gp() {
    let mut h = Harness::new();
    let (secs, _, _) = uninitialized(&mut h);
    let target = h.alloc_page();
    for la in [0x20_0000_2000, 0x20_0000_0000 - 0x1000] {
        h.put_pageinfo(la, 0, 0, secs);
        assert_eq!(h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target), Err(Exception::Gp));
        assert!(!view(&h, target).valid);
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eaug_adds_a_zeroed_pending_rw_page() {
    let (mut h, e) = setup();
    let eid = view(&h, e.secs).eid;
    let secs_index = h.cpu.epc_index(e.secs);
    for la in [heap(&e, 0), e.base + e.size - 0x1000] {
        let target = h.alloc_page();
        h.cpu.write_epc(h.cpu.epc_index(target).unwrap(), 0, &[0xCD; PAGE_SIZE]);
        let mut regs = Regs {
            rax: Encls::Eaug as u64,
            rbx: scratch::PAGEINFO,
            rcx: target,
            rflags: RFLAGS_ZF | 2,
            ..Regs::default()
        };
        h.put_pageinfo(la, 0, 0, e.secs);
        h.cpu.encls(&mut h.lp, &mut regs, &mut h.mem).unwrap();
        assert_eq!((regs.rax, regs.rflags), (Encls::Eaug as u64, RFLAGS_ZF | 2), "RAX and flags unaffected");
        assert_eq!(
            view(&h, target),
            EpcmView {
                valid: true,
                page_type: PageType::Reg,
                flags: reg(F::R | F::W | F::PENDING),
                blocked: false,
                enclave_address: la,
                eid,
                secs: secs_index,
            }
        );
        let mut bytes = vec![0xFFu8; PAGE_SIZE];
        h.cpu.read_epc(h.cpu.epc_index(target).unwrap(), 0, &mut bytes);
        assert_eq!(bytes, vec![0u8; PAGE_SIZE], "zeroed");
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn sgx1_part_rejects_every_sgx2_leaf() {
    let mut h = Harness::with_config(PlatformConfig { sgx2: false, ..PlatformConfig::default() });
    assert_eq!(h.cpu.config().cpuid_leaf12(0)[0] & 0x3, 0x1, "SGX2 not enumerated");
    let e = TestEnclave::build(&mut h);
    let data = e.pages[&(e.base + layout::DATA)];
    let before = view(&h, data);
    let target = h.alloc_page();
    // ENCLS, called directly…
    h.put_pageinfo(heap(&e, 0), 0, 0, e.secs);
    assert_eq!(h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target), Err(Exception::Gp));
    assert_eq!(emodpr(&mut h, data, F::R), Err(Exception::Gp));
    assert_eq!(emodt(&mut h, data, PageType::Trim), Err(Exception::Gp));
    // …and through the instruction decoder, registers untouched.
    for (leaf, rbx, rcx) in [
        (Encls::Eaug, scratch::PAGEINFO, target),
        (Encls::Emodpr, scratch::SECINFO, data),
        (Encls::Emodt, scratch::SECINFO, data),
    ] {
        let mut regs = Regs { rax: leaf as u64, rbx, rcx, rip: 0x1000, ..Regs::default() };
        let copy = regs;
        assert_eq!(h.cpu.encls(&mut h.lp, &mut regs, &mut h.mem), Err(Exception::Gp), "{leaf:?}");
        assert_eq!(regs, copy);
    }
    assert!(!view(&h, target).valid);
    assert_eq!(view(&h, data), before);
    // ENCLU leaves inside the enclave.
    let mut inside = enter(&h, e.tcs);
    let la = e.base + layout::DATA;
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Err(Exception::Gp));
    assert_eq!(emodpe(&h, &e, &mut inside, la, reg(F::X)), Err(Exception::Gp));
    inside.regs.rdx = e.base + layout::RODATA;
    assert_eq!(h.cpu.eacceptcopy(&mut inside.lp, &mut inside.regs, &h.pt), Err(Exception::Gp));
    for leaf in [Enclu::Eaccept, Enclu::Emodpe, Enclu::Eacceptcopy] {
        inside.regs.rax = leaf as u64;
        let copy = inside.regs;
        assert_eq!(h.cpu.enclu(&mut inside.lp, &mut inside.regs, &h.pt), Err(Exception::Gp), "{leaf:?}");
        assert_eq!(inside.regs, copy);
    }
    assert_eq!(view(&h, data), before);
    exit(&h, inside);
    // SGX1 leaves still work on this part.
    assert_eq!(h.cpu.eblock(&mut h.lp, data), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EMODPR

#[test]
fn emodpr_operand_checks_in_order() {
    let (mut h, e) = setup();
    let data = e.pages[&(e.base + layout::DATA)];
    let invalid = h.alloc_page();
    let before = view(&h, data);
    let si = scratch::SECINFO;
    let secinfo = |flags: u64| {
        let mut s = Secinfo::new(F::empty());
        s.flags = flags;
        s
    };
    let with_byte = |i: usize| {
        let mut s = Secinfo::new(F::R);
        s.reserved[i - 8] = 1;
        s
    };
    let gp = Err(Exception::Gp);
    let r = F::R.bits();
    let cases: Vec<(&str, u64, Secinfo, u64, LeafResult)> = vec![
        // Step 1.
        ("SECINFO not 64-aligned", si + 0x20, secinfo(r), data, gp),
        ("target not 4K-aligned", si, secinfo(r), data + 8, gp),
        ("target not in EPC", si, secinfo(r), NOT_EPC, Err(pf(NOT_EPC, false))),
        // Step 2.
        ("flags bit 6", si, secinfo(r | 1 << 6), data, gp),
        ("flags bit 7", si, secinfo(r | 1 << 7), data, gp),
        ("flags bit 16", si, secinfo(r | 1 << 16), data, gp),
        ("flags bit 63", si, secinfo(r | 1 << 63), data, gp),
        ("reserved byte 8", si, with_byte(8), data, gp),
        ("reserved byte 63", si, with_byte(63), data, gp),
        ("W without R", si, secinfo(F::W.bits()), data, gp),
        ("W|X without R", si, secinfo((F::W | F::X).bits()), data, gp),
        // Step 3.
        ("target invalid", si, secinfo(r), invalid, Err(pf(invalid, false))),
        // Order.
        ("1: SECINFO alignment before target EPC", si + 8, secinfo(r), NOT_EPC, gp),
        ("1 before 2: target outside EPC, reserved bits", si, secinfo(r | 1 << 6), NOT_EPC, Err(pf(NOT_EPC, false))),
        ("2 before 3: reserved bits on an invalid page", si, secinfo(r | 1 << 6), invalid, gp),
        ("2 before 3: W without R on an invalid page", si, secinfo(F::W.bits()), invalid, gp),
    ];
    for (name, at, s, target, expect) in cases {
        h.mem.write(at, s.as_bytes()).unwrap();
        assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, at, target), expect, "case: {name}");
        assert_eq!(view(&h, data), before, "case {name}: no state change");
        assert!(!view(&h, invalid).valid);
    }
}

#[test]
fn emodpr_of_pending_page_is_not_modifiable() {
    let (mut h, e) = setup();
    let page = eaug(&mut h, &e, heap(&e, 0));
    assert_eq!(emodpr(&mut h, page, F::R), Ok(Status::Error(ErrorCode::PageNotModifiable)));
    h.put_secinfo(F::R);
    assert_eq!(encls_code(&mut h, Encls::Emodpr, scratch::SECINFO, page), Ok((20, true, false)));
    assert_eq!(view(&h, page).flags, reg(F::R | F::W | F::PENDING), "unchanged");
}

#[test]
fn emodpr_of_modified_page_is_not_modifiable() {
    let (mut h, e) = setup();
    let to_tcs = e.pages[&(e.base + layout::DATA)];
    let to_trim = e.pages[&(e.base + layout::RODATA)];
    assert_eq!(emodt(&mut h, to_tcs, PageType::Tcs), Ok(Status::Success));
    assert_eq!(emodt(&mut h, to_trim, PageType::Trim), Ok(Status::Success));
    for (page, pt) in [(to_tcs, PageType::Tcs), (to_trim, PageType::Trim)] {
        // MODIFIED is checked before the page type (which is no longer REG).
        assert_eq!(emodpr(&mut h, page, F::R | F::W | F::X), Ok(Status::Error(ErrorCode::PageNotModifiable)));
        assert_eq!(view(&h, page).flags, F::MODIFIED.with_page_type(pt));
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn emodpr_of_non_reg_page_is_pf() {
    let (mut h, e) = setup();
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    // An accepted TRIM page.
    let la = heap(&e, 0);
    let trim = eaug(&mut h, &e, la);
    let mut inside = enter(&h, e.tcs);
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Ok(Status::Success));
    exit(&h, inside);
    assert_eq!(emodt(&mut h, trim, PageType::Trim), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    let mut inside = enter(&h, e.tcs);
    assert_eq!(eaccept(&h, &e, &mut inside, la, F::MODIFIED.with_page_type(PageType::Trim)), Ok(Status::Success));
    exit(&h, inside);
    for page in [e.pages[&e.tcs], trim, e.secs, va] {
        let before = view(&h, page);
        assert_eq!(emodpr(&mut h, page, F::R), Err(pf(page, false)), "{:?}", before.page_type);
        assert_eq!(view(&h, page), before);
    }
}

#[test]
fn emodpr_in_uninitialized_enclave() {
    let mut h = Harness::new();
    let (_, reg_page, tcs_page) = uninitialized(&mut h);
    assert_eq!(emodpr(&mut h, reg_page, F::R), Err(Exception::Gp));
    assert_eq!(view(&h, reg_page).flags, reg(F::R | F::W));
    assert_eq!(emodpr(&mut h, tcs_page, F::R), Err(pf(tcs_page, false)), "type (6) before INIT (7)");
}

#[test]
fn emodpr_restricts_and_sets_pr() {
    let (mut h, e) = setup();
    let page = |la: u64| e.pages[&(e.base + la)];
    let cases = [
        ("RW → R", page(layout::DATA), F::R, reg(F::R | F::PR)),
        ("R → RWX is a no-op on RWX", page(layout::RODATA), F::R | F::W | F::X, reg(F::R | F::PR)),
        ("RX → RW drops X, adds no W", page(layout::CODE), F::R | F::W, reg(F::R | F::PR)),
        ("RW → none", page(layout::SSA + 0x1000), F::empty(), reg(F::PR)),
        ("RW → RW keeps RW, still PR", page(layout::SSA), F::R | F::W, reg(F::R | F::W | F::PR)),
    ];
    for (name, target, request, expect) in cases {
        let before = view(&h, target);
        h.put_secinfo(request);
        assert_eq!(encls_code(&mut h, Encls::Emodpr, scratch::SECINFO, target), Ok((0, false, false)), "{name}");
        assert_eq!(view(&h, target), EpcmView { flags: expect, ..before }, "{name}");
    }
    // EMODPR of a page already in PR state restricts further.
    assert_eq!(emodpr(&mut h, page(layout::SSA), F::R), Ok(Status::Success));
    assert_eq!(view(&h, page(layout::SSA)).flags, reg(F::R | F::PR));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn emodpr_ignores_secinfo_state_bits_and_page_type() {
    // EMODPR reads only R, W and X (spec §1.7, §4.13): PENDING/MODIFIED/PR are defined
    // fields, not reserved ones, and the page type is not checked.
    let requests = [
        ("PENDING", F::R | F::PENDING),
        ("MODIFIED", F::R | F::MODIFIED),
        ("PR", F::R | F::PR),
        ("all state bits, PT_REG", reg(F::R | F::STATE_MASK)),
        ("PT_TCS", F::R.with_page_type(PageType::Tcs)),
    ];
    for (name, request) in requests {
        let (mut h, e) = setup();
        let data = e.pages[&(e.base + layout::DATA)];
        let before = view(&h, data);
        assert_eq!(emodpr(&mut h, data, request), Ok(Status::Success), "{name}");
        assert_eq!(view(&h, data), EpcmView { flags: reg(F::R | F::PR), ..before }, "{name}: RW → R, PR");
    }
}

#[test]
fn emodpr_needs_etrack_before_eaccept() {
    let (mut h, e) = setup();
    let la = heap(&e, 0);
    let page = eaug(&mut h, &e, la);
    let mut inside = enter(&h, e.tcs);
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Ok(Status::Success));
    assert_eq!(emodpr(&mut h, page, F::R), Ok(Status::Success));
    let accept_pr = reg(F::R | F::PR);
    assert_eq!(eaccept(&h, &e, &mut inside, la, accept_pr), Ok(Status::Error(ErrorCode::NotTracked)), "no ETRACK");
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    assert_eq!(
        eaccept(&h, &e, &mut inside, la, accept_pr),
        Ok(Status::Error(ErrorCode::NotTracked)),
        "the caller itself entered before the ETRACK"
    );
    assert_eq!(view(&h, page).flags, accept_pr);
    ipi_and_resume(&h, &mut inside);
    assert_eq!(eaccept(&h, &e, &mut inside, la, accept_pr), Ok(Status::Success));
    assert_eq!(view(&h, page).flags, reg(F::R));
    exit(&h, inside);
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EMODT

#[test]
fn emodt_operand_checks_in_order() {
    let (mut h, e) = setup();
    let data = e.pages[&(e.base + layout::DATA)];
    let invalid = h.alloc_page();
    let before = view(&h, data);
    let si = scratch::SECINFO;
    let trim = F::from(PageType::Trim).bits();
    let secinfo = |flags: u64| {
        let mut s = Secinfo::new(F::empty());
        s.flags = flags;
        s
    };
    let pt = |t: u64| secinfo(t << 8);
    let mut byte = secinfo(trim);
    byte.reserved[20] = 0x80;
    let gp = Err(Exception::Gp);
    let cases: Vec<(&str, u64, Secinfo, u64, LeafResult)> = vec![
        // Step 1.
        ("SECINFO not 64-aligned", si + 0x10, secinfo(trim), data, gp),
        ("target not 4K-aligned", si, secinfo(trim), data + 0x10, gp),
        ("target not in EPC", si, secinfo(trim), NOT_EPC, Err(pf(NOT_EPC, false))),
        // Step 2.
        ("PT_SECS", si, pt(0), data, gp),
        ("PT_REG", si, pt(2), data, gp),
        ("PT_VA", si, pt(3), data, gp),
        ("PT 5", si, pt(5), data, gp),
        ("PT 6", si, pt(6), data, gp),
        ("PT 7", si, pt(7), data, gp),
        ("PT 0xFF", si, pt(0xFF), data, gp),
        ("flags bit 7", si, secinfo(trim | 1 << 7), data, gp),
        ("flags bit 40", si, secinfo(trim | 1 << 40), data, gp),
        ("reserved byte", si, byte, data, gp),
        // Step 3.
        ("target invalid", si, secinfo(trim), invalid, Err(pf(invalid, false))),
        // Order.
        ("1 before 2: target outside EPC, PT_REG", si, pt(2), NOT_EPC, Err(pf(NOT_EPC, false))),
        ("2 before 3: PT_REG on an invalid page", si, pt(2), invalid, gp),
    ];
    for (name, at, s, target, expect) in cases {
        h.mem.write(at, s.as_bytes()).unwrap();
        assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, at, target), expect, "case: {name}");
        assert_eq!(view(&h, data), before, "case {name}: no state change");
        assert!(!view(&h, invalid).valid);
    }
}

#[test]
fn emodt_disallowed_transitions_are_pf() {
    let (mut h, e) = setup();
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    // An accepted TRIM page.
    let la = heap(&e, 0);
    let trim = eaug(&mut h, &e, la);
    let mut inside = enter(&h, e.tcs);
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Ok(Status::Success));
    assert_eq!(emodt(&mut h, trim, PageType::Trim), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    ipi_and_resume(&h, &mut inside);
    assert_eq!(eaccept(&h, &e, &mut inside, la, F::MODIFIED.with_page_type(PageType::Trim)), Ok(Status::Success));
    exit(&h, inside);
    let tcs = e.pages[&e.tcs];
    let cases = [
        ("SECS → TRIM", e.secs, PageType::Trim),
        ("SECS → TCS", e.secs, PageType::Tcs),
        ("VA → TRIM", va, PageType::Trim),
        ("TRIM → TRIM", trim, PageType::Trim),
        ("TRIM → TCS", trim, PageType::Tcs),
        ("TCS → TCS", tcs, PageType::Tcs),
    ];
    for (name, page, to) in cases {
        let before = view(&h, page);
        assert_eq!(emodt(&mut h, page, to), Err(pf(page, false)), "{name}");
        assert_eq!(view(&h, page), before, "{name}");
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn emodt_of_pending_or_modified_page_is_not_modifiable() {
    let (mut h, e) = setup();
    let pending = eaug(&mut h, &e, heap(&e, 0));
    for to in [PageType::Tcs, PageType::Trim] {
        assert_eq!(emodt(&mut h, pending, to), Ok(Status::Error(ErrorCode::PageNotModifiable)));
    }
    h.put_secinfo(F::from(PageType::Trim));
    assert_eq!(encls_code(&mut h, Encls::Emodt, scratch::SECINFO, pending), Ok((20, true, false)));
    assert_eq!(view(&h, pending).flags, reg(F::R | F::W | F::PENDING));
    // A REG page turned TCS, not yet accepted: TCS → TRIM is allowed by type, refused as MODIFIED.
    let data = e.pages[&(e.base + layout::DATA)];
    assert_eq!(emodt(&mut h, data, PageType::Tcs), Ok(Status::Success));
    assert_eq!(emodt(&mut h, data, PageType::Trim), Ok(Status::Error(ErrorCode::PageNotModifiable)));
    assert_eq!(view(&h, data).flags, F::MODIFIED.with_page_type(PageType::Tcs));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn emodt_in_uninitialized_enclave() {
    let mut h = Harness::new();
    let (_, reg_page, tcs_page) = uninitialized(&mut h);
    assert_eq!(emodt(&mut h, reg_page, PageType::Trim), Err(Exception::Gp));
    assert_eq!(emodt(&mut h, reg_page, PageType::Tcs), Err(Exception::Gp));
    assert_eq!(emodt(&mut h, tcs_page, PageType::Trim), Err(Exception::Gp));
    assert_eq!(emodt(&mut h, tcs_page, PageType::Tcs), Err(pf(tcs_page, false)), "type (4) before INIT (6)");
    assert_eq!(view(&h, reg_page).flags, reg(F::R | F::W));
    assert_eq!(view(&h, tcs_page).flags, F::from(PageType::Tcs));
}

#[test]
fn emodt_allowed_transitions_set_modified_and_clear_rwx_and_pr() {
    let mut h = Harness::new();
    let e = TestEnclave::build_with_threads(&mut h, secs_image(0x10_0000_0000, 1 << 20), 2);
    let page = |la: u64| e.pages[&(e.base + la)];
    // A PR page (EMODPR first) loses PR.
    assert_eq!(emodpr(&mut h, page(layout::CODE), F::R), Ok(Status::Success));
    let second_tcs = e.pages[&e.threads[1]];
    let cases = [
        ("REG → TCS", page(layout::DATA), PageType::Tcs),
        ("REG → TRIM", page(layout::RODATA), PageType::Trim),
        ("REG (PR) → TRIM", page(layout::CODE), PageType::Trim),
        ("TCS → TRIM", second_tcs, PageType::Trim),
    ];
    for (name, target, to) in cases {
        let before = view(&h, target);
        h.put_secinfo(F::from(to));
        assert_eq!(encls_code(&mut h, Encls::Emodt, scratch::SECINFO, target), Ok((0, false, false)), "{name}");
        let expect = EpcmView { page_type: to, flags: F::MODIFIED.with_page_type(to), ..before };
        assert_eq!(view(&h, target), expect, "{name}");
    }
    // SECINFO's RWX bits are not reserved for EMODT; they are ignored.
    let ssa = page(layout::SSA + 0x1000);
    h.put_secinfo((F::R | F::W | F::X).with_page_type(PageType::Trim));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, ssa), Ok(Status::Success));
    assert_eq!(view(&h, ssa).flags, F::MODIFIED.with_page_type(PageType::Trim));
    // Modified pages are no longer usable: the new TCS cannot be entered, data faults.
    let mut regs = Regs::default();
    assert_eq!(h.eenter(&mut regs, e.threads[1], AEP), Err(Exception::epcm_pf_user(e.threads[1], true)));
    let inside = enter(&h, e.tcs);
    let la = e.base + layout::RODATA;
    assert_eq!(access(&h, &inside, la, AccessKind::Read), Err(access_pf(la, AccessKind::Read)));
    exit(&h, inside);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn emodt_ignores_secinfo_permissions_and_state_bits() {
    // EMODT reads only the page type (spec §1.7, §4.14).
    for to in [PageType::Trim, PageType::Tcs] {
        for (name, extra) in [("PENDING", F::PENDING), ("MODIFIED", F::MODIFIED), ("PR", F::PR), ("RWX|all", F::all())]
        {
            let (mut h, e) = setup();
            let data = e.pages[&(e.base + layout::DATA)];
            let before = view(&h, data);
            h.put_secinfo(extra.with_page_type(to));
            assert_eq!(
                h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, data),
                Ok(Status::Success),
                "{to:?} {name}"
            );
            let expect = EpcmView { page_type: to, flags: F::MODIFIED.with_page_type(to), ..before };
            assert_eq!(view(&h, data), expect, "{to:?} {name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The SGX2 state machine end to end

#[test]
fn eaug_eaccept_emodpr_emodpe_state_machine() {
    let (mut h, e) = setup();
    let la = heap(&e, 0);
    let page = eaug(&mut h, &e, la);
    let mut inside = enter(&h, e.tcs);
    let (r, w, x) = (AccessKind::Read, AccessKind::Write, AccessKind::Execute);
    // PENDING: every access faults with the SGX bit.
    for kind in [r, w, x] {
        assert_eq!(access(&h, &inside, la + 0x40, kind), Err(access_pf(la + 0x40, kind)), "{kind:?}");
    }
    // EACCEPT: RW, not X.
    let mismatch = Ok(Status::Error(ErrorCode::PageAttributesMismatch));
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::X | F::PENDING)), mismatch);
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Ok(Status::Success));
    assert_eq!(view(&h, page).flags, reg(F::R | F::W));
    assert_eq!(access(&h, &inside, la, r), Ok(()));
    assert_eq!(access(&h, &inside, la, w), Ok(()));
    assert_eq!(access(&h, &inside, la, x), Err(access_pf(la, x)));
    // EMODPR(R): writes fault at once; EACCEPT needs ETRACK and the IPI.
    assert_eq!(emodpr(&mut h, page, F::R), Ok(Status::Success));
    assert_eq!(access(&h, &inside, la, w), Err(access_pf(la, w)));
    assert_eq!(access(&h, &inside, la, r), Ok(()), "PR itself does not block reads");
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::PR)), Ok(Status::Error(ErrorCode::NotTracked)));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    ipi_and_resume(&h, &mut inside);
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::PR)), Ok(Status::Success));
    assert_eq!(view(&h, page).flags, reg(F::R));
    assert_eq!(access(&h, &inside, la, w), Err(access_pf(la, w)));
    // EMODPE(W), then EMODPE(X): the enclave extends its own permissions, no tracking.
    assert_eq!(emodpe(&h, &e, &mut inside, la, F::W), Ok(()));
    assert_eq!(view(&h, page).flags, reg(F::R | F::W));
    assert_eq!(access(&h, &inside, la, w), Ok(()));
    assert_eq!(emodpe(&h, &e, &mut inside, la, F::X), Ok(()));
    assert_eq!(access(&h, &inside, la, x), Ok(()));
    // Restrict again and extend before accepting: EACCEPT compares the current RWX.
    assert_eq!(emodpr(&mut h, page, F::R), Ok(Status::Success));
    assert_eq!(emodpe(&h, &e, &mut inside, la, F::W), Ok(()));
    assert_eq!(view(&h, page).flags, reg(F::R | F::W | F::PR));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    ipi_and_resume(&h, &mut inside);
    assert_eq!(
        eaccept(&h, &e, &mut inside, la, reg(F::R | F::PR)),
        Ok(Status::Error(ErrorCode::PageAttributesMismatch))
    );
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PR)), Ok(Status::Success));
    assert_eq!(view(&h, page).flags, reg(F::R | F::W));
    exit(&h, inside);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn reg_to_tcs_via_emodt_then_eenter_on_the_new_tcs() {
    let (mut h, e) = setup();
    let (tcs_la, ssa_la) = (heap(&e, 0), heap(&e, 1));
    let tcs_page = eaug(&mut h, &e, tcs_la);
    eaug(&mut h, &e, ssa_la);
    let mut inside = enter(&h, e.tcs);
    for la in [tcs_la, ssa_la] {
        assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Ok(Status::Success));
    }
    // The enclave writes a TCS image into the accepted page.
    assert!(access(&h, &inside, tcs_la, AccessKind::Write).is_ok());
    let image = tcs_image(ssa_la - e.base, 1, layout::CODE, layout::DATA);
    h.cpu.write_epc(h.cpu.epc_index(tcs_page).unwrap(), 0, &image);
    exit(&h, inside);
    assert_eq!(emodt(&mut h, tcs_page, PageType::Tcs), Ok(Status::Success));
    let mut regs = Regs::default();
    assert_eq!(h.eenter(&mut regs, tcs_la, AEP), Err(Exception::epcm_pf_user(tcs_la, true)), "not yet accepted");
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    let mut inside = enter(&h, e.tcs);
    assert_eq!(eaccept(&h, &e, &mut inside, tcs_la, F::MODIFIED.with_page_type(PageType::Tcs)), Ok(Status::Success));
    assert_eq!(view(&h, tcs_page).flags, F::from(PageType::Tcs));
    assert_eq!(access(&h, &inside, tcs_la, AccessKind::Read), Err(access_pf(tcs_la, AccessKind::Read)));
    // Two threads now: one inside on the old TCS, one entering on the new.
    let mut regs = Regs { rip: 0x40_0000, ..Regs::default() };
    h.eenter(&mut regs, tcs_la, AEP).expect("EENTER on the new TCS");
    assert_eq!((regs.rip, regs.rax, regs.fsbase), (e.base + layout::CODE, 0, e.base + layout::DATA));
    assert_eq!(h.lp.tcs(), Some(tcs_la));
    h.eexit(&mut regs, 0).unwrap();
    exit(&h, inside);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn trim_eaccept_eremove_with_the_remove_pages_probe() {
    let (mut h, e) = setup();
    let la = heap(&e, 0);
    let page = eaug(&mut h, &e, la);
    // A thread stays inside for the whole flow.
    let mut inside = enter(&h, e.tcs);
    assert_eq!(eaccept(&h, &e, &mut inside, la, reg(F::R | F::W | F::PENDING)), Ok(Status::Success));
    assert_eq!(emodt(&mut h, page, PageType::Trim), Ok(Status::Success));
    assert_eq!(access(&h, &inside, la, AccessKind::Read), Err(access_pf(la, AccessKind::Read)));
    // Probe before EACCEPT: SGX_PAGE_NOT_MODIFIABLE → the driver refuses (-EPERM).
    let rwx = F::R | F::W | F::X;
    assert_eq!(emodpr(&mut h, page, rwx), Ok(Status::Error(ErrorCode::PageNotModifiable)));
    assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Error(ErrorCode::EnclaveAct)), "unaccepted trim");
    let trim = F::MODIFIED.with_page_type(PageType::Trim);
    assert_eq!(eaccept(&h, &e, &mut inside, la, trim), Ok(Status::Error(ErrorCode::NotTracked)));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    ipi_and_resume(&h, &mut inside);
    assert_eq!(eaccept(&h, &e, &mut inside, la, trim), Ok(Status::Success));
    assert_eq!(view(&h, page).flags, F::from(PageType::Trim));
    // Probe after EACCEPT: #PF → the driver EREMOVEs, with the thread still inside.
    assert_eq!(emodpr(&mut h, page, rwx), Err(pf(page, false)));
    assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Success));
    assert!(!view(&h, page).valid);
    assert!(inside.lp.in_enclave());
    exit(&h, inside);
    h.cpu.check_invariants().unwrap();
}
