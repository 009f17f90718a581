//! The enclave library on the in-process emulator, operation by operation: loading (and
//! EINIT refusing a SIGSTRUCT for another enclave), entering with exceptions and user
//! handlers as Rust values, each EDMM ioctl with its typed errors, and the flows.
//! (`sgxemu demo`'s tests run the whole lifecycle through both device kinds.)

use std::sync::{Mutex, MutexGuard, OnceLock};

use sgxemu_arch::{PAGE_SIZE, PageType, SecinfoFlags as F};
use sgxemu_crypto::SigningKey;
use sgxemu_enclave::{
    Device, EdmmOp, Enclave, EnclaveImage, EnterError, FlowError, ImageError, ImagePage, Layout, LoadError, Next,
    PageData, Registers, SigstructFields, image_from_elf,
};
use sgxemu_samples::host::SampleEnclave;
use sgxemu_samples::{ATTEST_ELF, Call, DEMO_ELF, PING_MAGIC, RELOC_ELF, RELOC_RELR_ELF, op};

const PAGE: u64 = PAGE_SIZE as u64;

/// One emulated platform per process; enclaves of these tests run one test at a time.
fn setup() -> (MutexGuard<'static, ()>, Device, &'static SigningKey) {
    static LOCK: Mutex<()> = Mutex::new(());
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::emulated().expect("the in-process emulator starts");
    let key =
        KEY.get_or_init(|| SigningKey::generate(&mut getrandom::rand_core::UnwrapErr(getrandom::SysRng)).unwrap());
    (guard, device, key)
}

fn layout() -> Layout {
    Layout { dynamic_pages: 64, ..Layout::default() }
}

fn load(device: &Device, key: &SigningKey) -> SampleEnclave {
    SampleEnclave::load(device, DEMO_ELF, &layout(), key, &mut |_| {}).expect("the demo enclave loads")
}

#[test]
fn loading_reports_progress_and_einit_refuses_another_enclave_s_sigstruct() {
    let (_guard, device, key) = setup();
    let image = image_from_elf(DEMO_ELF, &layout()).unwrap();
    let mut reports = Vec::new();
    let sig = sgxemu_enclave::sign_image(&image, &SigstructFields::for_image(&image), key).unwrap();
    let enclave = Enclave::load(&device, &image, &sig, &mut |p| reports.push(p)).unwrap();
    assert_eq!(
        reports.last().map(|p| (p.pages_added, p.pages_total)),
        Some((image.page_count() as usize, image.page_count() as usize))
    );
    assert_eq!(enclave.tcs().len(), 2);
    assert!(enclave.base().is_multiple_of(enclave.size()), "ELRANGE is naturally aligned");
    drop(enclave);

    let attest = image_from_elf(ATTEST_ELF, &Layout::default()).unwrap();
    match Enclave::load(&device, &attest, &sig, &mut |_| {}) {
        Err(LoadError::Init) => {}
        other => panic!("expected EINIT to refuse, got {other:?}"),
    }
    let mut bad = image.clone();
    bad.size = 3 << 20;
    assert!(matches!(Enclave::load(&device, &bad, &sig, &mut |_| {}), Err(LoadError::Image(_))));
}

/// An image of `pages` measured pages with distinct contents, whose permissions change
/// every 100 pages (so that it loads in many ADD_PAGES runs); no code, never entered.
fn many_run_image(pages: u64) -> EnclaveImage {
    let pages: Vec<ImagePage> = (0..pages)
        .map(|i| {
            let perms = if (i / 100) % 2 == 0 { F::R | F::W } else { F::R };
            let mut data = Box::new([0u8; PAGE_SIZE]);
            for (k, word) in data.chunks_exact_mut(8).enumerate() {
                word.copy_from_slice(&(i << 32 | k as u64).to_le_bytes());
            }
            ImagePage {
                offset: i * PAGE,
                flags: perms.with_page_type(PageType::Reg),
                data: PageData::Bytes(data),
                measured: true,
                count: 1,
            }
        })
        .collect();
    EnclaveImage::of_pages(pages)
}

#[test]
fn a_large_image_is_staged_ahead_in_order_and_a_failing_run_stops_its_load() {
    let (_guard, device, key) = setup();
    // Sixteen runs: staged by the helper thread. EINIT passing means every page reached the
    // EPC with its own contents, in order (MRENCLAVE equals the offline one).
    let image = many_run_image(1600);
    let sig = sgxemu_enclave::sign_image(&image, &SigstructFields::for_image(&image), key).unwrap();
    let mut reports = Vec::new();
    let enclave = Enclave::load(&device, &image, &sig, &mut |p| reports.push(p.pages_added)).expect("the image loads");
    let expected: Vec<usize> = (1..=16).map(|run| run * 100).collect();
    assert_eq!(reports, expected, "one report per run, in order");
    drop(enclave);
    // A run that ADD_PAGES refuses (a TCS whose reserved bytes are not zero: EADD #GP, EIO)
    // ends the load with its offset, however far ahead the staging has gone.
    let mut bad = image.clone();
    let tcs = &mut bad.pages[1234];
    tcs.flags = F::empty().with_page_type(PageType::Tcs);
    let offset = tcs.offset;
    match Enclave::load(&device, &bad, &sig, &mut |_| {}) {
        Err(LoadError::AddPages { offset: at, added: 0, errno }) => {
            assert_eq!((at, errno.0), (offset, libc::EIO));
        }
        other => panic!("expected ADD_PAGES to fail at {offset:#x}, got {other:?}"),
    }
    // A small image takes the sequential path, with the same results.
    let small = many_run_image(300);
    let sig = sgxemu_enclave::sign_image(&small, &SigstructFields::for_image(&small), key).unwrap();
    Enclave::load(&device, &small, &sig, &mut |_| {}).expect("the small image loads");
}

#[test]
fn exceptions_and_user_handlers_are_rust_values() {
    let (_guard, device, key) = setup();
    let e = load(&device, key);
    let tcs = e.enclave.tcs()[0];
    match e.call(tcs, op::UD2, [0; 6]) {
        Err(EnterError::Exception(x)) => assert_eq!((x.vector, x.leaf), (6, sgxemu_uapi::ERESUME)),
        other => panic!("expected #UD, got {other:?}"),
    }
    // The other thread still works; the faulted one only enters its handler (CSSA = 1),
    // which EEXITs at once without running the call.
    let other = e.enclave.tcs()[1];
    assert_eq!(e.call(other, op::PING, [0; 6]).unwrap()[..2], [PING_MAGIC, other]);
    let mut call = Call::new(op::PING, [0; 6]);
    e.enclave.enter(tcs, Registers { rdi: &raw mut call as u64, ..Registers::default() }).unwrap();
    assert_eq!(call.ret, [0; 4], "the handler entry did not run the call");

    // A user handler sees the EEXIT with the enclave's registers and chooses the result.
    let mut call = Call::new(op::PING, [0; 6]);
    let mut exits = Vec::new();
    let outcome = e.enclave.enter_with_handler(
        other,
        Registers { rdi: &raw mut call as u64, ..Registers::default() },
        &mut |x| {
            exits.push((x.function, x.exception));
            Next::Return(-libc::EINTR)
        },
    );
    assert_eq!(outcome, Err(EnterError::Vdso(sgxemu_enclave::Errno(libc::EINTR))));
    assert_eq!(exits, [(sgxemu_uapi::EEXIT, None)]);
    assert_eq!(call.ret[0], PING_MAGIC);

    // A page fault names its address and error code: executing the heap, mapped RW, fails
    // the page-table check before the EPCM is consulted (no SGX bit; I|U, no PTE yet).
    let heap = e.addr(e.image.dynamic_start - PAGE);
    match e.call(other, op::EXEC, [heap, 0, 0, 0, 0, 0]) {
        Err(EnterError::Exception(x)) => {
            assert_eq!((x.vector, x.address, x.error_code), (14, heap, 0x14));
            assert!(!x.is_epcm_fault(), "{x}");
            assert!(x.to_string().contains("#PF page fault"), "{x}");
        }
        other => panic!("expected #PF, got {other:?}"),
    }
    // A TCS address that is not a TCS is refused.
    assert!(matches!(e.call(heap, op::PING, [0; 6]), Err(EnterError::Exception(_))));
}

#[test]
fn edmm_ioctls_report_typed_errors_with_progress() {
    let (_guard, device, key) = setup();
    let mut e = load(&device, key);
    let tcs = e.enclave.tcs()[0];
    let dynamic = e.image.dynamic_start;
    let heap = dynamic - 4 * PAGE..dynamic;

    // REMOVE_PAGES of pages that were never trimmed: EPERM at the first page.
    let err = e.enclave.remove_pages(heap.clone()).unwrap_err();
    assert_eq!(
        (err.op, err.errno, err.done, err.offset),
        (EdmmOp::RemovePages, sgxemu_enclave::Errno(libc::EPERM), 0, heap.start)
    );
    assert!(err.to_string().contains("SGX_IOC_ENCLAVE_REMOVE_PAGES failed at offset"), "{err}");
    // RESTRICT_PERMISSIONS on a TCS: EINVAL.
    let tcs_offset = tcs - e.enclave.base();
    let err = e.enclave.restrict_permissions(tcs_offset..tcs_offset + PAGE, F::R).unwrap_err();
    assert_eq!(err.errno, sgxemu_enclave::Errno(libc::EINVAL));
    // MODIFY_TYPES over a hole after two good pages: partial progress, then EFAULT.
    let err = e.enclave.modify_types(dynamic - 2 * PAGE..dynamic + PAGE, PageType::Trim).unwrap_err();
    assert_eq!((err.done, err.errno), (2 * PAGE, sgxemu_enclave::Errno(libc::EFAULT)));
    // A second EMODT on those trimmed pages fails in the processor: its SGX code is kept.
    let err = e.enclave.modify_types(dynamic - 2 * PAGE..dynamic, PageType::Trim).unwrap_err();
    assert!(
        err.errno == sgxemu_enclave::Errno(libc::EFAULT) || err.errno == sgxemu_enclave::Errno(libc::EINVAL),
        "{err}"
    );
    // An empty or inverted range is the driver's EINVAL, not a panic.
    #[allow(clippy::reversed_empty_ranges, reason = "the point of the test")]
    let inverted = 2 * PAGE..PAGE;
    assert_eq!(e.enclave.remove_pages(inverted).unwrap_err().errno, sgxemu_enclave::Errno(libc::EINVAL));
    assert_eq!(
        e.enclave.modify_types(PAGE..PAGE, PageType::Trim).unwrap_err().errno,
        sgxemu_enclave::Errno(libc::EINVAL)
    );
    // Ranges outside ELRANGE or unaligned never reach the driver.
    let size = e.enclave.size();
    let mut accept = e.acceptor(tcs);
    assert!(matches!(e.enclave.grow(size..size + PAGE, &mut accept), Err(FlowError::Range { .. })));
    assert!(matches!(e.enclave.trim(1..PAGE, &mut accept), Err(FlowError::Range { .. })));
    // The enclave refusing to accept is the flow's error: accepting an already added page.
    match e.enclave.grow(heap.clone(), &mut accept) {
        Err(FlowError::Accept { reason, .. }) => assert!(reason.contains("SGX error"), "{reason}"),
        other => panic!("expected the EACCEPT to fail, got {other:?}"),
    }
}

#[test]
fn the_edmm_flows_grow_restrict_add_a_thread_and_trim() {
    let (_guard, device, key) = setup();
    let mut e = load(&device, key);
    let tcs = e.enclave.tcs()[0];
    let dynamic = e.image.dynamic_start;
    let grown = dynamic..dynamic + 16 * PAGE;
    e.enclave.grow(grown.clone(), &mut e.acceptor(tcs)).unwrap();
    let (addr, len) = (e.addr(grown.start), grown.end - grown.start);
    e.call(tcs, op::FILL, [addr, len, 5, 0, 0, 0]).unwrap();
    assert_eq!(e.call(tcs, op::CHECK, [addr, len, 5, 0, 0, 0]).unwrap()[0], 0);

    // Read-only after RESTRICT + EACCEPT(PR): a write faults with the EPCM bit.
    e.enclave.restrict(grown.start..grown.start + PAGE, F::R, &mut e.acceptor(tcs)).unwrap();
    match e.call(tcs, op::WRITE, [addr, 1, 0, 0, 0, 0]) {
        Err(EnterError::Exception(x)) => assert!(x.is_epcm_fault() && x.error_code & 2 != 0, "{x}"),
        other => panic!("expected a write fault, got {other:?}"),
    }

    // A thread made of grown pages: its TCS written by the enclave, then REG → TCS.
    let other = e.enclave.tcs()[1];
    let block = grown.start + 4 * PAGE;
    let tcs_page = sgxemu_enclave::layout::thread_tcs(block + PAGE, 1, e.image.entry().expect("an entry point"));
    let bytes = zerocopy::IntoBytes::as_bytes(&tcs_page);
    e.call(other, op::COPY_IN, [e.addr(block + PAGE), bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0]).unwrap();
    let new = e.enclave.add_thread(block + PAGE, &mut e.acceptor(other)).unwrap();
    assert_eq!(e.enclave.tcs().len(), 3);
    assert_eq!(e.call(new, op::PING, [0; 6]).unwrap()[..2], [PING_MAGIC, new]);

    // Trim everything grown, including the new TCS: the thread is gone, the pages too.
    e.enclave.trim(grown.clone(), &mut e.acceptor(other)).unwrap();
    assert_eq!(e.enclave.tcs().len(), 2);
    assert!(
        matches!(e.call(new, op::PING, [0; 6]), Err(EnterError::Exception(_))),
        "the removed TCS cannot be entered"
    );
}

#[test]
fn local_attestation_verifies_for_the_target_only() {
    let (_guard, device, key) = setup();
    let demo = load(&device, key);
    let attest = SampleEnclave::load(&device, ATTEST_ELF, &Layout::default(), key, &mut |_| {}).unwrap();
    let (demo_tcs, attest_tcs) = (demo.enclave.tcs()[0], attest.enclave.tcs()[0]);
    let target = demo.targetinfo(demo_tcs).unwrap();
    assert_eq!(target.measurement, demo.image.mrenclave());
    let report = attest.report(attest_tcs, &target, &[7; 64]).unwrap();
    assert_eq!((report.mrenclave, report.reportdata), (attest.image.mrenclave(), [7; 64]));
    assert!(demo.verify(demo_tcs, &report).unwrap(), "the target enclave verifies the MAC");
    assert!(!attest.verify(attest_tcs, &report).unwrap(), "another enclave's report key differs");
    let mut tampered = report;
    tampered.reportdata[0] ^= 1;
    assert!(!demo.verify(demo_tcs, &tampered).unwrap(), "a changed body fails the MAC");
}

#[test]
fn an_sgxs_image_loads_like_its_elf() {
    let (_guard, device, key) = setup();
    let image = image_from_elf(DEMO_ELF, &layout()).unwrap();
    let mut sgxs = Vec::new();
    sgxemu_enclave::write_sgxs(&image, &mut sgxs).unwrap();
    let from_sgxs = sgxemu_enclave::read_sgxs(&sgxs).unwrap().image;
    assert_eq!(from_sgxs.mrenclave(), image.mrenclave());
    // The ELF's SIGSTRUCT initialises the enclave loaded from the SGXS file.
    let sig = sgxemu_enclave::sign_image(&image, &SigstructFields::for_image(&image), key).unwrap();
    assert_eq!(sgxemu_enclave::verify_for_image(&sig, &from_sgxs), Ok(key.mrsigner()));
    let enclave = Enclave::load(&device, &from_sgxs, &sig, &mut |_| {}).unwrap();
    let tcs = enclave.tcs()[1];
    let mut call = Call::new(op::PING, [0; 6]);
    enclave.enter(tcs, Registers { rdi: &raw mut call as u64, ..Registers::default() }).unwrap();
    assert_eq!(call.ret[..2], [PING_MAGIC, tcs]);
}

#[test]
fn page_table_permissions_come_through_enclave_protect() {
    let (_guard, device, key) = setup();
    let e = load(&device, key);
    let other = e.enclave.tcs()[1];
    // The page-table half of permissions: a read-only mapping makes a write an ordinary
    // #PF (no EPCM bit), and the enclave's own data is untouched.
    let data = e.image.dynamic_start - 2 * PAGE;
    e.enclave.protect(data..data + PAGE, libc::PROT_READ).unwrap();
    match e.call(other, op::WRITE, [e.addr(data), 7, 0, 0, 0, 0]) {
        Err(EnterError::Exception(x)) => assert!(x.vector == 14 && !x.is_epcm_fault() && x.error_code & 2 != 0, "{x}"),
        other => panic!("expected a write fault, got {other:?}"),
    }
    assert_eq!(e.enclave.protect(data..data + 3, libc::PROT_READ), Err(sgxemu_enclave::Errno(libc::EINVAL)));
}

#[test]
fn self_relocating_enclaves_relocate_themselves_wherever_they_load() {
    let (_guard, device, key) = setup();
    let layout = Layout { self_relocating: true, ..Layout::default() };
    for (name, elf) in [("RELA", RELOC_ELF), ("RELR", RELOC_RELR_ELF)] {
        // Refused unless declared self-relocating: the loader never relocates.
        assert!(
            matches!(image_from_elf(elf, &Layout::default()), Err(ImageError::Relocations { .. })),
            "{name}: loaded as linked only when declared"
        );
        let image = image_from_elf(elf, &layout).unwrap();
        // Where "relocate" lies in the image, found independently of the enclave.
        let word_offset = image
            .pages
            .iter()
            .find_map(|p| {
                let bytes = p.data.bytes();
                bytes.windows(9).position(|w| w == b"relocate\0").map(|at| p.offset + at as u64)
            })
            .expect("the first word is in the image");
        // Two instances at two bases: the same measured pages relocate to each.
        let first = SampleEnclave::load(&device, elf, &layout, key, &mut |_| {}).unwrap();
        let second = SampleEnclave::load(&device, elf, &layout, key, &mut |_| {}).unwrap();
        assert_ne!(first.enclave.base(), second.enclave.base());
        for enclave in [&first, &second] {
            // Two threads race through the first entry; the enclave relocates itself once.
            let results: Vec<[u64; 4]> = std::thread::scope(|scope| {
                let calls: Vec<_> = enclave
                    .enclave
                    .tcs()
                    .iter()
                    .map(|&tcs| scope.spawn(move || enclave.call(tcs, op::RELOCATED, [1, 7, 2, 0, 0, 0]).unwrap()))
                    .collect();
                calls.into_iter().map(|c| c.join().unwrap()).collect()
            });
            for ret in results {
                assert_eq!(ret[0], 49, "{name}: squared(7) through the relocated function table");
                assert_eq!(ret[1], u64::from_le_bytes(*b"enclave!"), "{name}: a word through a relocated pointer");
                assert_eq!(ret[2], 6, "{name}: six pointers, relocated once");
                assert_eq!(ret[3], word_offset, "{name}: pointer = load address + link-time address");
            }
            assert_eq!(enclave.call(enclave.enclave.tcs()[0], op::PING, [0; 6]).unwrap()[0], PING_MAGIC);
        }
    }
}
