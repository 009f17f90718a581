//! `sgxemu`: the command line of the SGX2 emulator.
//!
//! Exit status: 0 on success, 1 when a command fails (one line on stderr says why and what
//! to do), 2 for invalid arguments (clap's usage message).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod input_file;
mod platform;
mod preload_install;
mod size;

/// Run, inspect and test SGX2 enclave programs on any x86-64 Linux machine.
#[derive(Debug, Parser)]
#[command(name = "sgxemu", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the emulated platform: CPUID leaf 0x12 as a program reads it, EPC size,
    /// SGX1/SGX2, the MISCSELECT/ATTRIBUTES/XFRM masks.
    Info(commands::info::InfoArgs),
    /// Run PROGRAM with the emulated SGX2 platform: /dev/sgx_enclave, the vDSO entry point
    /// and CPUID leaf 0x12 behave as on SGX2 hardware. Exits with PROGRAM's status.
    Run(commands::run::RunArgs),
    /// Build, sign and load the bundled sample enclave and walk the whole SGX2 lifecycle:
    /// EAUG, a new thread, permissions, trim and removal, oversubscription, attestation.
    Demo(commands::demo::DemoArgs),
    /// Generate an RSA-3072 (e = 3) enclave signing key.
    Keygen(commands::keygen::KeygenArgs),
    /// Sign an enclave (ELF or SGXS): write its SIGSTRUCT.
    Sign(commands::sign::SignArgs),
    /// Print an enclave's MRENCLAVE (ELF or SGXS) and check a SIGSTRUCT against it.
    Measure(commands::measure::MeasureArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Info(args) => commands::info::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Run(args) => commands::run::run(&args).map_err(Into::into),
        Command::Demo(args) => commands::demo::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Keygen(args) => commands::keygen::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Sign(args) => commands::sign::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Measure(args) => commands::measure::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sgxemu: {error}");
            ExitCode::FAILURE
        }
    }
}
