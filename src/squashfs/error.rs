//! Errors of the squashfs engine, each naming the image and what was wrong with it.
//!
//! A build engineer reads these in a BitBake task log, far from the code: every message says
//! which file, which part of it, and what to do about it.

use std::fmt;
use std::path::PathBuf;

/// Why an injection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input is not a squashfs image at all.
    #[error("{} is not a squashfs image (no \"hsqs\" magic at its start); give a squashfs 4.0 file such as the *.rootfs.squashfs of an image build", path.display())]
    NotSquashfs { path: PathBuf },
    /// A squashfs of another format version.
    #[error("{} is squashfs {major}.{minor}; only squashfs 4.0 (what mksquashfs 4.x writes) is supported", path.display())]
    Version {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    /// The image uses something the engine does not handle.
    #[error("{} uses {what}, which vxn-blobs does not support", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// The image contradicts itself or the format.
    #[error("{} is corrupt or truncated: {corruption}; rebuild the image", path.display())]
    Corrupt {
        path: PathBuf,
        corruption: Corruption,
    },
    /// An injection cannot be applied to this image.
    #[error("cannot inject {dest} into {}: {why}", image.display())]
    Destination {
        image: PathBuf,
        dest: String,
        why: String,
    },
}

/// Where in an image a contradiction was found, and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The structure being read ("inode table", "directory table", ...).
    pub table: &'static str,
    /// Byte position in the file, or in the table's uncompressed stream where noted.
    pub offset: u64,
    pub what: String,
}

impl Corruption {
    pub fn new(table: &'static str, offset: u64, what: impl Into<String>) -> Corruption {
        Corruption {
            table,
            offset,
            what: what.into(),
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at {}): {}", self.table, self.offset, self.what)
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
