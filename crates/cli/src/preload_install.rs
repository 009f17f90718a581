//! Installing the embedded preload library where `sgxemu run` can point `LD_PRELOAD` at it,
//! safely: only in a directory that is the user's alone.
//!
//! **Why a file, not a memfd.** `LD_PRELOAD` must name a path that stays valid for the
//! program's whole life and for every descendant it starts (a shell script's commands, a
//! test runner's children): each exec's dynamic loader opens it anew. A memfd is reachable
//! only as `/proc/self/fd/N`, which works only while every process in the tree keeps
//! descriptor N open and unused for anything else — programs that close inherited
//! descriptors (Python's `subprocess` does by default) would lose the emulator, and one that
//! reuses N would make the loader map an unrelated file. So the library is a file.
//!
//! **Where.** The first usable directory of `$XDG_RUNTIME_DIR/sgxemu`,
//! `$XDG_CACHE_HOME/sgxemu`, `~/.cache/sgxemu`, and `$TMPDIR/sgxemu-<uid>` (or
//! `/tmp/sgxemu-<uid>`). Usable means, checked on the open directory (`O_NOFOLLOW`, then
//! `fstat`, so a symbolic link is never followed): a directory, owned by the current user,
//! and writable by no one else. It is created with mode 0700, and an existing one of ours
//! that others can read is tightened to 0700 (nobody else could have written in it). One that
//! is a symbolic link, belongs to someone else (a `/tmp/sgxemu-0` another user created
//! first) or that others can write (they could have planted a library) is skipped; if none
//! is usable, `sgxemu run` refuses with the reasons.
//!
//! **The file.** `libsgxemu_preload-<hash>.so`, the hash of the embedded bytes. An existing
//! one is used only if it is a regular file of ours, writable by no one else, with exactly
//! the embedded bytes; otherwise it is rewritten: under a temporary name `.<hash>.<pid>`,
//! then renamed over, so concurrent runs never see a partial file. A temporary file whose
//! process is gone (an extraction that was interrupted) is removed by the next run.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a directory cannot hold the library.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// It is a symbolic link (never followed: it could point anywhere).
    #[error("it is a symbolic link")]
    Symlink,
    /// Not a directory.
    #[error("it is not a directory")]
    NotDirectory,
    /// Someone else owns it.
    #[error("it is owned by uid {owner}, not by uid {uid}")]
    Owner {
        /// The owner.
        owner: u32,
        /// The current user.
        uid: u32,
    },
    /// Group or others may write in it.
    #[error("its mode {mode:04o} lets others write in it")]
    WritableByOthers {
        /// The mode bits.
        mode: u32,
    },
    /// Creating, opening or tightening it failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why the library could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No candidate directory is usable.
    #[error(
        "no private directory for the preload library ({}); set XDG_RUNTIME_DIR to a directory only you can write",
        reasons(tried)
    )]
    NoPrivateDirectory {
        /// Each candidate and why it was refused.
        tried: Vec<(PathBuf, DirError)>,
    },
    /// Writing the library failed.
    #[error("cannot write the preload library to {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn reasons(tried: &[(PathBuf, DirError)]) -> String {
    let each: Vec<String> = tried.iter().map(|(dir, why)| format!("{}: {why}", dir.display())).collect();
    each.join("; ")
}

/// The current user's id.
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The candidate directories, in order of preference, from the environment `var` reads.
pub fn candidate_dirs(var: impl Fn(&str) -> Option<OsString>, temp_dir: &Path, uid: u32) -> Vec<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut dirs = Vec::new();
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        dirs.push(dir.join("sgxemu"));
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        dirs.push(dir.join("sgxemu"));
    }
    if let Some(home) = set("HOME") {
        dirs.push(home.join(".cache").join("sgxemu"));
    }
    dirs.push(temp_dir.join(format!("sgxemu-{uid}")));
    dirs
}

/// Makes `dir` a directory of `uid`'s alone, or says why it is not one (module docs).
pub fn private_dir(dir: &Path, uid: u32) -> Result<(), DirError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let opened = File::options().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(dir);
    let handle = match opened {
        Ok(handle) => handle,
        // A symbolic link fails with ELOOP or (O_DIRECTORY is checked first) ENOTDIR; lstat
        // only names which, the directory is refused either way.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            let is_link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
            return Err(if is_link { DirError::Symlink } else { DirError::NotDirectory });
        }
        Err(e) => return Err(e.into()),
    };
    let metadata = handle.metadata()?;
    if metadata.uid() != uid {
        return Err(DirError::Owner { owner: metadata.uid(), uid });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirError::WritableByOthers { mode });
    }
    if mode != 0o700 {
        // Ours and written by no one else: tighten it (through the descriptor, which is
        // the directory just checked, whatever happens to the path).
        handle.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The file name of `library`: it carries the hash of the bytes, so versions never clash.
fn library_name(library: &[u8]) -> (String, String) {
    let hash: String = Sha256::digest(library)[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("libsgxemu_preload-{hash}.so"), hash)
}

/// Whether `metadata` is of a regular file of `uid` that no one else may write.
fn is_private_file(metadata: &Metadata, uid: u32) -> bool {
    metadata.file_type().is_file() && metadata.uid() == uid && metadata.mode() & 0o022 == 0
}

/// Whether `path` is a private file (not a symbolic link) holding exactly `library`.
fn holds(path: &Path, library: &[u8], uid: u32) -> bool {
    let Ok(file) = File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) else {
        return false;
    };
    let Ok(metadata) = file.metadata() else { return false };
    if !is_private_file(&metadata, uid) || metadata.len() != library.len() as u64 {
        return false;
    }
    let mut bytes = Vec::with_capacity(library.len());
    file.take(library.len() as u64).read_to_end(&mut bytes).is_ok() && bytes == library
}

/// Whether a process with this id exists (a zombie counts: its id is not reused yet).
fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The pid in a temporary name `.<16 hex digits>.<pid>`, if `name` is one.
fn temp_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (hash, pid) = rest.split_once('.')?;
    let is_hash = hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    let pid: i32 = pid.parse().ok().filter(|&p| p > 0)?;
    is_hash.then_some(pid)
}

/// Removes the temporary files of extractions whose process is gone.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else { continue };
        if !process_exists(pid) {
            // Another run may remove it at the same time: either way it is gone.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `library` into the private directory `dir` (unless it is already there, intact)
/// and returns its path.
pub fn install_in(dir: &Path, library: &[u8], uid: u32) -> Result<PathBuf, InstallError> {
    let (name, hash) = library_name(library);
    let path = dir.join(name);
    remove_stale_temps(dir);
    if holds(&path, library, uid) {
        return Ok(path);
    }
    let temp = dir.join(format!(".{hash}.{}", std::process::id()));
    let error = |source| InstallError::Write { path: path.clone(), source };
    // A leftover of this very pid (a previous process with the same id) is replaced.
    let _ = std::fs::remove_file(&temp);
    let written = File::options()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .and_then(|mut file| file.write_all(library));
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, &path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(error(e));
    }
    Ok(path)
}

/// Installs `library` in the first usable candidate directory (module docs) and returns
/// its path.
pub fn install(library: &[u8]) -> Result<PathBuf, InstallError> {
    let uid = current_uid();
    let candidates = candidate_dirs(|name| std::env::var_os(name), &std::env::temp_dir(), uid);
    let mut tried = Vec::new();
    for dir in candidates {
        match private_dir(&dir, uid) {
            Ok(()) => return install_in(&dir, library, uid),
            Err(why) => tried.push((dir, why)),
        }
    }
    Err(InstallError::NoPrivateDirectory { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sgxemu-preload-install-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn candidates_follow_xdg_then_home_then_a_per_user_temp_dir() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        };
        let tmp = Path::new("/tmp");
        assert_eq!(
            candidate_dirs(env(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/7"), ("XDG_CACHE_HOME", "")]), tmp, 7),
            [PathBuf::from("/run/user/7/sgxemu"), "/h/.cache/sgxemu".into(), "/tmp/sgxemu-7".into()]
        );
        assert_eq!(candidate_dirs(env(&[]), tmp, 0), [PathBuf::from("/tmp/sgxemu-0")]);
    }

    #[test]
    fn a_new_directory_is_created_0700_and_a_readable_one_of_ours_tightened() {
        let base = scratch("create");
        let uid = current_uid();
        let dir = base.join("a/b/sgxemu");
        private_dir(&dir, uid).unwrap();
        assert_eq!(mode(&dir), 0o700);
        set_mode(&dir, 0o755);
        private_dir(&dir, uid).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn symlinks_files_and_directories_others_can_write_are_refused() {
        let base = scratch("refuse");
        let uid = current_uid();
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        set_mode(&real, 0o700);
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(private_dir(&link, uid), Err(DirError::Symlink)));
        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(private_dir(&file, uid), Err(DirError::NotDirectory)));
        for loose in [0o770, 0o777, 0o702, 0o1777] {
            set_mode(&real, loose);
            assert!(matches!(private_dir(&real, uid), Err(DirError::WritableByOthers { mode }) if mode == loose));
            assert_eq!(mode(&real), loose, "left as it was");
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_directory_owned_by_someone_else_is_refused() {
        let uid = current_uid();
        let (dir, owner) = if uid == 0 {
            // Root: a directory given to nobody, as another user would have made it first.
            let dir = scratch("other-owner").join("sgxemu-0");
            std::fs::create_dir(&dir).unwrap();
            set_mode(&dir, 0o700);
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            (dir, 65534)
        } else {
            // Anyone else: a directory root owns.
            (PathBuf::from("/"), 0)
        };
        assert!(matches!(private_dir(&dir, uid), Err(DirError::Owner { owner: o, uid: u }) if o == owner && u == uid));
    }

    #[test]
    fn the_library_is_written_once_and_rewritten_when_not_intact() {
        let dir = scratch("install");
        let uid = current_uid();
        private_dir(&dir, uid).unwrap();
        let library = b"\x7fELF pretend library".repeat(1000);
        let path = install_in(&dir, &library, uid).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), library);
        assert_eq!(mode(&path), 0o700);
        // Same length, other bytes (a tampered or torn file): replaced.
        let mut tampered = library.clone();
        tampered[100] ^= 1;
        std::fs::write(&path, &tampered).unwrap();
        assert_eq!(install_in(&dir, &library, uid).unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), library);
        // Writable by others: replaced with a private file.
        set_mode(&path, 0o666);
        install_in(&dir, &library, uid).unwrap();
        assert_eq!(mode(&path), 0o700);
        // A symbolic link in its place is replaced, not followed.
        let target = dir.join("elsewhere");
        std::fs::write(&target, &library).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        install_in(&dir, &library, uid).unwrap();
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn temp_files_of_interrupted_extractions_are_removed() {
        let dir = scratch("stale");
        let uid = current_uid();
        // A process that has exited and been reaped: its id names no process now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.join(format!(".0123456789abcdef.{dead}"));
        let live = dir.join(format!(".0123456789abcdef.{}", std::process::id()));
        let unrelated = dir.join(".not-ours.1");
        for path in [&stale, &live, &unrelated] {
            std::fs::write(path, [0u8; 4096]).unwrap();
        }
        install_in(&dir, b"library", uid).unwrap();
        // The dead process's id may, rarely, have been reused already: then it stays, which
        // is the safe side (a live extraction's file is never removed).
        if !process_exists(dead as i32) {
            assert!(!stale.exists(), "the dead extraction's file is removed");
        }
        assert!(live.exists() && unrelated.exists());
        assert_eq!(temp_owner(".0123456789abcdef.42"), Some(42));
        for name in
            [".0123456789abcdef.x", ".0123456789abcdef.0", ".0123.42", "0123456789abcdef.42", ".0123456789abcdeg.42"]
        {
            assert_eq!(temp_owner(name), None, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
