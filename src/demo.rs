//! `demo`: builds a small but real input set, runs compile and deploy on it, and explains the
//! result, so that a new user sees the whole flow without a BitBake build.
//!
//! The inputs are made here, without external tools: a gzip squashfs rootfs from the engine's
//! sample writer, a gzip newc cpio initramfs with an `/init` from a tiny deterministic cpio
//! writer, a kernel file whose header carries the real boot-protocol magic (it does not boot),
//! and the two init scripts. The same writers serve the tests as fixtures.

use std::io::{self, Write};
use std::path::Path;

use crate::kernel::KernelArch;

/// One entry of a newc archive written by [`write_initramfs`].
#[derive(Debug, Clone, Copy)]
pub struct CpioEntry<'a> {
    /// Path inside the archive, without a leading '/'.
    pub name: &'a str,
    /// Full `st_mode` (type and permission bits), e.g. 0o100755 for an executable file.
    pub mode: u32,
    /// File contents (symlink target for a symlink; empty for directories and devices).
    pub data: &'a [u8],
    /// (major, minor) of a device node; (0, 0) otherwise.
    pub rdev: (u32, u32),
}

/// The demo initramfs: `/dev/console` (so init has a console) and an `/init` preinit stand-in.
pub const DEMO_INITRAMFS: [CpioEntry<'static>; 3] = [
    CpioEntry {
        name: "dev",
        mode: 0o040755,
        data: b"",
        rdev: (0, 0),
    },
    CpioEntry {
        name: "dev/console",
        mode: 0o020600,
        data: b"",
        rdev: (5, 1),
    },
    CpioEntry {
        name: "init",
        mode: 0o100755,
        data: b"#!/bin/sh\n# vxn-blobs demo preinit: the real one mounts /dev/xvda and switch_roots.\nexec /bin/sh\n",
        rdev: (0, 0),
    },
];

/// The demo's `/vxn-init.sh`: like the real one, it sources the common script by absolute path.
pub const VXN_INIT: &str = "#!/bin/sh\n\
# vxn-blobs demo: stands in for meta-virtualization's vxn-init.sh\n\
. /vcontainer-init-common.sh\n\
vcontainer_log \"vxn init running under $(cat /sys/hypervisor/type 2>/dev/null || echo unknown)\"\n";

/// The demo's `/vcontainer-init-common.sh`.
pub const COMMON_INIT: &str = "#!/bin/sh\n\
# vxn-blobs demo: stands in for meta-virtualization's vcontainer-init-common.sh\n\
vcontainer_log() { echo \"vcontainer: $*\"; }\n";

/// Writes a gzip-compressed newc cpio archive of `entries`, deterministically: inode numbers
/// count from 1, uid/gid 0, every mtime `mtime`, and a gzip header without name or timestamp.
pub fn write_initramfs(path: &Path, entries: &[CpioEntry<'_>], mtime: u32) -> io::Result<()> {
    let mut cpio = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        newc_entry(&mut cpio, i as u32 + 1, entry, mtime)?;
    }
    let trailer = CpioEntry {
        name: "TRAILER!!!",
        mode: 0,
        data: b"",
        rdev: (0, 0),
    };
    newc_entry(&mut cpio, 0, &trailer, 0)?;
    // cpio's traditional 512-byte blocking, as `cpio -o -H newc` writes it.
    cpio.resize(cpio.len().div_ceil(512) * 512, 0);
    let file = std::fs::File::create(path)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    gz.write_all(&cpio)?;
    gz.finish()?.sync_all()
}

/// Appends one newc header, name and data, each padded to 4 bytes.
fn newc_entry(out: &mut Vec<u8>, ino: u32, entry: &CpioEntry<'_>, mtime: u32) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "cpio entry too large");
    let size = u32::try_from(entry.data.len()).map_err(|_| too_big())?;
    let name_size = u32::try_from(entry.name.len() + 1).map_err(|_| too_big())?;
    let is_dir = entry.mode & 0o170000 == 0o040000;
    let fields = [
        ino,
        entry.mode,
        0, // uid
        0, // gid
        if is_dir { 2 } else { 1 },
        mtime,
        size,
        0, // devmajor
        0, // devminor
        entry.rdev.0,
        entry.rdev.1,
        name_size,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(entry.name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(entry.data);
    pad4(out);
    Ok(())
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Writes a stand-in kernel image for `arch`: the right size class and the boot-protocol magic
/// that the kernel check looks for, but no code; it satisfies the check and boots nothing.
pub fn write_fake_kernel(path: &Path, arch: KernelArch) -> io::Result<()> {
    const SIZE: usize = 64 * 1024;
    let mut image = vec![0u8; SIZE];
    match arch {
        KernelArch::X86 => {
            image[0x1f1] = 1; // setup_sects
            image[0x1fe] = 0x55; // boot_flag
            image[0x1ff] = 0xaa;
            image[0x202..0x206].copy_from_slice(b"HdrS");
            image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
        }
        KernelArch::Arm64 => {
            image[0x08..0x10].copy_from_slice(&0x8_0000u64.to_le_bytes()); // text_offset
            image[0x10..0x18].copy_from_slice(&(SIZE as u64).to_le_bytes()); // image_size
            image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        }
        KernelArch::Arm => {
            image[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
            image[0x28..0x2c].copy_from_slice(&0u32.to_le_bytes()); // start
            image[0x2c..0x30].copy_from_slice(&(SIZE as u32).to_le_bytes()); // end
        }
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(&image)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{initramfs, kernel};

    #[test]
    fn the_demo_initramfs_passes_the_check_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.cpio.gz");
        let b = dir.path().join("b.cpio.gz");
        write_initramfs(&a, &DEMO_INITRAMFS, 1234).unwrap();
        write_initramfs(&b, &DEMO_INITRAMFS, 1234).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let summary = initramfs::check_file(&a).unwrap();
        assert_eq!(summary.entries, 3);
        assert!(summary.has_init);
    }

    #[test]
    fn fake_kernels_pass_their_own_check_only() {
        let dir = tempfile::tempdir().unwrap();
        for arch in [KernelArch::X86, KernelArch::Arm64, KernelArch::Arm] {
            let path = dir.path().join(arch.image_type());
            write_fake_kernel(&path, arch).unwrap();
            for other in [KernelArch::X86, KernelArch::Arm64, KernelArch::Arm] {
                assert_eq!(
                    kernel::check(&path, other, "t").is_ok(),
                    arch == other,
                    "{arch:?} image checked as {other:?}"
                );
            }
        }
    }
}
