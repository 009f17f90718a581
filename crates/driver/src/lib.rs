//! The Linux SGX driver (SGX1 and SGX2/EDMM) in Rust, on the emulated processor.
//!
//! It follows the kernel's structure and the project's `spec/driver.md`: one [`Encl`] per
//! open of `/dev/sgx_enclave`, every ioctl with its validations in the kernel's order and
//! errno ([`Encl::ioctl`]), the mapping rules ([`Encl::may_map`]), the fault handler with
//! ELDU reload and EAUG of new pages ([`Encl::fault`]), the reclaimer (EBLOCK → ETRACK → EWB,
//! VA slots, the SECS last) and teardown ([`Encl::release`]). It drives the processor only
//! through ENCLS leaves ([`Cpu`]), never looking at the EPCM.
//!
//! Operating-system services — address spaces and their PTEs, user memory, backing
//! storage, IPIs and the reclaimer's thread — are the small traits of [`os`], implemented by
//! the in-process platform of [`sim`] (tests) and by the native engine.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod encl;
mod encls;
mod epc;
pub mod errno;
mod fault;
mod ioctl;
pub mod os;
mod page_array;
mod reclaim;
mod sgx;

pub use encl::{Encl, EnclInfo};
pub use encls::{Cpu, EnclsError, EnclsResult};
pub use epc::{NR_HIGH_PAGES, NR_LOW_PAGES, NR_TO_SCAN};
pub use errno::{Errno, KResult};
pub use fault::FaultResult;
pub use sgx::{InitError, Sgx};
pub mod sim;
