//! Reading a file named on the command line: a regular file only, and no bigger than the
//! caller's limit, so that a FIFO, `/dev/zero` or `/dev/urandom` gets one clear line instead
//! of a read that never ends or fills memory.
//!
//! Non-regular files are refused rather than read up to the limit: no input of `sgxemu`
//! (an enclave, a SIGSTRUCT, a key) is produced by a stream in practice, a FIFO without a
//! writer would block the open, and a character device would be read to the limit for
//! nothing. The file is opened with `O_NONBLOCK` (which a FIFO needs so the open returns at
//! once, and a regular file ignores) and checked with `fstat` on the open descriptor, so a
//! path swapped between a check and the open cannot slip through.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest enclave file (ELF or SGXS) the commands read: 1 GiB. Enclave programs are
/// megabytes; an SGXS file is about 1.27 times the measured part of its enclave, so this
/// also bounds what `measure --sgxs` writes (a file it could not read back is useless).
pub const MAX_ENCLAVE_FILE: u64 = 1 << 30;

/// The largest key file read: a PEM RSA-3072 private key is about 2.5 KiB.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputFileError {
    /// open, fstat or read failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("cannot read {path}: it is a {kind}, not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Over the limit.
    #[error("cannot read {path}: it is larger than {limit} bytes, the most this command reads")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

/// What kind of file a non-regular one is, for the message.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Reads the regular file at `path` (symbolic links followed), refusing one of more than
/// `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputFileError> {
    let io = |source| InputFileError::Io { path: path.to_path_buf(), source };
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.file_type().is_file() {
        return Err(InputFileError::NotRegular { path: path.to_path_buf(), kind: kind_of(metadata.file_type()) });
    }
    let too_large = || InputFileError::TooLarge { path: path.to_path_buf(), limit };
    if metadata.len() > limit {
        return Err(too_large());
    }
    // The file may grow after fstat: read at most one byte past the limit to notice.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sgxemu-input-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }

    #[test]
    fn regular_files_up_to_the_limit_are_read() {
        let dir = temp_dir("regular");
        let path = dir.join("f");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_regular(&path, 100).unwrap(), [7u8; 100]);
        assert!(matches!(read_regular(&path, 99), Err(InputFileError::TooLarge { limit: 99, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = temp_dir("special");
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here.
        assert!(matches!(read_regular(&fifo, 1 << 20), Err(InputFileError::NotRegular { kind: "FIFO", .. })));
        for device in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let result = read_regular(Path::new(device), 1 << 20);
            assert!(matches!(result, Err(InputFileError::NotRegular { kind: "character device", .. })), "{device}");
        }
        assert!(matches!(read_regular(&dir, 1 << 20), Err(InputFileError::NotRegular { kind: "directory", .. })));
        assert!(matches!(read_regular(&dir.join("missing"), 1), Err(InputFileError::Io { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
