pub mod enclave;
