//! The enclave library: build enclave images from ELF or SGXS, measure and sign them, load
//! and run them through a [`Device`] — the kernel's `/dev/sgx_enclave` or the sgxemu
//! emulator — and manage their memory with SGX2's EDMM operations.

pub mod image;

pub use image::{EnclaveImage, ImagePage, PageData};
