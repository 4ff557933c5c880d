//! The boot tier: deployed blob sets boot a real Debian kernel under QEMU, and `vxn-blobs check`
//! says beforehand which ones will not.
//!
//! tests/boot/make-kit makes the kit: Debian's kernel (apt-get download, dpkg-deb, never
//! installed), a busybox initramfs whose /init keeps the vcontainer preinit contract
//! (tests/boot/preinit) and a busybox rootfs squashfs with real owners. Each case runs compile
//! and deploy on it through the real binary, checks the deployed directory, and boots it from
//! the deploy tree as meta-virtualization's QEMU siblings boot these images: `-kernel`,
//! `-initrd`, rootfs.img as a read-only virtio disk, the Xen backend's command line with
//! `vcontainer.blk=vd`. The serial console must show /vxn-init.sh running as PID 1 on the
//! overlay root and using what it sourced from /vcontainer-init-common.sh, or, for a broken set,
//! the failure check predicted; a set boots exactly when check finds nothing.
//!
//! Each boot costs seconds of emulation (TCG: KVM makes no progress on these machines), so the
//! tests are ignored in a plain `cargo test`; the boot tier of scripts/test.sh runs them with
//! `--ignored`, one at a time, and each prints its boot time.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fixtures::{can_run, run_ok};
use crate::util::{Arch, Fixture, TestDir};

/// Kills a boot that has not ended by then; one takes about 10 s here (5 s for aarch64). A hang
/// detector, not a speed target.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The injected init: it proves it runs as PID 1 on the overlay root and uses a function of
/// the file it sources. The console lines the test looks for hold values the shell computes,
/// so they appear only if the script really ran.
pub(crate) const VXN_INIT: &str = "#!/bin/sh\n\
# vxn-blobs boot test: stands in for meta-virtualization's vxn-init.sh\n\
. /vcontainer-init-common.sh\n\
root=$(awk '$2 == \"/\" { type = $3 } END { print type }' /proc/mounts)\n\
echo \"vxn-init: running as pid $$ with / on $root\"\n\
echo \"vxn-init: $(vcontainer_marker)\"\n\
echo \"vxn-init: hypervisor type $(cat /sys/hypervisor/type 2>/dev/null || echo none)\"\n";
const COMMON_INIT: &str = "# vxn-blobs boot test: stands in for vcontainer-init-common.sh\n\
vcontainer_marker() { echo \"vcontainer-init-common.sh sourced, 6*7=$((6 * 7))\"; }\n";
/// What the console shows when the set booted into /vxn-init.sh and it sourced the common file.
pub(crate) const BOOTED: [&str; 2] = [
    "vxn-init: running as pid 1 with / on overlay",
    "vxn-init: vcontainer-init-common.sh sourced, 6*7=42",
];

/// One blob set to boot.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    compression: &'static str,
    /// The init script injected as /vxn-init.sh, and its mode.
    init: &'static str,
    mode: &'static str,
    /// Whether /vcontainer-init-common.sh is injected too.
    common: bool,
    /// The finding codes check must give (none: the set boots).
    pub(crate) findings: &'static [&'static str],
    /// What the console must show instead of [`BOOTED`] when there are findings, from the
    /// switched root: the same whichever preinit ran.
    pub(crate) console: &'static [&'static str],
    /// What tests/boot/preinit says about the case (meta-virtualization's preinit, under Xen,
    /// says less).
    preinit: &'static [&'static str],
}

pub(crate) const XZ: Case = Case {
    name: "xz",
    compression: "xz",
    init: VXN_INIT,
    mode: "0755",
    common: true,
    findings: &[],
    console: &[],
    preinit: &[],
};

const KEEP: Case = Case {
    name: "keep (gzip)",
    compression: "keep",
    ..XZ
};

pub(crate) const INIT_0644: Case = Case {
    name: "init mode 0644",
    mode: "0644",
    findings: &["init-not-executable"],
    console: &["boot-kit: /sbin/init of the rootfs ran as pid 1 (not vcontainer.init)"],
    preinit: &["preinit: /vxn-init.sh is not executable, falling back to /sbin/init"],
    ..XZ
};

pub(crate) const NO_BASH: Case = Case {
    name: "interpreter missing",
    init: "#!/bin/bash\n. /vcontainer-init-common.sh\necho \"vxn-init: bash $BASH_VERSION\"\n",
    findings: &["interpreter-missing"],
    console: &["switch_root: can't execute '/vxn-init.sh': No such file or directory"],
    preinit: &["preinit: switch_root into /vxn-init.sh"],
    ..XZ
};

const CRLF: Case = Case {
    name: "CRLF #! line",
    init:
        "#!/bin/sh\r\n. /vcontainer-init-common.sh\r\necho \"vxn-init: $(vcontainer_marker)\"\r\n",
    findings: &["shebang-cr"],
    ..NO_BASH
};

const NO_COMMON: Case = Case {
    name: "sourced file missing",
    common: false,
    findings: &["source-missing"],
    console: &[
        "/vxn-init.sh: .: line 3: can't open '/vcontainer-init-common.sh': No such file or directory",
    ],
    preinit: &["preinit: switch_root into /vxn-init.sh"],
    ..XZ
};

/// A kit made by a make-kit script (tests/boot/, tests/xen/), once per architecture and test
/// process.
pub(crate) struct Kit {
    dir: PathBuf,
    /// KERNEL_PACKAGE and the rest of kit.env, for the log.
    pub(crate) about: String,
    /// Keeps other test processes from rebuilding the kit under this one.
    _lock: File,
}

impl Kit {
    fn get(arch: Arch) -> &'static Kit {
        static X86_64: OnceLock<Kit> = OnceLock::new();
        static AARCH64: OnceLock<Kit> = OnceLock::new();
        let cell = match arch {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
        };
        cell.get_or_init(|| Kit::make("boot", arch, &[]))
    }

    /// Runs `tests/<tier>/make-kit ARCH ARGS... DIR CACHE` into a fresh DIR under the target
    /// directory. The downloads are cached in $VXN_BOOT_CACHE (default target/boot-kit), which
    /// the tiers share.
    pub(crate) fn make(tier: &str, arch: Arch, args: &[&OsStr]) -> Kit {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let cache = std::env::var_os("VXN_BOOT_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.parent().unwrap_or(target).join("boot-kit"));
        fs::create_dir_all(&cache).unwrap();
        let name = format!("{tier}-kit-{}", arch.target_arch());
        let dir = target.join(&name);
        let lock =
            File::create(target.join(format!("{name}.lock"))).expect("create the kit's lock file");
        // SAFETY: flock on a descriptor we own; it is released when the process ends.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        let started = Instant::now();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(tier)
            .join("make-kit");
        run_ok(
            Command::new(script)
                .arg(arch.target_arch())
                .args(args)
                .arg(&dir)
                .arg(&cache),
        );
        let about = fs::read_to_string(dir.join("kit.env"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!(
            "{tier} kit for {} made in {:.1} s: {about}",
            arch.target_arch(),
            started.elapsed().as_secs_f64()
        );
        Kit {
            dir,
            about,
            _lock: lock,
        }
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The QEMU command that boots the set in `blobs` for `arch`, as the Xen backend would (its
/// command line, the rootfs as the first, read-only disk) but on virtio.
fn qemu(arch: Arch, blobs: &Path) -> Command {
    let file = |name: &str| blobs.join(name).display().to_string();
    let (binary, console, machine): (&str, &str, &[&str]) = match arch {
        Arch::X86_64 => ("qemu-system-x86_64", "ttyS0", &[]),
        Arch::Aarch64 => (
            "qemu-system-aarch64",
            "ttyAMA0",
            &["-machine", "virt", "-cpu", "cortex-a57"],
        ),
    };
    let mut command = Command::new(binary);
    command
        .args(machine)
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .args(["-net", "none"])
        .args(["-kernel", &file(arch.kernel_name())])
        .args(["-initrd", &file("initramfs.cpio.gz")])
        .args([
            "-drive",
            &format!(
                "file={},if=none,id=rootfs,format=raw,readonly=on",
                file("rootfs.img")
            ),
            "-device",
            "virtio-blk-pci,drive=rootfs",
        ])
        .args([
            "-append",
            &format!(
                "console={console} panic=-1 init=/init vcontainer.blk=vd vcontainer.init=/vxn-init.sh"
            ),
        ]);
    command
}

/// Runs a QEMU `command` with its console in `log`, killing it after `timeout`. Returns how it
/// ended (None: killed), the console without CRs, and how long it ran.
pub(crate) fn run_qemu(
    mut command: Command,
    log: &Path,
    timeout: Duration,
) -> (Option<ExitStatus>, String, Duration) {
    let console = File::create(log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(console.try_clone().unwrap())
        .stderr(console);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&fs::read(log).unwrap()).replace('\r', "");
    (status, text, took)
}

/// Boots and returns the console and how long the boot took. With `panic=-1` and
/// `-no-reboot`, QEMU exits when the init exits or the preinit reboots.
fn boot(arch: Arch, blobs: &Path, log: &Path) -> (String, Duration) {
    let (status, text, took) = run_qemu(qemu(arch, blobs), log, BOOT_TIMEOUT);
    match status {
        None => panic!("the boot did not end within {BOOT_TIMEOUT:?}; console:\n{text}"),
        Some(status) => assert!(status.success(), "QEMU failed ({status}); console:\n{text}"),
    }
    (text, took)
}

/// The host tools a kit is made with, and `qemu`.
pub(crate) fn kit_tools(qemu: &str) -> Vec<&str> {
    vec![
        qemu,
        "apt-get",
        "dpkg-deb",
        "depmod",
        "cpio",
        "mksquashfs",
        "busybox",
    ]
}

/// The finding codes of `check --json DIR`, asserting its exit code agrees.
pub(crate) fn check_codes(dir: &TestDir, blobs: &Path) -> Vec<String> {
    let check = dir.run(&["check", &blobs.display().to_string(), "--json"]);
    let report: Value = serde_json::from_str(&check.stdout).expect("check --json");
    let codes: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        check.code,
        Some(if codes.is_empty() { 0 } else { 1 }),
        "check of {}: {report:#}",
        blobs.display()
    );
    codes
}

/// What a set is made of besides the kit's kernel and initramfs.
pub(crate) struct Inputs<'a> {
    /// The kit's file the rootfs is made from.
    pub(crate) rootfs: &'a str,
    /// The script injected as /vxn-init.sh, and its mode.
    pub(crate) init: &'a [u8],
    pub(crate) mode: &'a str,
    /// What is injected as /vcontainer-init-common.sh, if anything.
    pub(crate) common: Option<&'a [u8]>,
    pub(crate) compression: &'a str,
}

/// Compiles and deploys `case` with the kit's kernel, initramfs and rootfs in `dir`, and checks
/// the deployed set: deploy warns and check finds exactly the case's findings. Returns the
/// fixture (the set is in `fixture.deployed()`).
pub(crate) fn deploy_case(arch: Arch, case: &Case, kit: &Kit, dir: &TestDir) -> Fixture {
    let inputs = Inputs {
        rootfs: "rootfs.squashfs",
        init: case.init.as_bytes(),
        mode: case.mode,
        common: case.common.then_some(COMMON_INIT.as_bytes()),
        compression: case.compression,
    };
    deploy_inputs(arch, &inputs, case.findings, kit, dir)
}

/// Compiles and deploys a set of `inputs` with the kit in `dir` and checks it: deploy warns and
/// check finds exactly `findings`.
pub(crate) fn deploy_inputs(
    arch: Arch,
    inputs: &Inputs,
    findings: &[&str],
    kit: &Kit,
    dir: &TestDir,
) -> Fixture {
    let mut fx = Fixture::new(dir.path(), arch);
    for (key, name) in [
        ("kernel", "kernel"),
        ("initramfs", "initramfs.cpio.gz"),
        ("rootfs", inputs.rootfs),
    ] {
        fs::copy(kit.file(name), fx.input(key)).unwrap();
    }
    fs::write(fx.inject_source(0), inputs.init).unwrap();
    fx.spec["inject"][0]["mode"] = json!(inputs.mode);
    match inputs.common {
        Some(common) => fs::write(fx.inject_source(1), common).unwrap(),
        None => fx.spec["inject"].as_array_mut().unwrap().truncate(1),
    }
    fx.spec["compression"] = json!(inputs.compression);
    fx.set("kernel_required", json!(true));
    fx.compile(dir);
    let deployed = fx.deploy(dir);
    assert_eq!(
        deployed.stderr.contains("vxn-blobs: warning: check: "),
        !findings.is_empty(),
        "deploy's check: {deployed:#?}"
    );
    assert_eq!(check_codes(dir, &fx.deployed()), findings);
    fx
}

/// Compiles and deploys `case` with the kit, checks the deployed set and boots it.
fn boot_case(arch: Arch, case: &Case) {
    let qemu_binary = qemu(arch, Path::new("")).get_program().to_owned();
    if !can_run(
        &format!("boot {} {}", arch.target_arch(), case.name),
        &kit_tools(qemu_binary.to_str().unwrap()),
    ) {
        return;
    }
    let kit = Kit::get(arch);
    let dir = TestDir::new();
    let blobs = deploy_case(arch, case, kit, &dir).deployed();
    let codes = case.findings;
    let (console, took) = boot(arch, &blobs, &dir.path().join("console.log"));
    let booted = BOOTED
        .iter()
        .all(|line| console.lines().any(|l| l == *line));
    eprintln!(
        "boot {} {}: {:.1} s, {} (check: {}; kit: {})",
        arch.target_arch(),
        case.name,
        took.as_secs_f64(),
        if booted {
            "ran /vxn-init.sh, which sourced /vcontainer-init-common.sh"
        } else {
            "did not reach /vxn-init.sh"
        },
        if codes.is_empty() {
            "nothing found".to_string()
        } else {
            codes.join(", ")
        },
        kit.about
    );
    // The two agree: the set boots exactly when check finds nothing, and a broken set fails
    // the way the finding says.
    assert_eq!(booted, codes.is_empty(), "console:\n{console}");
    for line in case.preinit.iter().chain(case.console) {
        assert!(
            console.lines().any(|l| l == *line),
            "{line:?} missing from the console:\n{console}"
        );
    }
}

/// One ignored test per case, so that each reports (and can be run) on its own.
macro_rules! boot_tests {
    ($($name:ident: $arch:ident $case:ident;)*) => {$(
        #[test]
        #[ignore = "boots QEMU; run by the boot tier (scripts/test.sh)"]
        fn $name() {
            boot_case(Arch::$arch, &$case);
        }
    )*};
}

boot_tests! {
    x86_64_xz_boots: X86_64 XZ;
    x86_64_keep_boots: X86_64 KEEP;
    x86_64_init_mode_0644_falls_back_to_sbin_init: X86_64 INIT_0644;
    x86_64_missing_interpreter_stops_switch_root: X86_64 NO_BASH;
    x86_64_crlf_shebang_stops_switch_root: X86_64 CRLF;
    x86_64_missing_common_stops_the_init: X86_64 NO_COMMON;
    aarch64_xz_boots: Aarch64 XZ;
    aarch64_missing_interpreter_stops_switch_root: Aarch64 NO_BASH;
}
