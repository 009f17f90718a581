//! The cost of the seccomp filter (`sgxemu_native::seccomp`) to an ordinary program's
//! system calls. Each figure is printed next to a floor measured in the same run, in the
//! same process before the filter was installed, and as a ratio to it:
//!
//! - `getppid()` through the C library (a number the filter does not trap: the architecture
//!   check and the binary search only);
//! - a 1-byte `read` of `/dev/zero` through the C library (likewise);
//! - `close(-1)` through the C library (a trapped number from exempt code: the code-address
//!   comparison too);
//! - and, for scale, `close(-1)` from covered code, trapped and carried out by the handler,
//!   against the floor's `close(-1)`.
//!
//! `cargo bench -p sgxemu-native --bench seccomp [-- --quick]`

use std::time::{Duration, Instant};

fn per_op(n: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed() / n as u32
}

/// The best of `rounds` measurements (the floor and the figure alike).
fn best(rounds: u32, n: u64, mut op: impl FnMut()) -> Duration {
    (0..rounds).map(|_| per_op(n, &mut op)).min().unwrap_or_default()
}

fn getppid() {
    // SAFETY: no arguments.
    std::hint::black_box(unsafe { libc::getppid() });
}

fn close_bad() {
    // SAFETY: closing an invalid descriptor fails harmlessly.
    std::hint::black_box(unsafe { libc::close(-1) });
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, n) = if quick { (3, 20_000) } else { (7, 200_000) };
    // SAFETY: opens /dev/zero read-only.
    let zero = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY) };
    assert!(zero >= 0, "/dev/zero");
    let mut byte = [0u8; 1];
    let mut read_zero = || {
        // SAFETY: reads one byte into `byte`.
        std::hint::black_box(unsafe { libc::read(zero, byte.as_mut_ptr().cast(), 1) });
    };

    // A stub of covered code: `mov rax, rdi; mov rdi, rsi; syscall; ret`, in a page of its own.
    const STUB: [u8; 9] = [0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x0f, 0x05, 0xc3];
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh anonymous page.
    let page = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: the page is ours and writable; then made executable.
    unsafe {
        std::ptr::copy_nonoverlapping(STUB.as_ptr(), page.cast::<u8>(), STUB.len());
        libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC);
    }
    // SAFETY: the stub follows the C calling convention for (number, argument) -> result.
    let stub: extern "C" fn(i64, i64) -> i64 = unsafe { std::mem::transmute(page) };

    let floor = [best(rounds, n, getppid), best(rounds, n, &mut read_zero), best(rounds, n, close_bad)];
    let raw_floor = best(rounds, n / 20, || {
        std::hint::black_box(stub(libc::SYS_close, -1));
    });

    // The filter as a program gets it: this process's ranges (its own code is exempt here,
    // being the emulator's object), the stub's page, and one more range as a library's.
    sgxemu_native::signals::install();
    let mut ranges = sgxemu_native::seccomp::trapped_ranges();
    ranges.push((page as u64, page as u64 + 4096));
    ranges.push((0x1000_0000, 0x1100_0000));
    let instructions = sgxemu_native::seccomp::filter(&ranges).map_or(0, |f| f.len());
    sgxemu_native::seccomp::install_ranges(&ranges).expect("the filter installs");
    assert_eq!(stub(libc::SYS_close, -1), -i64::from(libc::EBADF), "the trapped close is carried out");

    let filtered = [best(rounds, n, getppid), best(rounds, n, &mut read_zero), best(rounds, n, close_bad)];
    let trapped = best(rounds, n / 20, || {
        std::hint::black_box(stub(libc::SYS_close, -1));
    });

    println!("seccomp filter: {} ranges, {instructions} instructions", ranges.len());
    for (name, f, x) in [
        ("getppid() via libc (not trapped)", floor[0], filtered[0]),
        ("1-byte read of /dev/zero via libc", floor[1], filtered[1]),
        ("close(-1) via libc (trapped number, exempt code)", floor[2], filtered[2]),
        ("close(-1) from covered code (trapped, handled)", raw_floor, trapped),
    ] {
        let ratio = x.as_secs_f64() / f.as_secs_f64();
        println!("{name:<52} {x:>10.1?}  floor {f:>10.1?}  {ratio:.2}x");
    }
}
