//! Options every command that emulates a platform shares: `--epc` and `--sgx1`, each also
//! settable from the environment.

use clap::Args;
use sgxemu_cpu::{PlatformConfig, Processor};

use crate::size::ByteSize;

/// The emulated part.
#[derive(Debug, Clone, Args)]
pub struct PlatformArgs {
    /// EPC size (K, M, G suffixes; a multiple of 4 KiB up to 64 GiB).
    #[arg(long, value_name = "SIZE", env = "SGXEMU_EPC", default_value = "128M")]
    pub epc: ByteSize,
    /// Emulate an SGX1-only part: no EDMM leaves (EAUG, EMODPR, EMODT, EACCEPT, …).
    /// The variable takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "SGXEMU_SGX1", value_parser = boolean(sgxemu_native::config::ENV_SGX1))]
    pub sgx1: bool,
}

/// The parser of a boolean flag that an environment variable can also set: clap's own
/// takes only `true`/`false`, while `sgxemu run` and users write `SGXEMU_SGX1=1`. The same
/// words as the preloaded library accepts ([`sgxemu_native::config::parse_bool`]).
pub fn boolean(variable: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |value| {
        sgxemu_native::config::parse_bool(variable, value)
            .map_err(|_| format!("{variable} takes {}", sgxemu_native::config::BOOL_WORDS))
    }
}

/// Why the platform options were refused.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The processor model refused the configuration.
    #[error("{0}")]
    Processor(#[from] sgxemu_cpu::ProcessorError),
}

impl PlatformArgs {
    /// The processor configuration these options describe, with XFRM limited to the
    /// components this host enabled (as `sgxemu run` offers them).
    pub fn config(&self) -> PlatformConfig {
        let default = PlatformConfig::default();
        let xfrm = default.xfrm & sgxemu_native::xfeatures::host_xcr0();
        PlatformConfig { epc_size: self.epc.0, sgx2: !self.sgx1, xfrm, ..default }
    }

    /// A processor for these options (validates them).
    pub fn processor(&self) -> Result<Processor, PlatformError> {
        Ok(Processor::new(self.config())?)
    }
}
