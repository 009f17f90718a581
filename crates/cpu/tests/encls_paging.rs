//! EPC paging leaves against spec §4.7–§4.11 and the tracking model of §7: EPA, EBLOCK,
//! ETRACK, EWB, ELDB/ELDU. Every numbered check of the spec and the test(s) covering it:
//!
//! EPA (§4.9)
//! - 1 RBX ≠ PT_VA → #GP: `epa_with_rbx_other_than_pt_va_is_gp`
//! - 1 RCX not 4K aligned → #GP: `epa_misaligned_target_is_gp`
//! - 1 RCX not in EPC → #PF(RCX): `epa_target_outside_epc_is_pf`
//! - 1 order (RBX before EPC check): `epa_checks_rbx_before_the_target_page`
//! - 1 target busy → #GP: `concurrency.rs` `leaves_meeting_an_ewb_in_progress`,
//!   `leaves_meeting_an_eldu_in_progress` (deterministic), `epa_races_epa_on_one_page`
//! - 1 VALID = 1 → #PF(RCX): `epa_on_a_valid_page_is_pf`
//! - 2 zeroed page, EPCM PT_VA/ADDR 0/RWX 0/no state, flags unaffected: `epa_makes_an_empty_va_page`
//!
//! EBLOCK (§4.7)
//! - 1 misaligned → #GP: `eblock_misaligned_target_is_gp`; not in EPC → #PF: `eblock_target_outside_epc_is_pf`
//! - 2 conflict → SGX_EPC_PAGE_CONFLICT: `concurrency.rs` `leaves_meeting_an_ewb_in_progress`
//!   (deterministic), `eblock_races_ewb_on_one_page`
//! - 3 VALID = 0 → SGX_PG_INVLD (6): `eblock_invalid_page_is_pg_invld`
//! - 4 SECS → info SGX_PG_IS_SECS (18), CF=1 ZF=0: `eblock_secs_is_info_pg_is_secs_with_cf`
//! - 4 VA → info SGX_NOTBLOCKABLE (5): `eblock_va_page_is_info_notblockable`
//! - 5 already blocked → info SGX_BLKSTATE (3): `eblock_twice_is_info_blkstate`
//! - 5 success sets BLOCKED (REG, TCS, TRIM, PENDING pages): `eblock_sets_blocked_and_nothing_else`
//! - effect: blocked page inaccessible to the enclave (#PF with SGX bit):
//!   `blocked_page_faults_enclave_accesses_with_sgx_bit`; EENTER on a blocked TCS → #PF:
//!   `eenter_on_blocked_tcs_is_pf`; blocked SSA page → #PF: `eenter_with_blocked_ssa_page_is_pf`
//!
//! ETRACK (§4.8, §7)
//! - 1 misaligned → #GP: `etrack_misaligned_is_gp`; not in EPC → #PF: `etrack_outside_epc_is_pf`
//! - 2 SECS busy → #GP: `concurrency.rs` `leaves_meeting_an_ewb_of_the_secs` (deterministic);
//!   concurrent ETRACKs: `etrack_races_etrack_on_one_secs` (only allowed outcomes: both
//!   succeed, or one #GP)
//! - 3 VALID = 0 or not SECS → #PF(RCX): `etrack_on_a_non_secs_page_is_pf`
//! - 4 SGX_PREV_TRK_INCMPL (17) while an LP from before the previous ETRACK is inside, success
//!   after it leaves: `etrack_prev_trk_incmpl_until_the_lp_eexits`,
//!   `etrack_prev_trk_incmpl_until_the_lp_aexes`; LPs entering after an ETRACK do not count:
//!   `etrack_ignores_lps_that_entered_after_the_previous_etrack`; nobody inside:
//!   `etrack_with_nobody_inside_always_succeeds`
//!
//! EWB (§4.10)
//! - 1 RBX not 32-aligned / RCX not 4K-aligned → #GP, RCX not EPC → #PF(RCX), RDX not 8-aligned
//!   → #GP, RDX not EPC → #PF(RDX), same page → #GP; 2 LINADDR ≠ 0 / SECS ≠ 0 → #GP, PCMD not
//!   128-aligned / SRCPGE not 4K-aligned → #GP; 4 target invalid → #PF(RCX), VA invalid / not
//!   PT_VA → #PF(RDX); and their relative order: `ewb_operand_checks_in_order` (table)
//! - 3 page busy / VA page held → #GP: `concurrency.rs` `leaves_meeting_an_ewb_in_progress`,
//!   `leaves_meeting_an_eldu_in_progress` (deterministic), `eblock_races_ewb_on_one_page`
//! - 6 not blocked → SGX_PAGE_NOT_BLOCKED (10): `ewb_of_unblocked_child_is_page_not_blocked`
//! - 6 not tracked → SGX_NOT_TRACKED (11): `ewb_before_etrack_is_not_tracked`; the Linux flow
//!   EWB→ETRACK→EWB→IPI(AEX)→EWB: `ewb_linux_flow_not_tracked_until_earlier_lp_aexes`
//! - 6 SECS with children → SGX_CHILD_PRESENT (13), after all children evicted → success, and
//!   the whole enclave reloads (SECS first) with its identity: `whole_enclave_round_trips_through_ewb_and_eldu`
//! - 6/9 PCMD: SECINFO (PT, RWX, PENDING, MODIFIED, PR), ENCLAVEID, reserved 0; PAGEINFO.LINADDR
//!   written back; slot non-zero: `ewb_writes_pcmd_linaddr_and_version`,
//!   `pending_modified_and_pr_survive_a_round_trip`; SECS/VA PCMD.ENCLAVEID:
//!   `whole_enclave_round_trips_through_ewb_and_eldu`, `va_page_evicts_and_reloads_with_its_slots`
//! - VA page eviction: `va_page_evicts_and_reloads_with_its_slots`
//! - 10 occupied slot → info SGX_VA_SLOT_OCCUPIED (12), CF=1, eviction still happened:
//!   `ewb_into_occupied_slot_is_info_and_still_evicts`
//! - 11 EPCM invalid after success: every success test above
//!
//! ELDB/ELDU (§4.11)
//! - 1 alignment / EPC checks of RBX, RCX, RDX; 2 PCMD/SRCPGE alignment; 3 target valid → #PF(RCX),
//!   VA invalid / not VA → #PF(RDX); 5 child: SECS misaligned → #GP, SECS 0 / outside EPC /
//!   invalid / not a SECS → #PF(SECS); SECS or VA page with PAGEINFO.SECS ≠ 0 → #GP; and their
//!   order: `eldu_operand_checks_in_order` (table), `eldu_of_secs_or_va_with_nonzero_secs_is_gp`
//! - 2 locks (target exclusive, VA shared) and 5 SECS locked → #GP: `concurrency.rs`
//!   `leaves_meeting_an_eldu_in_progress`, `leaves_meeting_an_ewb_in_progress`,
//!   `leaves_meeting_an_ewb_of_the_secs` (all deterministic)
//! - 6 MAC failure → SGX_MAC_COMPARE_FAIL (9), target stays invalid, slot kept: tampered
//!   ciphertext, PCMD SECINFO, PCMD reserved, MAC, LINADDR, another enclave's SECS:
//!   `eldu_of_tampered_page_is_mac_compare_fail` (table); replay of an older version:
//!   `eldu_replay_of_an_older_version_is_mac_compare_fail`; power cycle (new secrets):
//!   `eldu_after_power_cycle_is_mac_compare_fail`
//! - 7 slot zeroed after success: `eldu_restores_contents_and_frees_the_slot`
//! - 8 contents bit-identical, EPCM restored: `eldu_restores_contents_and_frees_the_slot`;
//!   PENDING/MODIFIED/PR: `pending_modified_and_pr_survive_a_round_trip`; ELDB leaves a child
//!   BLOCKED, ELDU not, SECS/VA never: `eldb_leaves_child_blocked_and_eldu_does_not`,
//!   `va_page_evicts_and_reloads_with_its_slots`

use sgxemu_arch::{
    Encls, Enclu, ErrorCode, PAGE_SIZE, PageType, Pageinfo, Pcmd, PfErrorCode, Report, Secinfo, SecinfoFlags as F,
};
use sgxemu_cpu::regs::{ARITH_FLAGS, RFLAGS_CF, RFLAGS_ZF};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image};
use sgxemu_cpu::{
    AccessKind, AexEvent, EpcIndex, EpcmView, Exception, LeafResult, Lp, Memory, PageTable, PlatformConfig,
    PlatformSecrets, Regs, Status, Translation,
};
use zerocopy::{FromBytes, IntoBytes};

const AEP: u64 = 0x40_1000;
/// A page-aligned kernel address outside the EPC.
const NOT_EPC: u64 = 0x7000_8000;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Where one evicted page's ciphertext and PCMD live in kernel memory.
#[derive(Clone, Copy, Debug)]
struct Backing {
    page: u64,
    pcmd: u64,
}

fn backing(i: u64) -> Backing {
    Backing { page: 0x6000_0000 + i * 0x2000, pcmd: 0x6000_1000 + i * 0x2000 }
}

fn pf(addr: u64, write: bool) -> Exception {
    Exception::epcm_pf(addr, write)
}

fn view(h: &Harness, epc: u64) -> EpcmView {
    h.cpu.epcm_view(h.cpu.epc_index(epc).expect("EPC address"))
}

fn epc_bytes(h: &Harness, epc: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; PAGE_SIZE];
    h.cpu.read_epc(h.cpu.epc_index(epc).expect("EPC address"), 0, &mut bytes);
    bytes
}

fn slot_value(h: &Harness, slot: u64) -> u64 {
    let mut bytes = [0u8; 8];
    h.cpu.read_epc(h.cpu.epc_index(slot).expect("EPC address"), (slot % PAGE_SIZE as u64) as usize, &mut bytes);
    u64::from_le_bytes(bytes)
}

fn read_pcmd(h: &Harness, addr: u64) -> Pcmd {
    let mut bytes = [0u8; Pcmd::SIZE];
    h.mem.read(addr, &mut bytes).expect("kernel memory");
    Pcmd::read_from_bytes(&bytes[..]).expect("128 bytes")
}

fn write_pcmd(h: &mut Harness, addr: u64, pcmd: &Pcmd) {
    h.mem.write(addr, pcmd.as_bytes()).expect("kernel memory");
}

fn read_pageinfo(h: &Harness) -> Pageinfo {
    let mut bytes = [0u8; Pageinfo::SIZE];
    h.mem.read(scratch::PAGEINFO, &mut bytes).expect("kernel memory");
    Pageinfo::read_from_bytes(&bytes[..]).expect("32 bytes")
}

fn new_va(h: &mut Harness) -> u64 {
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, PageType::Va as u64, va).expect("EPA");
    va
}

fn ewb(h: &mut Harness, target: u64, slot: u64, b: Backing) -> LeafResult {
    h.put_pageinfo(0, b.page, b.pcmd, 0);
    h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, slot)
}

fn eldu(h: &mut Harness, target: u64, slot: u64, b: Backing, linaddr: u64, secs: u64) -> LeafResult {
    h.put_pageinfo(linaddr, b.page, b.pcmd, secs);
    h.cpu.eldu(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, slot)
}

fn eldb(h: &mut Harness, target: u64, slot: u64, b: Backing, linaddr: u64, secs: u64) -> LeafResult {
    h.put_pageinfo(linaddr, b.page, b.pcmd, secs);
    h.cpu.eldb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, slot)
}

/// EBLOCK of every page, then one ETRACK (nobody may be inside from before).
fn block_and_track(h: &mut Harness, secs: u64, pages: &[u64]) {
    for &page in pages {
        assert_eq!(h.cpu.eblock(&mut h.lp, page), Ok(Status::Success), "EBLOCK {page:#x}");
    }
    assert_eq!(h.cpu.etrack(&mut h.lp, secs), Ok(Status::Success));
}

/// EBLOCK + ETRACK + EWB of one child page, which must succeed.
fn evict(h: &mut Harness, secs: u64, page: u64, slot: u64, b: Backing) {
    block_and_track(h, secs, &[page]);
    assert_eq!(ewb(h, page, slot, b), Ok(Status::Success));
    assert!(!view(h, page).valid);
}

fn data_page(e: &TestEnclave) -> u64 {
    e.pages[&(e.base + layout::DATA)]
}

fn rodata_page(e: &TestEnclave) -> u64 {
    e.pages[&(e.base + layout::RODATA)]
}

fn tcs_page(e: &TestEnclave) -> u64 {
    e.pages[&e.tcs]
}

fn setup() -> (Harness, TestEnclave, u64) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let va = new_va(&mut h);
    (h, e, va)
}

/// EENTER on `tcs` by a logical processor other than the harness's (which keeps running ENCLS).
fn enter_on(h: &Harness, lp: &mut Lp, tcs: u64) -> Regs {
    let mut regs = Regs { rax: Enclu::Eenter as u64, rbx: tcs, rcx: AEP, rip: 0x40_0000, ..Regs::default() };
    h.cpu.eenter(lp, &mut regs, &h.pt).expect("EENTER");
    regs
}

fn exit_on(h: &Harness, lp: &mut Lp, regs: &mut Regs) {
    regs.rax = Enclu::Eexit as u64;
    regs.rbx = 0x40_0003;
    h.cpu.eexit(lp, regs).expect("EEXIT");
}

/// Runs ENCLS through the instruction decoder and returns the registers after it.
fn encls(h: &mut Harness, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<Regs, Exception> {
    let mut regs = Regs { rax: leaf as u64, rbx, rcx, rdx, rflags: ARITH_FLAGS | 0x2, ..Regs::default() };
    h.cpu.encls(&mut h.lp, &mut regs, &mut h.mem)?;
    Ok(regs)
}

/// Asserts RAX and the flag convention of spec §3.2 after a code-returning ENCLS.
fn assert_rax_flags(regs: &Regs, rax: u64, cf: bool, zf: bool) {
    assert_eq!(regs.rax, rax, "RAX");
    assert_eq!(regs.rflags & RFLAGS_CF != 0, cf, "CF");
    assert_eq!(regs.rflags & RFLAGS_ZF != 0, zf, "ZF");
    let others = ARITH_FLAGS & !(RFLAGS_CF | RFLAGS_ZF);
    assert_eq!(regs.rflags & others, 0, "PF/AF/SF/OF cleared");
}

/// The EPC page a linear address is mapped to in the harness page table.
fn mapped_epc(h: &Harness, la: u64) -> EpcIndex {
    match h.pt.translate(la) {
        Translation::Present { pa, .. } => h.cpu.epc_index(pa).expect("maps EPC"),
        Translation::NotPresent => panic!("{la:#x} not mapped"),
    }
}

/// EREPORT (zero TARGETINFO) from inside the enclave, operands on the data page.
fn self_report(h: &Harness, lp: &mut Lp, e: &TestEnclave, regs: &mut Regs) -> Report {
    let data_la = e.base + layout::DATA;
    let data = mapped_epc(h, data_la);
    h.cpu.write_epc(data, 0, &[0u8; 0x600]);
    regs.rbx = data_la;
    regs.rcx = data_la + 0x200;
    regs.rdx = data_la + 0x400;
    h.cpu.ereport(lp, regs, &h.pt).expect("EREPORT");
    let mut bytes = [0u8; 432];
    h.cpu.read_epc(data, 0x400, &mut bytes);
    Report::read_from_bytes(&bytes[..]).expect("432 bytes")
}

/// A deterministic non-trivial byte pattern (xorshift64).
fn pattern(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..PAGE_SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// EPA

#[test]
fn epa_with_rbx_other_than_pt_va_is_gp() {
    let mut h = Harness::new();
    let page = h.alloc_page();
    for rbx in [0, 1, 2, 4, 5, 6, 0x103, u64::MAX] {
        assert_eq!(h.cpu.epa(&mut h.lp, rbx, page), Err(Exception::Gp), "RBX = {rbx:#x}");
        assert!(!view(&h, page).valid);
    }
}

#[test]
fn epa_misaligned_target_is_gp() {
    let mut h = Harness::new();
    let page = h.alloc_page();
    for off in [8, 0x800, 0xFFF] {
        assert_eq!(h.cpu.epa(&mut h.lp, 3, page + off), Err(Exception::Gp), "offset {off:#x}");
    }
    assert!(!view(&h, page).valid);
}

#[test]
fn epa_target_outside_epc_is_pf() {
    let mut h = Harness::new();
    let end = h.cpu.config().epc_base + h.cpu.config().epc_size;
    let below = h.cpu.config().epc_base - 0x1000;
    for addr in [NOT_EPC, below, end] {
        assert_eq!(h.cpu.epa(&mut h.lp, 3, addr), Err(pf(addr, true)), "{addr:#x}");
    }
}

#[test]
fn epa_checks_rbx_before_the_target_page() {
    let mut h = Harness::new();
    assert_eq!(h.cpu.epa(&mut h.lp, 2, NOT_EPC), Err(Exception::Gp));
    let va = new_va(&mut h);
    assert_eq!(h.cpu.epa(&mut h.lp, 2, va), Err(Exception::Gp), "RBX before VALID");
    assert_eq!(h.cpu.epa(&mut h.lp, 3, NOT_EPC + 8), Err(Exception::Gp), "alignment before EPC");
}

#[test]
fn epa_on_a_valid_page_is_pf() {
    let (mut h, e, va) = setup();
    h.cpu.write_epc(h.cpu.epc_index(va).unwrap(), 8, &7u64.to_le_bytes());
    for page in [e.secs, data_page(&e), tcs_page(&e), va] {
        let before = view(&h, page);
        let bytes = epc_bytes(&h, page);
        assert_eq!(h.cpu.epa(&mut h.lp, 3, page), Err(pf(page, true)), "{page:#x}");
        assert_eq!(view(&h, page), before, "EPCM unchanged");
        assert_eq!(epc_bytes(&h, page), bytes, "contents unchanged");
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn epa_makes_an_empty_va_page() {
    let mut h = Harness::new();
    let page = h.alloc_page();
    h.cpu.write_epc(h.cpu.epc_index(page).unwrap(), 0, &[0xAB; PAGE_SIZE]);
    let mut regs = Regs {
        rax: Encls::Epa as u64,
        rbx: 3,
        rcx: page,
        rip: 0x1000,
        rflags: RFLAGS_ZF | RFLAGS_CF | 2,
        ..Regs::default()
    };
    h.cpu.encls(&mut h.lp, &mut regs, &mut h.mem).unwrap();
    assert_eq!(regs.rflags, RFLAGS_ZF | RFLAGS_CF | 2, "flags unaffected");
    assert_eq!(regs.rax, Encls::Epa as u64, "RAX unaffected");
    assert_eq!(regs.rip, 0x1003);
    assert_eq!(
        view(&h, page),
        EpcmView {
            valid: true,
            page_type: PageType::Va,
            flags: F::from(PageType::Va),
            blocked: false,
            enclave_address: 0,
            eid: None,
            secs: None,
        }
    );
    assert_eq!(epc_bytes(&h, page), vec![0u8; PAGE_SIZE], "all 512 slots empty");
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// EBLOCK

#[test]
fn eblock_misaligned_target_is_gp() {
    let (mut h, e, _) = setup();
    let data = data_page(&e);
    for off in [8, 0x800, 0xFFF] {
        assert_eq!(h.cpu.eblock(&mut h.lp, data + off), Err(Exception::Gp));
    }
    assert_eq!(h.cpu.eblock(&mut h.lp, NOT_EPC + 8), Err(Exception::Gp), "alignment before EPC");
    assert!(!view(&h, data).blocked);
}

#[test]
fn eblock_target_outside_epc_is_pf() {
    let mut h = Harness::new();
    assert_eq!(h.cpu.eblock(&mut h.lp, NOT_EPC), Err(pf(NOT_EPC, false)));
}

#[test]
fn eblock_invalid_page_is_pg_invld() {
    let mut h = Harness::new();
    let page = h.alloc_page();
    assert_eq!(h.cpu.eblock(&mut h.lp, page), Ok(Status::Error(ErrorCode::PgInvld)));
    let regs = encls(&mut h, Encls::Eblock, 0, page, 0).unwrap();
    assert_rax_flags(&regs, 6, false, true);
    assert!(!view(&h, page).valid);
}

#[test]
fn eblock_secs_is_info_pg_is_secs_with_cf() {
    let (mut h, e, _) = setup();
    assert_eq!(h.cpu.eblock(&mut h.lp, e.secs), Ok(Status::Info(ErrorCode::PgIsSecs)));
    let regs = encls(&mut h, Encls::Eblock, 0, e.secs, 0).unwrap();
    assert_rax_flags(&regs, 18, true, false);
    assert!(!view(&h, e.secs).blocked);
}

#[test]
fn eblock_va_page_is_info_notblockable() {
    let (mut h, _, va) = setup();
    assert_eq!(h.cpu.eblock(&mut h.lp, va), Ok(Status::Info(ErrorCode::Notblockable)));
    let regs = encls(&mut h, Encls::Eblock, 0, va, 0).unwrap();
    assert_rax_flags(&regs, 5, true, false);
    assert!(!view(&h, va).blocked);
}

#[test]
fn eblock_twice_is_info_blkstate() {
    let (mut h, e, _) = setup();
    let data = data_page(&e);
    let regs = encls(&mut h, Encls::Eblock, 0, data, 0).unwrap();
    assert_rax_flags(&regs, 0, false, false);
    assert_eq!(h.cpu.eblock(&mut h.lp, data), Ok(Status::Info(ErrorCode::Blkstate)));
    let regs = encls(&mut h, Encls::Eblock, 0, data, 0).unwrap();
    assert_rax_flags(&regs, 3, true, false);
    assert!(view(&h, data).blocked);
}

#[test]
fn eblock_sets_blocked_and_nothing_else() {
    let (mut h, e, _) = setup();
    // A PENDING page (EAUG) and a TRIM page (EMODT) next to the EADDed REG and TCS pages.
    let pending = h.alloc_page();
    h.put_pageinfo(e.base + layout::HEAP, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, pending).unwrap();
    let trim = rodata_page(&e);
    h.put_secinfo(F::from(PageType::Trim));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, trim), Ok(Status::Success));
    for page in [data_page(&e), tcs_page(&e), pending, trim] {
        let before = view(&h, page);
        assert!(!before.blocked);
        assert_eq!(h.cpu.eblock(&mut h.lp, page), Ok(Status::Success), "{:?}", before.page_type);
        assert_eq!(view(&h, page), EpcmView { blocked: true, ..before });
    }
    h.cpu.check_invariants().unwrap();
}

#[test]
fn blocked_page_faults_enclave_accesses_with_sgx_bit() {
    let (mut h, e, _) = setup();
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    let la = e.base + layout::DATA + 0x10;
    assert!(h.cpu.check_access(&h.lp, &h.pt, la, AccessKind::Write).is_ok(), "writable before EBLOCK");
    let mut lp2 = h.cpu.new_lp();
    assert_eq!(h.cpu.eblock(&mut lp2, data_page(&e)), Ok(Status::Success));
    let sgx = PfErrorCode::P | PfErrorCode::U | PfErrorCode::SGX;
    assert_eq!(h.cpu.check_access(&h.lp, &h.pt, la, AccessKind::Read), Err(Exception::Pf { addr: la, code: sgx }));
    assert_eq!(
        h.cpu.check_access(&h.lp, &h.pt, la, AccessKind::Write),
        Err(Exception::Pf { addr: la, code: sgx | PfErrorCode::W })
    );
    let code_la = e.base + layout::CODE;
    assert!(h.cpu.check_access(&h.lp, &h.pt, code_la, AccessKind::Execute).is_ok(), "other pages unaffected");
    h.eexit(&mut regs, 0).unwrap();
}

#[test]
fn eenter_on_blocked_tcs_is_pf() {
    let (mut h, e, _) = setup();
    assert_eq!(h.cpu.eblock(&mut h.lp, tcs_page(&e)), Ok(Status::Success));
    let mut regs = Regs::default();
    assert_eq!(h.eenter(&mut regs, e.tcs, AEP), Err(Exception::epcm_pf_user(e.tcs, true)));
    assert!(!h.lp.in_enclave());
}

#[test]
fn eenter_with_blocked_ssa_page_is_pf() {
    let (mut h, e, _) = setup();
    let ssa_la = e.base + layout::SSA;
    assert_eq!(h.cpu.eblock(&mut h.lp, e.pages[&ssa_la]), Ok(Status::Success));
    let mut regs = Regs::default();
    assert_eq!(h.eenter(&mut regs, e.tcs, AEP), Err(Exception::epcm_pf_user(ssa_la, true)));
    assert!(!h.lp.in_enclave());
}

// ---------------------------------------------------------------------------------------------
// ETRACK

#[test]
fn etrack_misaligned_is_gp() {
    let (mut h, e, _) = setup();
    for off in [8, 0x800] {
        assert_eq!(h.cpu.etrack(&mut h.lp, e.secs + off), Err(Exception::Gp));
    }
    assert_eq!(h.cpu.etrack(&mut h.lp, NOT_EPC + 8), Err(Exception::Gp), "alignment before EPC");
}

#[test]
fn etrack_outside_epc_is_pf() {
    let mut h = Harness::new();
    assert_eq!(h.cpu.etrack(&mut h.lp, NOT_EPC), Err(pf(NOT_EPC, false)));
}

#[test]
fn etrack_on_a_non_secs_page_is_pf() {
    let (mut h, e, va) = setup();
    let invalid = h.alloc_page();
    for page in [invalid, data_page(&e), tcs_page(&e), va] {
        assert_eq!(h.cpu.etrack(&mut h.lp, page), Err(pf(page, false)), "{page:#x}");
    }
}

#[test]
fn etrack_with_nobody_inside_always_succeeds() {
    let (mut h, e, _) = setup();
    for _ in 0..3 {
        let regs = encls(&mut h, Encls::Etrack, 0, e.secs, 0).unwrap();
        assert_rax_flags(&regs, 0, false, false);
    }
}

#[test]
fn etrack_prev_trk_incmpl_until_the_lp_eexits() {
    let (mut h, e, _) = setup();
    let mut inside = h.cpu.new_lp();
    let mut regs = enter_on(&h, &mut inside, e.tcs);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success), "the LP entered in this cycle");
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Error(ErrorCode::PrevTrkIncmpl)));
    let flags = encls(&mut h, Encls::Etrack, 0, e.secs, 0).unwrap();
    assert_rax_flags(&flags, 17, false, true);
    exit_on(&h, &mut inside, &mut regs);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
}

#[test]
fn etrack_prev_trk_incmpl_until_the_lp_aexes() {
    let (mut h, e, _) = setup();
    let mut inside = h.cpu.new_lp();
    let mut regs = enter_on(&h, &mut inside, e.tcs);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Error(ErrorCode::PrevTrkIncmpl)));
    h.cpu.aex(&mut inside, &mut regs, AexEvent::interrupt()).expect("in enclave mode");
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    // ERESUME re-enters in the new cycle: the next ETRACK succeeds, the one after does not.
    regs.rax = Enclu::Eresume as u64;
    h.cpu.eresume(&mut inside, &mut regs, &h.pt).unwrap();
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Error(ErrorCode::PrevTrkIncmpl)));
    exit_on(&h, &mut inside, &mut regs);
}

#[test]
fn etrack_ignores_lps_that_entered_after_the_previous_etrack() {
    let (mut h, e, _) = setup();
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    let mut inside = h.cpu.new_lp();
    let mut regs = enter_on(&h, &mut inside, e.tcs);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success), "entered after the previous ETRACK");
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Error(ErrorCode::PrevTrkIncmpl)));
    exit_on(&h, &mut inside, &mut regs);
}

// ---------------------------------------------------------------------------------------------
// EWB

#[test]
fn ewb_operand_checks_in_order() {
    let (mut h, e, va) = setup();
    let data = data_page(&e);
    block_and_track(&mut h, e.secs, &[data]);
    let invalid = h.alloc_page();
    let rodata = rodata_page(&e);
    let b = backing(0);
    let good = Pageinfo { linaddr: 0, srcpge: b.page, secinfo: b.pcmd, secs: 0 };
    struct Case {
        name: &'static str,
        pageinfo_at: u64,
        pageinfo: Pageinfo,
        target: u64,
        slot: u64,
        expect: LeafResult,
    }
    let case =
        |name, pageinfo_at, pageinfo, target, slot, expect| Case { name, pageinfo_at, pageinfo, target, slot, expect };
    let gp = Err(Exception::Gp);
    let with = |f: fn(&mut Pageinfo)| {
        let mut p = good;
        f(&mut p);
        p
    };
    let pi = scratch::PAGEINFO;
    let cases = [
        // Step 1.
        case("PAGEINFO not 32-aligned", pi + 8, good, data, va, gp),
        case("target not 4K-aligned", pi, good, data + 0x800, va, gp),
        case("target not in EPC", pi, good, NOT_EPC, va, Err(pf(NOT_EPC, false))),
        case("slot not 8-aligned", pi, good, data, va + 4, gp),
        case("slot not in EPC", pi, good, data, NOT_EPC + 8, Err(pf(NOT_EPC + 8, true))),
        case("slot in the target page", pi, good, data, data + 8, gp),
        case("1: PAGEINFO alignment before target EPC", pi + 8, good, NOT_EPC, va, gp),
        case("1: target EPC before slot alignment", pi, good, NOT_EPC, va + 4, Err(pf(NOT_EPC, false))),
        case("1: slot alignment before slot EPC", pi, good, data, NOT_EPC + 4, gp),
        // Step 2.
        case("LINADDR != 0", pi, with(|p| p.linaddr = 0x10_0000_4000), data, va, gp),
        case("SECS != 0", pi, with(|p| p.secs = 0x80_0000_0000), data, va, gp),
        case("PCMD not 128-aligned", pi, with(|p| p.secinfo += 64), data, va, gp),
        case("SRCPGE not 4K-aligned", pi, with(|p| p.srcpge += 0x80), data, va, gp),
        case(
            "1 before 2: slot outside EPC with LINADDR != 0",
            pi,
            with(|p| p.linaddr = 1),
            data,
            NOT_EPC,
            Err(pf(NOT_EPC, true)),
        ),
        case("2 before 4: LINADDR != 0 on an invalid target", pi, with(|p| p.linaddr = 1), invalid, va, gp),
        // Step 4.
        case("target invalid", pi, good, invalid, va, Err(pf(invalid, false))),
        case("VA page invalid", pi, good, data, invalid + 16, Err(pf(invalid + 16, true))),
        case("VA operand is a REG page", pi, good, data, rodata + 16, Err(pf(rodata + 16, true))),
        case("VA operand is a SECS page", pi, good, data, e.secs, Err(pf(e.secs, true))),
        case("4: target before VA page", pi, good, invalid, rodata, Err(pf(invalid, false))),
    ];
    for c in cases {
        h.mem.write(c.pageinfo_at, c.pageinfo.as_bytes()).unwrap();
        let got = h.cpu.ewb(&mut h.lp, &mut h.mem, c.pageinfo_at, c.target, c.slot);
        assert_eq!(got, c.expect, "case: {}", c.name);
        assert!(view(&h, data).valid, "case {}: target still valid", c.name);
        assert_eq!(slot_value(&h, va), 0, "case {}: slot untouched", c.name);
    }
    // With every operand right, the same page evicts.
    assert_eq!(ewb(&mut h, data, va, b), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn ewb_of_unblocked_child_is_page_not_blocked() {
    let (mut h, e, va) = setup();
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    let trim = rodata_page(&e);
    h.put_secinfo(F::from(PageType::Trim));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, trim), Ok(Status::Success));
    for page in [data_page(&e), tcs_page(&e), trim] {
        let before = view(&h, page);
        assert_eq!(ewb(&mut h, page, va, backing(0)), Ok(Status::Error(ErrorCode::PageNotBlocked)));
        assert_eq!(view(&h, page), before, "no state change");
        assert_eq!(slot_value(&h, va), 0);
    }
    h.put_pageinfo(0, backing(0).page, backing(0).pcmd, 0);
    let regs = encls(&mut h, Encls::Ewb, scratch::PAGEINFO, data_page(&e), va).unwrap();
    assert_rax_flags(&regs, 10, false, true);
}

#[test]
fn ewb_before_etrack_is_not_tracked() {
    let (mut h, e, va) = setup();
    let data = data_page(&e);
    assert_eq!(h.cpu.eblock(&mut h.lp, data), Ok(Status::Success));
    assert_eq!(ewb(&mut h, data, va, backing(0)), Ok(Status::Error(ErrorCode::NotTracked)));
    h.put_pageinfo(0, backing(0).page, backing(0).pcmd, 0);
    let regs = encls(&mut h, Encls::Ewb, scratch::PAGEINFO, data, va).unwrap();
    assert_rax_flags(&regs, 11, false, true);
    assert!(view(&h, data).valid);
    assert_eq!(slot_value(&h, va), 0);
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    assert_eq!(ewb(&mut h, data, va, backing(0)), Ok(Status::Success));
}

#[test]
fn ewb_linux_flow_not_tracked_until_earlier_lp_aexes() {
    let mut h = Harness::new();
    let e = TestEnclave::build_with_threads(&mut h, secs_image(0x10_0000_0000, 1 << 20), 2);
    let va = new_va(&mut h);
    let data = data_page(&e);
    let mut early = h.cpu.new_lp();
    let mut early_regs = enter_on(&h, &mut early, e.threads[0]);
    assert_eq!(h.cpu.eblock(&mut h.lp, data), Ok(Status::Success));
    // EWB → NOT_TRACKED → ETRACK → EWB → NOT_TRACKED (an LP from before is inside).
    assert_eq!(ewb(&mut h, data, va, backing(0)), Ok(Status::Error(ErrorCode::NotTracked)));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    let mut late = h.cpu.new_lp();
    let mut late_regs = enter_on(&h, &mut late, e.threads[1]);
    assert_eq!(ewb(&mut h, data, va, backing(0)), Ok(Status::Error(ErrorCode::NotTracked)));
    assert!(view(&h, data).valid);
    // IPI: the early LP takes an AEX; the late one (entered after ETRACK) may stay inside.
    h.cpu.aex(&mut early, &mut early_regs, AexEvent::interrupt()).expect("in enclave mode");
    assert_eq!(ewb(&mut h, data, va, backing(0)), Ok(Status::Success));
    assert!(!view(&h, data).valid);
    exit_on(&h, &mut late, &mut late_regs);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn ewb_writes_pcmd_linaddr_and_version() {
    let (mut h, e, va) = setup();
    let data = data_page(&e);
    let eid = view(&h, e.secs).eid.expect("SECS has an EID");
    let b = backing(3);
    h.mem.write(b.pcmd, &[0xEE; Pcmd::SIZE]).unwrap();
    let slot = va + 5 * 8;
    block_and_track(&mut h, e.secs, &[data]);
    h.put_pageinfo(0, b.page, b.pcmd, 0);
    let regs = encls(&mut h, Encls::Ewb, scratch::PAGEINFO, data, slot).unwrap();
    assert_rax_flags(&regs, 0, false, false);
    let pcmd = read_pcmd(&h, b.pcmd);
    assert_eq!(pcmd.secinfo.flags, (F::R | F::W).with_page_type(PageType::Reg).bits());
    assert_eq!(pcmd.secinfo.reserved, [0; 56]);
    assert_eq!(pcmd.enclaveid, eid);
    assert_eq!(pcmd.reserved, [0; 40]);
    assert_ne!(pcmd.mac, [0xEE; 16]);
    assert_eq!(
        read_pageinfo(&h),
        Pageinfo { linaddr: e.base + layout::DATA, srcpge: b.page, secinfo: b.pcmd, secs: 0 }
    );
    assert_ne!(slot_value(&h, slot), 0, "version recorded");
    assert_eq!(slot_value(&h, va), 0, "other slots untouched");
    let mut cipher = vec![0u8; PAGE_SIZE];
    h.mem.read(b.page, &mut cipher).unwrap();
    assert_ne!(cipher, vec![0x11; PAGE_SIZE], "encrypted");
    assert!(!view(&h, data).valid);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn ewb_into_occupied_slot_is_info_and_still_evicts() {
    let (mut h, e, va) = setup();
    let (data, rodata) = (data_page(&e), rodata_page(&e));
    block_and_track(&mut h, e.secs, &[data, rodata]);
    assert_eq!(ewb(&mut h, rodata, va, backing(0)), Ok(Status::Success));
    let old = slot_value(&h, va);
    let b = backing(1);
    h.put_pageinfo(0, b.page, b.pcmd, 0);
    let regs = encls(&mut h, Encls::Ewb, scratch::PAGEINFO, data, va).unwrap();
    assert_rax_flags(&regs, ErrorCode::VaSlotOccupied as u64, true, false);
    assert!(!view(&h, data).valid, "the eviction happened");
    let new = slot_value(&h, va);
    assert!(new != 0 && new != old, "slot holds the new version");
    assert_eq!(read_pcmd(&h, b.pcmd).enclaveid, view(&h, e.secs).eid.unwrap());
    // The new page reloads; the page whose version was overwritten is lost.
    let target = h.alloc_page();
    assert_eq!(
        eldu(&mut h, target, va, backing(0), e.base + layout::RODATA, e.secs),
        Ok(Status::Error(ErrorCode::MacCompareFail))
    );
    assert_eq!(eldu(&mut h, target, va, b, e.base + layout::DATA, e.secs), Ok(Status::Success));
    assert_eq!(epc_bytes(&h, target), vec![0x11; PAGE_SIZE]);
    // Loading the same blob again fails: ELDU freed the slot.
    let other = h.alloc_page();
    assert_eq!(
        eldu(&mut h, other, va, backing(1), e.base + layout::DATA, e.secs),
        Ok(Status::Error(ErrorCode::MacCompareFail))
    );
    block_and_track(&mut h, e.secs, &[target]);
    let slot = va + 8;
    assert_eq!(ewb(&mut h, target, slot, backing(2)), Ok(Status::Success));
    let code_page = e.pages[&(e.base + layout::CODE)];
    block_and_track(&mut h, e.secs, &[code_page]);
    assert_eq!(ewb(&mut h, code_page, slot, backing(3)), Ok(Status::Info(ErrorCode::VaSlotOccupied)));
    assert!(!view(&h, code_page).valid);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn va_page_evicts_and_reloads_with_its_slots() {
    let (mut h, e, va) = setup();
    let outer = new_va(&mut h);
    let data = data_page(&e);
    evict(&mut h, e.secs, data, va + 16, backing(0));
    let version = slot_value(&h, va + 16);
    // A VA page needs no EBLOCK; its PCMD has ENCLAVEID 0 and LINADDR 0.
    let b = backing(1);
    assert_eq!(ewb(&mut h, va, outer, b), Ok(Status::Success));
    assert!(!view(&h, va).valid);
    let pcmd = read_pcmd(&h, b.pcmd);
    assert_eq!(pcmd.secinfo.flags, F::from(PageType::Va).bits());
    assert_eq!(pcmd.enclaveid, 0);
    assert_eq!(read_pageinfo(&h).linaddr, 0);
    // The evicted page cannot come back while its VA page is out.
    let target = h.alloc_page();
    assert_eq!(eldu(&mut h, target, va + 16, backing(0), e.base + layout::DATA, e.secs), Err(pf(va + 16, true)));
    // ELDB of a VA page does not block it.
    let va2 = h.alloc_page();
    assert_eq!(eldb(&mut h, va2, outer, b, 0, 0), Ok(Status::Success));
    let v = view(&h, va2);
    assert_eq!((v.valid, v.page_type, v.blocked, v.flags), (true, PageType::Va, false, F::from(PageType::Va)));
    assert_eq!(slot_value(&h, va2 + 16), version, "slots survive");
    assert_eq!(slot_value(&h, outer), 0);
    assert_eq!(eldu(&mut h, target, va2 + 16, backing(0), e.base + layout::DATA, e.secs), Ok(Status::Success));
    assert_eq!(epc_bytes(&h, target), vec![0x11; PAGE_SIZE]);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn whole_enclave_round_trips_through_ewb_and_eldu() {
    let (mut h, e, va) = setup();
    let eid = view(&h, e.secs).eid.unwrap();
    // Identity before.
    let mut lp = h.cpu.new_lp();
    let mut regs = enter_on(&h, &mut lp, e.tcs);
    let before = self_report(&h, &mut lp, &e, &mut regs);
    exit_on(&h, &mut lp, &mut regs);
    assert_eq!(before.mrenclave, e.sigstruct.enclavehash);
    let contents: Vec<(u64, Vec<u8>)> = e.pages.iter().map(|(&la, &epc)| (la, epc_bytes(&h, epc))).collect();
    let flags: Vec<(u64, EpcmView)> = e.pages.iter().map(|(&la, &epc)| (la, view(&h, epc))).collect();

    // Evict: all children, then the SECS (SGX_CHILD_PRESENT while any child is left).
    let children: Vec<(u64, u64)> = e.pages.iter().map(|(&la, &epc)| (la, epc)).collect();
    block_and_track(&mut h, e.secs, &children.iter().map(|&(_, epc)| epc).collect::<Vec<_>>());
    let secs_slot = va + 8 * 100;
    for (i, &(_, epc)) in children.iter().enumerate() {
        assert_eq!(ewb(&mut h, e.secs, secs_slot, backing(99)), Ok(Status::Error(ErrorCode::ChildPresent)));
        assert!(view(&h, e.secs).valid);
        assert_eq!(slot_value(&h, secs_slot), 0);
        assert_eq!(ewb(&mut h, epc, va + 8 * i as u64, backing(i as u64)), Ok(Status::Success));
    }
    h.put_pageinfo(0, backing(99).page, backing(99).pcmd, 0);
    let regs_ewb = encls(&mut h, Encls::Ewb, scratch::PAGEINFO, e.secs, secs_slot).unwrap();
    assert_rax_flags(&regs_ewb, 0, false, false);
    assert!(!view(&h, e.secs).valid);
    let pcmd = read_pcmd(&h, backing(99).pcmd);
    assert_eq!(pcmd.secinfo.flags, F::from(PageType::Secs).bits());
    assert_eq!(pcmd.enclaveid, eid, "a SECS's PCMD names its own EID");
    assert_eq!(read_pageinfo(&h).linaddr, 0);
    h.cpu.check_invariants().unwrap();

    // A child cannot come back before its SECS.
    let (first_la, _) = children[0];
    let target = h.alloc_page();
    assert_eq!(eldu(&mut h, target, va, backing(0), first_la, e.secs), Err(pf(e.secs, false)));
    assert!(!view(&h, target).valid);

    // Reload: SECS first (PAGEINFO.SECS = 0, LINADDR 0), then every child under the new SECS.
    let secs = h.alloc_page();
    assert_eq!(eldu(&mut h, secs, secs_slot, backing(99), 0, 0), Ok(Status::Success));
    let v = view(&h, secs);
    assert_eq!(
        (v.valid, v.page_type, v.eid, v.blocked, v.enclave_address),
        (true, PageType::Secs, Some(eid), false, 0)
    );
    assert_eq!(slot_value(&h, secs_slot), 0);
    for (i, &(la, _)) in children.iter().enumerate() {
        let target = if i == 0 { target } else { h.alloc_page() };
        assert_eq!(eldu(&mut h, target, va + 8 * i as u64, backing(i as u64), la, secs), Ok(Status::Success));
        let old = flags.iter().find(|(l, _)| *l == la).unwrap().1;
        let idx = h.cpu.epc_index(secs).unwrap();
        assert_eq!(view(&h, target), EpcmView { secs: Some(idx), ..old }, "EPCM of {la:#x}");
        assert_eq!(&epc_bytes(&h, target), &contents.iter().find(|(l, _)| *l == la).unwrap().1);
        let writable = old.flags.contains(F::W) || old.page_type == PageType::Tcs;
        h.map(la, target, writable, old.flags.contains(F::X));
    }
    h.cpu.check_invariants().unwrap();

    // The enclave runs again with the same identity.
    let mut regs = enter_on(&h, &mut lp, e.tcs);
    let after = self_report(&h, &mut lp, &e, &mut regs);
    exit_on(&h, &mut lp, &mut regs);
    assert_eq!(after.mrenclave, before.mrenclave);
    assert_eq!(after.mrsigner, before.mrsigner);
    assert_eq!((after.isvprodid, after.isvsvn), (7, 3));
    assert_eq!(after.attributes, before.attributes);
    assert_eq!(h.cpu.etrack(&mut h.lp, secs), Ok(Status::Success), "tracking state restored");
    h.cpu.check_invariants().unwrap();
}

#[test]
fn pending_modified_and_pr_survive_a_round_trip() {
    let (mut h, e, va) = setup();
    // PENDING: an EAUG'd page. MODIFIED: REG → TRIM. PR: EMODPR(R) of an RW page.
    let pending = h.alloc_page();
    h.put_pageinfo(e.base + layout::HEAP, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, pending).unwrap();
    let modified = rodata_page(&e);
    h.put_secinfo(F::from(PageType::Trim));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, modified), Ok(Status::Success));
    let pr = data_page(&e);
    h.put_secinfo(F::R);
    assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, pr), Ok(Status::Success));
    let cases = [
        (pending, e.base + layout::HEAP, (F::R | F::W | F::PENDING).with_page_type(PageType::Reg)),
        (modified, e.base + layout::RODATA, F::MODIFIED.with_page_type(PageType::Trim)),
        (pr, e.base + layout::DATA, (F::R | F::PR).with_page_type(PageType::Reg)),
    ];
    block_and_track(&mut h, e.secs, &[pending, modified, pr]);
    for (i, &(page, la, flags)) in cases.iter().enumerate() {
        assert_eq!(view(&h, page).flags, flags);
        assert_eq!(ewb(&mut h, page, va + 8 * i as u64, backing(i as u64)), Ok(Status::Success));
        assert_eq!(read_pcmd(&h, backing(i as u64).pcmd).secinfo.flags, flags.bits(), "PCMD of {la:#x}");
        assert_eq!(read_pageinfo(&h).linaddr, la);
    }
    for (i, &(_, la, flags)) in cases.iter().enumerate() {
        let target = h.alloc_page();
        assert_eq!(eldu(&mut h, target, va + 8 * i as u64, backing(i as u64), la, e.secs), Ok(Status::Success));
        let v = view(&h, target);
        assert_eq!((v.flags, v.enclave_address, v.blocked), (flags, la, false), "{la:#x}");
        h.map(la, target, true, false);
    }
    h.cpu.check_invariants().unwrap();
    // The enclave still has to accept each change, with the SECINFO the state calls for.
    let mut lp = h.cpu.new_lp();
    let mut regs = enter_on(&h, &mut lp, e.tcs);
    let secinfo_la = e.base + layout::DATA + 0xF00;
    for &(_, la, flags) in &cases {
        h.cpu.write_epc(mapped_epc(&h, secinfo_la), 0xF00, Secinfo::new(flags).as_bytes());
        regs.rbx = secinfo_la;
        regs.rcx = la;
        assert_eq!(h.cpu.eaccept(&mut lp, &mut regs, &h.pt), Ok(Status::Success), "EACCEPT {la:#x}");
        assert!(!view(&h, h.cpu.epc_addr(mapped_epc(&h, la))).flags.intersects(F::STATE_MASK));
    }
    exit_on(&h, &mut lp, &mut regs);
    h.cpu.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// ELDB / ELDU

/// An enclave with its data page evicted into `va` slot 0 (backing 0); returns the slot.
fn evicted_data() -> (Harness, TestEnclave, u64) {
    let (mut h, e, va) = setup();
    evict(&mut h, e.secs, data_page(&e), va, backing(0));
    (h, e, va)
}

#[test]
fn eldu_operand_checks_in_order() {
    let (mut h, e, va) = evicted_data();
    let la = e.base + layout::DATA;
    let b = backing(0);
    let good = Pageinfo { linaddr: la, srcpge: b.page, secinfo: b.pcmd, secs: e.secs };
    let target = h.alloc_page();
    let invalid = h.alloc_page();
    let rodata = rodata_page(&e);
    let gp = Err(Exception::Gp);
    let with = |f: &dyn Fn(&mut Pageinfo)| {
        let mut p = good;
        f(&mut p);
        p
    };
    let pi = scratch::PAGEINFO;
    let cases: Vec<(&str, u64, Pageinfo, u64, u64, LeafResult)> = vec![
        // Step 1.
        ("PAGEINFO not 32-aligned", pi + 16, good, target, va, gp),
        ("target not 4K-aligned", pi, good, target + 8, va, gp),
        ("target not in EPC", pi, good, NOT_EPC, va, Err(pf(NOT_EPC, true))),
        ("slot not 8-aligned", pi, good, target, va + 1, gp),
        ("slot not in EPC", pi, good, target, NOT_EPC, Err(pf(NOT_EPC, true))),
        ("1: target EPC before slot alignment", pi, good, NOT_EPC, va + 1, Err(pf(NOT_EPC, true))),
        // Step 2.
        ("PCMD not 128-aligned", pi, with(&|p| p.secinfo += 0x40), target, va, gp),
        ("SRCPGE not 4K-aligned", pi, with(&|p| p.srcpge += 8), target, va, gp),
        (
            "1 before 2: slot outside EPC, PCMD misaligned",
            pi,
            with(&|p| p.secinfo += 8),
            target,
            NOT_EPC,
            Err(pf(NOT_EPC, true)),
        ),
        // Step 3.
        ("target valid", pi, good, rodata, va, Err(pf(rodata, true))),
        ("VA page invalid", pi, good, target, invalid, Err(pf(invalid, true))),
        ("VA operand is a REG page", pi, good, target, rodata + 8, Err(pf(rodata + 8, true))),
        ("2 before 3: PCMD misaligned, target valid", pi, with(&|p| p.secinfo += 8), rodata, va, gp),
        ("3: target before VA page", pi, good, rodata, invalid, Err(pf(rodata, true))),
        // Step 5 (child page).
        ("SECS not 4K-aligned", pi, with(&|p| p.secs += 8), target, va, gp),
        ("SECS = 0", pi, with(&|p| p.secs = 0), target, va, Err(pf(0, false))),
        ("SECS outside EPC", pi, with(&|p| p.secs = NOT_EPC), target, va, Err(pf(NOT_EPC, false))),
        ("SECS page invalid", pi, with(&|p| p.secs = invalid), target, va, Err(pf(invalid, false))),
        ("SECS operand is a REG page", pi, with(&|p| p.secs = rodata), target, va, Err(pf(rodata, false))),
        ("SECS operand is a VA page", pi, with(&|p| p.secs = va), target, va, Err(pf(va, false))),
        (
            "3 before 5: VA invalid, SECS misaligned",
            pi,
            with(&|p| p.secs += 8),
            target,
            invalid,
            Err(pf(invalid, true)),
        ),
    ];
    let version = slot_value(&h, va);
    for (name, at, pageinfo, target_op, slot, expect) in cases {
        h.mem.write(at, pageinfo.as_bytes()).unwrap();
        assert_eq!(h.cpu.eldu(&mut h.lp, &mut h.mem, at, target_op, slot), expect, "ELDU case: {name}");
        assert_eq!(h.cpu.eldb(&mut h.lp, &mut h.mem, at, target_op, slot), expect, "ELDB case: {name}");
        assert!(!view(&h, target).valid, "case {name}: target still invalid");
        assert!(view(&h, rodata).valid && view(&h, rodata).page_type == PageType::Reg, "case {name}");
        assert_eq!(slot_value(&h, va), version, "case {name}: slot kept");
    }
    assert_eq!(eldu(&mut h, target, va, b, la, e.secs), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eldu_of_secs_or_va_with_nonzero_secs_is_gp() {
    let mut h = Harness::new();
    let secs = h.ecreate(&secs_image(0x20_0000_0000, 1 << 16)).unwrap();
    let outer = new_va(&mut h);
    let inner = new_va(&mut h);
    assert_eq!(ewb(&mut h, secs, outer, backing(0)), Ok(Status::Success), "SECS without children");
    assert_eq!(ewb(&mut h, inner, outer + 8, backing(1)), Ok(Status::Success));
    let other = h.ecreate(&secs_image(0x30_0000_0000, 1 << 16)).unwrap();
    let target = h.alloc_page();
    for (slot, b) in [(outer, backing(0)), (outer + 8, backing(1))] {
        for bad_secs in [other, 0x1000, NOT_EPC] {
            assert_eq!(eldu(&mut h, target, slot, b, 0, bad_secs), Err(Exception::Gp));
            assert_eq!(eldb(&mut h, target, slot, b, 0, bad_secs), Err(Exception::Gp));
            assert!(!view(&h, target).valid);
            assert_ne!(slot_value(&h, slot), 0);
        }
    }
    // ELDB of a SECS comes back unblocked.
    assert_eq!(eldb(&mut h, target, outer, backing(0), 0, 0), Ok(Status::Success));
    let v = view(&h, target);
    assert_eq!((v.page_type, v.blocked), (PageType::Secs, false));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eldu_restores_contents_and_frees_the_slot() {
    let (mut h, e, va) = setup();
    let la = e.base + layout::HEAP;
    let page = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page).unwrap();
    let data = pattern(0x1234_5678_9abc_def1);
    h.cpu.write_epc(h.cpu.epc_index(page).unwrap(), 0, &data);
    let slot = va + 8 * 511;
    evict(&mut h, e.secs, page, slot, backing(7));
    let mut cipher = vec![0u8; PAGE_SIZE];
    h.mem.read(backing(7).page, &mut cipher).unwrap();
    assert_ne!(cipher, data);
    let target = h.alloc_page();
    let regs = {
        h.put_pageinfo(la, backing(7).page, backing(7).pcmd, e.secs);
        encls(&mut h, Encls::Eldu, scratch::PAGEINFO, target, slot).unwrap()
    };
    assert_rax_flags(&regs, 0, false, false);
    assert_eq!(epc_bytes(&h, target), data, "bit-identical");
    assert_eq!(slot_value(&h, slot), 0, "slot freed");
    let v = view(&h, target);
    assert_eq!((v.valid, v.enclave_address, v.eid, v.blocked), (true, la, view(&h, e.secs).eid, false));
    // The freed slot takes the next eviction without SGX_VA_SLOT_OCCUPIED.
    block_and_track(&mut h, e.secs, &[target]);
    assert_eq!(ewb(&mut h, target, slot, backing(8)), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eldb_leaves_child_blocked_and_eldu_does_not() {
    let (mut h, e, va) = evicted_data();
    let la = e.base + layout::DATA;
    let target = h.alloc_page();
    let regs = {
        h.put_pageinfo(la, backing(0).page, backing(0).pcmd, e.secs);
        encls(&mut h, Encls::Eldb, scratch::PAGEINFO, target, va).unwrap()
    };
    assert_rax_flags(&regs, 0, false, false);
    assert!(view(&h, target).blocked);
    assert_eq!(epc_bytes(&h, target), vec![0x11; PAGE_SIZE]);
    assert_eq!(h.cpu.eblock(&mut h.lp, target), Ok(Status::Info(ErrorCode::Blkstate)));
    // Evict again straight away (already blocked), then ELDU: not blocked.
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    assert_eq!(ewb(&mut h, target, va, backing(1)), Ok(Status::Success));
    let again = h.alloc_page();
    assert_eq!(eldu(&mut h, again, va, backing(1), la, e.secs), Ok(Status::Success));
    assert!(!view(&h, again).blocked);
    h.map(la, again, true, false);
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert!(h.cpu.check_access(&h.lp, &h.pt, la, AccessKind::Write).is_ok());
    h.eexit(&mut regs, 0).unwrap();
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eldu_of_tampered_page_is_mac_compare_fail() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let other = TestEnclave::build_with(&mut h, secs_image(0x20_0000_0000, 1 << 20));
    let va = new_va(&mut h);
    evict(&mut h, e.secs, data_page(&e), va, backing(0));
    let la = e.base + layout::DATA;
    let b = backing(0);
    let mut cipher = vec![0u8; PAGE_SIZE];
    h.mem.read(b.page, &mut cipher).unwrap();
    let pcmd = read_pcmd(&h, b.pcmd);
    let version = slot_value(&h, va);
    type Tamper = fn(&mut Vec<u8>, &mut Pcmd, &mut u64, &mut u64, u64);
    let cases: [(&str, Tamper); 9] = [
        ("ciphertext byte", |c, _, _, _, _| c[1234] ^= 1),
        ("last ciphertext byte", |c, _, _, _, _| c[PAGE_SIZE - 1] ^= 0x80),
        ("PCMD SECINFO permissions", |_, p, _, _, _| p.secinfo.flags |= F::X.bits()),
        ("PCMD SECINFO page type", |_, p, _, _, _| p.secinfo.flags = F::from(PageType::Tcs).bits()),
        ("PCMD SECINFO state bit", |_, p, _, _, _| p.secinfo.flags |= F::PR.bits()),
        ("PCMD reserved byte", |_, p, _, _, _| p.reserved[17] = 1),
        ("MAC", |_, p, _, _, _| p.mac[0] ^= 0xFF),
        ("LINADDR", |_, _, linaddr, _, _| *linaddr += 0x1000),
        ("another enclave's SECS", |_, _, _, secs, other| *secs = other),
    ];
    for (name, tamper) in cases {
        let (mut c, mut p, mut linaddr, mut secs) = (cipher.clone(), pcmd, la, e.secs);
        tamper(&mut c, &mut p, &mut linaddr, &mut secs, other.secs);
        h.mem.write(b.page, &c).unwrap();
        write_pcmd(&mut h, b.pcmd, &p);
        let target = h.alloc_page();
        assert_eq!(eldu(&mut h, target, va, b, linaddr, secs), Ok(Status::Error(ErrorCode::MacCompareFail)), "{name}");
        assert_eq!(eldb(&mut h, target, va, b, linaddr, secs), Ok(Status::Error(ErrorCode::MacCompareFail)), "{name}");
        assert!(!view(&h, target).valid, "{name}: target stays invalid");
        assert_eq!(slot_value(&h, va), version, "{name}: slot kept");
    }
    // Untampered, it loads.
    h.mem.write(b.page, &cipher).unwrap();
    write_pcmd(&mut h, b.pcmd, &pcmd);
    let target = h.alloc_page();
    h.put_pageinfo(la, b.page, b.pcmd, e.secs);
    let regs = encls(&mut h, Encls::Eldu, scratch::PAGEINFO, target, va).unwrap();
    assert_rax_flags(&regs, 0, false, false);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eldu_replay_of_an_older_version_is_mac_compare_fail() {
    let (mut h, e, va) = evicted_data();
    let la = e.base + layout::DATA;
    let first = h.alloc_page();
    assert_eq!(eldu(&mut h, first, va, backing(0), la, e.secs), Ok(Status::Success));
    // Replaying the same blob now that the slot is free fails.
    let target = h.alloc_page();
    assert_eq!(eldu(&mut h, target, va, backing(0), la, e.secs), Ok(Status::Error(ErrorCode::MacCompareFail)));
    // Modify and evict again into the same slot: only the new version loads.
    h.cpu.write_epc(h.cpu.epc_index(first).unwrap(), 0, &[0x5A; 16]);
    evict(&mut h, e.secs, first, va, backing(1));
    assert_eq!(eldu(&mut h, target, va, backing(0), la, e.secs), Ok(Status::Error(ErrorCode::MacCompareFail)));
    assert_eq!(eldb(&mut h, target, va, backing(0), la, e.secs), Ok(Status::Error(ErrorCode::MacCompareFail)));
    assert!(!view(&h, target).valid);
    assert_eq!(eldu(&mut h, target, va, backing(1), la, e.secs), Ok(Status::Success));
    let bytes = epc_bytes(&h, target);
    assert_eq!(&bytes[..16], &[0x5A; 16]);
    assert_eq!(&bytes[16..], &[0x11; PAGE_SIZE - 16][..]);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn eldu_after_power_cycle_is_mac_compare_fail() {
    // Before: a SECS evicted from a part with the harness's secrets.
    let mut h = Harness::new();
    let secs = h.ecreate(&secs_image(0x20_0000_0000, 1 << 16)).unwrap();
    let va = new_va(&mut h);
    assert_eq!(ewb(&mut h, secs, va, backing(0)), Ok(Status::Success));
    let version = slot_value(&h, va);
    let mut cipher = vec![0u8; PAGE_SIZE];
    h.mem.read(backing(0).page, &mut cipher).unwrap();
    let pcmd = read_pcmd(&h, backing(0).pcmd);
    let reload = |mut h2: Harness| {
        let va2 = new_va(&mut h2);
        h2.cpu.write_epc(h2.cpu.epc_index(va2).unwrap(), 0, &version.to_le_bytes());
        h2.mem.write(backing(0).page, &cipher).unwrap();
        write_pcmd(&mut h2, backing(0).pcmd, &pcmd);
        let target = h2.alloc_page();
        let result = eldu(&mut h2, target, va2, backing(0), 0, 0);
        (result, view(&h2, target).valid)
    };
    // Control: the same secrets (a warm reset that keeps CR_BASE_PK) reload it.
    assert_eq!(reload(Harness::new()), (Ok(Status::Success), true));
    // A power cycle draws new secrets: the old page is gone.
    let config = PlatformConfig { secrets: Some(PlatformSecrets::from_seed([0xC3; 16])), ..PlatformConfig::default() };
    assert_eq!(reload(Harness::with_config(config)), (Ok(Status::Error(ErrorCode::MacCompareFail)), false));
    let fresh = PlatformConfig { secrets: Some(PlatformSecrets::random().unwrap()), ..PlatformConfig::default() };
    assert_eq!(reload(Harness::with_config(fresh)), (Ok(Status::Error(ErrorCode::MacCompareFail)), false));
}
