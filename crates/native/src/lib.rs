//! Native execution of enclave code: the only layer that touches signals, ucontexts, host
//! mappings and CPUID (DESIGN.md, "Native execution").
//!
//! Enclave code runs natively at its ELRANGE address. Its ENCLU instructions trap (#UD →
//! SIGILL) and run on the processor model; its pages are host mappings of a memfd EPC whose
//! protections follow the PTEs and the EPCM, so a host fault is an architectural fault,
//! classified into the driver's fault handler (ELDU, EAUG) or an AEX reported through the
//! synthetic vDSO. The preload library (`sgxemu-preload`) connects a program's libc calls
//! on `/dev/sgx_enclave` to [`Engine`].

#![warn(missing_docs)]

pub mod alt_stack;
pub mod auxv;
pub mod config;
pub mod context;
pub mod cpuid;
pub mod cpuid_sites;
pub mod dev_listing;
pub mod device;
pub mod devices_fs;
pub mod dl_symbols;
pub mod enclu;
pub mod engine;
pub mod epc_memory;
pub mod isolation;
pub mod own_fds;
pub mod patch;
pub mod pause_loop;
pub mod platform;
pub mod prefetch;
pub mod program_frame;
pub mod program_maps;
pub mod real;
pub mod seccomp;
pub mod signals;
pub mod size;
pub mod space;
pub mod stats;
pub mod sys;
pub mod syscall_dispatch;
pub mod thread;
pub mod user_copy;
pub mod vdso;
pub mod vdso_image;
pub mod xfeatures;

pub use engine::{Engine, EngineError};
pub use sgxemu_cpu::PlatformConfig;
