//! `sgxemu-uapi-fuzz`: a fuzzer of the Linux SGX driver's user-space ABI — the seven
//! `/dev/sgx_enclave` ioctls, near-miss ioctl numbers, bad and read-only pointers, mmap,
//! mprotect and munmap of the enclave file, dup and close, and valid builds that are entered
//! through `__vdso_sgx_enter_enclave` and grown (EAUG), trimmed and removed — with an errno
//! oracle written from the kernel's validation order (`spec/driver.md`).
//!
//! Run it under `sgxemu run` (or on SGX2 hardware):
//!
//! ```text
//! sgxemu run --epc 8M -- sgxemu-uapi-fuzz --seed 1 --ops 20000 --threads 4
//! sgxemu run --epc 8M --sgx1 -- sgxemu-uapi-fuzz --seed 1 --ops 20000 --threads 4 --sgx1
//! ```
//!
//! How it stays exact with several threads: every thread owns its enclaves (the oracle
//! models each one sequentially), and a separate class of operations on one enclave that
//! all threads share accepts a listed set of answers (the exact one, or EBUSY from another
//! thread's ioctl in flight). A thread's operations are a pure function of the seed, so a
//! failure — errno mismatch, crash (signal) or hang (watchdog) — is replayed in a fresh
//! process with that thread alone and shrunk by delta debugging to a minimal sequence.
//!
//! Modules: [`ops`] (operations and their generator), [`model`] (what the fuzzer believes),
//! [`oracle`] (the kernel's answers), [`known`] (differences being fixed elsewhere),
//! [`enclave_program`] (the enclave built from raw bytes), [`world`] (one thread's executor),
//! [`scratch`] (where arguments go), [`shared`] (the enclave all threads share),
//! [`campaign`] (threads and watchdog), [`cli`] (the command line), [`minimize`] (child runs and delta debugging),
//! [`sys`] (the system calls: the only `unsafe`), [`rng`].

pub mod campaign;
pub mod cli;
pub mod enclave_program;
pub mod known;
pub mod minimize;
pub mod model;
pub mod ops;
pub mod oracle;
pub mod rng;
pub mod scratch;
pub mod shared;
pub mod sys;
pub mod world;
