//! Errors of the squashfs engine, each naming the image and what was wrong with it.

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
    #[error("{} is not a squashfs image (bad magic); give a squashfs 4.0 file such as the *.rootfs.squashfs of an image build", path.display())]
    NotSquashfs { path: PathBuf },
    /// The image uses something the engine does not handle.
    #[error("{} uses {what}, which vxn-blobs does not support", path.display())]
    Unsupported { path: PathBuf, what: String },
}
