//! The blob set itself: what its files are called, the SHA256SUMS that vouches for them, and the
//! record compile leaves in `build_dir` for deploy and install.
//!
//! compile writes these names and the record, deploy and install read the record and write the
//! SHA256SUMS, and check reads the SHA256SUMS and the files under these names. Keeping them here,
//! below all three, is what lets each of them know the set without knowing the others.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::safe_fs::{self, commit, hash_output, open_no_follow, stage_bytes, sync_dir};

/// The initramfs, in `build_dir` and in a deployed set.
pub const INITRAMFS: &str = "initramfs.cpio.gz";
/// The rootfs with the init scripts injected, in `build_dir` and in a deployed set.
pub const ROOTFS: &str = "rootfs.img";
/// The kernel in `build_dir`; deploy and install name it after the spec's `kernel_name`.
pub const KERNEL: &str = "kernel";
/// The checksum file of a deployed or installed set, also deploy's manifest of what it owns.
pub const SUMS: &str = "SHA256SUMS";
/// The README of a deployed set.
pub const README: &str = "README";
/// The record of the last completed compile, in `build_dir`.
pub const RECORD: &str = ".vxn-blobs-state.json";
/// Names deploy writes itself besides the kernel.
pub const DEPLOYED_NAMES: [&str; 4] = [INITRAMFS, ROOTFS, README, SUMS];

/// Version of the record's layout.
const RECORD_FORMAT: u32 = 1;
/// A record is a few hundred bytes; anything far larger is not ours.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// What compile recorded about one output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputRecord {
    pub sha256: String,
    pub size: u64,
}

/// The record of a completed compile (`build_dir/.vxn-blobs-state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: u32,
    /// [`crate::tool_identity`] of the compile.
    pub tool: String,
    /// sha256 over the tool, the spec and every input (see `Fingerprint` in src/compile.rs).
    pub digest: String,
    /// sha256 of the spec's canonical bytes, so deploy can tell whether it has the same spec.
    pub spec_sha256: String,
    /// sha256 of each input by label ("initramfs", "rootfs", "kernel", `inject[0]`...), kept to
    /// say which input changed when a rerun rebuilds.
    pub inputs: BTreeMap<String, String>,
    /// The outputs by name in `build_dir`; [`KERNEL`] only when one was compiled.
    pub outputs: BTreeMap<String, OutputRecord>,
}

/// Why `build_dir` holds no usable record, or its outputs no longer match it. The messages
/// complete a sentence such as "build holds no completed compile (...)".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nothing was compiled there yet: no {RECORD}")]
    NoRecord,
    #[error("{RECORD} cannot be opened: {0}")]
    Open(io::Error),
    #[error("{RECORD} cannot be read: {0}")]
    Read(io::Error),
    #[error("{RECORD} is not a valid record ({0})")]
    Invalid(serde_json::Error),
    #[error("{RECORD} has format {0}, not {RECORD_FORMAT}")]
    Format(u32),
    #[error("{RECORD} records no {0}")]
    MissingOutput(&'static str),
    #[error("{RECORD} records an unknown output {0:?}")]
    UnknownOutput(String),
    /// An output cannot be hashed (missing, a symlink, unreadable).
    #[error("{name}: {error}")]
    OutputUnreadable { name: String, error: io::Error },
    /// An output's bytes are no longer what compile recorded.
    #[error("{} no longer matches the sha256 recorded by the last compile", path.display())]
    OutputChanged { path: PathBuf },
    /// Writing the record failed.
    #[error(transparent)]
    File(#[from] safe_fs::Error),
}

impl Record {
    /// A record of the current format.
    pub fn new(
        tool: String,
        digest: String,
        spec_sha256: String,
        inputs: BTreeMap<String, String>,
        outputs: BTreeMap<String, OutputRecord>,
    ) -> Record {
        Record {
            format: RECORD_FORMAT,
            tool,
            digest,
            spec_sha256,
            inputs,
            outputs,
        }
    }

    /// Reads the record of `build_dir`; the error is the reason there is no usable record.
    pub fn read(build_dir: &Path) -> Result<Record, Error> {
        let path = build_dir.join(RECORD);
        let file = match open_no_follow(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoRecord),
            Err(e) => return Err(Error::Open(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_RECORD_BYTES)
            .read_to_end(&mut text)
            .map_err(Error::Read)?;
        let record: Record = serde_json::from_slice(&text).map_err(Error::Invalid)?;
        if record.format != RECORD_FORMAT {
            return Err(Error::Format(record.format));
        }
        for required in [INITRAMFS, ROOTFS] {
            if !record.outputs.contains_key(required) {
                return Err(Error::MissingOutput(required));
            }
        }
        if let Some(name) = record
            .outputs
            .keys()
            .find(|n| ![INITRAMFS, ROOTFS, KERNEL].contains(&n.as_str()))
        {
            return Err(Error::UnknownOutput(name.clone()));
        }
        Ok(record)
    }

    /// Hashes every recorded output; the error says which one no longer matches.
    ///
    /// Why hash instead of comparing size and mtime: an mtime can be carried over by `cp -p`,
    /// sstate or a restore while the content differs, and a same-size rewrite would pass. Hashing
    /// reads ~300 MB for a typical rootfs.img, about a second (in parallel with the inputs), which
    /// is still far below the minutes of an xz rebuild, and it is the only check that supports
    /// the promise that reused outputs are exactly what a rebuild gives.
    pub fn verify_outputs(&self, build_dir: &Path) -> Result<(), Error> {
        self.outputs
            .par_iter()
            .map(|(name, record)| {
                let path = build_dir.join(name);
                let (sha, size) = hash_output(&path).map_err(|error| Error::OutputUnreadable {
                    name: name.clone(),
                    error,
                })?;
                if sha != record.sha256 || size != record.size {
                    return Err(Error::OutputChanged { path });
                }
                Ok(())
            })
            .collect()
    }

    /// Writes the record into `build_dir` atomically (staged, renamed, synced).
    pub fn write(&self, build_dir: &Path) -> Result<(), Error> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| safe_fs::Error::Io {
            action: "serialize the state for",
            path: build_dir.join(RECORD),
            source: e.into(),
        })?;
        text.push(b'\n');
        let temp = stage_bytes(build_dir, &text)?;
        commit(temp, &build_dir.join(RECORD))?;
        Ok(sync_dir(build_dir)?)
    }
}

/// One line of a SHA256SUMS as `sha256sum` writes it, `<64 hex digits>  <name>` (or ` *` for
/// binary mode): the digest and the name, or `None` for any other line.
pub fn parse_sums_line(line: &str) -> Option<(&str, &str)> {
    let (sha, name) = line.split_once("  ").or_else(|| line.split_once(" *"))?;
    let valid = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty();
    valid.then_some((sha, name))
}

/// SHA256SUMS in the format `sha256sum -c` reads: `<hex>  <name>` for each (name, sha256),
/// sorted by name.
pub fn sums_text<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut files: Vec<(&str, &str)> = files.collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    files
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect()
}

/// The files of one `vxn/<arch>` set, by the names the boot reads them under: either installed
/// in a directory, or staged under temporary names and about to be renamed there.
#[derive(Debug, Clone)]
pub struct BlobSet {
    dir: PathBuf,
    /// For a staged set: where each name's bytes are now. `None`: the files of `dir`.
    staged: Option<BTreeMap<String, PathBuf>>,
}

/// Why a file of a set cannot be used; completes a sentence that starts with its path.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("is missing")]
    Missing,
    #[error("is not a regular file")]
    NotAFile,
    #[error("cannot be read ({0})")]
    Unreadable(io::Error),
}

impl BlobSet {
    /// The set installed in `dir`.
    pub fn installed(dir: &Path) -> BlobSet {
        BlobSet {
            dir: dir.to_path_buf(),
            staged: None,
        }
    }

    /// A set about to be installed in `dir`: `files` maps each final name to the staged file
    /// holding its bytes. Names not in `files` do not exist.
    pub fn staged(dir: &Path, files: BTreeMap<String, PathBuf>) -> BlobSet {
        BlobSet {
            dir: dir.to_path_buf(),
            staged: Some(files),
        }
    }

    /// The directory the set is (or is about to be) in; its files' names are relative to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the bytes of `name` are, if anywhere.
    pub fn source(&self, name: &str) -> Option<PathBuf> {
        match &self.staged {
            None => Some(self.dir.join(name)),
            Some(files) => files.get(name).cloned(),
        }
    }

    /// Opens `name` as a regular file (following symlinks, as the boot does). A fifo or device
    /// never blocks the open.
    pub fn open(&self, name: &str) -> Result<File, Unusable> {
        let path = self.source(name).ok_or(Unusable::Missing)?;
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(e) => return Err(Unusable::Unreadable(e)),
        };
        if !meta.is_file() {
            return Err(Unusable::NotAFile);
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(Unusable::Unreadable)?;
        match file.metadata() {
            Ok(meta) if meta.is_file() => Ok(file),
            Ok(_) => Err(Unusable::NotAFile),
            Err(e) => Err(Unusable::Unreadable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outputs: &[&str]) -> Record {
        let output = OutputRecord {
            sha256: "x".into(),
            size: 0,
        };
        Record::new(
            "tool".into(),
            "d".into(),
            "s".into(),
            BTreeMap::new(),
            outputs
                .iter()
                .map(|n| (n.to_string(), output.clone()))
                .collect(),
        )
    }

    #[test]
    fn the_record_rejects_outputs_outside_the_known_names() {
        let dir = tempfile::tempdir().unwrap();
        record(&[INITRAMFS, ROOTFS, "../../etc/passwd"])
            .write(dir.path())
            .unwrap();
        let reason = Record::read(dir.path()).unwrap_err().to_string();
        assert!(reason.contains("unknown output"), "{reason}");
    }

    #[test]
    fn a_symlinked_record_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(RECORD)).unwrap();
        let reason = Record::read(dir.path()).unwrap_err().to_string();
        assert!(reason.contains("cannot be opened"), "{reason}");
    }

    #[test]
    fn sums_round_trip_as_sha256sum_writes_them() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let text = sums_text([(ROOTFS, a.as_str()), (INITRAMFS, b.as_str())].into_iter());
        assert_eq!(text, format!("{b}  {INITRAMFS}\n{a}  {ROOTFS}\n"));
        let parsed: Vec<_> = text.lines().filter_map(parse_sums_line).collect();
        assert_eq!(parsed, [(b.as_str(), INITRAMFS), (a.as_str(), ROOTFS)]);
        assert_eq!(
            parse_sums_line(&format!("{a} *Image")),
            Some((a.as_str(), "Image"))
        );
        assert_eq!(parse_sums_line("not a line"), None);
    }
}
