//! The C library's `dlsym` and `dlvsym`, found without calling either: the preload library
//! interposes both (so that `__vdso_sgx_enter_enclave` is found through the vDSO's handle,
//! as on a host whose vDSO has it), and its own calls of `dlsym` (`crate::real`) reach its
//! interposers, which pass everything else on by a tail jump to these addresses (a jump
//! keeps the caller's return address, by which `RTLD_NEXT` is resolved).
//!
//! They are read from the dynamic symbol table (GNU hash) of the first object after the
//! emulator's own in `dl_iterate_phdr`'s order (load order) that defines them: the C
//! library (glibc 2.34+) or `libdl.so.2` (before). Both of glibc's versions of each
//! (GLIBC_2.2.5, GLIBC_2.34) are one function, so the version is not checked.

use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_int};

use crate::vdso_image::gnu_hash;

/// The C library's `dlsym`, or 0 if no object after ours defines it.
pub fn real_dlsym() -> usize {
    static CACHE: AtomicUsize = AtomicUsize::new(0);
    cached(&CACHE, c"dlsym")
}

/// The C library's `dlvsym`, or 0.
pub fn real_dlvsym() -> usize {
    static CACHE: AtomicUsize = AtomicUsize::new(0);
    cached(&CACHE, c"dlvsym")
}

/// The C library's `syscall`, or 0 (the preload's `syscall` passes on to it by a tail
/// jump; resolved in its constructor, before a signal handler may need it).
pub fn real_syscall() -> usize {
    static CACHE: AtomicUsize = AtomicUsize::new(0);
    cached(&CACHE, c"syscall")
}

fn cached(cache: &AtomicUsize, name: &CStr) -> usize {
    let known = cache.load(Ordering::Acquire);
    if known != 0 {
        return known;
    }
    let found = after_own_object(name);
    cache.store(found, Ordering::Release);
    found
}

/// The search state `dl_iterate_phdr`'s callback keeps.
struct Search<'a> {
    name: &'a CStr,
    own_base: usize,
    past_own: bool,
    found: usize,
}

/// The address of `name` in the first object after the one holding this code.
fn after_own_object(name: &CStr) -> usize {
    // SAFETY: all-zero is a valid Dl_info; dladdr only fills it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the address only.
    if unsafe { libc::dladdr(after_own_object as *const c_void, &mut info) } == 0 {
        return 0;
    }
    let mut search = Search { name, own_base: info.dli_fbase as usize, past_own: false, found: 0 };
    // SAFETY: the callback gets `search` back as its data and only reads the objects
    // dl_iterate_phdr describes (loaded, and kept so while it runs).
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
    search.found
}

unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Search` of `after_own_object`; `info` describes a loaded object.
    let (search, info) = unsafe { (&mut *data.cast::<Search<'_>>(), &*info) };
    let base = info.dlpi_addr as usize;
    if !search.past_own {
        // The object mapped at our base is ours (its first PT_LOAD starts there).
        // SAFETY: the program headers of a loaded object.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let start = phdrs.iter().find(|p| p.p_type == libc::PT_LOAD).map(|p| base.wrapping_add(p.p_vaddr as usize));
        search.past_own = start == Some(search.own_base);
        return 0;
    }
    // SAFETY: as above.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else { return 0 };
    // SAFETY: the object's dynamic section, loaded.
    let found = unsafe { lookup(base, base.wrapping_add(dynamic.p_vaddr as usize), search.name.to_bytes()) };
    if let Some(address) = found {
        search.found = address;
        return 1;
    }
    0
}

/// `name`'s address in the object at `base` whose dynamic section is at `dynamic`, through
/// its GNU hash table.
///
/// # Safety
/// `dynamic` is the dynamic section of an object loaded at `base`.
unsafe fn lookup(base: usize, dynamic: usize, name: &[u8]) -> Option<usize> {
    let (mut symtab, mut strtab, mut gnu) = (0, 0, 0);
    let mut entry = dynamic as *const Dyn;
    loop {
        // SAFETY: the section ends with DT_NULL.
        let (tag, value) = unsafe { ((*entry).tag, (*entry).value as usize) };
        match tag {
            0 => break,
            DT_SYMTAB => symtab = value,
            DT_STRTAB => strtab = value,
            DT_GNU_HASH => gnu = value,
            _ => {}
        }
        // SAFETY: not past DT_NULL.
        entry = unsafe { entry.add(1) };
    }
    if symtab == 0 || strtab == 0 || gnu == 0 {
        return None;
    }
    // The dynamic loader relocates these entries of the objects it loads; an unrelocated
    // one is an offset from the base.
    let absolute = |address: usize| if address < base { base.wrapping_add(address) } else { address };
    let (symtab, strtab, gnu) = (absolute(symtab), absolute(strtab), absolute(gnu));
    let word = |at: usize| {
        // SAFETY: inside the object's GNU hash table (see the callers).
        unsafe { (at as *const u32).read_unaligned() }
    };
    let (buckets_len, first, bloom_len) = (word(gnu), word(gnu + 4), word(gnu + 8));
    if buckets_len == 0 {
        return None;
    }
    let hash = gnu_hash(name);
    let buckets = gnu + 16 + 8 * bloom_len as usize;
    let chains = buckets + 4 * buckets_len as usize;
    let mut index = word(buckets + 4 * (hash % buckets_len) as usize);
    if index == 0 || index < first {
        return None;
    }
    loop {
        let chain = word(chains + 4 * (index - first) as usize);
        if chain | 1 == hash | 1 {
            // SAFETY: symbol `index` of the table the hash chain describes.
            let symbol = unsafe { &*(symtab as *const libc::Elf64_Sym).add(index as usize) };
            // SAFETY: a name in the string table.
            let candidate = unsafe { CStr::from_ptr((strtab + symbol.st_name as usize) as *const c_char) };
            if candidate.to_bytes() == name && symbol.st_shndx != 0 && symbol.st_value != 0 {
                return Some(base.wrapping_add(symbol.st_value as usize));
            }
        }
        if chain & 1 != 0 {
            return None;
        }
        index += 1;
    }
}

/// An `Elf64_Dyn` entry.
#[repr(C)]
struct Dyn {
    tag: i64,
    value: u64,
}

const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;

/// Whether `handle` is the dynamic linker's handle of the vDSO (`dlopen("linux-vdso.so.1",
/// RTLD_NOLOAD)`; the reference that call takes is kept, as the vDSO is never unloaded).
pub fn is_vdso_handle(handle: *mut c_void) -> bool {
    static VDSO: AtomicUsize = AtomicUsize::new(0);
    const NONE: usize = 1;
    let mut known = VDSO.load(Ordering::Acquire);
    if known == 0 {
        // SAFETY: dlopen with a C string; RTLD_NOLOAD loads nothing.
        let found = unsafe { libc::dlopen(c"linux-vdso.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        known = if found.is_null() { NONE } else { found as usize };
        VDSO.store(known, Ordering::Release);
    }
    known != NONE && handle as usize == known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_library_s_dlsym_and_dlvsym_are_found_in_its_symbol_table() {
        // The test executable is the "own object" here: what follows is the C library.
        // SAFETY: dlsym(RTLD_DEFAULT) of a C library function (no interposer in this test).
        let dlsym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"dlsym".as_ptr()) } as usize;
        assert_ne!(real_dlsym(), 0);
        assert_eq!(real_dlsym(), dlsym);
        // SAFETY: as above.
        let dlvsym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"dlvsym".as_ptr()) } as usize;
        assert_eq!(real_dlvsym(), dlvsym);
        assert_eq!(after_own_object(c"no_such_symbol_anywhere"), 0);
    }

    #[test]
    fn the_vdso_handle_is_recognised() {
        // SAFETY: as in is_vdso_handle.
        let vdso = unsafe { libc::dlopen(c"linux-vdso.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        assert!(!vdso.is_null(), "every x86-64 Linux process has a vDSO");
        assert!(is_vdso_handle(vdso));
        assert!(!is_vdso_handle(libc::RTLD_DEFAULT));
    }
}
