//! The emulator's EPC descriptor against a program that closes every descriptor it does not
//! know (`close_range`, as before `exec`) and puts its own file at that number (`dup2`): the
//! calls the interposers and the seccomp handler make (`sgxemu_native::own_fds`) leave the
//! EPC alone, and the enclave keeps working on the EPC's memory. (A test binary of its own:
//! it closes every descriptor from 3 up.)

mod support;

use support::enclave::{DATA, TestEnclave, op};

#[test]
fn closing_every_descriptor_and_dup2_onto_the_epc_s_leave_enclaves_working() {
    let engine = support::enclave::engine();
    let e = TestEnclave::load(1 << 20);
    let epc = engine.epc.fd();
    assert!(epc >= 64, "far from the numbers the program's opens get: {epc}");
    // The program closes everything from 3 up, then reopens its enclave's descriptor.
    assert_eq!(sgxemu_native::own_fds::close_range(3, u32::MAX, 0), 0);
    // SAFETY: F_GETFD only queries.
    assert!(unsafe { libc::fcntl(epc, libc::F_GETFD) } >= 0, "the EPC is still open");
    assert_eq!(sgxemu_native::own_fds::check_named(epc), Err(libc::EBADF), "close, dup, mmap of it: EBADF");
    // Its own file goes exactly where the EPC was.
    // SAFETY: opens a file of the test's own.
    let file = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDWR) };
    assert!(file >= 0);
    assert_eq!(sgxemu_native::own_fds::before_dup_onto(file, epc), Ok(()));
    // SAFETY: the program's dup2, after the check the interposer makes.
    assert_eq!(unsafe { libc::dup2(file, epc) }, epc);
    assert_ne!(engine.epc.fd(), epc, "the EPC moved away");
    assert!(engine.epc.fd() >= 64);
    // The enclave's first touch of its data page maps that EPC page now: from the EPC,
    // not from the program's file at the old number.
    e.call(0, op::WRITE, e.base + DATA, 0x1234_5678, 0, 0);
    let mut through_epc = [0u8; 8];
    assert!(engine.read_mapped(e.base + DATA, &mut through_epc));
    assert_eq!(u64::from_le_bytes(through_epc), 0x1234_5678, "the enclave wrote into its EPC page");
    assert_eq!(e.read(1, e.base + DATA), 0x1234_5678);
}
