//! Results in the kernel's own shape: an errno value, as user space sees it after `-1`.

use std::fmt;

/// A Linux errno (positive), as `errno` holds it after a failing system call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $value:expr, $text:expr;)*) => {
        impl Errno {
            $(
                #[doc = $text]
                pub const $name: Errno = Errno($value);
            )*

            /// The symbolic name (`"EINVAL"`), or `None` for a value this crate does not use.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted.";
    EINTR = 4, "Interrupted system call (what ERESTARTSYS becomes for a caller without restart).";
    EIO = 5, "I/O error: an ENCLS leaf faulted.";
    EAGAIN = 11, "Try again: page being reclaimed or no free EPC to reload it.";
    ENOMEM = 12, "Out of memory (EPC exhausted with nothing reclaimable).";
    EACCES = 13, "Permission denied.";
    EFAULT = 14, "Bad address, or an EMODPR/EMODT/ETRACK failure.";
    EBUSY = 16, "Busy: another ioctl on this enclave, or the page exists already.";
    ENODEV = 19, "No such device: the part lacks SGX2.";
    EINVAL = 22, "Invalid argument.";
    ENOTTY = 25, "Unknown ioctl.";
    ERESTARTSYS = 512, "Kernel-internal: restart after the pending signal is handled.";
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

/// A driver result.
pub type KResult<T> = Result<T, Errno>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(Errno::EINVAL.0, 22);
        assert_eq!(format!("{:?}", Errno::ENOTTY), "ENOTTY");
        assert_eq!(Errno(99).name(), None);
        assert_eq!(format!("{}", Errno(99)), "Errno(99)");
    }
}
