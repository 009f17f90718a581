//! Directory listings of `/dev` and `/dev/sgx` as on a host with the SGX driver and udev:
//! `/dev` lists `sgx_enclave`, `sgx_provision` (character devices) and `sgx` (a directory);
//! `/dev/sgx` lists `.`, `..` and the links `enclave`, `provision`. (What these names are
//! under `stat`, `readlink` and `open` is `devices_fs`'s business.)
//!
//! A listing is a `DIR` stream of the C library that the preload library's `opendir`
//! registers here: `readdir` gives the host's entries first, then the emulated ones the host
//! did not list (a host with the driver lists its own). `/dev/sgx`, which the host lacks, is
//! a stream on `/dev` of which only the emulated entries are read (its `dirfd` is `/dev`'s).
//! `fdopendir` of a descriptor of `/dev` (how `find`'s fts lists), `glob` and `scandir`
//! reach the same streams (see the preload library).
//!
//! Listings through the `getdents64` and `getdents` system calls ([`getdents`]: a program's
//! own `syscall` instruction or the C library's `syscall()` function, trapped by the seccomp
//! filter, and glibc's `getdents64()` wrapper, interposed) add the same entries to a
//! descriptor of `/dev`, and give a descriptor standing for `/dev/sgx` only its own. The
//! C library's `readdir` lists through its internal `getdents64`, which neither the filter
//! (the C library's code is exempt) nor an interposer sees: a `DIR` stream gets the emulated
//! entries from this module's stream layer alone, a raw listing from [`getdents`] alone.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// A directory whose listing the emulator extends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// `/dev`.
    Dev,
    /// `/dev/sgx`.
    SgxDir,
}

/// An emulated directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name in the directory.
    pub name: &'static str,
    /// `d_type` (DT_CHR, DT_DIR, DT_LNK).
    pub kind: u8,
    /// `d_ino`: the inode number `stat` reports (`devices_fs::stat_of`).
    pub ino: u64,
}

/// Directory positions from here on stand for the emulated entries: at position
/// `EMULATED_POSITIONS + k` the `k`th emulated entry (from 0) is next, so an entry's `d_off`
/// (the position after it) is `EMULATED_POSITIONS + k + 1`. Far beyond any position of the
/// host's `/dev` (tmpfs and devtmpfs count entries), and within the `LONG_MAX` the kernel
/// lets a directory descriptor seek to.
pub const EMULATED_POSITIONS: i64 = i64::MAX - 16;

const DEV: [Entry; 3] = [
    Entry { name: "sgx", kind: libc::DT_DIR, ino: 0x5600 },
    Entry { name: "sgx_enclave", kind: libc::DT_CHR, ino: 0x5700 + 125 },
    Entry { name: "sgx_provision", kind: libc::DT_CHR, ino: 0x5700 + 126 },
];

const SGX_DIR: [Entry; 4] = [
    Entry { name: ".", kind: libc::DT_DIR, ino: 0x5600 },
    // devtmpfs's root; the host's `/dev` inode number is not known here.
    Entry { name: "..", kind: libc::DT_DIR, ino: 1 },
    Entry { name: "enclave", kind: libc::DT_LNK, ino: 0x5600 + 125 },
    Entry { name: "provision", kind: libc::DT_LNK, ino: 0x5600 + 126 },
];

impl Listed {
    /// The directory a path names, by its spelling alone (absolute, as `devices_fs`).
    pub fn of(path: &[u8]) -> Option<Listed> {
        match path {
            b"/dev" | b"/dev/" => Some(Listed::Dev),
            b"/dev/sgx" | b"/dev/sgx/" => Some(Listed::SgxDir),
            _ => None,
        }
    }

    /// The entries the emulator adds.
    pub fn entries(self) -> &'static [Entry] {
        match self {
            Listed::Dev => &DEV,
            Listed::SgxDir => &SGX_DIR,
        }
    }
}

/// One open stream's progress.
#[derive(Debug)]
struct Listing {
    /// Emulated entries still to give (those the host listed are dropped).
    pending: Vec<Entry>,
    /// How many of `pending` were given.
    given: usize,
    /// The host's entries are all read (or, for `/dev/sgx`, never read).
    host_done: bool,
    /// Whether the host's entries are read at all.
    host_listing: bool,
    /// Which directory (for `rewinddir`).
    listed: Listed,
    /// The entry `readdir` last returned, valid until the next call on the stream.
    entry: Box<libc::dirent64>,
}

/// The streams registered by `opendir`, keyed by `DIR` address.
#[derive(Debug)]
struct Listings {
    open: Mutex<FxHashMap<usize, Listing>>,
    /// How many are open: `readdir` of any other stream costs one atomic load.
    count: AtomicUsize,
}

static LISTINGS: Listings =
    Listings { open: Mutex::new(FxHashMap::with_hasher(rustc_hash::FxBuildHasher)), count: AtomicUsize::new(0) };

/// After `opendir` made stream `dir` for `listed`: `host_listing` says whether its host
/// entries are read (false: a stand-in stream for a directory the host lacks).
pub fn opened(dir: usize, listed: Listed, host_listing: bool) {
    // SAFETY: all-zero is a valid `struct dirent64`.
    let entry = Box::new(unsafe { std::mem::zeroed::<libc::dirent64>() });
    let listing =
        Listing { pending: listed.entries().to_vec(), given: 0, host_done: !host_listing, host_listing, listed, entry };
    let mut open = LISTINGS.open.lock();
    open.insert(dir, listing);
    LISTINGS.count.store(open.len(), Ordering::Release);
}

/// `readdir(dir)`: `None` if `dir` is no registered stream; otherwise the next entry (null
/// at the end), `host` reading the host's next one.
pub fn next(dir: usize, host: impl FnMut() -> *mut libc::dirent64) -> Option<*mut libc::dirent64> {
    if LISTINGS.count.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut open = LISTINGS.open.lock();
    let listing = open.get_mut(&dir)?;
    Some(listing.next(host))
}

impl Listing {
    fn next(&mut self, mut host: impl FnMut() -> *mut libc::dirent64) -> *mut libc::dirent64 {
        if !self.host_done {
            let entry = host();
            if !entry.is_null() {
                // SAFETY: a non-null readdir result is an entry with a NUL-terminated name.
                let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
                if let Some(at) = self.pending[self.given..].iter().position(|e| e.name.as_bytes() == name) {
                    self.pending.remove(self.given + at);
                }
                return entry;
            }
            self.host_done = true;
        }
        let Some(emulated) = self.pending.get(self.given).copied() else { return std::ptr::null_mut() };
        self.given += 1;
        fill(&mut self.entry, &emulated, self.given);
        &mut *self.entry
    }
}

/// `entry` as `readdir` returns `emulated`, the `index`th emulated one.
fn fill(entry: &mut libc::dirent64, emulated: &Entry, index: usize) {
    entry.d_ino = emulated.ino;
    // Positions past any the host's directories give (telldir values are opaque).
    entry.d_off = EMULATED_POSITIONS + index as i64;
    entry.d_type = emulated.kind;
    entry.d_name = [0; 256];
    for (to, &from) in entry.d_name.iter_mut().zip(emulated.name.as_bytes()) {
        *to = from as libc::c_char;
    }
    let used = std::mem::offset_of!(libc::dirent64, d_name) + emulated.name.len() + 1;
    entry.d_reclen = used.next_multiple_of(8) as u16;
}

/// After `rewinddir(dir)` or `seekdir(dir, …)`: the stream gives its emulated entries again
/// after the host's.
pub fn rewound(dir: usize) {
    if LISTINGS.count.load(Ordering::Acquire) == 0 {
        return;
    }
    if let Some(listing) = LISTINGS.open.lock().get_mut(&dir) {
        listing.pending = listing.listed.entries().to_vec();
        listing.given = 0;
        listing.host_done = !listing.host_listing;
    }
}

/// Before `closedir(dir)`.
pub fn closing(dir: usize) {
    if LISTINGS.count.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut open = LISTINGS.open.lock();
    open.remove(&dir);
    LISTINGS.count.store(open.len(), Ordering::Release);
}

/// Whether descriptor `fd` is a directory descriptor of the host's `/dev` (for
/// `fdopendir`): the same device and inode as the path `/dev`.
pub fn is_dev_descriptor(fd: libc::c_int) -> bool {
    // SAFETY: all-zero is a valid `struct stat`.
    let (mut of_fd, mut of_dev): (libc::stat, libc::stat) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: fstat and newfstatat fill the structs; the path is a C string.
    let ok = unsafe {
        libc::syscall(libc::SYS_fstat, fd as libc::c_long, &raw mut of_fd) == 0
            && libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD as libc::c_long, c"/dev".as_ptr(), &raw mut of_dev, 0)
                == 0
    };
    ok && of_fd.st_mode & libc::S_IFMT == libc::S_IFDIR
        && (of_fd.st_dev, of_fd.st_ino) == (of_dev.st_dev, of_dev.st_ino)
}

/// The record layout a listing system call fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirentLayout {
    /// `getdents64`: `struct linux_dirent64` (`d_type` before the name).
    Dirent64,
    /// `getdents`: the old `struct linux_dirent` (`d_type` in the record's last byte).
    Dirent,
}

/// What a `getdents64`/`getdents` call on a listed directory's descriptor answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Getdents {
    /// The host's answer (byte count or `-errno`), already in the caller's buffer.
    Host(libc::c_long),
    /// Records to copy into the caller's buffer (empty: the end of the listing).
    Emulated(Vec<u8>),
    /// The call fails with this errno.
    Failed(libc::c_int),
}

/// `getdents64(fd, buf, count)` (or `getdents`, per `layout`) if `fd` is a descriptor of
/// `/dev` or one standing for `/dev/sgx`; `None` otherwise (the host's call, unchanged).
/// `host` makes the host's call into the caller's buffer.
///
/// The descriptor's file position is the whole state, as the kernel keeps it: below
/// [`EMULATED_POSITIONS`] the host's entries are read; once the host has none left the
/// position moves to `EMULATED_POSITIONS` and counts the emulated entries given. So copies
/// of the descriptor share the progress (one open file), `lseek(fd, 0, SEEK_SET)` rewinds,
/// seeking to an entry's `d_off` resumes after it, and a reused descriptor number starts
/// afresh. A buffer too small for the next entry is EINVAL, as the kernel answers.
pub fn getdents(
    fd: libc::c_int,
    count: usize,
    layout: DirentLayout,
    host: impl FnOnce() -> libc::c_long,
) -> Option<Getdents> {
    let (listed, host_listing) = if crate::devices_fs::descriptor_node(fd) == Some(crate::devices_fs::Node::SgxDir) {
        (Listed::SgxDir, false)
    } else if is_dev_descriptor(fd) {
        (Listed::Dev, true)
    } else {
        return None;
    };
    let Ok(mut position) = seek(fd, 0, libc::SEEK_CUR) else { return Some(Getdents::Host(host())) };
    if position < EMULATED_POSITIONS {
        if host_listing {
            let read = host();
            if read != 0 {
                return Some(Getdents::Host(read));
            }
        }
        match seek(fd, EMULATED_POSITIONS, libc::SEEK_SET) {
            Ok(at) => position = at,
            // A directory that does not seek this far keeps the host's listing only.
            Err(_) => return Some(Getdents::Host(0)),
        }
    }
    let pending = pending_entries(listed);
    let given = usize::try_from(position - EMULATED_POSITIONS).unwrap_or(usize::MAX);
    let mut records = Vec::new();
    let mut next = given;
    for entry in pending.iter().skip(given) {
        let record = encode(entry, EMULATED_POSITIONS + next as i64 + 1, layout);
        if records.len() + record.len() > count {
            break;
        }
        records.extend_from_slice(&record);
        next += 1;
    }
    if records.is_empty() && next < pending.len() {
        return Some(Getdents::Failed(libc::EINVAL));
    }
    if next != given
        && let Err(errno) = seek(fd, EMULATED_POSITIONS + next as i64, libc::SEEK_SET)
    {
        return Some(Getdents::Failed(errno));
    }
    Some(Getdents::Emulated(records))
}

/// The emulated entries a listing of `listed` gives: for `/dev`, those the host lacks (a
/// host with the driver lists its own nodes).
fn pending_entries(listed: Listed) -> Vec<Entry> {
    let entries = listed.entries().iter().copied();
    match listed {
        Listed::SgxDir => entries.collect(),
        Listed::Dev => entries.filter(|entry| !host_dev_has(entry.name)).collect(),
    }
}

/// Whether the host's `/dev` has `name` (as anything, links not followed).
fn host_dev_has(name: &str) -> bool {
    let Ok(path) = std::ffi::CString::new(format!("/dev/{name}")) else { return false };
    // SAFETY: all-zero is a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: newfstatat reads the C string and fills `st`.
    unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD as libc::c_long,
            path.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW as libc::c_long,
        ) == 0
    }
}

/// lseek(2) on a directory descriptor: the new position, or the errno.
fn seek(fd: libc::c_int, offset: i64, whence: libc::c_int) -> Result<i64, libc::c_int> {
    // SAFETY: lseek takes integers.
    let at = unsafe { libc::syscall(libc::SYS_lseek, fd as libc::c_long, offset, whence as libc::c_long) };
    if at < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)) } else { Ok(at) }
}

/// One record of `entry` in `layout`, `next` its `d_off`; 8-byte aligned as the kernel's.
fn encode(entry: &Entry, next: i64, layout: DirentLayout) -> Vec<u8> {
    let name = entry.name.as_bytes();
    // d_ino, d_off, d_reclen; then d_type and the name (getdents64), or the name, its NUL
    // and d_type in the last byte (getdents).
    let used = 8 + 8 + 2 + 1 + name.len() + 1;
    let length = used.next_multiple_of(8);
    let mut record = vec![0u8; length];
    record[0..8].copy_from_slice(&entry.ino.to_le_bytes());
    record[8..16].copy_from_slice(&next.to_le_bytes());
    record[16..18].copy_from_slice(&(length as u16).to_le_bytes());
    match layout {
        DirentLayout::Dirent64 => {
            record[18] = entry.kind;
            record[19..19 + name.len()].copy_from_slice(name);
        }
        DirentLayout::Dirent => {
            record[18..18 + name.len()].copy_from_slice(name);
            record[length - 1] = entry.kind;
        }
    }
    record
}

/// glibc's `glob_t` (x86-64; `glob64_t` has the same layout): the fields `GLOB_ALTDIRFUNC`
/// reads, which the `libc` crate keeps private.
#[repr(C)]
#[derive(Debug)]
pub struct GlobT {
    /// Matches so far.
    pub gl_pathc: libc::size_t,
    /// The matched paths.
    pub gl_pathv: *mut *mut libc::c_char,
    /// Null slots reserved at the start of `gl_pathv` (GLOB_DOOFFS).
    pub gl_offs: libc::size_t,
    /// The flags of the last call.
    pub gl_flags: libc::c_int,
    /// `closedir`.
    pub gl_closedir: Option<unsafe extern "C" fn(*mut libc::c_void)>,
    /// `readdir`.
    pub gl_readdir: Option<unsafe extern "C" fn(*mut libc::c_void) -> *mut libc::dirent64>,
    /// `opendir`.
    pub gl_opendir: Option<unsafe extern "C" fn(*const libc::c_char) -> *mut libc::c_void>,
    /// `lstat`.
    pub gl_lstat: Option<unsafe extern "C" fn(*const libc::c_char, *mut libc::stat) -> libc::c_int>,
    /// `stat`.
    pub gl_stat: Option<unsafe extern "C" fn(*const libc::c_char, *mut libc::stat) -> libc::c_int>,
}

const _: () = assert!(std::mem::size_of::<GlobT>() == std::mem::size_of::<libc::glob64_t>());

/// Whether `glob(pattern)` may list `/dev` or `/dev/sgx` (an absolute pattern under `/dev`;
/// relative patterns are the host's).
pub fn glob_may_list(pattern: &[u8]) -> bool {
    pattern.starts_with(b"/dev/") || pattern == b"/dev"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(entry: *mut libc::dirent64) -> String {
        // SAFETY: a non-null entry from `next` has a NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn paths_name_the_listed_directories_by_spelling() {
        assert_eq!(Listed::of(b"/dev"), Some(Listed::Dev));
        assert_eq!(Listed::of(b"/dev/"), Some(Listed::Dev));
        assert_eq!(Listed::of(b"/dev/sgx/"), Some(Listed::SgxDir));
        assert_eq!(Listed::of(b"/dev/sgx_enclave"), None);
        assert_eq!(Listed::of(b"dev"), None);
        assert!(glob_may_list(b"/dev/sgx*") && !glob_may_list(b"sgx*") && !glob_may_list(b"/devices"));
        let dev = std::fs::File::open("/dev").expect("/dev");
        let tmp = std::fs::File::open("/tmp").expect("/tmp");
        use std::os::fd::AsRawFd;
        assert!(is_dev_descriptor(dev.as_raw_fd()) && !is_dev_descriptor(tmp.as_raw_fd()) && !is_dev_descriptor(-1));
    }

    #[test]
    fn emulated_entries_follow_the_host_s_once_each() {
        // SAFETY: all-zero is a valid dirent64.
        let mut host_entries: Vec<libc::dirent64> = (0..3).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (entry, n) in host_entries.iter_mut().zip(["null", "sgx_enclave", "zero"]) {
            for (to, &from) in entry.d_name.iter_mut().zip(n.as_bytes()) {
                *to = from as libc::c_char;
            }
        }
        let dir = 0x1000;
        opened(dir, Listed::Dev, true);
        let mut read = 0;
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        loop {
            let entry = next(dir, || match host_entries.get_mut(read) {
                Some(e) => {
                    read += 1;
                    e
                }
                None => std::ptr::null_mut(),
            })
            .expect("registered");
            if entry.is_null() {
                break;
            }
            names.push(name(entry));
            // SAFETY: non-null entry.
            kinds.push(unsafe { (*entry).d_type });
        }
        assert_eq!(
            names,
            ["null", "sgx_enclave", "zero", "sgx", "sgx_provision"],
            "the host's sgx_enclave is not repeated"
        );
        assert_eq!(&kinds[3..], [libc::DT_DIR, libc::DT_CHR]);
        rewound(dir);
        let again = next(dir, std::ptr::null_mut).expect("registered");
        assert_eq!(name(again), "sgx");
        closing(dir);
        assert!(next(dir, std::ptr::null_mut).is_none());
    }

    /// The names and types in `getdents` records of `layout`.
    fn records(bytes: &[u8], layout: DirentLayout) -> Vec<(String, u8, i64)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let reclen = usize::from(u16::from_le_bytes([bytes[at + 16], bytes[at + 17]]));
            let d_off = i64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
            let (kind, name_at) = match layout {
                DirentLayout::Dirent64 => (bytes[at + 18], at + 19),
                DirentLayout::Dirent => (bytes[at + reclen - 1], at + 18),
            };
            let name = &bytes[name_at..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).expect("NUL")];
            out.push((String::from_utf8_lossy(name).into_owned(), kind, d_off));
            at += reclen;
        }
        out
    }

    #[test]
    fn raw_listings_of_dev_end_with_the_emulated_entries_resumably() {
        use std::os::fd::AsRawFd;
        let dev = std::fs::File::open("/dev").expect("/dev");
        let fd = dev.as_raw_fd();
        let mut buf = vec![0u8; 4096];
        let host = |buf: &mut Vec<u8>, n: usize| {
            // SAFETY: getdents64 into `buf`, writable for `n` <= its length bytes.
            unsafe { libc::syscall(libc::SYS_getdents64, fd as libc::c_long, buf.as_mut_ptr(), n) }
        };
        // The host's entries first, then one emulated record per call: a buffer of 40 bytes
        // holds one ("sgx_provision" needs 40).
        while host(&mut buf, 4096) > 0 {}
        let mut names = Vec::new();
        loop {
            match getdents(fd, 40, DirentLayout::Dirent64, || host(&mut buf, 40)).expect("/dev is listed") {
                Getdents::Emulated(bytes) if bytes.is_empty() => break,
                Getdents::Emulated(bytes) => {
                    let got = records(&bytes, DirentLayout::Dirent64);
                    assert_eq!(got.len(), 1);
                    names.extend(got);
                }
                other => panic!("{other:?}"),
            }
        }
        let expected: Vec<_> = pending_entries(Listed::Dev).iter().map(|e| e.name.to_owned()).collect();
        assert_eq!(names.iter().map(|n| n.0.clone()).collect::<Vec<_>>(), expected);
        for (k, (_, _, d_off)) in names.iter().enumerate() {
            assert_eq!(*d_off, EMULATED_POSITIONS + k as i64 + 1);
        }
        assert_eq!(getdents(fd, 8, DirentLayout::Dirent64, || panic!("host done")), Some(Getdents::Emulated(vec![])));
        if let Some((first, kind, d_off)) = names.first() {
            // Resuming at the first one's d_off gives the rest; a tiny buffer is EINVAL.
            seek(fd, *d_off, libc::SEEK_SET).expect("seeks");
            let rest = getdents(fd, 4096, DirentLayout::Dirent, || panic!("host done"));
            let Some(Getdents::Emulated(bytes)) = rest else { panic!("{rest:?}") };
            assert_eq!(records(&bytes, DirentLayout::Dirent), names[1..]);
            seek(fd, EMULATED_POSITIONS, libc::SEEK_SET).expect("seeks");
            assert_eq!(getdents(fd, 16, DirentLayout::Dirent64, || 0), Some(Getdents::Failed(libc::EINVAL)));
            assert!(!first.is_empty() && *kind != 0);
        }
        // Rewinding gives the host's entries again.
        seek(fd, 0, libc::SEEK_SET).expect("rewinds");
        assert!(
            matches!(getdents(fd, 4096, DirentLayout::Dirent64, || host(&mut buf, 4096)), Some(Getdents::Host(n)) if n > 0)
        );
        let tmp = std::fs::File::open("/tmp").expect("/tmp");
        assert_eq!(getdents(tmp.as_raw_fd(), 4096, DirentLayout::Dirent64, || 0), None);
    }

    #[test]
    fn a_stand_in_stream_lists_the_udev_links_without_reading_the_host() {
        let dir = 0x2000;
        opened(dir, Listed::SgxDir, false);
        let mut names = Vec::new();
        loop {
            let entry = next(dir, || panic!("the host is not read")).expect("registered");
            if entry.is_null() {
                break;
            }
            // SAFETY: non-null entry.
            let (kind, reclen) = unsafe { ((*entry).d_type, (*entry).d_reclen) };
            assert_eq!(reclen % 8, 0);
            names.push((name(entry), kind));
        }
        closing(dir);
        assert_eq!(
            names,
            [
                (".".to_owned(), libc::DT_DIR),
                ("..".to_owned(), libc::DT_DIR),
                ("enclave".to_owned(), libc::DT_LNK),
                ("provision".to_owned(), libc::DT_LNK)
            ]
        );
    }
}
