//! The emulated part, from the environment `sgxemu run` sets (or the user does).

use sgxemu_cpu::PlatformConfig;

/// `SGXEMU_EPC`: EPC size in bytes, with an optional K/M/G/T suffix (default 128 MiB).
pub const ENV_EPC: &str = "SGXEMU_EPC";
/// `SGXEMU_SGX1`: set (to anything but `0` or empty) for an SGX1 part without EDMM.
pub const ENV_SGX1: &str = "SGXEMU_SGX1";
/// `SGXEMU_STATS`: set to print leaf, AEX, fault and reclaim counts at exit.
pub const ENV_STATS: &str = "SGXEMU_STATS";

/// Parses a size: digits with an optional binary unit (K, M, G, T, optionally KiB…).
pub fn parse_size(input: &str) -> Option<u64> {
    let trimmed = input.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The configuration the environment asks for. Bad values are reported on stderr and the
/// default is used, since a preloaded library has no way to fail the program's start.
pub fn from_env() -> PlatformConfig {
    let mut config = PlatformConfig { sgx2: !flag(ENV_SGX1), ..PlatformConfig::default() };
    if let Ok(value) = std::env::var(ENV_EPC) {
        match parse_size(&value) {
            Some(size) => config.epc_size = size,
            None => crate::sys::stderr_line(&format!("sgxemu: ignoring {ENV_EPC}={value}: not a size\n")),
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
