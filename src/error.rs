//! The crate-level error: every failure `compile`, `deploy`, `install` and `demo` can report,
//! each a sentence that names the file involved and, where there is one, what to do about it.
//!
//! Only the command modules return it. The modules below them have their own typed errors
//! (spec, initramfs, kernel, squashfs, check, blob_set, safe_fs), wrapped here transparently so
//! their wording reaches the user unchanged; the variants of its own cover what only the commands
//! know.

use std::path::PathBuf;

use crate::{blob_set, check, initramfs, kernel, safe_fs, spec, squashfs};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec could not be read or is not valid.
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// The initramfs is not one complete gzip stream holding a newc cpio archive.
    #[error(transparent)]
    Initramfs(#[from] initramfs::Error),
    /// The kernel image does not carry its architecture's magic.
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    /// The squashfs engine failed (its message names the image).
    #[error(transparent)]
    Squashfs(#[from] squashfs::Error),
    /// A directory could not be checked at all.
    #[error(transparent)]
    Check(#[from] check::Error),
    /// A file operation failed, or a path the tool writes is not safe to use.
    #[error(transparent)]
    File(#[from] safe_fs::Error),
    /// compile's record could not be written.
    #[error(transparent)]
    Record(#[from] blob_set::Error),
    /// An input the spec names does not exist; `hint` says how to produce it.
    #[error("{what} not found at {}. {hint}", path.display())]
    MissingInput {
        what: &'static str,
        path: PathBuf,
        hint: String,
    },
    /// An input exists but is not a regular file.
    #[error("{what} {} is not a regular file; point the spec at the file itself", path.display())]
    NotAFile { what: &'static str, path: PathBuf },
    /// `deploy` found no completed compile matching the spec.
    #[error("{} holds no completed compile for spec {} ({reason}); run `vxn-blobs compile --spec {}` first", build_dir.display(), spec.display(), spec.display())]
    NotCompiled {
        build_dir: PathBuf,
        spec: PathBuf,
        reason: String,
    },
    /// An input changed while compile was reading it, so the outputs might mix two versions.
    #[error("{what} changed while compile was running; nothing was installed, run compile again once the inputs are stable")]
    InputsChanged { what: String },
    /// deploy's boot check found problems and the spec's `check` is "error".
    #[error("refusing to deploy into {}, because the set would not boot: {}. Nothing was installed; fix the inputs and compile again, or set \"check\": \"warn\" in {} to install anyway", dir.display(), numbered(findings), spec.display())]
    CheckFailed {
        dir: PathBuf,
        spec: PathBuf,
        /// Each finding's message.
        findings: Vec<String>,
    },
    /// The demo's output directory holds something the demo did not make.
    #[error("demo directory {} exists and is not a vxn-blobs demo directory (no demo-spec.json); choose another --out", path.display())]
    DemoDirectory { path: PathBuf },
}

/// "(1) first (2) second": several sentences in one error line.
fn numbered(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| format!("({}) {item}", i + 1))
        .collect();
    items.join(" ")
}
