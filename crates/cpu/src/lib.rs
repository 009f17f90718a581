//! A software model of an SGX2 processor.
//!
//! This crate is the SDM's SGX chapters as code: the EPC and its EPCM, every ENCLS leaf
//! (ECREATE, EADD, EEXTEND, EINIT, EREMOVE, EDBGRD/EDBGWR, EPA, EBLOCK, ETRACK, EWB,
//! ELDB/ELDU, and SGX2's EAUG, EMODPR, EMODT), every ENCLU leaf (EENTER, ERESUME, EEXIT,
//! EREPORT, EGETKEY, and SGX2's EACCEPT, EACCEPTCOPY, EMODPE), asynchronous enclave exits,
//! the TLB-tracking rules, launch control, key derivation and paging crypto. It knows
//! nothing of Linux: leaves take register operands and return architectural results — a
//! [`Status`] in RAX/RFLAGS or an [`Exception`] — exactly as the project's
//! `spec/architecture.md` (the contract, section numbers cited throughout) describes.
//!
//! Memory outside the EPC reaches the model through the caller's [`Memory`] (ring-0
//! operands) and [`PageTable`] (ring-3 translation), so the same model serves the driver's
//! deterministic test platform and the native engine.
//!
//! ```
//! use sgxemu_cpu::{PlatformConfig, Processor};
//!
//! let cpu = Processor::new(PlatformConfig::default()).unwrap();
//! let [eax, ..] = cpu.config().cpuid_leaf12(0);
//! assert_eq!(eax & 0x3, 0x3, "SGX1 and SGX2 leaves enumerated");
//! assert_eq!(cpu.epc_pages(), 32768, "128 MiB of EPC by default");
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod access;
mod config;
mod dispatch;
mod enclave;
mod encls;
mod enclu;
mod epc;
mod epcm;
mod fault;
mod invariants;
mod keys;
mod lp;
mod memory;
mod processor;
pub mod regs;
mod secrets;
mod stats;
pub mod testkit;
mod tracking;

pub use access::Access;
pub use config::{
    ConfigError, DEFAULT_EPC_BASE, DEFAULT_EPC_SIZE, DEFAULT_MAX_ENCLAVE_SIZE_32_LOG2,
    DEFAULT_MAX_ENCLAVE_SIZE_64_LOG2, DEFAULT_XFRM, MAX_EPC_SIZE, PlatformConfig,
};
pub use enclu::{AexEvent, AexReport, EventKind};
pub use epc::{EpcIndex, EpcMemory, SparseEpc};
pub use epcm::EpcmView;
pub use fault::{Exception, LeafResult, Status};
pub use invariants::InvariantViolation;
pub use lp::{Lp, LpId};
pub use memory::{AccessKind, MapPageTable, Memory, PageTable, SparseMemory, Translation, walk};
pub use processor::{EpcmObserver, Processor, ProcessorError};
pub use regs::{Regs, is_canonical};
pub use secrets::{PlatformSecrets, RandomnessError};
pub use stats::LeafStats;
