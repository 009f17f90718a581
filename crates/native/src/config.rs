//! The emulated part, from the environment `sgxemu run` sets (or the user does).

use sgxemu_cpu::PlatformConfig;

/// `SGXEMU_EPC`: EPC size in bytes, with an optional K/M/G/T suffix (default 128 MiB).
pub const ENV_EPC: &str = "SGXEMU_EPC";
/// `SGXEMU_SGX1`: a boolean ([`parse_bool`]); true for an SGX1 part without EDMM.
pub const ENV_SGX1: &str = "SGXEMU_SGX1";
/// `SGXEMU_STATS`: a boolean ([`parse_bool`]); true to print leaf, AEX, fault and reclaim
/// counts at exit.
pub const ENV_STATS: &str = "SGXEMU_STATS";

/// `SGXEMU_PAUSE_EXITING`: a boolean ([`parse_bool`], default false); true patches enclave
/// code's PAUSE instructions to trap, for pause-loop exiting (see `crate::pause_loop`).
pub const ENV_PAUSE_EXITING: &str = "SGXEMU_PAUSE_EXITING";

/// The words a boolean setting accepts, for messages.
pub const BOOL_WORDS: &str = "1, 0, true, false, yes, no, on or off";

/// A boolean setting's value, as the CLI and the preloaded library both read it: `1`,
/// `true`, `yes`, `on` are true; `0`, `false`, `no`, `off` and the empty string are false
/// (case-insensitive, surrounding blanks ignored). Anything else is refused with a message
/// naming `name`, the variable or option it came from.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    let word = value.trim();
    const TRUE: [&str; 4] = ["1", "true", "yes", "on"];
    const FALSE: [&str; 5] = ["", "0", "false", "no", "off"];
    if TRUE.iter().any(|t| word.eq_ignore_ascii_case(t)) {
        Ok(true)
    } else if FALSE.iter().any(|f| word.eq_ignore_ascii_case(f)) {
        Ok(false)
    } else {
        Err(format!("{name}: invalid value '{value}' (expected {BOOL_WORDS})"))
    }
}

/// The boolean environment variable `name`: unset is false; an invalid value is reported
/// (`Err`, the one-line message of [`parse_bool`]).
pub fn bool_env(name: &str) -> Result<bool, String> {
    match std::env::var(name) {
        Ok(value) => parse_bool(name, &value),
        Err(std::env::VarError::NotPresent) => Ok(false),
        Err(std::env::VarError::NotUnicode(value)) => {
            Err(format!("{name}: invalid value '{}' (expected {BOOL_WORDS})", value.to_string_lossy()))
        }
    }
}

/// [`bool_env`] for the preloaded library, which cannot fail the program's start: an invalid
/// value is reported on stderr and counts as false.
fn flag(name: &str) -> bool {
    bool_env(name).unwrap_or_else(|e| {
        crate::sys::stderr_line(&format!("sgxemu: ignoring {e}\n"));
        false
    })
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

/// Whether PAUSE in enclave code traps for pause-loop exiting (unset: no). Off by default:
/// each PAUSE then costs a trap, which makes waits that count PAUSEs (Intel's switchless
/// calls poll 20,000 times before they give up or sleep) some fifty times longer.
pub fn pause_exiting() -> bool {
    flag(ENV_PAUSE_EXITING)
}

/// Whether statistics are printed at exit.
pub fn stats_requested() -> bool {
    flag(ENV_STATS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_the_usual_words_in_any_case() {
        for word in ["1", "true", "TRUE", "Yes", "on", " on ", "oN"] {
            assert_eq!(parse_bool("X", word), Ok(true), "{word:?}");
        }
        for word in ["", "0", "false", "False", "NO", "off", " 0"] {
            assert_eq!(parse_bool("X", word), Ok(false), "{word:?}");
        }
    }

    #[test]
    fn a_bad_boolean_is_one_line_naming_the_variable() {
        let error = parse_bool("SGXEMU_SGX1", "maybe").expect_err("refused");
        assert_eq!(error, "SGXEMU_SGX1: invalid value 'maybe' (expected 1, 0, true, false, yes, no, on or off)");
        assert!(parse_bool("SGXEMU_STATS", "2").is_err());
        assert!(parse_bool("SGXEMU_STATS", "1\n0").is_err());
    }
}
