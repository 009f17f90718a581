//! Running the `sgxemu` binary as a user would, for every integration test file.

#![allow(dead_code, reason = "each test file uses only some of these")]

use std::process::{Command, Output};

/// `sgxemu ARGS` with the platform variables of the test's own environment removed.
pub fn sgxemu(args: &[&str]) -> Output {
    sgxemu_with_env(args, &[])
}

/// [`sgxemu`] with `env` set.
pub fn sgxemu_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sgxemu"));
    command.args(args).env_remove("SGXEMU_EPC").env_remove("SGXEMU_SGX1").env_remove("SGXEMU_STATS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the sgxemu binary runs")
}

/// Process output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
