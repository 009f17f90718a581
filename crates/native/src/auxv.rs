//! The auxiliary vector as the emulated platform shows it: AT_SYSINFO_EHDR names the
//! synthetic vDSO (`crate::vdso`) wherever a program looks for it.
//!
//! - `getauxval(AT_SYSINFO_EHDR)`: interposed by the preload library.
//! - The initial stack's vector, which follows `envp`'s terminating NULL (what the `vdso`
//!   crate, Go's runtime and static C runtimes walk; glibc's own `getauxval` reads the same
//!   array through `_dl_auxv`): rewritten in place by [`rewrite_initial`] from the preload's
//!   ELF constructor, before `main`.
//! - `/proc/self/auxv` (the kernel's saved copy, which no rewrite reaches): served by
//!   `devices_fs` with [`with_vdso`]'s edit of the host's bytes.

use libc::c_char;

const WORD: usize = size_of::<u64>();

/// The host's `/proc/self/auxv` bytes with AT_SYSINFO_EHDR's value replaced by `base`
/// (every other pair, the AT_NULL terminator and anything after it kept byte for byte). A
/// vector without AT_SYSINFO_EHDR is returned unchanged: there is no vDSO to replace.
pub fn with_vdso(host: &[u8], base: u64) -> Vec<u8> {
    let mut out = host.to_vec();
    for pair in out.chunks_exact_mut(2 * WORD) {
        let key = u64::from_ne_bytes(pair[..WORD].try_into().unwrap_or_default());
        if key == libc::AT_NULL {
            break;
        }
        if key == libc::AT_SYSINFO_EHDR {
            pair[WORD..].copy_from_slice(&base.to_ne_bytes());
        }
    }
    out
}

/// The value of `key` in a vector's bytes (as `/proc/self/auxv` holds them).
pub fn entry(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(2 * WORD)
        .map(|pair| {
            let k = u64::from_ne_bytes(pair[..WORD].try_into().unwrap_or_default());
            let v = u64::from_ne_bytes(pair[WORD..].try_into().unwrap_or_default());
            (k, v)
        })
        .take_while(|&(k, _)| k != libc::AT_NULL)
        .find(|&(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Sets AT_SYSINFO_EHDR to `base` in the auxiliary vector that follows `envp` on the
/// initial stack. Returns the value it replaced; `None` (nothing written) when `envp` is
/// null or the vector has no AT_SYSINFO_EHDR, or when the pair found does not hold
/// `expected` (the C library's view of the vector: a mismatch means `envp` is not the
/// initial stack's, and nothing is touched).
///
/// # Safety
/// `envp` is null or the environment array the process started with (the third argument
/// glibc passes to `.init_array` functions): NULL-terminated and followed by the kernel's
/// auxiliary vector, writable stack memory. (The value is written as one aligned word: a
/// concurrent reader sees the old or the new one.)
pub unsafe fn rewrite_initial(envp: *mut *mut c_char, expected: u64, base: u64) -> Option<u64> {
    if envp.is_null() {
        return None;
    }
    let mut p = envp;
    // SAFETY: the environment array is NULL-terminated (contract).
    unsafe {
        while !(*p).is_null() {
            p = p.add(1);
        }
    }
    // SAFETY: the auxiliary vector follows the terminator: (key, value) word pairs up to
    // AT_NULL (contract).
    let mut pair = unsafe { p.add(1) }.cast::<u64>();
    loop {
        // SAFETY: `pair` is within the vector (it ends with AT_NULL, checked before moving on).
        let key = unsafe { pair.read() };
        if key == libc::AT_NULL {
            return None;
        }
        if key == libc::AT_SYSINFO_EHDR {
            // SAFETY: the value word of this pair, writable stack memory (contract).
            return unsafe {
                let value = pair.add(1);
                let old = value.read();
                if old != expected {
                    return None;
                }
                value.write_volatile(base);
                Some(old)
            };
        }
        // SAFETY: not AT_NULL, so another pair follows.
        pair = unsafe { pair.add(2) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs.iter().flat_map(|&(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()]).flatten().collect()
    }

    #[test]
    fn only_at_sysinfo_ehdr_changes_in_the_file_s_bytes() {
        let host = vector(&[(libc::AT_PAGESZ, 4096), (libc::AT_SYSINFO_EHDR, 0x7fff_0000), (libc::AT_NULL, 0)]);
        let edited = with_vdso(&host, 0x1234_5000);
        assert_eq!(
            edited,
            vector(&[(libc::AT_PAGESZ, 4096), (libc::AT_SYSINFO_EHDR, 0x1234_5000), (libc::AT_NULL, 0)])
        );
        assert_eq!(entry(&edited, libc::AT_SYSINFO_EHDR), Some(0x1234_5000));
        assert_eq!(entry(&edited, libc::AT_PAGESZ), Some(4096));
        // After AT_NULL nothing is a pair; without AT_SYSINFO_EHDR nothing changes.
        let tail = vector(&[(libc::AT_NULL, 0), (libc::AT_SYSINFO_EHDR, 1)]);
        assert_eq!(with_vdso(&tail, 5), tail);
        assert_eq!(entry(&tail, libc::AT_SYSINFO_EHDR), None);
        // A truncated last pair is kept as it is.
        let mut odd = host.clone();
        odd.truncate(host.len() - 3);
        assert_eq!(with_vdso(&odd, 9).len(), odd.len());
    }

    #[test]
    fn the_initial_vector_after_envp_is_rewritten_in_place() {
        // envp: two strings and NULL, then the vector, as the kernel lays out the stack.
        let mut stack: Vec<u64> = vec![0x1000, 0x2000, 0, libc::AT_PAGESZ, 4096, libc::AT_SYSINFO_EHDR, 0x7000, 0, 0];
        let envp = stack.as_mut_ptr().cast::<*mut c_char>();
        // SAFETY: `stack` is laid out as the contract asks, and is ours.
        assert_eq!(unsafe { rewrite_initial(envp, 0x6000, 0x9000) }, None, "a mismatch writes nothing");
        assert_eq!(stack[6], 0x7000);
        let envp = stack.as_mut_ptr().cast::<*mut c_char>();
        // SAFETY: as above.
        assert_eq!(unsafe { rewrite_initial(envp, 0x7000, 0x9000) }, Some(0x7000));
        assert_eq!(stack, vec![0x1000, 0x2000, 0, libc::AT_PAGESZ, 4096, libc::AT_SYSINFO_EHDR, 0x9000, 0, 0]);
        let mut none: Vec<u64> = vec![0, libc::AT_PAGESZ, 4096, 0, 0];
        // SAFETY: as above.
        assert_eq!(unsafe { rewrite_initial(none.as_mut_ptr().cast(), 0, 1) }, None);
        // SAFETY: null is allowed.
        assert_eq!(unsafe { rewrite_initial(std::ptr::null_mut(), 0, 1) }, None);
    }
}
