//! EPC exhaustion (driver spec §6.4 allocation, §5.2 step 5, §5.3): when no page is free
//! and nothing can be reclaimed, the allocator says ENOMEM at once — CREATE and ADD_PAGES
//! fail with it, and the fault handler gives SIGBUS instead of retrying for ever.
//!
//! * enclaves are loaded until the EPC holds nothing but their VA pages (never
//!   reclaimable): the next load fails with ENOMEM, in CREATE or ADD_PAGES, after a
//!   bounded number of enclaves: `loading_enclaves_until_the_epc_is_full_ends_with_enomem`.
//! * in that state a fault on an evicted page of a loaded enclave (ELDU) is SIGBUS,
//!   reported through the vDSO's fixup, instead of retried for ever; once some enclaves
//!   are closed the same call runs: `a_fault_with_nothing_reclaimable_is_sigbus`.

use sgxemu_arch::PAGE_SIZE;
use sgxemu_driver::Errno;
use sgxemu_driver::sim::{Machine, TestEnclave};

const PAGE: u64 = PAGE_SIZE as u64;
/// The EPC of these tests: 96 pages.
const EPC: u64 = 96 * PAGE;
/// More enclaves than could ever fit: each keeps at least its VA page.
const MAX_ENCLAVES: usize = 200;

/// Loads test enclaves (one heap page each) until one fails; returns them and the error.
fn fill(m: &Machine, t: &mut sgxemu_driver::sim::SimThread) -> (Vec<TestEnclave>, sgxemu_driver::sim::LoadError) {
    let mut loaded = Vec::new();
    for _ in 0..MAX_ENCLAVES {
        match TestEnclave::load_sized(t, PAGE, 0x20000) {
            Ok(e) => loaded.push(e),
            Err(e) => return (loaded, e),
        }
    }
    panic!("{} enclaves fit in {} EPC pages (free {})", MAX_ENCLAVES, EPC / PAGE, m.sgx.free_pages());
}

#[test]
fn loading_enclaves_until_the_epc_is_full_ends_with_enomem() {
    let m = Machine::with_epc(EPC);
    let p = m.process();
    let mut t = m.thread(&p);
    let (loaded, error) = fill(&m, &mut t);
    assert_eq!(error.errno, Errno::ENOMEM, "{error:?} after {} enclaves", loaded.len());
    assert!(
        matches!(error.step, "SGX_IOC_ENCLAVE_CREATE" | "SGX_IOC_ENCLAVE_ADD_PAGES"),
        "{error:?} after {} enclaves",
        loaded.len()
    );
    assert!(loaded.len() > 10, "only {} enclaves", loaded.len());
    assert_eq!(m.sgx.warnings(), Vec::<String>::new());
}

#[test]
fn a_fault_with_nothing_reclaimable_is_sigbus() {
    let m = Machine::with_epc(EPC);
    let p = m.process();
    let mut t = m.thread(&p);
    let (loaded, error) = fill(&m, &mut t);
    assert_eq!(error.errno, Errno::ENOMEM, "{error:?}");
    // ENOMEM said it: nothing is reclaimable and at most the page an unwound allocation
    // gave back is free. The first enclave's pages are all written out, so entering it
    // needs its SECS and TCS back: the fault handler finds no page for the second and
    // gives SIGBUS, which the vDSO reports as a #PF — no endless NOPAGE retries.
    assert!(m.sgx.free_pages() <= 1, "{} free", m.sgx.free_pages());
    let first = loaded[0].clone();
    let exit = t.enter(first.tcs1(), sgxemu_uapi::EENTER, Some(first.get_from_buffer()));
    assert!(!exit.exited(), "no EPC page to run in, yet the enclave ran");
    assert_eq!(exit.run.exception_vector, 14, "{:?}", exit.run);
    // Ten enclaves gone: their VA pages come free and the first enclave runs again.
    let mut kcpu = m.kernel_cpu();
    for e in &loaded[loaded.len() - 10..] {
        p.munmap(e.base, e.size).expect("munmap");
        p.close(&mut kcpu, e.fd).expect("close");
    }
    let exit = t.enter(first.tcs1(), sgxemu_uapi::EENTER, Some(first.get_from_buffer()));
    assert!(exit.exited(), "{:?}", exit.run);
    assert_eq!(m.sgx.warnings(), Vec::<String>::new());
}
