//! The emulated platform as the file system shows it: what a program that looks for SGX
//! finds through paths, before or instead of opening `/dev/sgx_enclave`.
//!
//! - `/dev/sgx_enclave`, `/dev/sgx_provision`: character devices (misc major 10), and the
//!   udev links `/dev/sgx/enclave` → `../sgx_enclave`, `/dev/sgx/provision` →
//!   `../sgx_provision` in a directory `/dev/sgx`, as Intel's and systemd's udev rules make
//!   them. Modes as those rules give: the enclave node 0666, the provisioning node 0660 in
//!   group `sgx_prv` — reported here as the caller's effective group (a member of it), so
//!   that `access` and `open` agree.
//! - `/proc/cpuinfo`: the host's, with `sgx` and `sgx_lc` added to every `flags` line.
//! - `/sys/devices/system/node/node0/x86/sgx_total_bytes`: the EPC size (Linux 6.x).
//! - `/dev/cpu/N/msr` for every CPU N the host has: read-only, answering IA32_FEATURE_CONTROL
//!   (0x3A: locked, SGX and launch control enabled) and IA32_SGXLEPUBKEYHASH0..3
//!   (0x8C..0x8F: the part's reset values, Intel's launch key hash); any other MSR is EIO,
//!   as the msr driver answers one that faults. The node is 0444 (the kernel's is 0600,
//!   root only: the emulated values are no secret). Reads through `read`, `pread`, `readv`
//!   and `preadv` ([`msr_readv`]) give the same bytes.
//! - `/proc/self/auxv`, `/proc/thread-self/auxv`, `/proc/<own pid>/auxv`: the host's, with
//!   AT_SYSINFO_EHDR naming the synthetic vDSO (`crate::auxv`).
//! - `/proc/self/maps` (and the other spellings): the host's, with each enclave mapping one
//!   line naming `/dev/sgx_enclave`, as the kernel shows it.
//!
//! Only absolute paths spelled as above are recognised (no `..` or `//`), and the names of
//! `/dev`'s emulated entries relative to a descriptor of `/dev` ([`in_dev_directory`]: how
//! `find` and other fts users look at what a listing gave them), and relative names while
//! the program's working directory is the emulated `/dev/sgx` ([`in_working_directory`],
//! [`chdir`]). This module decides and generates; the preload library only interposes the
//! C library's entry points and calls it.

use std::ffi::CStr;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};

use libc::{c_int, c_long};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use sgxemu_driver::os::Prot;

use crate::device::{DeviceFile, ENCLAVE_PATH, PROVISION_PATH};
use crate::engine::Engine;
use crate::sys;

/// An emulated device node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// `/dev/sgx_enclave`.
    Enclave,
    /// `/dev/sgx_provision`.
    Provision,
}

impl Device {
    /// The node's path.
    pub fn path(self) -> &'static str {
        match self {
            Device::Enclave => ENCLAVE_PATH,
            Device::Provision => PROVISION_PATH,
        }
    }

    /// What the udev link in `/dev/sgx` holds.
    pub fn link_target(self) -> &'static str {
        match self {
            Device::Enclave => "../sgx_enclave",
            Device::Provision => "../sgx_provision",
        }
    }

    /// The misc minor (dynamic on Linux; these are the numbers it usually hands out).
    fn minor(self) -> u32 {
        match self {
            Device::Enclave => 125,
            Device::Provision => 126,
        }
    }
}

/// A path the emulator answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// A device node, or (`link`) its udev link in `/dev/sgx`.
    Device {
        /// Which device.
        device: Device,
        /// The path is the symbolic link `/dev/sgx/…`.
        link: bool,
    },
    /// The directory `/dev/sgx`.
    SgxDir,
    /// `/proc/cpuinfo`.
    CpuInfo,
    /// `/sys/devices/system/node/node0/x86/sgx_total_bytes`.
    SgxTotalBytes,
    /// `/dev/cpu/N/msr`.
    Msr(u32),
    /// This process's `/proc/…/auxv`.
    Auxv,
    /// This process's `/proc/…/maps`.
    Maps,
}

/// The path of node 0's EPC size in sysfs.
pub const SGX_TOTAL_BYTES_PATH: &str = "/sys/devices/system/node/node0/x86/sgx_total_bytes";

/// The node `path` names, by its spelling alone (see [`resolve`] for MSR nodes of CPUs that
/// exist).
pub fn classify(path: &[u8]) -> Option<Node> {
    if path.len() < 5 || !matches!(&path[..5], b"/dev/" | b"/proc" | b"/sys/") {
        return None;
    }
    let node = match path {
        b"/dev/sgx_enclave" => Node::Device { device: Device::Enclave, link: false },
        b"/dev/sgx_provision" => Node::Device { device: Device::Provision, link: false },
        b"/dev/sgx/enclave" => Node::Device { device: Device::Enclave, link: true },
        b"/dev/sgx/provision" => Node::Device { device: Device::Provision, link: true },
        b"/dev/sgx" | b"/dev/sgx/" => Node::SgxDir,
        b"/proc/cpuinfo" => Node::CpuInfo,
        _ if path == SGX_TOTAL_BYTES_PATH.as_bytes() => Node::SgxTotalBytes,
        _ if own_proc_file(path, b"auxv") => Node::Auxv,
        _ if own_proc_file(path, b"maps") => Node::Maps,
        _ => {
            let cpu = path.strip_prefix(b"/dev/cpu/")?.strip_suffix(b"/msr")?;
            return cpu_number(cpu).map(Node::Msr);
        }
    };
    Some(node)
}

/// Whether `path` is `/proc/self/NAME`, `/proc/thread-self/NAME` or `/proc/<own pid>/NAME`.
fn own_proc_file(path: &[u8], name: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/proc/").and_then(|rest| rest.strip_suffix(name)) else { return false };
    let Some(who) = rest.strip_suffix(b"/") else { return false };
    own_proc_dir(who)
}

/// Whether `who` (`self`, `thread-self` or a decimal pid) is this process in `/proc`.
fn own_proc_dir(who: &[u8]) -> bool {
    match who {
        b"self" | b"thread-self" => true,
        digits => {
            !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && digits[0] != b'0'
                && std::str::from_utf8(digits).ok().and_then(|d| d.parse::<i32>().ok()) == Some(sys::getpid())
        }
    }
}

/// A CPU number as the kernel spells it (decimal, no sign, no leading zeros).
fn cpu_number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 6 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// [`classify`], with MSR nodes only for CPUs `/sys/devices/system/cpu` lists, and a
/// relative path taken in the emulated working directory `/dev/sgx` if that is where the
/// program is ([`in_working_directory`]).
pub fn resolve(path: &[u8]) -> Option<Node> {
    let absolute = in_working_directory(path);
    let path = absolute.as_deref().unwrap_or(path);
    match classify(path)? {
        Node::Msr(cpu) if !cpu_exists(cpu) => None,
        node => Some(node),
    }
}

fn cpu_exists(cpu: u32) -> bool {
    let Ok(path) = std::ffi::CString::new(format!("/sys/devices/system/cpu/cpu{cpu}")) else { return false };
    // SAFETY: faccessat only reads the C string.
    unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD as c_long, path.as_ptr(), libc::F_OK as c_long) == 0 }
}

/// Whether the program's working directory is the emulated `/dev/sgx`: `chdir` and
/// `fchdir` to it (where the host has no `/dev/sgx`) make the host's working directory
/// `/dev` and set this; any other successful `chdir`/`fchdir` clears it. Process-wide, as
/// the working directory is; a fork child inherits it with the directory.
static CWD_IS_SGX_DIR: AtomicBool = AtomicBool::new(false);

/// The absolute spelling of a relative `path` taken in the emulated working directory
/// `/dev/sgx`: `.` is `/dev/sgx`, `enclave` and `provision` its links, `..` is `/dev` and
/// `../NAME` is `/dev/NAME` (so the links' targets `../sgx_enclave`, `../sgx_provision`
/// resolve); `./` prefixes are dropped. `None` for an absolute path, when the working
/// directory is another, or for another name in it (the host's `/dev` then answers).
pub fn in_working_directory(path: &[u8]) -> Option<Vec<u8>> {
    if path.first() == Some(&b'/') || path.is_empty() || !CWD_IS_SGX_DIR.load(Ordering::Relaxed) {
        return None;
    }
    let mut rest = path;
    while let Some(after) = rest.strip_prefix(b"./") {
        rest = after;
    }
    let absolute: Vec<u8> = match rest {
        b"" | b"." => b"/dev/sgx".to_vec(),
        b"enclave" | b"provision" => [&b"/dev/sgx/"[..], rest].concat(),
        b".." | b"../" => b"/dev".to_vec(),
        _ => [&b"/dev/"[..], rest.strip_prefix(b"../")?].concat(),
    };
    Some(absolute)
}

/// What `chdir(path)` does about the emulated `/dev/sgx`.
#[derive(Debug, PartialEq, Eq)]
pub enum Chdir {
    /// The host's chdir, to this path (the spelling [`in_working_directory`] gives a
    /// relative one, else the program's); then [`changed_directory`]`(false)` if it worked.
    Host(Option<std::ffi::CString>),
    /// The host's chdir to `/dev`; then [`changed_directory`]`(true)` if it worked.
    IntoSgxDir,
    /// The call fails with this errno.
    Fail(c_int),
}

/// `chdir(path)`'s plan.
pub fn chdir(path: &[u8]) -> Chdir {
    let absolute = in_working_directory(path);
    let spelled = absolute.as_deref().unwrap_or(path);
    match resolve(spelled) {
        Some(Node::SgxDir) if !host_has_sgx_dir() => Chdir::IntoSgxDir,
        Some(Node::Device { .. } | Node::Msr(_) | Node::SgxTotalBytes | Node::CpuInfo | Node::Auxv | Node::Maps) => {
            Chdir::Fail(libc::ENOTDIR)
        }
        _ => Chdir::Host(absolute.and_then(|a| std::ffi::CString::new(a).ok())),
    }
}

/// Whether `fchdir(fd)` enters the emulated `/dev/sgx` (the descriptor stands for it: the
/// host's chdir of it enters `/dev`).
pub fn fchdir_into_sgx_dir(fd: c_int) -> bool {
    descriptor_node(fd) == Some(Node::SgxDir)
}

/// After a successful `chdir`/`fchdir`: whether the working directory is now the emulated
/// `/dev/sgx`.
pub fn changed_directory(into_sgx_dir: bool) {
    CWD_IS_SGX_DIR.store(into_sgx_dir, Ordering::Relaxed);
}

/// What `getcwd` reports if the working directory is the emulated `/dev/sgx` (and the
/// host's is still `/dev`: a change the emulator did not see leaves the host's answer).
pub fn emulated_cwd() -> Option<&'static CStr> {
    if !CWD_IS_SGX_DIR.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: all-zero is a valid `struct stat`.
    let (mut here, mut dev): (libc::stat, libc::stat) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: newfstatat reads the C strings and fills the structs.
    let both = unsafe {
        libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD as c_long, c".".as_ptr(), &raw mut here, 0) == 0
            && libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD as c_long, c"/dev".as_ptr(), &raw mut dev, 0) == 0
    };
    (both && (here.st_dev, here.st_ino) == (dev.st_dev, dev.st_ino)).then_some(c"/dev/sgx")
}

/// `getcwd(buf, size)` as the system call answers it (the length with the NUL, or ERANGE)
/// if the working directory is the emulated `/dev/sgx`: the bytes to copy.
pub fn getcwd(size: usize) -> Option<Result<&'static [u8], c_int>> {
    let cwd = emulated_cwd()?.to_bytes_with_nul();
    Some(if size < cwd.len() { Err(libc::ERANGE) } else { Ok(cwd) })
}

fn host_has_sgx_dir() -> bool {
    // SAFETY: faccessat reads the C string.
    unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD as c_long, c"/dev/sgx".as_ptr(), libc::F_OK) == 0 }
}

/// The absolute path `path` names relative to directory descriptor `dirfd`, if it is one of
/// the emulated entries of `/dev` (`sgx`, `sgx_enclave`, `sgx_provision`, `sgx/enclave`,
/// `sgx/provision`) and `dirfd` is a descriptor of `/dev`; `None` otherwise (one string
/// comparison for any other name).
pub fn in_dev_directory(dirfd: c_int, path: &[u8]) -> Option<&'static CStr> {
    if matches!(path, b"enclave" | b"provision") && descriptor_node(dirfd) == Some(Node::SgxDir) {
        return Some(if path == b"enclave" { c"/dev/sgx/enclave" } else { c"/dev/sgx/provision" });
    }
    let absolute = match path {
        b"sgx" | b"sgx/" => c"/dev/sgx",
        b"sgx_enclave" => c"/dev/sgx_enclave",
        b"sgx_provision" => c"/dev/sgx_provision",
        b"sgx/enclave" => c"/dev/sgx/enclave",
        b"sgx/provision" => c"/dev/sgx/provision",
        _ => return None,
    };
    (dirfd >= 0 && crate::dev_listing::is_dev_descriptor(dirfd)).then_some(absolute)
}

/// `path` relative to `dirfd` as this module spells it: [`in_dev_directory`]'s absolute
/// path, or `path` itself.
///
/// # Safety
/// `path` is null or a C string.
pub unsafe fn at_path(dirfd: c_int, path: *const libc::c_char) -> *const libc::c_char {
    if path.is_null() {
        return path;
    }
    // SAFETY: the caller passes a C string.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.first() == Some(&b'/') {
        return path;
    }
    in_dev_directory(dirfd, bytes).map_or(path, CStr::as_ptr)
}

/// [`resolve`] for a C string (null: none).
///
/// # Safety
/// `path` is null or a C string.
pub unsafe fn resolve_c(path: *const libc::c_char) -> Option<Node> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller passes a C string.
    resolve(unsafe { CStr::from_ptr(path) }.to_bytes())
}

/// What `stat` (`follow`) or `lstat` reports for `node`; `None`: the host's answer stands.
pub fn stat_of(node: Node, follow: bool) -> Option<libc::stat> {
    // SAFETY: all-zero is a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_nlink = 1;
    st.st_blksize = 4096;
    // devtmpfs, as the kernel's device nodes.
    st.st_dev = libc::makedev(0, 5);
    match node {
        Node::Device { device, link: true } if !follow => {
            st.st_mode = libc::S_IFLNK | 0o777;
            st.st_size = device.link_target().len() as i64;
            st.st_ino = 0x5600 + u64::from(device.minor());
        }
        Node::Device { device, .. } => {
            st.st_mode = libc::S_IFCHR | if device == Device::Enclave { 0o666 } else { 0o660 };
            st.st_rdev = libc::makedev(10, device.minor());
            st.st_ino = 0x5700 + u64::from(device.minor());
            if device == Device::Provision {
                // SAFETY: getegid has no preconditions.
                st.st_gid = unsafe { libc::getegid() };
            }
        }
        Node::SgxDir => {
            st.st_mode = libc::S_IFDIR | 0o755;
            st.st_nlink = 2;
            st.st_size = 80;
            st.st_ino = 0x5600;
        }
        Node::CpuInfo | Node::Auxv | Node::Maps => return None,
        Node::SgxTotalBytes => {
            st.st_mode = libc::S_IFREG | 0o444;
            st.st_size = 4096;
            st.st_dev = libc::makedev(0, 22);
            st.st_ino = 0x5800;
        }
        Node::Msr(cpu) => {
            st.st_mode = libc::S_IFCHR | 0o444;
            st.st_rdev = libc::makedev(202, cpu);
            st.st_ino = 0x10000 + u64::from(cpu);
        }
    }
    Some(st)
}

/// `st` as `statx` reports it (every basic field valid).
pub fn statx_of(st: &libc::stat) -> libc::statx {
    // SAFETY: all-zero is a valid `struct statx`.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    sx.stx_mask = libc::STATX_BASIC_STATS;
    sx.stx_blksize = st.st_blksize as u32;
    sx.stx_nlink = st.st_nlink as u32;
    sx.stx_uid = st.st_uid;
    sx.stx_gid = st.st_gid;
    sx.stx_mode = st.st_mode as u16;
    sx.stx_ino = st.st_ino;
    sx.stx_size = st.st_size as u64;
    sx.stx_blocks = st.st_blocks as u64;
    sx.stx_rdev_major = libc::major(st.st_rdev);
    sx.stx_rdev_minor = libc::minor(st.st_rdev);
    sx.stx_dev_major = libc::major(st.st_dev);
    sx.stx_dev_minor = libc::minor(st.st_dev);
    sx
}

/// `access(path, mode)` for `node` (`follow`: not AT_SYMLINK_NOFOLLOW); `None`: the host's
/// answer stands.
pub fn access(node: Node, mode: c_int) -> Option<Result<(), c_int>> {
    let denied = match node {
        Node::Device { .. } => libc::X_OK,
        Node::SgxDir => libc::W_OK,
        Node::CpuInfo | Node::Auxv | Node::Maps => return None,
        Node::SgxTotalBytes | Node::Msr(_) => libc::W_OK | libc::X_OK,
    };
    Some(if mode & denied != 0 { Err(libc::EACCES) } else { Ok(()) })
}

/// Whether `node` is one the emulator makes up entirely, so that it has no extended
/// attributes (`getxattr` ENODATA, `listxattr` empty, as devtmpfs nodes without an LSM
/// label); `false`: the host's answer stands.
pub fn without_xattrs(node: Node) -> bool {
    !matches!(node, Node::CpuInfo | Node::Auxv | Node::Maps)
}

/// The descriptors `open` gives for these paths.
///
/// `flags` are open(2)'s. `Ok(None)`: the path is the host's business after all (a host
/// directory `/dev/sgx`, `/proc/cpuinfo` opened for writing); `Err(errno)`. `/dev/sgx`,
/// where the host has none, opens read-only as a descriptor of `/dev` that `fstat`,
/// `fdopendir` (`dev_listing`) and names relative to it ([`in_dev_directory`]) take for
/// `/dev/sgx`.
pub fn open(node: Node, flags: c_int) -> Result<Option<c_int>, c_int> {
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
    let cloexec = flags & libc::O_CLOEXEC != 0;
    match node {
        Node::SgxDir => open_sgx_dir(writes, cloexec),
        Node::CpuInfo | Node::Auxv | Node::Maps if writes => Ok(None),
        _ if flags & libc::O_DIRECTORY != 0 => Err(libc::ENOTDIR),
        _ if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL => Err(libc::EEXIST),
        Node::Device { link: true, .. } if flags & libc::O_NOFOLLOW != 0 => Err(libc::ELOOP),
        Node::Device { device, .. } => open_device(device, flags & libc::O_ACCMODE, cloexec).map(Some),
        Node::SgxTotalBytes | Node::Msr(_) if writes => Err(libc::EACCES),
        Node::CpuInfo => {
            let host = read_host_file(c"/proc/cpuinfo").map_err(errno)?;
            content_fd(c"cpuinfo", &cpuinfo_with_sgx(&host), cloexec).map(Some).map_err(errno)
        }
        Node::Auxv => {
            let Some(vdso) = crate::vdso::vdso(crate::enclu::soft_eenter) else { return Ok(None) };
            let host = read_host_file(c"/proc/self/auxv").map_err(errno)?;
            content_fd(c"auxv", &crate::auxv::with_vdso(&host, vdso.base), cloexec).map(Some).map_err(errno)
        }
        Node::Maps => {
            let Some(engine) = own_engine() else { return Ok(None) };
            let host = read_host_file(c"/proc/self/maps").map_err(errno)?;
            let view = maps_with_enclaves(&host, &engine.space.mappings(), &enclave_mapping_stat());
            content_fd(c"maps", &view, cloexec).map(Some).map_err(errno)
        }
        Node::SgxTotalBytes => {
            let text = format!("{}\n", epc_size());
            content_fd(c"sgx_total_bytes", text.as_bytes(), cloexec).map(Some).map_err(errno)
        }
        Node::Msr(cpu) => {
            let fd = msr_file(cloexec).map_err(errno)?;
            MSRS.insert(fd, OpenFile::Msr { cpu, position: Arc::new(AtomicI64::new(0)) });
            Ok(Some(fd))
        }
    }
}

/// `open("/dev/sgx")`: the host's if it has one; otherwise a descriptor of `/dev` standing
/// for it (EISDIR for writing, as for any directory).
fn open_sgx_dir(writes: bool, cloexec: bool) -> Result<Option<c_int>, c_int> {
    if host_has_sgx_dir() {
        return Ok(None);
    }
    if writes {
        return Err(libc::EISDIR);
    }
    let fd = raw_open(c"/dev", libc::O_RDONLY | libc::O_DIRECTORY | if cloexec { libc::O_CLOEXEC } else { 0 })
        .map_err(errno)?;
    MSRS.insert(fd, OpenFile::SgxDir);
    Ok(Some(fd))
}

/// The device node's stat, for the inode and device numbers its mappings show.
fn enclave_mapping_stat() -> libc::stat {
    let node = Node::Device { device: Device::Enclave, link: false };
    // SAFETY: an all-zero stat is valid.
    stat_of(node, true).unwrap_or_else(|| unsafe { std::mem::zeroed() })
}

/// `/proc/self/maps` as the kernel shows it with the SGX driver: each enclave mapping one
/// line naming `/dev/sgx_enclave` (shared, with the mapping's protections), in place of the
/// host lines the emulator's reservations and EPC pages make in its range.
pub fn maps_with_enclaves(host: &[u8], enclaves: &[(std::ops::Range<u64>, Prot)], file: &libc::stat) -> Vec<u8> {
    let (major, minor) = (libc::major(file.st_dev), libc::minor(file.st_dev));
    let inode = file.st_ino;
    let line_of = |(range, prot): &(std::ops::Range<u64>, Prot)| {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        format!(
            "{:x}-{:x} {}{}{}s 00000000 {major:02x}:{minor:02x} {inode:<26}/dev/sgx_enclave\n",
            range.start,
            range.end,
            flag(prot.contains(Prot::READ), 'r'),
            flag(prot.contains(Prot::WRITE), 'w'),
            flag(prot.contains(Prot::EXEC), 'x'),
        )
    };
    let mut out = Vec::with_capacity(host.len());
    let mut pending = enclaves.iter().peekable();
    for line in host.split_inclusive(|&b| b == b'\n') {
        let Some((start, end)) = line_range(line) else {
            out.extend_from_slice(line);
            continue;
        };
        while let Some(enclave) = pending.next_if(|(range, _)| range.start <= start) {
            out.extend_from_slice(line_of(enclave).as_bytes());
        }
        // What the enclave mappings leave of the host line (the emulator's reservation of a
        // range can span two of them): kept with the line's other fields.
        let rest = &line[line.iter().position(|&b| b == b' ').unwrap_or(line.len())..];
        for piece in uncovered(start..end, enclaves) {
            if piece == (start..end) {
                out.extend_from_slice(line);
            } else {
                out.extend_from_slice(format!("{:x}-{:x}", piece.start, piece.end).as_bytes());
                out.extend_from_slice(rest);
            }
        }
    }
    for enclave in pending {
        out.extend_from_slice(line_of(enclave).as_bytes());
    }
    out
}

/// The parts of `range` outside every enclave mapping (sorted by address), in order.
fn uncovered(range: std::ops::Range<u64>, enclaves: &[(std::ops::Range<u64>, Prot)]) -> Vec<std::ops::Range<u64>> {
    let mut pieces = Vec::new();
    let mut at = range.start;
    for (enclave, _) in enclaves.iter().filter(|(e, _)| e.end > range.start && e.start < range.end) {
        if enclave.start > at {
            pieces.push(at..enclave.start);
        }
        at = at.max(enclave.end);
    }
    if at < range.end {
        pieces.push(at..range.end);
    }
    pieces
}

/// The address range at the start of a maps line.
fn line_range(line: &[u8]) -> Option<(u64, u64)> {
    let range = line.split(|&b| b == b' ').next()?;
    let text = std::str::from_utf8(range).ok()?;
    let (start, end) = text.split_once('-')?;
    Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?))
}

fn errno(e: io::Error) -> c_int {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn open_device(device: Device, access: c_int, cloexec: bool) -> Result<c_int, c_int> {
    let engine = match Engine::start() {
        Ok(engine) => engine,
        Err(e) => {
            sys::stderr_line(&format!("sgxemu: cannot start the emulated SGX platform: {e}\n"));
            return Err(libc::ENODEV);
        }
    };
    // A real descriptor keeps fd numbering, close and poll ordinary; its access mode is the
    // program's (mmap's checks read it back).
    let fd = raw_open(c"/dev/null", access | if cloexec { libc::O_CLOEXEC } else { 0 }).map_err(errno)?;
    engine.opened(device.path(), fd);
    Ok(fd)
}

/// openat(2) itself (never the C library's, which is interposed).
fn raw_open(path: &CStr, flags: c_int) -> io::Result<c_int> {
    // SAFETY: openat reads the C string; the descriptor it returns is the caller's.
    let fd = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD as c_long, path.as_ptr(), flags as c_long, 0) };
    if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(fd as c_int) }
}

/// The descriptor an emulated `/dev/cpu/N/msr` opens as: a read-only sparse memory file that
/// holds each MSR the part has at the offset of its index. The C library's read calls are
/// answered by the msr driver's rules ([`msr_pread`] and the rest); this is what a program's
/// own `read`/`pread64` instructions see, which no filter traps (trapping every read would
/// cost each one a signal round trip): the right value at an MSR's offset, with a plain
/// file's rules otherwise (a `read` moves the position; an MSR the part lacks reads as
/// zeros, not EIO).
fn msr_file(cloexec: bool) -> io::Result<c_int> {
    read_only_memfd(c"msr", cloexec, |memfd| {
        let config = platform_config();
        let indices =
            [sgxemu_arch::msr::IA32_FEATURE_CONTROL].into_iter().chain(sgxemu_arch::msr::IA32_SGXLEPUBKEYHASH);
        for index in indices {
            let Some(value) = msr_value(&config, index) else { continue };
            let bytes = value.to_le_bytes();
            // SAFETY: writes 8 bytes from `bytes` to our memfd at the MSR's offset.
            let n = unsafe {
                libc::syscall(libc::SYS_pwrite64, memfd as c_long, bytes.as_ptr(), bytes.len(), c_long::from(index))
            };
            if n != bytes.len() as c_long {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// The whole of a host file (procfs files report no size: read until the end).
fn read_host_file(path: &CStr) -> io::Result<Vec<u8>> {
    let fd = raw_open(path, libc::O_RDONLY | libc::O_CLOEXEC)?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 16384];
    let result = loop {
        // SAFETY: reads into `chunk`, which is writable for its length.
        let n = unsafe { libc::syscall(libc::SYS_read, fd as c_long, chunk.as_mut_ptr(), chunk.len()) };
        match n {
            0 => break Ok(data),
            n if n > 0 => data.extend_from_slice(&chunk[..n as usize]),
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => break Err(io::Error::last_os_error()),
        }
    };
    let _ = sys::close(fd);
    result
}

/// A read-only descriptor of `data` (a memfd reopened read-only through procfs, so the
/// program cannot change what later opens read).
fn content_fd(name: &CStr, data: &[u8], cloexec: bool) -> io::Result<c_int> {
    read_only_memfd(name, cloexec, |memfd| {
        let mut written = 0;
        while written < data.len() {
            let rest = &data[written..];
            // SAFETY: writes from `rest`, readable for its length, to our memfd.
            let n = unsafe { libc::syscall(libc::SYS_write, memfd as c_long, rest.as_ptr(), rest.len()) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(io::Error::last_os_error());
            }
            written += n as usize;
        }
        Ok(())
    })
}

/// A read-only descriptor of a new memory file named `name` that `fill` has written.
fn read_only_memfd(name: &CStr, cloexec: bool, fill: impl FnOnce(c_int) -> io::Result<()>) -> io::Result<c_int> {
    let memfd = sys::memfd(name, 0)?;
    let result = fill(memfd).and_then(|()| {
        let path = std::ffi::CString::new(format!("/proc/self/fd/{memfd}")).map_err(io::Error::other)?;
        raw_open(&path, libc::O_RDONLY | if cloexec { libc::O_CLOEXEC } else { 0 })
    });
    let _ = sys::close(memfd);
    result
}

/// The EPC size of this process's platform (its engine's, or the environment's before one
/// runs).
fn epc_size() -> u64 {
    match Engine::get() {
        Some(engine) => engine.processor.config().epc_size,
        None => crate::config::from_env().epc_size,
    }
}

/// `/proc/cpuinfo` of an SGX2 part with flexible launch control: ` sgx` and ` sgx_lc`
/// appended to every `flags` line that lacks them (the host's may have them already).
pub fn cpuinfo_with_sgx(host: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(host.len() + 1024);
    for line in host.split_inclusive(|&b| b == b'\n') {
        let (body, newline) = match line.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        out.extend_from_slice(body);
        let is_flags = body.iter().position(|&b| b == b':').is_some_and(|colon| body[..colon].trim_ascii() == b"flags");
        if is_flags {
            let words: Vec<&[u8]> =
                body[body.iter().position(|&b| b == b':').map_or(0, |c| c + 1)..].split(|&b| b == b' ').collect();
            for flag in [&b"sgx"[..], b"sgx_lc"] {
                if !words.contains(&flag) {
                    out.push(b' ');
                    out.extend_from_slice(flag);
                }
            }
        }
        out.extend_from_slice(newline);
    }
    out
}

/// What `readlink(path)` returns for the emulator's paths: the udev links' targets, and
/// for `/proc/self/fd/N` (also `/proc/thread-self/fd/N`, `/proc/<own pid>/fd/N`,
/// `/dev/fd/N`) of an emulated descriptor, its node. `Some(Err(EINVAL))`: a node that is no
/// link; `None`: the host's answer stands.
pub fn readlink(path: &[u8]) -> Option<Result<String, c_int>> {
    if own_proc_file(path, b"cwd") {
        return emulated_cwd().map(|cwd| Ok(cwd.to_string_lossy().into_owned()));
    }
    if let Some(fd) = proc_fd(path) {
        return descriptor_node(fd).map(|node| match node {
            Node::Device { device, .. } => Ok(device.path().to_owned()),
            Node::Msr(cpu) => Ok(format!("/dev/cpu/{cpu}/msr")),
            Node::SgxDir => Ok("/dev/sgx".to_owned()),
            _ => Err(libc::EINVAL),
        });
    }
    match resolve(path)? {
        Node::Device { device, link: true } => Some(Ok(device.link_target().to_owned())),
        Node::CpuInfo | Node::Auxv | Node::Maps => None,
        _ => Some(Err(libc::EINVAL)),
    }
}

/// The descriptor number a `/proc/…/fd/N` or `/dev/fd/N` path names.
fn proc_fd(path: &[u8]) -> Option<c_int> {
    let rest = if let Some(rest) = path.strip_prefix(b"/dev/fd/") {
        rest
    } else {
        let rest = path.strip_prefix(b"/proc/")?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let (who, rest) = rest.split_at(slash);
        if !own_proc_dir(who) {
            return None;
        }
        rest.strip_prefix(b"/fd/")?
    };
    if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) || (rest.len() > 1 && rest[0] == b'0') {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// The canonical path (`realpath`) of a device node or link.
pub fn canonical(path: &[u8]) -> Option<&'static str> {
    match classify(path)? {
        Node::Device { device, .. } => Some(device.path()),
        _ => None,
    }
}

/// The engine of this process, if it was started here: a `vfork` child shares its parent's
/// memory (and engine) but not its descriptors, so it must leave the parent's state alone.
fn own_engine() -> Option<&'static Engine> {
    Engine::get().filter(|engine| engine.pid == sys::getpid())
}

/// The engine, if `fd` is one of its device descriptors in this process.
pub fn device_engine(fd: c_int) -> Option<&'static Engine> {
    Engine::get().filter(|e| fd >= 0 && e.devices.get(fd).is_some()).filter(|e| e.pid == sys::getpid())
}

/// The engine, if `[addr, addr + len)` overlaps its enclave mappings in this process.
pub fn mapping_engine(addr: u64, len: u64) -> Option<&'static Engine> {
    Engine::get().filter(|e| e.space.overlaps(addr, len)).filter(|e| e.pid == sys::getpid())
}

/// What descriptor `fd` is, if it is an emulated node.
pub fn descriptor_node(fd: c_int) -> Option<Node> {
    match MSRS.get(fd) {
        Some(OpenFile::Msr { cpu, .. }) => return Some(Node::Msr(cpu)),
        Some(OpenFile::SgxDir) => return Some(Node::SgxDir),
        None => {}
    }
    match device_engine(fd)?.devices.get(fd)? {
        DeviceFile::Provision => Some(Node::Device { device: Device::Provision, link: false }),
        DeviceFile::Enclave(_) => Some(Node::Device { device: Device::Enclave, link: false }),
    }
}

/// Before `close(fd)` reaches the kernel: the emulator stops answering for it (a racing
/// call finds EBADF); [`closed`] follows the kernel's close.
pub fn closing(fd: c_int) {
    if let Some(engine) = device_engine(fd) {
        engine.close_begin(fd);
    }
    MSRS.remove(fd);
}

/// Before `close_range(first, last)` reaches the kernel: forget the emulated descriptors
/// in the range (the emulator's own are never in what it closes: see `own_fds`).
pub fn closing_range(first: libc::c_uint, last: libc::c_uint) {
    let clamp = |n: libc::c_uint| c_int::try_from(n).unwrap_or(c_int::MAX);
    let (first, last) = (clamp(first), clamp(last));
    if let Some(engine) = own_engine() {
        for fd in engine.devices.open_in(first, last) {
            engine.closed(fd);
        }
    }
    for fd in MSRS.open_in(first, last) {
        MSRS.remove(fd);
    }
}

/// After the kernel closed `fd`: the emulator forgets it (and releases its enclave if that
/// was the last reference).
pub fn closed(fd: c_int) {
    if let Some(engine) = own_engine() {
        engine.close_done(fd);
    }
}

/// After a call made `new` (if not negative: an error) a copy of descriptor `fd`.
pub fn duplicated(fd: c_int, new: c_int) {
    if new < 0 || fd == new {
        return;
    }
    if let Some(engine) = own_engine() {
        engine.duplicated(fd, new);
    }
    MSRS.remove(new);
    if let Some(file) = MSRS.get(fd) {
        MSRS.insert(new, file);
    }
}

/// Open `/dev/cpu/N/msr` descriptors: the CPU and the file position (shared by copies, as an
/// open file's is), and the descriptors standing for `/dev/sgx`.
#[derive(Debug)]
struct MsrFiles {
    files: Mutex<FxHashMap<c_int, OpenFile>>,
    count: AtomicUsize,
    /// The process the table describes (a fork child updates it; a vfork child, which
    /// shares it but not the descriptors, leaves it alone).
    pid: AtomicI32,
}

static MSRS: MsrFiles = MsrFiles {
    files: Mutex::new(FxHashMap::with_hasher(rustc_hash::FxBuildHasher)),
    count: AtomicUsize::new(0),
    pid: AtomicI32::new(0),
};

extern "C" fn msrs_in_child() {
    MSRS.pid.store(sys::getpid(), Ordering::Release);
}

/// An emulated file open in the program.
#[derive(Clone, Debug)]
enum OpenFile {
    /// `/dev/cpu/N/msr`, with the open file's position.
    Msr { cpu: u32, position: Arc<AtomicI64> },
    /// `/dev/sgx` where the host has none (a descriptor of `/dev`).
    SgxDir,
}

impl MsrFiles {
    /// Whether the table is this process's (lock-free when empty).
    fn active(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0 && self.pid.load(Ordering::Acquire) == sys::getpid()
    }

    fn insert(&self, fd: c_int, file: OpenFile) {
        if self.pid.load(Ordering::Acquire) != sys::getpid() {
            if self.pid.load(Ordering::Acquire) != 0 {
                // A vfork child: nothing to record in its parent's table.
                return;
            }
            self.pid.store(sys::getpid(), Ordering::Release);
            // SAFETY: registers a plain extern "C" function without arguments for fork children.
            unsafe { libc::pthread_atfork(None, None, Some(msrs_in_child)) };
        }
        let mut files = self.files.lock();
        files.insert(fd, file);
        self.count.store(files.len(), Ordering::Release);
    }

    fn get(&self, fd: c_int) -> Option<OpenFile> {
        if !self.active() {
            return None;
        }
        self.files.lock().get(&fd).cloned()
    }

    fn open_in(&self, first: c_int, last: c_int) -> Vec<c_int> {
        if !self.active() {
            return Vec::new();
        }
        self.files.lock().keys().copied().filter(|fd| (first..=last).contains(fd)).collect()
    }

    fn remove(&self, fd: c_int) {
        if !self.active() {
            return;
        }
        let mut files = self.files.lock();
        files.remove(&fd);
        self.count.store(files.len(), Ordering::Release);
    }
}

/// The value of MSR `index` on the emulated part, if it has one readable from the msr
/// driver.
pub fn msr_value(config: &sgxemu_cpu::PlatformConfig, index: u32) -> Option<u64> {
    use sgxemu_arch::msr::*;
    if index == IA32_FEATURE_CONTROL {
        let lc = if config.flexible_launch_control { FEATURE_CONTROL_SGX_LC_ENABLE } else { 0 };
        return Some(FEATURE_CONTROL_LOCK | FEATURE_CONTROL_SGX_ENABLE | lc);
    }
    let slot = IA32_SGXLEPUBKEYHASH.iter().position(|&msr| msr == index)?;
    config.flexible_launch_control.then_some(INTEL_LE_PUBKEY_HASH[slot])
}

/// The bytes the msr driver's read of `count` bytes at `offset` returns: the MSR whose index
/// is `offset`, little-endian, once per 8 bytes asked for. EINVAL for a count that is no
/// multiple of 8, EIO for an MSR the part does not have.
pub fn msr_read(config: &sgxemu_cpu::PlatformConfig, offset: i64, count: usize) -> Result<Vec<u8>, c_int> {
    if !count.is_multiple_of(8) {
        return Err(libc::EINVAL);
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let value = msr_value(config, offset as u32).ok_or(libc::EIO)?;
    Ok(value.to_le_bytes().repeat(count / 8))
}

/// The platform configuration MSR reads report.
fn platform_config() -> sgxemu_cpu::PlatformConfig {
    match Engine::get() {
        Some(engine) => engine.processor.config().clone(),
        None => crate::config::from_env(),
    }
}

/// `pread(fd, buf, count, offset)` on an emulated MSR descriptor: `None` if `fd` is none.
pub fn msr_pread(fd: c_int, count: usize, offset: i64) -> Option<Result<Vec<u8>, c_int>> {
    let Some(OpenFile::Msr { .. }) = MSRS.get(fd) else { return None };
    if offset < 0 {
        return Some(Err(libc::EINVAL));
    }
    Some(msr_read(&platform_config(), offset, count))
}

/// `read(fd, buf, count)` on an emulated MSR descriptor (the MSR at the file position;
/// the position does not move, as in the msr driver).
pub fn msr_read_at_position(fd: c_int, count: usize) -> Option<Result<Vec<u8>, c_int>> {
    let Some(OpenFile::Msr { position, .. }) = MSRS.get(fd) else { return None };
    Some(msr_read(&platform_config(), position.load(Ordering::Relaxed), count))
}

/// `readv`/`preadv(fd, …)` on an emulated MSR descriptor, segments of `lengths` bytes, at
/// `offset` (`None`: the file position), as the kernel runs them for a driver with only a
/// `read` method: one read per segment, each of the MSR at the same index (the msr driver
/// does not move the position), ending at the first that fails. The bytes of each segment
/// read; the error only if nothing was read. `None` if `fd` is none.
pub fn msr_readv(fd: c_int, lengths: &[usize], offset: Option<i64>) -> Option<Result<Vec<Vec<u8>>, c_int>> {
    let Some(OpenFile::Msr { position, .. }) = MSRS.get(fd) else { return None };
    let at = match offset {
        Some(offset) if offset < 0 => return Some(Err(libc::EINVAL)),
        Some(offset) => offset,
        None => position.load(Ordering::Relaxed),
    };
    let config = platform_config();
    let mut segments = Vec::with_capacity(lengths.len());
    let mut total = 0;
    for &length in lengths {
        match msr_read(&config, at, length) {
            Ok(bytes) => {
                total += bytes.len();
                segments.push(bytes);
            }
            Err(errno) if total == 0 => return Some(Err(errno)),
            Err(_) => break,
        }
    }
    Some(Ok(segments))
}

/// `lseek(fd, offset, whence)` on an emulated MSR descriptor: SEEK_SET and SEEK_CUR, as
/// the msr driver allows.
pub fn msr_seek(fd: c_int, offset: i64, whence: c_int) -> Option<Result<i64, c_int>> {
    let Some(OpenFile::Msr { position, .. }) = MSRS.get(fd) else { return None };
    let new = match whence {
        libc::SEEK_SET => offset,
        libc::SEEK_CUR => match position.load(Ordering::Relaxed).checked_add(offset) {
            Some(new) => new,
            None => return Some(Err(libc::EINVAL)),
        },
        _ => return Some(Err(libc::EINVAL)),
    };
    if new < 0 {
        return Some(Err(libc::EINVAL));
    }
    position.store(new, Ordering::Relaxed);
    Some(Ok(new))
}

/// Whether any MSR descriptor is open here (lets `read` and `lseek` pass through with one
/// atomic load).
pub fn any_msr_open() -> bool {
    MSRS.count.load(Ordering::Relaxed) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_recognised_by_their_exact_spelling() {
        let enclave = Node::Device { device: Device::Enclave, link: false };
        assert_eq!(classify(b"/dev/sgx_enclave"), Some(enclave));
        assert_eq!(classify(b"/dev/sgx/provision"), Some(Node::Device { device: Device::Provision, link: true }));
        assert_eq!(classify(b"/dev/sgx"), Some(Node::SgxDir));
        assert_eq!(classify(b"/proc/cpuinfo"), Some(Node::CpuInfo));
        assert_eq!(classify(SGX_TOTAL_BYTES_PATH.as_bytes()), Some(Node::SgxTotalBytes));
        assert_eq!(classify(b"/dev/cpu/0/msr"), Some(Node::Msr(0)));
        assert_eq!(classify(b"/dev/cpu/17/msr"), Some(Node::Msr(17)));
        assert_eq!(classify(b"/proc/self/auxv"), Some(Node::Auxv));
        assert_eq!(classify(b"/proc/thread-self/auxv"), Some(Node::Auxv));
        assert_eq!(classify(format!("/proc/{}/auxv", sys::getpid()).as_bytes()), Some(Node::Auxv));
        for other in [
            &b"/dev/cpu/01/msr"[..],
            b"/dev/cpu//msr",
            b"/dev/cpu/x/msr",
            b"/dev/null",
            b"sgx_enclave",
            b"/dev/sgx_enclave/",
            b"/proc/1/auxv",
            b"/proc/self/auxvx",
            b"/proc/selfauxv",
            b"/proc//auxv",
            b"",
        ] {
            assert_eq!(classify(other), None, "{}", String::from_utf8_lossy(other));
        }
        // CPU 0 exists on every host; CPU 999999 on none.
        assert_eq!(resolve(b"/dev/cpu/0/msr"), Some(Node::Msr(0)));
        assert_eq!(resolve(b"/dev/cpu/999999/msr"), None);
    }

    #[test]
    fn device_nodes_stat_as_the_kernel_s_and_links_as_links() {
        let node = Node::Device { device: Device::Enclave, link: true };
        let st = stat_of(node, true).expect("emulated");
        assert_eq!(st.st_mode, libc::S_IFCHR | 0o666);
        assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (10, 125));
        let st = stat_of(node, false).expect("emulated");
        assert_eq!(st.st_mode, libc::S_IFLNK | 0o777);
        assert_eq!(st.st_size, "../sgx_enclave".len() as i64);
        let st = stat_of(Node::Device { device: Device::Provision, link: false }, false).expect("emulated");
        assert_eq!(st.st_mode, libc::S_IFCHR | 0o660);
        let sx = statx_of(&st);
        assert_eq!((sx.stx_mode as u32, sx.stx_rdev_major, sx.stx_rdev_minor), (libc::S_IFCHR | 0o660, 10, 126));
        assert!(stat_of(Node::CpuInfo, true).is_none());
        assert_eq!(stat_of(Node::SgxDir, true).expect("emulated").st_mode, libc::S_IFDIR | 0o755);
    }

    #[test]
    fn access_allows_what_the_modes_allow() {
        let node = Node::Device { device: Device::Enclave, link: true };
        assert_eq!(access(node, libc::R_OK | libc::W_OK), Some(Ok(())));
        assert_eq!(access(node, libc::X_OK), Some(Err(libc::EACCES)));
        assert_eq!(access(Node::Msr(0), libc::W_OK), Some(Err(libc::EACCES)));
        assert_eq!(access(Node::CpuInfo, libc::R_OK), None);
        assert!(without_xattrs(node) && without_xattrs(Node::SgxDir) && !without_xattrs(Node::Maps));
    }

    #[test]
    fn dev_sgx_opens_as_a_directory_descriptor_standing_for_it() {
        if std::path::Path::new("/dev/sgx").exists() {
            return; // the host's own directory is the host's business
        }
        let fd =
            open(Node::SgxDir, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC).expect("opens").expect("ours");
        assert_eq!(descriptor_node(fd), Some(Node::SgxDir));
        assert_eq!(in_dev_directory(fd, b"provision"), Some(c"/dev/sgx/provision"));
        assert_eq!(readlink(format!("/proc/self/fd/{fd}").as_bytes()), Some(Ok("/dev/sgx".to_owned())));
        assert_eq!(open(Node::SgxDir, libc::O_WRONLY), Err(libc::EISDIR));
        closing(fd);
        let _ = sys::close(fd);
        assert_eq!(descriptor_node(fd), None);
    }

    #[test]
    fn relative_names_in_the_emulated_sgx_directory_are_its_entries() {
        assert_eq!(in_working_directory(b"enclave"), None, "only while the program is there");
        changed_directory(true);
        let spelled = |path: &[u8]| in_working_directory(path).map(|p| String::from_utf8(p).expect("utf-8"));
        assert_eq!(spelled(b"enclave").as_deref(), Some("/dev/sgx/enclave"));
        assert_eq!(spelled(b"././provision").as_deref(), Some("/dev/sgx/provision"));
        assert_eq!(spelled(b".").as_deref(), Some("/dev/sgx"));
        assert_eq!(spelled(b"..").as_deref(), Some("/dev"));
        assert_eq!(spelled(b"../sgx_enclave").as_deref(), Some("/dev/sgx_enclave"));
        assert_eq!(spelled(b"null"), None, "the host's /dev answers");
        assert_eq!(spelled(b"/dev/null"), None);
        assert_eq!(resolve(b"provision"), Some(Node::Device { device: Device::Provision, link: true }));
        assert_eq!(chdir(b"enclave"), Chdir::Fail(libc::ENOTDIR));
        assert_eq!(chdir(b".."), Chdir::Host(Some(c"/dev".to_owned())));
        assert_eq!(chdir(b"/tmp"), Chdir::Host(None));
        if !std::path::Path::new("/dev/sgx").exists() {
            assert_eq!(chdir(b"/dev/sgx"), Chdir::IntoSgxDir);
        }
        // This process's working directory is not /dev: getcwd is the host's.
        assert_eq!(getcwd(64), None);
        changed_directory(false);
        assert_eq!(resolve(b"provision"), None);
    }

    #[test]
    fn names_in_a_dev_descriptor_are_the_nodes_in_dev() {
        use std::os::fd::AsRawFd;
        let dev = std::fs::File::open("/dev").expect("/dev");
        let tmp = std::fs::File::open("/tmp").expect("/tmp");
        assert_eq!(in_dev_directory(dev.as_raw_fd(), b"sgx_enclave"), Some(c"/dev/sgx_enclave"));
        assert_eq!(in_dev_directory(dev.as_raw_fd(), b"sgx/provision"), Some(c"/dev/sgx/provision"));
        assert_eq!(in_dev_directory(dev.as_raw_fd(), b"null"), None);
        assert_eq!(in_dev_directory(tmp.as_raw_fd(), b"sgx_enclave"), None);
        assert_eq!(in_dev_directory(libc::AT_FDCWD, b"sgx_enclave"), None);
        // SAFETY: C strings.
        unsafe {
            assert_eq!(CStr::from_ptr(at_path(dev.as_raw_fd(), c"sgx".as_ptr())), c"/dev/sgx");
            assert_eq!(CStr::from_ptr(at_path(dev.as_raw_fd(), c"/dev/null".as_ptr())), c"/dev/null");
        }
    }

    #[test]
    fn readlink_gives_udev_s_targets_and_device_paths() {
        assert_eq!(readlink(b"/dev/sgx/enclave"), Some(Ok("../sgx_enclave".to_owned())));
        assert_eq!(readlink(b"/dev/sgx/provision"), Some(Ok("../sgx_provision".to_owned())));
        assert_eq!(readlink(b"/dev/sgx_enclave"), Some(Err(libc::EINVAL)));
        assert_eq!(readlink(b"/proc/self/exe"), None);
        assert_eq!(proc_fd(b"/proc/self/fd/12"), Some(12));
        assert_eq!(proc_fd(b"/dev/fd/3"), Some(3));
        assert_eq!(proc_fd(format!("/proc/{}/fd/4", sys::getpid()).as_bytes()), Some(4));
        assert_eq!(proc_fd(b"/proc/1/fd/4"), None, "another process's");
        assert_eq!(proc_fd(b"/proc/self/fd/"), None);
        assert_eq!(canonical(b"/dev/sgx/enclave"), Some("/dev/sgx_enclave"));
    }

    #[test]
    fn cpuinfo_flags_gain_sgx_and_sgx_lc_once() {
        let host = b"processor\t: 0\nflags\t\t: fpu vme sse\nvmx flags\t: ept\nbugs\t\t: spectre\n\nprocessor\t: 1\nflags\t\t: fpu sgx\n";
        let text = String::from_utf8(cpuinfo_with_sgx(host)).expect("text");
        assert_eq!(
            text,
            "processor\t: 0\nflags\t\t: fpu vme sse sgx sgx_lc\nvmx flags\t: ept\nbugs\t\t: spectre\n\nprocessor\t: 1\nflags\t\t: fpu sgx sgx_lc\n"
        );
        assert_eq!(cpuinfo_with_sgx(b"flags\t: a"), b"flags\t: a sgx sgx_lc");
    }

    #[test]
    fn msr_reads_are_the_msr_driver_s() {
        use sgxemu_arch::msr::*;
        let config = sgxemu_cpu::PlatformConfig::default();
        let control = u64::from_le_bytes(msr_read(&config, 0x3a, 8).expect("readable").try_into().expect("8 bytes"));
        assert_eq!(control, (1 << 0) | (1 << 17) | (1 << 18));
        for (i, msr) in IA32_SGXLEPUBKEYHASH.into_iter().enumerate() {
            assert_eq!(msr_read(&config, i64::from(msr), 8), Ok(INTEL_LE_PUBKEY_HASH[i].to_le_bytes().to_vec()));
        }
        assert_eq!(msr_read(&config, 0x3a, 16).map(|b| b.len()), Ok(16));
        assert_eq!(msr_read(&config, 0x3a, 4), Err(libc::EINVAL));
        assert_eq!(msr_read(&config, 0x10, 8), Err(libc::EIO));
        let legacy = sgxemu_cpu::PlatformConfig { flexible_launch_control: false, ..config };
        assert_eq!(msr_read(&legacy, 0x8c, 8), Err(libc::EIO));
    }

    #[test]
    fn vectored_msr_reads_read_each_segment_at_the_same_index() {
        let fd = open(Node::Msr(0), libc::O_RDONLY | libc::O_CLOEXEC).expect("opens").expect("ours");
        let control = msr_read(&platform_config(), 0x3a, 8).expect("readable");
        assert_eq!(msr_readv(fd, &[8, 0, 16], Some(0x3a)), Some(Ok(vec![control.clone(), vec![], control.repeat(2)])));
        assert_eq!(msr_readv(fd, &[4, 8], Some(0x3a)), Some(Err(libc::EINVAL)), "the first fails: its error");
        assert_eq!(msr_readv(fd, &[8, 4, 8], Some(0x3a)), Some(Ok(vec![control.clone()])), "a later one ends it");
        assert_eq!(msr_readv(fd, &[8], Some(-1)), Some(Err(libc::EINVAL)));
        assert_eq!(msr_seek(fd, 0x3a, libc::SEEK_SET), Some(Ok(0x3a)));
        assert_eq!(msr_readv(fd, &[8], None), Some(Ok(vec![control])), "at the file position");
        closing(fd);
        let _ = sys::close(fd);
        assert_eq!(msr_readv(fd, &[8], None), None);
    }

    #[test]
    fn maps_name_each_enclave_mapping_once_in_address_order() {
        let host = b"1000-2000 r-xp 00000000 08:01 42                         /bin/prog\n\
7effffff0000-7f0000001000 ---p 00000000 00:00 0 \n\
7f0000001000-7f0000002000 rw-s 00005000 00:01 9                          /memfd:sgxemu-epc (deleted)\n\
7f0000002000-7f0000020000 ---p 00000000 00:00 0 \n\
7fff00000000-7fff00021000 rw-p 00000000 00:00 0                          [stack]\n";
        let enclaves = [
            (0x7f00_0000_0000..0x7f00_0000_2000, Prot::READ | Prot::WRITE),
            (0x7f00_0000_2000..0x7f00_0001_0000, Prot::READ | Prot::EXEC),
        ];
        // SAFETY: an all-zero stat is valid.
        let mut file: libc::stat = unsafe { std::mem::zeroed() };
        file.st_dev = libc::makedev(0, 5);
        file.st_ino = 77;
        let view = String::from_utf8(maps_with_enclaves(host, &enclaves, &file)).expect("text");
        let lines: Vec<&str> = view.lines().collect();
        assert_eq!(lines.len(), 6, "{view}");
        assert!(lines[0].ends_with("/bin/prog"));
        assert_eq!(lines[1], "7effffff0000-7f0000000000 ---p 00000000 00:00 0 ", "what precedes ELRANGE stays");
        assert!(lines[2].starts_with("7f0000000000-7f0000002000 rw-s 00000000 00:05 77 "), "{}", lines[2]);
        assert!(lines[2].ends_with(" /dev/sgx_enclave"));
        assert!(lines[3].starts_with("7f0000002000-7f0000010000 r-xs "), "{}", lines[3]);
        assert_eq!(lines[4], "7f0000010000-7f0000020000 ---p 00000000 00:00 0 ", "what follows it stays");
        assert!(lines[5].ends_with("[stack]"));
        assert!(!view.contains("memfd"), "the EPC pages inside the enclave are not shown");
    }
}
