//! The enclave library: build enclave images from ELF or SGXS, measure and sign them, load
//! and run them through a [`Device`] — the kernel's `/dev/sgx_enclave` or the sgxemu
//! emulator — and manage their memory with SGX2's EDMM operations.

pub mod device;
pub mod edmm;
pub mod elf;
pub mod enter;
pub mod image;
pub mod layout;
pub mod loader;
pub mod sgxs;
pub mod sign;
mod vdso;

pub use device::{Device, DeviceError, DeviceKind, EnclaveFile, Errno};
pub use edmm::{Accept, EdmmError, EdmmOp, FlowError};
pub use elf::{ImageError, image_from_elf};
pub use enter::{EnclaveException, EnterError, Exit, Next, Registers};
pub use image::{EnclaveImage, ImagePage, PageData};
pub use layout::{Layout, LayoutError, LayoutPlan, ThreadLayout};
pub use loader::{Enclave, LoadError, LoadProgress};
pub use sgxs::{SgxsError, SgxsImage, mrenclave_of_sgxs, read_sgxs, write_sgxs};
pub use sign::{MismatchError, SigstructFields, sign_image, verify_for_image};
