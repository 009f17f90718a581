//! CPUID as the emulated part answers it: leaf 0x12 describes the configured EPC and SGX1
//! or SGX2, leaf 7 advertises SGX and SGX_LC; every other leaf is the host's.
//!
//! The host CPU here has no CPUID faulting, so the main executable's own `cpuid`
//! instructions are rewritten to `ud2` (same two bytes) before it runs, after a decoder
//! sweep found them (`cpuid_sites`), and emulated from SIGILL.

use std::sync::OnceLock;

use sgxemu_cpu::PlatformConfig;

static PATCHED: OnceLock<Vec<u64>> = OnceLock::new();
static CONFIG: OnceLock<PlatformConfig> = OnceLock::new();

/// The part CPUID describes: the running engine's configuration (else the environment's),
/// read once.
fn config() -> &'static PlatformConfig {
    CONFIG.get_or_init(|| match crate::Engine::get() {
        Some(engine) => engine.processor.config().clone(),
        None => crate::engine::platform_config(),
    })
}

/// CPUID(`leaf`, `subleaf`) of the emulated part: [EAX, EBX, ECX, EDX].
pub fn emulate(leaf: u32, subleaf: u32) -> [u32; 4] {
    let config = config();
    if leaf == 0x12 {
        return config.cpuid_leaf12(subleaf);
    }
    let host = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    let mut out = [host.eax, host.ebx, host.ecx, host.edx];
    match (leaf, subleaf) {
        // Leaf 0x12 must be within the maximum basic leaf for software to look at it.
        (0, _) => out[0] = out[0].max(0x12),
        (7, 0) => {
            let (ebx, ecx) = config.cpuid_leaf7_sgx_bits();
            out[1] |= ebx;
            out[2] |= ecx;
        }
        _ => {}
    }
    out
}

/// Finds and rewrites the main executable's `cpuid` instructions (once per process; fork
/// children inherit the rewritten text). Refuses, with a warning, when the executable's
/// code cannot be decoded with certainty.
pub fn patch_main_executable() {
    PATCHED.get_or_init(|| match crate::cpuid_sites::main_executable_sites() {
        Ok(mut sites) => match crate::cpuid_sites::patch_sites(&sites) {
            Ok(_) => {
                sites.sort_unstable();
                sites
            }
            Err(e) => {
                crate::sys::stderr_line(&format!("sgxemu: could not rewrite CPUID instructions: {e}\n"));
                Vec::new()
            }
        },
        Err(e) => {
            crate::sys::stderr_line(&format!("sgxemu: CPUID leaf 0x12 stays the host's: {e}\n"));
            Vec::new()
        }
    });
}

static FAULTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns on CPUID faulting (`arch_prctl(ARCH_SET_CPUID, 0)`) where the CPU has it: every
/// `cpuid` of the process then raises #GP, which the SIGSEGV handler emulates. Returns
/// false on CPUs without it (ENODEV), where the executable is rewritten instead.
pub fn enable_faulting() -> bool {
    // SAFETY: ARCH_SET_CPUID only changes this thread's CPUID faulting flag (inherited by
    // threads and fork children created afterwards).
    let ok = unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1012 as libc::c_long, 0 as libc::c_long) } == 0;
    FAULTING.store(ok, std::sync::atomic::Ordering::Release);
    ok
}

/// Whether CPUID faulting is on.
pub fn faulting() -> bool {
    FAULTING.load(std::sync::atomic::Ordering::Acquire)
}

/// Whether `rip` is a rewritten `cpuid` (lock-free).
pub fn is_patched_site(rip: u64) -> bool {
    PATCHED.get().is_some_and(|sites| sites.binary_search(&rip).is_ok())
}
