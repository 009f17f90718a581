//! End-to-end flows over the bare processor: build, measure, sign, initialize, enter,
//! take an exception, resume, exit, grow and shrink with SGX2, page out and back in.

use sgxemu_arch::{ErrorCode, IntoBytes, PAGE_SIZE, PageType, SecinfoFlags, Vector};
use sgxemu_cpu::testkit::{Harness, TestEnclave, layout, scratch, secs_image};
use sgxemu_cpu::{AccessKind, AexEvent, Exception, Memory, Regs, Status};

const AEP: u64 = 0x40_1000;

#[test]
fn build_enter_exit() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let mut regs = Regs { rsp: 0x7fff_0000, rbp: 0x7fff_0100, rip: 0x40_0000, ..Regs::default() };
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rip, e.base + layout::CODE);
    assert_eq!(regs.rax, 0, "CSSA");
    assert_eq!(regs.rcx, 0x40_0003, "RCX = address after ENCLU");
    assert_eq!(regs.fsbase, e.base + layout::DATA);
    assert!(h.lp.in_enclave());
    h.eexit(&mut regs, 0x40_0003).unwrap();
    assert_eq!(regs.rip, 0x40_0003);
    assert_eq!(regs.rcx, AEP);
    assert!(!h.lp.in_enclave());
    h.cpu.check_invariants().unwrap();
}

#[test]
fn aex_and_eresume_round_trip_registers() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let mut regs = Regs { rsp: 0x7fff_0000, rbp: 0x7fff_0100, rip: 0x40_0000, ..Regs::default() };
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    regs.r12 = 0x1234;
    regs.rip = e.base + layout::CODE + 3;
    let report = h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(Exception::Ud)).unwrap();
    assert_eq!(report.vector, Some(Vector::Ud));
    assert_eq!((regs.rax, regs.rbx, regs.rcx, regs.rip), (3, e.tcs, AEP, AEP));
    assert_eq!((regs.rsp, regs.rbp, regs.r12), (0x7fff_0000, 0x7fff_0100, 0));
    h.eresume(&mut regs, e.tcs, AEP).unwrap();
    assert_eq!(regs.rip, e.base + layout::CODE + 3);
    assert_eq!(regs.r12, 0x1234);
    h.eexit(&mut regs, 0).unwrap();
}

#[test]
fn eaug_eaccept_trim_remove() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let la = e.base + layout::HEAP;
    let page = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page).unwrap();
    h.map(la, page, true, false);
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    // SECINFO for EACCEPT lives in enclave memory: the data page.
    let secinfo_la = e.base + layout::DATA;
    let write_secinfo = |h: &mut Harness, flags: SecinfoFlags| {
        let epc = h.cpu.epc_index(e.pages[&secinfo_la]).unwrap();
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&flags.bits().to_le_bytes());
        h.cpu.write_epc(epc, 0, &bytes);
    };
    let reg = |f: SecinfoFlags| f.with_page_type(PageType::Reg);
    write_secinfo(&mut h, reg(SecinfoFlags::R | SecinfoFlags::W | SecinfoFlags::PENDING));
    assert!(h.cpu.check_access(&h.lp, &h.pt, la, AccessKind::Read).unwrap_err().is_sgx_pf());
    regs.rbx = secinfo_la;
    regs.rcx = la;
    assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), Ok(Status::Success));
    assert!(h.cpu.check_access(&h.lp, &h.pt, la, AccessKind::Write).is_ok());
    h.eexit(&mut regs, 0).unwrap();
    h.put_secinfo(SecinfoFlags::empty().with_page_type(PageType::Trim));
    assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, page), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut h.lp, e.secs), Ok(Status::Success));
    h.eenter(&mut regs, e.tcs, AEP).unwrap();
    write_secinfo(&mut h, SecinfoFlags::MODIFIED.with_page_type(PageType::Trim));
    regs.rbx = secinfo_la;
    regs.rcx = la;
    assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), Ok(Status::Success));
    h.eexit(&mut regs, 0).unwrap();
    assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Success));
    h.cpu.check_invariants().unwrap();
}

#[test]
fn ewb_eldu_round_trip() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let data_epc = e.pages[&(e.base + layout::DATA)];
    let va = h.alloc_page();
    h.cpu.epa(&mut h.lp, 3, va).unwrap();
    assert_eq!(h.cpu.eblock(&mut h.lp, data_epc), Ok(Status::Success));
    h.put_pageinfo(0, scratch::PAGE, scratch::SECINFO, 0);
    assert_eq!(
        h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, data_epc, va),
        Ok(Status::Error(ErrorCode::NotTracked))
    );
    h.cpu.etrack(&mut h.lp, e.secs).unwrap();
    assert_eq!(h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, data_epc, va), Ok(Status::Success));
    let mut cipher = vec![0u8; PAGE_SIZE];
    h.mem.read(scratch::PAGE, &mut cipher).unwrap();
    assert_ne!(cipher, vec![0x11; PAGE_SIZE]);
    let target = h.alloc_page();
    h.put_pageinfo(e.base + layout::DATA, scratch::PAGE, scratch::SECINFO, e.secs);
    assert_eq!(h.cpu.eldu(&mut h.lp, &mut h.mem, scratch::PAGEINFO, target, va), Ok(Status::Success));
    let mut back = vec![0u8; PAGE_SIZE];
    h.cpu.read_epc(h.cpu.epc_index(target).unwrap(), 0, &mut back);
    assert_eq!(back, vec![0x11; PAGE_SIZE]);
    h.cpu.check_invariants().unwrap();
}

/// Logical processors remember the enclave they used last (so leaves touch no reference
/// count shared by every page). Once that enclave is torn down and another one is created on
/// the same SECS page, leaves on those LPs must act on the new enclave.
#[test]
fn a_reused_secs_page_is_not_mistaken_for_the_enclave_that_left_it() {
    let mut h = Harness::new();
    let e = TestEnclave::build(&mut h);
    let secs_index = h.cpu.epc_index(e.secs).unwrap();
    let mut other = h.cpu.new_lp();
    assert_eq!(h.cpu.etrack(&mut other, e.secs), Ok(Status::Success), "`other` now knows the first enclave");
    let first_eid = h.cpu.epcm_view(secs_index).eid;
    for &page in e.pages.values() {
        assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Success));
    }
    assert_eq!(h.cpu.eremove(&mut h.lp, e.secs), Ok(Status::Success));
    assert_eq!(h.cpu.etrack(&mut other, e.secs), Err(Exception::epcm_pf(e.secs, false)));
    // A second enclave on the same EPC page.
    h.mem.write(scratch::SECS, secs_image(0x20_0000_0000, 1 << 20).as_bytes()).unwrap();
    h.put_secinfo(SecinfoFlags::empty().with_page_type(PageType::Secs));
    h.put_pageinfo(0, scratch::SECS, scratch::SECINFO, 0);
    h.cpu.ecreate(&mut h.lp, &mut h.mem, scratch::PAGEINFO, e.secs).unwrap();
    let second_eid = h.cpu.epcm_view(secs_index).eid;
    assert_ne!(second_eid, first_eid);
    // EADD from the LP that knew the first enclave: the page belongs to the second.
    let page = h.alloc_page();
    h.mem.write(scratch::PAGE, &[7; PAGE_SIZE]).unwrap();
    h.put_secinfo((SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg));
    h.put_pageinfo(0x20_0000_0000, scratch::PAGE, scratch::SECINFO, e.secs);
    h.cpu.eadd(&mut other, &mut h.mem, scratch::PAGEINFO, page).unwrap();
    assert_eq!(h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).eid, second_eid);
    h.cpu.check_invariants().unwrap();
    assert_eq!(h.cpu.eremove(&mut h.lp, e.secs), Ok(Status::Error(ErrorCode::ChildPresent)));
    assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Success));
    assert_eq!(h.cpu.eremove(&mut other, e.secs), Ok(Status::Success), "the child was counted in the second");
    h.cpu.check_invariants().unwrap();
}

#[test]
fn a_64_gib_epc_costs_only_the_pages_used() {
    use std::sync::Arc;

    use sgxemu_cpu::{PlatformConfig, PlatformSecrets, Processor, SparseEpc};

    let config = PlatformConfig {
        epc_size: 64 << 30,
        secrets: Some(PlatformSecrets::from_seed([1; 16])),
        ..PlatformConfig::default()
    };
    let storage = Arc::new(SparseEpc::new(config.epc_pages()));
    let cpu = Processor::with_epc_memory(config, storage.clone()).unwrap();
    assert_eq!(cpu.epc_pages(), 16 << 20);
    let mut lp = cpu.new_lp();
    let last = cpu.epc_addr(sgxemu_cpu::EpcIndex((16 << 20) - 1));
    assert_eq!(cpu.epa(&mut lp, 3, last), Ok(()));
    assert!(cpu.epcm_view(cpu.epc_index(last).unwrap()).valid);
    assert_eq!(cpu.eremove(&mut lp, last), Ok(Status::Success));
    // One 2 MiB chunk of page storage, not 64 GiB.
    assert!(storage.allocated_bytes() <= 2 << 20, "{}", storage.allocated_bytes());
    // Just past the end is not EPC.
    assert_eq!(cpu.epa(&mut lp, 3, last + 4096), Err(Exception::epcm_pf(last + 4096, true)));
}

/// Resident memory of this process in bytes, where `/proc` tells it.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE as u64)
}

#[test]
fn enclaves_of_1_tib_and_of_the_maximum_size_cost_only_the_pages_added() {
    use std::time::{Duration, Instant};

    // ELRANGE is address space, not memory: ECREATE and EADD at both ends of a 1 TiB enclave
    // and of a 2^56-byte one (the default part's maximum, where anything per page of ELRANGE
    // could not even be allocated) stay fast and small.
    let resident_before = resident_bytes();
    let started = Instant::now();
    for (base, size) in [(1u64 << 40, 1u64 << 40), (0, 1 << sgxemu_cpu::DEFAULT_MAX_ENCLAVE_SIZE_64_LOG2)] {
        let mut h = Harness::new();
        let secs = h.ecreate(&secs_image(base, size)).expect("ECREATE");
        let rw = (SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg);
        for la in [base, base + size - PAGE_SIZE as u64] {
            let page = h.eadd(secs, la, rw, &[0x5A; PAGE_SIZE]).expect("EADD");
            h.eextend_page(secs, page).expect("EEXTEND");
            assert_eq!(h.cpu.epcm_view(h.cpu.epc_index(page).unwrap()).enclave_address, la);
        }
        assert!(h.cpu.mrenclave_so_far(secs).is_some());
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    if let (Some(before), Some(after)) = (resident_before, resident_bytes()) {
        let grown = after.saturating_sub(before);
        assert!(grown < 64 << 20, "resident memory grew by {grown} bytes");
    }
}
