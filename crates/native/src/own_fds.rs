//! The emulator's own descriptors (the EPC memfd) kept out of the program's descriptor
//! table as far as the program can tell, as the kernel's are: the EPC of an SGX machine is
//! no file of the program, so nothing the program does with descriptor numbers can close
//! it, replace it or map it.
//!
//! The model: the program's table does not contain them. So
//! - they live far from the low numbers a program's `open` gets (a memfd made at start
//!   would otherwise take descriptor 3, where the program's first `open` expects to land),
//!   just under `min(RLIMIT_NOFILE, 4096)`, close-on-exec;
//! - `close` of one fails with EBADF, as for a number the program never opened;
//!   `close_range` and `closefrom` close the program's descriptors around them;
//! - `dup`, `fcntl` and `mmap` naming one fail with EBADF;
//! - `dup2`/`dup3` onto one succeed for the program: the emulator's descriptor moves to
//!   another free number first (under the space lock, so no EPC mapping is made from the
//!   old number after it is the program's), and the program gets the number it asked for.
//!
//! The interposers and the seccomp handler call these for the C-library and raw paths
//! alike. Not covered: other calls naming the number (`read`, `write`, `fstat`, `ioctl`,
//! `/proc/self/fd` listings) still reach it.

use std::io;

use libc::{c_int, c_long, c_uint};

use crate::engine::Engine;

/// The highest descriptor numbers used: the emulator's sit in the top sixteenth below
/// `min(RLIMIT_NOFILE soft limit, this)` (a table of millions of slots, as containers'
/// limits allow, would cost the kernel megabytes per process and per fork).
const CEILING: u64 = 4096;

/// Where the emulator's descriptors start: the top sixteenth below the ceiling.
fn floor() -> c_int {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
    let top = soft.min(CEILING);
    (top - top / 16).max(3) as c_int
}

/// Moves `fd` (close-on-exec) to the lowest free number from `floor()` up and closes the
/// old one. Returns the new number; on failure `fd` stays as it was.
pub fn move_high(fd: c_int) -> io::Result<c_int> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor the caller owns; the system call
    // itself, not the C library's `fcntl`, which the preload interposes.
    let new =
        unsafe { libc::syscall(libc::SYS_fcntl, fd as c_long, libc::F_DUPFD_CLOEXEC as c_long, floor() as c_long) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = crate::sys::close(fd);
    Ok(new as c_int)
}

/// Whether `fd` is one of the emulator's descriptors in this process.
pub fn is_own(fd: c_int) -> bool {
    fd >= 0 && Engine::get().is_some_and(|e| e.epc.fd() == fd && e.pid == crate::sys::getpid())
}

/// A call that names `fd` as a descriptor to use (`dup`, `fcntl`, `mmap`, `close`): EBADF
/// for the emulator's, as for any number not in the program's table.
pub fn check_named(fd: c_int) -> Result<(), c_int> {
    if is_own(fd) { Err(libc::EBADF) } else { Ok(()) }
}

/// Before `dup2`/`dup3` make `new` a copy of `old`: EBADF if `old` is the emulator's;
/// if `new` is, the emulator's descriptor moves elsewhere (EBUSY, which `dup2` documents,
/// if no number is free).
pub fn before_dup_onto(old: c_int, new: c_int) -> Result<(), c_int> {
    check_named(old)?;
    if is_own(new)
        && let Some(engine) = Engine::get()
    {
        engine.space.move_epc_fd().map_err(|_| libc::EBUSY)?;
    }
    Ok(())
}

/// The emulator's descriptors in `[first, last]`, ascending.
fn own_in(first: c_uint, last: c_uint) -> Vec<c_uint> {
    let mut own: Vec<c_uint> = Engine::get()
        .filter(|e| e.pid == crate::sys::getpid())
        .map(|e| e.epc.fd())
        .filter(|&fd| fd >= 0)
        .map(|fd| fd as c_uint)
        .filter(|fd| (first..=last).contains(fd))
        .into_iter()
        .collect();
    own.sort_unstable();
    own
}

/// The sub-ranges of `[first, last]` that hold none of `own` (ascending, inside the range).
fn around(first: c_uint, last: c_uint, own: &[c_uint]) -> Vec<(c_uint, c_uint)> {
    let mut pieces = Vec::new();
    let mut from = Some(first);
    for &fd in own {
        if let Some(start) = from
            && fd > start
        {
            pieces.push((start, fd - 1));
        }
        from = fd.checked_add(1);
    }
    if let Some(start) = from
        && start <= last
    {
        pieces.push((start, last));
    }
    pieces
}

/// `close_range(first, last, flags)` over the program's descriptors only: the kernel's
/// call on each piece of the range between the emulator's descriptors, and the devices
/// among the closed ones forgotten. Returns what the system call returns (0 or -errno).
pub fn close_range(first: c_uint, last: c_uint, flags: c_uint) -> c_long {
    if first > last {
        return -c_long::from(libc::EINVAL);
    }
    let closes = flags & libc::CLOSE_RANGE_CLOEXEC == 0;
    if closes {
        crate::devices_fs::closing_range(first, last);
    }
    for (from, to) in around(first, last, &own_in(first, last)) {
        // SAFETY: close_range on descriptors of the program, which asked for it.
        let r =
            unsafe { libc::syscall(libc::SYS_close_range, c_long::from(from), c_long::from(to), c_long::from(flags)) };
        if r < 0 {
            return -c_long::from(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_cut_around_the_emulator_s_descriptors() {
        assert_eq!(around(3, c_uint::MAX, &[]), vec![(3, c_uint::MAX)]);
        assert_eq!(around(3, c_uint::MAX, &[1000]), vec![(3, 999), (1001, c_uint::MAX)]);
        assert_eq!(around(1000, 1000, &[1000]), vec![]);
        assert_eq!(around(1000, 2000, &[1000]), vec![(1001, 2000)]);
        assert_eq!(around(3, 1000, &[1000]), vec![(3, 999)]);
        assert_eq!(around(3, 1001, &[1000]), vec![(3, 999), (1001, 1001)]);
        assert_eq!(around(0, c_uint::MAX, &[c_uint::MAX]), vec![(0, c_uint::MAX - 1)]);
    }

    #[test]
    fn the_floor_is_far_from_the_low_numbers_and_under_the_limit() {
        let floor = floor();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert!((floor as u64) < limit.rlim_cur.min(CEILING));
        if limit.rlim_cur >= 1024 {
            assert!(floor >= 960, "{floor}");
        }
    }
}
