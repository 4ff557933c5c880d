//! `demo`: builds a small but real input set, runs compile and deploy on it, and explains the
//! result, so that a new user sees the whole flow without a BitBake build.
//!
//! The inputs are made here, without external tools: a gzip squashfs rootfs from the engine's
//! sample writer, a gzip newc cpio initramfs with an `/init` from a tiny deterministic cpio
//! writer, a kernel file whose header carries the real boot-protocol magic (it does not boot),
//! and the two init scripts. The same writers serve the tests as fixtures.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::blob_set::{ROOTFS, SUMS};
use crate::check::{self, Report};
use crate::compile::{self, CompileReport};
use crate::deploy::{self, DeployReport};
use crate::error::Error;
use crate::kernel::KernelArch;
use crate::safe_fs::{self, commit, sha256_reader, stage_bytes};
use crate::spec::{self, Spec};
use crate::squashfs::{self, FileInfo};

/// The spec the demo writes; its presence marks a directory as the demo's own.
pub const DEMO_SPEC: &str = "demo-spec.json";
/// SOURCE_DATE_EPOCH of the demo when the environment sets none: 2026-01-01 00:00:00 UTC.
pub const DEMO_EPOCH: u32 = 1_767_225_600;
/// Input file names, as the vruntime multiconfig deploys them for qemux86-64.
const ROOTFS_INPUT: &str = "inputs/vdkr-rootfs-image-qemux86-64.rootfs.squashfs";
const INITRAMFS_INPUT: &str = "inputs/vdkr-tiny-initramfs-image-qemux86-64.cpio.gz";
const KERNEL_INPUT: &str = "inputs/bzImage";
const VXN_INIT_INPUT: &str = "inputs/vxn-init.sh";
const COMMON_INIT_INPUT: &str = "inputs/vcontainer-init-common.sh";
/// Files of the sample rootfs that injection must leave exactly as they were.
const KEPT_FILES: [&str; 2] = ["/bin/busybox", "/etc/shadow"];

/// What the demo did, for the CLI to show.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub dir: PathBuf,
    pub spec: PathBuf,
    pub epoch: u32,
    pub compile: CompileReport,
    pub deploy: DeployReport,
    /// `vxn-blobs check` of the deployed directory, read back after the deploy.
    pub check: Report,
    /// The injected files read back from the deployed rootfs.img, with the sha256 of the input
    /// file they came from.
    pub injected: Vec<(FileInfo, String, String)>,
    /// Files the sample rootfs had before injection, read back from input and output.
    pub kept: Vec<(FileInfo, FileInfo)>,
}

/// Makes the inputs in `out/inputs`, writes `out/demo-spec.json`, runs compile and deploy into
/// `out/build` and `out/deploy`, and reads the result back.
///
/// `out` may be new, empty, or a directory an earlier demo made; anything else is refused so
/// the demo never overwrites files it did not make.
pub fn run(out: &Path) -> Result<DemoReport, Error> {
    // Absolute, so that the report can show paths relative to it whatever the spec resolved.
    let cwd =
        std::env::current_dir().map_err(safe_fs::Error::io("find the working directory", out))?;
    let out = &cwd.join(out);
    prepare_dir(out)?;
    let epoch = match spec::source_date_epoch_from_env()? {
        Some(epoch) => epoch,
        None => DEMO_EPOCH,
    };
    let inputs = out.join("inputs");
    for dir in [inputs.clone(), out.join("build"), out.join("deploy")] {
        fs::create_dir_all(&dir).map_err(safe_fs::Error::io("create directory", &dir))?;
    }
    squashfs::write_sample_image(&out.join(ROOTFS_INPUT), epoch)?;
    let initramfs = initramfs_bytes(&DEMO_INITRAMFS, epoch)
        .map_err(safe_fs::Error::io("build", &out.join(INITRAMFS_INPUT)))?;
    write_atomically(&out.join(INITRAMFS_INPUT), &initramfs)?;
    write_atomically(&out.join(KERNEL_INPUT), &fake_kernel_bytes(KernelArch::X86))?;
    write_atomically(&out.join(VXN_INIT_INPUT), VXN_INIT.as_bytes())?;
    write_atomically(&out.join(COMMON_INIT_INPUT), COMMON_INIT.as_bytes())?;

    let spec_json = serde_json::json!({
        "schema": 1,
        "runtime": "vdkr",
        "machine": "qemux86-64",
        "multiconfig": "vruntime-x86-64",
        "target_arch": "x86_64",
        "blob_arch": "x86_64",
        "initramfs": INITRAMFS_INPUT,
        "rootfs": ROOTFS_INPUT,
        "kernel": KERNEL_INPUT,
        "kernel_name": "bzImage",
        "inject": [
            {"source": VXN_INIT_INPUT, "dest": "/vxn-init.sh", "mode": "0755"},
            {"source": COMMON_INIT_INPUT, "dest": "/vcontainer-init-common.sh", "mode": "0755"}
        ],
        "build_dir": "build",
        "deploy_dir": "deploy",
        "source_date_epoch": epoch
    });
    let spec_path = out.join(DEMO_SPEC);
    let mut text = serde_json::to_string_pretty(&spec_json)
        .map_err(|e| safe_fs::Error::io("serialize", &spec_path)(e.into()))?;
    text.push('\n');
    write_atomically(&spec_path, text.as_bytes())?;

    let spec = Spec::load(&spec_path)?;
    let compile = compile::run(&spec, &mut |_| {})?;
    let deploy = deploy::deploy(&spec)?;

    let options = check::Options {
        arch: Some(spec.target_arch.clone()),
        inits: Vec::new(),
    };
    let check = check::check_dir(&deploy.dir, &options)?;
    let rootfs = deploy.dir.join(ROOTFS);
    let mut injected = Vec::new();
    for injection in &spec.inject {
        let info = squashfs::stat(&rootfs, &injection.dest)?;
        let source = fs::File::open(&injection.source)
            .map_err(safe_fs::Error::io("open", &injection.source))?;
        let (sha, _) =
            sha256_reader(source).map_err(safe_fs::Error::io("read", &injection.source))?;
        let shown = injection
            .source
            .strip_prefix(out)
            .unwrap_or(&injection.source)
            .display()
            .to_string();
        injected.push((info, sha, shown));
    }
    let mut kept = Vec::new();
    for path in KEPT_FILES {
        kept.push((
            squashfs::stat(&spec.rootfs, path)?,
            squashfs::stat(&rootfs, path)?,
        ));
    }
    Ok(DemoReport {
        dir: out.to_path_buf(),
        spec: spec_path,
        epoch,
        compile,
        deploy,
        check,
        injected,
        kept,
    })
}

/// Accepts a missing or empty directory, or one holding an earlier demo's spec.
fn prepare_dir(out: &Path) -> Result<(), Error> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            let empty = entries.next().is_none();
            if empty || out.join(DEMO_SPEC).is_file() {
                Ok(())
            } else {
                Err(Error::DemoDirectory {
                    path: out.to_path_buf(),
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(out)
            .map_err(|e| safe_fs::Error::io("create directory", out)(e).into()),
        Err(e) => Err(safe_fs::Error::io("open directory", out)(e).into()),
    }
}

/// Writes a demo input through a staged file, so a symlink at the name is replaced, not followed.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(commit(stage_bytes(dir, bytes)?, path)?)
}

impl DemoReport {
    /// The demo's explanation, as the CLI prints it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "vxn-blobs demo in {}", self.dir.display());
        let _ = writeln!(
            s,
            "\nInputs, made by the demo without external tools (SOURCE_DATE_EPOCH {}):",
            self.epoch
        );
        for (path, what) in [
            (ROOTFS_INPUT, "gzip squashfs rootfs: dirs, setuid file with an xattr, group-owned file, symlink, device node"),
            (INITRAMFS_INPUT, "gzip newc cpio initramfs with /init and /dev/console"),
            (KERNEL_INPUT, "stand-in bzImage with a valid \"HdrS\" setup header (does not boot)"),
            (VXN_INIT_INPUT, "init script to inject"),
            (COMMON_INIT_INPUT, "init script to inject"),
        ] {
            let _ = writeln!(s, "  {path}\n      {what}");
        }
        let _ = writeln!(s, "Spec: {}", self.spec.display());
        let _ = writeln!(
            s,
            "\nCompile ({}): {}",
            if self.compile.reused {
                "reused"
            } else {
                "built"
            },
            self.compile.reason
        );
        if let Some(init) = &self.compile.initramfs {
            let _ = writeln!(
                s,
                "  initramfs: one complete gzip stream, newc cpio of {} entries up to TRAILER!!!, /init {}",
                init.entries,
                if init.has_init { "present" } else { "MISSING" }
            );
        }
        if let Some(inject) = &self.compile.inject {
            let _ = writeln!(
                s,
                "  rootfs: {} inodes, {} -> {}, read back by the engine before renaming into place",
                inject.inode_count, inject.input_compressor, inject.output_compressor
            );
        }
        let _ = writeln!(s, "  digest {}", self.compile.digest);

        let _ = writeln!(s, "\nDeployed to {}:", self.deploy.dir.display());
        for file in &self.deploy.files {
            let _ = writeln!(
                s,
                "  {}  {} ({} bytes{})",
                file.sha256,
                file.name,
                file.size,
                if file.linked {
                    ", hardlinked from build"
                } else {
                    ""
                }
            );
        }

        let _ = writeln!(s, "\nWhy it can be trusted:");
        let dir = self.deploy.dir.display();
        if self.check.ok {
            let _ = writeln!(
                s,
                "  - `vxn-blobs check {dir}` read the deployed set back and found nothing that would stop the boot:"
            );
            for line in &self.check.checked {
                let _ = writeln!(s, "      {line}");
            }
        } else {
            let _ = writeln!(
                s,
                "  - `vxn-blobs check {dir}` found what would stop or change the boot:"
            );
            for finding in &self.check.findings {
                let _ = writeln!(s, "      {}", finding.message);
            }
        }
        let _ = writeln!(
            s,
            "    (check the sums yourself: cd {dir} && sha256sum -c {SUMS})"
        );
        let _ = writeln!(
            s,
            "  - the injected files, read back from the deployed rootfs.img:"
        );
        for (info, source_sha, source) in &self.injected {
            let same = info.sha256.as_deref() == Some(source_sha.as_str());
            let _ = writeln!(
                s,
                "      {} mode {:04o} uid {} gid {} {} bytes, sha256 {} {} {}",
                info.path,
                info.mode,
                info.uid,
                info.gid,
                info.size,
                info.sha256.as_deref().unwrap_or("-"),
                if same { "==" } else { "!=" },
                source
            );
        }
        let _ = writeln!(
            s,
            "  - files injection did not touch, input vs deployed rootfs.img:"
        );
        for (before, after) in &self.kept {
            let _ = writeln!(
                s,
                "      {} mode {:04o} uid {} gid {} sha256 {} {}",
                after.path,
                after.mode,
                after.uid,
                after.gid,
                after.sha256.as_deref().unwrap_or("-"),
                if before == after {
                    "unchanged"
                } else {
                    "CHANGED"
                }
            );
        }
        let _ = writeln!(
            s,
            "  - compile reuses outputs only when tool, spec and every input byte hash to the\n    recorded digest and the outputs still hash to their record; run the demo again to see it"
        );
        let _ = writeln!(
            s,
            "\nTry: vxn-blobs compile --spec {0} && vxn-blobs deploy --spec {0}",
            self.spec.display()
        );
        s
    }
}

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

/// Writes [`initramfs_bytes`] to `path`.
pub fn write_initramfs(path: &Path, entries: &[CpioEntry<'_>], mtime: u32) -> io::Result<()> {
    std::fs::write(path, initramfs_bytes(entries, mtime)?)
}

/// A gzip-compressed newc cpio archive of `entries`, deterministic: inode numbers count from 1,
/// uid/gid 0, every mtime `mtime`, and a gzip header without name or timestamp.
pub fn initramfs_bytes(entries: &[CpioEntry<'_>], mtime: u32) -> io::Result<Vec<u8>> {
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
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&cpio)?;
    gz.finish()
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

/// Writes [`fake_kernel_bytes`] to `path`.
pub fn write_fake_kernel(path: &Path, arch: KernelArch) -> io::Result<()> {
    std::fs::write(path, fake_kernel_bytes(arch))
}

/// A stand-in kernel image for `arch`: the boot-protocol header fields that the kernel check
/// looks for, but no code; it satisfies the check and boots nothing.
pub fn fake_kernel_bytes(arch: KernelArch) -> Vec<u8> {
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
    image
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
