//! vxn-blobs as a library: everything the `vxn-blobs` command does, for callers that want the
//! pieces without the command line.
//!
//! The crate assembles the Xen DomU boot blobs of meta-virtualization's vxn: a kernel, a tiny
//! initramfs and a squashfs root filesystem into which two init scripts are injected.
//!
//! - [`squashfs`] is the engine: it injects files into an existing squashfs image while keeping
//!   every inode, xattr, hardlink and table of the source, and it knows nothing of BitBake.
//! - [`spec`] reads the JSON spec that BitBake (or a user) writes; [`initramfs`] and [`kernel`]
//!   check those inputs; [`assemble`] is `compile` (the seed's do_compile, with a digest that
//!   lets an unchanged rerun reuse its outputs) and [`deploy`] is `deploy` (atomic install,
//!   README, SHA256SUMS, and the boot check of what it installs; also `install` for a package);
//!   [`check`] finds what would stop a DomU from booting a deployed set; [`demo`] builds a small
//!   input set and runs compile and deploy. compile and deploy share the file-safety helpers of
//!   `safe_fs` (lock, staging, commit, no-follow opens, hashing).
//! - [`Error`] is the crate-level error those return; every message names the file involved.
//!
//! Nothing in the library prints: progress goes through callbacks and the rest through `log`.
//!
//! The command-line front end (`src/main.rs`) only parses arguments, calls into this crate and
//! reports errors.

pub mod assemble;
pub mod check;
pub mod demo;
pub mod deploy;
mod error;
pub mod initramfs;
pub mod kernel;
mod safe_fs;
pub mod spec;
pub mod squashfs;

pub use error::Error;

/// The first 16 hex digits of the running executable's sha256, read once per process; `None`
/// when the executable cannot be read.
pub(crate) fn executable_digest() -> Option<&'static str> {
    static DIGEST: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DIGEST
        .get_or_init(|| {
            let (sha, _) = std::env::current_exe()
                .and_then(std::fs::File::open)
                .and_then(safe_fs::sha256_reader)
                .ok()?;
            Some(sha[..16].to_string())
        })
        .as_deref()
}

/// The tool identity that goes into compile's digest: the version and a digest of the running
/// executable, so that neither a new release nor a rebuilt development binary (same version,
/// changed code) reuses outputs an older build made.
pub fn tool_identity() -> &'static str {
    static TOOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOOL.get_or_init(|| {
        let version = concat!("vxn-blobs ", env!("CARGO_PKG_VERSION"));
        match executable_digest() {
            Some(sha) => format!("{version} (executable sha256 {sha})"),
            None => version.to_string(),
        }
    })
}
