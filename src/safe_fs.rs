//! Safe file operations in the directories vxn-blobs writes (`build_dir`, the deploy directory):
//! one exclusive lock per directory, outputs staged in temporary files and renamed into place
//! once synced, opens that never follow a symlink planted at a path we write, and streaming
//! sha256.
//!
//! compile and deploy share these so that both keep the same promises: no final name ever
//! holds a partial file, leftovers of a killed run are removed by the next run and nothing else
//! is, and nothing is written through a symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use sha2::{Digest, Sha256};
use tempfile::TempPath;

/// Why a file operation of the tool failed; each message names the path and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("create", "read", "rename into place").
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A directory the spec names is missing or is not a directory.
    #[error("{field} {} {problem}", path.display())]
    Directory {
        /// The spec key or option ("build_dir", "deploy_dir", "destdir").
        field: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// Something at a path the tool writes is not what the tool put there (e.g. a symlink).
    #[error("refusing to use {}: {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
}

impl Error {
    /// A closure for `map_err` that wraps an I/O error with what was done to which path.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// The lock file that serializes compiles and deploys on one `build_dir`.
pub const LOCK_FILE: &str = ".vxn-blobs.lock";
/// Prefix of every temporary file the tool creates; leftovers of a killed run are removed by the
/// next run that holds the lock, and nothing else is ever removed.
pub const TEMP_PREFIX: &str = ".vxn-blobs-tmp-";
/// Mode of every output; deploy hardlinks them, so they already have the deployed mode.
pub(crate) const OUTPUT_MODE: u32 = 0o644;
/// Read size for hashing and copying.
const CHUNK: usize = 1 << 20;

/// Makes sure a directory the spec names exists, creating it and its missing parents (mode
/// 0755) as the seed's `mkdir -p ${B}` and `install -d ${DEPLOYDIR}` did.
///
/// Components that already exist are taken as they are, symlinks included: a symlinked TMPDIR
/// or deploy area is the user's layout. What is refused is a component this call creates that
/// is not a directory right afterwards (something swapped a symlink in meanwhile), and an
/// existing component that is not a directory at all.
pub(crate) fn ensure_dir(path: &Path, field: &'static str) -> Result<(), Error> {
    let not_a_dir = |at: &Path| Error::Directory {
        field,
        path: at.to_path_buf(),
        problem: if at == path {
            "is not a directory".into()
        } else {
            format!("cannot be created: {} is not a directory", at.display())
        },
    };
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        match fs::metadata(&prefix) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return Err(not_a_dir(&prefix)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", &prefix)(e)),
        }
        if let Err(e) = fs::DirBuilder::new().mode(0o755).create(&prefix) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                let parent = prefix.parent().unwrap_or(&prefix);
                return Err(unwritable(field, parent, &e)
                    .unwrap_or_else(|| Error::io("create directory", &prefix)(e)));
            }
        }
        // Ours or a concurrent mkdir's, it must be a real directory now.
        match fs::symlink_metadata(&prefix) {
            Ok(meta) if meta.is_dir() => debug!("created {}", prefix.display()),
            Ok(_) => {
                return Err(Error::Unsafe {
                    path: prefix,
                    why: "it turned into something other than a directory while vxn-blobs was creating it; remove it".into(),
                })
            }
            Err(e) => return Err(Error::io("inspect", &prefix)(e)),
        }
    }
    Ok(())
}

/// Opens an output for hashing: must be a regular file, not a symlink to one.
pub(crate) fn hash_output(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(open_regular(path)?)
}

/// Opens `path` for reading without following a symlink at its last component. `O_NONBLOCK`
/// because a fifo planted at a path we read would otherwise block the open (and the read)
/// forever; on a regular file it changes nothing.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// [`open_no_follow`], for a path that must hold a regular file.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file = open_no_follow(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Streams `reader` through SHA-256; returns the hex digest and the byte count.
pub(crate) fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A held `flock`; released when dropped (or when the process dies, so no stale lock remains).
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the exclusive lock of `build_dir`, waiting (and saying so) while another run holds it.
///
/// The lock file is opened with `O_NOFOLLOW` so a symlink planted there cannot make the tool
/// create or truncate a file elsewhere; it is never removed (removing lock files races).
pub(crate) fn lock_dir(build_dir: &Path) -> Result<DirLock, Error> {
    let path = build_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| match unwritable("build_dir", build_dir, &e) {
            Some(error) => error,
            None => refuse_symlink(&path, e, "open the lock file"),
        })?;
    flock_exclusive(&file, &path)?;
    Ok(DirLock { _file: file })
}

/// A permission error while creating something in a directory the spec names, reworded to say
/// which directory must be writable; `None` for other errors.
pub(crate) fn unwritable(field: &'static str, dir: &Path, e: &io::Error) -> Option<Error> {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => Some(Error::Directory {
            field,
            path: dir.to_path_buf(),
            problem: format!("is not writable ({e}); vxn-blobs creates its files there"),
        }),
        _ => None,
    }
}

/// Locks an already opened file or directory exclusively, logging when it has to wait.
pub(crate) fn flock_exclusive(file: &File, path: &Path) -> Result<(), Error> {
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(Error::io("lock", path)(err));
    }
    info!(
        "waiting for another vxn-blobs run to release {}",
        path.display()
    );
    loop {
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            debug!("got {}", path.display());
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::io("lock", path)(err));
        }
    }
}

/// Maps ELOOP (a symlink where `O_NOFOLLOW` was asked) to a refusal that says so.
pub(crate) fn refuse_symlink(path: &Path, e: io::Error, action: &'static str) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::Unsafe {
            path: path.to_path_buf(),
            why: "it is a symlink, and vxn-blobs does not follow symlinks at the paths it writes; remove it".into(),
        }
    } else {
        Error::io(action, path)(e)
    }
}

/// Removes temporary files of earlier runs that were killed. Called with the lock held, so no
/// live run owns them; only names with [`TEMP_PREFIX`] (or the engine's "." in front of one)
/// are touched, never a directory.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            debug!("cannot list {} for stale temporaries: {e}", dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The engine stages its output as ".<output name>.XXXX.partial" beside the output,
        // which compile names with TEMP_PREFIX: that file is ours too.
        let is_temp = name.starts_with(TEMP_PREFIX)
            || name
                .strip_prefix('.')
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(true);
        if is_temp && !is_dir {
            match fs::remove_file(entry.path()) {
                Ok(()) => info!(
                    "removed {}, left by an interrupted run",
                    entry.path().display()
                ),
                Err(e) => warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Removes a file of ours if it exists (unlink never follows a symlink).
pub(crate) fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// A new temporary file in `dir` with the output mode. tempfile opens it with
/// `O_CREAT | O_EXCL`, which fails rather than follow a symlink planted at the name.
pub(crate) fn new_temp(dir: &Path) -> Result<tempfile::NamedTempFile, Error> {
    let temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(Error::io("create a temporary file in", dir))?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(OUTPUT_MODE))
        .map_err(Error::io("set the mode of", temp.path()))?;
    Ok(temp)
}

/// Writes `bytes` to a synced temporary file in `dir`, ready for [`commit`].
pub(crate) fn stage_bytes(dir: &Path, bytes: &[u8]) -> Result<TempPath, Error> {
    let mut temp = new_temp(dir)?;
    temp.write_all(bytes)
        .map_err(Error::io("write", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(Error::io("sync", temp.path()))?;
    Ok(temp.into_temp_path())
}

/// Renames a staged file into place; rename replaces a symlink there instead of following it.
pub(crate) fn commit(temp: TempPath, destination: &Path) -> Result<(), Error> {
    // rename(2) onto another name of the same file does nothing and leaves both names: a
    // redeploy that hardlinked the unchanged output would keep its staging name forever.
    if same_file(&temp, destination) {
        let staged = temp.to_path_buf();
        return temp.close().map_err(Error::io("remove", &staged));
    }
    rename_into_place(temp, destination).map_err(|source| Error::Io {
        action: "rename into place",
        path: destination.to_path_buf(),
        source,
    })
}

/// Renames a temporary file onto `destination` through libc's rename(), then forgets it.
///
/// Not tempfile's `persist`: that renames with a raw system call (rustix), which the
/// LD_PRELOAD tools builds run under cannot see. Under pseudo (a recipe's do_install) the
/// database then still knew the file by its temporary name, and do_package aborted with a
/// "path mismatch". On failure the temporary file is removed as usual.
pub(crate) fn rename_into_place(temp: TempPath, destination: &Path) -> io::Result<()> {
    fs::rename(&temp, destination)?;
    // Disarms the removal on drop; the path it returns is the old, now absent name.
    let _ = temp.keep();
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Makes renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

/// A reader that copies what passes through it into `out` and hashes it, so one pass both checks
/// and copies (the checked bytes are the copied bytes). Write errors are kept apart from read
/// errors so they can be reported against the right file.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut File,
    hasher: Sha256,
    size: u64,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Err(e) = self.out.write_all(&buf[..n]) {
                self.write_error = Some(e);
                return Err(io::Error::other("writing the copy failed"));
            }
            self.hasher.update(&buf[..n]);
            self.size += n as u64;
        }
        Ok(n)
    }
}

/// Copies `input` into a new staged file in `dir`, handing the bytes to `consume` on the way;
/// `consume` must read to the end. A failed write is reported against the staged file, whatever
/// `consume` made of the interrupted stream.
/// Returns the synced staged file, the sha256 and size of what was copied, and `consume`'s value.
pub(crate) fn stage_copy<T, E: From<Error>>(
    input: &Path,
    dir: &Path,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, E>,
) -> Result<(tempfile::NamedTempFile, (String, u64), T), E> {
    let source = File::open(input).map_err(Error::io("open", input))?;
    let mut temp = new_temp(dir)?;
    let temp_path = temp.path().to_path_buf();
    let mut tee = Tee {
        inner: source,
        out: temp.as_file_mut(),
        hasher: Sha256::new(),
        size: 0,
        write_error: None,
    };
    let consumed = consume(&mut tee);
    if let Some(e) = tee.write_error.take() {
        return Err(Error::io("write", &temp_path)(e).into());
    }
    let value = consumed?;
    let hashed = (hex(&tee.hasher.finalize()), tee.size);
    temp.as_file()
        .sync_all()
        .map_err(Error::io("sync", &temp_path))?;
    Ok((temp, hashed, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha256_match_known_values() {
        let (sha, size) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
    }

    #[test]
    fn the_lock_refuses_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let err = lock_dir(dir.path()).err().unwrap();
        assert!(matches!(err, Error::Unsafe { .. }), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn stale_temporaries_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}abc")), b"x").unwrap();
        fs::write(
            dir.path().join(format!(".{TEMP_PREFIX}abc.x.partial")),
            b"x",
        )
        .unwrap();
        fs::write(dir.path().join("user-file"), b"x").unwrap();
        fs::write(dir.path().join(".rootfs.img.abc.partial"), b"x").unwrap();
        fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}dir"))).unwrap();
        remove_stale_temps(dir.path());
        assert!(!dir.path().join(format!("{TEMP_PREFIX}abc")).exists());
        assert!(!dir
            .path()
            .join(format!(".{TEMP_PREFIX}abc.x.partial"))
            .exists());
        assert!(dir.path().join("user-file").exists());
        assert!(dir.path().join(".rootfs.img.abc.partial").exists());
        assert!(dir.path().join(format!("{TEMP_PREFIX}dir")).exists());
    }
}
