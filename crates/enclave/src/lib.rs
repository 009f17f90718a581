//! The enclave library: build enclave images from ELF or SGXS, measure and sign them, load
//! and run them through a [`Device`] — the kernel's `/dev/sgx_enclave` or the sgxemu
//! emulator — and manage their memory with SGX2's EDMM operations.
//!
//! ```no_run
//! use sgxemu_enclave::{Device, Enclave, Layout, Registers, SigstructFields, image_from_elf, sign_image};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // SGX2 hardware, or any program run under `sgxemu run`. (With the `emulator` feature,
//! // `Device::emulated()` runs the enclave in this process on the emulator instead.)
//! let device = Device::kernel()?;
//! let layout = Layout { dynamic_pages: 1024, ..Layout::default() };
//! let image = image_from_elf(&std::fs::read("enclave.elf")?, &layout)?;
//! let key = sgxemu_crypto::SigningKey::from_pem(&std::fs::read_to_string("key.pem")?)?;
//! let sigstruct = sign_image(&image, &SigstructFields::for_image(&image), &key)?;
//! let enclave = Enclave::load(&device, &image, &sigstruct, &mut |progress| {
//!     eprintln!("{}/{} pages", progress.pages_added, progress.pages_total);
//! })?;
//! // EENTER on the first thread; an exception comes back as `EnterError::Exception`.
//! enclave.enter(enclave.tcs()[0], Registers { rdi: 42, ..Registers::default() })?;
//! # Ok(())
//! # }
//! ```

pub mod device;
pub mod ecreate_checks;
pub mod edmm;
pub mod elf;
pub mod enter;
pub mod image;
pub mod layout;
pub mod loader;
pub mod relocations;
pub mod sgxs;
pub mod sign;
pub mod vdso;

pub use device::{Device, DeviceError, DeviceKind, EnclaveFile, Errno};
pub use ecreate_checks::SecsError;
pub use edmm::{Accept, EdmmError, EdmmOp, FlowError};
pub use elf::{ImageError, image_from_elf};
pub use enter::{EnclaveException, EnterError, Exit, Next, Registers};
pub use image::{EnclaveImage, ImagePage, ImageShapeError, PageData};
pub use layout::{Layout, LayoutError, LayoutPlan, ThreadLayout};
pub use loader::{Enclave, LoadError, LoadProgress};
pub use sgxs::{SgxsError, SgxsImage, mrenclave_of_sgxs, read_sgxs, write_sgxs};
pub use sign::{MismatchError, SigstructFields, sign_image, verify_for_image};
