//! Building an enclave: ECREATE, EADD, EEXTEND and EINIT against spec §4.1–§4.4, and
//! MRENCLAVE against an independent SHA-256 of the §9.1 record stream built by hand here.
//!
//! Coverage, per leaf and numbered check (spec check → test):
//!
//! **ECREATE (§4.1)**
//! 1. PAGEINFO not 32-aligned → #GP: `ecreate_misaligned_pageinfo_is_gp`. RCX not 4K-aligned
//!    → #GP (before the EPC check): `ecreate_misaligned_target_is_gp`. RCX not in EPC →
//!    #PF(RCX, P|W|SGX): `ecreate_target_outside_epc_is_pf_on_target`.
//! 2. SRCPGE not 4K / SECINFO not 64 aligned, LINADDR ≠ 0, SECS ≠ 0 → #GP (after step 1):
//!    `ecreate_pageinfo_field_checks_are_gp`.
//! 3. SECINFO reserved bits (FLAGS 7:6, 63:16) / bytes → #GP:
//!    `ecreate_secinfo_reserved_bits_or_bytes_are_gp`; PENDING/MODIFIED/PR are not reserved
//!    and ignored: `ecreate_ignores_secinfo_state_bits`; PT ≠ PT_SECS → #GP:
//!    `ecreate_secinfo_page_type_other_than_secs_is_gp`.
//! 4. Target locked → #GP: `concurrent_ecreates_of_one_page_create_it_once` (a lock race can only
//!    be provoked with threads; the test asserts exactly one success and only #GP/#PF otherwise).
//!    EPCM(RCX).VALID → #PF(RCX), after step 3 and before step 5: `ecreate_on_valid_target_is_pf_on_target`.
//! 5. SECS validation, each → #GP with the EPCM entry left invalid (table-driven, each case named):
//!    XFRM[1:0] ≠ 11b `ecreate_secs_xfrm_low_bits_not_both_set_is_gp`; XFRM not supported by
//!    CPUID.(12h,1) `ecreate_secs_xfrm_not_supported_by_the_part_is_gp`; XFRM XSETBV-inconsistent
//!    (partial AVX-512 / MPX / AMX, AVX-512 without AVX) `ecreate_secs_xfrm_inconsistent_is_gp`;
//!    MISCSELECT bit outside CPUID.(12h,0).EBX (and MISCSELECT = 0 accepted, §13.3)
//!    `ecreate_secs_miscselect_unsupported_bit_is_gp`; SSAFRAMESIZE too small, with and without
//!    EXINFO, x87/SSE, AVX (0x7) and AMX `ecreate_secs_ssaframesize_too_small_is_gp` (the 16 EXINFO
//!    bytes can never decide alone: no architectural XSAVE size + 184 lies within 16 bytes below a
//!    page multiple, so both MISCSELECT values are checked on both sides of every boundary);
//!    MODE64BIT and non-canonical BASEADDR, 32-bit and BASEADDR ≥ 4 GiB
//!    `ecreate_secs_64bit_noncanonical_base_is_gp`; SIZE > 2^CPUID max (64/32-bit, from the
//!    configured CPUID; SIZE equal to the maximum is accepted, as on hardware)
//!    `ecreate_secs_size_above_cpuid_maximum_is_gp`; SIZE < 8192
//!    `ecreate_secs_size_below_two_pages_is_gp`; SIZE not a power of two
//!    `ecreate_secs_size_not_power_of_two_is_gp` (and every single-bit flip of SIZE in
//!    `einit_one_flipped_bit_of_enclave_content_fails_with_invalid_measurement`); BASEADDR not
//!    aligned to SIZE `ecreate_secs_base_not_aligned_to_size_is_gp`; attribute not settable,
//!    INIT and reserved bits included `ecreate_secs_attribute_not_settable_is_gp`; each reserved
//!    SECS range non-zero `ecreate_secs_reserved_fields_nonzero_is_gp`; CONFIGID/CONFIGSVN
//!    without KSS `ecreate_secs_configid_or_configsvn_without_kss_is_gp`.
//! 6. Effects (EPCM PT_SECS, RWX 0 even if SECINFO asks, ADDR 0; ECREATE record measured; EID
//!    increasing; input MRENCLAVE/MRSIGNER/ISVPRODID/ISVSVN ignored):
//!    `ecreate_success_makes_a_secs_entry_and_measures_the_ecreate_record`,
//!    `einit_success_commits_mrenclave_mrsigner_isvprodid_isvsvn_and_init`.
//!
//! §3.4 (operands go through paging first: ordinary #PF without the SGX bit):
//! `ecreate_operands_go_through_paging_first`.
//!
//! **EADD (§4.2)**
//! 1. PAGEINFO/RCX misaligned → #GP: `eadd_misaligned_pageinfo_or_target_is_gp`; RCX not in EPC
//!    → #PF(RCX, W): `eadd_target_outside_epc_is_pf_on_target`.
//! 2. SRCPGE/SECS/LINADDR not 4K, SECINFO not 64 aligned → #GP: `eadd_pageinfo_field_alignment_is_gp`;
//!    SECS not in EPC → #PF(SECS) (before step 3): `eadd_secs_outside_epc_is_pf_on_secs`.
//! 3. SECINFO reserved bits/bytes → #GP: `eadd_secinfo_reserved_bits_are_gp`; PENDING/MODIFIED/PR
//!    are not reserved: measured as given, never copied into the EPCM
//!    (`eadd_ignores_secinfo_state_bits_but_measures_them`); PT ∉ {REG, TCS} → #GP:
//!    `eadd_secinfo_page_type_not_reg_or_tcs_is_gp`.
//! 4. Target locked → #GP: `concurrent_eadds_to_one_target_add_it_once` (race, allowed outcomes);
//!    target valid → #PF(RCX, W), after step 3, before step 5: `eadd_on_valid_target_is_pf_on_target`.
//! 5. SECS locked → #GP: `concurrent_eadds_to_one_target_add_it_once`; SECS operand invalid / not
//!    a SECS (REG, VA, removed SECS) → #PF(SECS), before step 7: `eadd_secs_operand_not_a_valid_secs_is_pf_on_secs`.
//! 6. Copy: `eadd_success_copies_the_page_sets_the_epcm_and_measures_the_eadd_record`.
//! 7. TCS reserved area non-zero → #GP: `eadd_tcs_with_nonzero_reserved_area_is_gp`; 32-bit
//!    FSLIMIT/GSLIMIT → #GP: `eadd_tcs_of_32bit_enclave_needs_fs_gs_limits_ending_in_fff`;
//!    W without R → #GP: `eadd_reg_writable_without_read_is_gp`.
//! 8. LINADDR outside ELRANGE → #GP: `eadd_linaddr_outside_elrange_is_gp`; measurement busy →
//!    #GP: `concurrent_eadds_to_one_target_add_it_once`; after EINIT → #GP: `eadd_after_einit_is_gp`.
//! 9. TCS RWX forced to 0 before measuring, DBGOPTIN/CSSA/AEP/STATE zeroed:
//!    `eadd_tcs_forces_dbgoptin_cssa_aep_state_to_zero_and_rwx_to_zero_before_measuring`,
//!    `mrenclave_equals_an_independent_sha256_of_the_hand_built_record_stream`.
//! 10. EADD record: `eadd_success_copies_…`, `mrenclave_equals_…` (also for an unmeasured page).
//! 11. EPCM fields: `eadd_success_copies_the_page_sets_the_epcm_and_measures_the_eadd_record`.
//!
//! **EEXTEND (§4.3)**
//! 1. RBX not 4K → #GP, RBX not in EPC → #PF(RBX), both before step 2:
//!    `eextend_misaligned_secs_is_gp_and_secs_outside_epc_is_pf_on_secs`.
//! 2. RCX not 256-aligned → #GP, not in EPC → #PF(RCX):
//!    `eextend_misaligned_chunk_is_gp_and_chunk_outside_epc_is_pf_on_chunk`.
//! 3. EPCM busy → #GP: `concurrent_eextends_only_succeed_or_take_gp`; invalid, or PT ∉ {REG, TCS}
//!    (SECS, VA, TRIM — before the step 4 "initialized" #GP) → #PF(RCX):
//!    `eextend_chunk_in_invalid_or_non_reg_tcs_page_is_pf_on_chunk`.
//! 4. Wrong owner SECS → #GP: `eextend_with_a_secs_that_does_not_own_the_page_is_gp`; measurement
//!    busy → #GP: `concurrent_eextends_only_succeed_or_take_gp`; after EINIT → #GP: `eextend_after_einit_is_gp`.
//! 5. Offset includes the chunk's position; data read from the EPC as it is now:
//!    `eextend_measures_the_chunk_at_its_enclave_offset_as_it_is_now_in_the_epc`, `mrenclave_equals_…`.
//!
//! A page's sixteen leaves at once (the driver's path): `eextend_page_is_sixteen_eextends_back_to_back_with_the_same_results`,
//! and with host work overlapped: `eextend_page_overlapped_calls_alongside_before_each_chunk_and_measures_the_same`.
//!
//! **EINIT (§4.4)**
//! 1. SIGSTRUCT/SECS not 4K, token not 512 aligned → #GP; SECS not in EPC → #PF(SECS):
//!    `einit_misaligned_operands_are_gp_and_secs_outside_epc_is_pf_on_secs`.
//! 2. Copy: implicit in every test (operands in kernel memory).
//! 3. HEADER, VENDOR, HEADER2, EXPONENT, reserved [44,128), CET [908,910), [910,912), [992,1008),
//!    [1028,1040) → SGX_INVALID_SIG_STRUCT, before steps 4–6:
//!    `einit_sigstruct_header_fields_and_reserved_areas_are_checked_first`; SDK "type" bit 31 and
//!    VENDOR 0x8086 accepted: `einit_accepts_vendor_intel_and_the_sdk_debug_type_bit`.
//! 4. Unmasked event → SGX_UNMASKED_EVENT (after step 3, before 5 and 6; retry succeeds):
//!    `einit_pending_unmasked_event_is_unmasked_event_and_retry_succeeds`.
//! 5. Signature (SIGNATURE, signed field, Q1, Q2, modulus) → SGX_INVALID_SIGNATURE, before steps 6
//!    and 8: `einit_bad_signature_is_invalid_signature`.
//! 6. SECS locked → #GP: `concurrent_einits_initialize_the_enclave_exactly_once`; SECS invalid / not
//!    a SECS → #PF(SECS): `einit_secs_operand_not_a_valid_secs_is_pf_on_secs`.
//! 7. ISVFAMILYID without KSS → SGX_INVALID_SIG_STRUCT (before 8 and 9):
//!    `einit_isvfamilyid_without_kss_is_invalid_sig_struct`; with KSS it is committed:
//!    `einit_with_kss_commits_isvfamilyid_and_isvextprodid`.
//! 8. Already initialized → #GP (before 9 and later): `einit_of_an_initialized_enclave_is_gp`;
//!    measurement busy: `concurrent_einits_initialize_the_enclave_exactly_once`.
//! 9. MRENCLAVE ≠ ENCLAVEHASH → SGX_INVALID_MEASUREMENT (before 12 and 13):
//!    `einit_enclavehash_mismatch_is_invalid_measurement`.
//! 10. MRSIGNER = SHA-256(MODULUS): `einit_success_commits_…`, `mrenclave_equals_…`.
//! 11. EINITTOKENKEY and MRSIGNER ≠ LEPUBKEYHASH → SGX_INVALID_ATTRIBUTE (before 13/14):
//!     `einit_einittokenkey_enclave_needs_mrsigner_equal_to_le_hash`; the positive case in
//!     `einit_token_mac_key_agrees_with_egetkey_einittoken_in_a_launch_enclave`.
//! 12. ATTRIBUTES/XFRM and MISCSELECT under their masks → SGX_INVALID_ATTRIBUTE (before 13):
//!     `einit_attribute_or_miscselect_mismatch_under_mask_is_invalid_attribute`.
//! 13. Token invalid and MRSIGNER ≠ LEPUBKEYHASH → SGX_INVALID_EINITTOKEN; an invalid token's other
//!     bytes are ignored: `einit_invalid_token_with_le_hash_other_than_mrsigner_is_invalid_einittoken`.
//! 14. Valid token:
//!     - masked DEBUG on a non-debug SECS → 16:
//!       `einit_valid_token_masked_debug_on_non_debug_enclave_is_invalid_einittoken`;
//!     - reserved bytes / VALID bits 31:1 → 16 (before CPUSVN):
//!       `einit_valid_token_with_reserved_bits_is_invalid_einittoken`;
//!     - CPUSVNLE above → SGX_INVALID_CPUSVN (before the MAC):
//!       `einit_valid_token_cpusvnle_above_platform_is_invalid_cpusvn`;
//!     - bad MAC → 16: `einit_valid_token_with_bad_mac_is_invalid_einittoken`;
//!     - token MRENCLAVE/MRSIGNER → 4, ATTRIBUTES → 2 (after the MAC):
//!       `einit_valid_token_for_another_enclave_is_invalid_measurement_or_attribute`;
//!     - a correct MAC (§11.3, derived here from the configured `PlatformSecrets`) launches an
//!       enclave whose signer is not the LE hash:
//!       `einit_valid_token_with_correct_mac_launches_an_enclave_whose_signer_is_not_the_le_hash`;
//!     - the §11.3 key equals EGETKEY(EINITTOKEN) in a launch enclave:
//!       `einit_token_mac_key_agrees_with_egetkey_einittoken_in_a_launch_enclave`.
//! 15. Commit (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, INIT; KSS fields only with KSS), seen
//!     through EREPORT: `einit_success_commits_mrenclave_mrsigner_isvprodid_isvsvn_and_init`,
//!     `einit_with_kss_commits_isvfamilyid_and_isvextprodid`.
//!
//! Required cross-checks:
//! * (a) MRENCLAVE = SHA-256 (the `sha2` crate) of the 64-byte records pushed by hand from §9.1,
//!   with a TCS (forced fields), an unmeasured page and partially measured pages; EINIT accepts
//!   a SIGSTRUCT carrying it and `mrenclave_so_far` equals it:
//!   `mrenclave_equals_an_independent_sha256_of_the_hand_built_record_stream`.
//! * (b) One flipped bit: every SIGSTRUCT byte (every bit of each field's first/last byte) gives the
//!   code of the first failing check in §4.4 order —
//!   `einit_one_flipped_sigstruct_bit_anywhere_fails_with_the_code_of_the_first_failing_check`;
//!   re-signed field changes fail at their own check — `einit_resigned_field_changes_fail_at_their_own_check`;
//!   enclave content (page byte, SECINFO flag, page offset, SSAFRAMESIZE, SIZE, a skipped
//!   EEXTEND) → SGX_INVALID_MEASUREMENT, SECS attributes/MISCSELECT → SGX_INVALID_ATTRIBUTE,
//!   unmeasured bytes and BASEADDR → success —
//!   `einit_one_flipped_bit_of_enclave_content_fails_with_invalid_measurement`.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::thread;

use sgxemu_arch::{
    Attributes, AttributesFlags, Einittoken, ErrorCode, FromBytes, FromZeros, INTEL_LE_PUBKEY_HASH, IntoBytes, Keyname,
    Keyrequest, PAGE_SIZE, PageType, PfErrorCode, Report, SecinfoFlags, Secs, Sigstruct, Targetinfo, Tcs,
};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image, tcs_image, test_signing_key};
use sgxemu_cpu::{
    EpcmView, Exception, LeafResult, Lp, Memory, PlatformConfig, PlatformSecrets, Processor, Regs, SparseMemory, Status,
};
use sgxemu_crypto::{KeyDependencies, PKCS1_SHA256_PADDING, SigningKey, aes128_cmac, derive_key};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

const BASE: u64 = 0x10_0000_0000;
const SIZE: u64 = 1 << 20;
const AEP: u64 = 0x40_1000;
const SEED: [u8; 16] = *b"encls-build-seed";
const R: SecinfoFlags = SecinfoFlags::R;
const W: SecinfoFlags = SecinfoFlags::W;
const X: SecinfoFlags = SecinfoFlags::X;
/// Raw SECINFO.FLAGS of a SECS (PT_SECS = 0, no permissions).
const PT_SECS_FLAGS: u64 = 0;

/// A change applied to a SIGSTRUCT in a table-driven test.
type SigTweak = fn(&mut Sigstruct);
/// A change applied to an EINITTOKEN in a table-driven test.
type TokenTweak = fn(&mut Einittoken);

static SIGNER: LazyLock<SigningKey> = LazyLock::new(test_signing_key);

fn config() -> PlatformConfig {
    PlatformConfig { secrets: Some(PlatformSecrets::from_seed(SEED)), ..PlatformConfig::default() }
}

fn harness() -> Harness {
    Harness::with_config(config())
}

/// EPCM-induced #PF on a read operand: P | SGX.
fn sgx_pf(addr: u64) -> Exception {
    Exception::Pf { addr, code: PfErrorCode::P | PfErrorCode::SGX }
}

/// EPCM-induced #PF on a written operand: P | W | SGX.
fn sgx_pf_w(addr: u64) -> Exception {
    Exception::Pf { addr, code: PfErrorCode::P | PfErrorCode::W | PfErrorCode::SGX }
}

fn error(code: ErrorCode) -> LeafResult {
    Ok(Status::Error(code))
}

fn view(h: &Harness, epc: u64) -> EpcmView {
    h.cpu.epcm_view(h.cpu.epc_index(epc).expect("an EPC address"))
}

fn reg(perms: SecinfoFlags) -> SecinfoFlags {
    perms.with_page_type(PageType::Reg)
}

fn tcs_type() -> SecinfoFlags {
    SecinfoFlags::from(PageType::Tcs)
}

/// The default SECS image (64-bit, DEBUG, XFRM 3, EXINFO, 1-page SSA frames) with `f` applied.
fn secs_with(f: impl FnOnce(&mut Secs)) -> Secs {
    let mut secs = secs_image(BASE, SIZE);
    f(&mut secs);
    secs
}

fn page_of(bytes: &[u8]) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    page[..bytes.len()].copy_from_slice(bytes);
    page
}

fn pattern(seed: u8) -> [u8; PAGE_SIZE] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
}

/// ECREATE of `secs` into `target` with SECINFO.FLAGS = `secinfo` (raw), PAGEINFO at the
/// harness's scratch address.
fn ecreate_to(h: &mut Harness, secs: &Secs, secinfo: u64, target: u64) -> Result<(), Exception> {
    h.mem.write(scratch::SECS, secs.as_bytes()).unwrap();
    h.put_secinfo(SecinfoFlags::from_bits_retain(secinfo));
    h.put_pageinfo(0, scratch::SECS, scratch::SECINFO, 0);
    h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target)
}

/// EADD of `data` at `linaddr` with SECINFO.FLAGS = `flags` (raw) into `target`.
fn eadd_to(
    h: &mut Harness,
    secs: u64,
    linaddr: u64,
    flags: u64,
    data: &[u8; PAGE_SIZE],
    target: u64,
) -> Result<(), Exception> {
    h.mem.write(scratch::PAGE, data).unwrap();
    h.put_secinfo(SecinfoFlags::from_bits_retain(flags));
    h.put_pageinfo(linaddr, scratch::PAGE, scratch::SECINFO, secs);
    h.cpu.eadd(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target)
}

/// The default enclave, ECREATEd only.
fn new_secs(h: &mut Harness) -> u64 {
    h.ecreate(&secs_image(BASE, SIZE)).expect("ECREATE of the default SECS")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// MRSIGNER of the test key, computed here: SHA-256 of the little-endian modulus.
fn signer_hash() -> [u8; 32] {
    sha256(&SIGNER.modulus_le())
}

fn set_le_hash(lp: &mut Lp, cpu: &Processor, hash: &[u8; 32]) {
    for (i, chunk) in hash.chunks_exact(8).enumerate() {
        let value = u64::from_le_bytes(chunk.try_into().unwrap());
        cpu.wrmsr(lp, sgxemu_arch::IA32_SGXLEPUBKEYHASH0 + i as u32, value).unwrap();
    }
}

fn le_hash_bytes(msrs: [u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, msr) in out.chunks_exact_mut(8).zip(msrs) {
        chunk.copy_from_slice(&msr.to_le_bytes());
    }
    out
}

/// EINIT with `sig` at scratch::SIGSTRUCT and `token` at scratch::TOKEN; the LP's launch
/// MSRs are left as they are.
fn einit_raw(h: &mut Harness, secs: u64, sig: &Sigstruct, token: &Einittoken) -> LeafResult {
    h.mem.write(scratch::SIGSTRUCT, sig.as_bytes()).unwrap();
    h.mem.write(scratch::TOKEN, token.as_bytes()).unwrap();
    h.cpu.einit(&mut h.lp, &mut h.mem, scratch::SIGSTRUCT, secs, scratch::TOKEN)
}

// --- The §9.1 record stream, built by hand (plain byte pushes, independent of sgxemu_crypto) --

fn push_record(stream: &mut Vec<u8>, tag: &[u8; 8], fields: &[&[u8]]) {
    let start = stream.len();
    stream.extend_from_slice(tag);
    for field in fields {
        stream.extend_from_slice(field);
    }
    assert!(stream.len() - start <= 64);
    stream.resize(start + 64, 0);
}

fn push_ecreate(stream: &mut Vec<u8>, ssaframesize: u32, size: u64) {
    push_record(stream, b"ECREATE\0", &[&ssaframesize.to_le_bytes(), &size.to_le_bytes()]);
}

fn push_eadd(stream: &mut Vec<u8>, offset: u64, secinfo_flags: u64) {
    push_record(stream, b"EADD\0\0\0\0", &[&offset.to_le_bytes(), &secinfo_flags.to_le_bytes()]);
}

fn push_eextend(stream: &mut Vec<u8>, offset: u64, chunk: &[u8]) {
    assert_eq!(chunk.len(), 256);
    push_record(stream, b"EEXTEND\0", &[&offset.to_le_bytes()]);
    stream.extend_from_slice(chunk);
}

fn push_eextend_page(stream: &mut Vec<u8>, offset: u64, page: &[u8; PAGE_SIZE]) {
    for (i, chunk) in page.chunks_exact(256).enumerate() {
        push_eextend(stream, offset + 256 * i as u64, chunk);
    }
}

// --- Enclaves built but not initialized ------------------------------------------------------

/// One page of an enclave under construction.
#[derive(Clone)]
struct PagePlan {
    offset: u64,
    flags: SecinfoFlags,
    data: [u8; PAGE_SIZE],
    measured: bool,
}

/// The TestEnclave layout (TCS, two SSA frames, code, data, rodata); the SSA pages are
/// added but not measured.
fn page_plan() -> Vec<PagePlan> {
    let mut code = pattern(0x33);
    code[..4].copy_from_slice(&[0x0f, 0x01, 0xd7, 0xcc]); // ENCLU; INT3
    let page = |offset, flags, data, measured| PagePlan { offset, flags, data, measured };
    vec![
        page(layout::TCS, tcs_type(), tcs_image(layout::SSA, layout::NSSA, layout::CODE, layout::DATA), true),
        page(layout::SSA, reg(R | W), [0; PAGE_SIZE], false),
        page(layout::SSA + 0x1000, reg(R | W), [0; PAGE_SIZE], false),
        page(layout::CODE, reg(R | X), code, true),
        page(layout::DATA, reg(R | W), pattern(0x11), true),
        page(layout::RODATA, reg(R), pattern(0x22), true),
    ]
}

/// An enclave that went through ECREATE/EADD/EEXTEND (and whose pages are mapped), not EINIT.
struct Draft {
    secs: u64,
    image: Secs,
    /// EPC page by enclave offset.
    pages: BTreeMap<u64, u64>,
}

impl Draft {
    fn la(&self, offset: u64) -> u64 {
        self.image.baseaddr + offset
    }
}

fn build_draft(h: &mut Harness, image: &Secs, plan: &[PagePlan]) -> Draft {
    let secs = h.ecreate(image).expect("ECREATE");
    let mut pages = BTreeMap::new();
    for p in plan {
        let la = image.baseaddr + p.offset;
        let epc = h.eadd(secs, la, p.flags, &p.data).expect("EADD");
        if p.measured {
            h.eextend_page(secs, epc).expect("EEXTEND");
        }
        let tcs = p.flags.page_type() == Some(PageType::Tcs);
        h.map(la, epc, p.flags.contains(W) || tcs, p.flags.contains(X));
        pages.insert(p.offset, epc);
    }
    Draft { secs, image: *image, pages }
}

/// A SIGSTRUCT for `d` as measured so far (the fields TestEnclave uses), `tweak` applied
/// before signing with the project's signer.
fn sign_draft(h: &Harness, d: &Draft, tweak: impl FnOnce(&mut Sigstruct)) -> Sigstruct {
    let mut sig = Sigstruct::new_unsigned();
    sig.enclavehash = h.cpu.mrenclave_so_far(d.secs).expect("a valid SECS");
    sig.attributes = d.image.attributes;
    sig.attributemask = Attributes { flags: !0, xfrm: !0 };
    sig.miscselect = d.image.miscselect;
    sig.miscmask = !0;
    sig.isvprodid = 7;
    sig.isvsvn = 3;
    tweak(&mut sig);
    sgxemu_crypto::sign(&mut sig, &SIGNER).expect("the test key signs");
    sig
}

/// EENTER, run `leaf` inside, EEXIT.
fn inside<T>(h: &mut Harness, tcs_la: u64, leaf: impl FnOnce(&mut Harness, &mut Regs) -> T) -> T {
    let mut regs = Regs { rsp: 0x7fff_0000, rbp: 0x7fff_0100, rip: 0x40_0000, ..Regs::default() };
    h.eenter(&mut regs, tcs_la, AEP).expect("EENTER");
    let out = leaf(h, &mut regs);
    h.eexit(&mut regs, 0).expect("EEXIT");
    out
}

/// EREPORT (TARGETINFO all zero) from inside the enclave whose TCS is at `tcs_la`, using the
/// RW page at `buf_la` (EPC page `buf_epc`) for operands.
fn report_from_inside(h: &mut Harness, tcs_la: u64, buf_la: u64, buf_epc: u64) -> Report {
    let buf = h.cpu.epc_index(buf_epc).unwrap();
    h.cpu.write_epc(buf, 0, Targetinfo::new_zeroed().as_bytes());
    inside(h, tcs_la, |h, regs| {
        regs.rbx = buf_la;
        regs.rcx = buf_la + 0x200;
        regs.rdx = buf_la + 0x400;
        h.cpu.ereport(&mut h.lp, regs, &h.pt).expect("EREPORT");
    });
    let mut bytes = [0u8; Report::SIZE];
    h.cpu.read_epc(buf, 0x400, &mut bytes);
    Report::read_from_bytes(&bytes[..]).unwrap()
}

/// A fresh harness with a built, signed (not yet initialized) default enclave; the LP's
/// LEPUBKEYHASH holds the test signer's MRSIGNER (the Linux FLC flow).
struct Fixture {
    h: Harness,
    d: Draft,
    sig: Sigstruct,
}

impl Fixture {
    fn new() -> Self {
        Self::with(secs_image(BASE, SIZE), |_| {})
    }

    fn with(image: Secs, tweak: impl FnOnce(&mut Sigstruct)) -> Self {
        let mut h = harness();
        let d = build_draft(&mut h, &image, &page_plan());
        let sig = sign_draft(&h, &d, tweak);
        set_le_hash(&mut h.lp, &h.cpu, &signer_hash());
        Fixture { h, d, sig }
    }

    fn einit(&mut self, sig: &Sigstruct) -> LeafResult {
        einit_raw(&mut self.h, self.d.secs, sig, &Einittoken::new_zeroed())
    }

    fn einit_with_token(&mut self, token: &Einittoken) -> LeafResult {
        let sig = self.sig;
        einit_raw(&mut self.h, self.d.secs, &sig, token)
    }

    /// The fixture's SIGSTRUCT with `tweak` applied and signed again.
    fn resigned(&self, tweak: impl FnOnce(&mut Sigstruct)) -> Sigstruct {
        let mut sig = self.sig;
        tweak(&mut sig);
        sgxemu_crypto::sign(&mut sig, &SIGNER).unwrap();
        sig
    }

    /// The fixture's SIGSTRUCT with `tweak` applied and NOT signed again.
    fn modified(&self, tweak: impl FnOnce(&mut Sigstruct)) -> Sigstruct {
        let mut sig = self.sig;
        tweak(&mut sig);
        sig
    }

    /// The LP's launch hash back to its reset value (Intel's LE key), which is not our signer.
    fn use_intel_le_hash(&mut self) {
        let hash = le_hash_bytes(INTEL_LE_PUBKEY_HASH);
        set_le_hash(&mut self.h.lp, &self.h.cpu, &hash);
        assert_ne!(hash, signer_hash());
    }

    fn secrets(&self) -> PlatformSecrets {
        self.h.cpu.config().secrets.clone().expect("seeded secrets")
    }

    /// Asserts the enclave is still uninitialized: EINIT with the good SIGSTRUCT and the
    /// signer trusted succeeds now.
    fn assert_still_initializable(&mut self) {
        set_le_hash(&mut self.h.lp, &self.h.cpu, &signer_hash());
        let sig = self.sig;
        assert_eq!(self.einit(&sig), Ok(Status::Success), "EINIT after the failure");
        self.h.cpu.check_invariants().unwrap();
    }
}

fn sig_with_byte(sig: &Sigstruct, offset: usize, value: u8) -> Sigstruct {
    let mut bytes = sig.as_bytes().to_vec();
    bytes[offset] = value;
    Sigstruct::read_from_bytes(&bytes[..]).unwrap()
}

fn sig_with_bit_flipped(sig: &Sigstruct, offset: usize, bit: u32) -> Sigstruct {
    sig_with_byte(sig, offset, sig.as_bytes()[offset] ^ (1 << bit))
}

// ---------------------------------------------------------------------------------------------
// ECREATE (§4.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn ecreate_success_makes_a_secs_entry_and_measures_the_ecreate_record() {
    let mut h = harness();
    let target = h.alloc_page();
    // Output fields (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN) in the input are not checked
    // and do not leak into the measurement; RWX in SECINFO is ignored (EPCM RWX = 0).
    let image = secs_with(|s| {
        s.mrenclave = [0xAA; 32];
        s.mrsigner = [0xBB; 32];
        s.isvprodid = 0x1234;
        s.isvsvn = 0x5678;
    });
    assert_eq!(ecreate_to(&mut h, &image, 0x7, target), Ok(()));
    let v = view(&h, target);
    assert!(v.valid);
    assert_eq!(v.page_type, PageType::Secs);
    assert_eq!(v.flags, SecinfoFlags::from(PageType::Secs), "RWX, PENDING, MODIFIED, PR all 0");
    assert!(!v.blocked);
    assert_eq!(v.enclave_address, 0);
    assert_eq!(v.secs, h.cpu.epc_index(target));
    let mut stream = Vec::new();
    push_ecreate(&mut stream, 1, SIZE);
    assert_eq!(h.cpu.mrenclave_so_far(target), Some(sha256(&stream)));
    // EID = CR_NEXT_EID++: a second enclave gets a larger, distinct EID.
    let second = new_secs(&mut h);
    assert!(view(&h, second).eid.unwrap() > v.eid.unwrap());
    h.cpu.check_invariants().unwrap();
}

#[test]
fn ecreate_misaligned_pageinfo_is_gp() {
    let mut h = harness();
    let target = h.alloc_page();
    h.mem.write(scratch::SECS, secs_image(BASE, SIZE).as_bytes()).unwrap();
    h.put_secinfo(SecinfoFlags::from(PageType::Secs));
    for pageinfo in [scratch::PAGEINFO + 8, scratch::PAGEINFO + 16, scratch::PAGEINFO + 1] {
        h.mem.write(pageinfo, &[0u8; 32]).unwrap();
        let info = sgxemu_arch::Pageinfo { linaddr: 0, srcpge: scratch::SECS, secinfo: scratch::SECINFO, secs: 0 };
        h.mem.write(pageinfo, info.as_bytes()).unwrap();
        assert_eq!(
            h.cpu.ecreate(&mut h.lp, &mut h.mem, pageinfo, target),
            Err(Exception::Gp),
            "PAGEINFO {pageinfo:#x}"
        );
    }
    assert!(!view(&h, target).valid);
}

#[test]
fn ecreate_misaligned_target_is_gp() {
    let mut h = harness();
    let target = h.alloc_page();
    for off in [8, 0x800, 0xFFF] {
        assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), PT_SECS_FLAGS, target + off), Err(Exception::Gp));
    }
    // Step 1 order: alignment before "not in EPC".
    assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), PT_SECS_FLAGS, 0x1234), Err(Exception::Gp));
    assert!(!view(&h, target).valid);
}

#[test]
fn ecreate_target_outside_epc_is_pf_on_target() {
    let mut h = harness();
    let cfg = h.cpu.config().clone();
    for target in [0x1000, cfg.epc_base - 0x1000, cfg.epc_base + cfg.epc_size] {
        assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), PT_SECS_FLAGS, target), Err(sgx_pf_w(target)));
    }
}

#[test]
fn ecreate_pageinfo_field_checks_are_gp() {
    let secs = secs_image(BASE, SIZE);
    // (name, linaddr, srcpge, secinfo, secs)
    let cases: [(&str, u64, u64, u64, u64); 6] = [
        ("SRCPGE not 4K aligned", 0, scratch::SECS + 0x800, scratch::SECINFO, 0),
        ("SRCPGE off by 8", 0, scratch::SECS + 8, scratch::SECINFO, 0),
        ("SECINFO not 64-byte aligned", 0, scratch::SECS, scratch::SECINFO + 32, 0),
        ("PAGEINFO.LINADDR != 0", BASE, scratch::SECS, scratch::SECINFO, 0),
        ("PAGEINFO.SECS != 0", 0, scratch::SECS, scratch::SECINFO, 0x1000),
        ("PAGEINFO.SECS is an EPC page", 0, scratch::SECS, scratch::SECINFO, sgxemu_cpu::DEFAULT_EPC_BASE),
    ];
    for (name, linaddr, srcpge, secinfo, secs_field) in cases {
        let mut h = harness();
        let target = h.alloc_page();
        h.mem.write(scratch::SECS, secs.as_bytes()).unwrap();
        h.mem.write(scratch::SECS + 0x800, secs.as_bytes()).unwrap();
        h.put_secinfo(SecinfoFlags::from(PageType::Secs));
        h.put_pageinfo(linaddr, srcpge, secinfo, secs_field);
        assert_eq!(h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target), Err(Exception::Gp), "{name}");
        assert!(!view(&h, target).valid, "{name}: no state change");
        // Step order: RCX not in EPC (step 1) comes before these (step 2).
        assert_eq!(h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, 0x5000), Err(sgx_pf_w(0x5000)), "{name}");
    }
}

#[test]
fn ecreate_secinfo_reserved_bits_or_bytes_are_gp() {
    let secs_flags = SecinfoFlags::from(PageType::Secs).bits();
    let mut cases: Vec<(String, [u8; 64])> = Vec::new();
    for bit in [6, 7, 16, 31, 32, 63] {
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&(secs_flags | 1 << bit).to_le_bytes());
        cases.push((format!("FLAGS bit {bit}"), bytes));
    }
    for byte in [8, 9, 32, 63] {
        let mut bytes = [0u8; 64];
        bytes[byte] = 0x01;
        cases.push((format!("reserved byte {byte}"), bytes));
    }
    for (name, bytes) in cases {
        let mut h = harness();
        let target = h.alloc_page();
        h.mem.write(scratch::SECS, secs_image(BASE, SIZE).as_bytes()).unwrap();
        h.mem.write(scratch::SECINFO, &bytes).unwrap();
        h.put_pageinfo(0, scratch::SECS, scratch::SECINFO, 0);
        assert_eq!(h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target), Err(Exception::Gp), "{name}");
        assert!(!view(&h, target).valid, "{name}: no state change");
    }
}

#[test]
fn ecreate_ignores_secinfo_state_bits() {
    // PENDING, MODIFIED and PR (bits 5:3) are defined SECINFO fields, not reserved ones;
    // ECREATE reads only the page type (spec §1.7).
    let state = SecinfoFlags::STATE_MASK;
    for flags in [SecinfoFlags::PENDING, SecinfoFlags::MODIFIED, SecinfoFlags::PR, state] {
        let mut h = harness();
        let target = h.alloc_page();
        let secinfo = flags.with_page_type(PageType::Secs).bits();
        assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), secinfo, target), Ok(()), "{flags:?}");
        let v = view(&h, target);
        assert_eq!(v.flags, SecinfoFlags::from(PageType::Secs), "{flags:?}: EPCM state bits stay clear");
        let mut stream = Vec::new();
        push_ecreate(&mut stream, 1, SIZE);
        assert_eq!(h.cpu.mrenclave_so_far(target), Some(sha256(&stream)), "{flags:?}: the ECREATE record");
    }
}

#[test]
fn ecreate_secinfo_page_type_other_than_secs_is_gp() {
    for pt in [1u64, 2, 3, 4, 5, 6, 7, 0xFF] {
        let mut h = harness();
        let target = h.alloc_page();
        assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), pt << 8, target), Err(Exception::Gp), "PT {pt}");
        assert!(!view(&h, target).valid);
    }
}

#[test]
fn ecreate_on_valid_target_is_pf_on_target() {
    let mut h = harness();
    let target = h.alloc_page();
    ecreate_to(&mut h, &secs_image(BASE, SIZE), PT_SECS_FLAGS, target).unwrap();
    let eid = view(&h, target).eid;
    let before = h.cpu.mrenclave_so_far(target);
    assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), PT_SECS_FLAGS, target), Err(sgx_pf_w(target)));
    // Step 4 comes before the SECS validation of step 5 ...
    let bad = secs_with(|s| s.size = 0x3000);
    assert_eq!(ecreate_to(&mut h, &bad, PT_SECS_FLAGS, target), Err(sgx_pf_w(target)));
    // ... and after the SECINFO check of step 3.
    assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), 0x200, target), Err(Exception::Gp));
    // A valid REG page as target: same #PF.
    let page = h.eadd(target, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    assert_eq!(ecreate_to(&mut h, &secs_image(BASE, SIZE), PT_SECS_FLAGS, page), Err(sgx_pf_w(page)));
    assert_eq!(view(&h, target).eid, eid, "the existing SECS is untouched");
    assert_ne!(h.cpu.mrenclave_so_far(target), before, "only the EADD extended it");
    h.cpu.check_invariants().unwrap();
}

#[test]
fn ecreate_operands_go_through_paging_first() {
    // §3.4: an unmapped PAGEINFO or source page is an ordinary #PF (no SGX bit).
    let mut h = harness();
    let target = h.alloc_page();
    let unmapped_pageinfo = 0x6000_0000;
    h.mem.unmap(unmapped_pageinfo);
    assert_eq!(
        h.cpu.ecreate(&mut h.lp, &mut h.mem, unmapped_pageinfo, target),
        Err(Exception::Pf { addr: unmapped_pageinfo, code: PfErrorCode::empty() })
    );
    let unmapped_src = 0x6100_0000;
    h.mem.unmap(unmapped_src);
    h.put_secinfo(SecinfoFlags::from(PageType::Secs));
    h.put_pageinfo(0, unmapped_src, scratch::SECINFO, 0);
    assert_eq!(
        h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target),
        Err(Exception::Pf { addr: unmapped_src, code: PfErrorCode::empty() })
    );
    assert!(!view(&h, target).valid);
}

/// Runs ECREATE of `secs` on a fresh processor built from `cfg`; asserts the EPCM entry is
/// valid exactly when ECREATE succeeded.
fn ecreate_on(cfg: &PlatformConfig, secs: &Secs) -> Result<(), Exception> {
    let mut c = cfg.clone();
    c.secrets = Some(PlatformSecrets::from_seed(SEED));
    let mut h = Harness::with_config(c);
    let target = h.alloc_page();
    let result = ecreate_to(&mut h, secs, PT_SECS_FLAGS, target);
    assert_eq!(view(&h, target).valid, result.is_ok(), "EPCM.VALID iff success");
    result
}

fn check_secs_cases(cfg: &PlatformConfig, cases: &[(&str, Secs, Result<(), Exception>)]) {
    for (name, secs, expected) in cases {
        assert_eq!(ecreate_on(cfg, secs), *expected, "case: {name}");
    }
}

const GP: Result<(), Exception> = Err(Exception::Gp);
const OK: Result<(), Exception> = Ok(());

fn with_xfrm(xfrm: u64, ssaframesize: u32) -> Secs {
    secs_with(|s| {
        s.attributes.xfrm = xfrm;
        s.ssaframesize = ssaframesize;
    })
}

#[test]
fn ecreate_secs_xfrm_low_bits_not_both_set_is_gp() {
    check_secs_cases(
        &config(),
        &[
            ("XFRM 0", with_xfrm(0x0, 1), GP),
            ("XFRM x87 only", with_xfrm(0x1, 1), GP),
            ("XFRM SSE only", with_xfrm(0x2, 1), GP),
            ("XFRM SSE|AVX", with_xfrm(0x6, 1), GP),
            ("XFRM x87|SSE", with_xfrm(0x3, 1), OK),
        ],
    );
}

#[test]
fn ecreate_secs_xfrm_not_supported_by_the_part_is_gp() {
    // The default part offers x87, SSE, AVX, AVX-512, PKRU and AMX (0x602E7), not MPX.
    check_secs_cases(
        &config(),
        &[
            ("MPX", with_xfrm(0x1F, 1), GP),
            ("bit 8", with_xfrm(0x103, 1), GP),
            ("bit 63", with_xfrm(0x3 | 1 << 63, 1), GP),
            ("AVX", with_xfrm(0x7, 1), OK),
            ("AVX-512", with_xfrm(0xE7, 1), OK),
            ("PKRU", with_xfrm(0x203, 1), OK),
            ("AMX", with_xfrm(0x6_0003, 3), OK),
            ("everything offered", with_xfrm(0x6_02E7, 3), OK),
        ],
    );
    // A part (or a host XCR0) offering only AVX refuses the rest.
    let avx_only = PlatformConfig { xfrm: 0x7, ..config() };
    check_secs_cases(
        &avx_only,
        &[
            ("AVX-512", with_xfrm(0xE7, 1), GP),
            ("PKRU", with_xfrm(0x203, 1), GP),
            ("AMX", with_xfrm(0x6_0003, 3), GP),
            ("AVX", with_xfrm(0x7, 1), OK),
        ],
    );
}

#[test]
fn ecreate_secs_xfrm_inconsistent_is_gp() {
    // A part with AVX-512, MPX and PKRU: every component is supported, only the
    // XSETBV-consistency rules can reject.
    let cfg = PlatformConfig { xfrm: 0x2FF, ..config() };
    check_secs_cases(
        &cfg,
        &[
            ("AVX-512 opmask only", with_xfrm(0x27, 1), GP),
            ("AVX-512 without Hi16_ZMM", with_xfrm(0x67, 1), GP),
            ("AVX-512 without opmask", with_xfrm(0xC7, 1), GP),
            ("AVX-512 without ZMM_Hi256", with_xfrm(0xA7, 1), GP),
            ("AVX-512 without AVX", with_xfrm(0xE3, 1), GP),
            ("MPX BNDREGS only", with_xfrm(0x0B, 1), GP),
            ("MPX BNDCSR only", with_xfrm(0x13, 1), GP),
            ("full AVX-512", with_xfrm(0xE7, 1), OK),
            ("full MPX", with_xfrm(0x1B, 1), OK),
            ("PKRU", with_xfrm(0x203, 1), OK),
        ],
    );
    let amx = PlatformConfig { xfrm: 0x6_0003, ..config() };
    check_secs_cases(
        &amx,
        &[
            ("AMX XTILECFG only", with_xfrm(0x2_0003, 3), GP),
            ("AMX XTILEDATA only", with_xfrm(0x4_0003, 3), GP),
            ("full AMX", with_xfrm(0x6_0003, 3), OK),
        ],
    );
}

#[test]
fn ecreate_secs_miscselect_unsupported_bit_is_gp() {
    let misc = |m: u32| secs_with(|s| s.miscselect = m);
    check_secs_cases(
        &config(),
        &[
            ("CPINFO", misc(0x2), GP),
            ("EXINFO|CPINFO", misc(0x3), GP),
            ("bit 2", misc(0x4), GP),
            ("bit 31", misc(0x8000_0000), GP),
            ("EXINFO", misc(0x1), OK),
            // §13.3: MISCSELECT = 0 is legal (the pseudo-code's test would reject it).
            ("zero", misc(0x0), OK),
        ],
    );
    let no_exinfo = PlatformConfig { miscselect: sgxemu_arch::Miscselect::empty(), ..config() };
    check_secs_cases(&no_exinfo, &[("EXINFO on a part without it", misc(0x1), GP), ("zero", misc(0), OK)]);
}

#[test]
fn ecreate_secs_ssaframesize_too_small_is_gp() {
    let frame = |xfrm: u64, misc: u32, pages: u32| {
        secs_with(|s| {
            s.attributes.xfrm = xfrm;
            s.miscselect = misc;
            s.ssaframesize = pages;
        })
    };
    // XSAVE(0x3) = 576, XSAVE(0x7) = 832: one page holds either plus GPRSGX (184) and EXINFO (16).
    check_secs_cases(
        &config(),
        &[
            ("0 pages, x87/SSE, EXINFO", frame(0x3, 1, 0), GP),
            ("0 pages, x87/SSE, no EXINFO", frame(0x3, 0, 0), GP),
            ("0 pages, AVX, EXINFO", frame(0x7, 1, 0), GP),
            ("0 pages, AVX, no EXINFO", frame(0x7, 0, 0), GP),
            ("1 page, AVX, EXINFO", frame(0x7, 1, 1), OK),
            ("1 page, AVX, no EXINFO", frame(0x7, 0, 1), OK),
        ],
    );
    // AMX: XSAVE = 11008 bytes; +184 (+16) needs 3 pages.
    let amx = PlatformConfig { xfrm: 0x6_0003, ..config() };
    check_secs_cases(
        &amx,
        &[
            ("2 pages, AMX, EXINFO", frame(0x6_0003, 1, 2), GP),
            ("2 pages, AMX, no EXINFO", frame(0x6_0003, 0, 2), GP),
            ("1 page, AMX, no EXINFO", frame(0x6_0003, 0, 1), GP),
            ("3 pages, AMX, EXINFO", frame(0x6_0003, 1, 3), OK),
            ("3 pages, AMX, no EXINFO", frame(0x6_0003, 0, 3), OK),
        ],
    );
    // AVX-512 + PKRU: XSAVE = 2696; still one page.
    let big = PlatformConfig { xfrm: 0x2E7, ..config() };
    check_secs_cases(&big, &[("1 page, AVX-512|PKRU, EXINFO", frame(0x2E7, 1, 1), OK)]);
}

#[test]
fn ecreate_secs_64bit_noncanonical_base_is_gp() {
    let at = |base: u64, mode64: bool| {
        secs_with(|s| {
            s.baseaddr = base;
            s.size = 0x2000;
            if !mode64 {
                s.attributes.flags &= !AttributesFlags::MODE64BIT.bits();
            }
        })
    };
    check_secs_cases(
        &config(),
        &[
            ("base 2^47", at(0x0000_8000_0000_0000, true), GP),
            ("base 0xFFFF_7FFF_FFFF_E000", at(0xFFFF_7FFF_FFFF_E000, true), GP),
            ("base 2^63", at(0x8000_0000_0000_0000, true), GP),
            ("highest canonical low half", at(0x0000_7FFF_FFFF_E000, true), OK),
            ("canonical high half", at(0xFFFF_8000_0000_0000, true), OK),
            // MODE64BIT=0: base must be below 4 GiB.
            ("32-bit, base 4 GiB", at(0x1_0000_0000, false), GP),
            ("32-bit, canonical base above 4 GiB", at(BASE, false), GP),
            ("32-bit, base just below 4 GiB", at(0xFFFF_E000, false), OK),
        ],
    );
}

#[test]
fn ecreate_secs_size_above_cpuid_maximum_is_gp() {
    let sized = |base: u64, size: u64, mode64: bool| {
        secs_with(|s| {
            s.baseaddr = base;
            s.size = size;
            if !mode64 {
                s.attributes.flags &= !AttributesFlags::MODE64BIT.bits();
            }
        })
    };
    // Default part (Ice Lake-SP): EDX[15:8] = 56, EDX[7:0] = 31. CPUID names the largest
    // supported size, so SIZE equal to it is created (the SDM pseudocode's ">=" is a typo).
    check_secs_cases(
        &config(),
        &[
            ("64-bit 2^56, the maximum", sized(0, 1 << 56, true), OK),
            ("64-bit 2^57", sized(0, 1 << 57, true), GP),
            ("64-bit 2^63", sized(0, 1 << 63, true), GP),
            ("64-bit 2^40", sized(0, 1 << 40, true), OK),
            ("32-bit 2^31, the maximum", sized(0, 1 << 31, false), OK),
            ("32-bit 2^32", sized(0, 1 << 32, false), GP),
        ],
    );
    // The limit comes from the configured CPUID values; Intel confirmed a 64 GiB enclave is
    // created on a part reporting 2^36.
    let client = PlatformConfig { max_enclave_size_64_log2: 36, ..config() };
    check_secs_cases(
        &client,
        &[("64-bit 2^36, the maximum", sized(0, 1 << 36, true), OK), ("64-bit 2^37", sized(0, 1 << 37, true), GP)],
    );
    let small = PlatformConfig { max_enclave_size_64_log2: 20, max_enclave_size_32_log2: 16, ..config() };
    check_secs_cases(
        &small,
        &[
            ("64-bit 2^20", sized(BASE, 1 << 20, true), OK),
            ("64-bit 2^21", sized(BASE, 1 << 21, true), GP),
            ("32-bit 2^16", sized(0, 1 << 16, false), OK),
            ("32-bit 2^17", sized(0, 1 << 17, false), GP),
        ],
    );
}

#[test]
fn ecreate_secs_size_below_two_pages_is_gp() {
    let sized = |size: u64| secs_with(|s| s.size = size);
    check_secs_cases(
        &config(),
        &[("size 0", sized(0), GP), ("size 4096", sized(0x1000), GP), ("size 8192", sized(0x2000), OK)],
    );
}

#[test]
fn ecreate_secs_size_not_power_of_two_is_gp() {
    let sized = |size: u64| secs_with(|s| s.size = size);
    check_secs_cases(
        &config(),
        &[
            ("0x3000", sized(0x3000), GP),
            ("0x6000", sized(0x6000), GP),
            ("1 MiB + 4 KiB", sized(SIZE + 0x1000), GP),
            ("2 MiB - 4 KiB", sized(2 * SIZE - 0x1000), GP),
            ("2 MiB", sized(2 * SIZE), OK),
        ],
    );
}

#[test]
fn ecreate_secs_base_not_aligned_to_size_is_gp() {
    let at = |base: u64, size: u64| {
        secs_with(|s| {
            s.baseaddr = base;
            s.size = size;
        })
    };
    check_secs_cases(
        &config(),
        &[
            ("base +4K, size 8K", at(BASE + 0x1000, 0x2000), GP),
            ("base +512K, size 1M", at(BASE + (SIZE / 2), SIZE), GP),
            ("base +1, size 1M", at(BASE + 1, SIZE), GP),
            ("base +8K, size 8K", at(BASE + 0x2000, 0x2000), OK),
            ("base +1M, size 1M", at(BASE + SIZE, SIZE), OK),
        ],
    );
}

#[test]
fn ecreate_secs_attribute_not_settable_is_gp() {
    let flags = |extra: u64| secs_with(|s| s.attributes.flags |= extra);
    check_secs_cases(
        &config(),
        &[
            ("INIT", flags(1 << 0), GP),
            ("reserved bit 3", flags(1 << 3), GP),
            ("CET (not on this part)", flags(1 << 6), GP),
            ("reserved bit 8", flags(1 << 8), GP),
            ("reserved bit 9", flags(1 << 9), GP),
            ("AEXNOTIFY (not on this part)", flags(1 << 10), GP),
            ("reserved bit 11", flags(1 << 11), GP),
            ("reserved bit 63", flags(1 << 63), GP),
            ("PROVISIONKEY", flags(AttributesFlags::PROVISIONKEY.bits()), OK),
            ("EINITTOKENKEY", flags(AttributesFlags::EINITTOKENKEY.bits()), OK),
            ("KSS", flags(AttributesFlags::KSS.bits()), OK),
        ],
    );
    // A part that does not enumerate PROVISIONKEY as settable.
    let cfg = PlatformConfig { attributes: AttributesFlags::DEBUG | AttributesFlags::MODE64BIT, ..config() };
    check_secs_cases(
        &cfg,
        &[
            ("PROVISIONKEY not settable", flags(AttributesFlags::PROVISIONKEY.bits()), GP),
            ("KSS not settable", flags(AttributesFlags::KSS.bits()), GP),
            ("DEBUG|MODE64BIT", flags(0), OK),
        ],
    );
}

#[test]
fn ecreate_secs_reserved_fields_nonzero_is_gp() {
    let mut cases = Vec::new();
    for (range, offsets) in [
        ("reserved [24,48)", [24usize, 35, 47]),
        ("reserved [96,128)", [96, 110, 127]),
        ("reserved [160,192)", [160, 175, 191]),
        ("reserved [262,4096)", [262, 2000, 4095]),
    ] {
        for off in offsets {
            let mut secs = secs_image(BASE, SIZE);
            secs.as_mut_bytes()[off] = 0x80;
            cases.push((format!("{range} byte {off}"), secs));
        }
    }
    for (name, secs) in cases {
        assert_eq!(ecreate_on(&config(), &secs), GP, "case: {name}");
    }
}

#[test]
fn ecreate_secs_configid_or_configsvn_without_kss_is_gp() {
    let kss = AttributesFlags::KSS.bits();
    check_secs_cases(
        &config(),
        &[
            ("CONFIGID[0]", secs_with(|s| s.configid[0] = 1), GP),
            ("CONFIGID[63]", secs_with(|s| s.configid[63] = 0x80), GP),
            ("CONFIGSVN", secs_with(|s| s.configsvn = 1), GP),
            (
                "CONFIGID with KSS",
                secs_with(|s| {
                    s.configid = [0x5A; 64];
                    s.attributes.flags |= kss;
                }),
                OK,
            ),
            (
                "CONFIGSVN with KSS",
                secs_with(|s| {
                    s.configsvn = 9;
                    s.attributes.flags |= kss;
                }),
                OK,
            ),
        ],
    );
}

#[test]
fn concurrent_ecreates_of_one_page_create_it_once() {
    let h = harness();
    let cpu = &h.cpu;
    let image = secs_image(BASE, SIZE);
    for i in 0..100 {
        let target = cpu.epc_addr(sgxemu_cpu::EpcIndex(i));
        let outcomes: Vec<Result<(), Exception>> = thread::scope(|s| {
            let run = || {
                let mut lp = cpu.new_lp();
                let mut mem = SparseMemory::new();
                mem.write(scratch::SECS, image.as_bytes()).unwrap();
                mem.write(scratch::SECINFO, &[0u8; 64]).unwrap();
                let info =
                    sgxemu_arch::Pageinfo { linaddr: 0, srcpge: scratch::SECS, secinfo: scratch::SECINFO, secs: 0 };
                mem.write(scratch::PAGEINFO, info.as_bytes()).unwrap();
                cpu.ecreate(&mut lp, &mut mem, scratch::PAGEINFO, target)
            };
            let a = s.spawn(run);
            let b = s.spawn(run);
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
        for r in outcomes.iter().filter(|r| r.is_err()) {
            // Lost the lock race (#GP) or found the page valid (#PF).
            assert!(*r == Err(Exception::Gp) || *r == Err(sgx_pf_w(target)), "{r:?}");
        }
    }
    cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EADD (§4.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn eadd_success_copies_the_page_sets_the_epcm_and_measures_the_eadd_record() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    let data = pattern(0x42);
    assert_eq!(eadd_to(&mut h, secs, BASE + 0x5000, reg(R | W).bits(), &data, target), Ok(()));
    let v = view(&h, target);
    assert!(v.valid);
    assert_eq!(v.page_type, PageType::Reg);
    assert_eq!(v.flags, reg(R | W), "RWX from SECINFO, not blocked/pending/modified/PR");
    assert!(!v.blocked);
    assert_eq!(v.enclave_address, BASE + 0x5000);
    assert_eq!(v.secs, h.cpu.epc_index(secs));
    assert_eq!(v.eid, view(&h, secs).eid);
    let mut copy = [0u8; PAGE_SIZE];
    h.cpu.read_epc(h.cpu.epc_index(target).unwrap(), 0, &mut copy);
    assert_eq!(copy, data);
    let mut stream = Vec::new();
    push_ecreate(&mut stream, 1, SIZE);
    push_eadd(&mut stream, 0x5000, 0x203);
    assert_eq!(h.cpu.mrenclave_so_far(secs), Some(sha256(&stream)));
    // Highest page of ELRANGE, execute-only and no-permission pages are fine too.
    let (top, none) = (h.alloc_page(), h.alloc_page());
    assert_eq!(eadd_to(&mut h, secs, BASE + SIZE - 0x1000, reg(X).bits(), &data, top), Ok(()));
    assert_eq!(eadd_to(&mut h, secs, BASE + 0x6000, reg(SecinfoFlags::empty()).bits(), &data, none), Ok(()));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eadd_misaligned_pageinfo_or_target_is_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    h.mem.write(scratch::PAGE, &[0u8; PAGE_SIZE]).unwrap();
    h.put_secinfo(reg(R));
    let info = sgxemu_arch::Pageinfo { linaddr: BASE, srcpge: scratch::PAGE, secinfo: scratch::SECINFO, secs };
    let misaligned = scratch::PAGEINFO + 0x100 + 16;
    h.mem.write(misaligned, info.as_bytes()).unwrap();
    assert_eq!(h.cpu.eadd(&mut h.lp, &mut h.mem, misaligned, target), Err(Exception::Gp), "PAGEINFO");
    h.put_pageinfo(BASE, scratch::PAGE, scratch::SECINFO, secs);
    for off in [8, 0x800] {
        assert_eq!(h.cpu.eadd(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target + off), Err(Exception::Gp), "RCX");
    }
    // Alignment before "not in EPC".
    assert_eq!(h.cpu.eadd(&mut h.lp, &mut h.mem, scratch::PAGEINFO, 0x1008), Err(Exception::Gp));
    assert!(!view(&h, target).valid);
}

#[test]
fn eadd_target_outside_epc_is_pf_on_target() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let end = h.cpu.config().epc_base + h.cpu.config().epc_size;
    for target in [0x1000, end] {
        assert_eq!(eadd_to(&mut h, secs, BASE, reg(R).bits(), &[0; PAGE_SIZE], target), Err(sgx_pf_w(target)));
    }
}

#[test]
fn eadd_pageinfo_field_alignment_is_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    let before = h.cpu.mrenclave_so_far(secs);
    h.mem.write(scratch::PAGE, &[0u8; PAGE_SIZE]).unwrap();
    h.put_secinfo(reg(R));
    // (name, linaddr, srcpge, secinfo, secs)
    let cases = [
        ("SRCPGE", BASE, scratch::PAGE + 0x10, scratch::SECINFO, secs),
        ("SECS", BASE, scratch::PAGE, scratch::SECINFO, secs + 0x100),
        ("LINADDR", BASE + 0x800, scratch::PAGE, scratch::SECINFO, secs),
        ("SECINFO", BASE, scratch::PAGE, scratch::SECINFO + 32, secs),
        // Alignment of SECS comes before "SECS not in EPC".
        ("SECS misaligned outside EPC", BASE, scratch::PAGE, scratch::SECINFO, 0x2008),
    ];
    for (name, linaddr, srcpge, secinfo, secs_field) in cases {
        h.put_pageinfo(linaddr, srcpge, secinfo, secs_field);
        assert_eq!(h.cpu.eadd(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target), Err(Exception::Gp), "{name}");
    }
    assert!(!view(&h, target).valid);
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
}

#[test]
fn eadd_secs_outside_epc_is_pf_on_secs() {
    let mut h = harness();
    let _ = new_secs(&mut h);
    let target = h.alloc_page();
    assert_eq!(eadd_to(&mut h, 0x2000, BASE, reg(R).bits(), &[0; PAGE_SIZE], target), Err(sgx_pf(0x2000)));
    // Step 2 precedes the SECINFO checks of step 3.
    assert_eq!(eadd_to(&mut h, 0x2000, BASE, 0x7 << 8, &[0; PAGE_SIZE], target), Err(sgx_pf(0x2000)));
    assert!(!view(&h, target).valid);
}

#[test]
fn eadd_secinfo_reserved_bits_are_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    let rw = reg(R | W).bits();
    for (name, flags) in
        [("bit 6", rw | 1 << 6), ("bit 7", rw | 1 << 7), ("bit 16", rw | 1 << 16), ("bit 63", rw | 1 << 63)]
    {
        assert_eq!(eadd_to(&mut h, secs, BASE, flags, &[0; PAGE_SIZE], target), Err(Exception::Gp), "{name}");
    }
    for byte in [8usize, 40, 63] {
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&rw.to_le_bytes());
        bytes[byte] = 1;
        h.mem.write(scratch::SECINFO, &bytes).unwrap();
        h.put_pageinfo(BASE, scratch::PAGE, scratch::SECINFO, secs);
        assert_eq!(h.cpu.eadd(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target), Err(Exception::Gp), "byte {byte}");
    }
    assert!(!view(&h, target).valid);
}

#[test]
fn eadd_ignores_secinfo_state_bits_but_measures_them() {
    // EADD checks only the reserved SECINFO fields (spec §1.7, §4.2 step 3); the EADD record
    // carries the first 48 bytes of the SECINFO as given, and the EPCM starts with PENDING,
    // MODIFIED and PR clear (step 11).
    let state = SecinfoFlags::STATE_MASK;
    for (offset, flags) in [
        (0x1000, reg(R | W | SecinfoFlags::PENDING)),
        (0x2000, reg(R | SecinfoFlags::MODIFIED)),
        (0x3000, reg(R | X | SecinfoFlags::PR)),
        (0x4000, reg(R | W | X | state)),
    ] {
        let mut h = harness();
        let secs = new_secs(&mut h);
        let target = h.alloc_page();
        assert_eq!(eadd_to(&mut h, secs, BASE + offset, flags.bits(), &pattern(0x42), target), Ok(()), "{flags:?}");
        assert_eq!(view(&h, target).flags, flags.difference(state), "{flags:?}: EPCM state bits clear");
        let mut stream = Vec::new();
        push_ecreate(&mut stream, 1, SIZE);
        push_eadd(&mut stream, offset, flags.bits());
        assert_eq!(h.cpu.mrenclave_so_far(secs), Some(sha256(&stream)), "{flags:?}: measured as given");
    }
}

#[test]
fn eadd_secinfo_page_type_not_reg_or_tcs_is_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    for pt in [0u64, 3, 4, 5, 6, 7, 0xFF] {
        assert_eq!(eadd_to(&mut h, secs, BASE, pt << 8 | 1, &[0; PAGE_SIZE], target), Err(Exception::Gp), "PT {pt}");
    }
    assert!(!view(&h, target).valid);
}

#[test]
fn eadd_on_valid_target_is_pf_on_target() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let page = h.eadd(secs, BASE, reg(R), &[1; PAGE_SIZE]).unwrap();
    let before = h.cpu.mrenclave_so_far(secs);
    assert_eq!(eadd_to(&mut h, secs, BASE + 0x1000, reg(R).bits(), &[2; PAGE_SIZE], page), Err(sgx_pf_w(page)));
    // The SECS page itself is a valid target too.
    assert_eq!(eadd_to(&mut h, secs, BASE + 0x1000, reg(R).bits(), &[2; PAGE_SIZE], secs), Err(sgx_pf_w(secs)));
    // Step 3 (SECINFO) precedes step 4 ...
    assert_eq!(eadd_to(&mut h, secs, BASE + 0x1000, 0x300, &[2; PAGE_SIZE], page), Err(Exception::Gp));
    // ... and step 4 precedes step 5 (SECS operand invalid).
    let unused = h.alloc_page();
    assert_eq!(eadd_to(&mut h, unused, BASE + 0x1000, reg(R).bits(), &[2; PAGE_SIZE], page), Err(sgx_pf_w(page)));
    let mut data = [0u8; PAGE_SIZE];
    h.cpu.read_epc(h.cpu.epc_index(page).unwrap(), 0, &mut data);
    assert_eq!(data, [1; PAGE_SIZE], "content unchanged");
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
}

#[test]
fn eadd_secs_operand_not_a_valid_secs_is_pf_on_secs() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let reg_page = h.eadd(secs, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let never_used = h.alloc_page();
    let removed = new_secs(&mut h);
    assert_eq!(h.cpu.eremove(&mut h.lp, removed), Ok(Status::Success));
    let target = h.alloc_page();
    for (name, operand) in [("invalid", never_used), ("REG page", reg_page), ("VA page", va), ("removed SECS", removed)]
    {
        assert_eq!(
            eadd_to(&mut h, operand, BASE + 0x1000, reg(R).bits(), &[0; PAGE_SIZE], target),
            Err(sgx_pf(operand)),
            "{name}"
        );
        // Step 5 precedes the TCS checks of step 7.
        let mut bad_tcs = tcs_image(0x1000, 1, 0, 0);
        bad_tcs[72] = 1;
        assert_eq!(
            eadd_to(&mut h, operand, BASE + 0x1000, tcs_type().bits(), &bad_tcs, target),
            Err(sgx_pf(operand)),
            "{name}, bad TCS"
        );
    }
    assert!(!view(&h, target).valid);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eadd_tcs_with_nonzero_reserved_area_is_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    let before = h.cpu.mrenclave_so_far(secs);
    for off in [72usize, 80, 1000, 4095] {
        let mut tcs = tcs_image(0x1000, 1, 0, 0);
        tcs[off] = 0x01;
        assert_eq!(eadd_to(&mut h, secs, BASE, tcs_type().bits(), &tcs, target), Err(Exception::Gp), "byte {off}");
    }
    assert!(!view(&h, target).valid);
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
    // The same bytes in a REG page are fine.
    let mut data = [0u8; PAGE_SIZE];
    data[72] = 1;
    assert_eq!(eadd_to(&mut h, secs, BASE, reg(R).bits(), &data, target), Ok(()));
}

#[test]
fn eadd_tcs_of_32bit_enclave_needs_fs_gs_limits_ending_in_fff() {
    let mut h = harness();
    let image = secs_with(|s| {
        s.baseaddr = 0x1000_0000;
        s.attributes.flags &= !AttributesFlags::MODE64BIT.bits();
    });
    let secs = h.ecreate(&image).unwrap();
    let tcs_with = |fs: u32, gs: u32| {
        let mut tcs = Tcs::new_zeroed();
        tcs.ossa = 0x1000;
        tcs.nssa = 1;
        tcs.fslimit = fs;
        tcs.gslimit = gs;
        page_of(tcs.as_bytes())
    };
    let target = h.alloc_page();
    for (fs, gs) in [(0, 0xFFF), (0xFFF, 0), (0xFFE, 0xFFF), (0xFFF, 0x1FFE), (0x7FF, 0x7FF)] {
        assert_eq!(
            eadd_to(&mut h, secs, 0x1000_0000, tcs_type().bits(), &tcs_with(fs, gs), target),
            Err(Exception::Gp),
            "FSLIMIT {fs:#x} GSLIMIT {gs:#x}"
        );
        assert!(!view(&h, target).valid);
    }
    assert_eq!(eadd_to(&mut h, secs, 0x1000_0000, tcs_type().bits(), &tcs_with(0xFFF, 0xFFFF_FFFF), target), Ok(()));
    // A 64-bit enclave ignores the limits.
    let secs64 = new_secs(&mut h);
    let target = h.alloc_page();
    assert_eq!(eadd_to(&mut h, secs64, BASE, tcs_type().bits(), &tcs_with(0, 0), target), Ok(()));
}

#[test]
fn eadd_reg_writable_without_read_is_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    for perms in [W, W | X] {
        assert_eq!(eadd_to(&mut h, secs, BASE, reg(perms).bits(), &[0; PAGE_SIZE], target), Err(Exception::Gp));
    }
    assert!(!view(&h, target).valid);
    assert_eq!(eadd_to(&mut h, secs, BASE, reg(R | W | X).bits(), &[0; PAGE_SIZE], target), Ok(()));
}

#[test]
fn eadd_linaddr_outside_elrange_is_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let target = h.alloc_page();
    let before = h.cpu.mrenclave_so_far(secs);
    for la in [BASE - 0x1000, BASE + SIZE, BASE + 2 * SIZE, 0, 0xFFFF_FFFF_FFFF_F000] {
        assert_eq!(eadd_to(&mut h, secs, la, reg(R).bits(), &[0; PAGE_SIZE], target), Err(Exception::Gp), "{la:#x}");
    }
    assert!(!view(&h, target).valid);
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
}

#[test]
fn eadd_after_einit_is_gp() {
    let mut h = harness();
    let e = TestEnclave::build(&mut h);
    let target = h.alloc_page();
    let la = e.base + layout::HEAP;
    assert_eq!(eadd_to(&mut h, e.secs, la, reg(R | W).bits(), &[0; PAGE_SIZE], target), Err(Exception::Gp));
    assert_eq!(eadd_to(&mut h, e.secs, la, tcs_type().bits(), &tcs_image(0x1000, 1, 0, 0), target), Err(Exception::Gp));
    assert!(!view(&h, target).valid);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eadd_tcs_forces_dbgoptin_cssa_aep_state_to_zero_and_rwx_to_zero_before_measuring() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let mut tcs = Tcs::new_zeroed();
    tcs.state = 1;
    tcs.flags = sgxemu_arch::TcsFlags::DBGOPTIN.bits();
    tcs.ossa = 0x1000;
    tcs.cssa = 1;
    tcs.nssa = 2;
    tcs.oentry = 0x3000;
    tcs.aep = 0xDEAD_BEEF_0000;
    tcs.ofsbase = 0x4000;
    tcs.ogsbase = 0x5000;
    tcs.fslimit = 0x1234;
    tcs.gslimit = 0x5678;
    let source = page_of(tcs.as_bytes());
    // SECINFO asks for RWX on the TCS: EADD accepts it and forces RWX to 0.
    let epc = h.eadd(secs, BASE, (R | W | X).with_page_type(PageType::Tcs), &source).unwrap();
    assert_eq!(view(&h, epc).flags, tcs_type(), "EPCM RWX = 000 for a TCS");
    let mut stored = [0u8; PAGE_SIZE];
    h.cpu.read_epc(h.cpu.epc_index(epc).unwrap(), 0, &mut stored);
    let stored = Tcs::read_from_bytes(&stored[..]).unwrap();
    let mut expected = tcs;
    expected.state = 0;
    expected.flags = 0;
    expected.cssa = 0;
    expected.aep = 0;
    assert_eq!(stored, expected, "only STATE, FLAGS.DBGOPTIN, CSSA and AEP are forced");
    h.eextend_page(secs, epc).unwrap();
    let mut stream = Vec::new();
    push_ecreate(&mut stream, 1, SIZE);
    push_eadd(&mut stream, 0, 0x100);
    push_eextend_page(&mut stream, 0, &page_of(expected.as_bytes()));
    assert_eq!(h.cpu.mrenclave_so_far(secs), Some(sha256(&stream)));
}

#[test]
fn concurrent_eadds_to_one_target_add_it_once() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let cpu = &h.cpu;
    for i in 0..100u64 {
        let target = cpu.epc_addr(sgxemu_cpu::EpcIndex(100 + i as u32));
        let outcomes: Vec<Result<(), Exception>> = thread::scope(|s| {
            let run = |la: u64| {
                move || {
                    let mut lp = cpu.new_lp();
                    let mut mem = SparseMemory::new();
                    mem.write(scratch::SECINFO, sgxemu_arch::Secinfo::new(reg(R)).as_bytes()).unwrap();
                    let info =
                        sgxemu_arch::Pageinfo { linaddr: la, srcpge: scratch::PAGE, secinfo: scratch::SECINFO, secs };
                    mem.write(scratch::PAGEINFO, info.as_bytes()).unwrap();
                    cpu.eadd(&mut lp, &mut mem, scratch::PAGEINFO, target)
                }
            };
            let a = s.spawn(run(BASE + 0x2000 * i));
            let b = s.spawn(run(BASE + 0x2000 * i + 0x1000));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let ok = outcomes.iter().filter(|r| r.is_ok()).count();
        assert!(ok <= 1, "{outcomes:?}");
        for r in outcomes.iter().filter(|r| r.is_err()) {
            // Target locked or valid, or the measurement lock busy: all allowed outcomes.
            assert!(*r == Err(Exception::Gp) || *r == Err(sgx_pf_w(target)), "{r:?}");
        }
        if ok == 0 {
            assert!(!view(&h, target).valid);
        }
    }
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EEXTEND (§4.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn eextend_measures_the_chunk_at_its_enclave_offset_as_it_is_now_in_the_epc() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let data = pattern(7);
    let page = h.eadd(secs, BASE + 0x7000, reg(R | W), &data).unwrap();
    // The debug enclave's page is changed through EDBGWR before measuring: EEXTEND hashes
    // the EPC contents, not the EADD source.
    assert_eq!(h.cpu.edbgwr(&mut h.lp, page + 0x208, 0x0123_4567_89AB_CDEF), Ok(Status::Success));
    let mut now = data;
    now[0x208..0x210].copy_from_slice(&0x0123_4567_89AB_CDEFu64.to_le_bytes());
    for chunk in [0x200u64, 0xF00, 0x000] {
        assert_eq!(h.cpu.eextend(&mut h.lp, secs, page + chunk), Ok(()));
    }
    let mut stream = Vec::new();
    push_ecreate(&mut stream, 1, SIZE);
    push_eadd(&mut stream, 0x7000, 0x203);
    for chunk in [0x200usize, 0xF00, 0x000] {
        push_eextend(&mut stream, 0x7000 + chunk as u64, &now[chunk..chunk + 256]);
    }
    assert_eq!(h.cpu.mrenclave_so_far(secs), Some(sha256(&stream)));
}

#[test]
fn eextend_page_is_sixteen_eextends_back_to_back_with_the_same_results() {
    let data = pattern(3);
    // The same page measured leaf by leaf and page at a time: the same MRENCLAVE and the
    // same sixteen leaves counted.
    let mut measured = Vec::new();
    for page_at_a_time in [false, true] {
        let mut h = harness();
        let secs = new_secs(&mut h);
        let page = h.eadd(secs, BASE + 0x3000, reg(R | W), &data).unwrap();
        let before = h.lp.stats().encls;
        if page_at_a_time {
            assert_eq!(h.cpu.eextend_page(&mut h.lp, secs, page), Ok(()));
        } else {
            h.eextend_page(secs, page).unwrap();
        }
        let counted: u64 = h.lp.stats().encls.iter().zip(before).map(|(now, was)| now - was).sum();
        assert_eq!(counted, 16);
        measured.push(h.cpu.mrenclave_so_far(secs));
    }
    assert_eq!(measured[0], measured[1]);
    let mut stream = Vec::new();
    push_ecreate(&mut stream, 1, SIZE);
    push_eadd(&mut stream, 0x3000, 0x203);
    push_eextend_page(&mut stream, 0x3000, &data);
    assert_eq!(measured[1], Some(sha256(&stream)));
    // Its failures are the first leaf's: a misaligned SECS, another enclave's SECS, a page
    // that is no REG/TCS page, an initialized enclave — and a misaligned address is the
    // single leaf's.
    let mut h = harness();
    let a = new_secs(&mut h);
    let b = new_secs(&mut h);
    let page = h.eadd(a, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    let never_used = h.alloc_page();
    let before = h.cpu.mrenclave_so_far(a);
    assert_eq!(h.cpu.eextend_page(&mut h.lp, a + 8, page), Err(Exception::Gp));
    assert_eq!(h.cpu.eextend_page(&mut h.lp, b, page), Err(Exception::Gp));
    assert_eq!(h.cpu.eextend_page(&mut h.lp, a, never_used), Err(sgx_pf(never_used)));
    assert_eq!(h.cpu.eextend_page(&mut h.lp, a, page + 0x80), Err(Exception::Gp));
    assert_eq!(h.cpu.mrenclave_so_far(a), before, "no failed call measured anything");
    assert_eq!(h.cpu.eextend_page(&mut h.lp, a, page + 0x100), Ok(()), "one chunk, as EEXTEND would");
    assert_ne!(h.cpu.mrenclave_so_far(a), before);
    let e = TestEnclave::build(&mut h);
    assert_eq!(h.cpu.eextend_page(&mut h.lp, e.secs, e.pages[&(e.base + layout::CODE)]), Err(Exception::Gp));
}

#[test]
fn eextend_page_overlapped_calls_alongside_before_each_chunk_and_measures_the_same() {
    let data = pattern(5);
    let mut h = harness();
    let secs = new_secs(&mut h);
    let page = h.eadd(secs, BASE + 0x2000, reg(R | W), &data).unwrap();
    let mut calls = Vec::new();
    let result = h.cpu.eextend_page_overlapped(&mut h.lp, secs, page, &mut |chunk| calls.push(chunk));
    assert_eq!(result, Ok(()));
    assert_eq!(calls, (0..16).collect::<Vec<_>>(), "once per chunk, in order");
    let mut stream = Vec::new();
    push_ecreate(&mut stream, 1, SIZE);
    push_eadd(&mut stream, 0x2000, 0x203);
    push_eextend_page(&mut stream, 0x2000, &data);
    assert_eq!(h.cpu.mrenclave_so_far(secs), Some(sha256(&stream)));
    // A page that faults measures nothing and runs nothing alongside.
    let never_used = h.alloc_page();
    calls.clear();
    let result = h.cpu.eextend_page_overlapped(&mut h.lp, secs, never_used, &mut |chunk| calls.push(chunk));
    assert_eq!(result, Err(sgx_pf(never_used)));
    assert!(calls.is_empty());
}

#[test]
fn eextend_misaligned_secs_is_gp_and_secs_outside_epc_is_pf_on_secs() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let page = h.eadd(secs, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    let before = h.cpu.mrenclave_so_far(secs);
    for off in [8, 0x100, 0x800] {
        assert_eq!(h.cpu.eextend(&mut h.lp, secs + off, page), Err(Exception::Gp));
    }
    assert_eq!(h.cpu.eextend(&mut h.lp, 0x3000, page), Err(sgx_pf(0x3000)));
    // Step 1 before step 2: RBX outside the EPC wins over a misaligned RCX ...
    assert_eq!(h.cpu.eextend(&mut h.lp, 0x3000, page + 8), Err(sgx_pf(0x3000)));
    // ... and a misaligned RBX over an RCX outside the EPC.
    assert_eq!(h.cpu.eextend(&mut h.lp, secs + 8, 0x4000), Err(Exception::Gp));
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
}

#[test]
fn eextend_misaligned_chunk_is_gp_and_chunk_outside_epc_is_pf_on_chunk() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let page = h.eadd(secs, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    let before = h.cpu.mrenclave_so_far(secs);
    for off in [1, 8, 0x80, 0x1FF] {
        assert_eq!(h.cpu.eextend(&mut h.lp, secs, page + off), Err(Exception::Gp), "offset {off:#x}");
    }
    assert_eq!(h.cpu.eextend(&mut h.lp, secs, 0x4100), Err(sgx_pf(0x4100)));
    // Alignment before "not in EPC".
    assert_eq!(h.cpu.eextend(&mut h.lp, secs, 0x4080), Err(Exception::Gp));
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
}

#[test]
fn eextend_chunk_in_invalid_or_non_reg_tcs_page_is_pf_on_chunk() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let never_used = h.alloc_page();
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    let before = h.cpu.mrenclave_so_far(secs);
    for (name, chunk) in [("invalid", never_used + 0x300), ("SECS", secs + 0x100), ("VA", va)] {
        assert_eq!(h.cpu.eextend(&mut h.lp, secs, chunk), Err(sgx_pf(chunk)), "{name}");
    }
    assert_eq!(h.cpu.mrenclave_so_far(secs), before);
    // A TRIM page of an initialized enclave: the type check (step 3) comes before the
    // "already initialized" #GP (step 4).
    let e = TestEnclave::build(&mut h);
    let data = e.pages[&(e.base + layout::DATA)];
    h.put_secinfo(SecinfoFlags::from(PageType::Trim));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, data), Ok(Status::Success));
    assert_eq!(h.cpu.eextend(&mut h.lp, e.secs, data + 0x100), Err(sgx_pf(data + 0x100)));
}

#[test]
fn eextend_with_a_secs_that_does_not_own_the_page_is_gp() {
    let mut h = harness();
    let a = new_secs(&mut h);
    let b = new_secs(&mut h);
    let page = h.eadd(a, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    let other_page = h.eadd(b, BASE, reg(R), &[0; PAGE_SIZE]).unwrap();
    let never_used = h.alloc_page();
    let (ma, mb) = (h.cpu.mrenclave_so_far(a), h.cpu.mrenclave_so_far(b));
    for (name, rbx) in [("other SECS", b), ("a REG page", other_page), ("an invalid page", never_used)] {
        assert_eq!(h.cpu.eextend(&mut h.lp, rbx, page), Err(Exception::Gp), "{name}");
    }
    assert_eq!((h.cpu.mrenclave_so_far(a), h.cpu.mrenclave_so_far(b)), (ma, mb));
    assert_eq!(h.cpu.eextend(&mut h.lp, a, page), Ok(()));
}

#[test]
fn eextend_after_einit_is_gp() {
    let mut h = harness();
    let e = TestEnclave::build(&mut h);
    let before = h.cpu.mrenclave_so_far(e.secs);
    for la in [e.tcs, e.base + layout::CODE] {
        assert_eq!(h.cpu.eextend(&mut h.lp, e.secs, e.pages[&la]), Err(Exception::Gp));
    }
    assert_eq!(h.cpu.mrenclave_so_far(e.secs), before);
}

#[test]
fn concurrent_eextends_only_succeed_or_take_gp() {
    let mut h = harness();
    let secs = new_secs(&mut h);
    let pages = [
        h.eadd(secs, BASE, reg(R), &[1; PAGE_SIZE]).unwrap(),
        h.eadd(secs, BASE + 0x1000, reg(R), &[2; PAGE_SIZE]).unwrap(),
    ];
    let cpu = &h.cpu;
    let results: Vec<Result<(), Exception>> = thread::scope(|s| {
        let handles: Vec<_> = pages
            .iter()
            .map(|&page| {
                s.spawn(move || {
                    let mut lp = cpu.new_lp();
                    (0..200).map(|i| cpu.eextend(&mut lp, secs, page + (i % 16) * 256)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|j| j.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| *r == Ok(()) || *r == Err(Exception::Gp)), "only success or #GP (measurement busy)");
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// MRENCLAVE against an independent computation (§9.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn mrenclave_equals_an_independent_sha256_of_the_hand_built_record_stream() {
    // The tags are the spec's u64 constants, little-endian.
    assert_eq!(u64::from_le_bytes(*b"ECREATE\0"), 0x0045_5441_4552_4345);
    assert_eq!(u64::from_le_bytes(*b"EADD\0\0\0\0"), 0x0000_0000_4444_4145);
    assert_eq!(u64::from_le_bytes(*b"EEXTEND\0"), 0x0044_4E45_5458_4545);

    let mut h = harness();
    let image = secs_with(|s| s.size = 0x10000);
    let secs = h.ecreate(&image).unwrap();
    // TCS with the fields EADD forces to zero set in the source, and RWX requested.
    let mut tcs = Tcs::new_zeroed();
    tcs.state = 1;
    tcs.flags = 1;
    tcs.ossa = 0x1000;
    tcs.cssa = 1;
    tcs.nssa = 1;
    tcs.oentry = 0x2000;
    tcs.aep = 0x1234_5678;
    tcs.ofsbase = 0x3000;
    tcs.ogsbase = 0x3000;
    let tcs_src = page_of(tcs.as_bytes());
    let tcs_epc = h.eadd(secs, BASE, (R | W | X).with_page_type(PageType::Tcs), &tcs_src).unwrap();
    h.eextend_page(secs, tcs_epc).unwrap();
    // SSA page: added, never measured (it still gets an EADD record).
    let ssa_epc = h.eadd(secs, BASE + 0x1000, reg(R | W), &[0x5A; PAGE_SIZE]).unwrap();
    // Code page: fully measured.
    let mut code = pattern(0x99);
    code[..4].copy_from_slice(&[0x0f, 0x01, 0xd7, 0xcc]);
    let code_epc = h.eadd(secs, BASE + 0x2000, reg(R | X), &code).unwrap();
    h.eextend_page(secs, code_epc).unwrap();
    // Data page: two chunks measured, out of order.
    let data = pattern(0x44);
    let data_epc = h.eadd(secs, BASE + 0x3000, reg(R | W), &data).unwrap();
    h.cpu.eextend(&mut h.lp, secs, data_epc + 0x300).unwrap();
    h.cpu.eextend(&mut h.lp, secs, data_epc).unwrap();
    // Read-only page with all permissions bits the EADD record shows: RWX.
    let rwx_epc = h.eadd(secs, BASE + 0xF000, reg(R | W | X), &[0; PAGE_SIZE]).unwrap();

    let mut measured_tcs = tcs_src;
    measured_tcs[0..8].fill(0); // STATE
    measured_tcs[8] &= !1; // FLAGS.DBGOPTIN
    measured_tcs[24..28].fill(0); // CSSA
    measured_tcs[40..48].fill(0); // AEP
    let mut stream: Vec<u8> = Vec::new();
    push_ecreate(&mut stream, 1, 0x10000);
    push_eadd(&mut stream, 0x0000, 0x100);
    push_eextend_page(&mut stream, 0x0000, &measured_tcs);
    push_eadd(&mut stream, 0x1000, 0x203);
    push_eadd(&mut stream, 0x2000, 0x205);
    push_eextend_page(&mut stream, 0x2000, &code);
    push_eadd(&mut stream, 0x3000, 0x203);
    push_eextend(&mut stream, 0x3300, &data[0x300..0x400]);
    push_eextend(&mut stream, 0x3000, &data[..0x100]);
    push_eadd(&mut stream, 0xF000, 0x207);
    assert_eq!(stream.len(), 64 * (1 + 1 + 16 * 5 + 1 + 1 + 16 * 5 + 1 + 2 * 5 + 1));
    assert_eq!(&stream[..8], &[0x45, 0x43, 0x52, 0x45, 0x41, 0x54, 0x45, 0x00]);
    let expected = sha256(&stream);
    assert_eq!(h.cpu.mrenclave_so_far(secs), Some(expected));

    // A SIGSTRUCT carrying the hand-computed hash is accepted by EINIT.
    let mut sig = Sigstruct::new_unsigned();
    sig.enclavehash = expected;
    sig.attributes = image.attributes;
    sig.attributemask = Attributes { flags: !0, xfrm: !0 };
    sig.miscselect = image.miscselect;
    sig.miscmask = !0;
    sig.isvprodid = 0x0102;
    sig.isvsvn = 0x0304;
    sgxemu_crypto::sign(&mut sig, &SIGNER).unwrap();
    set_le_hash(&mut h.lp, &h.cpu, &signer_hash());
    assert_eq!(einit_raw(&mut h, secs, &sig, &Einittoken::new_zeroed()), Ok(Status::Success));
    assert_eq!(h.cpu.mrenclave_so_far(secs), Some(expected), "EINIT adds no record");

    // EINIT committed it: EREPORT shows MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN and INIT.
    h.map(BASE, tcs_epc, true, false);
    h.map(BASE + 0x1000, ssa_epc, true, false);
    h.map(BASE + 0x2000, code_epc, false, true);
    h.map(BASE + 0x3000, data_epc, true, false);
    h.map(BASE + 0xF000, rwx_epc, true, true);
    let report = report_from_inside(&mut h, BASE, BASE + 0x3000, data_epc);
    assert_eq!(report.mrenclave, expected);
    assert_eq!(report.mrsigner, signer_hash());
    assert_eq!((report.isvprodid, report.isvsvn), (0x0102, 0x0304));
    assert_eq!(report.attributes.flags, image.attributes.flags | AttributesFlags::INIT.bits());
    assert_eq!(report.attributes.xfrm, image.attributes.xfrm);
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EINIT (§4.4)
// ---------------------------------------------------------------------------------------------

#[test]
fn einit_misaligned_operands_are_gp_and_secs_outside_epc_is_pf_on_secs() {
    let mut f = Fixture::new();
    let sig = f.sig;
    let zero = Einittoken::new_zeroed();
    f.h.mem.write(scratch::SIGSTRUCT, sig.as_bytes()).unwrap();
    f.h.mem.write(scratch::SIGSTRUCT + 0x800, sig.as_bytes()).unwrap();
    f.h.mem.write(scratch::TOKEN, zero.as_bytes()).unwrap();
    f.h.mem.write(scratch::TOKEN + 0x100, zero.as_bytes()).unwrap();
    let secs = f.d.secs;
    let (s, t) = (scratch::SIGSTRUCT, scratch::TOKEN);
    // (name, sigstruct, secs, token, expected)
    let cases = [
        ("SIGSTRUCT 2K aligned", s + 0x800, secs, t, Err(Exception::Gp)),
        ("SIGSTRUCT 8-byte aligned", s + 8, secs, t, Err(Exception::Gp)),
        ("SECS misaligned", s, secs + 0x100, t, Err(Exception::Gp)),
        ("token 256-byte aligned", s, secs, t + 0x100, Err(Exception::Gp)),
        ("token 8-byte aligned", s, secs, t + 8, Err(Exception::Gp)),
        ("SECS outside EPC", s, 0x6000, t, Err(sgx_pf(0x6000))),
        // Alignment of the token precedes the EPC check of the SECS.
        ("token misaligned and SECS outside EPC", s, 0x6000, t + 8, Err(Exception::Gp)),
    ];
    for (name, sig_addr, secs_addr, token_addr, expected) in cases {
        assert_eq!(f.h.cpu.einit(&mut f.h.lp, &mut f.h.mem, sig_addr, secs_addr, token_addr), expected, "{name}");
    }
    f.assert_still_initializable();
}

#[test]
fn einit_sigstruct_header_fields_and_reserved_areas_are_checked_first() {
    let mut f = Fixture::new();
    // Every malformed field is caught by step 3 even though it also breaks the signature.
    let mut cases: Vec<(String, Sigstruct)> = Vec::new();
    for off in [0usize, 4, 10, 11] {
        cases.push((format!("HEADER byte {off}"), sig_with_bit_flipped(&f.sig, off, 1)));
    }
    // HEADER bytes 12..15 (the SDK "type"): only bit 31 is tolerated.
    for (off, bit) in [(12usize, 0u32), (13, 3), (14, 7), (15, 0), (15, 6)] {
        cases.push((format!("HEADER type byte {off} bit {bit}"), sig_with_bit_flipped(&f.sig, off, bit)));
    }
    for vendor in [1u32, 0x8087, 0x0086, 0x1_8086] {
        cases.push((format!("VENDOR {vendor:#x}"), f.modified(|s| s.vendor = vendor)));
    }
    for off in [24usize, 28, 32, 39] {
        cases.push((format!("HEADER2 byte {off}"), sig_with_bit_flipped(&f.sig, off, 0)));
    }
    for exponent in [0u32, 1, 65537, 3 | 1 << 31] {
        cases.push((format!("EXPONENT {exponent}"), f.modified(|s| s.exponent = exponent)));
    }
    for (range, offsets) in [
        ("reserved [44,128)", &[44usize, 80, 127][..]),
        ("CET bytes [908,910) on a non-CET part", &[908, 909][..]),
        ("reserved [910,912)", &[910, 911][..]),
        ("reserved [992,1008)", &[992, 1000, 1007][..]),
        ("reserved [1028,1040)", &[1028, 1039][..]),
    ] {
        for &off in offsets {
            cases.push((format!("{range} byte {off}"), sig_with_byte(&f.sig, off, 0x01)));
        }
    }
    // Re-signing does not help: the header check is not a signature check.
    cases.push(("reserved byte 44, re-signed".into(), f.resigned(|s| s.reserved1[0] = 1)));
    cases.push(("VENDOR 0x1234, re-signed".into(), f.resigned(|s| s.vendor = 0x1234)));
    for (name, sig) in &cases {
        assert_eq!(f.einit(sig), error(ErrorCode::InvalidSigStruct), "{name}");
    }
    // Step 3 precedes step 6: a bad header on a SECS operand that is not a SECS.
    let not_secs = f.h.alloc_page();
    assert_eq!(
        einit_raw(&mut f.h, not_secs, &cases[0].1, &Einittoken::new_zeroed()),
        error(ErrorCode::InvalidSigStruct)
    );
    f.assert_still_initializable();
}

#[test]
fn einit_accepts_vendor_intel_and_the_sdk_debug_type_bit() {
    let mut f = Fixture::new();
    // The SDK "type" bit 31 of HEADER bytes 12..15 passes the header check (§13.7) but is
    // covered by the signature: flipped after signing it fails as a bad signature ...
    let flipped = sig_with_bit_flipped(&f.sig, 15, 7);
    assert_eq!(f.einit(&flipped), error(ErrorCode::InvalidSignature));
    // ... and signed with it, it is accepted.
    let debug_type = f.resigned(|s| {
        s.header[15] = 0x80;
        s.vendor = sgxemu_arch::VENDOR_INTEL;
    });
    assert_eq!(f.einit(&debug_type), Ok(Status::Success));
    f.h.cpu.check_invariants().unwrap();
}

#[test]
fn einit_pending_unmasked_event_is_unmasked_event_and_retry_succeeds() {
    let mut f = Fixture::new();
    f.h.cpu.inject_unmasked_events(2);
    let sig = f.sig;
    // Step 3 precedes step 4: a bad header is reported, the event stays pending.
    let bad_header = sig_with_byte(&sig, 0, 7);
    assert_eq!(f.einit(&bad_header), error(ErrorCode::InvalidSigStruct));
    // Step 4 precedes step 5 (signature) and step 6 (SECS operand).
    let bad_signature = sig_with_bit_flipped(&sig, 600, 3);
    assert_eq!(f.einit(&bad_signature), error(ErrorCode::UnmaskedEvent));
    let not_secs = f.h.alloc_page();
    assert_eq!(einit_raw(&mut f.h, not_secs, &sig, &Einittoken::new_zeroed()), error(ErrorCode::UnmaskedEvent));
    // Both injected events consumed: the Linux retry loop now succeeds.
    assert_eq!(f.einit(&sig), Ok(Status::Success));
}

#[test]
fn einit_bad_signature_is_invalid_signature() {
    let mut f = Fixture::new();
    let cases = [
        ("SIGNATURE bit", sig_with_bit_flipped(&f.sig, 516, 0)),
        ("signed field changed after signing", f.modified(|s| s.isvsvn = 4)),
        ("Q1 zeroed", f.modified(|s| s.q1 = [0; 384])),
        ("Q2 zeroed", f.modified(|s| s.q2 = [0; 384])),
        ("unsigned SIGSTRUCT", f.modified(|s| s.signature = [0; 384])),
        ("signature = modulus", f.modified(|s| s.signature = s.modulus)),
        ("2048-bit modulus", f.modified(|s| s.modulus[256..].fill(0))),
    ];
    for (name, sig) in &cases {
        assert_eq!(f.einit(sig), error(ErrorCode::InvalidSignature), "{name}");
    }
    // Step 5 precedes step 6: the SECS operand is not even a SECS.
    let not_secs = f.h.alloc_page();
    assert_eq!(
        einit_raw(&mut f.h, not_secs, &cases[0].1, &Einittoken::new_zeroed()),
        error(ErrorCode::InvalidSignature)
    );
    f.assert_still_initializable();
    // Step 5 precedes step 8: a bad signature on an initialized enclave.
    assert_eq!(f.einit(&cases[0].1), error(ErrorCode::InvalidSignature));
}

#[test]
fn einit_secs_operand_not_a_valid_secs_is_pf_on_secs() {
    let mut f = Fixture::new();
    let sig = f.sig;
    let never_used = f.h.alloc_page();
    let code = f.d.pages[&layout::CODE];
    let va = f.h.alloc_page();
    f.h.cpu.epa(&mut f.h.lp, 3, va).unwrap();
    let removed = f.h.ecreate(&secs_image(BASE, SIZE)).unwrap();
    assert_eq!(f.h.cpu.eremove(&mut f.h.lp, removed), Ok(Status::Success));
    for (name, operand) in [("invalid", never_used), ("REG page", code), ("VA page", va), ("removed SECS", removed)] {
        assert_eq!(einit_raw(&mut f.h, operand, &sig, &Einittoken::new_zeroed()), Err(sgx_pf(operand)), "{name}");
    }
    f.assert_still_initializable();
}

#[test]
fn einit_isvfamilyid_without_kss_is_invalid_sig_struct() {
    let mut f = Fixture::new();
    let family = f.resigned(|s| s.isvfamilyid = [0x5A; 16]);
    assert_eq!(f.einit(&family), error(ErrorCode::InvalidSigStruct));
    // Step 7 precedes step 9: also with a wrong ENCLAVEHASH.
    let family_and_hash = f.resigned(|s| {
        s.isvfamilyid[15] = 1;
        s.enclavehash[0] ^= 1;
    });
    assert_eq!(f.einit(&family_and_hash), error(ErrorCode::InvalidSigStruct));
    f.assert_still_initializable();
    // Step 7 precedes step 8: on an initialized enclave it is still SGX_INVALID_SIG_STRUCT.
    assert_eq!(f.einit(&family), error(ErrorCode::InvalidSigStruct));
}

#[test]
fn einit_with_kss_commits_isvfamilyid_and_isvextprodid() {
    let image = secs_with(|s| s.attributes.flags |= AttributesFlags::KSS.bits());
    let mut f = Fixture::with(image, |s| {
        s.isvfamilyid = [0xF1; 16];
        s.isvextprodid = [0xE2; 16];
    });
    let sig = f.sig;
    assert_eq!(f.einit(&sig), Ok(Status::Success));
    let data = f.d.pages[&layout::DATA];
    let report = report_from_inside(&mut f.h, f.d.la(layout::TCS), f.d.la(layout::DATA), data);
    assert_eq!(report.isvfamilyid, [0xF1; 16]);
    assert_eq!(report.isvextprodid, [0xE2; 16]);
}

#[test]
fn einit_of_an_initialized_enclave_is_gp() {
    let mut f = Fixture::new();
    let sig = f.sig;
    assert_eq!(f.einit(&sig), Ok(Status::Success));
    assert_eq!(f.einit(&sig), Err(Exception::Gp));
    // Step 8 precedes step 9: a SIGSTRUCT with another (validly signed) ENCLAVEHASH.
    let other_hash = f.resigned(|s| s.enclavehash = [0x77; 32]);
    assert_eq!(f.einit(&other_hash), Err(Exception::Gp));
    // ... and the later launch checks: untrusted signer.
    f.use_intel_le_hash();
    assert_eq!(f.einit(&sig), Err(Exception::Gp));
    f.h.cpu.check_invariants().unwrap();
}

#[test]
fn einit_enclavehash_mismatch_is_invalid_measurement() {
    let mut f = Fixture::new();
    for (name, tweak) in [("first byte", (0usize, 0x01u8)), ("last byte", (31, 0x80)), ("middle byte", (17, 0x10))] {
        let sig = f.resigned(|s| s.enclavehash[tweak.0] ^= tweak.1);
        assert_eq!(f.einit(&sig), error(ErrorCode::InvalidMeasurement), "{name}");
    }
    // Step 9 precedes step 12 (attributes) and step 13 (launch hash).
    let hash_and_attrs = f.resigned(|s| {
        s.enclavehash[0] ^= 1;
        s.attributes.flags ^= AttributesFlags::DEBUG.bits();
    });
    assert_eq!(f.einit(&hash_and_attrs), error(ErrorCode::InvalidMeasurement));
    f.use_intel_le_hash();
    assert_eq!(f.einit(&hash_and_attrs), error(ErrorCode::InvalidMeasurement));
    f.assert_still_initializable();
}

#[test]
fn einit_einittokenkey_enclave_needs_mrsigner_equal_to_le_hash() {
    let image = secs_with(|s| s.attributes.flags |= AttributesFlags::EINITTOKENKEY.bits());
    let mut f = Fixture::with(image, |_| {});
    let sig = f.sig;
    f.use_intel_le_hash();
    // Without the EINITTOKENKEY attribute this would be SGX_INVALID_EINITTOKEN (step 13);
    // step 11 reports SGX_INVALID_ATTRIBUTE first.
    assert_eq!(f.einit(&sig), error(ErrorCode::InvalidAttribute));
    // Even a correctly MACed valid token does not help: step 11 precedes the token check.
    let token = valid_token(&f);
    assert_eq!(f.einit_with_token(&token), error(ErrorCode::InvalidAttribute));
    f.assert_still_initializable();
}

#[test]
fn einit_attribute_or_miscselect_mismatch_under_mask_is_invalid_attribute() {
    let debug = AttributesFlags::DEBUG.bits();
    let mut f = Fixture::new();
    let cases: [(&str, SigTweak); 6] = [
        ("FLAGS.DEBUG differs", |s| s.attributes.flags ^= AttributesFlags::DEBUG.bits()),
        ("FLAGS.MODE64BIT differs", |s| s.attributes.flags ^= AttributesFlags::MODE64BIT.bits()),
        ("FLAGS.INIT required", |s| s.attributes.flags |= AttributesFlags::INIT.bits()),
        ("XFRM differs", |s| s.attributes.xfrm = 0x7),
        ("MISCSELECT differs", |s| s.miscselect = 0),
        ("MISCSELECT extra bit", |s| s.miscselect |= 0x2),
    ];
    for (name, tweak) in cases {
        let sig = f.resigned(tweak);
        assert_eq!(f.einit(&sig), error(ErrorCode::InvalidAttribute), "{name}");
    }
    // Step 12 precedes step 13: attribute mismatch and an untrusted signer.
    let mismatch = f.resigned(|s| s.attributes.flags ^= debug);
    f.use_intel_le_hash();
    assert_eq!(f.einit(&mismatch), error(ErrorCode::InvalidAttribute));
    // Differences outside the masks are ignored.
    let masked = f.resigned(|s| {
        s.attributes = Attributes { flags: AttributesFlags::MODE64BIT.bits(), xfrm: 0 };
        s.attributemask = Attributes { flags: !debug, xfrm: 0 };
        s.miscselect = 0xFFFF_FFFE;
        s.miscmask = 0;
    });
    set_le_hash(&mut f.h.lp, &f.h.cpu, &signer_hash());
    assert_eq!(f.einit(&masked), Ok(Status::Success));
}

#[test]
fn einit_invalid_token_with_le_hash_other_than_mrsigner_is_invalid_einittoken() {
    let mut f = Fixture::new();
    let sig = f.sig;
    f.use_intel_le_hash();
    assert_eq!(f.einit(&sig), error(ErrorCode::InvalidEinittoken));
    // A token with VALID = 0 is ignored entirely, whatever else it holds.
    let mut garbage = Einittoken::new_zeroed();
    garbage.as_mut_bytes().fill(0xA5);
    garbage.valid = 0xFFFF_FFFE;
    assert_eq!(f.einit_with_token(&garbage), error(ErrorCode::InvalidEinittoken));
    set_le_hash(&mut f.h.lp, &f.h.cpu, &signer_hash());
    assert_eq!(f.einit_with_token(&garbage), Ok(Status::Success));
}

// --- EINITTOKEN (VALID = 1) ------------------------------------------------------------------

/// The EINITTOKEN MAC as §11.3 defines it, computed here from the platform secrets.
fn token_mac(secrets: &PlatformSecrets, le_hash: [u8; 32], t: &Einittoken) -> [u8; 16] {
    let attrs = |a: Attributes| {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&a.flags.to_le_bytes());
        out[8..].copy_from_slice(&a.xfrm.to_le_bytes());
        out
    };
    let key = derive_key(
        &secrets.root_key,
        &KeyDependencies {
            keyname: Keyname::Einittoken as u16,
            isvprodid: t.isvprodidle,
            isvsvn: t.isvsvnle,
            ownerepoch: secrets.owner_epoch,
            attributes: attrs(t.maskedattributesle),
            mrsigner: le_hash,
            keyid: t.keyid,
            seal_key_fuses: secrets.seal_fuses,
            cpusvn: t.cpusvnle,
            miscselect: t.maskedmiscselectle,
            padding: PKCS1_SHA256_PADDING,
            ..KeyDependencies::default()
        },
    );
    aes128_cmac(&key, &t.as_bytes()[..192])
}

/// A VALID token for the fixture's enclave, issued by a launch enclave whose MRSIGNER is the
/// LP's current LEPUBKEYHASH, with a correct MAC.
fn valid_token(f: &Fixture) -> Einittoken {
    let secrets = f.secrets();
    let mut t = Einittoken::new_zeroed();
    t.valid = 1;
    t.attributes = f.d.image.attributes;
    t.mrenclave = f.sig.enclavehash;
    t.mrsigner = signer_hash();
    t.cpusvnle = secrets.cpusvn;
    t.isvprodidle = 0x20;
    t.isvsvnle = 2;
    t.maskedmiscselectle = 1;
    t.maskedattributesle = Attributes {
        flags: (AttributesFlags::INIT | AttributesFlags::MODE64BIT | AttributesFlags::EINITTOKENKEY).bits(),
        xfrm: 3,
    };
    t.keyid = [0x3C; 32];
    remac(f, &mut t);
    t
}

fn remac(f: &Fixture, t: &mut Einittoken) {
    t.mac = token_mac(&f.secrets(), le_hash_bytes(f.h.lp.lepubkeyhash()), t);
}

#[test]
fn einit_valid_token_with_correct_mac_launches_an_enclave_whose_signer_is_not_the_le_hash() {
    let mut f = Fixture::new();
    f.use_intel_le_hash();
    let sig = f.sig;
    assert_eq!(f.einit(&sig), error(ErrorCode::InvalidEinittoken), "the zero token does not");
    let token = valid_token(&f);
    assert_eq!(f.einit_with_token(&token), Ok(Status::Success));
    f.h.cpu.check_invariants().unwrap();
}

#[test]
fn einit_token_mac_key_agrees_with_egetkey_einittoken_in_a_launch_enclave() {
    let mut h = harness();
    // The launch enclave: EINITTOKENKEY, signed by the key the LP trusts (step 11 passes).
    let le_image = secs_with(|s| s.attributes.flags |= AttributesFlags::EINITTOKENKEY.bits());
    let le = build_draft(&mut h, &le_image, &page_plan());
    let le_sig = sign_draft(&h, &le, |_| {});
    set_le_hash(&mut h.lp, &h.cpu, &signer_hash());
    assert_eq!(einit_raw(&mut h, le.secs, &le_sig, &Einittoken::new_zeroed()), Ok(Status::Success));
    let secrets = h.cpu.config().secrets.clone().unwrap();

    let mut req = Keyrequest::new_zeroed();
    req.keyname = Keyname::Einittoken as u16;
    req.isvsvn = 3;
    req.cpusvn = secrets.cpusvn;
    req.attributemask = Attributes { flags: !0, xfrm: !0 };
    req.miscmask = !0;
    req.keyid = [0x6B; 32];
    let data = le.pages[&layout::DATA];
    let data_index = h.cpu.epc_index(data).unwrap();
    h.cpu.write_epc(data_index, 0, req.as_bytes());
    let status = inside(&mut h, le.la(layout::TCS), |h, regs| {
        regs.rbx = le.la(layout::DATA);
        regs.rcx = le.la(layout::DATA) + 0x200;
        h.cpu.egetkey(&mut h.lp, regs, &h.pt)
    });
    assert_eq!(status, Ok(Status::Success));
    let mut key = [0u8; 16];
    h.cpu.read_epc(data_index, 0x200, &mut key);

    // The token such a launch enclave issues for a target enclave.
    let target = build_draft(&mut h, &secs_with(|s| s.baseaddr = BASE + SIZE), &page_plan());
    let target_sig = sign_draft(&h, &target, |_| {});
    let mut t = Einittoken::new_zeroed();
    t.valid = 1;
    t.attributes = target.image.attributes;
    t.mrenclave = target_sig.enclavehash;
    t.mrsigner = signer_hash();
    t.cpusvnle = req.cpusvn;
    t.isvprodidle = le_sig.isvprodid;
    t.isvsvnle = req.isvsvn;
    t.maskedmiscselectle = le_image.miscselect;
    t.maskedattributesle =
        Attributes { flags: le_image.attributes.flags | AttributesFlags::INIT.bits(), xfrm: le_image.attributes.xfrm };
    t.keyid = req.keyid;
    t.mac = aes128_cmac(&key, &t.as_bytes()[..192]);
    // §11.3's recipe, computed from the secrets, gives the same MAC.
    assert_eq!(t.mac, token_mac(&secrets, signer_hash(), &t));
    assert_eq!(einit_raw(&mut h, target.secs, &target_sig, &t), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn einit_valid_token_masked_debug_on_non_debug_enclave_is_invalid_einittoken() {
    let image = secs_with(|s| s.attributes.flags &= !AttributesFlags::DEBUG.bits());
    let mut f = Fixture::with(image, |_| {});
    f.use_intel_le_hash();
    let mut token = valid_token(&f);
    token.maskedattributesle.flags |= AttributesFlags::DEBUG.bits();
    remac(&f, &mut token);
    assert_eq!(f.einit_with_token(&token), error(ErrorCode::InvalidEinittoken));
    let control = valid_token(&f);
    assert_eq!(f.einit_with_token(&control), Ok(Status::Success));
}

#[test]
fn einit_valid_token_with_reserved_bits_is_invalid_einittoken() {
    let mut f = Fixture::new();
    f.use_intel_le_hash();
    let cases: [(&str, TokenTweak); 8] = [
        ("VALID bit 1", |t| t.valid |= 2),
        ("VALID bit 31", |t| t.valid |= 1 << 31),
        ("reserved [4,48) first", |t| t.reserved1[0] = 1),
        ("reserved [4,48) last", |t| t.reserved1[43] = 0x80),
        ("reserved [96,128)", |t| t.reserved2[16] = 1),
        ("reserved [160,192)", |t| t.reserved3[31] = 1),
        ("reserved [212,236) first", |t| t.reserved4[0] = 1),
        ("reserved [212,236) last", |t| t.reserved4[23] = 1),
    ];
    for (name, tweak) in cases {
        let mut token = valid_token(&f);
        tweak(&mut token);
        remac(&f, &mut token); // a correct MAC: the reserved check itself must reject
        assert_eq!(f.einit_with_token(&token), error(ErrorCode::InvalidEinittoken), "{name}");
        // Reserved bits are checked before CPUSVNLE.
        token.cpusvnle[0] = 0xFF;
        remac(&f, &mut token);
        assert_eq!(f.einit_with_token(&token), error(ErrorCode::InvalidEinittoken), "{name} + CPUSVN");
    }
    let token = valid_token(&f);
    assert_eq!(f.einit_with_token(&token), Ok(Status::Success));
}

#[test]
fn einit_valid_token_cpusvnle_above_platform_is_invalid_cpusvn() {
    let mut f = Fixture::new();
    f.use_intel_le_hash();
    let cpusvn = f.secrets().cpusvn;
    for component in [0usize, 6, 15] {
        let mut token = valid_token(&f);
        token.cpusvnle = [0; 16];
        token.cpusvnle[component] = cpusvn[component] + 1;
        remac(&f, &mut token);
        assert_eq!(f.einit_with_token(&token), error(ErrorCode::InvalidCpusvn), "component {component}");
        // CPUSVNLE is checked before the MAC.
        token.mac[0] ^= 1;
        assert_eq!(f.einit_with_token(&token), error(ErrorCode::InvalidCpusvn), "component {component}, bad MAC");
    }
    // Lower (component-wise) is fine.
    let mut token = valid_token(&f);
    token.cpusvnle = [0; 16];
    remac(&f, &mut token);
    assert_eq!(f.einit_with_token(&token), Ok(Status::Success));
}

#[test]
fn einit_valid_token_with_bad_mac_is_invalid_einittoken() {
    let mut f = Fixture::new();
    f.use_intel_le_hash();
    let good = valid_token(&f);
    let mut cases: Vec<(String, Einittoken)> = Vec::new();
    for bit in [0usize, 64, 127] {
        let mut t = good;
        t.mac[bit / 8] ^= 1 << (bit % 8);
        cases.push((format!("MAC bit {bit}"), t));
    }
    // A MACed field changed after MACing.
    let mut t = good;
    t.isvsvnle += 1;
    cases.push(("ISVSVNLE changed".into(), t));
    let mut t = good;
    t.keyid[0] ^= 1;
    cases.push(("KEYID changed".into(), t));
    // MAC keyed by another LE hash (the one of our signer, not what the LP holds).
    let mut t = good;
    t.mac = token_mac(&f.secrets(), signer_hash(), &t);
    cases.push(("MAC for another LEPUBKEYHASH".into(), t));
    // MAC from another platform's secrets.
    let mut t = good;
    t.mac = token_mac(&PlatformSecrets::from_seed([9; 16]), le_hash_bytes(INTEL_LE_PUBKEY_HASH), &t);
    cases.push(("MAC from another platform".into(), t));
    for (name, token) in &cases {
        assert_eq!(f.einit_with_token(token), error(ErrorCode::InvalidEinittoken), "{name}");
    }
    assert_eq!(f.einit_with_token(&good), Ok(Status::Success));
}

#[test]
fn einit_valid_token_for_another_enclave_is_invalid_measurement_or_attribute() {
    let mut f = Fixture::new();
    f.use_intel_le_hash();
    let mut t = valid_token(&f);
    t.mrenclave[5] ^= 1;
    remac(&f, &mut t);
    assert_eq!(f.einit_with_token(&t), error(ErrorCode::InvalidMeasurement), "token MRENCLAVE");
    // The MAC is checked before the token's MRENCLAVE: a stale MAC reports the MAC.
    t.mrenclave[6] ^= 1;
    assert_eq!(f.einit_with_token(&t), error(ErrorCode::InvalidEinittoken), "token MRENCLAVE, stale MAC");
    let mut t = valid_token(&f);
    t.mrsigner[31] ^= 0x80;
    remac(&f, &mut t);
    assert_eq!(f.einit_with_token(&t), error(ErrorCode::InvalidMeasurement), "token MRSIGNER");
    let mut t = valid_token(&f);
    t.attributes.flags ^= AttributesFlags::PROVISIONKEY.bits();
    remac(&f, &mut t);
    assert_eq!(f.einit_with_token(&t), error(ErrorCode::INVALID_EINIT_ATTRIBUTE), "token ATTRIBUTES");
    let mut t = valid_token(&f);
    t.attributes.xfrm = 7;
    remac(&f, &mut t);
    assert_eq!(f.einit_with_token(&t), error(ErrorCode::InvalidAttribute), "token XFRM");
    f.assert_still_initializable();
}

#[test]
fn einit_success_commits_mrenclave_mrsigner_isvprodid_isvsvn_and_init() {
    // ECREATE ignores (resets) the output fields of its input image (§4.1 step 6).
    let image = secs_with(|s| {
        s.mrenclave = [0xAA; 32];
        s.mrsigner = [0xBB; 32];
        s.isvprodid = 0xBEEF;
        s.isvsvn = 0xCAFE;
    });
    let mut f = Fixture::with(image, |s| s.isvextprodid = [0xE5; 16]);
    let sig = f.sig;
    let expected_mrenclave = f.h.cpu.mrenclave_so_far(f.d.secs).unwrap();
    assert_eq!(f.einit(&sig), Ok(Status::Success));
    let data = f.d.pages[&layout::DATA];
    let report = report_from_inside(&mut f.h, f.d.la(layout::TCS), f.d.la(layout::DATA), data);
    assert_eq!(report.mrenclave, expected_mrenclave);
    assert_eq!(report.mrsigner, sha256(&sig.modulus), "MRSIGNER = SHA-256 of MODULUS as stored");
    assert_eq!((report.isvprodid, report.isvsvn), (7, 3));
    assert_eq!(report.attributes.flags, image.attributes.flags | AttributesFlags::INIT.bits());
    assert_eq!(report.isvextprodid, [0; 16], "no KSS: ISVEXTPRODID not committed");
    assert_eq!(report.isvfamilyid, [0; 16], "no KSS: ISVFAMILYID not committed");
    f.h.cpu.check_invariants().unwrap();
}

#[test]
fn concurrent_einits_initialize_the_enclave_exactly_once() {
    for _ in 0..10 {
        let f = Fixture::new();
        let cpu = &f.h.cpu;
        let secs = f.d.secs;
        let sig = f.sig;
        let outcomes: Vec<LeafResult> = thread::scope(|s| {
            let run = || {
                let mut lp = cpu.new_lp();
                set_le_hash(&mut lp, cpu, &signer_hash());
                let mut mem = SparseMemory::new();
                mem.write(scratch::SIGSTRUCT, sig.as_bytes()).unwrap();
                mem.write(scratch::TOKEN, &[0u8; 304]).unwrap();
                cpu.einit(&mut lp, &mut mem, scratch::SIGSTRUCT, secs, scratch::TOKEN)
            };
            let a = s.spawn(run);
            let b = s.spawn(run);
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(outcomes.iter().filter(|r| **r == Ok(Status::Success)).count(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|r| *r == Ok(Status::Success) || *r == Err(Exception::Gp)), "{outcomes:?}");
    }
}

// --- One flipped bit anywhere ----------------------------------------------------------------

/// The code EINIT must return for `sig` with bit `bit` of byte `off` flipped, from the check
/// order of §4.4: the header/reserved checks (step 3) come before the signature (step 5),
/// which comes before ISVFAMILYID (7), the measurement (9) and the attributes (12).
fn expected_for_flip(off: usize, bit: u32) -> (&'static str, ErrorCode) {
    use ErrorCode::{InvalidSigStruct as Struct, InvalidSignature as Signature};
    match off {
        0..12 => ("HEADER", Struct),
        15 if bit == 7 => ("HEADER type bit 31 (tolerated, but signed)", Signature),
        12..16 => ("HEADER type", Struct),
        16..20 => ("VENDOR", Struct),
        20..24 => ("DATE (signed, unchecked)", Signature),
        24..40 => ("HEADER2", Struct),
        40..44 => ("SWDEFINED (signed)", Signature),
        44..128 => ("reserved", Struct),
        128..512 => ("MODULUS", Signature),
        512..516 => ("EXPONENT", Struct),
        516..900 => ("SIGNATURE", Signature),
        900..904 => ("MISCSELECT", Signature),
        904..908 => ("MISCMASK", Signature),
        908..910 => ("CET attributes (reserved here)", Struct),
        910..912 => ("reserved", Struct),
        912..928 => ("ISVFAMILYID (signature first)", Signature),
        928..944 => ("ATTRIBUTES", Signature),
        944..960 => ("ATTRIBUTEMASK", Signature),
        960..992 => ("ENCLAVEHASH (signature first)", Signature),
        992..1008 => ("reserved", Struct),
        1008..1024 => ("ISVEXTPRODID", Signature),
        1024..1026 => ("ISVPRODID", Signature),
        1026..1028 => ("ISVSVN", Signature),
        1028..1040 => ("reserved", Struct),
        1040..1424 => ("Q1", Signature),
        1424..1808 => ("Q2", Signature),
        _ => unreachable!("SIGSTRUCT is 1808 bytes"),
    }
}

#[test]
fn einit_one_flipped_sigstruct_bit_anywhere_fails_with_the_code_of_the_first_failing_check() {
    const BOUNDARIES: [usize; 27] = [
        0, 12, 16, 20, 24, 40, 44, 128, 512, 516, 900, 904, 908, 910, 912, 928, 944, 960, 992, 1008, 1024, 1026, 1028,
        1040, 1424, 1808, 15,
    ];
    let mut f = Fixture::new();
    let sig = f.sig;
    let mut tried = 0;
    for off in 0..Sigstruct::SIZE {
        // Every byte with one bit (rotating), and every bit of each field's first and last byte.
        let edge = BOUNDARIES.iter().any(|&b| off == b || off + 1 == b);
        let bits: Vec<u32> = if edge { (0..8).collect() } else { vec![(off % 8) as u32] };
        for bit in bits {
            let (field, code) = expected_for_flip(off, bit);
            let flipped = sig_with_bit_flipped(&sig, off, bit);
            assert_eq!(f.einit(&flipped), error(code), "byte {off} bit {bit} ({field})");
            tried += 1;
        }
    }
    assert!(tried > Sigstruct::SIZE);
    f.assert_still_initializable();
}

#[test]
fn einit_resigned_field_changes_fail_at_their_own_check() {
    // Validly signed, so step 5 passes: each change is caught by the check for its field.
    let mut f = Fixture::new();
    let failing: [(&str, SigTweak, ErrorCode); 5] = [
        ("ENCLAVEHASH bit", |s| s.enclavehash[9] ^= 4, ErrorCode::InvalidMeasurement),
        ("ATTRIBUTES.DEBUG", |s| s.attributes.flags ^= 2, ErrorCode::InvalidAttribute),
        ("ATTRIBUTES.XFRM bit 2", |s| s.attributes.xfrm ^= 4, ErrorCode::InvalidAttribute),
        ("MISCSELECT.EXINFO", |s| s.miscselect ^= 1, ErrorCode::InvalidAttribute),
        ("ISVFAMILYID bit", |s| s.isvfamilyid[0] ^= 1, ErrorCode::InvalidSigStruct),
    ];
    for (name, tweak, code) in failing {
        let sig = f.resigned(tweak);
        assert_eq!(f.einit(&sig), error(code), "{name}");
    }
    f.assert_still_initializable();
    // Fields no check constrains: the enclave launches.
    let launching: [(&str, SigTweak); 4] = [
        ("DATE", |s| s.date ^= 1),
        ("SWDEFINED", |s| s.swdefined ^= 1 << 31),
        ("ATTRIBUTEMASK bit 63 cleared (relaxes the check)", |s| s.attributemask.flags ^= 1 << 63),
        ("ISVSVN", |s| s.isvsvn ^= 1),
    ];
    for (name, tweak) in launching {
        let mut f = Fixture::new();
        let sig = f.resigned(tweak);
        assert_eq!(f.einit(&sig), Ok(Status::Success), "{name}");
    }
}

/// One change to what is measured (or to the SECS), the SIGSTRUCT signed for the original.
struct ContentCase {
    name: &'static str,
    image: fn(&mut Secs),
    plan: fn(&mut Vec<PagePlan>),
    expected: LeafResult,
}

#[test]
fn einit_one_flipped_bit_of_enclave_content_fails_with_invalid_measurement() {
    let original = {
        let mut h = harness();
        let d = build_draft(&mut h, &secs_image(BASE, SIZE), &page_plan());
        sign_draft(&h, &d, |_| {})
    };
    let cases: Vec<ContentCase> = vec![
        ContentCase { name: "control: unchanged", image: |_| {}, plan: |_| {}, expected: Ok(Status::Success) },
        ContentCase {
            name: "code page byte 0 bit 0",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::CODE).unwrap();
                p[i].data[0] ^= 1;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "data page byte 4095 bit 7",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::DATA).unwrap();
                p[i].data[4095] ^= 0x80;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "rodata page byte 2049 bit 3",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::RODATA).unwrap();
                p[i].data[2049] ^= 8;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "TCS OENTRY bit 4",
            image: |_| {},
            plan: |p| p[0].data[32] ^= 0x10,
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "control: TCS AEP bit (forced to 0 by EADD)",
            image: |_| {},
            plan: |p| p[0].data[40] ^= 1,
            expected: Ok(Status::Success),
        },
        ContentCase {
            name: "control: unmeasured SSA page byte",
            image: |_| {},
            plan: |p| p[1].data[100] ^= 1,
            expected: Ok(Status::Success),
        },
        ContentCase {
            name: "SECINFO.X added to the data page",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::DATA).unwrap();
                p[i].flags ^= X;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "SECINFO.W removed from the data page",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::DATA).unwrap();
                p[i].flags ^= W;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "SECINFO.R removed from the rodata page",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::RODATA).unwrap();
                p[i].flags ^= R;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "SECINFO.X added to an unmeasured SSA page (its EADD record is measured)",
            image: |_| {},
            plan: |p| p[1].flags ^= X,
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "data page offset bit 16 (LINADDR)",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::DATA).unwrap();
                p[i].offset ^= 1 << 16;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "a measured page left unmeasured",
            image: |_| {},
            plan: |p| {
                let i = p.iter().position(|x| x.offset == layout::RODATA).unwrap();
                p[i].measured = false;
            },
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "ECREATE SSAFRAMESIZE bit 1 (1 -> 3)",
            image: |s| s.ssaframesize ^= 2,
            plan: |_| {},
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "ECREATE SSAFRAMESIZE bit 4 (1 -> 17)",
            image: |s| s.ssaframesize ^= 16,
            plan: |_| {},
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "ECREATE SIZE doubled",
            image: |s| s.size *= 2,
            plan: |_| {},
            expected: error(ErrorCode::InvalidMeasurement),
        },
        ContentCase {
            name: "control: BASEADDR moved (not measured)",
            image: |s| s.baseaddr += 16 * SIZE,
            plan: |_| {},
            expected: Ok(Status::Success),
        },
        ContentCase {
            name: "SECS.ATTRIBUTES.DEBUG cleared (bound by ATTRIBUTEMASK)",
            image: |s| s.attributes.flags ^= AttributesFlags::DEBUG.bits(),
            plan: |_| {},
            expected: error(ErrorCode::InvalidAttribute),
        },
        ContentCase {
            name: "SECS.ATTRIBUTES.XFRM bit 2 (bound by ATTRIBUTEMASK)",
            image: |s| s.attributes.xfrm ^= 4,
            plan: |_| {},
            expected: error(ErrorCode::InvalidAttribute),
        },
        ContentCase {
            name: "SECS.MISCSELECT.EXINFO cleared (bound by MISCMASK)",
            image: |s| s.miscselect ^= 1,
            plan: |_| {},
            expected: error(ErrorCode::InvalidAttribute),
        },
    ];
    for case in cases {
        let mut h = harness();
        let mut image = secs_image(BASE, SIZE);
        (case.image)(&mut image);
        let mut plan = page_plan();
        (case.plan)(&mut plan);
        let d = build_draft(&mut h, &image, &plan);
        set_le_hash(&mut h.lp, &h.cpu, &signer_hash());
        assert_eq!(einit_raw(&mut h, d.secs, &original, &Einittoken::new_zeroed()), case.expected, "{}", case.name);
    }
    // Any single-bit flip of ECREATE's SIZE is already rejected by ECREATE itself: a power of
    // two with one bit flipped is zero or not a power of two.
    for bit in 0..64 {
        let secs = secs_with(|s| s.size ^= 1 << bit);
        assert_eq!(ecreate_on(&config(), &secs), GP, "SIZE bit {bit}");
    }
    // SSAFRAMESIZE bit 0 (1 -> 0) likewise.
    assert_eq!(ecreate_on(&config(), &secs_with(|s| s.ssaframesize ^= 1)), GP);
}
