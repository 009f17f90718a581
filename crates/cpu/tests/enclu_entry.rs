//! EENTER, ERESUME, EEXIT and the asynchronous enclave exit (spec §5 preamble, §5.1–§5.4).
//!
//! Coverage, check by check (spec numbering; every check runs in its own test or as a named
//! case of a table-driven test that reports the failing case):
//!
//! **EENTER (§5.1)**
//! * 1 (32-bit segment checks): not applicable — the model emulates 64-bit user mode only
//!   (spec "Scope decisions"); a non-64-bit LP is rejected by check 8
//!   (`eenter_cpu_mode_mismatch_is_gp`).
//! * 2 TCS not 4K aligned → #GP: `eenter_misaligned_tcs_is_gp`; TCS not in EPC → #PF(RBX):
//!   `eenter_unmapped_tcs_is_ordinary_pf` (PTE not present: ordinary #PF, no SGX bit),
//!   `eenter_tcs_behind_read_only_pte_is_ordinary_pf`, `eenter_tcs_in_normal_memory_is_sgx_pf`
//!   (SGX bit); AEP non-canonical → #GP: `eenter_non_canonical_aep_is_gp`; order (#PF on the TCS
//!   before the AEP check): `eenter_tcs_pf_precedes_aep_check`.
//! * 3 TCS busy with another leaf → #GP: a lock race only; covered by
//!   `concurrent_eenters_on_one_tcs_admit_exactly_one` (two LPs race for one TCS: exactly one
//!   wins, the loser gets #GP from the lock or from check 13, never anything else).
//! * 4 EPCM(TCS) VALID=0 / BLOCKED / ENCLAVEADDRESS≠RBX / PT≠TCS / PENDING / MODIFIED → #PF(RBX):
//!   `eenter_tcs_epcm_checks_are_sgx_pf` (cases `invalid`, `blocked`, `wrong_address`,
//!   `reg_page`, `secs_page`, `pending`, `modified`). A PENDING page is always a PT_REG page (only
//!   EAUG creates PENDING pages, EMODT refuses them, ELDU's flags are MAC-protected), so the
//!   `pending` case necessarily also has PT≠TCS. Order 4 before 5: `eenter_tcs_pf_precedes_tcs_field_checks`.
//! * 5 OSSA / OFSBASE / OGSBASE not page aligned → #GP: `eenter_misaligned_tcs_offsets_are_gp`.
//! * 6 BASEADDR+OFSBASE / +OGSBASE non-canonical → #GP: `eenter_non_canonical_fs_gs_base_is_gp`.
//! * 7 TCS.FLAGS reserved bits → #GP: `eenter_reserved_tcs_flags_from_eadd_are_gp` (EADD only
//!   forces DBGOPTIN to 0 and keeps other FLAGS bits), `eenter_reserved_tcs_flags_from_edbgwr_are_gp`
//!   (EDBGWR writes the whole FLAGS qword); DBGOPTIN itself is legal: `eenter_opt_in_keeps_tf`.
//! * 8 enclave not initialized → #GP: `eenter_uninitialized_enclave_is_gp`; CPU mode ≠
//!   MODE64BIT → #GP: `eenter_cpu_mode_mismatch_is_gp`.
//! * 9 OSFXSR=0 → #GP: `eenter_without_osfxsr_is_gp`; OSXSAVE=0 and XFRM≠3 → #GP:
//!   `eenter_without_osxsave_needs_legacy_xfrm`; XFRM ⊄ XCR0 → #GP: `eenter_xfrm_not_in_xcr0_is_gp`.
//! * 10 CSSA ≥ NSSA → #GP: `eenter_with_cssa_equal_nssa_is_gp` (also shows 10 precedes 11: the
//!   would-be frame is a read-only code page).
//! * 11 SSA frame validation → #PF: `eenter_ssa_frame_checks` (cases `not_present` and
//!   `read_only_pte` give ordinary #PFs; `normal_memory`, `epcm_not_writable`,
//!   `epcm_not_readable`, `modified`, `blocked`, `wrong_address`, `other_enclave`,
//!   `tcs_page` give #PF with the SGX bit; `epcm_not_readable` necessarily lacks W too, and
//!   `modified` is a TRIM page since EMODT always changes the type),
//!   `eenter_pending_ssa_page_is_sgx_pf` (PENDING is the only failing condition there),
//!   `eenter_validates_the_gprsgx_page_of_a_multi_page_frame`.
//! * 12 target non-canonical → #GP: `eenter_non_canonical_entry_point_is_gp`; order 11 before 12:
//!   `eenter_ssa_pf_precedes_entry_point_check`.
//! * 13 TCS ACTIVE → #GP: `eenter_active_tcs_is_gp`, plus the race test above.
//! * §3.3 EENTER in enclave mode → #GP: `eenter_in_enclave_mode_is_gp`.
//! * Effects: `eenter_register_effects` (RAX=CSSA, RCX=next RIP, RIP=BASE+OENTRY, FS/GS bases,
//!   other GPRs and RFLAGS unchanged), `eenter_uses_distinct_fs_and_gs_offsets`,
//!   `eenter_writes_ursp_urbp_into_the_current_frame`,
//!   `eenter_marks_tcs_active_latches_aep_and_keeps_cssa`, `eenter_opt_out_clears_tf_and_eexit_restores_it`,
//!   `eenter_opt_in_keeps_tf`, `eenter_loads_xfrm_into_xcr0_and_eexit_restores_it`,
//!   `nested_aex_uses_the_next_frame_and_eresume_unwinds` (RAX=CSSA=1 and frame 1).
//!
//! **ERESUME (§5.2)**
//! * Checks 1–9 and 13 shared with EENTER: `eresume_shares_the_eenter_checks` (cases per check).
//! * 10' CSSA = 0 → #GP: `eresume_with_cssa_zero_is_gp`.
//! * 11 frame CSSA−1 validated: `eresume_validates_frame_cssa_minus_one`.
//! * 12 RIP / FSBASE / GSBASE from GPRSGX non-canonical → #GP: `eresume_non_canonical_frame_values_are_gp`.
//! * Malformed XSAVE header → #GP, TCS stays INACTIVE: `eresume_malformed_xsave_header_is_gp_and_tcs_stays_inactive`
//!   (XSTATE_BV outside XFRM, XCOMP_BV≠0, other header bytes≠0).
//! * Effects: `eresume_restores_gprs_rip_and_flags_from_the_frame`, `eresume_takes_fs_gs_from_the_frame`,
//!   `eresume_does_not_update_ursp_urbp`, `eresume_decrements_cssa`, `eresume_restores_extended_state`,
//!   `eresume_latches_the_new_aep`, `eresume_opt_out_clears_tf`.
//!
//! **EEXIT (§5.3)**
//! * Outside enclave → #GP: `eexit_outside_enclave_is_gp`; 1 target non-canonical → #GP:
//!   `eexit_non_canonical_target_is_gp`.
//! * Effects: `eexit_effects` (RIP=RBX, RCX=AEP, RAX and other GPRs, RSP/RBP and XSAVE state as the
//!   enclave left them, FS/GS restored, TCS INACTIVE and enterable again), `eexit_through_enclu`.
//!
//! **AEX (§5.4)**
//! * 1/2 state saved into frame CSSA: `aex_saves_gprs_flags_rip_and_fs_gs_into_the_frame`,
//!   `aex_saves_the_xsave_area`, `aex_saves_only_the_xfrm_bits_of_xstate_bv`; AVX-512 and PKRU
//!   components at their standard offsets, saved and restored by ERESUME:
//!   `aex_and_eresume_carry_avx512_and_pkru_state`; EXITINFO:
//!   `aex_exitinfo_per_vector` (always-reported #DE #DB #BP(type 6) #BR #UD #MF #AC #XM; #GP/#PF
//!   with EXINFO; #OF #NM #CP and interrupts → 0),
//!   `aex_gp_and_pf_exitinfo_need_miscselect_exinfo`; EXINFO (MADDR, ERRCD with U/S forced to 1
//!   for #PF, MADDR 0 for #GP): `aex_exinfo_for_pf_and_gp`,
//!   `aex_without_exinfo_leaves_the_misc_region_alone`; URSP/URBP untouched (checked in the first).
//! * 3 synthetic state: `aex_loads_the_synthetic_state`, `aex_resets_extended_state_to_init`,
//!   `aex_on_mf_and_xm_leaves_the_math_status`.
//! * 4 CSSA+1, TCS INACTIVE, TF/FS/GS/XCR0 restored: `aex_increments_cssa_and_leaves_the_tcs_inactive`,
//!   `aex_restores_tf_and_xcr0`.
//! * 5 CR2 page aligned: `aex_reports_page_aligned_cr2`.
//! * Nesting up to NSSA: `nested_aex_uses_the_next_frame_and_eresume_unwinds`.
//! * AEX outside enclave mode changes nothing: `aex_outside_enclave_mode_is_a_no_op`.

use std::collections::BTreeMap;

use sgxemu_arch::{
    Attributes, AttributesFlags, Enclu, ExitInfo, ExitType, FromBytes, GPRSGX_SIZE, Gprsgx, IntoBytes, PAGE_SIZE,
    PageType, PfErrorCode, SecinfoFlags, Secs, Sigstruct, Tcs, Vector,
};
use sgxemu_cpu::regs::{
    ARITH_FLAGS, ERESUME_RESTORED_FLAGS, RFLAGS_AF, RFLAGS_CF, RFLAGS_DF, RFLAGS_IF, RFLAGS_OF, RFLAGS_PF, RFLAGS_RF,
    RFLAGS_SF, RFLAGS_TF, RFLAGS_ZF,
};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image, tcs_image, test_signing_key};
use sgxemu_cpu::{AexEvent, DEFAULT_XFRM, EpcIndex, EventKind, Exception, Regs, Status};

const AEP: u64 = 0x40_1000;
const ENCLU_RIP: u64 = 0x40_0000;
const OUTSIDE_RSP: u64 = 0x7fff_0000;
const OUTSIDE_RBP: u64 = 0x7fff_0100;
const OUTSIDE_FS: u64 = 0x7f00_1234_0000;
const OUTSIDE_GS: u64 = 0x7f00_5678_0000;
/// Bit 1 of RFLAGS is always 1.
const RFLAGS_FIXED: u64 = 1 << 1;
const NON_CANONICAL: u64 = 0x8000_0000_0000;
const GPR_OFFSET: usize = PAGE_SIZE - GPRSGX_SIZE;

// ---------------------------------------------------------------------------------------------
// Helpers

fn setup() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    (h, e)
}

fn outside_regs() -> Regs {
    Regs {
        rdx: 0xd0,
        rsi: 0x51,
        rdi: 0xd1,
        r8: 8,
        r9: 9,
        r10: 10,
        r11: 11,
        r12: 12,
        r13: 13,
        r14: 14,
        r15: 15,
        rsp: OUTSIDE_RSP,
        rbp: OUTSIDE_RBP,
        rip: ENCLU_RIP,
        rflags: RFLAGS_FIXED | RFLAGS_IF,
        fsbase: OUTSIDE_FS,
        gsbase: OUTSIDE_GS,
        ..Regs::default()
    }
}

/// EENTER on the enclave's TCS with the standard outside registers.
fn enter(h: &mut Harness, e: &TestEnclave) -> Regs {
    let mut regs = outside_regs();
    h.eenter(&mut regs, e.tcs, AEP).expect("EENTER");
    regs
}

fn index_of(h: &Harness, epc: u64) -> EpcIndex {
    h.cpu.epc_index(epc).expect("an EPC address")
}

fn page(h: &Harness, e: &TestEnclave, offset: u64) -> EpcIndex {
    index_of(h, e.pages[&(e.base + offset)])
}

/// GPRSGX of one-page SSA frame `frame` of the standard layout.
fn frame_gpr(h: &Harness, e: &TestEnclave, frame: u64) -> Gprsgx {
    let mut bytes = [0u8; GPRSGX_SIZE];
    h.cpu.read_epc(page(h, e, layout::SSA + frame * 0x1000), GPR_OFFSET, &mut bytes);
    Gprsgx::read_from_bytes(&bytes).expect("184 bytes")
}

fn set_frame_gpr(h: &Harness, e: &TestEnclave, frame: u64, gpr: &Gprsgx) {
    h.cpu.write_epc(page(h, e, layout::SSA + frame * 0x1000), GPR_OFFSET, gpr.as_bytes());
}

fn frame_bytes(h: &Harness, e: &TestEnclave, frame: u64, offset: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    h.cpu.read_epc(page(h, e, layout::SSA + frame * 0x1000), offset, &mut bytes);
    bytes
}

/// The architectural TCS fields as stored in the EPC.
fn tcs_fields(h: &Harness, e: &TestEnclave) -> Tcs {
    let mut tcs = Tcs::default();
    h.cpu.read_epc(page(h, e, layout::TCS), 0, &mut tcs.as_mut_bytes()[..sgxemu_arch::TCS_ARCH_SIZE]);
    tcs
}

fn reg(perms: SecinfoFlags) -> SecinfoFlags {
    perms.with_page_type(PageType::Reg)
}

fn rw() -> SecinfoFlags {
    reg(SecinfoFlags::R | SecinfoFlags::W)
}

/// The page plan of [`TestEnclave`] with a caller-supplied TCS image.
fn standard_plan(tcs: [u8; PAGE_SIZE]) -> Vec<(u64, SecinfoFlags, [u8; PAGE_SIZE])> {
    let mut code = [0u8; PAGE_SIZE];
    code[..4].copy_from_slice(&[0x0f, 0x01, 0xd7, 0xcc]);
    vec![
        (layout::TCS, SecinfoFlags::from(PageType::Tcs), tcs),
        (layout::SSA, rw(), [0; PAGE_SIZE]),
        (layout::SSA + 0x1000, rw(), [0; PAGE_SIZE]),
        (layout::CODE, reg(SecinfoFlags::R | SecinfoFlags::X), code),
        (layout::DATA, rw(), [0x11; PAGE_SIZE]),
        (layout::RODATA, reg(SecinfoFlags::R), [0x22; PAGE_SIZE]),
    ]
}

/// ECREATE, EADD+EEXTEND and map every page of `plan`, then (if `init`) sign the measured
/// value with the test key and EINIT. The TCS is the first page of the plan.
fn build_custom(
    h: &mut Harness,
    image: Secs,
    plan: &[(u64, SecinfoFlags, [u8; PAGE_SIZE])],
    init: bool,
) -> TestEnclave {
    let base = image.baseaddr;
    let secs = h.ecreate(&image).expect("ECREATE");
    let mut pages = BTreeMap::new();
    for (offset, flags, data) in plan {
        let la = base + offset;
        let epc = h.eadd(secs, la, *flags, data).expect("EADD");
        h.eextend_page(secs, epc).expect("EEXTEND");
        let tcs = flags.page_type() == Some(PageType::Tcs);
        h.map(la, epc, flags.contains(SecinfoFlags::W) || tcs, flags.contains(SecinfoFlags::X));
        pages.insert(la, epc);
    }
    let mut sig = Sigstruct::new_unsigned();
    sig.enclavehash = h.cpu.mrenclave_so_far(secs).expect("valid SECS");
    sig.attributes = image.attributes;
    sig.attributemask = Attributes { flags: !0, xfrm: !0 };
    sig.miscselect = image.miscselect;
    sig.miscmask = !0;
    sig.isvprodid = 7;
    sig.isvsvn = 3;
    sgxemu_crypto::sign(&mut sig, &test_signing_key()).expect("sign");
    if init {
        assert_eq!(h.einit(secs, &sig), Ok(Status::Success), "EINIT of the custom enclave");
    }
    TestEnclave {
        secs,
        base,
        size: image.size,
        tcs: base + plan[0].0,
        sigstruct: sig,
        pages,
        threads: vec![base + plan[0].0],
    }
}

fn default_secs() -> Secs {
    secs_image(0x10_0000_0000, 1 << 20)
}

/// A custom enclave whose TCS is `tcs` (standard layout otherwise).
fn with_tcs(h: &mut Harness, tcs: Tcs) -> TestEnclave {
    let mut image = [0u8; PAGE_SIZE];
    image.copy_from_slice(tcs.as_bytes());
    build_custom(h, default_secs(), &standard_plan(image), true)
}

fn standard_tcs() -> Tcs {
    Tcs::read_from_bytes(&tcs_image(layout::SSA, layout::NSSA, layout::CODE, layout::DATA)[..]).expect("a page")
}

fn xfrm7_enclave(h: &mut Harness) -> TestEnclave {
    let mut image = default_secs();
    image.attributes = Attributes::new(AttributesFlags::MODE64BIT | AttributesFlags::DEBUG, 0x7);
    TestEnclave::build_with(h, image)
}

fn sgx_pf(addr: u64, write: bool) -> Exception {
    Exception::epcm_pf_user(addr, write)
}

fn pf(addr: u64, code: PfErrorCode) -> Exception {
    Exception::Pf { addr, code }
}

fn eaug(h: &mut Harness, e: &TestEnclave, la: u64) -> u64 {
    let epc = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, epc).expect("EAUG");
    h.map(la, epc, true, false);
    epc
}

fn emodpr(h: &mut Harness, epc: u64, perms: SecinfoFlags) {
    h.put_secinfo(reg(perms));
    assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

fn emodt(h: &mut Harness, epc: u64, page_type: PageType) {
    h.put_secinfo(SecinfoFlags::from(page_type));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

/// AEX with an exception event.
fn aex_exception(h: &mut Harness, regs: &mut Regs, vector: Vector, error_code: u32, addr: u64) {
    let event = AexEvent { kind: EventKind::Exception { vector, error_code, addr } };
    h.cpu.aex(&mut h.lp, regs, event).expect("in enclave mode");
}

/// Asserts an EENTER attempt failed with `expected` and changed nothing visible.
fn assert_eenter_fails(h: &mut Harness, tcs: u64, aep: u64, expected: Exception, case: &str) {
    let mut regs = outside_regs();
    let before = regs;
    assert_eq!(h.eenter(&mut regs, tcs, aep), Err(expected), "case {case}");
    assert!(!h.lp.in_enclave(), "case {case}: still outside");
    regs.rax = before.rax;
    regs.rbx = before.rbx;
    regs.rcx = before.rcx;
    assert_eq!(regs, before, "case {case}: registers untouched");
}

// ---------------------------------------------------------------------------------------------
// EENTER checks

#[test]
fn eenter_misaligned_tcs_is_gp() {
    let (mut h, e) = setup();
    assert_eenter_fails(&mut h, e.tcs + 8, AEP, Exception::Gp, "misaligned");
    // Alignment comes before the translation: an unmapped misaligned address is still #GP.
    h.pt.unmap(e.tcs);
    assert_eenter_fails(&mut h, e.tcs + 0x800, AEP, Exception::Gp, "misaligned and unmapped");
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eenter_unmapped_tcs_is_ordinary_pf() {
    let (mut h, e) = setup();
    h.pt.unmap(e.tcs);
    assert_eenter_fails(&mut h, e.tcs, AEP, pf(e.tcs, PfErrorCode::U | PfErrorCode::W), "not present");
}

#[test]
fn eenter_tcs_behind_read_only_pte_is_ordinary_pf() {
    let (mut h, e) = setup();
    h.map(e.tcs, e.pages[&e.tcs], false, false);
    let code = PfErrorCode::P | PfErrorCode::U | PfErrorCode::W;
    assert_eenter_fails(&mut h, e.tcs, AEP, pf(e.tcs, code), "read-only PTE");
}

#[test]
fn eenter_tcs_in_normal_memory_is_sgx_pf() {
    let (mut h, e) = setup();
    h.map(e.tcs, scratch::PAGE, true, false);
    assert_eenter_fails(&mut h, e.tcs, AEP, sgx_pf(e.tcs, true), "non-EPC");
}

#[test]
fn eenter_non_canonical_aep_is_gp() {
    let (mut h, e) = setup();
    assert_eenter_fails(&mut h, e.tcs, NON_CANONICAL, Exception::Gp, "non-canonical AEP");
    // The TCS was not touched: a good EENTER works.
    let mut regs = enter(&mut h, &e);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_tcs_pf_precedes_aep_check() {
    let (mut h, e) = setup();
    h.pt.unmap(e.tcs);
    assert_eenter_fails(&mut h, e.tcs, NON_CANONICAL, pf(e.tcs, PfErrorCode::U | PfErrorCode::W), "unmapped");
    h.map(e.tcs, scratch::PAGE, true, false);
    assert_eenter_fails(&mut h, e.tcs, NON_CANONICAL, sgx_pf(e.tcs, true), "non-EPC");
}

#[test]
fn eenter_tcs_epcm_checks_are_sgx_pf() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> u64;
    let cases: [(&str, Prepare); 7] = [
        ("invalid", |h, e| {
            let fresh = h.alloc_page();
            h.map(e.base + layout::HEAP, fresh, true, false);
            e.base + layout::HEAP
        }),
        ("blocked", |h, e| {
            assert_eq!(h.cpu.eblock(&mut h.lp, e.pages[&e.tcs]), Ok(Status::Success));
            e.tcs
        }),
        ("wrong_address", |h, e| {
            h.map(e.base + layout::HEAP, e.pages[&e.tcs], true, false);
            e.base + layout::HEAP
        }),
        ("reg_page", |_, e| e.base + layout::DATA),
        ("secs_page", |h, e| {
            h.map(e.base + layout::HEAP, e.secs, true, false);
            e.base + layout::HEAP
        }),
        ("pending", |h, e| {
            eaug(h, e, e.base + layout::HEAP);
            e.base + layout::HEAP
        }),
        ("modified", |h, e| {
            // EMODT REG → TCS: a TCS-typed page that is MODIFIED (not yet accepted).
            emodt(h, e.pages[&(e.base + layout::DATA)], PageType::Tcs);
            e.base + layout::DATA
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let tcs = prepare(&mut h, &e);
        assert_eenter_fails(&mut h, tcs, AEP, sgx_pf(tcs, true), name);
        h.cpu.check_invariants().unwrap();
    }
}

#[test]
fn eenter_tcs_pf_precedes_tcs_field_checks() {
    let mut h = Harness::new();
    let e = with_tcs(&mut h, Tcs { ossa: layout::SSA + 8, ..standard_tcs() });
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "misaligned OSSA");
    assert_eq!(h.cpu.eblock(&mut h.lp, e.pages[&e.tcs]), Ok(Status::Success));
    assert_eenter_fails(&mut h, e.tcs, AEP, sgx_pf(e.tcs, true), "blocked TCS with misaligned OSSA");
}

#[test]
fn eenter_misaligned_tcs_offsets_are_gp() {
    let cases = [
        ("ossa", Tcs { ossa: layout::SSA + 0x40, ..standard_tcs() }),
        ("ofsbase", Tcs { ofsbase: layout::DATA + 0x10, ..standard_tcs() }),
        ("ogsbase", Tcs { ogsbase: layout::DATA + 0xFFF, ..standard_tcs() }),
    ];
    for (name, tcs) in cases {
        let mut h = Harness::new();
        let e = with_tcs(&mut h, tcs);
        assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, name);
        let state = tcs_fields(&h, &e);
        assert_eq!((state.state, state.aep), (0, 0), "case {name}: TCS untouched");
    }
}

#[test]
fn eenter_non_canonical_fs_gs_base_is_gp() {
    // BASEADDR (0x10_0000_0000) + 0x7FFF_F000_0000 is past the canonical hole.
    let far = 0x7FFF_F000_0000;
    let cases = [("fs", Tcs { ofsbase: far, ..standard_tcs() }), ("gs", Tcs { ogsbase: far, ..standard_tcs() })];
    for (name, tcs) in cases {
        let mut h = Harness::new();
        let e = with_tcs(&mut h, tcs);
        assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, name);
    }
}

#[test]
fn eenter_reserved_tcs_flags_from_eadd_are_gp() {
    for (name, flags, stored) in
        [("aexnotify_bit", 1 << 1, 1 << 1), ("bit2_with_dbgoptin", (1 << 2) | 1, 1 << 2), ("bit63", 1 << 63, 1 << 63)]
    {
        let mut h = Harness::new();
        let e = with_tcs(&mut h, Tcs { flags, ..standard_tcs() });
        assert_eq!(tcs_fields(&h, &e).flags, stored, "case {name}: EADD keeps reserved FLAGS bits, clears DBGOPTIN");
        assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, name);
    }
}

#[test]
fn eenter_reserved_tcs_flags_from_edbgwr_are_gp() {
    let (mut h, e) = setup();
    let flags_addr = e.pages[&e.tcs] + Tcs::FLAGS_OFFSET as u64;
    assert_eq!(h.cpu.edbgwr(&mut h.lp, flags_addr, 0x4), Ok(Status::Success));
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "FLAGS=0x4");
    assert_eq!(h.cpu.edbgwr(&mut h.lp, flags_addr, 0x1), Ok(Status::Success));
    let mut regs = enter(&mut h, &e);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_uninitialized_enclave_is_gp() {
    let mut h = Harness::new();
    let e = build_custom(
        &mut h,
        default_secs(),
        &standard_plan(tcs_image(layout::SSA, 2, layout::CODE, layout::DATA)),
        false,
    );
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "not initialized");
    // Check 8 precedes the SSA frame validation (#PF).
    h.pt.unmap(e.base + layout::SSA);
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "not initialized, SSA unmapped");
}

#[test]
fn eenter_cpu_mode_mismatch_is_gp() {
    let (mut h, e) = setup();
    h.lp.mode64 = false;
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "32-bit LP, 64-bit enclave");
    h.lp.mode64 = true;
    let mut regs = enter(&mut h, &e);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_without_osfxsr_is_gp() {
    let (mut h, e) = setup();
    h.lp.osfxsr = false;
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "CR4.OSFXSR=0");
}

#[test]
fn eenter_without_osxsave_needs_legacy_xfrm() {
    let mut h = Harness::new();
    let e7 = xfrm7_enclave(&mut h);
    h.lp.osxsave = false;
    assert_eenter_fails(&mut h, e7.tcs, AEP, Exception::Gp, "OSXSAVE=0, XFRM=7");
    // An XFRM=3 enclave enters, and XCR0 is not loaded without OSXSAVE.
    let e3 = TestEnclave::build_with(&mut h, secs_image(0x20_0000_0000, 1 << 20));
    let xcr0 = h.lp.xcr0;
    let mut regs = enter(&mut h, &e3);
    assert_eq!(h.lp.xcr0, xcr0);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_xfrm_not_in_xcr0_is_gp() {
    let mut h = Harness::new();
    let e = xfrm7_enclave(&mut h);
    h.lp.xcr0 = 0x3;
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "XCR0=3, XFRM=7");
    h.lp.xcr0 = 0x7;
    let mut regs = enter(&mut h, &e);
    assert_eq!(h.lp.xcr0, 0x7, "XCR0 := XFRM");
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_with_cssa_equal_nssa_is_gp() {
    let (mut h, e) = setup();
    for _ in 0..layout::NSSA {
        let mut regs = enter(&mut h, &e);
        h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    }
    assert_eq!(tcs_fields(&h, &e).cssa, layout::NSSA);
    // Frame NSSA would be the read-only code page: check 10 fires before frame validation.
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "CSSA == NSSA");
    assert_eq!(tcs_fields(&h, &e).state, 0);
}

#[test]
fn eenter_ssa_frame_checks() {
    type Prepare = fn(&mut Harness, &TestEnclave, u64) -> Exception;
    let cases: [(&str, Prepare); 10] = [
        ("not_present", |h, _, ssa| {
            h.pt.unmap(ssa);
            pf(ssa, PfErrorCode::U | PfErrorCode::W)
        }),
        ("read_only_pte", |h, e, ssa| {
            h.map(ssa, e.pages[&ssa], false, false);
            pf(ssa, PfErrorCode::P | PfErrorCode::U | PfErrorCode::W)
        }),
        ("normal_memory", |h, _, ssa| {
            h.map(ssa, scratch::PAGE, true, false);
            sgx_pf(ssa, true)
        }),
        ("epcm_not_writable", |h, e, ssa| {
            emodpr(h, e.pages[&ssa], SecinfoFlags::R);
            sgx_pf(ssa, true)
        }),
        ("epcm_not_readable", |h, e, ssa| {
            emodpr(h, e.pages[&ssa], SecinfoFlags::empty());
            sgx_pf(ssa, true)
        }),
        ("modified", |h, e, ssa| {
            emodt(h, e.pages[&ssa], PageType::Trim);
            sgx_pf(ssa, true)
        }),
        ("blocked", |h, e, ssa| {
            assert_eq!(h.cpu.eblock(&mut h.lp, e.pages[&ssa]), Ok(Status::Success));
            sgx_pf(ssa, true)
        }),
        ("wrong_address", |h, e, ssa| {
            h.map(ssa, e.pages[&(e.base + layout::DATA)], true, false);
            sgx_pf(ssa, true)
        }),
        ("other_enclave", |h, _, ssa| {
            let other = TestEnclave::build_with(h, secs_image(0x20_0000_0000, 1 << 20));
            h.map(ssa, other.pages[&(other.base + layout::SSA)], true, false);
            sgx_pf(ssa, true)
        }),
        ("tcs_page", |h, e, ssa| {
            h.map(ssa, e.pages[&e.tcs], true, false);
            sgx_pf(ssa, true)
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let ssa = e.base + layout::SSA;
        let expected = prepare(&mut h, &e, ssa);
        assert_eenter_fails(&mut h, e.tcs, AEP, expected, name);
        assert_eq!(tcs_fields(&h, &e).state, 0, "case {name}: TCS stays inactive");
    }
}

#[test]
fn eenter_pending_ssa_page_is_sgx_pf() {
    // The frame lives in the heap, on a page EAUG'd but not yet accepted: the only failing
    // EPCM condition is PENDING.
    let mut h = Harness::new();
    let e = with_tcs(&mut h, Tcs { ossa: layout::HEAP, nssa: 1, ..standard_tcs() });
    let frame = e.base + layout::HEAP;
    eaug(&mut h, &e, frame);
    assert_eenter_fails(&mut h, e.tcs, AEP, sgx_pf(frame, true), "pending frame");
    assert_eq!(tcs_fields(&h, &e).state, 0);
}

#[test]
fn eenter_validates_the_gprsgx_page_of_a_multi_page_frame() {
    // SSAFRAMESIZE = 2: the XSAVE area lives in the first page, GPRSGX in the second.
    let mut h = Harness::new();
    let mut image = default_secs();
    image.ssaframesize = 2;
    let e = build_custom(&mut h, image, &standard_plan(tcs_image(layout::SSA, 1, layout::CODE, layout::DATA)), true);
    let gpr_page = e.base + layout::SSA + 0x1000;
    h.pt.unmap(gpr_page);
    assert_eenter_fails(&mut h, e.tcs, AEP, pf(gpr_page, PfErrorCode::U | PfErrorCode::W), "GPRSGX page unmapped");
    h.map(gpr_page, e.pages[&gpr_page], true, false);
    let mut regs = enter(&mut h, &e);
    // URSP lands at the end of the two-page frame.
    let mut ursp = [0u8; 8];
    h.cpu.read_epc(index_of(&h, e.pages[&gpr_page]), GPR_OFFSET + 144, &mut ursp);
    assert_eq!(u64::from_le_bytes(ursp), OUTSIDE_RSP);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_non_canonical_entry_point_is_gp() {
    let mut h = Harness::new();
    let e = with_tcs(&mut h, Tcs { oentry: 0x7FFF_F000_0123, ..standard_tcs() });
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "non-canonical OENTRY");
    assert_eq!(tcs_fields(&h, &e).state, 0);
}

#[test]
fn eenter_ssa_pf_precedes_entry_point_check() {
    let mut h = Harness::new();
    let e = with_tcs(&mut h, Tcs { oentry: 0x7FFF_F000_0123, ..standard_tcs() });
    let ssa = e.base + layout::SSA;
    h.pt.unmap(ssa);
    assert_eenter_fails(&mut h, e.tcs, AEP, pf(ssa, PfErrorCode::U | PfErrorCode::W), "SSA unmapped");
}

#[test]
fn eenter_active_tcs_is_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let mut lp2 = h.cpu.new_lp();
    let mut regs2 = outside_regs();
    regs2.rbx = e.tcs;
    regs2.rcx = AEP;
    assert_eq!(h.cpu.eenter(&mut lp2, &mut regs2, &h.pt), Err(Exception::Gp));
    assert!(!lp2.in_enclave());
    assert_eq!(h.cpu.eresume(&mut lp2, &mut regs2, &h.pt), Err(Exception::Gp), "CSSA=0 anyway");
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!(h.cpu.eenter(&mut lp2, &mut regs2, &h.pt), Ok(()));
    assert!(lp2.in_enclave());
    regs2.rbx = 0;
    h.cpu.eexit(&mut lp2, &mut regs2).unwrap();
    h.cpu.check_invariants().unwrap();
}

#[test]
fn concurrent_eenters_on_one_tcs_admit_exactly_one() {
    let (h, e) = setup();
    for round in 0..64 {
        let results: Vec<(sgxemu_cpu::Lp, Regs, Result<(), Exception>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (cpu, pt, tcs) = (&h.cpu, &h.pt, e.tcs);
                    s.spawn(move || {
                        let mut lp = cpu.new_lp();
                        let mut regs = outside_regs();
                        regs.rax = Enclu::Eenter as u64;
                        regs.rbx = tcs;
                        regs.rcx = AEP;
                        let result = cpu.eenter(&mut lp, &mut regs, pt);
                        (lp, regs, result)
                    })
                })
                .collect();
            handles.into_iter().map(|t| t.join().expect("no panic")).collect()
        });
        let winners = results.iter().filter(|(_, _, r)| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: exactly one EENTER wins");
        for (mut lp, mut regs, result) in results {
            match result {
                Ok(()) => {
                    regs.rbx = ENCLU_RIP + 3;
                    h.cpu.eexit(&mut lp, &mut regs).unwrap();
                }
                Err(err) => assert_eq!(err, Exception::Gp, "round {round}: the loser sees #GP"),
            }
        }
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eenter_in_enclave_mode_is_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    regs.rax = Enclu::Eenter as u64;
    regs.rbx = e.tcs;
    regs.rcx = AEP;
    let probe = regs;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    assert_eq!(regs, probe, "ENCLU[EENTER] inside: nothing changed");
    assert_eq!(h.cpu.eenter(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    regs.rax = Enclu::Eresume as u64;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    assert!(h.lp.in_enclave());
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

// ---------------------------------------------------------------------------------------------
// EENTER effects

#[test]
fn eenter_register_effects() {
    let (mut h, e) = setup();
    let before = outside_regs();
    let regs = enter(&mut h, &e);
    let expected = Regs {
        rax: 0,
        rbx: e.tcs,
        rcx: ENCLU_RIP + 3,
        rip: e.base + layout::CODE,
        fsbase: e.base + layout::DATA,
        gsbase: e.base + layout::DATA,
        ..before
    };
    assert_eq!(regs, expected);
    assert!(h.lp.in_enclave());
    assert_eq!(h.lp.tcs(), Some(e.tcs));
    assert_eq!(h.lp.elrange(), Some((e.base, e.size)));
    assert_eq!(h.lp.active_secs(), h.cpu.epc_index(e.secs));
    assert_eq!(h.cpu.lps_inside(e.secs), vec![h.lp.id()]);
}

#[test]
fn eenter_uses_distinct_fs_and_gs_offsets() {
    let mut h = Harness::new();
    let e = with_tcs(&mut h, Tcs { ofsbase: layout::DATA, ogsbase: layout::RODATA, ..standard_tcs() });
    let regs = enter(&mut h, &e);
    assert_eq!((regs.fsbase, regs.gsbase), (e.base + layout::DATA, e.base + layout::RODATA));
}

#[test]
fn eenter_writes_ursp_urbp_into_the_current_frame() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let gpr = frame_gpr(&h, &e, 0);
    assert_eq!((gpr.ursp, gpr.urbp), (OUTSIDE_RSP, OUTSIDE_RBP));
    assert_eq!(frame_gpr(&h, &e, 1), Gprsgx::default(), "frame 1 untouched");
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eenter_marks_tcs_active_latches_aep_and_keeps_cssa() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let tcs = tcs_fields(&h, &e);
    assert_eq!((tcs.state, tcs.aep, tcs.cssa), (1, AEP, 0));
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    let tcs = tcs_fields(&h, &e);
    assert_eq!((tcs.state, tcs.aep, tcs.cssa), (0, AEP, 0));
}

#[test]
fn eenter_opt_out_clears_tf_and_eexit_restores_it() {
    let (mut h, e) = setup();
    let mut regs = outside_regs();
    regs.rflags |= RFLAGS_TF;
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rflags, RFLAGS_FIXED | RFLAGS_IF, "TF suppressed inside (DBGOPTIN=0)");
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!(regs.rflags, RFLAGS_FIXED | RFLAGS_IF | RFLAGS_TF, "TF restored by EEXIT");
}

#[test]
fn eenter_opt_in_keeps_tf() {
    let (mut h, e) = setup();
    let flags_addr = e.pages[&e.tcs] + Tcs::FLAGS_OFFSET as u64;
    assert_eq!(h.cpu.edbgwr(&mut h.lp, flags_addr, 1), Ok(Status::Success));
    let mut regs = outside_regs();
    regs.rflags |= RFLAGS_TF;
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rflags, RFLAGS_FIXED | RFLAGS_IF | RFLAGS_TF);
    regs.rflags &= !RFLAGS_TF;
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!(regs.rflags & RFLAGS_TF, 0, "opt-in: EEXIT does not restore a saved TF");
}

#[test]
fn eenter_loads_xfrm_into_xcr0_and_eexit_restores_it() {
    let (mut h, e) = setup();
    assert_eq!(h.lp.xcr0, DEFAULT_XFRM, "XCR0 outside: every component the part offers");
    let mut regs = enter(&mut h, &e);
    assert_eq!(h.lp.xcr0, 0x3, "XCR0 := XFRM");
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!(h.lp.xcr0, DEFAULT_XFRM, "XCR0 outside: every component the part offers");
}

// ---------------------------------------------------------------------------------------------
// ERESUME

/// EENTER then AEX (interrupt): CSSA = 1, ready for ERESUME.
fn enter_and_interrupt(h: &mut Harness, e: &TestEnclave) -> Regs {
    let mut regs = enter(h, e);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    regs
}

fn assert_eresume_fails(h: &mut Harness, tcs: u64, expected: Exception, case: &str) {
    let mut regs = outside_regs();
    let before = regs;
    assert_eq!(h.eresume(&mut regs, tcs, AEP), Err(expected), "case {case}");
    assert!(!h.lp.in_enclave(), "case {case}");
    regs.rax = before.rax;
    regs.rbx = before.rbx;
    regs.rcx = before.rcx;
    assert_eq!(regs, before, "case {case}: registers untouched");
}

#[test]
fn eresume_with_cssa_zero_is_gp() {
    let (mut h, e) = setup();
    assert_eresume_fails(&mut h, e.tcs, Exception::Gp, "CSSA=0");
    assert_eq!(tcs_fields(&h, &e).state, 0);
}

#[test]
fn eresume_shares_the_eenter_checks() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> (u64, Exception);
    let cases: [(&str, Prepare); 8] = [
        ("2_misaligned", |_, e| (e.tcs + 8, Exception::Gp)),
        ("2_not_present", |h, e| {
            h.pt.unmap(e.tcs);
            (e.tcs, pf(e.tcs, PfErrorCode::U | PfErrorCode::W))
        }),
        ("2_normal_memory", |h, e| {
            h.map(e.tcs, scratch::PAGE, true, false);
            (e.tcs, sgx_pf(e.tcs, true))
        }),
        ("4_reg_page", |_, e| (e.base + layout::DATA, sgx_pf(e.base + layout::DATA, true))),
        ("4_blocked", |h, e| {
            assert_eq!(h.cpu.eblock(&mut h.lp, e.pages[&e.tcs]), Ok(Status::Success));
            (e.tcs, sgx_pf(e.tcs, true))
        }),
        ("8_mode", |h, e| {
            h.lp.mode64 = false;
            (e.tcs, Exception::Gp)
        }),
        ("9_osfxsr", |h, e| {
            h.lp.osfxsr = false;
            (e.tcs, Exception::Gp)
        }),
        ("9_xcr0", |h, e| {
            h.lp.xcr0 = 0x1;
            (e.tcs, Exception::Gp)
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        enter_and_interrupt(&mut h, &e);
        let (tcs, expected) = prepare(&mut h, &e);
        assert_eresume_fails(&mut h, tcs, expected, name);
        assert_eq!(tcs_fields(&h, &e).cssa, 1, "case {name}: CSSA unchanged");
    }
    // 13: an ACTIVE TCS (another LP inside on it).
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    let mut lp2 = h.cpu.new_lp();
    let mut regs2 = outside_regs();
    regs2.rbx = e.tcs;
    regs2.rcx = AEP;
    h.cpu.eenter(&mut lp2, &mut regs2, &h.pt).unwrap();
    assert_eresume_fails(&mut h, e.tcs, Exception::Gp, "13_active");
    regs2.rbx = 0;
    h.cpu.eexit(&mut lp2, &mut regs2).unwrap();
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
}

#[test]
fn eresume_validates_frame_cssa_minus_one() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    // Frame 1 (the next free one) is irrelevant to ERESUME; frame 0 is checked.
    let frame1 = e.base + layout::SSA + 0x1000;
    h.pt.unmap(frame1);
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    let frame0 = e.base + layout::SSA;
    h.pt.unmap(frame0);
    assert_eresume_fails(&mut h, e.tcs, pf(frame0, PfErrorCode::U | PfErrorCode::W), "frame 0 unmapped");
    h.map(frame0, e.pages[&frame0], true, false);
    emodpr(&mut h, e.pages[&frame0], SecinfoFlags::R);
    assert_eresume_fails(&mut h, e.tcs, sgx_pf(frame0, true), "frame 0 read-only in the EPCM");
}

#[test]
fn eresume_non_canonical_frame_values_are_gp() {
    type Corrupt = fn(&mut Gprsgx);
    let cases: [(&str, Corrupt); 3] = [
        ("rip", |g| g.rip = NON_CANONICAL),
        ("fsbase", |g| g.fsbase = NON_CANONICAL),
        ("gsbase", |g| g.gsbase = 0xFFFF_7000_0000_0000),
    ];
    for (name, corrupt) in cases {
        let (mut h, e) = setup();
        enter_and_interrupt(&mut h, &e);
        let mut gpr = frame_gpr(&h, &e, 0);
        let good = gpr;
        corrupt(&mut gpr);
        set_frame_gpr(&h, &e, 0, &gpr);
        assert_eresume_fails(&mut h, e.tcs, Exception::Gp, name);
        let tcs = tcs_fields(&h, &e);
        assert_eq!((tcs.state, tcs.cssa), (0, 1), "case {name}: TCS untouched");
        set_frame_gpr(&h, &e, 0, &good);
        let mut regs = outside_regs();
        h.eresume(&mut regs, e.tcs, AEP).unwrap();
    }
}

#[test]
fn eresume_malformed_xsave_header_is_gp_and_tcs_stays_inactive() {
    use sgxemu_arch::{XCOMP_BV_OFFSET, XSTATE_BV_OFFSET};
    let cases: [(&str, usize, u64); 4] = [
        ("xstate_bv_outside_xfrm", XSTATE_BV_OFFSET, 0x7),
        ("xstate_bv_high_bit", XSTATE_BV_OFFSET, 1 << 63),
        ("xcomp_bv_nonzero", XCOMP_BV_OFFSET, 1 << 63 | 0x3),
        ("header_reserved_nonzero", XSTATE_BV_OFFSET + 16, 1),
    ];
    for (name, offset, value) in cases {
        let (mut h, e) = setup();
        enter_and_interrupt(&mut h, &e);
        let frame = page(&h, &e, layout::SSA);
        let mut saved = [0u8; 8];
        h.cpu.read_epc(frame, offset, &mut saved);
        h.cpu.write_epc(frame, offset, &value.to_le_bytes());
        assert_eresume_fails(&mut h, e.tcs, Exception::Gp, name);
        let tcs = tcs_fields(&h, &e);
        assert_eq!((tcs.state, tcs.cssa), (0, 1), "case {name}: TCS inactive, CSSA kept");
        // A well-formed header with XSTATE_BV ⊆ XFRM resumes.
        h.cpu.write_epc(frame, offset, &saved);
        h.cpu.write_epc(frame, XSTATE_BV_OFFSET, &0x3u64.to_le_bytes());
        let mut regs = outside_regs();
        h.eresume(&mut regs, e.tcs, AEP).expect(name);
    }
}

#[test]
fn eresume_restores_gprs_rip_and_flags_from_the_frame() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    let frame = Gprsgx {
        rax: 0xA0,
        rcx: 0xC0,
        rdx: 0xD0,
        rbx: 0xB0,
        rsp: 0x1_0000,
        rbp: 0x1_0100,
        rsi: 0x51,
        rdi: 0xD1,
        r8: 0x108,
        r9: 0x109,
        r10: 0x110,
        r11: 0x111,
        r12: 0x112,
        r13: 0x113,
        r14: 0x114,
        r15: 0x115,
        rflags: !0,
        rip: e.base + layout::CODE + 0x10,
        ..frame_gpr(&h, &e, 0)
    };
    set_frame_gpr(&h, &e, 0, &frame);
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    let expected = Regs {
        rax: 0xA0,
        rcx: 0xC0,
        rdx: 0xD0,
        rbx: 0xB0,
        rsp: 0x1_0000,
        rbp: 0x1_0100,
        rsi: 0x51,
        rdi: 0xD1,
        r8: 0x108,
        r9: 0x109,
        r10: 0x110,
        r11: 0x111,
        r12: 0x112,
        r13: 0x113,
        r14: 0x114,
        r15: 0x115,
        rip: e.base + layout::CODE + 0x10,
        // CF PF AF ZF SF DF OF NT AC ID RF come from the frame; IF, TF and the fixed bit stay.
        rflags: RFLAGS_FIXED | RFLAGS_IF | ERESUME_RESTORED_FLAGS,
        fsbase: frame.fsbase,
        gsbase: frame.gsbase,
    };
    assert_eq!(regs, expected);
}

#[test]
fn eresume_takes_fs_gs_from_the_frame() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    let frame = Gprsgx { fsbase: e.base + 0x7000, gsbase: e.base + 0x8000, ..frame_gpr(&h, &e, 0) };
    set_frame_gpr(&h, &e, 0, &frame);
    let mut regs = outside_regs();
    regs.fsbase = 0x7e00_0000_0000;
    regs.gsbase = 0x7e00_1000_0000;
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!((regs.fsbase, regs.gsbase), (e.base + 0x7000, e.base + 0x8000));
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!((regs.fsbase, regs.gsbase), (0x7e00_0000_0000, 0x7e00_1000_0000), "ERESUME saved the outside bases");
}

#[test]
fn eresume_latches_the_new_aep() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, 0x40_5000).unwrap();
    assert_eq!(tcs_fields(&h, &e).aep, 0x40_5000);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert_eq!((regs.rip, regs.rcx), (0x40_5000, 0x40_5000), "the next AEX goes to the new AEP");
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, 0x40_6000).unwrap();
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!(regs.rcx, 0x40_6000, "EEXIT reports the latest AEP");
}

#[test]
fn eresume_does_not_update_ursp_urbp() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    let mut regs = outside_regs();
    regs.rsp = 0x6000_0000;
    regs.rbp = 0x6000_0100;
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    let gpr = frame_gpr(&h, &e, 0);
    assert_eq!((gpr.ursp, gpr.urbp), (OUTSIDE_RSP, OUTSIDE_RBP));
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert_eq!((regs.rsp, regs.rbp), (OUTSIDE_RSP, OUTSIDE_RBP), "AEX returns to the EENTER-time stack");
}

#[test]
fn eresume_decrements_cssa() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    assert_eq!(tcs_fields(&h, &e).cssa, 1);
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    let tcs = tcs_fields(&h, &e);
    assert_eq!((tcs.cssa, tcs.state, tcs.aep), (0, 1, AEP));
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_eq!(tcs_fields(&h, &e).cssa, 0);
}

/// An XSAVE image for XFRM=3 with recognizable contents and a valid header.
fn patterned_xsave(len: usize) -> Vec<u8> {
    let mut image: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    image[sgxemu_arch::XSTATE_BV_OFFSET..sgxemu_arch::XSTATE_BV_OFFSET + 64].fill(0);
    image[sgxemu_arch::XSTATE_BV_OFFSET] = 0x3;
    image
}

#[test]
fn eresume_restores_extended_state() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let image = patterned_xsave(576);
    h.lp.xsave[..576].copy_from_slice(&image);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert_ne!(h.lp.xsave[..576], image[..]);
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(h.lp.xsave[..576], image[..]);
}

#[test]
fn eresume_opt_out_clears_tf() {
    let (mut h, e) = setup();
    enter_and_interrupt(&mut h, &e);
    let mut regs = outside_regs();
    regs.rflags |= RFLAGS_TF;
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rflags & RFLAGS_TF, 0);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    assert_ne!(regs.rflags & RFLAGS_TF, 0);
}

// ---------------------------------------------------------------------------------------------
// EEXIT

#[test]
fn eexit_outside_enclave_is_gp() {
    let (mut h, _e) = setup();
    let mut regs = outside_regs();
    regs.rbx = ENCLU_RIP;
    let before = regs;
    assert_eq!(h.cpu.eexit(&mut h.lp, &mut regs), Err(Exception::Gp));
    regs.rax = Enclu::Eexit as u64;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    regs.rax = before.rax;
    assert_eq!(regs, before);
}

#[test]
fn eexit_non_canonical_target_is_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    regs.rbx = NON_CANONICAL;
    regs.rax = Enclu::Eexit as u64;
    let probe = regs;
    assert_eq!(h.cpu.eexit(&mut h.lp, &mut regs), Err(Exception::Gp));
    assert_eq!(regs, probe);
    assert!(h.lp.in_enclave(), "still inside");
    assert_eq!(tcs_fields(&h, &e).state, 1);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
}

#[test]
fn eexit_effects() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    // The enclave changes everything it may.
    let inside = Regs {
        rdx: 0x1d,
        rsi: 0x15,
        rdi: 0x1d1,
        r8: 0x18,
        r9: 0x19,
        r10: 0x110,
        r11: 0x111,
        r12: 0x112,
        r13: 0x113,
        r14: 0x114,
        r15: 0x115,
        rsp: e.base + layout::DATA + 0x800,
        rbp: e.base + layout::DATA + 0x900,
        rflags: RFLAGS_FIXED | RFLAGS_IF | RFLAGS_CF,
        fsbase: e.base + 0x7000,
        gsbase: e.base + 0x8000,
        ..regs
    };
    regs = inside;
    let image = patterned_xsave(h.lp.xsave.len());
    h.lp.xsave.copy_from_slice(&image);
    h.eexit(&mut regs, 0x40_2000).unwrap();
    let expected = Regs {
        rax: Enclu::Eexit as u64,
        rbx: 0x40_2000,
        rcx: AEP,
        rip: 0x40_2000,
        fsbase: OUTSIDE_FS,
        gsbase: OUTSIDE_GS,
        ..inside
    };
    assert_eq!(regs, expected);
    assert_eq!(h.lp.xsave, image, "extended state as the enclave left it");
    assert_eq!(h.lp.xcr0, DEFAULT_XFRM, "XCR0 outside: every component the part offers");
    assert!(!h.lp.in_enclave());
    assert!(h.cpu.lps_inside(e.secs).is_empty());
    assert_eq!(tcs_fields(&h, &e).state, 0);
    // The TCS can be entered again.
    let mut regs = enter(&mut h, &e);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eexit_through_enclu() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    regs.rax = Enclu::Eexit as u64;
    regs.rbx = 0x40_3000;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!((regs.rip, regs.rcx, regs.rax), (0x40_3000, AEP, Enclu::Eexit as u64));
    assert!(!h.lp.in_enclave());
}

// ---------------------------------------------------------------------------------------------
// AEX

fn inside_regs(e: &TestEnclave) -> Regs {
    Regs {
        rax: 0x1a,
        rbx: 0x1b,
        rcx: 0x1c,
        rdx: 0x1d,
        rsp: e.base + layout::DATA + 0x800,
        rbp: e.base + layout::DATA + 0x900,
        rsi: 0x15,
        rdi: 0x1d1,
        r8: 0x18,
        r9: 0x19,
        r10: 0x110,
        r11: 0x111,
        r12: 0x112,
        r13: 0x113,
        r14: 0x114,
        r15: 0x115,
        rip: e.base + layout::CODE + 0x20,
        rflags: RFLAGS_FIXED | RFLAGS_IF | RFLAGS_DF | ARITH_FLAGS | RFLAGS_RF,
        fsbase: e.base + 0x7000,
        gsbase: e.base + 0x8000,
    }
}

#[test]
fn aex_saves_gprs_flags_rip_and_fs_gs_into_the_frame() {
    let (mut h, e) = setup();
    enter(&mut h, &e);
    let mut regs = inside_regs(&e);
    let inside = regs;
    aex_exception(&mut h, &mut regs, Vector::Ud, 0, 0);
    let expected = Gprsgx {
        rax: inside.rax,
        rcx: inside.rcx,
        rdx: inside.rdx,
        rbx: inside.rbx,
        rsp: inside.rsp,
        rbp: inside.rbp,
        rsi: inside.rsi,
        rdi: inside.rdi,
        r8: inside.r8,
        r9: inside.r9,
        r10: inside.r10,
        r11: inside.r11,
        r12: inside.r12,
        r13: inside.r13,
        r14: inside.r14,
        r15: inside.r15,
        rflags: inside.rflags,
        rip: inside.rip,
        ursp: OUTSIDE_RSP,
        urbp: OUTSIDE_RBP,
        exitinfo: ExitInfo::new(Vector::Ud as u8, ExitType::HardwareException).0,
        reserved: 0,
        fsbase: inside.fsbase,
        gsbase: inside.gsbase,
    };
    assert_eq!(frame_gpr(&h, &e, 0), expected);
    assert_eq!(frame_gpr(&h, &e, 1), Gprsgx::default(), "only frame CSSA is written");
}

#[test]
fn aex_exitinfo_per_vector() {
    let hw = ExitType::HardwareException;
    let cases: [(Vector, Option<ExitType>); 13] = [
        (Vector::De, Some(hw)),
        (Vector::Db, Some(hw)),
        (Vector::Bp, Some(ExitType::SoftwareException)),
        (Vector::Of, None),
        (Vector::Br, Some(hw)),
        (Vector::Ud, Some(hw)),
        (Vector::Nm, None),
        (Vector::Gp, Some(hw)),
        (Vector::Pf, Some(hw)),
        (Vector::Mf, Some(hw)),
        (Vector::Ac, Some(hw)),
        (Vector::Xm, Some(hw)),
        (Vector::Cp, None),
    ];
    let (mut h, e) = setup();
    for (vector, exit_type) in cases {
        let mut regs = enter(&mut h, &e);
        let addr = if vector == Vector::Pf { e.base + layout::RODATA + 0x10 } else { 0 };
        aex_exception(&mut h, &mut regs, vector, 0, addr);
        let expected = exit_type.map_or(ExitInfo::NONE, |t| ExitInfo::new(vector as u8, t));
        assert_eq!(frame_gpr(&h, &e, 0).exit_info(), expected, "vector {vector}");
        let mut regs = outside_regs();
        h.eresume(&mut regs, e.tcs, AEP).unwrap();
        h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    }
    let mut regs = enter(&mut h, &e);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert_eq!(frame_gpr(&h, &e, 0).exitinfo, 0, "interrupt");
}

fn no_exinfo_enclave(h: &mut Harness) -> TestEnclave {
    let mut image = default_secs();
    image.miscselect = 0;
    TestEnclave::build_with(h, image)
}

#[test]
fn aex_gp_and_pf_exitinfo_need_miscselect_exinfo() {
    let mut h = Harness::new();
    let e = no_exinfo_enclave(&mut h);
    for vector in [Vector::Gp, Vector::Pf] {
        let mut regs = enter(&mut h, &e);
        aex_exception(&mut h, &mut regs, vector, 0x8005, e.base + layout::RODATA);
        assert_eq!(frame_gpr(&h, &e, 0).exitinfo, 0, "vector {vector} without EXINFO");
        let mut regs = outside_regs();
        h.eresume(&mut regs, e.tcs, AEP).unwrap();
        h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    }
    // Always-reported vectors do not depend on MISCSELECT.
    let mut regs = enter(&mut h, &e);
    aex_exception(&mut h, &mut regs, Vector::De, 0, 0);
    assert_eq!(frame_gpr(&h, &e, 0).exit_info(), ExitInfo::new(0, ExitType::HardwareException));
}

fn exinfo(h: &Harness, e: &TestEnclave) -> (u64, u32, u32) {
    let bytes = frame_bytes(h, e, 0, GPR_OFFSET - 16, 16);
    let maddr = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let errcd = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let reserved = u32::from_le_bytes(bytes[12..].try_into().unwrap());
    (maddr, errcd, reserved)
}

#[test]
fn aex_exinfo_for_pf_and_gp() {
    let (mut h, e) = setup();
    // #PF: full (not page-aligned) address, error code with bit 15.
    let mut regs = enter(&mut h, &e);
    let addr = e.base + layout::RODATA + 0x123;
    let code = (PfErrorCode::P | PfErrorCode::W | PfErrorCode::U | PfErrorCode::SGX).bits();
    aex_exception(&mut h, &mut regs, Vector::Pf, code, addr);
    assert_eq!(exinfo(&h, &e), (addr, 0x8007, 0));
    assert_eq!(frame_gpr(&h, &e, 0).exit_info(), ExitInfo::new(14, ExitType::HardwareException));
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    // #GP: MADDR 0.
    aex_exception(&mut h, &mut regs, Vector::Gp, 0, 0);
    assert_eq!(exinfo(&h, &e), (0, 0, 0));
    // The helper that turns leaf exceptions into AEX events carries the same values.
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    let fault = Exception::Pf { addr: addr + 1, code: PfErrorCode::U | PfErrorCode::W };
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(fault)).unwrap();
    assert_eq!(exinfo(&h, &e), (addr + 1, 0x6, 0));
    // A leaf-raised EPCM fault (P|SGX, no U/S bit): ERRCD has U/S forced to 1 (spec §1.5).
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(Exception::epcm_pf(addr, true))).unwrap();
    assert_eq!(exinfo(&h, &e), (addr, 0x8007, 0));
}

#[test]
fn aex_without_exinfo_leaves_the_misc_region_alone() {
    let mut h = Harness::new();
    let e = no_exinfo_enclave(&mut h);
    let pattern = [0xA5u8; 16];
    h.cpu.write_epc(page(&h, &e, layout::SSA), GPR_OFFSET - 16, &pattern);
    let mut regs = enter(&mut h, &e);
    aex_exception(&mut h, &mut regs, Vector::Pf, 0x8005, e.base + 0x5123);
    assert_eq!(frame_bytes(&h, &e, 0, GPR_OFFSET - 16, 16), pattern.to_vec());
}

#[test]
fn aex_saves_the_xsave_area() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let image = patterned_xsave(h.lp.xsave.len());
    h.lp.xsave.copy_from_slice(&image);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    // XFRM = 3: the 576-byte legacy+header image, nothing beyond.
    assert_eq!(frame_bytes(&h, &e, 0, 0, 576), image[..576].to_vec());
    assert!(frame_bytes(&h, &e, 0, 576, 64).iter().all(|&b| b == 0));
}

#[test]
fn aex_and_eresume_carry_avx512_and_pkru_state() {
    // XFRM = x87|SSE|AVX|AVX-512|PKRU (offered by the default part): 2696 bytes of XSAVE
    // area in the standard format — opmask @1088, ZMM_Hi256 @1152, Hi16_ZMM @1664, PKRU
    // @2688 — still fit one SSA page beside GPRSGX and EXINFO.
    const XFRM: u64 = 0x2E7;
    let mut h = Harness::new();
    let mut image = default_secs();
    image.attributes = Attributes::new(AttributesFlags::MODE64BIT | AttributesFlags::DEBUG, XFRM);
    let e = TestEnclave::build_with(&mut h, image);
    let mut regs = enter(&mut h, &e);
    assert_eq!(h.lp.xcr0, XFRM, "XCR0 := XFRM");
    let len = sgxemu_arch::xsave_size(XFRM);
    assert_eq!(len, 2696);
    let mut state = patterned_xsave(len);
    state[sgxemu_arch::XSTATE_BV_OFFSET..sgxemu_arch::XSTATE_BV_OFFSET + 8].copy_from_slice(&XFRM.to_le_bytes());
    h.lp.xsave[..len].copy_from_slice(&state);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    for (name, offset, size) in
        [("opmask", 1088, 64), ("ZMM_Hi256", 1152, 512), ("Hi16_ZMM", 1664, 1024), ("PKRU", 2688, 8)]
    {
        assert_eq!(frame_bytes(&h, &e, 0, offset, size), state[offset..offset + size].to_vec(), "{name} saved");
    }
    assert_ne!(h.lp.xsave[..len], state[..], "AEX leaves synthetic state");
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(h.lp.xsave[..len], state[..], "ERESUME restores every component");
}

#[test]
fn aex_saves_only_the_xfrm_bits_of_xstate_bv() {
    // The LP holds AVX state (XSTATE_BV bit 2) from outside; the enclave's XFRM is x87|SSE.
    let (mut h, e) = setup();
    let bv = sgxemu_arch::XSTATE_BV_OFFSET;
    h.lp.xsave[bv..bv + 8].copy_from_slice(&0x7u64.to_le_bytes());
    let mut regs = enter(&mut h, &e);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert_eq!(frame_bytes(&h, &e, 0, bv, 8), 0x3u64.to_le_bytes().to_vec(), "XSAVE with RFBM = XFRM");
    let mut regs = outside_regs();
    assert_eq!(h.eresume(&mut regs, e.tcs, AEP), Ok(()), "the saved image restores");
}

#[test]
fn aex_loads_the_synthetic_state() {
    let (mut h, e) = setup();
    enter(&mut h, &e);
    let mut regs = inside_regs(&e);
    let report = h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    let expected = Regs {
        rax: Enclu::Eresume as u64,
        rbx: e.tcs,
        rcx: AEP,
        rip: AEP,
        rsp: OUTSIDE_RSP,
        rbp: OUTSIDE_RBP,
        // CF PF AF ZF SF OF RF cleared, DF/IF/fixed kept.
        rflags: RFLAGS_FIXED | RFLAGS_IF | RFLAGS_DF,
        fsbase: OUTSIDE_FS,
        gsbase: OUTSIDE_GS,
        ..Regs::default()
    };
    assert_eq!(regs, expected);
    assert_eq!(report, sgxemu_cpu::AexReport { vector: None, error_code: 0, cr2: 0 });
    let cleared = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF | RFLAGS_RF;
    assert_eq!(regs.rflags & cleared, 0);
}

fn init_xsave(len: usize) -> Vec<u8> {
    let mut image = vec![0u8; len];
    image[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    image[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    image
}

#[test]
fn aex_resets_extended_state_to_init() {
    let (mut h, e) = setup();
    for event in [
        AexEvent::interrupt(),
        AexEvent::from_exception(Exception::Gp),
        AexEvent { kind: EventKind::Exception { vector: Vector::De, error_code: 0, addr: 0 } },
    ] {
        let mut regs = enter(&mut h, &e);
        let len = h.lp.xsave.len();
        h.lp.xsave.copy_from_slice(&patterned_xsave(len));
        h.cpu.aex(&mut h.lp, &mut regs, event).unwrap();
        assert_eq!(h.lp.xsave, init_xsave(len), "{event:?}");
        let mut regs = outside_regs();
        h.eresume(&mut regs, e.tcs, AEP).unwrap();
        h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    }
}

#[test]
fn aex_on_mf_and_xm_leaves_the_math_status() {
    let (mut h, e) = setup();
    let len = h.lp.xsave.len();
    let mut regs = enter(&mut h, &e);
    h.lp.xsave.copy_from_slice(&patterned_xsave(len));
    aex_exception(&mut h, &mut regs, Vector::Mf, 0, 0);
    let mut expected = init_xsave(len);
    expected[0..2].copy_from_slice(&0x037Eu16.to_le_bytes());
    expected[2..4].copy_from_slice(&0x8081u16.to_le_bytes());
    assert_eq!(h.lp.xsave, expected, "#MF: FCW 0x037E, FSW 0x8081, MXCSR INIT");
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    aex_exception(&mut h, &mut regs, Vector::Xm, 0, 0);
    let mut expected = init_xsave(len);
    expected[24..28].copy_from_slice(&0x1F01u32.to_le_bytes());
    assert_eq!(h.lp.xsave, expected, "#XM: MXCSR 0x1F01, x87 INIT");
}

#[test]
fn aex_increments_cssa_and_leaves_the_tcs_inactive() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    let tcs = tcs_fields(&h, &e);
    assert_eq!((tcs.cssa, tcs.state), (1, 0));
    assert!(!h.lp.in_enclave());
    assert!(h.cpu.lps_inside(e.secs).is_empty());
    h.cpu.check_invariants().unwrap();
}

#[test]
fn aex_restores_tf_and_xcr0() {
    let (mut h, e) = setup();
    let mut regs = outside_regs();
    regs.rflags |= RFLAGS_TF;
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(h.lp.xcr0, 0x3);
    h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()).unwrap();
    assert_ne!(regs.rflags & RFLAGS_TF, 0);
    assert_eq!(h.lp.xcr0, DEFAULT_XFRM, "XCR0 outside: every component the part offers");
    assert_eq!(frame_gpr(&h, &e, 0).rflags & RFLAGS_TF, 0, "the enclave ran without TF");
}

#[test]
fn aex_reports_page_aligned_cr2() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let addr = e.base + layout::RODATA + 0xABC;
    let code = PfErrorCode::P | PfErrorCode::W | PfErrorCode::U | PfErrorCode::SGX;
    let report = h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(Exception::Pf { addr, code })).unwrap();
    assert_eq!(
        report,
        sgxemu_cpu::AexReport { vector: Some(Vector::Pf), error_code: 0x8007, cr2: e.base + layout::RODATA }
    );
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    let report = h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(Exception::Gp)).unwrap();
    assert_eq!(report, sgxemu_cpu::AexReport { vector: Some(Vector::Gp), error_code: 0, cr2: 0 });
}

#[test]
fn nested_aex_uses_the_next_frame_and_eresume_unwinds() {
    let (mut h, e) = setup();
    // First visit, AEX into frame 0.
    enter(&mut h, &e);
    let mut regs = inside_regs(&e);
    let first = regs;
    aex_exception(&mut h, &mut regs, Vector::Ud, 0, 0);
    assert_eq!(tcs_fields(&h, &e).cssa, 1);
    // The exception handler: EENTER at CSSA=1 reports it in RAX and uses frame 1.
    let mut regs = outside_regs();
    regs.rsp = 0x6000_0000;
    regs.rbp = 0x6000_0080;
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rax, 1, "RAX = CSSA");
    let frame1 = frame_gpr(&h, &e, 1);
    assert_eq!((frame1.ursp, frame1.urbp), (0x6000_0000, 0x6000_0080));
    assert_eq!(frame_gpr(&h, &e, 0).ursp, OUTSIDE_RSP, "frame 0 keeps its URSP");
    let mut handler = inside_regs(&e);
    handler.r12 = 0xAAAA;
    handler.rip = e.base + layout::CODE + 0x40;
    let second = handler;
    regs = handler;
    aex_exception(&mut h, &mut regs, Vector::Gp, 0, 0);
    assert_eq!(tcs_fields(&h, &e).cssa, 2);
    assert_eq!((regs.rsp, regs.rbp), (0x6000_0000, 0x6000_0080), "synthetic RSP/RBP from frame 1");
    assert_eq!(frame_gpr(&h, &e, 1).rip, second.rip);
    assert_eq!(frame_gpr(&h, &e, 0).rip, first.rip);
    // No free frame left.
    assert_eenter_fails(&mut h, e.tcs, AEP, Exception::Gp, "CSSA == NSSA");
    // Unwind: resume the handler (frame 1), it EEXITs, then resume the original (frame 0).
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!((regs.rip, regs.r12), (second.rip, 0xAAAA));
    assert_eq!(tcs_fields(&h, &e).cssa, 1);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    let mut regs = outside_regs();
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!((regs.rip, regs.r12, regs.rax), (first.rip, first.r12, first.rax));
    assert_eq!(tcs_fields(&h, &e).cssa, 0);
    h.eexit(&mut regs, ENCLU_RIP + 3).unwrap();
    h.cpu.check_invariants().unwrap();
}

#[test]
fn aex_outside_enclave_mode_is_a_no_op() {
    let (mut h, e) = setup();
    let mut regs = outside_regs();
    let before = regs;
    assert_eq!(h.cpu.aex(&mut h.lp, &mut regs, AexEvent::interrupt()), None);
    assert_eq!(regs, before);
    assert_eq!(tcs_fields(&h, &e).cssa, 0);
}
