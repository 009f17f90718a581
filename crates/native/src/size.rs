//! Byte sizes: `128M`, `64GiB`, `4096`, `1g` — for the command line and for `SGXEMU_EPC`.

use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from a number with an optional binary-unit suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Empty or no leading digits.
    #[error("'{0}' is not a size: use a number with an optional unit, like 128M, 64GiB or 4096")]
    NotANumber(String),
    /// Unknown suffix.
    #[error("'{input}' has an unknown unit '{unit}': use K, M, G or T (optionally KiB, MiB, GiB, TiB)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The suffix found.
        unit: String,
    },
    /// Does not fit in 64 bits.
    #[error("'{0}' is too large")]
    Overflow(String),
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(digits_end);
        let number: u64 = number.parse().map_err(|_| SizeError::NotANumber(input.to_string()))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(SizeError::UnknownUnit { input: input.to_string(), unit: unit.to_string() }),
        };
        let bytes = number.checked_mul(1u64 << shift).ok_or_else(|| SizeError::Overflow(input.to_string()))?;
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, name) in UNITS {
            let unit = 1u64 << shift;
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{} {name}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("128M".parse(), Ok(ByteSize(128 << 20)));
        assert_eq!("64GiB".parse(), Ok(ByteSize(64 << 30)));
        assert_eq!(" 1g ".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("2 KiB".parse(), Ok(ByteSize(2048)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        assert!(matches!("".parse::<ByteSize>(), Err(SizeError::NotANumber(_))));
        assert!(matches!("M".parse::<ByteSize>(), Err(SizeError::NotANumber(_))));
        assert!(matches!("12Q".parse::<ByteSize>(), Err(SizeError::UnknownUnit { .. })));
        assert!(matches!("99999999999T".parse::<ByteSize>(), Err(SizeError::Overflow(_))));
        let msg = "12Q".parse::<ByteSize>().unwrap_err().to_string();
        assert!(msg.contains("use K, M, G or T"), "{msg}");
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(128 << 20).to_string(), "128 MiB");
        assert_eq!(ByteSize(64 << 30).to_string(), "64 GiB");
        assert_eq!(ByteSize(6144).to_string(), "6 KiB");
        assert_eq!(ByteSize(100).to_string(), "100 bytes");
    }
}
