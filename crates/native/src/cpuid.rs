//! CPUID as the emulated part answers it: leaf 0x12 describes the configured EPC and SGX1
//! or SGX2, leaf 7 advertises SGX and SGX_LC; every other leaf is the host's.
//!
//! Where the CPU offers CPUID faulting (`arch_prctl(ARCH_SET_CPUID, 0)`), every `cpuid` of
//! the process traps as #GP and is emulated from SIGSEGV. Elsewhere the main executable's
//! own `cpuid` instructions are rewritten to `ud2` (same two bytes) before it runs, after a
//! decoder sweep found them (`cpuid_sites`), and emulated from SIGILL.
//!
//! With faulting on, the emulator's own code must not execute `cpuid` unguarded: inside the
//! SIGSEGV handler the nested #GP would find SIGSEGV blocked and the kernel would kill the
//! process. So lazy feature detection (the C library's, std's, the crypto crates') is
//! primed before faulting is switched on, and host leaves are read through [`host`], which
//! switches faulting off for the calling thread around the instruction.

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
    let mut out = host(leaf, subleaf);
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

/// CPUID(`leaf`, `subleaf`) of the host CPU, also where faulting is on (for this thread
/// only, and only around the instruction: `ARCH_SET_CPUID` is a per-thread flag).
pub fn host(leaf: u32, subleaf: u32) -> [u32; 4] {
    let guarded = faulting();
    if guarded {
        set_cpuid_faulting(false);
    }
    let host = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    if guarded {
        set_cpuid_faulting(true);
    }
    [host.eax, host.ebx, host.ecx, host.edx]
}

static FAULTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const ARCH_SET_CPUID: libc::c_long = 0x1012;

/// `arch_prctl(ARCH_SET_CPUID, !on)` for the calling thread; false where the CPU has no
/// CPUID faulting (ENODEV).
fn set_cpuid_faulting(on: bool) -> bool {
    let cpuid_enabled = libc::c_long::from(!on);
    // SAFETY: ARCH_SET_CPUID only changes the calling thread's CPUID faulting flag (inherited
    // by threads and fork children created afterwards, cleared by exec). A successful call
    // leaves errno alone, which matters inside signal handlers.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, cpuid_enabled) == 0 }
}

/// Turns on CPUID faulting where the CPU has it: every `cpuid` of the process then raises
/// #GP, which the SIGSEGV handler emulates. Returns false on CPUs without it, where the
/// executable is rewritten instead. Call it while the process has one thread (the flag is
/// per thread and inherited), before the emulator's handlers can run.
pub fn enable_faulting() -> bool {
    prime_feature_detection();
    let ok = set_cpuid_faulting(true);
    FAULTING.store(ok, std::sync::atomic::Ordering::Release);
    ok
}

/// Runs, once, every lazy CPU-feature probe the emulator's code paths contain, so that none
/// of them executes `cpuid` later inside a signal handler.
fn prime_feature_detection() {
    // std's detection cache (memchr and friends use it): one query fills all of it.
    let _ = std::arch::is_x86_feature_detected!("avx2");
    // The SHA-256, AES, CMAC and GCM back ends each probe once, on first use.
    sgxemu_crypto::prime_feature_detection();
}

/// Whether CPUID faulting is on.
pub fn faulting() -> bool {
    FAULTING.load(std::sync::atomic::Ordering::Acquire)
}

/// Whether `rip` is a rewritten `cpuid` (lock-free).
pub fn is_patched_site(rip: u64) -> bool {
    PATCHED.get().is_some_and(|sites| sites.binary_search(&rip).is_ok())
}
