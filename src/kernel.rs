//! Kernel image header checks: a wrong file handed over as "the kernel" is caught at compile time,
//! not when Xen refuses to boot the DomU.
//!
//! Only the magic that each architecture's boot protocol puts at a fixed offset is checked; that
//! is enough to tell a kernel from a config file, a compressed `Image.gz` or an x86 image given for
//! an arm64 target.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The kernel image formats vxn boots, one per family of BitBake `TARGET_ARCH` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelArch {
    /// x86 bzImage (`TARGET_ARCH` x86_64, i686, i586): "HdrS" at 0x202 (Linux boot protocol).
    X86,
    /// arm64 `Image`: "ARM\x64" at 0x38 (Documentation/arch/arm64/booting.rst).
    Arm64,
    /// 32-bit arm `zImage`: 0x016f2818 little endian at 0x24.
    Arm,
}

/// `TARGET_ARCH` values vxn-blobs knows how to check, for error messages.
pub const SUPPORTED_TARGET_ARCHES: &str = "x86_64, i686, i586, aarch64, arm";

impl KernelArch {
    /// Maps a BitBake `TARGET_ARCH` to its kernel format; `None` for architectures vxn does not
    /// build blobs for.
    pub fn from_target_arch(target_arch: &str) -> Option<Self> {
        match target_arch {
            "x86_64" | "i686" | "i586" => Some(Self::X86),
            "aarch64" => Some(Self::Arm64),
            "arm" => Some(Self::Arm),
            _ => None,
        }
    }

    /// Where the magic sits and what it is.
    fn magic(self) -> (usize, &'static [u8]) {
        match self {
            Self::X86 => (0x202, b"HdrS"),
            Self::Arm64 => (0x38, b"ARM\x64"),
            Self::Arm => (0x24, &[0x18, 0x28, 0x6f, 0x01]),
        }
    }

    /// The image type the seed recipe expects for this architecture.
    pub fn image_type(self) -> &'static str {
        match self {
            Self::X86 => "bzImage",
            Self::Arm64 => "Image",
            Self::Arm => "zImage",
        }
    }
}

/// Why a kernel image was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image could not be opened or read.
    #[error("cannot read kernel image {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The magic of the target's boot protocol is not where it must be.
    #[error("{} is not a kernel image for {target_arch} ({image_type}): expected {expected} at offset {offset:#x}, found {found}; point \"kernel\" at the uncompressed {image_type} the kernel build deploys", path.display(), expected = show_bytes(expected), found = found.as_deref().map(show_bytes).unwrap_or_else(|| "end of file".into()))]
    WrongMagic {
        path: PathBuf,
        target_arch: String,
        image_type: &'static str,
        offset: usize,
        expected: &'static [u8],
        /// What the file holds there; `None` when it is shorter than the offset plus the magic.
        found: Option<Vec<u8>>,
    },
}

/// Renders magic bytes readably: printable ASCII as text, anything else as hex.
fn show_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(bytes))
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// Checks that the file at `path` carries the kernel magic of `arch`.
///
/// `target_arch` is only used to word the error the way the spec says it.
pub fn check(path: &Path, arch: KernelArch, target_arch: &str) -> Result<(), Error> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_reader(file, path, arch, target_arch)
}

/// [`check`] on the image read from `reader` (from its start); `path` names it in errors.
///
/// Compile checks the copy it is about to install, so the bytes checked are the bytes deployed.
pub fn check_reader<R: Read>(
    mut reader: R,
    path: &Path,
    arch: KernelArch,
    target_arch: &str,
) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let (offset, expected) = arch.magic();
    let mut header = vec![0u8; offset + expected.len()];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let found = if filled == header.len() {
        Some(header[offset..].to_vec())
    } else {
        None
    };
    if found.as_deref() == Some(expected) {
        return Ok(());
    }
    Err(Error::WrongMagic {
        path: path.to_path_buf(),
        target_arch: target_arch.to_string(),
        image_type: arch.image_type(),
        offset,
        expected,
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(offset: usize, magic: &[u8]) -> tempfile::NamedTempFile {
        let mut bytes = vec![0u8; 4096];
        bytes[offset..offset + magic.len()].copy_from_slice(magic);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    #[test]
    fn accepts_each_architectures_magic() {
        for (arch, name) in [
            (KernelArch::X86, "x86_64"),
            (KernelArch::Arm64, "aarch64"),
            (KernelArch::Arm, "arm"),
        ] {
            let (offset, magic) = arch.magic();
            let file = image_with(offset, magic);
            check(file.path(), arch, name).unwrap();
        }
    }

    #[test]
    fn arm_magic_is_little_endian_0x016f2818() {
        assert_eq!(KernelArch::Arm.magic().1, 0x016f_2818u32.to_le_bytes());
    }

    #[test]
    fn rejects_an_x86_image_for_arm64_naming_offset_and_path() {
        let file = image_with(0x202, b"HdrS");
        let err = check(file.path(), KernelArch::Arm64, "aarch64").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"ARM\x64\" at offset 0x38"), "{msg}");
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("not a kernel image for aarch64 (Image)"),
            "{msg}"
        );
    }

    #[test]
    fn a_short_file_reports_end_of_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"#!/bin/sh\n").unwrap();
        let msg = check(file.path(), KernelArch::X86, "x86_64")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("found end of file"), "{msg}");
    }

    #[test]
    fn target_arch_mapping_follows_the_seed() {
        assert_eq!(KernelArch::from_target_arch("i586"), Some(KernelArch::X86));
        assert_eq!(
            KernelArch::from_target_arch("aarch64"),
            Some(KernelArch::Arm64)
        );
        assert_eq!(KernelArch::from_target_arch("riscv64"), None);
    }
}
