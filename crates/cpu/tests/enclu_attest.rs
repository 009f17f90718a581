//! EREPORT and EGETKEY (spec §5.5, §5.6, key-derivation properties of §11.2).
//!
//! Operands live in the test enclave's read/write data page (KEYREQUEST, TARGETINFO and
//! REPORTDATA are written, REPORT and keys read back, through `Processor::write_epc/read_epc`).
//!
//! Coverage:
//!
//! **EREPORT (§5.5)**
//! * Outside enclave mode → #GP (§3.3): `ereport_outside_enclave_is_gp`.
//! * TARGETINFO/REPORTDATA/REPORT alignment (512/128/512) → #GP: `ereport_misaligned_operands_are_gp`;
//!   outside ELRANGE → #GP: `ereport_operands_outside_elrange_are_gp`.
//! * Operand pages: not mapped (ordinary #PF), not EPC, not PT_REG, wrong address, other enclave,
//!   PENDING, MODIFIED, BLOCKED, R=0 (inputs), W=0 (output) → #PF(operand):
//!   `ereport_operand_page_checks` (one named case per operand and condition).
//! * TARGETINFO reserved bytes (@48 non-CET, @49, [56,64), [128,512)) → #GP:
//!   `ereport_targetinfo_reserved_bytes_are_gp`; order (after the TARGETINFO page checks, before
//!   the REPORTDATA/REPORT page checks): `ereport_targetinfo_reserved_check_order`.
//! * REPORT fields (CPUSVN, MISCSELECT, ATTRIBUTES with INIT, MRENCLAVE, MRSIGNER = SHA-256 of the
//!   modulus, ISVPRODID, ISVSVN, CONFIGID/CONFIGSVN, reserved = 0, REPORTDATA, KEYID) and no
//!   register change beyond RIP: `ereport_fields_describe_the_current_enclave`; a zeroed TARGETINFO
//!   is legal (same test); `ereport_through_enclu`.
//! * MAC = CMAC(target's REPORT key): `report_mac_verifies_with_the_targets_report_key` (A reports
//!   to B, B's EGETKEY(REPORT, KEYID) verifies), `report_for_another_target_does_not_verify`.
//!
//! **EGETKEY (§5.6)**
//! * Outside enclave mode → #GP: `egetkey_outside_enclave_is_gp`.
//! * Alignment / ELRANGE → #GP: `egetkey_misaligned_or_outside_operands_are_gp`; page checks →
//!   #PF: `egetkey_operand_page_checks`.
//! * 1 reserved bytes / KEYPOLICY bits 15:6 → #GP: `egetkey_reserved_fields_are_gp` (and after the
//!   page checks: `egetkey_page_checks_precede_request_checks`).
//! * 2 KSS policy bits / CONFIGSVN without KSS → #GP: `egetkey_kss_selections_without_kss_are_gp`;
//!   allowed with KSS: `egetkey_kss_selections_with_kss`.
//! * 3 TMP_ATTRIBUTES / TMP_MISC binding: `seal_key_binds_the_attribute_mask`.
//! * 4 per key name: unknown → SGX_INVALID_KEYNAME: `egetkey_unknown_keyname`; EINITTOKEN without
//!   the attribute → SGX_INVALID_ATTRIBUTE: `egetkey_einittoken_needs_the_attribute`; PROVISION /
//!   PROVISION_SEAL without PROVISIONKEY → SGX_INVALID_ATTRIBUTE: `egetkey_provision_keys_need_the_attribute`;
//!   CPUSVN above → SGX_INVALID_CPUSVN and ISVSVN / CONFIGSVN above → SGX_INVALID_ISVSVN:
//!   `egetkey_svns_above_current_are_refused` (for SEAL, EINITTOKEN, PROVISION, PROVISION_SEAL),
//!   `egetkey_configsvn_above_current_is_invalid_isvsvn`; lower SVNs give other keys:
//!   `egetkey_lower_svns_give_different_keys`; REPORT has no checks: `egetkey_report_key_ignores_svns`.
//!   SEAL policies: `seal_key_policies_across_enclaves_of_one_signer`. §11.2 (b): stable across
//!   processors with the same secrets, different otherwise: `keys_are_stable_per_platform_secrets`;
//!   (d) PROVISION keys ignore OWNEREPOCH and KEYID: `provision_keys_ignore_owner_epoch_and_keyid`.
//! * 5 / §3.2: output untouched on every error: checked in each error test (`assert_key_untouched`);
//!   RAX/ZF/flags/RIP through ENCLU: `egetkey_status_through_enclu`.

use sgxemu_arch::{
    AttributesFlags, Enclu, ErrorCode, FromBytes, IntoBytes, KEYPOLICY_KSS_MASK, Keyname, Keypolicy, Keyrequest,
    PAGE_SIZE, PageType, PfErrorCode, Report, SecinfoFlags, Targetinfo,
};
use sgxemu_cpu::regs::{ARITH_FLAGS, RFLAGS_ZF};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image};
use sgxemu_cpu::{Exception, PageTable, PlatformConfig, PlatformSecrets, Regs, Status, Translation};
use sha2::Digest;

const AEP: u64 = 0x40_1000;
const ENCLU_RIP: u64 = 0x40_0000;
const SEED: [u8; 16] = [0x5A; 16];

/// Operand offsets inside the data page.
const TI: u64 = layout::DATA;
const RDATA: u64 = layout::DATA + 0x200;
const OUT: u64 = layout::DATA + 0x400;
const KEYREQ: u64 = layout::DATA + 0x600;
const KEY: u64 = layout::DATA + 0x800;

// ---------------------------------------------------------------------------------------------
// Helpers

fn setup() -> (Harness, TestEnclave) {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    (h, e)
}

fn enclave_with(h: &mut Harness, extra: AttributesFlags) -> TestEnclave {
    let mut image = secs_image(0x10_0000_0000, 1 << 20);
    image.attributes.flags |= extra.bits();
    TestEnclave::build_with(h, image)
}

fn enter(h: &mut Harness, e: &TestEnclave) -> Regs {
    let mut regs = Regs { rsp: 0x7fff_0000, rbp: 0x7fff_0100, rip: ENCLU_RIP, rflags: 0x202, ..Regs::default() };
    h.eenter(&mut regs, e.tcs, AEP).expect("EENTER");
    regs
}

fn leave(h: &mut Harness, regs: &mut Regs) {
    h.eexit(regs, ENCLU_RIP + 3).expect("EEXIT");
}

/// The EPC page a linear address is mapped to (through the harness page table).
fn epc_page(h: &Harness, la: u64) -> sgxemu_cpu::EpcIndex {
    match h.pt.translate(la) {
        Translation::Present { pa, .. } => h.cpu.epc_index(pa).expect("mapped to the EPC"),
        Translation::NotPresent => panic!("{la:#x} is not mapped"),
    }
}

fn write_la(h: &Harness, la: u64, bytes: &[u8]) {
    h.cpu.write_epc(epc_page(h, la), (la % PAGE_SIZE as u64) as usize, bytes);
}

fn read_la(h: &Harness, la: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    h.cpu.read_epc(epc_page(h, la), (la % PAGE_SIZE as u64) as usize, &mut bytes);
    bytes
}

fn ereport_at(h: &mut Harness, regs: &mut Regs, ti: u64, data: u64, out: u64) -> Result<(), Exception> {
    regs.rax = Enclu::Ereport as u64;
    regs.rbx = ti;
    regs.rcx = data;
    regs.rdx = out;
    h.cpu.ereport(&mut h.lp, regs, &h.pt)
}

/// EREPORT with the standard operands of enclave `e`, TARGETINFO `ti` and REPORTDATA `data`.
fn report(h: &mut Harness, regs: &mut Regs, e: &TestEnclave, ti: &Targetinfo, data: [u8; 64]) -> Report {
    write_la(h, e.base + TI, ti.as_bytes());
    write_la(h, e.base + RDATA, &data);
    ereport_at(h, regs, e.base + TI, e.base + RDATA, e.base + OUT).expect("EREPORT");
    Report::read_from_bytes(&read_la(h, e.base + OUT, Report::SIZE)).expect("432 bytes")
}

fn egetkey_at(h: &mut Harness, regs: &mut Regs, req: u64, out: u64) -> Result<Status, Exception> {
    regs.rax = Enclu::Egetkey as u64;
    regs.rbx = req;
    regs.rcx = out;
    h.cpu.egetkey(&mut h.lp, regs, &h.pt)
}

/// EGETKEY with the standard operands; the key on success, the status otherwise.
/// The output starts as 0x11 bytes (the data page's fill), so an error leaves it at that.
fn getkey(h: &mut Harness, regs: &mut Regs, e: &TestEnclave, req: &Keyrequest) -> Result<[u8; 16], Status> {
    write_la(h, e.base + KEYREQ, req.as_bytes());
    write_la(h, e.base + KEY, &[0x11; 16]);
    match egetkey_at(h, regs, e.base + KEYREQ, e.base + KEY).expect("EGETKEY does not fault") {
        Status::Success => Ok(read_la(h, e.base + KEY, 16).try_into().unwrap()),
        status => Err(status),
    }
}

/// Maps the read-only data page with a writable PTE, so that only the EPCM refuses writes.
fn writable_pte(h: &mut Harness, e: &TestEnclave, la: u64) {
    let page = la & !(PAGE_SIZE as u64 - 1);
    h.map(page, e.pages[&page], true, false);
}

fn request(keyname: Keyname) -> Keyrequest {
    Keyrequest { keyname: keyname as u16, ..Keyrequest::default() }
}

fn seal(policy: Keypolicy) -> Keyrequest {
    Keyrequest { keypolicy: policy.bits(), isvsvn: 3, ..request(Keyname::Seal) }
}

fn cpusvn() -> [u8; 16] {
    PlatformSecrets::from_seed(SEED).cpusvn
}

/// The key output (the data page is filled with 0x11 by the harness).
fn assert_key_untouched(h: &Harness, e: &TestEnclave, case: &str) {
    assert_eq!(read_la(h, e.base + KEY, 16), vec![0x11; 16], "case {case}: output untouched");
}

fn sgx_pf(addr: u64, write: bool) -> Exception {
    Exception::epcm_pf_user(addr, write)
}

fn eaug(h: &mut Harness, e: &TestEnclave, la: u64) -> u64 {
    let epc = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, epc).expect("EAUG");
    h.map(la, epc, true, false);
    epc
}

fn emodpr(h: &mut Harness, epc: u64, perms: SecinfoFlags) {
    h.put_secinfo(perms.with_page_type(PageType::Reg));
    assert_eq!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

fn emodt(h: &mut Harness, epc: u64, page_type: PageType) {
    h.put_secinfo(SecinfoFlags::from(page_type));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, epc), Ok(Status::Success));
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// A harness whose platform secrets are the seeded ones, modified by `change`.
fn harness_with_secrets(change: impl FnOnce(&mut PlatformSecrets)) -> Harness {
    let mut secrets = PlatformSecrets::from_seed(SEED);
    change(&mut secrets);
    Harness::with_config(PlatformConfig { secrets: Some(secrets), ..PlatformConfig::default() })
}

/// Builds the default enclave (with `extra` attributes) on `h`, enters, runs `f`, exits.
fn in_enclave<T>(
    h: &mut Harness,
    extra: AttributesFlags,
    f: impl FnOnce(&mut Harness, &mut Regs, &TestEnclave) -> T,
) -> T {
    let e = enclave_with(h, extra);
    let mut regs = enter(h, &e);
    let out = f(h, &mut regs, &e);
    leave(h, &mut regs);
    out
}

// ---------------------------------------------------------------------------------------------
// EREPORT

#[test]
fn ereport_outside_enclave_is_gp() {
    let (mut h, e) = setup();
    let mut regs = Regs { rip: ENCLU_RIP, ..Regs::default() };
    assert_eq!(ereport_at(&mut h, &mut regs, e.base + TI, e.base + RDATA, e.base + OUT), Err(Exception::Gp));
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    assert_eq!(regs.rip, ENCLU_RIP);
}

#[test]
fn ereport_misaligned_operands_are_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    write_la(&h, e.base + TI, Targetinfo::default().as_bytes());
    let b = e.base;
    for (name, ti, data, out) in [
        ("targetinfo_256", b + TI + 0x100, b + RDATA, b + OUT),
        ("reportdata_64", b + TI, b + RDATA + 0x40, b + OUT),
        ("report_256", b + TI, b + RDATA, b + OUT + 0x100),
    ] {
        let before = regs;
        assert_eq!(ereport_at(&mut h, &mut regs, ti, data, out), Err(Exception::Gp), "case {name}");
        assert_eq!(regs.rip, before.rip, "case {name}: RIP not advanced");
        assert_eq!(read_la(&h, b + OUT, Report::SIZE), vec![0x11; Report::SIZE], "case {name}: no output");
    }
    leave(&mut h, &mut regs);
}

#[test]
fn ereport_operands_outside_elrange_are_gp() {
    let (mut h, e) = setup();
    // The outside addresses are even mapped to the enclave's data page: ELRANGE decides.
    let below = e.base - 0x1000;
    let above = e.base + e.size;
    h.map(below, e.pages[&(e.base + layout::DATA)], true, false);
    h.map(above, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    write_la(&h, e.base + TI, Targetinfo::default().as_bytes());
    let b = e.base;
    for (name, ti, data, out) in [
        ("targetinfo", below, b + RDATA, b + OUT),
        ("reportdata", b + TI, above + 0x200, b + OUT),
        ("report", b + TI, b + RDATA, above + 0x400),
    ] {
        assert_eq!(ereport_at(&mut h, &mut regs, ti, data, out), Err(Exception::Gp), "case {name}");
    }
    leave(&mut h, &mut regs);
}

#[test]
fn ereport_operand_page_checks() {
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Ti,
        Data,
        Out,
    }
    type Prepare = fn(&mut Harness, &TestEnclave) -> u64;
    let conditions: [(&str, Prepare); 9] = [
        ("not_present", |_, e| e.base + 0x9000),
        ("normal_memory", |h, e| {
            h.map(e.base + 0x9000, scratch::PAGE, true, false);
            e.base + 0x9000
        }),
        ("tcs_page", |_, e| e.tcs),
        ("wrong_address", |h, e| {
            h.map(e.base + 0x9000, e.pages[&(e.base + layout::DATA)], true, false);
            e.base + 0x9000
        }),
        ("other_enclave", |h, e| {
            let other = TestEnclave::build_with(h, secs_image(0x20_0000_0000, 1 << 20));
            h.map(e.base + 0x9000, other.pages[&(other.base + layout::DATA)], true, false);
            e.base + 0x9000
        }),
        ("pending", |h, e| {
            eaug(h, e, e.base + layout::HEAP);
            e.base + layout::HEAP
        }),
        ("modified", |h, e| {
            let epc = eaug(h, e, e.base + layout::HEAP);
            // Accept it first so that EMODT may run: write SECINFO and EACCEPT from inside.
            let mut regs = enter(h, e);
            let secinfo = (SecinfoFlags::R | SecinfoFlags::W | SecinfoFlags::PENDING).with_page_type(PageType::Reg);
            write_la(h, e.base + layout::DATA + 0xF00, sgxemu_arch::Secinfo::new(secinfo).as_bytes());
            regs.rbx = e.base + layout::DATA + 0xF00;
            regs.rcx = e.base + layout::HEAP;
            assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), Ok(Status::Success));
            leave(h, &mut regs);
            emodt(h, epc, PageType::Trim);
            e.base + layout::HEAP
        }),
        ("blocked", |h, e| {
            writable_pte(h, e, e.base + layout::RODATA);
            let epc = e.pages[&(e.base + layout::RODATA)];
            assert_eq!(h.cpu.eblock(&mut h.lp, epc), Ok(Status::Success));
            e.base + layout::RODATA
        }),
        ("no_permissions", |h, e| {
            writable_pte(h, e, e.base + layout::RODATA);
            emodpr(h, e.pages[&(e.base + layout::RODATA)], SecinfoFlags::empty());
            e.base + layout::RODATA
        }),
    ];
    for op in [Op::Ti, Op::Data, Op::Out] {
        for (name, prepare) in conditions {
            let (mut h, e) = setup();
            let page = prepare(&mut h, &e);
            let mut regs = enter(&mut h, &e);
            write_la(&h, e.base + TI, Targetinfo::default().as_bytes());
            let (mut ti, mut data, mut out) = (e.base + TI, e.base + RDATA, e.base + OUT);
            let (la, write) = match op {
                Op::Ti => (page, false),
                Op::Data => (page + 0x80, false),
                Op::Out => (page + 0x200, true),
            };
            match op {
                Op::Ti => ti = la,
                Op::Data => data = la,
                Op::Out => out = la,
            }
            let expected = if name == "not_present" {
                let code = if write { PfErrorCode::U | PfErrorCode::W } else { PfErrorCode::U };
                Exception::Pf { addr: la, code }
            } else {
                sgx_pf(la, write)
            };
            let result = ereport_at(&mut h, &mut regs, ti, data, out);
            assert_eq!(result, Err(expected), "operand {op:?}, case {name}");
            assert_eq!(read_la(&h, e.base + OUT, Report::SIZE), vec![0x11; Report::SIZE], "{op:?}/{name}");
            leave(&mut h, &mut regs);
        }
    }
    // R-only pages are fine as inputs but not as the output.
    let (mut h, e) = setup();
    writable_pte(&mut h, &e, e.base + layout::RODATA);
    let mut regs = enter(&mut h, &e);
    h.cpu.write_epc(epc_page(&h, e.base + layout::RODATA), 0, Targetinfo::default().as_bytes());
    let ro = e.base + layout::RODATA;
    assert_eq!(ereport_at(&mut h, &mut regs, ro, ro + 0x200, e.base + OUT), Ok(()));
    assert_eq!(ereport_at(&mut h, &mut regs, ro, ro + 0x200, ro + 0x400), Err(sgx_pf(ro + 0x400, true)));
    // A read-only PTE on the output is an ordinary #PF.
    h.map(e.base + layout::DATA, e.pages[&(e.base + layout::DATA)], false, false);
    let code = PfErrorCode::P | PfErrorCode::U | PfErrorCode::W;
    assert_eq!(
        ereport_at(&mut h, &mut regs, ro, ro + 0x200, e.base + OUT),
        Err(Exception::Pf { addr: e.base + OUT, code })
    );
    leave(&mut h, &mut regs);
}

#[test]
fn ereport_targetinfo_reserved_bytes_are_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    for offset in [48usize, 49, 56, 63, 128, 300, 511] {
        let mut ti = [0u8; Targetinfo::SIZE];
        ti[offset] = 1;
        write_la(&h, e.base + TI, &ti);
        let result = ereport_at(&mut h, &mut regs, e.base + TI, e.base + RDATA, e.base + OUT);
        assert_eq!(result, Err(Exception::Gp), "reserved byte {offset}");
        assert_eq!(read_la(&h, e.base + OUT, Report::SIZE), vec![0x11; Report::SIZE]);
    }
    // Every non-reserved byte may be anything.
    let mut ti = [0u8; Targetinfo::SIZE];
    ti[..48].fill(0xEE);
    ti[50..56].fill(0xEE);
    ti[64..128].fill(0xEE);
    write_la(&h, e.base + TI, &ti);
    assert_eq!(ereport_at(&mut h, &mut regs, e.base + TI, e.base + RDATA, e.base + OUT), Ok(()));
    leave(&mut h, &mut regs);
}

#[test]
fn ereport_targetinfo_reserved_check_order() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let mut bad = [0u8; Targetinfo::SIZE];
    bad[49] = 1;
    write_la(&h, e.base + TI, &bad);
    let unmapped = e.base + 0x9000;
    // After the TARGETINFO page checks…
    assert_eq!(
        ereport_at(&mut h, &mut regs, unmapped, e.base + RDATA, e.base + OUT),
        Err(Exception::Pf { addr: unmapped, code: PfErrorCode::U })
    );
    // …before the REPORTDATA and REPORT page checks.
    assert_eq!(ereport_at(&mut h, &mut regs, e.base + TI, unmapped, e.base + OUT), Err(Exception::Gp));
    assert_eq!(ereport_at(&mut h, &mut regs, e.base + TI, e.base + RDATA, unmapped + 0x200), Err(Exception::Gp));
    // With a clean TARGETINFO the later page checks fire.
    write_la(&h, e.base + TI, Targetinfo::default().as_bytes());
    assert_eq!(
        ereport_at(&mut h, &mut regs, e.base + TI, unmapped, e.base + OUT),
        Err(Exception::Pf { addr: unmapped, code: PfErrorCode::U })
    );
    leave(&mut h, &mut regs);
}

#[test]
fn ereport_fields_describe_the_current_enclave() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let before = regs;
    let data: [u8; 64] = std::array::from_fn(|i| i as u8);
    let r = report(&mut h, &mut regs, &e, &Targetinfo::default(), data);
    let secrets = PlatformSecrets::from_seed(SEED);
    assert_eq!(r.cpusvn, secrets.cpusvn);
    assert_eq!(r.miscselect, 1);
    assert_eq!(r.cet_attributes, 0);
    assert_eq!(r.isvextprodid, [0; 16]);
    let flags = AttributesFlags::INIT | AttributesFlags::DEBUG | AttributesFlags::MODE64BIT;
    assert_eq!((r.attributes.flags, r.attributes.xfrm), (flags.bits(), 0x3));
    assert_eq!(r.mrenclave, e.sigstruct.enclavehash);
    assert_eq!(r.mrsigner, sha256(&e.sigstruct.modulus), "MRSIGNER = SHA-256(modulus)");
    assert_eq!(r.configid, [0; 64]);
    assert_eq!((r.isvprodid, r.isvsvn, r.configsvn), (7, 3, 0));
    assert_eq!(r.isvfamilyid, [0; 16]);
    assert!(r.reserved1.iter().chain(&r.reserved2).chain(&r.reserved3).chain(&r.reserved4).all(|&b| b == 0));
    assert_eq!(r.reportdata, data);
    assert_eq!(r.keyid, secrets.report_keyid);
    // Only RIP moved; the rest of the operand page is untouched.
    assert_eq!(
        regs,
        Regs { rip: before.rip + 3, rax: 0, rbx: e.base + TI, rcx: e.base + RDATA, rdx: e.base + OUT, ..before }
    );
    assert_eq!(read_la(&h, e.base + OUT + Report::SIZE as u64, 16), vec![0x11; 16]);
    leave(&mut h, &mut regs);
}

#[test]
fn ereport_through_enclu() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    write_la(&h, e.base + TI, Targetinfo::default().as_bytes());
    regs.rax = Enclu::Ereport as u64;
    regs.rbx = e.base + TI;
    regs.rcx = e.base + RDATA;
    regs.rdx = e.base + OUT;
    regs.rflags = 0x202 | ARITH_FLAGS;
    let before = regs;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!(regs, Regs { rip: before.rip + 3, ..before }, "RAX and flags unchanged");
    leave(&mut h, &mut regs);
}

/// Builds enclaves A (default) and B (2 MiB, so another MRENCLAVE) on one platform.
fn two_enclaves(h: &mut Harness) -> (TestEnclave, TestEnclave) {
    let a = TestEnclave::build(h);
    let b = TestEnclave::build_with(h, secs_image(0x20_0000_0000, 1 << 21));
    assert_ne!(a.sigstruct.enclavehash, b.sigstruct.enclavehash);
    (a, b)
}

fn targetinfo_of(h: &mut Harness, e: &TestEnclave) -> Targetinfo {
    let mut regs = enter(h, e);
    let r = report(h, &mut regs, e, &Targetinfo::default(), [0; 64]);
    leave(h, &mut regs);
    Targetinfo::from(&r)
}

fn report_key(h: &mut Harness, e: &TestEnclave, keyid: [u8; 32]) -> [u8; 16] {
    let mut regs = enter(h, e);
    let key = getkey(h, &mut regs, e, &Keyrequest { keyid, ..request(Keyname::Report) }).expect("REPORT key");
    leave(h, &mut regs);
    key
}

#[test]
fn report_mac_verifies_with_the_targets_report_key() {
    let mut h = Harness::new();
    let (a, b) = two_enclaves(&mut h);
    let ti_b = targetinfo_of(&mut h, &b);
    let mut regs = enter(&mut h, &a);
    let r = report(&mut h, &mut regs, &a, &ti_b, [0x42; 64]);
    leave(&mut h, &mut regs);
    assert_eq!(r.mrenclave, a.sigstruct.enclavehash, "a report about A");
    let key = report_key(&mut h, &b, r.keyid);
    assert_eq!(sgxemu_crypto::aes128_cmac(&key, &r.as_bytes()[..384]), r.mac, "B verifies A's report");
    // Tampering with the body breaks the MAC.
    let mut tampered = r;
    tampered.reportdata[0] ^= 1;
    assert_ne!(sgxemu_crypto::aes128_cmac(&key, &tampered.as_bytes()[..384]), r.mac);
    // A verifies a report to itself (targeted with its own TARGETINFO) the same way.
    let ti_a = targetinfo_of(&mut h, &a);
    let mut regs = enter(&mut h, &a);
    let self_report = report(&mut h, &mut regs, &a, &ti_a, [7; 64]);
    let own_key = getkey(&mut h, &mut regs, &a, &Keyrequest { keyid: self_report.keyid, ..request(Keyname::Report) })
        .expect("REPORT key");
    leave(&mut h, &mut regs);
    assert_eq!(sgxemu_crypto::aes128_cmac(&own_key, self_report.mac_data()), self_report.mac);
    h.cpu.check_invariants().unwrap();
}

#[test]
fn report_for_another_target_does_not_verify() {
    let mut h = Harness::new();
    let (a, b) = two_enclaves(&mut h);
    let ti_a = targetinfo_of(&mut h, &a);
    // A reports to itself; B cannot verify that report.
    let mut regs = enter(&mut h, &a);
    let r = report(&mut h, &mut regs, &a, &ti_a, [0x42; 64]);
    leave(&mut h, &mut regs);
    let key_b = report_key(&mut h, &b, r.keyid);
    assert_ne!(sgxemu_crypto::aes128_cmac(&key_b, r.mac_data()), r.mac);
    // Nor can anyone verify a report made with a zeroed TARGETINFO.
    let mut regs = enter(&mut h, &a);
    let zero = report(&mut h, &mut regs, &a, &Targetinfo::default(), [0x42; 64]);
    leave(&mut h, &mut regs);
    let key_a = report_key(&mut h, &a, zero.keyid);
    assert_ne!(sgxemu_crypto::aes128_cmac(&key_a, zero.mac_data()), zero.mac);
    assert_ne!(sgxemu_crypto::aes128_cmac(&key_b, zero.mac_data()), zero.mac);
    // A different KEYID gives a different REPORT key.
    assert_ne!(report_key(&mut h, &b, [0; 32]), key_b);
}

// ---------------------------------------------------------------------------------------------
// EGETKEY

#[test]
fn egetkey_outside_enclave_is_gp() {
    let (mut h, e) = setup();
    let mut regs = Regs { rip: ENCLU_RIP, ..Regs::default() };
    assert_eq!(egetkey_at(&mut h, &mut regs, e.base + KEYREQ, e.base + KEY), Err(Exception::Gp));
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    assert_eq!((regs.rip, regs.rax), (ENCLU_RIP, Enclu::Egetkey as u64));
}

#[test]
fn egetkey_misaligned_or_outside_operands_are_gp() {
    let (mut h, e) = setup();
    let below = e.base - 0x1000;
    h.map(below, e.pages[&(e.base + layout::DATA)], true, false);
    let mut regs = enter(&mut h, &e);
    write_la(&h, e.base + KEYREQ, request(Keyname::Report).as_bytes());
    let b = e.base;
    for (name, req, out) in [
        ("keyrequest_256", b + KEYREQ + 0x100, b + KEY),
        ("keyrequest_8", b + KEYREQ + 8, b + KEY),
        ("key_8", b + KEYREQ, b + KEY + 8),
        ("keyrequest_outside", below, b + KEY),
        ("key_outside", b + KEYREQ, below + 0x800),
        ("key_past_end", b + KEYREQ, b + e.size),
    ] {
        let before = regs;
        assert_eq!(egetkey_at(&mut h, &mut regs, req, out), Err(Exception::Gp), "case {name}");
        assert_eq!((regs.rip, regs.rflags), (before.rip, before.rflags), "case {name}: no status written");
        assert_key_untouched(&h, &e, name);
    }
    leave(&mut h, &mut regs);
}

#[test]
fn egetkey_operand_page_checks() {
    type Prepare = fn(&mut Harness, &TestEnclave) -> (u64, u64, Exception);
    let cases: [(&str, Prepare); 8] = [
        ("keyrequest_not_present", |_, e| {
            let la = e.base + 0x9000;
            (la, e.base + KEY, Exception::Pf { addr: la, code: PfErrorCode::U })
        }),
        ("keyrequest_normal_memory", |h, e| {
            let la = e.base + 0x9000;
            h.map(la, scratch::PAGE, true, false);
            (la, e.base + KEY, sgx_pf(la, false))
        }),
        ("keyrequest_tcs", |_, e| (e.tcs, e.base + KEY, sgx_pf(e.tcs, false))),
        ("keyrequest_no_read", |h, e| {
            let la = e.base + layout::RODATA;
            emodpr(h, e.pages[&la], SecinfoFlags::empty());
            (la, e.base + KEY, sgx_pf(la, false))
        }),
        ("keyrequest_pending", |h, e| {
            let la = e.base + layout::HEAP;
            eaug(h, e, la);
            (la, e.base + KEY, sgx_pf(la, false))
        }),
        ("key_not_present", |_, e| {
            let la = e.base + 0x9000;
            (e.base + KEYREQ, la, Exception::Pf { addr: la, code: PfErrorCode::U | PfErrorCode::W })
        }),
        ("key_read_only", |h, e| {
            let la = e.base + layout::RODATA + 0x10;
            writable_pte(h, e, la);
            (e.base + KEYREQ, la, sgx_pf(la, true))
        }),
        ("key_pending", |h, e| {
            let la = e.base + layout::HEAP;
            eaug(h, e, la);
            (e.base + KEYREQ, la, sgx_pf(la, true))
        }),
    ];
    for (name, prepare) in cases {
        let (mut h, e) = setup();
        let (req, out, expected) = prepare(&mut h, &e);
        let mut regs = enter(&mut h, &e);
        write_la(&h, e.base + KEYREQ, request(Keyname::Report).as_bytes());
        assert_eq!(egetkey_at(&mut h, &mut regs, req, out), Err(expected), "case {name}");
        assert_key_untouched(&h, &e, name);
        leave(&mut h, &mut regs);
    }
}

#[test]
fn egetkey_page_checks_precede_request_checks() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let bad = Keyrequest { keypolicy: 1 << 6, ..request(Keyname::Seal) };
    write_la(&h, e.base + KEYREQ, bad.as_bytes());
    let ro = e.base + layout::RODATA;
    writable_pte(&mut h, &e, ro);
    assert_eq!(egetkey_at(&mut h, &mut regs, e.base + KEYREQ, ro), Err(sgx_pf(ro, true)));
    assert_eq!(egetkey_at(&mut h, &mut regs, e.base + KEYREQ, e.base + KEY), Err(Exception::Gp));
    leave(&mut h, &mut regs);
}

#[test]
fn egetkey_reserved_fields_are_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let mut cases: Vec<(String, Keyrequest)> = vec![
        ("reserved1".into(), Keyrequest { reserved1: 1, ..seal(Keypolicy::MRSIGNER) }),
        ("reserved2_first".into(), {
            let mut r = seal(Keypolicy::MRSIGNER);
            r.reserved2[0] = 1;
            r
        }),
        ("reserved2_last".into(), {
            let mut r = seal(Keypolicy::MRSIGNER);
            r.reserved2[433] = 0x80;
            r
        }),
    ];
    for bit in 6..16 {
        cases.push((format!("keypolicy_bit_{bit}"), Keyrequest { keypolicy: 1 << bit, ..seal(Keypolicy::MRSIGNER) }));
    }
    // Reserved bits are checked whatever the key name (even an unknown one).
    cases.push(("unknown_keyname_with_reserved".into(), Keyrequest { reserved1: 1, ..request(Keyname::Report) }));
    cases.last_mut().unwrap().1.keyname = 99;
    for (name, req) in cases {
        write_la(&h, e.base + KEYREQ, req.as_bytes());
        regs.rax = Enclu::Egetkey as u64;
        regs.rbx = e.base + KEYREQ;
        regs.rcx = e.base + KEY;
        let before = regs;
        assert_eq!(h.cpu.egetkey(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp), "case {name}");
        assert_eq!(regs, before, "case {name}: registers untouched");
        assert_key_untouched(&h, &e, &name);
    }
    leave(&mut h, &mut regs);
}

#[test]
fn egetkey_kss_selections_without_kss_are_gp() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let mut cases: Vec<(String, Keyrequest)> = (2..6)
        .map(|bit| (format!("policy_bit_{bit}"), Keyrequest { keypolicy: 1 << bit, ..seal(Keypolicy::MRSIGNER) }))
        .collect();
    cases.push(("configsvn".into(), Keyrequest { configsvn: 1, ..seal(Keypolicy::MRSIGNER) }));
    cases
        .push(("report_with_kss_bit".into(), Keyrequest { keypolicy: KEYPOLICY_KSS_MASK, ..request(Keyname::Report) }));
    for (name, req) in cases {
        write_la(&h, e.base + KEYREQ, req.as_bytes());
        assert_eq!(egetkey_at(&mut h, &mut regs, e.base + KEYREQ, e.base + KEY), Err(Exception::Gp), "case {name}");
        assert_key_untouched(&h, &e, &name);
    }
    leave(&mut h, &mut regs);
}

#[test]
fn egetkey_kss_selections_with_kss() {
    let mut h = Harness::new();
    in_enclave(&mut h, AttributesFlags::KSS, |h, regs, e| {
        let plain = getkey(h, regs, e, &seal(Keypolicy::MRSIGNER)).expect("plain SEAL");
        for policy in [Keypolicy::NOISVPRODID, Keypolicy::CONFIGID, Keypolicy::ISVFAMILYID, Keypolicy::ISVEXTPRODID] {
            let key = getkey(h, regs, e, &seal(Keypolicy::MRSIGNER | policy));
            assert!(key.is_ok(), "{policy:?} allowed with KSS");
            // Every policy bit is a key input.
            assert_ne!(key.unwrap(), plain, "{policy:?}");
        }
    });
}

#[test]
fn egetkey_configsvn_above_current_is_invalid_isvsvn() {
    let mut h = Harness::new();
    in_enclave(&mut h, AttributesFlags::KSS, |h, regs, e| {
        let req = Keyrequest { configsvn: 1, ..seal(Keypolicy::MRSIGNER | Keypolicy::CONFIGID) };
        assert_eq!(getkey(h, regs, e, &req), Err(Status::Error(ErrorCode::InvalidIsvsvn)));
        assert_key_untouched(h, e, "configsvn");
    });
}

#[test]
fn seal_key_binds_the_attribute_mask() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let base = getkey(&mut h, &mut regs, &e, &seal(Keypolicy::MRSIGNER)).unwrap();
    // INIT and DEBUG are always bound: a mask naming them changes only ATTRIBUTEMASK.
    let mut with_mask = seal(Keypolicy::MRSIGNER);
    with_mask.attributemask.flags = 0x3;
    assert_ne!(getkey(&mut h, &mut regs, &e, &with_mask).unwrap(), base, "ATTRIBUTEMASK is an input");
    let mut misc = seal(Keypolicy::MRSIGNER);
    misc.miscmask = 1;
    assert_ne!(getkey(&mut h, &mut regs, &e, &misc).unwrap(), base, "MISCMASK is an input");
    assert_eq!(getkey(&mut h, &mut regs, &e, &seal(Keypolicy::MRSIGNER)).unwrap(), base, "deterministic");
    leave(&mut h, &mut regs);
}

#[test]
fn egetkey_unknown_keyname() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    for keyname in [5u16, 6, 0x100, 0xFFFF] {
        let req = Keyrequest { keyname, ..Keyrequest::default() };
        assert_eq!(getkey(&mut h, &mut regs, &e, &req), Err(Status::Error(ErrorCode::InvalidKeyname)), "{keyname}");
        assert_eq!(regs.rax, 256);
        assert_key_untouched(&h, &e, "keyname");
    }
    leave(&mut h, &mut regs);
}

#[test]
fn egetkey_einittoken_needs_the_attribute() {
    let mut h = Harness::new();
    in_enclave(&mut h, AttributesFlags::empty(), |h, regs, e| {
        let req = request(Keyname::Einittoken);
        assert_eq!(getkey(h, regs, e, &req), Err(Status::Error(ErrorCode::InvalidAttribute)));
        assert_eq!(regs.rax, 2);
        assert_key_untouched(h, e, "einittoken");
    });
    let mut h = Harness::new();
    in_enclave(&mut h, AttributesFlags::EINITTOKENKEY, |h, regs, e| {
        assert!(getkey(h, regs, e, &request(Keyname::Einittoken)).is_ok());
    });
}

#[test]
fn egetkey_provision_keys_need_the_attribute() {
    for keyname in [Keyname::Provision, Keyname::ProvisionSeal] {
        let mut h = Harness::new();
        in_enclave(&mut h, AttributesFlags::empty(), |h, regs, e| {
            assert_eq!(getkey(h, regs, e, &request(keyname)), Err(Status::Error(ErrorCode::InvalidAttribute)));
            assert_key_untouched(h, e, "provision");
        });
        let mut h = Harness::new();
        in_enclave(&mut h, AttributesFlags::PROVISIONKEY, |h, regs, e| {
            assert!(getkey(h, regs, e, &request(keyname)).is_ok(), "{keyname:?} with PROVISIONKEY");
        });
    }
}

#[test]
fn egetkey_svns_above_current_are_refused() {
    let mut h = Harness::new();
    let attrs = AttributesFlags::PROVISIONKEY | AttributesFlags::EINITTOKENKEY;
    in_enclave(&mut h, attrs, |h, regs, e| {
        for keyname in [Keyname::Seal, Keyname::Einittoken, Keyname::Provision, Keyname::ProvisionSeal] {
            for component in [0usize, 5, 15] {
                let mut svn = cpusvn();
                svn[component] += 1;
                let req = Keyrequest { cpusvn: svn, ..request(keyname) };
                let case = format!("{keyname:?} cpusvn[{component}]");
                assert_eq!(getkey(h, regs, e, &req), Err(Status::Error(ErrorCode::InvalidCpusvn)), "{case}");
                assert_eq!(regs.rax, 32);
                assert_key_untouched(h, e, &case);
            }
            let req = Keyrequest { isvsvn: 4, cpusvn: cpusvn(), ..request(keyname) };
            assert_eq!(getkey(h, regs, e, &req), Err(Status::Error(ErrorCode::InvalidIsvsvn)), "{keyname:?} isvsvn");
            assert_eq!(regs.rax, 64);
            assert_key_untouched(h, e, "isvsvn");
            // Exactly the current values are fine.
            let req = Keyrequest { isvsvn: 3, cpusvn: cpusvn(), ..request(keyname) };
            assert!(getkey(h, regs, e, &req).is_ok(), "{keyname:?} at the current SVNs");
        }
    });
}

#[test]
fn egetkey_lower_svns_give_different_keys() {
    let mut h = Harness::new();
    in_enclave(&mut h, AttributesFlags::PROVISIONKEY, |h, regs, e| {
        for keyname in [Keyname::Seal, Keyname::Provision, Keyname::ProvisionSeal] {
            let current = Keyrequest { isvsvn: 3, cpusvn: cpusvn(), ..request(keyname) };
            let key = getkey(h, regs, e, &current).unwrap();
            let lower_isv = getkey(h, regs, e, &Keyrequest { isvsvn: 2, ..current }).unwrap();
            let lower_cpu = getkey(h, regs, e, &Keyrequest { cpusvn: [0; 16], ..current }).unwrap();
            assert_ne!(key, lower_isv, "{keyname:?}");
            assert_ne!(key, lower_cpu, "{keyname:?}");
            assert_ne!(lower_isv, lower_cpu, "{keyname:?}");
            assert_eq!(getkey(h, regs, e, &current).unwrap(), key, "{keyname:?} deterministic");
        }
    });
}

#[test]
fn egetkey_report_key_ignores_svns() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    let base = getkey(&mut h, &mut regs, &e, &request(Keyname::Report)).unwrap();
    let mut svn = cpusvn();
    svn[0] = 0xFF;
    let odd = Keyrequest { cpusvn: svn, isvsvn: 0xFFFF, keypolicy: 0x3, ..request(Keyname::Report) };
    assert_eq!(getkey(&mut h, &mut regs, &e, &odd), Ok(base), "REPORT takes none of these inputs");
    leave(&mut h, &mut regs);
}

#[test]
fn seal_key_policies_across_enclaves_of_one_signer() {
    let mut h = Harness::new();
    let (a, b) = two_enclaves(&mut h);
    let keys = |h: &mut Harness, e: &TestEnclave| {
        let mut regs = enter(h, e);
        let by_signer = getkey(h, &mut regs, e, &seal(Keypolicy::MRSIGNER)).unwrap();
        let by_enclave = getkey(h, &mut regs, e, &seal(Keypolicy::MRENCLAVE)).unwrap();
        leave(h, &mut regs);
        (by_signer, by_enclave)
    };
    let (signer_a, enclave_a) = keys(&mut h, &a);
    let (signer_b, enclave_b) = keys(&mut h, &b);
    assert_eq!(signer_a, signer_b, "MRSIGNER policy: shared by the signer's enclaves");
    assert_ne!(enclave_a, enclave_b, "MRENCLAVE policy: per enclave");
    assert_ne!(signer_a, enclave_a);
}

/// SEAL (MRENCLAVE), PROVISION and PROVISION_SEAL keys of the default PROVISIONKEY enclave on
/// a fresh platform built with `secrets`, for KEYID `keyid`.
fn platform_keys(h: &mut Harness, keyid: [u8; 32]) -> [[u8; 16]; 3] {
    in_enclave(h, AttributesFlags::PROVISIONKEY, |h, regs, e| {
        let with_id = |req: Keyrequest| Keyrequest { keyid, ..req };
        [
            getkey(h, regs, e, &with_id(seal(Keypolicy::MRENCLAVE))).unwrap(),
            getkey(h, regs, e, &with_id(request(Keyname::Provision))).unwrap(),
            getkey(h, regs, e, &with_id(request(Keyname::ProvisionSeal))).unwrap(),
        ]
    })
}

#[test]
fn keys_are_stable_per_platform_secrets() {
    let first = platform_keys(&mut harness_with_secrets(|_| {}), [0; 32]);
    let second = platform_keys(&mut harness_with_secrets(|_| {}), [0; 32]);
    assert_eq!(first, second, "same secrets, same keys");
    let other = platform_keys(&mut harness_with_secrets(|s| *s = PlatformSecrets::from_seed([1; 16])), [0; 32]);
    for i in 0..3 {
        assert_ne!(first[i], other[i], "key {i} differs across platforms");
    }
    // REPORT keys too.
    let report = |h: &mut Harness| {
        in_enclave(h, AttributesFlags::empty(), |h, regs, e| getkey(h, regs, e, &request(Keyname::Report)).unwrap())
    };
    assert_eq!(report(&mut harness_with_secrets(|_| {})), report(&mut harness_with_secrets(|_| {})));
    assert_ne!(report(&mut harness_with_secrets(|_| {})), report(&mut harness_with_secrets(|s| s.root_key[0] ^= 1)));
}

#[test]
fn provision_keys_ignore_owner_epoch_and_keyid() {
    let [seal_key, provision, provision_seal] = platform_keys(&mut harness_with_secrets(|_| {}), [0; 32]);
    let epoch = platform_keys(&mut harness_with_secrets(|s| s.owner_epoch[3] ^= 0x40), [0; 32]);
    assert_ne!(epoch[0], seal_key, "SEAL depends on OWNEREPOCH");
    assert_eq!(epoch[1], provision, "PROVISION does not");
    assert_eq!(epoch[2], provision_seal, "PROVISION_SEAL does not");
    let keyid = platform_keys(&mut harness_with_secrets(|_| {}), [9; 32]);
    assert_ne!(keyid[0], seal_key, "SEAL depends on KEYID");
    assert_eq!(keyid[1], provision, "PROVISION does not");
    assert_eq!(keyid[2], provision_seal, "PROVISION_SEAL does not");
    // The fuses separate PROVISION_SEAL from PROVISION, not PROVISION itself.
    let fuses = platform_keys(&mut harness_with_secrets(|s| s.seal_fuses[0] ^= 1), [0; 32]);
    assert_eq!(fuses[1], provision, "PROVISION ignores the seal fuses");
    assert_ne!(fuses[2], provision_seal, "PROVISION_SEAL binds the seal fuses");
    assert_ne!(fuses[0], seal_key, "SEAL binds the seal fuses");
}

#[test]
fn egetkey_status_through_enclu() {
    let (mut h, e) = setup();
    let mut regs = enter(&mut h, &e);
    // Success: RAX=0, ZF and the other arithmetic flags cleared, RIP past ENCLU.
    write_la(&h, e.base + KEYREQ, seal(Keypolicy::MRSIGNER).as_bytes());
    regs.rax = Enclu::Egetkey as u64;
    regs.rbx = e.base + KEYREQ;
    regs.rcx = e.base + KEY;
    regs.rflags = 0x202 | ARITH_FLAGS;
    let before = regs;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!(regs, Regs { rax: 0, rflags: 0x202, rip: before.rip + 3, ..before });
    assert_ne!(read_la(&h, e.base + KEY, 16), vec![0x11; 16]);
    // Error: RAX=code, ZF=1, the rest cleared, RIP past ENCLU, output untouched.
    h.cpu.write_epc(epc_page(&h, e.base + KEY), (KEY % PAGE_SIZE as u64) as usize, &[0x11; 16]);
    write_la(&h, e.base + KEYREQ, request(Keyname::Einittoken).as_bytes());
    regs.rax = Enclu::Egetkey as u64;
    regs.rflags = 0x202 | ARITH_FLAGS;
    let before = regs;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Ok(()));
    assert_eq!(regs, Regs { rax: 2, rflags: 0x202 | RFLAGS_ZF, rip: before.rip + 3, ..before });
    assert_key_untouched(&h, &e, "enclu error");
    // Fault: nothing changes.
    regs.rax = Enclu::Egetkey as u64;
    regs.rcx = e.base + KEY + 8;
    let before = regs;
    assert_eq!(h.cpu.enclu(&mut h.lp, &mut regs, &h.pt), Err(Exception::Gp));
    assert_eq!(regs, before);
    leave(&mut h, &mut regs);
    h.cpu.check_invariants().unwrap();
}
