//! The emulated part, from the environment `sgxemu run` sets (or the user does).

use sgxemu_cpu::PlatformConfig;

/// `SGXEMU_EPC`: EPC size in bytes, with an optional K/M/G/T suffix (default 128 MiB).
pub const ENV_EPC: &str = "SGXEMU_EPC";
/// `SGXEMU_SGX1`: set (to anything but `0` or empty) for an SGX1 part without EDMM.
pub const ENV_SGX1: &str = "SGXEMU_SGX1";
/// `SGXEMU_STATS`: set to print leaf, AEX, fault and reclaim counts at exit.
pub const ENV_STATS: &str = "SGXEMU_STATS";

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The configuration the environment asks for. Bad values are reported on stderr and the
/// default is used, since a preloaded library has no way to fail the program's start.
pub fn from_env() -> PlatformConfig {
    let mut config = PlatformConfig { sgx2: !flag(ENV_SGX1), ..PlatformConfig::default() };
    if let Ok(value) = std::env::var(ENV_EPC) {
        match value.parse::<crate::size::ByteSize>() {
            Ok(size) => config.epc_size = size.0,
            Err(e) => crate::sys::stderr_line(&format!("sgxemu: ignoring {ENV_EPC}: {e}\n")),
        }
    }
    if let Err(e) = config.validate() {
        crate::sys::stderr_line(&format!("sgxemu: ignoring {ENV_EPC}: {e}\n"));
        config.epc_size = PlatformConfig::default().epc_size;
    }
    config
}

/// Whether statistics are printed at exit.
pub fn stats_requested() -> bool {
    flag(ENV_STATS)
}
