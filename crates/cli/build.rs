//! Builds the preload library (`sgxemu-preload`, a cdylib) so `sgxemu run` can carry it
//! inside the binary: an installed `sgxemu` then needs no file beside it.
//!
//! Cargo cannot yet depend on a cdylib as an artifact on stable, so this runs a nested
//! `cargo build` of that one package, in its own target directory (the outer build holds the
//! lock of the main one).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let crates = manifest_dir.parent().expect("crates/cli has a parent").to_path_buf();
    let release = env::var("PROFILE").as_deref() == Ok("release");
    // <target>/<profile>/build/<pkg>/out → <target>/preload: kept across builds.
    let target_dir = out_dir.ancestors().nth(4).map_or_else(|| out_dir.join("preload"), |t| t.join("preload"));
    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .arg("build")
        .arg("--manifest-path")
        .arg(crates.join("preload/Cargo.toml"))
        .arg("--lib")
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    // Line tables are enough for backtraces; full debug info would make the binary ~10x.
    cargo.env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only").env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only");
    if release {
        cargo.arg("--release");
    } else {
        // The emulator's own crates at opt-level 1 even in debug builds: enclave programs
        // spend their time in it.
        cargo.env("CARGO_PROFILE_DEV_OPT_LEVEL", "1");
    }
    if env::var_os("SGXEMU_OFFLINE").is_some() {
        cargo.arg("--offline");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building the preload library failed");
    let profile_dir = if release { "release" } else { "debug" };
    let built = target_dir.join(profile_dir).join("libsgxemu_preload.so");
    let embedded = out_dir.join("libsgxemu_preload.so");
    std::fs::copy(&built, &embedded).expect("the preload library was built");
    println!("cargo:rustc-env=SGXEMU_PRELOAD_SO={}", embedded.display());
    for dir in ["preload", "native", "driver", "cpu", "crypto", "arch", "uapi"] {
        rerun_if_changed(&crates.join(dir).join("src"));
        rerun_if_changed(&crates.join(dir).join("Cargo.toml"));
    }
    rerun_if_changed(&crates.parent().expect("workspace root").join("Cargo.lock"));
    println!("cargo:rerun-if-env-changed=SGXEMU_OFFLINE");
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
