//! Driver benchmarks: each flow through the driver on the in-process platform, and the same
//! work done by the bare processor leaves, measured in the same run; the ratio is the
//! driver's overhead (goal ≤ 2×).
//!
//! 1. EAUG on fault + EACCEPT (the enclave EACCEPTs unbacked pages; the fault handler EAUGs);
//! 2. MODIFY_TYPES(TRIM) + EACCEPT + REMOVE_PAGES over a 1 GiB range;
//! 3. a sequential touch of 2× the EPC, every access reloading a page and reclaiming another.
//!
//! Run: `cargo bench -p sgxemu-driver --bench driver` (`-- --quick` for small sizes).

use std::time::{Duration, Instant};

use sgxemu_arch::{ErrorCode, PAGE_SIZE, PageType, SecinfoFlags as F};
use sgxemu_cpu::testkit::{Harness, TestEnclave as BareEnclave, scratch, secs_image};
use sgxemu_cpu::{AexEvent, Exception, Memory, PlatformConfig, Regs, Status};
use sgxemu_driver::os::Prot;
use sgxemu_driver::sim::{Machine, MapKind, SimThread, Step, TestEnclave};
use sgxemu_uapi::{
    EENTER, SGX_IOC_ENCLAVE_MODIFY_TYPES, SGX_IOC_ENCLAVE_REMOVE_PAGES, SgxEnclaveModifyTypes, SgxEnclaveRemovePages,
};
use zerocopy::IntoBytes;

const PAGE: u64 = PAGE_SIZE as u64;
const ARGS: u64 = 0x0030_0000;
const PENDING_RW: u64 = 0x20B;
const TRIM_MODIFIED: u64 = 0x410;

/// A benchmark: `quick -> row`.
type Bench = fn(bool) -> Row;

struct Row {
    name: String,
    driver: f64,
    bare: f64,
}

/// Alternates fresh runs of the two setups and keeps the best time of each: first touches
/// of host memory and a shared machine's noise would otherwise decide the ratio.
fn compare(
    quick: bool,
    mut driver: impl FnMut() -> Duration,
    mut bare: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let rounds = if quick { 1 } else { 3 };
    (0..rounds).fold((Duration::MAX, Duration::MAX), |(d, b), _| (d.min(driver()), b.min(bare())))
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Other arguments select benchmarks by name (cargo bench itself passes `--bench`).
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let benches: [(&str, Bench); 3] = [("eaug", eaug_accept), ("trim", trim_remove), ("touch", touch_twice_the_epc)];
    let rows: Vec<Row> = benches.iter().filter(|(name, _)| wanted(name)).map(|(_, bench)| bench(quick)).collect();
    println!("\n| flow | through the driver | bare processor leaves | driver overhead | goal |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} pages/s | {:.0} pages/s | {:.2}x | <= 2x |",
            r.name,
            r.driver,
            r.bare,
            r.bare / r.driver
        );
    }
}

/// A machine with one loaded test enclave whose ELRANGE has room for `pages` more pages
/// past the image, mapped RW (holes, so every first touch EAUGs).
fn driver_setup(epc: u64, pages: u64) -> (Machine, SimThread, TestEnclave, u64) {
    let m = Machine::with_epc(epc);
    let p = m.process();
    let mut t = m.thread(&p);
    let e = TestEnclave::load_sized(&mut t, PAGE, 0x10_0000 + pages * PAGE).expect("test enclave loads");
    let region = e.base + 0x10_0000;
    p.mmap(region, pages * PAGE, Prot::READ | Prot::WRITE, MapKind::Shared, Some(e.fd)).expect("region maps");
    p.mmap(ARGS, PAGE, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("args map");
    (m, t, e, region)
}

/// One enclave call that EACCEPTs `pages` pages from `region` with `flags`.
fn accept_all(t: &mut SimThread, e: &TestEnclave, region: u64, pages: u64, flags: u64) {
    let mut program = e.eaccept(e.tcs1(), region, flags);
    let (store, exit) = (program.remove(0), program.pop());
    let leaf = program.remove(0);
    let mut steps = vec![store];
    for i in 0..pages {
        if let Step::Enclu { leaf, rbx, rdx, .. } = &leaf {
            steps.push(Step::Enclu { leaf: *leaf, rbx: *rbx, rcx: region + i * PAGE, rdx: *rdx });
        }
    }
    steps.extend(exit);
    let exit = t.enter(e.tcs1(), EENTER, Some(steps));
    assert!(exit.exited(), "{:?}", exit.run);
    assert!(exit.results.iter().all(|&r| r == 0), "every EACCEPT succeeds");
}

/// Bare: an initialized enclave with room for `pages` pages at `region`.
fn bare_setup(pages: u64, epc: u64) -> (Harness, BareEnclave, u64) {
    let mut h = Harness::with_config(PlatformConfig { epc_size: epc, ..PlatformConfig::default() });
    let size = (0x10_0000 + pages * PAGE).next_power_of_two();
    let e = BareEnclave::build_with(&mut h, secs_image(0x10_0000_0000, size));
    (h, e, 0x10_0000_0000 + 0x10_0000)
}

fn bare_eaug(h: &mut Harness, e: &BareEnclave, la: u64) -> u64 {
    let page = h.alloc_page();
    h.put_pageinfo(la, 0, 0, e.secs);
    h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page).expect("EAUG");
    h.map(la, page, true, false);
    page
}

fn bare_accept(h: &mut Harness, e: &BareEnclave, las: impl Iterator<Item = u64>, flags: u64) {
    let secinfo_la = e.base + sgxemu_cpu::testkit::layout::DATA;
    let epc = h.cpu.epc_index(e.pages[&secinfo_la]).expect("data page");
    let mut bytes = [0u8; 64];
    bytes[..8].copy_from_slice(&flags.to_le_bytes());
    h.cpu.write_epc(epc, 0, &bytes);
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, 0x40_1000).expect("EENTER");
    for la in las {
        regs.rbx = secinfo_la;
        regs.rcx = la;
        assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), Ok(Status::Success));
    }
    h.eexit(&mut regs, 0x40_0000).expect("EEXIT");
}

fn eaug_accept(quick: bool) -> Row {
    let pages = if quick { 2048 } else { 16384 };
    let (driver, bare) = compare(
        quick,
        || {
            let (_m, mut t, e, region) = driver_setup(512 << 20, pages);
            timed(|| accept_all(&mut t, &e, region, pages, PENDING_RW))
        },
        || {
            let (mut h, be, bregion) = bare_setup(pages, 512 << 20);
            timed(|| bare_eaug_on_fault(&mut h, &be, bregion, pages))
        },
    );
    Row {
        name: format!("EAUG on fault + EACCEPT ({} MiB)", (pages * PAGE) >> 20),
        driver: rate(pages, driver),
        bare: rate(pages, bare),
    }
}

/// The leaves hardware runs for EAUG on fault: EACCEPT takes a not-present #PF, AEX, the
/// kernel's EAUG, ERESUME, EACCEPT again.
fn bare_eaug_on_fault(h: &mut Harness, e: &BareEnclave, region: u64, pages: u64) {
    let secinfo_la = e.base + sgxemu_cpu::testkit::layout::DATA;
    let epc = h.cpu.epc_index(e.pages[&secinfo_la]).expect("data page");
    let mut bytes = [0u8; 64];
    bytes[..8].copy_from_slice(&PENDING_RW.to_le_bytes());
    h.cpu.write_epc(epc, 0, &bytes);
    let mut regs = Regs::default();
    h.eenter(&mut regs, e.tcs, 0x40_1000).expect("EENTER");
    for i in 0..pages {
        let la = region + i * PAGE;
        regs.rbx = secinfo_la;
        regs.rcx = la;
        let fault = h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt).expect_err("not mapped yet");
        h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(fault)).expect("inside");
        bare_eaug(h, e, la);
        h.eresume(&mut regs, e.tcs, 0x40_1000).expect("ERESUME");
        assert_eq!(h.cpu.eaccept(&mut h.lp, &mut regs, &h.pt), Ok(Status::Success));
    }
    h.eexit(&mut regs, 0x40_0000).expect("EEXIT");
}

fn rate(pages: u64, d: Duration) -> f64 {
    pages as f64 / d.as_secs_f64()
}

fn trim_remove(quick: bool) -> Row {
    let bytes: u64 = if quick { 32 << 20 } else { 1 << 30 };
    let pages = bytes / PAGE;
    let epc = bytes + (64 << 20);
    let driver_run = || {
        let (_m, mut t, e, region) = driver_setup(epc, pages);
        accept_all(&mut t, &e, region, pages, PENDING_RW);
        let p = t.process().clone();
        timed(|| {
            let modify =
                SgxEnclaveModifyTypes { offset: region - e.base, length: bytes, page_type: 4, result: 0, count: 0 };
            p.write_user(ARGS, modify.as_bytes()).expect("args");
            t.ioctl(e.fd, SGX_IOC_ENCLAVE_MODIFY_TYPES, ARGS).expect("MODIFY_TYPES");
            accept_all(&mut t, &e, region, pages, TRIM_MODIFIED);
            let remove = SgxEnclaveRemovePages { offset: region - e.base, length: bytes, count: 0 };
            p.write_user(ARGS, remove.as_bytes()).expect("args");
            t.ioctl(e.fd, SGX_IOC_ENCLAVE_REMOVE_PAGES, ARGS).expect("REMOVE_PAGES");
        })
    };
    let bare_run = || {
        let (mut h, be, bregion) = bare_setup(pages, epc);
        let epcs: Vec<u64> = (0..pages).map(|i| bare_eaug(&mut h, &be, bregion + i * PAGE)).collect();
        bare_accept(&mut h, &be, (0..pages).map(|i| bregion + i * PAGE), PENDING_RW);
        timed(|| {
            h.put_secinfo(F::empty().with_page_type(PageType::Trim));
            for &page in &epcs {
                assert_eq!(h.cpu.emodt(&mut h.lp, &mut h.mem, scratch::SECINFO, page), Ok(Status::Success));
                assert_eq!(h.cpu.etrack(&mut h.lp, be.secs), Ok(Status::Success));
            }
            bare_accept(&mut h, &be, (0..pages).map(|i| bregion + i * PAGE), TRIM_MODIFIED);
            h.put_secinfo(F::R | F::W | F::X);
            for &page in &epcs {
                assert!(h.cpu.emodpr(&mut h.lp, &mut h.mem, scratch::SECINFO, page).is_err(), "accepted TRIM: #PF");
                assert_eq!(h.cpu.eremove(&mut h.lp, page), Ok(Status::Success));
            }
        })
    };
    let (driver, bare) = compare(quick, driver_run, bare_run);
    Row {
        name: format!("MODIFY_TYPES(TRIM) + EACCEPT + REMOVE_PAGES ({} MiB)", bytes >> 20),
        driver: rate(pages, driver),
        bare: rate(pages, bare),
    }
}

fn touch_twice_the_epc(quick: bool) -> Row {
    let epc: u64 = if quick { 4 << 20 } else { 32 << 20 };
    let pages = 2 * epc / PAGE;
    let (_m, mut t, e, region) = driver_setup(epc, pages);
    accept_all(&mut t, &e, region, pages, PENDING_RW);
    // The last pages are resident now, the first ones written out: a sequential pass
    // reloads every page and reclaims as it goes.
    let steps: Vec<Step> = (0..pages)
        .map(|i| Step::Store { addr: region + i * PAGE, data: i.to_le_bytes().to_vec() })
        .chain([Step::Exit])
        .collect();
    let driver = timed(|| assert!(t.enter(e.tcs1(), EENTER, Some(steps)).exited()));
    let bare = bare_touch(epc, pages);
    Row {
        name: format!("sequential touch of 2x EPC ({} MiB EPC)", epc >> 20),
        driver: rate(pages, driver),
        bare: rate(pages, bare),
    }
}

/// The same work on bare leaves: `pages` enclave pages cycling through the EPC slots left
/// after the enclave's own pages; each touch writes the slot's occupant out (EBLOCK, ETRACK
/// every 16, EWB) and loads the touched page (ELDU).
fn bare_touch(epc: u64, pages: u64) -> Duration {
    let (mut h, be, region) = bare_setup(pages, epc);
    let slots = epc / PAGE - 16 - pages.div_ceil(512);
    let vas: Vec<u64> = (0..pages.div_ceil(512)).map(|_| h.alloc_page()).collect();
    for &va in &vas {
        h.cpu.epa(&mut h.lp, 3, va).expect("EPA");
    }
    let slot_epc: Vec<u64> = (0..slots).map(|_| h.alloc_page()).collect();
    let mut occupant: Vec<Option<u64>> = vec![None; slots as usize];
    let mut blobs: Vec<Option<(Vec<u8>, Vec<u8>)>> = vec![None; pages as usize];
    let va_slot = |i: u64| vas[(i / 512) as usize] + (i % 512) * 8;
    let mut since_track = 0;
    let mut evict =
        |h: &mut Harness, slot: usize, occupant: &mut Vec<Option<u64>>, blobs: &mut Vec<Option<(Vec<u8>, Vec<u8>)>>| {
            let Some(victim) = occupant[slot].take() else { return };
            let page = slot_epc[slot];
            assert_eq!(h.cpu.eblock(&mut h.lp, page), Ok(Status::Success));
            if since_track % 16 == 0 {
                assert_eq!(h.cpu.etrack(&mut h.lp, be.secs), Ok(Status::Success));
            }
            since_track += 1;
            h.put_pageinfo(0, scratch::PAGE, scratch::SECINFO, 0);
            let mut result = h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page, va_slot(victim));
            if result == Ok(Status::Error(ErrorCode::NotTracked)) {
                h.cpu.etrack(&mut h.lp, be.secs).expect("ETRACK");
                result = h.cpu.ewb(&mut h.lp, &mut h.mem, scratch::PAGEINFO, page, va_slot(victim));
            }
            assert_eq!(result, Ok(Status::Success));
            let (mut contents, mut pcmd) = (vec![0u8; PAGE_SIZE], vec![0u8; 128]);
            h.mem.read(scratch::PAGE, &mut contents).expect("kernel memory");
            h.mem.read(scratch::SECINFO, &mut pcmd).expect("kernel memory");
            blobs[victim as usize] = Some((contents, pcmd));
        };
    // Setup: every page EAUGed into its slot (evicting the previous occupant), accepted.
    for i in 0..pages {
        let slot = (i % slots) as usize;
        evict(&mut h, slot, &mut occupant, &mut blobs);
        h.put_pageinfo(region + i * PAGE, 0, 0, be.secs);
        h.cpu.eaug(&mut h.lp, &mut h.mem, scratch::PAGEINFO, slot_epc[slot]).expect("EAUG");
        occupant[slot] = Some(i);
    }
    let mut regs = Regs::default();
    h.eenter(&mut regs, be.tcs, 0x40_1000).expect("EENTER");
    let elapsed = timed(|| {
        for i in 0..pages {
            let slot = (i % slots) as usize;
            if occupant[slot] == Some(i) {
                continue;
            }
            // The store faults: AEX, the kernel reclaims and reloads, ERESUME.
            let fault = Exception::Pf {
                addr: region + i * PAGE,
                code: sgxemu_arch::PfErrorCode::U | sgxemu_arch::PfErrorCode::W,
            };
            h.cpu.aex(&mut h.lp, &mut regs, AexEvent::from_exception(fault)).expect("inside");
            evict(&mut h, slot, &mut occupant, &mut blobs);
            let (contents, pcmd) = blobs[i as usize].take().expect("written out");
            h.mem.write(scratch::PAGE, &contents).expect("kernel memory");
            h.mem.write(scratch::SECINFO, &pcmd).expect("kernel memory");
            h.put_pageinfo(region + i * PAGE, scratch::PAGE, scratch::SECINFO, be.secs);
            assert_eq!(
                h.cpu.eldu(&mut h.lp, &mut h.mem, scratch::PAGEINFO, slot_epc[slot], va_slot(i)),
                Ok(Status::Success)
            );
            occupant[slot] = Some(i);
            h.eresume(&mut regs, be.tcs, 0x40_1000).expect("ERESUME");
            h.cpu.write_epc(h.cpu.epc_index(slot_epc[slot]).expect("EPC"), 0, &i.to_le_bytes());
        }
    });
    h.eexit(&mut regs, 0x40_0000).expect("EEXIT");
    elapsed
}
