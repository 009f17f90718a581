//! Where enclaves live: the kernel's `/dev/sgx_enclave` through a file descriptor, or the
//! sgxemu emulator installed in this process.
//!
//! Both kinds speak the same uapi (the kernel's ioctl structures, `mmap` of the enclave
//! file, `__vdso_sgx_enter_enclave`), so everything above this module — loading, entering,
//! EDMM — is one code path. The [`Device::kernel`] kind is exactly what runs on SGX2
//! hardware; under `sgxemu run` the same calls reach the emulated driver through the
//! preloaded library.

use std::ffi::{CStr, c_int};
use std::fmt;

use crate::vdso;

/// An errno value from the device (`ENOMEM`, `EBUSY`, …).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's `errno` after a failed libc call.
    fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }

    /// The symbolic name (`EBUSY`), or the number if it has none here.
    pub fn name(self) -> String {
        let known = [
            (libc::EPERM, "EPERM"),
            (libc::EINTR, "EINTR"),
            (libc::EIO, "EIO"),
            (libc::EBADF, "EBADF"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::ENOMEM, "ENOMEM"),
            (libc::EACCES, "EACCES"),
            (libc::EFAULT, "EFAULT"),
            (libc::EBUSY, "EBUSY"),
            (libc::ENODEV, "ENODEV"),
            (libc::EINVAL, "EINVAL"),
            (libc::ENOENT, "ENOENT"),
            (libc::ENOTTY, "ENOTTY"),
            (libc::ECANCELED, "ECANCELED"),
        ];
        known.iter().find(|(n, _)| *n == self.0).map_or_else(|| format!("errno {}", self.0), |(_, s)| (*s).to_owned())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

/// Why a device is not available.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The kernel has no SGX support (or no SGX hardware).
    #[error(
        "this kernel offers no SGX: its vDSO has no __vdso_sgx_enter_enclave (run the program under \
         `sgxemu run`, or use the in-process emulator)"
    )]
    NoVdsoEntry,
    /// `/dev/sgx_enclave` cannot be opened.
    #[error("cannot open /dev/sgx_enclave: {0}")]
    Open(Errno),
    /// The in-process emulator did not start.
    #[error("cannot start the emulator: {0}")]
    Emulator(String),
}

/// Which implementation of the SGX driver a [`Device`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The kernel's `/dev/sgx_enclave` via system calls (real hardware, or `sgxemu run`).
    Kernel,
    /// The sgxemu engine installed in this process (no preload, no hardware).
    #[cfg(feature = "emulator")]
    Emulated,
}

/// A source of enclaves: opens enclave files, issues their ioctls, maps them, and enters
/// them through the vDSO.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    kind: DeviceKind,
    /// `__vdso_sgx_enter_enclave`.
    enter: u64,
}

/// An open `/dev/sgx_enclave`: one enclave. Closed on drop.
#[derive(Debug)]
pub struct EnclaveFile {
    device: Device,
    fd: c_int,
}

const ENCLAVE_PATH: &CStr = c"/dev/sgx_enclave";

impl Device {
    /// The kernel's driver: `/dev/sgx_enclave` and the vDSO's `__vdso_sgx_enter_enclave`
    /// (what SGX2 hardware runs; what `sgxemu run` emulates).
    ///
    /// # Errors
    /// When the vDSO has no SGX entry point (a kernel without SGX support), or the device
    /// cannot be opened.
    pub fn kernel() -> Result<Device, DeviceError> {
        let enter = vdso::find_symbol(c"__vdso_sgx_enter_enclave").ok_or(DeviceError::NoVdsoEntry)?;
        let device = Device { kind: DeviceKind::Kernel, enter };
        // Fail early and clearly when the device node is missing.
        drop(device.open().map_err(DeviceError::Open)?);
        Ok(device)
    }

    /// The sgxemu emulator in this process: its driver and synthetic vDSO, with enclave
    /// code running natively under signal-based emulation. Platform settings come from
    /// `SGXEMU_EPC` / `SGXEMU_SGX1` as for `sgxemu run`.
    ///
    /// # Errors
    /// When the engine cannot be started (e.g. no memory for the EPC).
    #[cfg(feature = "emulator")]
    pub fn emulated() -> Result<Device, DeviceError> {
        sgxemu_native::Engine::start().map_err(|e| DeviceError::Emulator(e.to_string()))?;
        Self::emulated_device()
    }

    /// The emulator with an explicit platform (EPC size, SGX1/SGX2). One process has one
    /// emulated platform: if it already runs, `config` is ignored.
    ///
    /// # Errors
    /// As [`emulated`](Self::emulated).
    #[cfg(feature = "emulator")]
    pub fn emulated_with(config: sgxemu_native::PlatformConfig) -> Result<Device, DeviceError> {
        sgxemu_native::Engine::start_with(config).map_err(|e| DeviceError::Emulator(e.to_string()))?;
        Self::emulated_device()
    }

    #[cfg(feature = "emulator")]
    fn emulated_device() -> Result<Device, DeviceError> {
        let vdso = sgxemu_native::vdso::vdso(sgxemu_native::enclu::soft_eenter)
            .ok_or_else(|| DeviceError::Emulator("the synthetic vDSO could not be built".into()))?;
        Ok(Device { kind: DeviceKind::Emulated, enter: vdso.enter_enclave })
    }

    /// The kind of driver behind this device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The address of `__vdso_sgx_enter_enclave`.
    pub(crate) fn enter_enclave(&self) -> u64 {
        self.enter
    }

    /// Opens a new enclave file.
    ///
    /// # Errors
    /// The errno of `open`.
    pub fn open(&self) -> Result<EnclaveFile, Errno> {
        match self.kind {
            DeviceKind::Kernel => {
                // SAFETY: a NUL-terminated path and plain flags.
                let fd = unsafe { libc::open(ENCLAVE_PATH.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(Errno::last());
                }
                Ok(EnclaveFile { device: *self, fd })
            }
            #[cfg(feature = "emulator")]
            DeviceKind::Emulated => {
                // A descriptor number of our own, as the preload gets from its open().
                // SAFETY: a NUL-terminated path and plain flags.
                let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(Errno::last());
                }
                engine().opened("/dev/sgx_enclave", fd);
                Ok(EnclaveFile { device: *self, fd })
            }
        }
    }
}

#[cfg(feature = "emulator")]
fn engine() -> &'static sgxemu_native::Engine {
    sgxemu_native::Engine::get().expect("an Emulated device exists only once the engine started")
}

/// Turns a libc return value into a result.
fn check(ret: c_int) -> Result<(), Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

impl EnclaveFile {
    /// The file descriptor.
    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// The device this file belongs to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `ioctl(fd, request, arg)` with an SGX argument structure. Crate-private: the kernel
    /// writes back as many bytes as `request` encodes, so `T` must be that request's
    /// structure — which this crate's callers guarantee and a safe public API could not.
    ///
    /// # Errors
    /// The driver's errno.
    pub(crate) fn ioctl<T: zerocopy::IntoBytes>(&self, request: u32, arg: &mut T) -> Result<(), Errno> {
        let arg = (arg as *mut T).cast::<libc::c_void>();
        match self.device.kind {
            // SAFETY: `arg` is a live, exclusively borrowed uapi structure of the size the
            // request encodes; the pointers inside it are the caller's to keep valid, and
            // every caller in this crate passes buffers that outlive the call.
            DeviceKind::Kernel => check(unsafe { libc::ioctl(self.fd, request as _, arg) }),
            #[cfg(feature = "emulator")]
            DeviceKind::Emulated => engine().ioctl(self.fd, request, arg as u64).map_err(|e| Errno(e.0)),
        }
    }

    /// `mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, fd, 0)`: maps enclave pages at their
    /// ELRANGE address. Crate-private, like the two below: given any address they would
    /// replace memory Rust code owns.
    ///
    /// # Errors
    /// The driver's errno (e.g. `EACCES` when `prot` exceeds a page's maximum).
    pub(crate) fn map(&self, addr: u64, len: u64, prot: c_int) -> Result<(), Errno> {
        let flags = libc::MAP_SHARED | libc::MAP_FIXED;
        match self.device.kind {
            DeviceKind::Kernel => {
                // SAFETY: MAP_FIXED inside the ELRANGE reservation this enclave owns; no
                // Rust object lives there.
                let ret = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, prot, flags, self.fd, 0) };
                if ret == libc::MAP_FAILED { Err(Errno::last()) } else { Ok(()) }
            }
            #[cfg(feature = "emulator")]
            DeviceKind::Emulated => engine().mmap(addr, len, prot, flags, self.fd).map(drop).map_err(|e| Errno(e.0)),
        }
    }

    /// `mprotect(addr, len, prot)` on enclave pages.
    ///
    /// # Errors
    /// The driver's errno.
    pub(crate) fn protect(&self, addr: u64, len: u64, prot: c_int) -> Result<(), Errno> {
        match self.device.kind {
            // SAFETY: changes protections of this enclave's own mapping only.
            DeviceKind::Kernel => check(unsafe { libc::mprotect(addr as *mut libc::c_void, len as usize, prot) }),
            #[cfg(feature = "emulator")]
            DeviceKind::Emulated => engine().mprotect(addr, len, prot).map_err(|e| Errno(e.0)),
        }
    }

    /// `munmap(addr, len)` of enclave pages.
    ///
    /// # Errors
    /// The errno of `munmap`.
    pub(crate) fn unmap(&self, addr: u64, len: u64) -> Result<(), Errno> {
        match self.device.kind {
            // SAFETY: unmaps this enclave's own mapping; no Rust object lives there.
            DeviceKind::Kernel => check(unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) }),
            #[cfg(feature = "emulator")]
            DeviceKind::Emulated => engine().munmap(addr, len).map_err(|e| Errno(e.0)),
        }
    }
}

impl Drop for EnclaveFile {
    fn drop(&mut self) {
        #[cfg(feature = "emulator")]
        if self.device.kind == DeviceKind::Emulated {
            engine().closed(self.fd);
        }
        // SAFETY: closes the descriptor this value owns, once.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_and_messages() {
        assert_eq!(Errno(libc::EBUSY).name(), "EBUSY");
        assert_eq!(Errno(4242).name(), "errno 4242");
        assert!(Errno(libc::ENOMEM).to_string().starts_with("ENOMEM ("));
    }

    #[test]
    fn kernel_device_without_sgx_is_a_clear_error() {
        // This machine has no SGX hardware (and tests do not run under `sgxemu run`):
        // the vDSO has no SGX entry point, or the device node is missing.
        if std::path::Path::new("/dev/sgx_enclave").exists() {
            return;
        }
        let err = Device::kernel().unwrap_err();
        assert!(matches!(err, DeviceError::NoVdsoEntry | DeviceError::Open(Errno(libc::ENOENT))), "{err}");
    }
}
