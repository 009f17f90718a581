//! EPC exhaustion in a native process (driver spec §6.4, §5.2 step 5, §5.3): enclaves are
//! loaded until the EPC holds nothing reclaimable — each keeps its VA page for good, with
//! the reclaimer thread writing out the rest meanwhile. The next load fails with ENOMEM,
//! as the kernel's allocator says once its active list is empty, and a fault that needs an
//! EPC page then is SIGBUS, reported through the vDSO. (Own test binary: the EPC size is
//! the process's.)

mod support;

use support::enclave::{DATA, TestEnclave, op, start_engine};

const EENTER: u32 = 2;
/// More enclaves than a 1 MiB EPC (256 pages) can hold: each keeps at least its VA page.
const MAX_ENCLAVES: usize = 400;

#[test]
fn loading_enclaves_until_the_epc_is_full_ends_with_enomem_then_faults_are_sigbus() {
    let engine = start_engine(1 << 20);
    let mut loaded = Vec::new();
    let error = loop {
        assert!(loaded.len() < MAX_ENCLAVES, "{MAX_ENCLAVES} enclaves fit in 256 EPC pages");
        match TestEnclave::try_load(0x20000) {
            Ok(e) => loaded.push(e),
            Err(error) => break error,
        }
    };
    assert_eq!(error.1, libc::ENOMEM, "{error:?} after {} enclaves", loaded.len());
    assert!(loaded.len() > 16, "only {} enclaves", loaded.len());
    // Nothing is reclaimable now: running the first enclave needs its written-out SECS,
    // TCS and SSA back, and there is no EPC page for them. The fault is SIGBUS, which the
    // vDSO reports, instead of a retry that never ends.
    assert!(engine.sgx.free_pages() <= 1, "{} free", engine.sgx.free_pages());
    let first = &loaded[0];
    let mut value = 0u64;
    let (ret, run) = first.enter(first.tcs(0), EENTER, [op::READ, first.base + DATA, &raw mut value as u64, 0, 0]);
    assert_eq!((ret, run.function, run.exception_vector), (0, EENTER, 14), "{run:?}");
}
