//! Which build of vxn-blobs is running: its version and a digest of its executable.
//!
//! Records the tool leaves for a later run (compile's record in `build_dir`, the engine's
//! `.vxn-reuse` record) name the build that made them, so that neither a new release nor a
//! rebuilt development binary (same version, changed code) trusts what an older build wrote.

use crate::safe_fs;

/// The first 16 hex digits of the running executable's sha256, read once per process; `None`
/// when the executable cannot be read.
pub fn executable_digest() -> Option<&'static str> {
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

/// The tool identity that goes into compile's digest and the README: the version and
/// `executable_digest`.
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
