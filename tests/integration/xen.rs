//! The Xen tier: deployed and installed blob sets boot as meta-virtualization's vxn backend boots
//! them, with `xl create` on a Xen 4.17 Dom0 under QEMU, and `vxn-blobs check`'s findings are
//! what stops a DomU there too.
//!
//! tests/xen/make-kit makes the kit from Debian's packages (apt-get download, dpkg-deb, never
//! installed): Xen, a kernel that serves as Dom0 and DomU kernel, a busybox Dom0 initramfs with
//! the xl toolstack, and the DomU's inputs: the boot tier's busybox rootfs (real owners) and an
//! initramfs whose /init loads the modules vxn.cfg builds in and runs meta-virtualization's own
//! vcontainer-preinit.sh. Each set is compiled and deployed (or installed into a DESTDIR, as the
//! Dom0 package does) through the real binary and checked, exactly as in the boot tier (same
//! cases: [`crate::boot`]). All sets go into the Dom0's initramfs; QEMU boots Xen and the Dom0
//! once, and the Dom0 (tests/xen/dom0-init) boots them one after the other.
//!
//! The xl config of each DomU is not retyped here: the Dom0 sources the snapshot's
//! recipes-containers/vcontainer/files/vrunner-backend-xen.sh and calls its own functions, with
//! `BLOB_DIR` the deploy directory's `vxn` (or `/usr/share/vxn`, where the set was installed):
//! - `hv_setup_arch`: `kernel = "$BLOB_DIR/<arch>/bzImage"` (`Image` on aarch64), `ramdisk =
//!   ".../initramfs.cpio.gz"`, the name `vxn-<set>`;
//! - `hv_build_disk_opts`: `disk = [ 'format=raw,vdev=xvda,access=ro,target=.../rootfs.img' ]`
//!   (no input or state disk: no container to run);
//! - `_write_xen_config`: `type = "pv"` (`"pvh"` on aarch64), `memory = 512`, `vcpus = 2`,
//!   `extra = "console=hvc0 quiet loglevel=0 init=/init vcontainer.blk=xvd
//!   vcontainer.init=/vxn-init.sh "`, `serial = 'pty'`, `on_crash = "destroy"`.
//!
//! The test asserts those lines on what the Dom0 printed, so a change upstream fails here
//! rather than passing unnoticed.
//!
//! Then the whole client: sets made with meta-virtualization's own vxn-init.sh and
//! vcontainer-init-common.sh (one installed at /usr/share/vxn/<arch> as the Dom0 package does,
//! others deployed) serve as a user's vxn host serves them. The Dom0 has the snapshot's vxn,
//! vrunner.sh and vrunner-backend-xen.sh, unchanged, where vxn_1.0.bb installs them, real skopeo
//! and a real registry (Debian's) into which it pushed the kit's image, and a xenbr0 bridge for
//! the default networking. Each [`Run`] is a command a user types there (`vxn run --rm
//! 127.0.0.1:5000/vxn-e2e/busybox ...`, or vrunner.sh with an OCI directory as input); the test
//! asserts its stdout, stderr and exit status as the caller gets them and the console of the
//! DomU it booted. meta-virtualization's memres (daemon) mode would run several commands in one
//! DomU, but its backend gives every daemon DomU a `p9` device of `type=xen_9pfsd`, which Xen
//! 4.17's xl refuses ("Unknown string `type' in 9pfs spec"; xen-9pfsd came with Xen 4.19), so
//! each run boots a DomU of its own.
//!
//! On the DomU's console (xenconsoled --log=guest, printed by the Dom0 between per-set markers)
//! a broken set shows meta-virtualization's preinit switching into /vxn-init.sh and the failure
//! check predicted, never the boot tier's test init running as PID 1 on Xen; a good set is shown
//! by the runs, whose container command runs. The DomU ends when its init exits (the kernel
//! panics, the domain crashes and is destroyed) or, inside the Dom0, after [`DOMU_TIMEOUT_S`];
//! the whole QEMU run has a timeout too. Like the boot tier's tests, these are ignored in a plain
//! `cargo test`; the xen tier of scripts/test.sh runs them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::boot::{
    check_codes, deploy_case, deploy_inputs, kit_tools, run_qemu, Case, Inputs, Kit, BOOTED,
    INIT_0644, NO_BASH,
};
use crate::deploy::install;
use crate::fixtures::{can_run, run_ok};
use crate::util::{ci, sha256, Arch, Fixture, TestDir};

/// How long a DomU may run inside the Dom0 before it is destroyed; one took up to 190 s here on
/// the 2 cores shared at load 23. A hang detector, not a speed target.
const DOMU_TIMEOUT_S: u64 = 480;

/// What the console of a DomU that ran /vxn-init.sh shows, beyond [`BOOTED`].
const ON_XEN: &str = "vxn-init: hypervisor type xen";

/// What meta-virtualization's preinit prints before it switch_roots into vcontainer.init.
const PREINIT_SWITCH: &str = "Switching to real root (init: /vxn-init.sh)...";

/// Where a set comes from: deployed, or installed into a DESTDIR.
#[derive(Clone, Copy, PartialEq)]
enum From {
    Deploy,
    Install,
}

/// One DomU to boot: a case of the boot tier, as deployed or installed.
struct Set {
    /// The DomU is `vxn-<name>`.
    name: &'static str,
    case: &'static Case,
    from: From,
}

/// The sets booted without a container: each a broken case of the boot tier, so that check's
/// prediction is shown under Xen with meta-virtualization's real preinit, and each architecture's
/// backend config is asserted. A good set is the [`Run`]s' (with upstream's init scripts, which
/// prove more than the boot tier's test init: a container runs). One DomU each, since every DomU
/// costs tens of seconds under TCG; the boot tier has the rest of the cases (CRLF, a missing
/// sourced file) on both architectures.
///
/// x86_64: /vxn-init.sh injected 0644, which the real preinit passes over silently (the boot
/// tier's stand-in preinit says so).
const X86_64_SETS: [Set; 1] = [Set {
    name: "init-0644",
    case: &INIT_0644,
    from: From::Deploy,
}];

/// aarch64: `#!/bin/bash` in an image without bash, switch_root's ENOENT.
const AARCH64_SETS: [Set; 1] = [Set {
    name: "no-bash",
    case: &NO_BASH,
    from: From::Deploy,
}];

/// A blob set made with meta-virtualization's own init scripts, for the vxn client to run.
struct VxnSet {
    /// Deployed sets are at /sets/<name>/vxn in the Dom0; the installed one at /usr/share/vxn.
    name: &'static str,
    /// The kit's rootfs it is made from.
    rootfs: &'static str,
    /// Whether vcontainer-init-common.sh is injected beside vxn-init.sh.
    common: bool,
    from: From,
    /// The finding codes check must give.
    findings: &'static [&'static str],
}

/// What a Dom0 package installs: the vxn CLI finds it in /usr/share/vxn.
const VXN: VxnSet = VxnSet {
    name: "vxn",
    rootfs: "rootfs.squashfs",
    common: true,
    from: From::Install,
    findings: &[],
};

/// vxn-init.sh without the file it sources.
const VXN_NO_COMMON: VxnSet = VxnSet {
    name: "vxn-no-common",
    common: false,
    from: From::Deploy,
    findings: &["source-missing"],
    ..VXN
};

/// Debian's dash as /bin/sh, which rejects vxn-init.sh's `${digest/://}`.
const VXN_DASH: VxnSet = VxnSet {
    name: "vxn-dash",
    rootfs: "rootfs-dash.squashfs",
    from: From::Deploy,
    findings: &["shell-unsupported"],
    ..VXN
};

/// How long one run may take inside the Dom0 before it is killed: vrunner.sh gives its DomU 300
/// s, and the pull and the input disk come before. A hang detector, not a speed target.
const RUN_TIMEOUT_S: u64 = 600;

/// A command a user of the vxn host types in the Dom0, and what the caller must get.
struct Run {
    name: &'static str,
    /// What bash runs in /root; `{arch}` stands for the architecture.
    command: &'static str,
    /// The set it boots.
    set: &'static VxnSet,
    exit: i32,
    /// Lines that must be on the caller's stdout and stderr (without CRs and colour codes).
    stdout: &'static [&'static str],
    stderr: &'static [&'static str],
    /// Lines that must be on the console of the DomU it booted.
    guest: &'static [&'static str],
}

/// What vxn-init.sh prints when `vxn run`'s default networking gave the DomU a vif on xenbr0.
const ON_XENBR0: &str = "Found network interface: eth0";

/// Output and exit status come back to the caller of `vxn run`, from the container's rootfs
/// (its WorkingDir, /srv/app, exists in the image only).
const RUN_OUTPUT_EXIT: Run = Run {
    name: "output-exit",
    command: "vxn run --rm 127.0.0.1:5000/vxn-e2e/busybox sh -c 'echo hello from $(pwd); exit 3'",
    set: &VXN,
    exit: 3,
    stdout: &["hello from /srv/app"],
    stderr: &[],
    guest: &[ON_XENBR0, "===EXIT_CODE=3==="],
};

/// With no command the image's Cmd runs (vrunner-backend-xen.sh reads it with jq).
const RUN_IMAGE_CMD: Run = Run {
    name: "image-cmd",
    command: "vxn run --rm 127.0.0.1:5000/vxn-e2e/busybox",
    exit: 0,
    stdout: &["vxn-e2e: the Cmd of the image ran"],
    guest: &[ON_XENBR0],
    ..RUN_OUTPUT_EXIT
};

/// A set check refuses (source-missing) fails at the caller with vrunner.sh's error.
const RUN_NO_COMMON: Run = Run {
    name: "no-common",
    command: "VXN_BLOB_DIR=/sets/vxn-no-common/vxn vxn run --rm 127.0.0.1:5000/vxn-e2e/busybox \
              echo hello",
    set: &VXN_NO_COMMON,
    exit: 1,
    stdout: &[],
    stderr: &["[vxn] Command execution failed or timed out"],
    guest: &["/vxn-init.sh: .: line 39: can't open '/vcontainer-init-common.sh': No such file or directory"],
};

/// vrunner.sh with an OCI directory as its input (no registry), on a set with dash as /bin/sh
/// (check: shell-unsupported): vxn-init.sh's oci_find_config_blob stops at `${digest/://}`
/// inside a `$(...)`, and the command runs without the image's config, in / instead of its
/// WorkingDir (on a good set `output-exit`'s same command prints /srv/app).
const RUN_DASH: Run = Run {
    name: "dash",
    command: "VCONTAINER_HYPERVISOR=xen VCONTAINER_RUNTIME_NAME=vxn /usr/lib/vxn/vrunner.sh \
              --runtime docker --arch {arch} --blob-dir /sets/vxn-dash/vxn \
              --input /xen-tier/oci-image --input-type oci -- 'echo hello from $(pwd)'",
    set: &VXN_DASH,
    exit: 0,
    stdout: &["hello from /"],
    stderr: &[],
    guest: &[
        "/vxn-init.sh: 189: Bad substitution",
        "No OCI config found (using command from kernel cmdline)",
        "===EXIT_CODE=0===",
    ],
};

/// x86_64: the command's output and exit status, through `vxn run` with its default networking.
const X86_64_RUNS: [&Run; 1] = [&RUN_OUTPUT_EXIT];

/// aarch64: the image's Cmd through `vxn run`, and the broken sets. Each run is a DomU of its
/// own and costs tens of seconds even alone, so each case runs on one architecture: what a run
/// hands back and what a broken set does to it do not depend on it, and both architectures run
/// `vxn run` end to end.
const AARCH64_RUNS: [&Run; 3] = [&RUN_IMAGE_CMD, &RUN_NO_COMMON, &RUN_DASH];

/// meta-virtualization: `VXN_META_VIRT` (a checkout), else the snapshot in `VXN_OE_SNAPSHOTS`
/// (.ci/run points it at ../shared/oe). Without either the tier skips, saying how to enable it;
/// under CI=true it fails.
fn meta_virtualization(test: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VXN_META_VIRT") {
        return Some(PathBuf::from(dir));
    }
    let mut why = "neither VXN_META_VIRT nor VXN_OE_SNAPSHOTS is set".to_string();
    if let Some(snapshots) = std::env::var_os("VXN_OE_SNAPSHOTS") {
        let snapshots = PathBuf::from(snapshots);
        let mut found: Vec<PathBuf> = fs::read_dir(&snapshots)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let name = p.file_name().unwrap().to_string_lossy();
                        name.starts_with("meta-virtualization-") && name.ends_with(".tar.gz")
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        if let Some(snapshot) = found.pop() {
            return Some(snapshot);
        }
        why = format!(
            "VXN_OE_SNAPSHOTS={} holds no meta-virtualization-*.tar.gz",
            snapshots.display()
        );
    }
    let how = "set VXN_OE_SNAPSHOTS to the directory of the OE snapshots (.ci/run: ../shared/oe) \
               or VXN_META_VIRT to a meta-virtualization checkout";
    if ci() {
        panic!("{test}: cannot run under CI=true: {why}; {how}");
    }
    eprintln!("SKIP {test}: {why}; {how}");
    None
}

/// The QEMU command that boots Xen with the Dom0 kernel and `initrd` (Xen's command line and
/// the machine: /work/shared/notes/boot.md). 2 GB: Xen, a 512 MB Dom0 and the two 512 MB DomUs
/// (the backend's `memory`) that the Dom0 runs at a time.
fn qemu(arch: Arch, kit: &Kit, initrd: &Path) -> Command {
    let file = |name: &str| kit.file(name).display().to_string();
    let dom0_cmdline = "console=hvc0 loglevel=4";
    let mut command;
    match arch {
        Arch::X86_64 => {
            command = Command::new("qemu-system-x86_64");
            // -cpu qemu64: `max` kills the PV Dom0 (SMAP). Multiboot: the modules are
            // "<file> <cmdline>", comma-separated.
            command
                .args(["-cpu", "qemu64", "-kernel", &file("xen")])
                .args([
                    "-append",
                    "console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1",
                    "-initrd",
                    &format!("{} {dom0_cmdline},{}", file("kernel"), initrd.display()),
                ]);
        }
        Arch::Aarch64 => {
            command = Command::new("qemu-system-aarch64");
            // QEMU's guest-loader writes the Dom0 kernel and initramfs into the device tree's
            // /chosen as Xen expects them: no dtc needed.
            command
                .args(["-machine", "virt,virtualization=true,gic-version=3"])
                .args(["-cpu", "cortex-a57", "-kernel", &file("xen")])
                .args([
                    "-append",
                    "console=dtuart dom0_mem=512M dom0_max_vcpus=1",
                    "-device",
                    &format!(
                        "guest-loader,addr=0x49000000,kernel={},bootargs={dom0_cmdline}",
                        file("kernel")
                    ),
                    "-device",
                    &format!("guest-loader,addr=0x50000000,initrd={}", initrd.display()),
                ]);
        }
    }
    command
        .args(["-accel", "tcg", "-smp", "2", "-m", "2048"])
        .args(["-nographic", "-no-reboot", "-net", "none"]);
    command
}

/// The lines of the serial console that the Dom0 printed for set `name`, by kind ("cfg", "xl",
/// "guest", "end"), without their prefix.
fn set_lines<'a>(serial: &'a str, name: &str, kind: &str) -> Vec<&'a str> {
    lines_of(serial, &format!("xen-tier: set {name} {kind}: "))
}

/// The lines of run `name`, by kind ("stdout", "stderr", "end", "guest" for the console of
/// any DomU that printed during the run), without their prefix, CRs and colour codes.
fn run_lines(serial: &str, name: &str, kind: &str) -> Vec<String> {
    let prefix = format!("xen-tier: run {name} {kind}");
    serial
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| match kind {
            // "guest vxn-<pid>: LINE"
            "guest" => l
                .strip_prefix(' ')
                .and_then(|l| l.split_once(": "))
                .map(|(_, l)| l),
            _ => l.strip_prefix(": "),
        })
        .map(|l| {
            let mut plain = String::new();
            let mut chars = l.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    // An SGR sequence, ESC [ ... m, as vrunner.sh's log() colours its lines.
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            plain
        })
        .collect()
}

fn lines_of<'a>(serial: &'a str, prefix: &str) -> Vec<&'a str> {
    serial
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

/// The end of the Dom0's log (everything but the DomUs' consoles) and of set or run `name`'s
/// DomU console, for a failure message.
fn tails(serial: &str, name: &str) -> String {
    let is_guest = |l: &str| {
        (l.starts_with("xen-tier: set ") && l.contains(" guest: "))
            || (l.starts_with("xen-tier: run ") && l.contains(" guest vxn-"))
    };
    let dom0: Vec<&str> = serial.lines().filter(|l| !is_guest(l)).collect();
    let mut guest: Vec<String> = set_lines(serial, name, "guest")
        .into_iter()
        .map(str::to_string)
        .collect();
    guest.extend(run_lines(serial, name, "guest"));
    format!(
        "--- Dom0 and Xen (last 60 lines of the serial console, DomU consoles left out) ---\n{}\n\
         --- DomU vxn-{name} (last 40 lines of its console) ---\n{}",
        dom0[dom0.len().saturating_sub(60)..].join("\n"),
        guest[guest.len().saturating_sub(40)..].join("\n")
    )
}

/// Replaces each file under `root` whose content another one already has by a hard link to it,
/// so that the initramfs holds the kernel and initramfs the sets share once.
fn link_duplicates(root: &Path) {
    let mut files = Vec::new();
    crate::fixtures::collect(root, &mut files);
    files.sort();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        if !fs::symlink_metadata(&file).unwrap().is_file() {
            continue;
        }
        let digest = sha256(&file);
        match seen.get(&digest) {
            Some(first) => {
                fs::remove_file(&file).unwrap();
                fs::hard_link(first, &file).unwrap();
            }
            None => {
                seen.insert(digest, file);
            }
        }
    }
}

/// Copies the files of directory `from` into `to` (created).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Puts the set of `fx` where the Dom0 finds it, deployed (as /sets/<name>/vxn) or installed
/// (as /usr/share/vxn, checked there too: `findings`) under `root`. Returns its BLOB_DIR.
fn place(
    arch: Arch,
    fx: &Fixture,
    name: &str,
    from: From,
    findings: &[&str],
    dir: &TestDir,
    root: &Path,
) -> String {
    match from {
        From::Deploy => {
            let blob_dir = format!("/sets/{name}/vxn");
            copy_dir(
                &fx.deployed(),
                &root.join(&blob_dir[1..]).join(arch.target_arch()),
            );
            blob_dir
        }
        From::Install => {
            // As the Dom0 package's do_install does; the vxn CLI looks in /usr/share/vxn.
            let destdir = dir.path().join("destdir");
            install(dir, fx, &destdir).ok();
            let installed = destdir.join("usr/share/vxn").join(arch.target_arch());
            assert_eq!(check_codes(dir, &installed), findings);
            copy_dir(
                &installed,
                &root.join("usr/share/vxn").join(arch.target_arch()),
            );
            "/usr/share/vxn".to_string()
        }
    }
}

/// Makes the kit, every set and the runs' sets, boots them under Xen in one QEMU run and asserts
/// per set and per run. `VXN_XEN_ONLY` (names of sets and runs, comma-separated) keeps only
/// those, to rerun one case.
fn xen_tier(arch: Arch, sets: &[Set], runs: &[&Run]) {
    let only: Option<Vec<String>> = std::env::var("VXN_XEN_ONLY")
        .ok()
        .map(|names| names.split(',').map(|n| n.trim().to_string()).collect());
    let kept = |name: &str| only.as_ref().map_or(true, |o| o.iter().any(|n| n == name));
    let sets: Vec<&Set> = sets.iter().filter(|s| kept(s.name)).collect();
    let runs: Vec<&Run> = runs.iter().copied().filter(|r| kept(r.name)).collect();
    if let Some(only) = &only {
        eprintln!(
            "VXN_XEN_ONLY={}: sets {:?}, runs {:?}",
            only.join(","),
            sets.iter().map(|s| s.name).collect::<Vec<_>>(),
            runs.iter().map(|r| r.name).collect::<Vec<_>>()
        );
    }
    let test = format!("xen {}", arch.target_arch());
    let qemu_binary = format!("qemu-system-{}", arch.target_arch());
    let mut tools = kit_tools(&qemu_binary);
    tools.push("readelf");
    if !can_run(&test, &tools) {
        return;
    }
    let Some(meta_virt) = meta_virtualization(&test) else {
        return;
    };
    let tier_started = Instant::now();
    let kit = Kit::make("xen", arch, &[meta_virt.as_os_str()]);
    let kit_took = tier_started.elapsed();

    // The sets, in the tree that is appended to the Dom0's initramfs.
    let started = Instant::now();
    let work = TestDir::new();
    let root = work.path().join("dom0");
    let mut list = String::new();
    let mut dirs = Vec::new();
    for set in &sets {
        let dir = TestDir::new();
        let fx = deploy_case(arch, set.case, &kit, &dir);
        let blob_dir = place(
            arch,
            &fx,
            set.name,
            set.from,
            set.case.findings,
            &dir,
            &root,
        );
        list.push_str(&format!("{} {blob_dir} {DOMU_TIMEOUT_S}\n", set.name));
        dirs.push(dir);
    }
    // The runs' sets, with meta-virtualization's init scripts from the kit, each once.
    let init = fs::read(kit.file("vxn-init.sh")).unwrap();
    let common = fs::read(kit.file("vcontainer-init-common.sh")).unwrap();
    let mut made: Vec<&str> = Vec::new();
    let mut runs_list = String::new();
    for run in &runs {
        let set = run.set;
        if !made.contains(&set.name) {
            made.push(set.name);
            let dir = TestDir::new();
            let inputs = Inputs {
                rootfs: set.rootfs,
                init: &init,
                mode: "0755",
                common: set.common.then_some(common.as_slice()),
                compression: "xz",
            };
            let fx = deploy_inputs(arch, &inputs, set.findings, &kit, &dir);
            place(arch, &fx, set.name, set.from, set.findings, &dir, &root);
            dirs.push(dir);
        }
        let command = run.command.replace("{arch}", arch.target_arch());
        runs_list.push_str(&format!("{} {RUN_TIMEOUT_S} {command}\n", run.name));
    }
    fs::create_dir_all(root.join("xen-tier")).unwrap();
    fs::write(root.join("xen-tier/sets"), &list).unwrap();
    if !runs.is_empty() {
        fs::write(root.join("xen-tier/runs"), &runs_list).unwrap();
    }
    link_duplicates(&root);
    let sets_took = started.elapsed();

    // The Dom0's initramfs: the kit's (padded to 512 bytes), then the sets as a plain cpio.
    let started = Instant::now();
    let initrd = work.path().join("dom0-initrd");
    let cpio = run_ok(Command::new("sh").current_dir(&root).args([
        "-c",
        "find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet",
    ]));
    let mut bytes = fs::read(kit.file("dom0.cpio.gz")).unwrap();
    bytes.extend_from_slice(&cpio.stdout);
    fs::write(&initrd, &bytes).unwrap();
    let pack_took = started.elapsed();

    // One boot of Xen and the Dom0 for all sets and runs.
    let timeout = Duration::from_secs(
        300 + sets.len() as u64 * (60 + DOMU_TIMEOUT_S) + runs.len() as u64 * RUN_TIMEOUT_S,
    );
    let (status, serial, boot_took) = run_qemu(
        qemu(arch, &kit, &initrd),
        &work.path().join("serial.log"),
        timeout,
    );
    let last = sets.last().map(|s| s.name).unwrap_or("");
    match status {
        None => panic!(
            "{test}: QEMU did not end within {timeout:?}\n{}",
            tails(&serial, last)
        ),
        Some(status) => assert!(
            status.success() && serial.lines().any(|l| l.starts_with("xen-tier: done")),
            "{test}: QEMU ended ({status}) before the Dom0 said it was done\n{}",
            tails(&serial, last)
        ),
    }
    let toolstack = serial
        .lines()
        .find_map(|l| l.strip_prefix("xen-tier: toolstack up "))
        .unwrap_or("?");
    eprintln!(
        "{test}: kit {:.1} s, {} sets compiled, deployed or installed and checked {:.1} s, \
         Dom0 initramfs {:.1} s ({} MB), QEMU run {:.1} s (Xen + Dom0, toolstack up {toolstack}; \
         kit: {})",
        kit_took.as_secs_f64(),
        sets.len() + made.len(),
        sets_took.as_secs_f64(),
        pack_took.as_secs_f64(),
        bytes.len() / 1_000_000,
        boot_took.as_secs_f64(),
        kit.about
    );

    let kernel = arch.kernel_name();
    let target = arch.target_arch();
    let xen_type = match arch {
        Arch::X86_64 => "pv",
        Arch::Aarch64 => "pvh",
    };
    for (set, (_, line)) in sets.iter().zip(list.lines().enumerate()) {
        let name = set.name;
        let blob_dir = line.split_whitespace().nth(1).unwrap();
        let fail =
            |what: &str| -> ! { panic!("{test}: set {name}: {what}\n{}", tails(&serial, name)) };
        let cfg = set_lines(&serial, name, "cfg");
        let extra = "extra = \"console=hvc0 quiet loglevel=0 init=/init vcontainer.blk=xvd \
                     vcontainer.init=/vxn-init.sh ";
        for expected in [
            format!("type = \"{xen_type}\""),
            format!("kernel = \"{blob_dir}/{target}/{kernel}\""),
            format!("ramdisk = \"{blob_dir}/{target}/initramfs.cpio.gz\""),
            format!(
                "disk = [ 'format=raw,vdev=xvda,access=ro,target={blob_dir}/{target}/rootfs.img' ]"
            ),
            "on_crash = \"destroy\"".to_string(),
        ] {
            if !cfg.contains(&expected.as_str()) {
                fail(&format!(
                    "the backend's config has no line {expected:?}: {cfg:#?}"
                ));
            }
        }
        if !cfg.iter().any(|l| l.starts_with(extra)) {
            fail(&format!(
                "the backend's config has no line starting {extra:?}: {cfg:#?}"
            ));
        }
        if !set_lines(&serial, name, "xl")
            .iter()
            .any(|l| l.starts_with("xl create exit 0 "))
        {
            fail("xl create failed");
        }
        let end = set_lines(&serial, name, "end");
        if !end.iter().any(|l| l.starts_with("domain gone")) {
            fail(&format!("the DomU did not end by itself: {end:?}"));
        }
        let guest = set_lines(&serial, name, "guest");
        if !guest.contains(&PREINIT_SWITCH) {
            fail(&format!(
                "meta-virtualization's preinit did not say {PREINIT_SWITCH:?}"
            ));
        }
        let booted = BOOTED.iter().chain([&ON_XEN]).all(|l| guest.contains(l));
        eprintln!(
            "{test} {name} ({}{}): {}, {} (check: {})",
            set.case.name,
            if set.from == From::Install {
                ", installed"
            } else {
                ""
            },
            end.first().unwrap_or(&"?"),
            if booted {
                "ran /vxn-init.sh on Xen, which sourced /vcontainer-init-common.sh"
            } else {
                "did not reach /vxn-init.sh"
            },
            if set.case.findings.is_empty() {
                "nothing found".to_string()
            } else {
                set.case.findings.join(", ")
            }
        );
        // The boot check's prediction holds under Xen: the set boots exactly when check finds
        // nothing, and a broken one fails the way the finding says.
        if booted != set.case.findings.is_empty() {
            fail(&format!(
                "booted: {booted}, check's findings: {:?}",
                set.case.findings
            ));
        }
        for line in set.case.console {
            if !guest.contains(line) {
                fail(&format!("{line:?} missing from the DomU's console"));
            }
        }
    }
    check_runs(&test, &serial, &runs);
    eprintln!(
        "{test}: the whole test {:.1} s",
        tier_started.elapsed().as_secs_f64()
    );
    drop(dirs);
}

/// Asserts what each run gave its caller and what its DomU's console shows.
fn check_runs(test: &str, serial: &str, runs: &[&Run]) {
    if runs.is_empty() {
        return;
    }
    let ready = lines_of(serial, "xen-tier: e2e ready in ");
    if ready.is_empty() {
        let last = runs[0].name;
        panic!(
            "{test}: the Dom0 did not become a vxn host (bridge, registry, image)\n{}",
            tails(serial, last)
        );
    }
    eprintln!("{test}: vxn host ready in {}", ready[0]);
    for run in runs {
        let name = run.name;
        let fail =
            |what: &str| -> ! { panic!("{test}: run {name}: {what}\n{}", tails(serial, name)) };
        let end = run_lines(serial, name, "end");
        let Some(end) = end.first() else {
            fail("the Dom0 never finished it")
        };
        let stdout = run_lines(serial, name, "stdout");
        let stderr = run_lines(serial, name, "stderr");
        let guest = run_lines(serial, name, "guest");
        eprintln!(
            "{test} run {name} (set {}, check: {}): {end}; stdout {stdout:?}",
            run.set.name,
            if run.set.findings.is_empty() {
                "nothing found".to_string()
            } else {
                run.set.findings.join(", ")
            }
        );
        let expected = format!("exit {} after ", run.exit);
        if !end.starts_with(&expected) {
            fail(&format!(
                "the caller got {end:?}, not {expected:?}...; stdout {stdout:#?}, stderr {stderr:#?}"
            ));
        }
        for (what, lines, wanted) in [
            ("stdout", &stdout, run.stdout),
            ("stderr", &stderr, run.stderr),
            ("its DomU's console", &guest, run.guest),
        ] {
            for line in wanted {
                if !lines.iter().any(|l| l == line) {
                    fail(&format!("{line:?} missing from {what}: {lines:#?}"));
                }
            }
        }
    }
}

#[test]
#[ignore = "boots Xen under QEMU; run by the xen tier (scripts/test.sh)"]
fn x86_64_sets_boot_under_xen_and_vxn_runs_containers_as_check_predicts() {
    xen_tier(Arch::X86_64, &X86_64_SETS, &X86_64_RUNS);
}

#[test]
#[ignore = "boots Xen under QEMU; run by the xen tier (scripts/test.sh)"]
fn aarch64_sets_boot_under_xen_and_vxn_runs_containers_as_check_predicts() {
    xen_tier(Arch::Aarch64, &AARCH64_SETS, &AARCH64_RUNS);
}
