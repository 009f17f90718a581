//! Running the `sgxemu` binary as a user would, for every integration test file.

#![allow(dead_code, reason = "each test file uses only some of these")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The platform variables a test's own environment may hold, which would change what the
/// emulated part is.
const PLATFORM_VARIABLES: [&str; 3] = ["SGXEMU_EPC", "SGXEMU_SGX1", "SGXEMU_STATS"];

/// `sgxemu ARGS` with the platform variables of the test's own environment removed.
pub fn sgxemu(args: &[&str]) -> Output {
    sgxemu_with_env(args, &[])
}

/// [`sgxemu`] with `env` set.
pub fn sgxemu_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sgxemu"));
    command.args(args);
    for name in PLATFORM_VARIABLES {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the sgxemu binary runs")
}

/// Process output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh, empty directory for test `name` of test file `file` (per process).
pub fn fresh_dir(file: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgxemu-{file}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Writes `bytes` to `dir/name`; returns the path as an argument.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("written");
    path.to_string_lossy().into_owned()
}

/// The project's `scripts/NAME`, told to use this build's sgxemu (`--sgxemu`), with the
/// platform variables of the test's own environment removed.
pub fn script(name: &str) -> Command {
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(name));
    command.arg("--sgxemu").arg(env!("CARGO_BIN_EXE_sgxemu"));
    for variable in PLATFORM_VARIABLES {
        command.env_remove(variable);
    }
    command
}
