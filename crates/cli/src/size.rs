//! Byte sizes on the command line (`128M`, `64GiB`, `4096`): the same parser the preloaded
//! library applies to `SGXEMU_EPC`.

pub use sgxemu_native::size::ByteSize;
