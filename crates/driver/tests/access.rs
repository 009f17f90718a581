//! The enclave VMA's `.access` hook (driver spec §4.3): ptrace-style reads and writes of a
//! debug enclave through EDBGRD/EDBGWR.
//!
//! - non-debug enclave → EFAULT: `access_to_a_non_debug_enclave_is_efault`
//! - unaligned ranges crossing words, read back what the enclave wrote, writes the enclave
//!   then sees: `reads_and_writes_cross_word_boundaries`
//! - VMA protection beyond the page's maximum → EFAULT: `access_beyond_max_prot_is_efault`
//! - a hole → EFAULT: `access_to_a_hole_is_efault`
//! - a page written out by the reclaimer is reloaded: `access_reloads_a_reclaimed_page`
//! - our choice for an SGX code from EDBGRD (mainline reports success with stale data): a
//!   PENDING page → EIO: `access_to_a_pending_page_is_eio`

use sgxemu_arch::AttributesFlags;
use sgxemu_driver::Errno;
use sgxemu_driver::os::Prot;
use sgxemu_driver::sim::{Machine, MapKind, SimThread, TestEnclave};
use sgxemu_uapi::EENTER;

fn debug_enclave(m: &Machine) -> (SimThread, TestEnclave) {
    let p = m.process();
    let mut t = m.thread(&p);
    let e = TestEnclave::load_with(&mut t, 4096, 0, AttributesFlags::MODE64BIT | AttributesFlags::DEBUG).unwrap();
    (t, e)
}

const RW: Prot = Prot::READ.union(Prot::WRITE);

#[test]
fn access_to_a_non_debug_enclave_is_efault() {
    let m = Machine::with_epc(8 << 20);
    let p = m.process();
    let mut t = m.thread(&p);
    let e = TestEnclave::load(&mut t, 4096).unwrap();
    let encl = p.enclave(e.fd).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(encl.access(&mut t.kernel, e.data_start(), &mut buf, false, RW), Err(Errno::EFAULT));
}

#[test]
fn reads_and_writes_cross_word_boundaries() {
    let m = Machine::with_epc(8 << 20);
    let (mut t, e) = debug_enclave(&m);
    assert!(t.enter(e.tcs1(), EENTER, Some(e.put_to_address(e.data_start(), 0x1122_3344_5566_7788))).exited());
    let encl = t.process().enclave(e.fd).unwrap();
    let mut buf = [0u8; 6];
    assert_eq!(encl.access(&mut t.kernel, e.data_start() + 3, &mut buf, false, RW), Ok(6));
    assert_eq!(buf, [0x55, 0x44, 0x33, 0x22, 0x11, 0x00]);
    let mut patch = [0xAA, 0xBB, 0xCC];
    assert_eq!(encl.access(&mut t.kernel, e.data_start() + 6, &mut patch, true, RW), Ok(3));
    let exit = t.enter(e.tcs1(), EENTER, Some(e.get_from_address(e.data_start())));
    assert_eq!(exit.results, vec![0xBBAA_3344_5566_7788]);
    let exit = t.enter(e.tcs1(), EENTER, Some(e.get_from_address(e.data_start() + 8)));
    assert_eq!(exit.results[0] & 0xFF, 0xCC);
    assert!(m.sgx.warnings().is_empty());
}

#[test]
fn access_beyond_max_prot_is_efault() {
    let m = Machine::with_epc(8 << 20);
    let (mut t, e) = debug_enclave(&m);
    let encl = t.process().enclave(e.fd).unwrap();
    let mut buf = [0u8; 8];
    let rwx = Prot::READ | Prot::WRITE | Prot::EXEC;
    assert_eq!(encl.access(&mut t.kernel, e.data_start(), &mut buf, false, rwx), Err(Errno::EFAULT));
}

#[test]
fn access_to_a_hole_is_efault() {
    let m = Machine::with_epc(8 << 20);
    let (mut t, e) = debug_enclave(&m);
    let encl = t.process().enclave(e.fd).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(encl.access(&mut t.kernel, e.first_unbacked(), &mut buf, false, RW), Err(Errno::EFAULT));
}

#[test]
fn access_reloads_a_reclaimed_page() {
    let m = Machine::with_epc(512 << 10);
    let p = m.process();
    let mut t = m.thread(&p);
    // More heap than EPC: loading it already reclaims.
    let e = TestEnclave::load_with(&mut t, 1 << 20, 0, AttributesFlags::MODE64BIT | AttributesFlags::DEBUG).unwrap();
    let encl = p.enclave(e.fd).unwrap();
    let heap = e.base + sgxemu_driver::sim::layout::HEAP;
    let resident_before = encl.page_record(heap).unwrap().2;
    assert!(!resident_before, "the first heap page was written out while loading");
    let mut buf = [0u8; 8];
    assert_eq!(encl.access(&mut t.kernel, heap, &mut buf, false, RW), Ok(8));
    assert_eq!(buf, [0; 8]);
    assert!(encl.page_record(heap).unwrap().2, "reloaded");
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
}

#[test]
fn access_to_a_pending_page_is_eio() {
    let m = Machine::with_epc(8 << 20);
    let (mut t, e) = debug_enclave(&m);
    let p = t.process().clone();
    let page = e.first_unbacked();
    p.mmap(page, 4096, RW, MapKind::Shared, Some(e.fd)).unwrap();
    // A store EAUGs the page, then faults on PENDING: the page stays pending.
    let exit = t.enter(e.tcs2(), EENTER, Some(e.put_to_address(page, 1)));
    assert_eq!(exit.run.exception_error_code, 0x8007);
    let encl = p.enclave(e.fd).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(encl.access(&mut t.kernel, page, &mut buf, false, RW), Err(Errno::EIO));
}
