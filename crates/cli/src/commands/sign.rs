//! `sgxemu sign`: the SIGSTRUCT for an enclave file, every vendor field settable.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use sgxemu_crypto::SigningKey;
use sgxemu_enclave::SigstructFields;
use sgxemu_enclave::sign::hex;
use zerocopy::IntoBytes;

use super::image_input::{InputError, LayoutArgs, read_image};
use crate::input_file::{InputFileError, MAX_KEY_FILE, read_regular};

/// Options of `sgxemu sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The enclave: a static-PIE ELF or an SGXS file.
    #[arg(value_name = "ENCLAVE")]
    pub enclave: PathBuf,
    /// The signing key (PEM, RSA-3072 with e = 3; `sgxemu keygen` makes one).
    #[arg(long, short, value_name = "FILE")]
    pub key: PathBuf,
    /// Where to write the SIGSTRUCT (1808 bytes).
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub layout: LayoutArgs,
    #[command(flatten)]
    pub fields: FieldArgs,
}

/// The SIGSTRUCT fields a vendor chooses.
#[derive(Debug, Clone, Args)]
pub struct FieldArgs {
    /// VENDOR: 0, or 0x8086 (Intel).
    #[arg(long, default_value = "0", value_parser = parse_u32)]
    pub vendor: u32,
    /// DATE as YYYYMMDD (stored as BCD).
    #[arg(long, default_value = "20260101", value_parser = parse_date)]
    pub date: u32,
    /// ISVPRODID.
    #[arg(long, default_value_t = 0)]
    pub isvprodid: u16,
    /// ISVSVN.
    #[arg(long, default_value_t = 0)]
    pub isvsvn: u16,
    /// SWDEFINED.
    #[arg(long, default_value = "0", value_parser = parse_u32)]
    pub swdefined: u32,
    /// ATTRIBUTEMASK flags (default: all bits compared).
    #[arg(long, value_parser = parse_u64)]
    pub attribute_mask: Option<u64>,
    /// ATTRIBUTEMASK XFRM (default: the enclave's XFRM).
    #[arg(long, value_parser = parse_u64)]
    pub xfrm_mask: Option<u64>,
    /// MISCMASK (default: all bits compared).
    #[arg(long, value_parser = parse_u32)]
    pub misc_mask: Option<u32>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a number: {e}"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_u64(s)?).map_err(|_| format!("{s} does not fit in 32 bits"))
}

/// `YYYYMMDD` → BCD `0xYYYYMMDD`, as Intel's signing tools store DATE.
fn parse_date(s: &str) -> Result<u32, String> {
    let valid = s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
    let month = s.get(4..6).and_then(|m| m.parse::<u32>().ok());
    let day = s.get(6..8).and_then(|d| d.parse::<u32>().ok());
    if !valid || !matches!(month, Some(1..=12)) || !matches!(day, Some(1..=31)) {
        return Err(format!("{s:?} is not a date as YYYYMMDD"));
    }
    u32::from_str_radix(s, 16).map_err(|e| e.to_string())
}

impl FieldArgs {
    /// The fields for `image`, defaults from [`SigstructFields::for_image`].
    pub fn fields(&self, image: &sgxemu_enclave::EnclaveImage) -> SigstructFields {
        let mut fields = SigstructFields::for_image(image);
        fields.vendor = self.vendor;
        fields.date = self.date;
        fields.isvprodid = self.isvprodid;
        fields.isvsvn = self.isvsvn;
        fields.swdefined = self.swdefined;
        if let Some(mask) = self.attribute_mask {
            fields.attributemask.flags = mask;
        }
        if let Some(mask) = self.xfrm_mask {
            fields.attributemask.xfrm = mask;
        }
        if let Some(mask) = self.misc_mask {
            fields.miscmask = mask;
        }
        fields
    }
}

/// Why no SIGSTRUCT was written.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("cannot read the key {path}: {source}")]
    ReadKey { path: PathBuf, source: InputFileError },
    #[error("{path} is not a PEM key: it is not text")]
    NotText { path: PathBuf },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: sgxemu_crypto::KeyError },
    #[error("VENDOR must be 0 or 0x8086, not {0:#x}")]
    Vendor(u32),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads a signing key from a PEM file (a regular file of at most [`MAX_KEY_FILE`] bytes).
pub fn read_key(path: &std::path::Path) -> Result<SigningKey, SignError> {
    let bytes =
        read_regular(path, MAX_KEY_FILE).map_err(|source| SignError::ReadKey { path: path.to_path_buf(), source })?;
    let pem = String::from_utf8(bytes).map_err(|_| SignError::NotText { path: path.to_path_buf() })?;
    SigningKey::from_pem(&pem).map_err(|source| SignError::Key { path: path.to_path_buf(), source })
}

/// Signs the enclave and writes the SIGSTRUCT.
pub fn run(args: &SignArgs, out: &mut dyn Write) -> Result<(), SignError> {
    if args.fields.vendor != 0 && args.fields.vendor != sgxemu_arch::VENDOR_INTEL {
        return Err(SignError::Vendor(args.fields.vendor));
    }
    let image = read_image(&args.enclave, &args.layout)?;
    let key = read_key(&args.key)?;
    let mrenclave = super::measuring::mrenclave(&image);
    let sig = sgxemu_enclave::sign::sign_measured(mrenclave, &args.fields.fields(&image), &key)
        .map_err(|source| SignError::Key { path: args.key.clone(), source })?;
    std::fs::write(&args.out, sig.as_bytes()).map_err(|source| SignError::Write { path: args.out.clone(), source })?;
    let _ = writeln!(out, "MRENCLAVE {}", hex(&sig.enclavehash));
    let _ = writeln!(out, "MRSIGNER  {}", hex(&key.mrsigner()));
    let _ = writeln!(out, "wrote {} ({} bytes)", args.out.display(), sig.as_bytes().len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_bcd_and_checked() {
        assert_eq!(parse_date("20261126"), Ok(0x2026_1126));
        assert!(parse_date("2026-11-26").is_err());
        assert!(parse_date("20261326").is_err());
        assert!(parse_date("2026112").is_err());
    }

    #[test]
    fn numbers_take_hex_or_decimal() {
        assert_eq!(parse_u64("0x8086"), Ok(0x8086));
        assert_eq!(parse_u32("32902"), Ok(32902));
        assert!(parse_u32("0x1_0000_0000").is_err());
        assert!(parse_u32("4294967296").is_err());
    }

    proptest::proptest! {
        /// The number, date and size parsers answer any string with a value or an error.
        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = parse_u64(&s);
            let _ = parse_u32(&s);
            let _ = parse_date(&s);
            let _ = s.parse::<crate::size::ByteSize>();
        }

        /// Numbers round-trip in both notations, and an 8-digit date is valid iff its month
        /// and day are in range.
        #[test]
        fn parsers_round_trip(n in proptest::num::u64::ANY, year in 0u32..10000, month in 0u32..14, day in 0u32..33) {
            proptest::prop_assert_eq!(parse_u64(&n.to_string()), Ok(n));
            proptest::prop_assert_eq!(parse_u64(&format!("{n:#x}")), Ok(n));
            proptest::prop_assert_eq!(parse_u32(&n.to_string()).is_ok(), n <= u64::from(u32::MAX));
            let date = format!("{year:04}{month:02}{day:02}");
            let valid = (1..=12).contains(&month) && (1..=31).contains(&day);
            proptest::prop_assert_eq!(parse_date(&date).is_ok(), valid);
        }
    }
}
