//! What natively running enclave code reaches, judged as the processor judges it (spec
//! §6.1), at every event of enclave mode the emulator sees.
//!
//! The host cannot give one thread a view of memory of its own: page protections are the
//! process's, and protection keys (which are per thread) govern data accesses only, never
//! instruction fetches — and this project's hosts have none (no `pku` in `/proc/cpuinfo`).
//! So an access the host allows runs natively and unseen. What the emulator does see is
//! every exit from native enclave execution — an ENCLU, an exception, a system call (#UD
//! through Syscall User Dispatch), an interrupt (the driver's IPI, a wrapped asynchronous
//! signal) — and every fault in an enclave mapping. There:
//!
//! - **fetch outside ELRANGE** (step 2): code of a thread in enclave mode found running
//!   outside its enclave's ELRANGE took control outside it, which the processor refuses
//!   with #GP(0) at the first such fetch. The emulator raises that #GP (an AEX, reported
//!   as the exception of the enclave) at the instruction where it finds the thread: the
//!   same instruction when it traps at once (a jump to a host `syscall`, `ud2`, ENCLU —
//!   e.g. the AEP's, used as an EEXIT gadget — or a faulting access); later otherwise.
//!   An interrupt is not judged in the emulator's own code that finishes the software
//!   EENTER (its object and the vDSO image), which runs with the processor already in
//!   enclave mode; so with the emulator linked into the program (not preloaded), host
//!   code of the program's own object is not caught at interrupts.
//! - **a page of another enclave inside ELRANGE** (step 3, EPCM owner): a fault on a page
//!   another enclave's mapping covers, inside the running enclave's ELRANGE, is the EPCM
//!   #PF (P | SGX) the processor raises once the kernel has mapped that page.

use std::sync::OnceLock;

use sgxemu_cpu::Lp;

/// The executable extent of the object holding the emulator's code.
static EMULATOR_TEXT: OnceLock<(u64, u64)> = OnceLock::new();

/// Finds the emulator's own code (once; the engine's start calls it, outside any handler).
pub fn init() {
    EMULATOR_TEXT.get_or_init(own_text);
}

/// Whether code at `rip`, found running in enclave mode on `lp` at a trap or fault, was
/// fetched outside the enclave's ELRANGE: #GP(0) on the processor. (The emulator's code
/// that runs in enclave mode never traps there, so nothing is exempt: a jump to the
/// vDSO's ENCLU is caught too.)
pub fn fetched_outside(lp: &Lp, rip: u64) -> bool {
    lp.elrange().is_some_and(|(base, size)| rip.wrapping_sub(base) >= size)
}

/// [`fetched_outside`] for an interrupt, which can also land in the emulator's own code
/// that finishes the software EENTER (after the processor model entered, before the jump
/// into the enclave): the rest of the software EENTER and the vDSO image are exempt.
pub fn interrupted_outside(lp: &Lp, rip: u64) -> bool {
    fetched_outside(lp, rip)
        && !in_vdso(rip)
        && !EMULATOR_TEXT.get().is_some_and(|&(start, end)| (start..end).contains(&rip))
}

/// Whether `rip`, in enclave mode on `lp`, lies in the emulator's code that finishes the
/// software EENTER (the exemption of [`interrupted_outside`]).
pub fn finishing_entry(lp: &Lp, rip: u64) -> bool {
    fetched_outside(lp, rip)
        && (in_vdso(rip) || EMULATOR_TEXT.get().is_some_and(|&(start, end)| (start..end).contains(&rip)))
}

fn in_vdso(rip: u64) -> bool {
    crate::vdso::get().is_some_and(|v| (v.code_start..v.code_end).contains(&rip))
}

/// The executable segments' extent of the loaded object containing this function.
fn own_text() -> (u64, u64) {
    struct Walk {
        probe: u64,
        found: (u64, u64),
    }
    extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `data` is the `Walk` passed below; `info` is the loader's description of
        // one object, its program headers valid for `dlpi_phnum` entries.
        let (walk, info) = unsafe { (&mut *data.cast::<Walk>(), &*info) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: see above.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let (mut start, mut end) = (u64::MAX, 0);
        for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0) {
            start = start.min(info.dlpi_addr + ph.p_vaddr);
            end = end.max(info.dlpi_addr + ph.p_vaddr + ph.p_memsz);
        }
        if (start..end).contains(&walk.probe) {
            walk.found = (start, end);
            return 1;
        }
        0
    }
    let mut walk = Walk { probe: own_text as *const () as usize as u64, found: (0, 0) };
    // SAFETY: the callback matches dl_iterate_phdr's contract and `walk` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut walk as *mut Walk).cast()) };
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulator_s_code_is_found() {
        let (start, end) = own_text();
        let here = the_emulator_s_code_is_found as *const () as usize as u64;
        assert!(start < end && (start..end).contains(&here), "{start:#x}..{end:#x} {here:#x}");
    }
}
