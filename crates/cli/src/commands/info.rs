//! `sgxemu info`: the emulated platform as a program would discover it.

use std::io::Write;

use clap::Args;
use sgxemu_arch::{AttributesFlags, Miscselect, cpuid};
use sgxemu_cpu::PlatformConfig;

use crate::platform::{PlatformArgs, PlatformError};
use crate::size::ByteSize;

/// Arguments of `sgxemu info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    platform: PlatformArgs,
}

/// Why `info` failed.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// Bad platform options.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// Writing the report failed (e.g. a closed pipe).
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
}

/// Validates the platform options and prints the report.
pub fn run(args: &InfoArgs, out: &mut dyn Write) -> Result<(), InfoError> {
    let cpu = args.platform.processor()?;
    render(cpu.config(), out)?;
    Ok(())
}

fn render(cfg: &PlatformConfig, out: &mut dyn Write) -> std::io::Result<()> {
    let kind = if cfg.sgx2 { "SGX2 (SGX1 + EDMM)" } else { "SGX1 only (no EDMM)" };
    writeln!(out, "sgxemu emulated platform: {kind}")?;
    writeln!(out, "  EPC: {} ({} pages) at physical {:#x}", ByteSize(cfg.epc_size), cfg.epc_pages(), cfg.epc_base)?;
    writeln!(
        out,
        "  max enclave size: 2^{} bytes (64-bit), 2^{} bytes (32-bit)",
        cfg.max_enclave_size_64_log2, cfg.max_enclave_size_32_log2
    )?;
    writeln!(out, "  MISCSELECT mask: {:#010x} ({})", cfg.miscselect.bits(), misc_names(cfg.miscselect))?;
    writeln!(out, "  ATTRIBUTES mask: {:#018x} ({})", cfg.attributes.bits(), attribute_names(cfg.attributes))?;
    writeln!(out, "  XFRM mask:       {:#018x}", cfg.xfrm)?;
    writeln!(
        out,
        "  launch control:  {}",
        if cfg.flexible_launch_control { "flexible (LE hash MSRs writable)" } else { "locked" }
    )?;
    writeln!(out)?;
    let (ebx7, ecx7) = cfg.cpuid_leaf7_sgx_bits();
    writeln!(
        out,
        "CPUID leaf 0x7.0: EBX bit 2 (SGX) = {}, ECX bit 30 (SGX_LC) = {}",
        u8::from(ebx7 != 0),
        u8::from(ecx7 != 0)
    )?;
    writeln!(out, "CPUID leaf 0x12   {:>10} {:>10} {:>10} {:>10}", "EAX", "EBX", "ECX", "EDX")?;
    for subleaf in 0..=3 {
        let [eax, ebx, ecx, edx] = cfg.cpuid_leaf12(subleaf);
        writeln!(
            out,
            "  sub-leaf {subleaf}:     {eax:#010x} {ebx:#010x} {ecx:#010x} {edx:#010x}  {}",
            describe(subleaf, [eax, ebx, ecx, edx])
        )?;
    }
    Ok(())
}

fn describe(subleaf: u32, [eax, _, ecx, _]: [u32; 4]) -> String {
    match subleaf {
        0 => {
            let mut leaves = vec![];
            if eax & cpuid::SGX1 != 0 {
                leaves.push("SGX1");
            }
            if eax & cpuid::SGX2 != 0 {
                leaves.push("SGX2");
            }
            format!("leaves: {}; MISCSELECT; max sizes", leaves.join("+"))
        }
        1 => "settable ATTRIBUTES (EBX:EAX) and XFRM (EDX:ECX)".to_string(),
        _ if eax & cpuid::EPC_SECTION_TYPE_MASK == cpuid::EPC_SECTION_TYPE_EPC => {
            let confidentiality =
                if ecx & 0xF == cpuid::EPC_SECTION_PROPERTY_CI { ", confidentiality+integrity" } else { "" };
            format!("EPC section{confidentiality}")
        }
        _ => "end of EPC sections".to_string(),
    }
}

fn misc_names(misc: Miscselect) -> String {
    join_names(misc.iter_names().map(|(name, _)| name))
}

fn attribute_names(attrs: AttributesFlags) -> String {
    join_names(attrs.iter_names().map(|(name, _)| name))
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() { "none".to_string() } else { names.join("|") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cfg: &PlatformConfig) -> String {
        let mut out = Vec::new();
        render(cfg, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_report_shows_sgx2_and_the_epc_section() {
        let text = report(&PlatformConfig::default());
        assert!(text.contains("SGX2 (SGX1 + EDMM)"), "{text}");
        assert!(text.contains("EPC: 128 MiB (32768 pages)"), "{text}");
        assert!(text.contains("0x00000003"), "sub-leaf 0 EAX with both leaf bits: {text}");
        assert!(text.contains("0x08000001"), "EPC size in sub-leaf 2 ECX: {text}");
        assert!(text.contains("end of EPC sections"), "{text}");
        assert!(text.contains("EXINFO"), "{text}");
    }

    #[test]
    fn sgx1_report_clears_sgx2() {
        let text = report(&PlatformConfig { sgx2: false, ..PlatformConfig::default() });
        assert!(text.contains("SGX1 only"), "{text}");
        assert!(text.contains("leaves: SGX1;"), "{text}");
    }
}
