//! ENCLS leaves (ring 0), one module per group of spec §4.

mod build;
mod edmm;
mod paging;
mod remove;

pub(crate) use build::lehash_bytes;
